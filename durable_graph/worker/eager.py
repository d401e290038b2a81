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

A job whose step commits with ``sync`` (or ``exit``) durability adopts the next task
in the round trip of that commit (``ride``), after the commit script, and ends itself
after the adoption in the same round trip (the thread never owes nothing in between):
adopted, the next job is confirmed by ``take`` once the commit landed, and ended again
(``drop``) when the commit was refused or the run stops there. Either way the adopting
job's end is recorded (``ended_current``): the worker records none after it. Such a
job starts from the plan its adopter made of the checkpoint that commit makes, as
this process holds it committed (no pending write can be there yet: its one task is
the adopted job): it reads and decodes nothing first. Its copy, after a crash, reads.

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
from durable_graph.scheduler.transition import Next
from durable_graph.store.redis.jobbook import Also, JobBook
from durable_graph.store.redis.saver import Rider
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
    planned: tuple[int, Next] | None = None
    """(step, plan) of its step, as the job that committed its checkpoint and adopted it
    with that commit planned it (``RunContext.planned``): it then reads nothing first."""


class Eager:
    """The continuation slot of one job: at most one adopted job, within the depth left."""

    def __init__(
        self, books: Callable[[str], JobBook], dispatcher: Dispatcher, *, worker: str,
        left: int, first_read: Callable[[Job], Also | None], current: Job, idle_ttl: float,
        end_later: Callable[[Job], None],
    ) -> None:
        self._books, self._dispatcher, self._worker = books, dispatcher, worker
        self._first_read, self._current, self._idle_ttl = first_read, current, idle_ttl
        self._end_later = end_later
        """Records a job's end off the job's path, riding out a store outage
        (``Liveness.end_later``)."""
        self.left = left
        """Inline steps this chain of jobs may still run here."""
        self.taken: Adopted | None = None
        self._riding = False
        """``taken`` was adopted with a commit (``ride``) and not confirmed by ``take`` yet."""
        self.ended_current = False
        """The end of the job that adopts (``current``) was recorded with its adoption."""

    def _open(self, job: Job) -> bool:
        """Whether ``job`` may be adopted here."""
        return self.left > 0 and self.taken is None and job.kind == "task"

    def ride(self, job: Job, *, planned: Next | None = None) -> Rider | None:
        """Adopt ``job`` in the round trip of the commit that makes its checkpoint
        (``RedisSaver.commit_step(ride=...)``); None when it cannot be taken here.

        ``planned``: its step as planned from that checkpoint, which this process holds
        as committed: the job starts from it, so no first read rides along (and no
        decode, no planning again when it runs). Else its first read does.
        """
        if not self._open(job):
            return None
        job = replace(job, key=uuid.uuid4().hex)
        return _Ride(self, job, self._dispatcher.seal(job),
                     None if planned is None else (job.step, planned))

    def _ends(self) -> tuple[str, str, float] | None:
        """``JobBook.adopt``'s ``ends`` for the current job (None: it has no book entry)."""
        current = self._current
        return (current.key, current.run.thread_id, self._idle_ttl) if current.key else None

    def rode(self, adopted: Adopted) -> None:
        """The adoption of a ``ride`` landed (the commit may yet have been refused)."""
        self.taken, self._riding = adopted, True

    def drop(self) -> None:
        """The job adopted with a commit will not run: the commit was refused, or the run
        stops at this step. Ended in the job book (a crash first: its copy finds no
        checkpoint, or a newer step, and ends). If the store refuses the end, it is
        recorded later like any job's (``end_later``): owed and claimed by this live
        process, it would never be resent, and its thread would never look idle again."""
        if not self._riding or self.taken is None:
            return
        job, self.taken, self._riding = self.taken.job, None, False
        try:
            self._books(job.run.prefix).end(job.key, job.run.thread_id, self._idle_ttl)
        except CheckpointStoreError as exc:
            log.warning("could not end the adopted %s job %s of thread %s (%s); ending it "
                        "later", job.kind, job.key, job.run.thread_id, exc)
            self._end_later(job)

    def take(self, job: Job, *, last: bool) -> bool:
        """Adopt ``job`` to run here after the current job; False to publish it instead
        (True also when adopting failed and it was published here).

        ``last``: the current job has done its part, so its end is recorded in the same
        round trip (before the adopted job can start: a crash from here on resends only
        the adopted job).
        """
        if self._riding and self.taken is not None and _same(self.taken.job, job):
            self._riding = False  # adopted with the commit before this step
            return True
        if not self._open(job):
            return False
        job = replace(job, key=uuid.uuid4().hex)
        message = self._dispatcher.seal(job)
        ends = self._ends() if last else None
        try:
            early = self._books(job.run.prefix).adopt(
                job.key, job.run.thread_id, message, self._worker, also=self._first_read(job),
                ends=ends)
        except CheckpointStoreError as exc:
            self.publish_instead(job, exc)
            return True
        self.taken = Adopted(job, message, early)
        self.ended_current = ends is not None
        return True

    def publish_instead(self, job: Job, exc: BaseException) -> None:
        """Adopting ``job`` failed on the store: publish it, under the same key, its claim
        given back first in case the adoption did land and only its reply was lost."""
        log.warning("could not adopt %s job %s of thread %s (%s); publishing it",
                    job.kind, job.key, job.run.thread_id, exc)
        with contextlib.suppress(CheckpointStoreError):
            self._books(job.run.prefix).release(job.key, job.run.thread_id, self._worker)
        self._dispatcher.send([job])

    def queue_adopt(
        self, p: Any, job: Job, message: str, *, read: bool = True,
    ) -> tuple[list[Any], bool, bool]:
        """Queue on ``p`` the adoption of ``job``, the end of the current job (after it,
        in the same script: the thread never owes nothing in between) and, if ``read``,
        ``job``'s first read (see ``_Ride``); what they returned (the read's reply
        last), whether the current job's end is among them and whether the read is."""
        book, ends = self._books(job.run.prefix), self._ends()
        also = self._first_read(job) if read else None
        return [*book.queue_adopt(p, job.key, job.run.thread_id, message, self._worker,
                                  ends=ends),
                *([also(p)] if also else [])], ends is not None, also is not None

    def deeper(self) -> Eager:
        """The slot of the adopted job, one inline step further."""
        assert self.taken is not None
        return Eager(self._books, self._dispatcher, worker=self._worker, left=self.left - 1,
                     first_read=self._first_read, current=self.taken.job,
                     idle_ttl=self._idle_ttl, end_later=self._end_later)

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


