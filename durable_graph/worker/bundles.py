"""Bundles: several ``@task`` calls of one run in one Celery message.

Celery pays a cost per message (the prefork hand-over, the ack, the task protocol)
that a no-op call is mostly made of; a node that starts a thousand calls sends them
in a few dozen bundles instead. A bundle is a ``durable_graph.job`` message of kind
``bundle`` whose payload is the [task id, kind, sealed job, key] of each call: every
call stays a job of its own (registered as owed under its own lone message, which a
sweep resends; claimed, fenced, recorded and ended alone), the bundle only carries
them (``WorkerRuntime.run_bundle``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from durable_graph.worker.runs import Job

__all__ = ["KINDS", "bundle_keys", "bundled", "bundles", "together"]

KINDS = ("task", "call", "start", "recover")
"""The kinds of job a message (or a bundle's item) may carry."""
_BUNDLE_MAX = 32
"""``@task`` calls of one send that travel in one message at most (see ``bundles``)."""
_BUNDLE_SPREAD = 4
"""A send of calls goes in at least this many bundles (when it has as many calls), so
every worker process gets some."""


def bundles(messages: list[list[str]]) -> list[list[Any]]:
    """``messages`` with the ``@task`` calls of each run in bundles: one message carries
    several calls (kind ``bundle``, its payload the [task id, kind, sealed job, key] of
    each), so Celery's cost per message (prefork hand-over, ack, protocol) is paid once
    per bundle, not per call. A worker runs each call of a bundle as if it came alone:
    its own claim, fence, recorded result and end (``WorkerRuntime.run_bundle``).

    At most ``_BUNDLE_MAX`` calls a bundle, and a send of calls spread over at least
    ``_BUNDLE_SPREAD`` bundles (so several worker processes share it); a lone call, and
    every other kind of job, keeps a message of its own.
    """
    out: list[list[Any]] = []
    calls: dict[tuple[str, str, str], list[list[str]]] = {}
    for args in messages:
        if args[2] == "call" and args[6]:
            calls.setdefault((args[0], args[4], args[5]), []).append(args)
        else:
            out.append(args)
    for (thread_id, run_id, prefix), group in calls.items():
        count = -(-len(group) // min(_BUNDLE_MAX, max(1, len(group) // _BUNDLE_SPREAD)))
        for part in (group[i::count] for i in range(count)):
            if len(part) == 1:
                out.append(part[0])
            else:
                out.append([thread_id, "", "bundle", [[*a[1:4], a[6]] for a in part], run_id,
                            prefix, ""])
    return out


def bundle_keys(args: Sequence[Any]) -> list[str]:
    """The job keys of the calls in a bundle's task arguments ([] if it is none)."""
    if len(args) < 4 or args[2] != "bundle" or not isinstance(args[3], list):
        return []
    return [item[3] for item in args[3]
            if isinstance(item, list) and len(item) == 4 and isinstance(item[3], str)]


def bundled(item: Any) -> bool:
    """Whether ``item`` has the shape of one job of a bundle (its content is checked by
    ``run``, like a lone message's)."""
    return (isinstance(item, list) and len(item) == 4 and all(isinstance(x, str) for x in item)
            and item[1] in KINDS)


def together(jobs: Sequence[Job]) -> bool:
    """Whether ``jobs`` (of one bundle) can be claimed in one script: calls with keys, of
    one checkpoint of one thread, under one lease (``JobBook.claim_calls``)."""
    first = jobs[0]
    same = (first.run.prefix, first.run.thread_id, first.run.ns, first.checkpoint_id,
            first.owner, first.fence)
    return all(job.kind == "call" and job.key and (
        job.run.prefix, job.run.thread_id, job.run.ns, job.checkpoint_id, job.owner,
        job.fence) == same for job in jobs)
