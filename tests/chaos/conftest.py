"""Fixtures of the chaos tests: one ``worker_env.Env`` per test (workers stopped after)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from worker_env import Env  # noqa: E402


@pytest.fixture
def make_env(redis_url: str, redis_prefix: str, tmp_path: Path) -> Iterator[Callable[..., Env]]:
    """``make_env(visibility_timeout="10", ...)``: the test's Env with those settings
    (``DURABLE_GRAPH_*`` for the workers, ``create_app`` keywords for the producer)."""
    made: list[Env] = []

    def make(**settings: str) -> Env:
        assert not made, "one Env per test"
        made.append(Env(redis_url, redis_prefix, tmp_path, **settings))
        return made[0]

    try:
        yield make
    finally:
        for e in made:
            e.close()


@pytest.fixture
def env(make_env: Callable[..., Env]) -> Env:
    """The test's Env with default settings."""
    return make_env()
