"""Fixtures the Redis integration tests share."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from durable_graph.store.redis import RedisSaver


@pytest.fixture
def saver(redis_url: str, redis_prefix: str) -> Iterator[RedisSaver]:
    """A RedisSaver under the test's own key prefix (a module may define its own)."""
    with RedisSaver.from_url(redis_url, prefix=redis_prefix) as s:
        yield s


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    """A plain client of the test Redis, to read the stored layout."""
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()
