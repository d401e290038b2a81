"""RedisSaver on a real three-node Redis Cluster started for this module."""

from __future__ import annotations

import subprocess
import tempfile
import time
from collections.abc import Iterator
from typing import Any, TypedDict

import pytest
from redis.cluster import RedisCluster

from durable_graph import END, START, StateGraph
from durable_graph.errors import FencingError
from durable_graph.store.base import RETURN, Checkpoint, PendingWrite, new_checkpoint_id
from durable_graph.store.redis import RedisSaver
from durable_graph.store.redis.saver import Prior

pytestmark = [pytest.mark.redis, pytest.mark.chaos]


def wait_cluster_ok(port: int) -> None:
    """Wait (20 s at most) until the node on ``port`` reports cluster_state:ok."""
    deadline = time.monotonic() + 20
    while True:
        info = subprocess.run(
            ["redis-cli", "-p", str(port), "cluster", "info"],
            capture_output=True,
            check=False,
            text=True,
            timeout=5,
        ).stdout
        if "cluster_state:ok" in info:
            return
        assert time.monotonic() < deadline, info
        time.sleep(0.1)


@pytest.fixture(scope="module")
def cluster_url(spawn_redis: Any) -> Iterator[str]:
    """Three cluster-enabled redis-servers on free ports, joined, until cluster_state:ok."""
    with tempfile.TemporaryDirectory(prefix="dg-cluster-") as workdir:
        procs = []
        ports = [spawn_redis.free_port() for _ in range(3)]
        try:
            for port in ports:
                extra = ("--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf")
                procs.append(spawn_redis.start(workdir, port, *extra)[0])
            nodes = [f"127.0.0.1:{p}" for p in ports]
            subprocess.run(
                [
                    "redis-cli",
                    "--cluster",
                    "create",
                    *nodes,
                    "--cluster-replicas",
                    "0",
                    "--cluster-yes",
                ],
                check=True,
                capture_output=True,
                timeout=30,
            )
            wait_cluster_ok(ports[0])
            yield f"redis://127.0.0.1:{ports[0]}/0"
        finally:
            for proc in procs:
                spawn_redis.stop(proc)


def cfg(thread: str, ns: str = "", **extra: Any) -> dict:
    return {"configurable": {"thread_id": thread, "checkpoint_ns": ns, **extra}}


def put(saver: RedisSaver, parent: dict, count: int) -> dict:
    checkpoint = Checkpoint(
        id=new_checkpoint_id(),
        ts="2024-01-01T00:00:00+00:00",
        channel_values={"static": "S", "count": count},
        channel_versions={"static": 1, "count": count + 1},
        versions_seen={},
    )
    new = {"static": 1, "count": count + 1} if count == 0 else {"count": count + 1}
    return saver.put(parent, checkpoint, {"step": count}, new)


def test_saver_runs_unchanged_on_a_cluster(cluster_url: str) -> None:
    saver = RedisSaver.from_url(cluster_url, prefix="cl", cluster=True)
    assert isinstance(saver.client, RedisCluster)
    threads = [f"thread-{n}" for n in range(12)]  # spread over the three nodes
    latest: dict[str, dict] = {}
    for thread in threads:
        parent = cfg(thread)
        for count in range(6):
            parent = put(saver, parent, count)
        saver.put_writes(parent, [("count", "w"), ("count", "dup")], "task")
        saver.put_writes(parent, [("count", "changed")], "task")
        latest[thread] = parent
        saver.set_status(thread, "running" if int(thread[-1]) % 2 else "done")

    slots = {saver.client.keyslot(f"{{cl:{t}}}:rec") for t in threads}
    owners = {saver.client.get_node_from_key(f"{{cl:{t}}}:rec").name for t in threads}
    assert len(slots) == len(threads) and len(owners) == 3

    for thread in threads:
        got = saver.get_tuple(cfg(thread))
        assert got is not None and got.config == latest[thread]
        assert got.checkpoint.channel_values == {"static": "S", "count": 5}
        assert got.pending_writes == [
            PendingWrite("task", "count", "w"),
            PendingWrite("task", "count", "dup"),
        ]
        assert [t.metadata["step"] for t in saver.list(cfg(thread), limit=3)] == [5, 4, 3]

    everything = list(saver.list(None))
    assert len(everything) == 6 * len(threads)
    assert sorted(saver.list_threads("done")) == sorted(t for t in threads if int(t[-1]) % 2 == 0)

    saver.close()


def test_retention_and_leases_on_a_cluster(cluster_url: str) -> None:
    saver = RedisSaver.from_url(cluster_url, prefix="cl2", cluster=True)
    latest = {}
    for thread in ("thread-0", "thread-1", "thread-2", "thread-3"):
        parent = cfg(thread)
        for count in range(6):
            parent = put(saver, parent, count)
        latest[thread] = parent
        saver.set_status(thread, "running")
    assert saver.prune("thread-0", keep_last=2) == 4
    pruned = saver.get_tuple(cfg("thread-0"))
    assert pruned is not None and pruned.checkpoint.channel_values["static"] == "S"
    assert len(list(saver.list(cfg("thread-0")))) == 2

    lease_a = saver.leases.acquire("thread-1", "a", ttl=0.2)
    assert lease_a is not None
    deadline = time.monotonic() + 5
    while (lease_b := saver.leases.acquire("thread-1", "b", ttl=5)) is None:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert lease_b.generation == lease_a.generation + 1
    with pytest.raises(FencingError):
        put(saver, lease_a.fence(latest["thread-1"]), 6)
    put(saver, lease_b.fence(latest["thread-1"]), 6)

    saver.set_ttl("thread-2", 100)
    saver.delete_thread("thread-3")
    assert saver.get_tuple(cfg("thread-3")) is None
    assert "thread-3" not in saver.list_threads()
    saver.close()


