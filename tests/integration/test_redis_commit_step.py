"""A distributed step's commit with its last task's writes: one script (``PUT_STEP``).

``RedisSaver.commit_step(task_writes=...)`` stores the task's writes and commits the
step in one ``PUT_STEP`` call: the effects of ``PUT_WRITES`` then ``PUT``, in that
order, each with its own checks (a stale fence refuses both; writes refused leave the
commit to run and reply for itself), on a real Redis.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
import redis

from durable_graph.errors import FencingError
from durable_graph.store.base import Checkpoint
from durable_graph.store.redis import RedisSaver
from tests.integration.test_redis_dispatch import cfg, saver  # noqa: F401  (module fixture)
from tests.integration.test_redis_dispatch import make as make_cp

pytestmark = pytest.mark.redis


def make(x: int) -> Checkpoint:
    return make_cp({"x": x}, {"x": x + 1})


class Counting:
    """The commands ``client`` sends (no pipeline here: each is its own round trip)."""

    def __init__(self, client: Any) -> None:
        self.calls: list[str] = []
        inner = client.execute_command

        def execute(*args: Any, **kw: Any) -> Any:
            self.calls.append(str(args[0]))
            return inner(*args, **kw)

        client.execute_command = execute


def step(
    store: RedisSaver, parent: Checkpoint, fence: int | None = None, *,
    writes_fence: int | None = None, stop: list[str] | None = None,
) -> Checkpoint:
    """Commit the step after ``parent`` with its task's write ``x``, as a worker does
    (``writes_fence``: the task's own, if not ``fence``; ``stop`` gets the stop reply)."""
    extra = {} if fence is None else {"fence": fence}
    w_fence = fence if writes_fence is None else writes_fence
    w_extra = {} if w_fence is None else {"fence": w_fence}
    child = make(parent.channel_values["x"] + 1)
    writes = (cfg(parent.id, **w_extra), "task-1", [("x", 7)])
    _, stopped = store.commit_step(cfg(parent.id, **extra), child, {"step": 1},
                                   {"x": child.channel_versions["x"]}, task_writes=writes,
                                   expect_latest=parent.id)
    if stop is not None:
        stop.append(stopped)
    return child


def written(store: RedisSaver, checkpoint: Checkpoint) -> list[tuple[str, str, Any]]:
    stored = store.get_tuple(cfg(checkpoint.id))
    assert stored is not None
    return [(w.task_id, w.channel, w.value) for w in stored.pending_writes]


def newest_id(store: RedisSaver) -> str:
    newest = store.get_tuple(cfg())
    assert newest is not None
    return newest.checkpoint.id


def test_writes_and_commit_land_together_in_one_script_call(
    saver: RedisSaver, redis_url: str,  # noqa: F811
) -> None:
    """The saver sends one command (EVALSHA); when it returns, before the saver sends
    anything else, another client already sees both the task's writes and the commit."""
    first = make(0)
    saver.put(cfg(), first, {"step": 0}, {"x": 1})
    parent = step(saver, first)  # the script loaded on its first use
    seen: list[tuple[list[Any], str]] = []
    with RedisSaver.from_url(redis_url, prefix=saver.prefix) as other:
        counting = Counting(saver.client)
        inner = saver.client.execute_command

        def observed(*args: Any, **kw: Any) -> Any:
            reply = inner(*args, **kw)
            seen.append((written(other, parent), newest_id(other)))
            return reply

        saver.client.execute_command = observed  # type: ignore[method-assign]
        assert (written(other, parent), newest_id(other)) == ([], parent.id)
        child = step(saver, parent)
    assert counting.calls == ["EVALSHA"]
    assert seen == [([("task-1", "x", 7)], child.id)]


def test_the_commit_runs_and_replies_after_its_writes_are_fenced(
    saver: RedisSaver,  # noqa: F811
) -> None:
    """As when they were two scripts: the task's writes under a stale fence are refused
    (FencingError), the commit under the current lease runs anyway and lands."""
    parent = make(0)
    saver.put(cfg(), parent, {"step": 0}, {"x": 1})
    old = saver.leases.acquire("t", "run-1", 0.05)
    assert old is not None
    threading.Event().wait(0.1)
    now = saver.leases.acquire("t", "recover-1", 5)  # taken over
    assert now is not None
    with pytest.raises(FencingError, match=f"token {old.generation} is stale"):
        step(saver, parent, fence=now.generation, writes_fence=old.generation)
    assert written(saver, parent) == []
    newest = saver.get_tuple(cfg())
    assert newest is not None and newest.checkpoint.id != parent.id
    assert newest.parent_config is not None
    assert newest.parent_config["configurable"]["checkpoint_id"] == parent.id


@pytest.mark.parametrize("with_writes", [True, False])
def test_a_stop_request_comes_back_with_the_commit(
    saver: RedisSaver, with_writes: bool,  # noqa: F811
) -> None:
    """``request_stop`` recorded on the thread is read in the commit's script and returned
    (``PUT_STEP``'s reply with a task's writes, ``PUT``'s without)."""
    parent = make(0)
    saver.put(cfg(), parent, {"step": 0}, {"x": 1})
    saver.request_stop("t", "run-9")
    if with_writes:
        stop: list[str] = []
        step(saver, parent, stop=stop)
        assert stop == ["run-9"]
        return
    child = make(1)
    _, stopped = saver.commit_step(cfg(parent.id), child, {"step": 1}, {"x": 2},
                                   expect_latest=parent.id)
    assert stopped == "run-9"


def test_a_stale_fence_stores_neither_the_writes_nor_the_commit(
    saver: RedisSaver,  # noqa: F811
) -> None:
    parent = make(0)
    saver.put(cfg(), parent, {"step": 0}, {"x": 1})
    old = saver.leases.acquire("t", "run-1", 0.05)
    assert old is not None
    threading.Event().wait(0.1)
    assert saver.leases.acquire("t", "recover-1", 5) is not None  # taken over
    with pytest.raises(FencingError):
        step(saver, parent, fence=old.generation)
    stored = saver.get_tuple(cfg(parent.id))
    assert stored is not None and stored.pending_writes == []
    newest = saver.get_tuple(cfg())
    assert newest is not None and newest.checkpoint.id == parent.id


def test_a_workers_commit_applies_the_policy_recorded_on_the_thread(
    redis_url: str, redis_prefix: str
) -> None:
    """The producer's saver records a TTL on the thread; a worker's saver (the thread's
    policy) stores a task's writes and commits in one script: every key it touches gets
    that TTL, and a later commit without one persists the thread again."""
    raw = redis.Redis.from_url(redis_url)
    parent = make(0)
    with RedisSaver.from_url(redis_url, prefix=redis_prefix, ttl=50) as producer:
        producer.put(cfg(), parent, {"step": 0}, {"x": 1})
    with RedisSaver.from_url(redis_url, prefix=redis_prefix, _thread_policy=True) as worker:
        child = step(worker, parent)
    keys = sorted(raw.scan_iter(match=f"{{{redis_prefix}:t}}*"))  # bytes: v13's keys
    assert any(f":w:{parent.id}".encode() in k for k in keys), keys
    assert any(b":rc:" in k for k in keys), keys  # the records, the child's among them
    assert all(40 < raw.ttl(k) <= 50 for k in keys), {k: raw.ttl(k) for k in keys}
    with RedisSaver.from_url(redis_url, prefix=redis_prefix) as no_ttl:
        step(no_ttl, child)
    keys = sorted(raw.scan_iter(match=f"{{{redis_prefix}:t}}*"))
    assert any(b":rc:" in k for k in keys), keys  # history too: none expires
    assert {k: raw.ttl(k) for k in keys if raw.ttl(k) != -1} == {}
    raw.close()


def thread_ttls(raw: redis.Redis, prefix: str) -> dict[bytes, int]:
    return {k: raw.ttl(k) for k in raw.scan_iter(match=f"{{{prefix}:t}}*")}


@pytest.mark.parametrize("namespaces", [[""], ["", "child"]])
def test_dropping_a_threads_ttl_at_a_commit_keeps_its_history(
    redis_url: str, redis_prefix: str, namespaces: list[str],
) -> None:
    """A thread stored with a TTL, committed by a saver without one: every key of the
    thread (older checkpoints and their writes, other namespaces) loses the TTL, so
    nothing the index lists expires."""
    raw = redis.Redis.from_url(redis_url)
    first = make(0)
    with RedisSaver.from_url(redis_url, prefix=redis_prefix, ttl=50) as producer:
        for ns in namespaces:
            conf = cfg()
            conf["configurable"]["checkpoint_ns"] = ns
            producer.put(conf, first, {"step": 0}, {"x": 1})
            producer.put_writes({"configurable": {**conf["configurable"],
                                                  "checkpoint_id": first.id}},
                                [("x", 5)], "task-0")
    assert all(40 < t <= 50 for t in thread_ttls(raw, redis_prefix).values())
    with RedisSaver.from_url(redis_url, prefix=redis_prefix) as no_ttl:
        second = make(1)
        no_ttl.put(cfg(first.id), second, {"step": 1}, {"x": 2})
        ttls = thread_ttls(raw, redis_prefix)
        assert any(f":w:{first.id}".encode() in k for k in ttls), ttls
        assert {k: t for k, t in ttls.items() if t != -1} == {}
        stored = no_ttl.get_tuple(cfg(first.id))
        assert stored is not None and written(no_ttl, first) == [("task-0", "x", 5)]
    raw.close()