def _same(a: Job, b: Job) -> bool:
    """Whether two jobs are the same task of the same step of one run (keys aside)."""
    return (a.kind, a.run.run_id, a.checkpoint_id, a.task_id, a.fence) == (
        b.kind, b.run.run_id, b.checkpoint_id, b.task_id, b.fence)


class _Ride:
    """The adoption of a job sent with the commit of the step before it (``Eager.ride``)."""

    def __init__(
        self, eager: Eager, job: Job, message: str, planned: tuple[int, Next] | None,
    ) -> None:
        self._eager, self.job, self._message, self._planned = eager, job, message, planned
        self._ends = self._read = False

    def queue(self, pipe: Any) -> list[Any]:
        queued, self._ends, self._read = self._eager.queue_adopt(
            pipe, self.job, self._message, read=self._planned is None)
        return queued

    def landed(self, replies: list[Any]) -> None:
        early = replies[-1] if self._read else None
        self._eager.rode(Adopted(self.job, self._message, early, self._planned))
        self._eager.ended_current = self._ends

    def failed(self, exc: BaseException) -> None:
        """The commit's round trip failed on the store: the adoption may have landed.
        Landed, it is the runtime's to hand to the queue (``hand_off``) like any."""
        taken = self._eager.taken
        if taken is None or taken.job.key != self.job.key:
            self._eager.publish_instead(self.job, exc)
