"""TTLSweeper: a daemon thread that deletes a store's expired items every few minutes.

LangGraph's ``start_ttl_sweeper``/``stop_ttl_sweeper`` contract: the thread waits
one interval, sweeps, and repeats until stopped; ``start`` returns a Future that
completes when the thread ends and stops it when cancelled. Reads never need it
(expired items are hidden at once); it only reclaims space.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
from collections.abc import Callable

__all__ = ["TTLSweeper"]

log = logging.getLogger("durable_graph.store")


class TTLSweeper:
    """Runs ``sweep()`` every ``interval`` minutes on a daemon thread until stopped."""

    def __init__(self, sweep: Callable[[], int]) -> None:
        self._sweep = sweep
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def running(self) -> bool:
        """Whether the sweeper thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def start(self, interval_minutes: float) -> concurrent.futures.Future[None]:
        """Start the thread (once); the Future ends with it, cancelling it stops it."""
        future: concurrent.futures.Future[None] = concurrent.futures.Future()
        future.add_done_callback(lambda f: self._stop.set() if f.cancelled() else None)
        if self.running():
            return future
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._loop, args=(interval_minutes * 60.0, future), daemon=True,
            name="dg-ttl-sweeper",
        )
        self._thread.start()
        return future

    def _loop(self, interval: float, future: concurrent.futures.Future[None]) -> None:
        while not self._stop.wait(interval):
            try:
                swept = self._sweep()
            except Exception:
                log.exception("store TTL sweep failed; retrying next interval")
            else:
                if swept:
                    log.info("store TTL sweep deleted %d expired items", swept)
        if future.set_running_or_notify_cancel():
            future.set_result(None)

    def stop(self, timeout: float | None = None) -> bool:
        """Stop the thread; True once it has ended (or never ran)."""
        if self._thread is None:
            return True
        self._stop.set()
        self._thread.join(timeout)
        stopped = not self._thread.is_alive()
        if stopped:
            self._thread = None
        return stopped
