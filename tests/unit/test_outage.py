"""``ride_out``: a store call retried through an outage, and a clear error after its window."""

from __future__ import annotations

import time

import pytest

from durable_graph.errors import CheckpointStoreError
from durable_graph.worker.outage import ride_out


def test_a_call_that_fails_for_a_while_returns_once_the_store_is_back() -> None:
    back_at = time.monotonic() + 0.5
    calls = []

    def read() -> str:
        calls.append(time.monotonic())
        if time.monotonic() < back_at:
            raise CheckpointStoreError("connection refused")
        return "events"

    assert ride_out(read, 5.0, "reading events") == "events"
    assert 3 <= len(calls) <= 8, "backoff: a few tries, not a busy loop"


def test_an_outage_longer_than_the_window_names_what_failed() -> None:
    def down() -> str:
        raise CheckpointStoreError("connection refused")

    started = time.monotonic()
    with pytest.raises(CheckpointStoreError, match=r"reading events: .* 0.3 s .*refused"):
        ride_out(down, 0.3, "reading events")
    assert 0.3 <= time.monotonic() - started < 1.5


def test_other_errors_are_not_retried() -> None:
    calls = []

    def broken() -> None:
        calls.append(1)
        raise ValueError("a bug, not an outage")

    with pytest.raises(ValueError):
        ride_out(broken, 5.0, "x")
    assert calls == [1]
