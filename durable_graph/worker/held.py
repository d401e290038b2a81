"""The results of a bundle's calls, held a few milliseconds and landed together.

A bundle (``worker/bundles``) runs its ``@task`` calls one after another. Each call's
result is stored, and its job ended, by one script (``PUT_CALL_WRITES``), as a lone
call's is; here the scripts of calls that finish close together go to Redis in one
round trip instead of one each. A result is held at most ``HOLD_FOR`` seconds: the
bundle lands what it holds before it starts a call once the oldest result held is that
old, and when it ends (or stops on an error); while a call runs, a daemon thread of the
process (``_Lander``) lands what waited ``HOLD_FOR``, so a slow call does not keep the
results of the fast ones before it from the caller and the stream.

What this changes, and what not: a call whose result is recorded never runs again,
and the caller's wake-up comes from the write that lands the last result it waits on,
as before. A worker killed while it holds results loses them: those calls were never
recorded, so they run again (a ``@task`` call runs at least once, as a call killed
between its return and its write does), at most ``HOLD_FOR`` seconds of finished calls
plus the call that was running.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

from durable_graph.errors import FencingError
from durable_graph.store.base import RETURN
from durable_graph.worker.runs import Job, RunContext

__all__ = ["HOLD_FOR", "RETRY_AFTER", "HeldWrites"]

log = logging.getLogger("durable_graph.worker")

HOLD_FOR = 0.005
"""Seconds the oldest result held may wait before the bundle starts another call."""
RETRY_AFTER = 0.25
"""Seconds before the lander thread tries again results it could not store."""


@dataclass(frozen=True)
class _Held:
    rc: RunContext
    job: Job
    writes: list[tuple[str, Any]]
    script: tuple[list[str], list[Any]]


class HeldWrites:
    """The call results one bundle holds (see the module docstring); thread-safe."""

    def __init__(self, hold_for: float | None = None) -> None:
        self.hold_for = HOLD_FOR if hold_for is None else hold_for
        self._held: list[_Held] = []
        self._since = 0.0
        self._lock = threading.Lock()
        self._failed: Exception | None = None
        """What went wrong after a late landing stored its results (a wake-up not sent):
        raised by the bundle's next ``land``."""

    @property
    def jobs(self) -> list[Job]:
        """The jobs whose results are held (claimed here, not ended yet)."""
        with self._lock:
            return [h.job for h in self._held]

    @property
    def deadline(self) -> float | None:
        """When the oldest result held is due (``time.monotonic``); None: none held."""
        return self._since + self.hold_for if self._held else None

    def hold(self, rc: RunContext, job: Job, writes: list[tuple[str, Any]]) -> bool:
        """Hold the result of call ``job``, with the end of its job (``rc.ending``); False
        when it must land now, alone (a job without an end to ride it, a store that
        cannot take several such scripts in one round trip)."""
        if rc.ending is None:
            return False
        script = rc.saver.call_writes_script(rc.config(job.checkpoint_id), writes, job.task_id,
                                             job.caller, rc.ending)
        if script is None:
            return False
        with self._lock:
            first = not self._held
            if first:
                self._since = time.monotonic()
            self._held.append(_Held(rc, job, writes, script))
        rc.ending = None  # it ends with its result
        if first:
            _lander().watch(self)
        return True

    def due(self) -> bool:
        """Whether the oldest result held waited long enough: land before the next call."""
        deadline = self.deadline
        return deadline is not None and time.monotonic() >= deadline

    def land(self) -> None:
        """Store every result held in one round trip, then send the wake-ups they return
        and stream their events. A store error leaves them held (the caller gives their
        jobs back); an error of a late landing (``land_late``) is raised here."""
        with self._lock:
            failed, self._failed = self._failed, None
            failed = self._land() or failed
        if failed is not None:
            raise failed

    def land_late(self) -> None:
        """``land`` from the lander thread, if the oldest result held is due: an error is
        kept for the bundle's next ``land`` (a store error leaves the results held)."""
        with self._lock:
            if not self.due():
                return
            try:
                self._failed = self._land() or self._failed
            except Exception as exc:  # still held: tried again after a pause
                log.warning("could not store %d held call results yet (%s); trying again in "
                            "%.2f s", len(self._held), exc, RETRY_AFTER)
                self._since = time.monotonic() + RETRY_AFTER - self.hold_for
                _lander().watch(self)

    def _land(self) -> Exception | None:
        """``land``, the lock held: the first error after the results landed, if any."""
        if not self._held:
            return None
        held = self._held
        saver = held[0].rc.saver
        replies = saver.land_call_writes([(h.rc.config(h.job.checkpoint_id), h.script)
                                          for h in held])
        self._held = []
        failed: Exception | None = None
        for h, reply in zip(held, replies, strict=True):
            if isinstance(reply, FencingError):
                log.info("dropped a stale call job of thread %s: %s", h.job.run.thread_id, reply)
                continue
            try:  # each landed: the others' events and wake-ups go out whatever one does
                if h.writes[0][0] == RETURN:
                    h.rc.emit("updates", {h.writes[0][1][0]: h.writes[0][1][1]})
                if reply is not None:
                    h.rc.dispatcher.send_sealed(reply)
            except Exception as exc:
                failed = failed or exc
        return failed


class _Lander:
    """A daemon thread per process that lands held results once due, while their bundle
    runs a call (one thread for every bundle of the process, woken by ``watch``)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._watched: list[HeldWrites] = []
        self._thread = threading.Thread(target=self._run, name="durable-graph-held",
                                        daemon=True)
        self._thread.start()

    def watch(self, held: HeldWrites) -> None:
        """Land what ``held`` holds when it is due (unless its bundle did first)."""
        with self._cond:
            if not any(h is held for h in self._watched):
                self._watched.append(held)
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                now, wait = time.monotonic(), None
                due: list[HeldWrites] = []
                for held in list(self._watched):
                    deadline = held.deadline
                    if deadline is None or deadline <= now:
                        self._watched.remove(held)
                        due += [held] if deadline is not None else []
                    else:
                        wait = deadline - now if wait is None else min(wait, deadline - now)
                if not due:
                    self._cond.wait(wait)
                    continue
            for held in due:
                try:
                    held.land_late()
                except Exception:  # never let the thread die
                    log.exception("landing held call results failed")


_landers: dict[int, _Lander] = {}
_landers_lock = threading.Lock()


def _lander() -> _Lander:
    """This process's lander (a forked pool process starts its own)."""
    pid = os.getpid()
    found = _landers.get(pid)
    if found is None:
        with _landers_lock:
            found = _landers.get(pid)
            if found is None:
                found = _landers[pid] = _Lander()
    return found
