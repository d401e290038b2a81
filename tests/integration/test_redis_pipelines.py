"""Pipelines of scripts against a real Redis: one round trip, and a lost script comes back
(or, in a MULTI, is not one the server can lose)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import redis

from durable_graph.store.redis import RedisSaver
from durable_graph.store.redis.connection import RedisConn

pytestmark = pytest.mark.redis


@pytest.fixture
def conn(redis_url: str) -> Any:
    client = redis.Redis.from_url(redis_url)
    yield RedisConn(client)
    client.close()


def _script(conn: RedisConn) -> Any:
    """A script this server has never seen (its text is new): it returns its arguments."""
    client: Any = conn.client
    return client.register_script(f"-- {uuid.uuid4().hex}\nreturn ARGV")


def _asked_exists(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """The SCRIPT EXISTS round trips redis-py's pipelines make, recorded from now on."""
    asked: list[tuple[Any, ...]] = []
    real = redis.client.Pipeline.immediate_execute_command

    def spy(self: Any, *args: Any, **options: Any) -> Any:
        if args[0] == "SCRIPT EXISTS":
            asked.append(args)
        return real(self, *args, **options)

    monkeypatch.setattr(redis.client.Pipeline, "immediate_execute_command", spy)
    return asked


def test_a_pipeline_of_known_scripts_asks_no_script_exists(
    conn: RedisConn, monkeypatch: pytest.MonkeyPatch,
) -> None:
    script, asked = _script(conn), _asked_exists(monkeypatch)
    for i in range(3):
        pipe = conn.client.pipeline(transaction=False)
        script(keys=[], args=[i], client=pipe)
        script(keys=[], args=[i + 10], client=pipe)
        assert conn.execute(pipe) == [[str(i).encode()], [str(i + 10).encode()]]
    assert len(asked) == 1  # the first pipeline only: this connection ran it since


def test_a_script_the_server_lost_is_loaded_and_run_again_in_order(conn: RedisConn) -> None:
    script = _script(conn)
    conn._known.add(script.sha)  # as if run before a restart of the server
    key = f"pipelines-test:{uuid.uuid4().hex}"
    try:
        pipe = conn.client.pipeline(transaction=False)
        pipe.rpush(key, "before")
        script(keys=[], args=["x"], client=pipe)
        pipe.rpush(key, "after")
        assert conn.execute(pipe) == [1, [b"x"], 2]
        assert conn.client.lrange(key, 0, -1) == [b"before", b"after"]
        assert conn.client.script_exists(script.sha) == [True]
    finally:
        conn.client.delete(key)


def test_an_error_reply_is_raised(conn: RedisConn) -> None:
    client: Any = conn.client
    failing = client.register_script("return redis.error_reply('boom')")
    pipe = client.pipeline(transaction=False)
    failing(keys=[], args=[], client=pipe)
    with pytest.raises(redis.ResponseError, match="boom"):
        conn.execute(pipe)


def test_a_status_change_after_the_server_lost_its_scripts_stays_atomic(
    spawn_redis: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The record and the status index change in one MULTI: after the server lost its
    scripts (``SCRIPT FLUSH``, a restart), the change still lands whole, with no script
    to load again; a process that died right after its EXEC leaves the thread listed
    under its new status (before: the record changed, the index entry waited for a
    ``SCRIPT LOAD`` and a second round trip)."""
    proc, url = spawn_redis.start(str(tmp_path))
    saver = RedisSaver.from_url(url, prefix="lost-scripts")
    client: Any = saver._conn.client
    try:
        saver.set_status("t1", "running")
        saver.set_run("t2", "sealed-run", "g", status="running")
        assert client.script_flush()

        def died(*_: Any) -> Any:  # the process, right after the EXEC
            raise redis.ConnectionError("the process died")

        monkeypatch.setattr(client, "script_load", died)
        saver.set_status("t1", "done")
        saver.set_run("t2", "sealed-run", "g", status="interrupted")
        assert saver.list_threads("done") == ["t1"]
        assert saver.list_threads("interrupted") == ["t2"]
        assert saver.list_threads("running") == []
    finally:
        client.close()
        spawn_redis.stop(proc)
