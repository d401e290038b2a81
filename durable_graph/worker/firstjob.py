"""A producer's first job, registered as owed in the round trip of the commit before it.

A producer commits the step that applies a run's input (with the run's record and the
input checkpoint, in one MULTI), then registers the next step's job in the job book and
publishes it. When that step has one task (a chain), the registration rides the commit
instead (``RedisSaver.commit_step(ride=...)``, after the commit in the same MULTI): the
producer's path sends one script fewer. Exactly as for a published job, the job is
owed and due from then on, so a producer that dies between its commit and its publish
leaves a job the lost-message probe sends (rather than a thread idle for a lease TTL).
A refused commit, or a run that stops at that step, ends the registered job again.

``FirstJob`` is the producer's ``Continuation`` (see ``worker/runs``): it never runs a
job itself; ``take`` publishes the job registered with the commit.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from durable_graph.errors import CheckpointStoreError
from durable_graph.store.redis.jobbook import JobBook
from durable_graph.worker.runs import Dispatcher, Job

__all__ = ["FirstJob"]

log = logging.getLogger("durable_graph.worker")


def _step_task(job: Job) -> tuple[str, str, str, str, int]:
    """What makes two jobs the same task of the same step of one run (keys aside)."""
    return (job.kind, job.run.run_id, job.checkpoint_id, job.task_id, job.fence)


class FirstJob:
    """The producer's continuation slot: the one job registered with its commit."""

    def __init__(self, book: Callable[[], JobBook], dispatcher: Dispatcher, *,
                 idle_ttl: float) -> None:
        self._book, self._dispatcher, self._idle_ttl = book, dispatcher, idle_ttl
        self._registered: tuple[Job, str] | None = None
        """(job, signed message) registered with a commit and not published yet."""

    def ride(self, job: Job) -> _Register | None:
        """Register ``job`` as owed in the round trip of the commit that makes its
        checkpoint; ``take`` of the same job publishes it once the commit landed."""
        if self._registered is not None or job.kind != "task":
            return None
        job = replace(job, key=uuid.uuid4().hex)
        return _Register(self, job, self._dispatcher.seal(job))

    def take(self, job: Job, *, last: bool) -> bool:
        """Publish ``job`` if it is the one registered with the commit (True); False:
        the caller sends it as usual."""
        registered = self._registered
        if registered is None or _step_task(registered[0]) != _step_task(job):
            return False
        self._registered = None
        self._dispatcher.send_sealed(registered[1], register=False)
        return True

    def queue_register(self, pipe: Any, job: Job, message: str) -> Any:
        """Queue the registration of ``job`` (as owed and due) on ``pipe``."""
        return self._book().queue_register(pipe, job.key, job.run.thread_id, message)

    def registered(self, job: Job, message: str) -> None:
        """The registration of ``job`` landed (the commit may yet have been refused)."""
        self._registered = (job, message)

    def drop(self) -> None:
        """The registered job will not be published (its commit was refused, or the run
        stops there): owed no more."""
        registered, self._registered = self._registered, None
        if registered is None:
            return
        job = registered[0]
        try:
            self._book().end(job.key, job.run.thread_id, self._idle_ttl)
        except CheckpointStoreError as exc:  # a copy sent by the probe finds it stale
            log.warning("could not end the unsent %s job %s of thread %s (%s)", job.kind,
                        job.key, job.run.thread_id, exc)


class _Register:
    """The registration of a producer's first job, sent with the commit (a ``Rider``)."""

    def __init__(self, slot: FirstJob, job: Job, message: str) -> None:
        self._slot, self._job, self._message = slot, job, message

    def queue(self, pipe: Any) -> list[Any]:
        return [self._slot.queue_register(pipe, self._job, self._message)]

    def landed(self, replies: list[Any]) -> None:
        """Registered (also when the commit was refused: ``drop`` then ends it)."""
        self._slot.registered(self._job, self._message)

    def failed(self, exc: BaseException) -> None:
        """The commit's round trip failed on the store: the registration may have landed;
        the run fails here, so the job is ended if it can be."""
        self._slot.registered(self._job, self._message)
        self._slot.drop()
