"""The results of a bundle's calls, held a few milliseconds and landed together.

A bundle (``worker/bundles``) runs its ``@task`` calls one after another. Each call's
result is stored, and its job ended, by one script (``PUT_CALL_WRITES``), as a lone
call's is; here the scripts of calls that finish close together go to Redis in one
round trip instead of one each. A result is held only while the bundle goes on to its
next call, and at most ``HOLD_FOR`` seconds before the next call starts: the bundle
lands what it holds before it starts a call once the oldest result held is that old,
and when it ends (or stops on an error).

What this changes, and what not: a call whose result is recorded never runs again,
and the caller's wake-up comes from the write that lands the last result it waits on,
as before. A worker killed while it holds results loses them: those calls were never
recorded, so they run again (a ``@task`` call runs at least once, as a call killed
between its return and its write does), at most ``HOLD_FOR`` seconds of finished calls
plus the call that was running.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from durable_graph.errors import FencingError
from durable_graph.store.base import RETURN
from durable_graph.worker.runs import Job, RunContext

__all__ = ["HOLD_FOR", "HeldWrites"]

log = logging.getLogger("durable_graph.worker")

HOLD_FOR = 0.005
"""Seconds the oldest result held may wait before the bundle starts another call."""


@dataclass(frozen=True)
class _Held:
    rc: RunContext
    job: Job
    writes: list[tuple[str, Any]]
    script: tuple[list[str], list[Any]]


class HeldWrites:
    """The call results one bundle holds (see the module docstring)."""

    def __init__(self, hold_for: float | None = None) -> None:
        self.hold_for = HOLD_FOR if hold_for is None else hold_for
        self._held: list[_Held] = []
        self._since = 0.0

    @property
    def jobs(self) -> list[Job]:
        """The jobs whose results are held (claimed here, not ended yet)."""
        return [h.job for h in self._held]

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
        if not self._held:
            self._since = time.monotonic()
        self._held.append(_Held(rc, job, writes, script))
        rc.ending = None  # it ends with its result
        return True

    def due(self) -> bool:
        """Whether the oldest result held waited long enough: land before the next call."""
        return bool(self._held) and time.monotonic() - self._since >= self.hold_for

    def land(self) -> None:
        """Store every result held in one round trip, then send the wake-ups they return
        and stream their events. A store error leaves them held (the caller gives their
        jobs back)."""
        if not self._held:
            return
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
        if failed is not None:
            raise failed
