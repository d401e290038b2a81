"""Scripts in a pipeline cost one round trip, and survive a server that lost them.

redis-py's ``Pipeline.execute`` asks ``SCRIPT EXISTS`` before every pipeline that holds
a script: a second round trip each time. ``execute_pipeline`` (every job claim, job
end, adoption and commit with task writes goes through it) sends ``EVALSHA`` at once
and loads the scripts only when the server says it lacks them. The reload cases run on
a redis-server of their own (``SCRIPT FLUSH`` must not touch the shared one).
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from redis.exceptions import NoScriptError

from durable_graph.store.redis.connection import execute_pipeline

_INCR = "return redis.call('INCR', KEYS[1])"
_APPEND = "return redis.call('APPEND', KEYS[1], ARGV[1])"


class _CountingConnection(redis.Connection):
    """Counts the packets sent: one per round trip (a pipeline sends one packet)."""

    sent = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        type(self).sent += 1
        super().send_packed_command(command, check_health)


def _counting_client(url: str) -> redis.Redis:
    pool = redis.ConnectionPool.from_url(url, connection_class=_CountingConnection)
    return redis.Redis(connection_pool=pool)


@pytest.fixture
def own_server(spawn_redis: Any) -> Iterator[str]:
    """A redis-server of this test's own (its scripts may be flushed)."""
    with tempfile.TemporaryDirectory(prefix="dg-pipe-") as workdir:
        proc, url = spawn_redis.start(workdir)
        try:
            yield url
        finally:
            spawn_redis.stop(proc)


def test_a_pipeline_of_scripts_is_one_round_trip(redis_url: str, redis_prefix: str) -> None:
    client = _counting_client(redis_url)
    incr, append = client.register_script(_INCR), client.register_script(_APPEND)
    key = f"{redis_prefix}:n"

    def build(p: Any) -> None:
        incr(keys=[key], client=p)
        append(keys=[key + ":s"], args=["x"], client=p)
        p.get(key)

    assert execute_pipeline(client, build) == [1, 1, b"1"]  # loads the scripts if new
    _CountingConnection.sent = 0
    assert execute_pipeline(client, build) == [2, 2, b"2"]
    assert _CountingConnection.sent == 1
    # what redis-py's own execute costs: the SCRIPT EXISTS first
    _CountingConnection.sent = 0
    pipe = client.pipeline(transaction=False)
    build(pipe)
    assert pipe.execute() == [3, 3, b"3"]
    assert _CountingConnection.sent == 2


def test_scripts_the_server_lost_are_loaded_and_run_once(own_server: str) -> None:
    client = redis.Redis.from_url(own_server)
    incr, append = client.register_script(_INCR), client.register_script(_APPEND)
    key = f"pipe-{uuid.uuid4().hex}"

    def build(p: Any) -> None:
        incr(keys=[key], client=p)
        append(keys=[key + ":s"], args=["x"], client=p)

    assert execute_pipeline(client, build) == [1, 1]
    client.script_flush()  # as after a restart: none of them runs, then all run once
    assert execute_pipeline(client, build) == [2, 2]
    assert client.get(key) == b"2" and client.get(key + ":s") == b"xx"


def test_a_pipeline_where_only_some_scripts_ran_raises(own_server: str) -> None:
    client = redis.Redis.from_url(own_server)
    incr, append = client.register_script(_INCR), client.register_script(_APPEND)
    key = f"pipe-{uuid.uuid4().hex}"
    client.script_flush()
    client.script_load(_INCR)  # APPEND's script is missing: INCR runs, APPEND does not

    def build(p: Any) -> None:
        incr(keys=[key], client=p)
        append(keys=[key + ":s"], args=["x"], client=p)

    with pytest.raises(NoScriptError):
        execute_pipeline(client, build)
    assert client.get(key) == b"1" and client.get(key + ":s") is None
    assert execute_pipeline(client, build) == [2, 1]  # loaded meanwhile
    assert client.script_exists(append.sha) == [True]


def test_a_command_error_is_raised(redis_url: str, redis_prefix: str) -> None:
    client = redis.Redis.from_url(redis_url)
    key = f"{redis_prefix}:h"
    client.hset(key, "f", "v")
    with pytest.raises(redis.ResponseError):
        execute_pipeline(client, lambda p: p.incr(key))