def test_a_commit_that_drops_a_ttl_persists_the_history_on_a_cluster(cluster_url: str) -> None:
    """A thread committed with a TTL, then by a saver without one: the commit's script
    persists every key of the thread (older checkpoints too), all in the thread's slot."""
    with RedisSaver.from_url(cluster_url, prefix="cl4", cluster=True, ttl=100) as timed:
        parent = put(timed, put(timed, cfg("thread-t"), 0), 1)
    with RedisSaver.from_url(cluster_url, prefix="cl4", cluster=True) as saver:
        put(saver, parent, 2)
        client: Any = saver.client
        ttls = {k: client.ttl(k) for k in client.scan_iter(match="{cl4:thread-t}*")}
        assert sum(b":rc:" in k or b":pg:" in k for k in ttls) == 2, ttls  # a page: ids, records
        assert {k: t for k, t in ttls.items() if t != -1} == {}
        assert len(list(saver.list(cfg("thread-t")))) == 3


def test_job_liveness_on_a_cluster(cluster_url: str) -> None:
    from durable_graph.store.redis.jobbook import JobBook

    saver = RedisSaver.from_url(cluster_url, prefix="cl3", cluster=True)
    book = JobBook(saver.conn, "cl3")
    lease = saver.leases.acquire("thread-a", "run:1", ttl=5, watch_idle=True)
    assert lease is not None
    book.register_sent([("k1", "thread-a", "m1"), ("k2", "thread-b", "m2")])()
    assert book.owes("thread-a") and book.owes("thread-b")
    assert book.claim_renewing("k1", "thread-a", "host:1:x", ("run:1", 1, 5)) == ("ok", "", True,
                                                                              None)
    # a call's claim: on one Redis one script, here three calls (its keys span two slots)
    book.register_sent([("k0", "thread-a", "m0")])()
    config = {"configurable": {"thread_id": "thread-a", "checkpoint_ns": "",
                               "checkpoint_id": "cp-1"}}
    read = saver.finished_read(config, ["c"])
    assert book.claim_renewing("k0", "thread-a", "host:1:x", ("run:1", 1, 5), read) == (
        "ok", "", True, [])
    book.end_many([("k0", "thread-a")], idle_ttl=5)
    assert book.claim("k1", "thread-a", "host:2:y") == ("held", "host:1:x")
    book.heartbeat("host:1:x", 5)
    view = book.view("q", lost_before=time.time() * 1000 + 1000)
    assert {e.member for e in view.lost} == {"k2"}  # the one nobody claimed
    assert view.dead == [] and view.idle == []
    book.end_many([("k1", "thread-a")], idle_ttl=0.001)
    assert not book.owes("thread-a")
    time.sleep(0.05)
    idle = book.view("q", lost_before=0).idle
    assert [e.member for e in idle] == ["thread-a"]
    assert book.sort_idle(idle) == ([], [])  # it never said running: no longer watched
    # a call's result and its job's end: two slots, so two calls on a cluster
    book.register_sent([("k3", "thread-a", "m3")])()
    saver.put_call_writes(config, [(RETURN, ("t", 1))], "c", "node", ends=("k3", 5))
    assert saver.finished(config, ["c"]) == {"c"} and not book.owes("thread-a")
    saver.close()


def test_a_commit_with_a_held_input_and_run_record_on_a_cluster(cluster_url: str) -> None:
    """A producer's first commit carries the run record and the input checkpoint on one
    Redis; on a cluster (scripts cannot share a pipeline) they are stored one by one."""
    saver = RedisSaver.from_url(cluster_url, prefix="cl4", cluster=True)
    first = Checkpoint(new_checkpoint_id(), "2026-01-01T00:00:00+00:00", {"x": 1}, {"x": 1}, {})
    second = Checkpoint(new_checkpoint_id(after=first.id), first.ts, {"x": 2}, {"x": 2}, {})
    prior = Prior((cfg("held"), first, {"source": "input", "step": -1}, {"x": 1}),
                  ("held", "sealed-run", "graph"))
    saver.commit_step({"configurable": {**cfg("held")["configurable"],
                                        "checkpoint_id": first.id}},
                      second, {"source": "loop", "step": 0}, {"x": 2},
                      expect_latest=first.id, prior=prior)
    assert [t.checkpoint.id for t in saver.list(cfg("held"))] == [second.id, first.id]
    assert saver.get_run("held") is not None
    assert saver.list_threads("running") == ["held"]
    saver.close()


def test_a_run_start_on_a_cluster_is_the_two_calls(cluster_url: str) -> None:
    """``get_tuple_for_run`` falls back to get_tuple then set_status (the status index is
    in another slot than the thread): same tuple, the thread indexed as running, and an
    embedded run over it ends done."""
    saver = RedisSaver.from_url(cluster_url, prefix="cl5", cluster=True)
    parent = cfg("start")
    for count in range(3):
        parent = put(saver, parent, count)
    got = saver.get_tuple_for_run(cfg("start"))
    assert got is not None and got == saver.get_tuple(cfg("start")) and got.config == parent
    assert saver.get_tuple_for_run(cfg("fresh")) is None
    assert sorted(saver.list_threads("running")) == ["fresh", "start"]
    graph = StateGraph(_Count)
    graph.add_node("inc", lambda s: {"n": s["n"] + 1})
    graph.add_edge(START, "inc")
    graph.add_edge("inc", END)
    app = graph.compile(checkpointer=saver)
    assert app.invoke({"n": 1}, cfg("run")) == {"n": 2}
    assert saver.get_status("run")["status"] == "done"  # type: ignore[index]
    assert "run" in saver.list_threads("done") and "run" not in saver.list_threads("running")
    saver.close()


class _Count(TypedDict):
    n: int
