"""A saver with a commit wait, on real redis-servers this test starts (a primary with
AOF and a replica): a commit returns only once the wait held, and fails clearly when
it cannot."""

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


@pytest.fixture
def pair(spawn_redis: Any) -> Iterator[tuple[str, str, Any]]:
    """(primary URL, replica URL, replica process): AOF on, replication link up."""
    with tempfile.TemporaryDirectory() as d1, tempfile.TemporaryDirectory() as d2:
        _, primary = spawn_redis.start(d1, None, "--appendonly", "yes",
                                       "--repl-diskless-sync-delay", "0")
        port = primary.rsplit(":", 1)[1].split("/")[0]
        replica_proc, replica = spawn_redis.start(d2, None, "--replicaof", "127.0.0.1", port)
        client = redis.Redis.from_url(replica)
        deadline = time.monotonic() + 10
        while client.info("replication").get("master_link_status") != "up":
            assert time.monotonic() < deadline, "the replica did not connect"
            time.sleep(0.05)
        client.close()
        yield primary, replica, replica_proc
        spawn_redis.stop(replica_proc)


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


def test_an_aof_wait_works_or_says_the_server_cannot(pair: Any) -> None:
    primary = pair[0]
    saver = RedisSaver.from_url(primary, prefix="cw3", commit_wait="aof")
    graph = chain().compile(checkpointer=saver)
    config = {"configurable": {"thread_id": "t"}}
    version = tuple(int(x) for x in saver.client.info("server")["redis_version"].split(".")[:2])
    if version >= (7, 2):
        assert graph.invoke({"log": []}, config, durability="sync") == {"log": ["a", "b", "c"]}
    else:  # this machine's Redis 7.0 has no WAITAOF: the error says what to do instead
        with pytest.raises(CheckpointStoreError, match=r"needs Redis >= 7.2.*appendfsync always"):
            graph.invoke({"log": []}, config, durability="sync")
