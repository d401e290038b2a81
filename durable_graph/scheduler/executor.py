"""Where tasks run: the executor seam between the step loop and threads or workers."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

__all__ = ["Executor", "LocalExecutor"]


class Executor(Protocol):
    """Runs callables soon, somewhere; the step loop collects their results itself."""

    def submit(self, fn: Callable[[], Any]) -> None:
        """Schedule ``fn``; it must eventually run unless the loop runs it first."""
        ...


class LocalExecutor:
    """Runs tasks on a lazily created pool of local threads (the embedded default).

    The loop and waiting tasks run unstarted work themselves, so a small pool
    cannot deadlock; the pool only adds parallelism.
    """

    def __init__(self, max_workers: int = 32) -> None:
        self.max_workers = max_workers
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def submit(self, fn: Callable[[], Any]) -> None:
        """Queue ``fn`` on the pool."""
        if self._pool is None:
            with self._lock:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(
                        self.max_workers, thread_name_prefix="durable-graph"
                    )
        self._pool.submit(fn)

    def shutdown(self) -> None:
        """Stop the pool's threads once queued work is done."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
