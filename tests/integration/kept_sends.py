"""Jobs a Celery app sends, kept for a test to run in its own process."""

from __future__ import annotations

import collections
from typing import Any

import pytest
from celery import Celery


def kept_sends(
    app: Celery, monkeypatch: pytest.MonkeyPatch,
) -> collections.deque[tuple[Any, Any]]:
    """The (args, kwargs) of every job the app sends, for the test to run here. Each is
    also sent for real (to a queue no worker reads): a job the producer sends with its
    commit is sent once, as the LPUSH kombu's publish makes (``transport.capturing``)."""
    sent: collections.deque[tuple[Any, Any]] = collections.deque()
    send_task = app.send_task

    def keep(name: str, args: Any = (), kwargs: Any = None, **options: Any) -> Any:
        sent.append((args, kwargs))
        return send_task(name, args=args, kwargs=kwargs, **options)

    monkeypatch.setattr(app, "send_task", keep)
    return sent
