"""Riding out a short Redis outage on the producer side (a restart, a failover, a blip).

A producer blocked in ``invoke`` has nothing to lose by waiting: the workers keep
the run going (their jobs retry their own store errors), so a read that fails is
retried with capped exponential backoff for a window (``Settings.store_retry``,
30 s by default) before the producer gives up with the last store error.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from durable_graph.errors import CheckpointStoreError

__all__ = ["ride_out"]

T = TypeVar("T")
log = logging.getLogger("durable_graph.producer")

FIRST_DELAY = 0.1
MAX_DELAY = 2.0


def ride_out(action: Callable[[], T], window: float, what: str) -> T:
    """``action()``, retried while it raises CheckpointStoreError for up to ``window`` s.

    The error after the window names ``what`` and how long the store was retried.
    """
    deadline = time.monotonic() + window
    delay = FIRST_DELAY
    while True:
        try:
            return action()
        except CheckpointStoreError as exc:
            left = deadline - time.monotonic()
            if left <= 0:
                if window <= 0:
                    raise
                raise CheckpointStoreError(
                    f"{what}: the store was unreachable for the whole retry window of "
                    f"{window:g} s (DURABLE_GRAPH_STORE_RETRY); last error: {exc}") from exc
            log.warning("%s failed, retrying for up to %.1f s more: %s", what, left, exc)
            time.sleep(min(delay, left))
            delay = min(delay * 2, MAX_DELAY)
