"""Pipelines of scripts against a real Redis: one round trip, and a lost script comes back
(or, in a MULTI, is not one the server can lose)."""

from __future__ import annotations

import uuid
import warnings
from typing import Any

import pytest
import redis

from durable_graph.errors import CheckpointStoreError
from durable_graph.store.redis import RedisSaver, connection, job_scripts, scripts
from durable_graph.store.redis.connection import RedisConn, checkout, client_from_url
from durable_graph.store.redis.jobbook import JobBook, pipelined
from tests.integration.test_redis_dispatch import commit, make

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


def _known_script(conn: RedisConn, source: str | None = None) -> Any:
    """A script loaded on the server and known to ``conn``: its pipelines go by ``_exchange``."""
    client: Any = conn.client
    script = _script(conn) if source is None else client.register_script(source)
    client.script_load(script.script)
    conn._known.add(script.sha)
    return script


def _exchanged(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of commands of each pipeline sent by ``_exchange``, from now on."""
    sent: list[int] = []
    real = connection._exchange

    def spy(pipe: Any, stack: list[Any]) -> list[Any]:
        sent.append(len(stack))
        return real(pipe, stack)

    monkeypatch.setattr(connection, "_exchange", spy)
    return sent


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


def test_a_lost_script_in_a_multi_runs_again_in_a_multi_of_its_own(
    conn: RedisConn, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A MULTI whose scripts the server lost: the plain commands ran (they are not sent
    again), the scripts run again together, in order, in a second MULTI."""
    first, second = _script(conn), _script(conn)
    conn._known.update({first.sha, second.sha})  # as if run before a restart
    key = f"pipelines-test:{uuid.uuid4().hex}"
    multis: list[int] = []
    real = redis.client.Pipeline._execute_transaction

    def spy(self: Any, connection: Any, commands: Any, raise_on_error: bool) -> Any:
        multis.append(len(commands))
        return real(self, connection, commands, raise_on_error)

    monkeypatch.setattr(redis.client.Pipeline, "_execute_transaction", spy)
    try:
        pipe = conn.client.pipeline(transaction=True)
        first(keys=[], args=["a"], client=pipe)
        pipe.rpush(key, "once")
        second(keys=[], args=["b"], client=pipe)
        assert conn.execute(pipe) == [[b"a"], 1, [b"b"]]
        assert multis == [3, 2]
        assert conn.client.lrange(key, 0, -1) == [b"once"]
    finally:
        conn.client.delete(key)


class _Sent(redis.Connection):
    """A connection that keeps every byte it sends (in ``sent``, shared by its class)."""

    sent: bytearray

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        chunks = [command] if isinstance(command, (bytes, bytearray, memoryview)) else command
        for chunk in chunks:
            type(self).sent += bytes(chunk)
        super().send_packed_command(command, check_health)


def _sending(url: str, prefix: str) -> tuple[RedisSaver, bytearray]:
    """A saver on ``url`` and the bytes its connections send (filled as they go)."""
    kind = type("Sent", (_Sent,), {"sent": bytearray()})
    saver = RedisSaver.from_url(url, prefix=prefix, connection_class=kind)
    return saver, kind.sent


def test_status_changes_send_their_script_by_sha_and_survive_a_script_flush(
    spawn_redis: Any, tmp_path: Any,
) -> None:
    """The status script's text goes to the server once (its first NOSCRIPT loads it),
    not with each change; after ``SCRIPT FLUSH`` (or a restart) the next change and the
    next commit land whole, the script loaded again."""
    proc, url = spawn_redis.start(str(tmp_path))
    saver, sent = _sending(url, "lost-scripts")
    text = scripts.RECORD_STATUS.encode()
    try:
        for status in ("running", "done", "running"):
            saver.set_status("t1", status)
        saver.set_run("t2", "sealed-run", "g", status="running")
        assert sent.count(text) == 1
        first = make({"x": 0}, {"x": 1})
        commit(saver, None, first)
        assert saver.client.script_flush()
        saver.set_status("t1", "done")
        saver.set_run("t2", "sealed-run", "g", status="interrupted")
        second = make({"x": 1}, {"x": 2})
        commit(saver, first, second)
        assert sent.count(text) == 2
        assert saver.list_threads("done") == ["t1"]
        assert saver.list_threads("interrupted") == ["t2"]
        assert saver.list_threads("running") == []
        got = saver.get_tuple({"configurable": {"thread_id": "t", "checkpoint_ns": ""}})
        assert got is not None and got.checkpoint.id == second.id
    finally:
        saver.client.close()
        spawn_redis.stop(proc)


def test_status_changes_commits_and_job_registrations_land_after_a_redis_restart(
    spawn_redis: Any, tmp_path: Any,
) -> None:
    """A restarted server has no scripts and every connection drops: the saver's next
    status change, commit and job registration (each by SHA) still land."""
    port = spawn_redis.free_port()
    proc, url = spawn_redis.start(str(tmp_path), port)
    saver = RedisSaver.from_url(url, prefix="restarted")
    book = JobBook(saver.conn, saver.prefix)
    try:
        saver.set_status("t1", "running")
        commit(saver, None, make({"x": 0}, {"x": 1}))
        book.register_sent([("job-1", "t", "m1")])()
        spawn_redis.stop(proc)
        proc, _ = spawn_redis.start(str(tmp_path), port)  # empty: no persistence
        saver.set_status("t1", "done")
        cp = make({"x": 1}, {"x": 2})
        commit(saver, None, cp)
        book.register_sent([("job-2", "t", "m2")])()
        assert saver.list_threads("done") == ["t1"]
        got = saver.get_tuple({"configurable": {"thread_id": "t", "checkpoint_ns": ""}})
        assert got is not None and got.checkpoint.id == cp.id
        assert book.claim("job-2", "t", "w:1") == ("ok", "")
    finally:
        saver.client.close()
        spawn_redis.stop(proc)


def test_a_status_change_whose_script_cannot_be_loaded_again_changes_nothing(
    spawn_redis: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After the server lost its scripts, a process that dies before loading the status
    script again leaves the record and the index as they were, together (NOSCRIPT ran
    nothing): the change fails loudly, the thread is listed under its old status."""
    proc, url = spawn_redis.start(str(tmp_path))
    saver = RedisSaver.from_url(url, prefix="lost-scripts")
    client: Any = saver._conn.client
    try:
        saver.set_status("t1", "running")
        assert client.script_flush()

        def died(*_: Any) -> Any:
            raise redis.ConnectionError("the process died")

        monkeypatch.setattr(client, "script_load", died)
        with pytest.raises(CheckpointStoreError, match="set thread status"):
            saver.set_status("t1", "done")
        assert saver.list_threads("running") == ["t1"]
        status = saver.get_status("t1")
        assert status is not None and status["status"] == "running"
    finally:
        client.close()
        spawn_redis.stop(proc)


def test_jobs_registered_after_a_script_flush_are_registered_late(
    spawn_redis: Any, tmp_path: Any,
) -> None:
    """``register_sent`` sends its script by SHA with no reply awaited: after ``SCRIPT
    FLUSH`` the confirmation finds the NOSCRIPT and registers the jobs then."""
    proc, url = spawn_redis.start(str(tmp_path))
    saver, sent = _sending(url, "lost-scripts")
    book = JobBook(saver.conn, saver.prefix)
    try:
        book.register_sent([("job-1", "t", "m1")])()
        book.register_sent([("job-2", "t", "m2")])()
        assert sent.count(job_scripts.REGISTER_JOBS.encode()) == 1  # loaded once
        assert saver.client.script_flush()
        book.register_sent([("job-3", "t", "m3"), ("job-4", "u", "m4")])()
        for key, thread in (("job-1", "t"), ("job-3", "t"), ("job-4", "u")):
            assert book.claim(key, thread, "w:1") == ("ok", "")
        assert book.claim("job-5", "t", "w:1")[0] != "ok"  # never registered
    finally:
        saver.client.close()
        spawn_redis.stop(proc)


def test_a_pipeline_gives_each_command_its_reply_as_redis_py_parses_it(
    conn: RedisConn, monkeypatch: pytest.MonkeyPatch,
) -> None:
    client: Any = conn.client
    script, key = _known_script(conn), f"pipelines-test:{uuid.uuid4().hex}"
    sent = _exchanged(monkeypatch)
    try:
        client.hset(key + ":h", mapping={"f": "v"})

        def build(p: Any) -> None:
            p.hexists(key + ":h", "f")
            p.hexists(key + ":h", "nope")
            p.hgetall(key + ":h")
            p.get(key + ":missing")
            script(keys=[], args=["a", "b"], client=p)
            p.zrevrange(key + ":z", 0, 0)

        ours = client.pipeline(transaction=False)
        build(ours)
        theirs = client.pipeline(transaction=False)
        build(theirs)
        expected = theirs.execute()
        assert conn.execute(ours) == expected
        assert sent == [6]  # ours went by _exchange, theirs by redis-py
        assert expected[:2] == [True, False] and expected[4] == [b"a", b"b"]
    finally:
        client.delete(key + ":h")


def test_an_error_reply_leaves_the_commands_after_it_run_and_the_connection_in_step(
    conn: RedisConn, monkeypatch: pytest.MonkeyPatch,
) -> None:
    client: Any = conn.client
    failing = _known_script(conn, "return redis.error_reply('boom')")
    sent = _exchanged(monkeypatch)
    key = f"pipelines-test:{uuid.uuid4().hex}"
    try:
        pipe = client.pipeline(transaction=False)
        pipe.rpush(key, "before")
        failing(keys=[], args=[], client=pipe)
        pipe.rpush(key, "after")
        with pytest.raises(redis.ResponseError, match="boom"):
            conn.execute(pipe)
        pipe = client.pipeline(transaction=False)
        pipe.lrange(key, 0, -1)
        pipe.echo("next")
        assert conn.execute(pipe) == [[b"before", b"after"], b"next"]
        assert sent == [3, 2]
    finally:
        client.delete(key)


def test_a_connection_dropped_on_send_is_retried_and_the_commands_run_once(
    redis_url: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    conn = RedisConn(client_from_url(redis_url))  # retries twice, as the stores' clients
    client: Any = conn.client
    client.ping()  # a connection in the pool
    key = f"pipelines-test:{uuid.uuid4().hex}"
    real, failed = redis.connection.Connection.send_packed_command, []

    def flaky(self: Any, *args: Any, **kw: Any) -> Any:
        if not failed:
            failed.append(1)
            raise redis.ConnectionError("dropped")
        return real(self, *args, **kw)

    monkeypatch.setattr(redis.connection.Connection, "send_packed_command", flaky)
    try:
        pipe = client.pipeline(transaction=False)
        pipe.incr(key)
        pipe.get(key)
        assert conn.execute(pipe) == [1, b"1"]
        assert failed == [1]
    finally:
        monkeypatch.undo()
        client.delete(key)
        client.close()


def test_a_connection_dropped_after_the_send_is_not_sent_again(
    redis_url: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The server ran the commands and the reply was lost: raised as a store error (the
    callers' "may have landed"), never sent again (a first job's LPUSH must not repeat)."""
    conn = RedisConn(client_from_url(redis_url))  # retries twice, as the stores' clients
    client: Any = conn.client
    incr = _known_script(conn, "return redis.call('INCR', KEYS[1])")
    key = f"pipelines-test:{uuid.uuid4().hex}"
    sent = _exchanged(monkeypatch)

    def lost(*_: Any, **__: Any) -> Any:
        raise redis.ConnectionError("dropped after the send")

    monkeypatch.setattr(redis.client.Pipeline, "parse_response", lost)

    def build(p: Any) -> list[Any]:
        return [incr(keys=[key + ":n"], client=p), p.lpush(key + ":q", "job-1")]
    try:
        with pytest.raises(CheckpointStoreError, match="dropped after the send"):
            pipelined(conn, "start the first job", build)
        assert sent == [2]
        monkeypatch.undo()
        assert client.get(key + ":n") == b"1" and client.llen(key + ":q") == 1
        assert client.ping()  # the connection left unread was closed, not handed out
    finally:
        client.delete(key + ":n", key + ":q")
        client.close()


class _PoolBefore53(redis.ConnectionPool):
    """``get_connection`` as redis-py 5.0 to 5.2 have it: the command's name required."""

    def get_connection(  # type: ignore[override]
        self, command_name: str, *keys: Any, **options: Any,
    ) -> Any:
        assert isinstance(command_name, str)
        return super().get_connection()


def test_pipelines_of_known_scripts_take_a_connection_as_each_redis_py_wants(
    redis_url: str,
) -> None:
    client = redis.Redis(connection_pool=_PoolBefore53.from_url(redis_url))
    conn, key = RedisConn(client), f"pipelines-test:{uuid.uuid4().hex}"
    plain = redis.Redis.from_url(redis_url)  # this redis-py's own commands take no name
    try:
        for expected in ([1, 2], [3, 4]):  # plain pipelines: sent by _exchange
            pipe = client.pipeline(transaction=False)
            pipe.incr(key)
            pipe.incr(key)
            assert conn.execute(pipe) == expected
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # redis-py 5.3 on warns when given a name
            pool = redis.ConnectionPool.from_url(redis_url)
            pool.release(checkout(pool))
            pool.disconnect()
    finally:
        plain.delete(key)
        plain.close()
        client.close()


def test_a_connection_left_mid_reply_is_closed_not_reused(
    conn: RedisConn, monkeypatch: pytest.MonkeyPatch,
) -> None:
    client: Any = conn.client
    client.ping()  # connected: the read below fails in the pipeline's exchange
    key = f"pipelines-test:{uuid.uuid4().hex}"
    real = redis.connection.Connection.read_response

    def broken(self: Any, *args: Any, **kw: Any) -> Any:
        raise RuntimeError("interrupted while reading")

    monkeypatch.setattr(redis.connection.Connection, "read_response", broken)
    pipe = client.pipeline(transaction=False)
    pipe.set(key, "1")
    pipe.echo("unread")
    with pytest.raises(RuntimeError, match="interrupted"):
        conn.execute(pipe)
    monkeypatch.setattr(redis.connection.Connection, "read_response", real)
    try:
        pipe = client.pipeline(transaction=False)
        pipe.echo("fresh")
        pipe.get(key)
        assert conn.execute(pipe) == [b"fresh", b"1"]
    finally:
        client.delete(key)
