"""A producer's first job, registered (and published) in the round trip of the commit
before it.

A producer commits the step that applies a run's input (with the run's record and the
input checkpoint, in one MULTI), then registers the next step's job in the job book and
publishes it. When that step has one task (a chain), the registration rides the commit
instead (``RedisSaver.commit_step(ride=...)``, after the commit in the same MULTI) and,
on a Redis broker that is the checkpoint store's own Redis, so does the publish: the
``LPUSH`` kombu would send (``transport.capturing``), unless the run streams events the
producer publishes after the commit (``AFTER_COMMIT``: the job's own would overtake them).
The producer's path then sends no round trip after its commit. As for any published job,
the job is owed and due from then on, so a producer that dies before its publish leaves
a job the lost-message probe sends (rather than a thread idle for a lease TTL). A refused
commit, or a run that stops at that step, ends the job again (a copy already in the
queue finds it ended and is dropped by its claim).

``FirstJob`` is the producer's ``Continuation`` (see ``worker/runs``): it never runs a
job itself; ``take`` confirms (publishing it if need be) the job sent with the commit.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from durable_graph.errors import CheckpointStoreError
from durable_graph.scheduler.transition import Next
from durable_graph.store.redis.jobbook import JobBook
from durable_graph.worker.app import CeleryDispatcher
from durable_graph.worker.runs import AFTER_COMMIT, Job

__all__ = ["FirstJob"]

log = logging.getLogger("durable_graph.worker")


def _step_task(job: Job) -> tuple[str, str, str, str, int]:
    """What makes two jobs the same task of the same step of one run (keys aside)."""
    return (job.kind, job.run.run_id, job.checkpoint_id, job.task_id, job.fence)


@dataclass(frozen=True)
class _Sent:
    """A job sent with a commit."""

    job: Job
    message: str
    """Its signed message."""
    pushed: bool
    """Published with the commit too (else ``take`` publishes it)."""


class FirstJob:
    """The producer's continuation slot: the one job sent with its commit."""

    def __init__(self, book: Callable[[], JobBook], dispatcher: CeleryDispatcher,
                 client: Any, *, idle_ttl: float) -> None:
        self._book, self._dispatcher, self._client = book, dispatcher, client
        self._idle_ttl = idle_ttl
        self._sent: _Sent | None = None
        """Sent with a commit, not confirmed by ``take`` yet."""

    def ride(self, job: Job, *, planned: Next | None = None) -> _Register | None:
        """Register (and push) ``job`` in the round trip of the commit that makes its
        checkpoint; ``take`` of the same job confirms it once the commit landed.
        ``planned`` (the step as its adopter planned it) is not kept: the job runs on a
        worker, which plans its step from the checkpoint it reads with its claim."""
        if self._sent is not None or job.kind != "task":
            return None
        job = replace(job, key=uuid.uuid4().hex)
        if AFTER_COMMIT & set(job.run.modes):
            # the step's events, published after the commit, go first: ``take`` sends it
            return _Register(self, job, self._dispatcher.seal(job), None)
        return _Register(self, job, *self._dispatcher.seal_pushed(job, self._client))

    def take(self, job: Job, *, last: bool) -> bool:
        """True when ``job`` is the one sent with the commit (published here if only
        registered); False: the caller sends it as usual."""
        sent = self._sent
        if sent is None or _step_task(sent.job) != _step_task(job):
            return False
        self._sent = None
        if not sent.pushed:
            self._dispatcher.send_sealed(sent.message, register=False)
        return True

    def queue_register(self, pipe: Any, job: Job, message: str) -> Any:
        """Queue the registration of ``job`` (as owed and due) on ``pipe``."""
        return self._book().queue_register(pipe, job.key, job.run.thread_id, message)

    def landed(self, sent: _Sent) -> None:
        """What was sent with the commit landed (the commit may yet have been refused)."""
        self._sent = sent

    def drop(self) -> None:
        """The job sent with the commit will not run (the commit was refused, or the run
        stops there): owed no more."""
        sent, self._sent = self._sent, None
        if sent is None:
            return
        job = sent.job
        try:
            self._book().end(job.key, job.run.thread_id, self._idle_ttl)
        except CheckpointStoreError as exc:  # its copy finds no newer checkpoint and ends
            log.warning("could not end the %s job %s of thread %s (%s)", job.kind,
                        job.key, job.run.thread_id, exc)


class _Register:
    """A producer's first job sent with the commit before it (a ``Rider``): registered,
    and pushed to the broker's queue when ``push`` (its ``LPUSH``) is given."""

    def __init__(self, slot: FirstJob, job: Job, message: str,
                 push: tuple[str, str] | None) -> None:
        self._slot, self._job, self._message, self._push = slot, job, message, push

    def queue(self, pipe: Any) -> list[Any]:
        queued = [self._slot.queue_register(pipe, self._job, self._message)]
        if self._push is not None:
            queued.append(pipe.lpush(*self._push))
        return queued

    def landed(self, replies: list[Any]) -> None:
        """Sent (also when the commit was refused: ``drop`` then ends the job)."""
        self._slot.landed(_Sent(self._job, self._message, self._push is not None))

    def failed(self, exc: BaseException) -> None:
        """The commit's round trip failed on the store: what rode it may have landed;
        the run fails here, so the job is ended if it can be."""
        self.landed([])
        self._slot.drop()
