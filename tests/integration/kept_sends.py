"""Jobs a Celery app sends, kept for a test to run in its own process."""

from __future__ import annotations

import collections
from typing import Any

import pytest

from durable_graph.worker.messages import NO_LINEAGE, JobMessages, Lineage


def kept_sends(monkeypatch: pytest.MonkeyPatch) -> collections.deque[tuple[Any, Any]]:
    """The (args, kwargs) of every job sent on a Redis broker, for the test to run here.
    Each is also sent for real (to a queue no worker reads), as the LPUSH of the message
    ``worker/messages`` builds (a job the producer sends with its commit rides the
    commit's round trip)."""
    sent: collections.deque[tuple[Any, Any]] = collections.deque()
    push = JobMessages.push

    def keep(self: JobMessages, args: list[str],
             lineage: Lineage = NO_LINEAGE) -> tuple[str, str]:
        sent.append((args[:4], {"run": args[4], "prefix": args[5], "key": args[6]}))
        return push(self, args, lineage)

    monkeypatch.setattr(JobMessages, "push", keep)
    return sent
