"""Eager continuation: a worker runs the next step's only task itself.

When a job commits a step whose next step is a single task (a chain), publishing
that task and waiting for the broker to hand it back costs a publish, a pop, a
worker wake-up and an acknowledgement. Instead the worker *adopts* it: the job is
recorded in the job book as owed and claimed by this process in one script
(``JobBook.adopt``), exactly the state of a published job a worker claimed, and
runs in this process once the current job has ended. So nothing about it is
special: its writes and commit are fenced by the lease generation like any job's,
and if this process dies in the middle, a recovery sweep finds the dead process's
claim and sends the job's signed message to the queue, like any dead process's job.

At most ``depth`` steps run inline in a row (then the next one is published), so a
long chain gives other jobs a turn at this worker process. Temporal's eager
activities are the idea.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from durable_graph.errors import CheckpointStoreError
from durable_graph.store.redis.jobbook import Also, JobBook
from durable_graph.worker.runs import Dispatcher, Job

__all__ = ["Adopted", "Eager"]

log = logging.getLogger("durable_graph.worker")


@dataclass(frozen=True)
class Adopted:
    """A job this process took to run itself."""

    job: Job
    """The job, with its job-book key."""
    message: str
    """Its signed message, as the queue would have carried it."""
    early: Any = None
    """The reply to the read it starts with, made with its adoption (``RunContext.early``)."""


class Eager:
    """The continuation slot of one job: at most one adopted job, within the depth left."""

    def __init__(
        self, books: Callable[[str], JobBook], dispatcher: Dispatcher, *, worker: str,
        left: int, first_read: Callable[[Job], Also | None], current: Job, idle_ttl: float,
    ) -> None:
        self._books, self._dispatcher, self._worker = books, dispatcher, worker
        self._first_read, self._current, self._idle_ttl = first_read, current, idle_ttl
        self.left = left
        """Inline steps this chain of jobs may still run here."""
        self.taken: Adopted | None = None

    def take(self, job: Job, *, last: bool) -> bool:
        """Adopt ``job`` to run here after the current job; False to publish it instead
        (True also when adopting failed and it was published here).

        ``last``: the current job has done its part, so its end is recorded in the same
        round trip (before the adopted job can start: a crash from here on resends only
        the adopted job).
        """
        if self.left <= 0 or self.taken is not None or job.kind != "task":
            return False
        job = replace(job, key=uuid.uuid4().hex)
        message = self._dispatcher.seal(job)
        current = self._current
        ends = (current.key, current.run.thread_id, self._idle_ttl) \
            if last and current.key else None
        try:
            early = self._books(job.run.prefix).adopt(
                job.key, job.run.thread_id, message, self._worker, also=self._first_read(job),
                ends=ends)
        except CheckpointStoreError as exc:
            # published instead, under the same key, its claim given back first in case
            # the adoption did land and only its reply was lost
            log.warning("could not adopt %s job %s of thread %s (%s); publishing it",
                        job.kind, job.key, job.run.thread_id, exc)
            with contextlib.suppress(CheckpointStoreError):
                self._books(job.run.prefix).release(job.key, job.run.thread_id, self._worker)
            self._dispatcher.send([job])
            return True
        self.taken = Adopted(job, message, early)
        return True

    def deeper(self) -> Eager:
        """The slot of the adopted job, one inline step further."""
        assert self.taken is not None
        return Eager(self._books, self._dispatcher, worker=self._worker, left=self.left - 1,
                     first_read=self._first_read, current=self.taken.job,
                     idle_ttl=self._idle_ttl)

    def hand_off(self, *, release: bool = True) -> None:
        """The job adopted here will not run here (the job that adopted it, or the
        adopted job itself, failed): give it to the queue.

        Published first (it is owed already; the publish retries the broker like any
        send), then its claim released (unless already given back, ``release=False``).
        If the store is down the release may fail: the copy then finds this process's
        own claim on a job it does not run, and takes it again.
        """
        taken, self.taken = self.taken, None
        if taken is None:
            return
        job = taken.job
        try:
            self._dispatcher.send_sealed(taken.message, register=False)
            if release:
                self._books(job.run.prefix).release(job.key, job.run.thread_id, self._worker)
        except Exception:  # still owed: the lost-message probe or the sweep sends it
            log.exception("could not hand %s job %s of thread %s to the queue", job.kind,
                          job.key, job.run.thread_id)
