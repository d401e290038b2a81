"""``graphs_fixture``'s app and graphs, with the job messages its workers send while a
job runs counted by how they were built: ``HINCRBY {P}:publishes template 1`` for one
filled in from the process's template (``JobMessages.push``), ``celery 1`` for one
Celery's ``send_task`` built (``CeleryDispatcher._celery_send``; the template's own
placeholder is not counted). Only the workers' pool processes count (set up by
``worker_process_init``): the test process imports this module too.
"""

from __future__ import annotations

from typing import Any

import dg_trace
from celery._state import get_current_worker_task
from celery.signals import worker_process_init
from graphs_fixture import POOL_KEY, PREFIX, QUEUE, REDIS_URL, app, calls, chain

from durable_graph.worker.app import CeleryDispatcher
from durable_graph.worker.messages import JobMessages

__all__ = ["COUNT_KEY", "POOL_KEY", "QUEUE", "REDIS_URL", "app", "calls", "chain"]

COUNT_KEY = f"{PREFIX}:publishes"


def _count(kind: str) -> None:
    if get_current_worker_task() is not None:  # sent by a running job
        dg_trace.client(REDIS_URL).hincrby(COUNT_KEY, kind, 1)


@worker_process_init.connect
def _count_job_messages(**_: Any) -> None:
    push, celery_send = JobMessages.push, CeleryDispatcher._celery_send

    def pushed(self: JobMessages, args: list[str], *more: Any) -> tuple[str, str]:
        _count("template")
        return push(self, args, *more)

    def sent(self: CeleryDispatcher, producer: Any, args: list[str], **kw: Any) -> None:
        if args[2]:  # not the template's placeholder
            _count("celery")
        celery_send(self, producer, args, **kw)

    JobMessages.push = pushed  # type: ignore[method-assign]
    CeleryDispatcher._celery_send = sent  # type: ignore[method-assign]
