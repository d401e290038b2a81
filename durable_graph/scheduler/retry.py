"""Retrying a node or task body under its RetryPolicy."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

from durable_graph.types import RetryPolicy

__all__ = ["run_with_retry"]

T = TypeVar("T")


def run_with_retry(fn: Callable[[], T], policy: RetryPolicy | None, *, used: int = 0) -> T:
    """Call ``fn``, retrying errors the policy accepts with exponential backoff.

    Interrupts and other control-flow signals are ``BaseException`` and never retried.
    ``used``: attempts already spent elsewhere (a distributed task replayed in a new job).
    """
    attempt = used
    interval = policy.initial_interval * policy.backoff_factor ** used if policy else 0.0
    while True:
        try:
            return fn()
        except Exception as exc:
            attempt += 1
            if policy is None or attempt >= policy.max_attempts or not policy.should_retry(exc):
                raise
            delay = min(interval, policy.max_interval)
            if policy.jitter:
                delay += random.uniform(0, 1)
            time.sleep(delay)
            interval *= policy.backoff_factor
