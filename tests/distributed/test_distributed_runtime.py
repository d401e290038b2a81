"""Runtime context, a Redis store and a Redis cache on real Celery workers.

Two ``celery worker`` subprocesses run ``runtime_graphs``: the context travels with
the run (signed, like the config), the store and the cache are Redis ones shared by
the workers and the test, a cache hit on one worker serves a run on another and the
TTL is honoured; managed values and a deferred node give the embedded results; a
graph the workers cannot import is shipped as a blob with its store and cache, which
reopen from their URLs there. The idempotency key is the same
for every execution of a call across suspends, replays and retries on the workers.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dg_workers import DistEnv, WorkerPool

from durable_graph import (
    BaseStore,
    CachePolicy,
    InMemoryCache,
    InMemorySaver,
    InMemoryStore,
    entrypoint,
    task,
)

pytestmark = [pytest.mark.celery, pytest.mark.redis]

HERE = Path(__file__).resolve().parent
MODULE = "runtime_graphs"


@pytest.fixture(scope="module")
def rg(dist_env: DistEnv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """``runtime_graphs`` with two workers running it."""
    import importlib

    module = importlib.import_module(MODULE)
    assert (module.REDIS_URL, module.PREFIX) == (dist_env.redis_url, dist_env.prefix)
    pool = WorkerPool(module=MODULE, module_dir=HERE, queue=dist_env.queue,
                      log_dir=tmp_path_factory.mktemp("rt-workers"), env=dist_env.as_env(),
                      redis_url=dist_env.redis_url, pool_key=module.POOL_KEY)
    pool.start(2)
    try:
        yield module
    finally:
        pool.stop()
        print(pool.log_tails())


def thread(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:10]}"


def test_context_store_and_cache_on_workers_match_embedded(rg: Any) -> None:
    t1, t2 = thread("rt1"), thread("rt2")
    user = f"ann-{uuid.uuid4().hex[:6]}"
    embedded = rg.build_runtime().compile(
        checkpointer=InMemorySaver(), store=InMemoryStore(), cache=InMemoryCache())
    local = embedded.invoke({"n": 7, "log": []}, {"configurable": {"thread_id": "x"}},
                            context=rg.Ctx(user, thread("local")))
    counter = f"{rg.PREFIX}:rt:double:7"
    before = int(rg._client.get(counter) or 0)
    out1 = rg.runtime_graph.invoke({"n": 7, "log": []}, {"configurable": {"thread_id": t1}},
                                   context={"user": user, "thread": t1})
    chunks = list(rg.runtime_graph.stream(
        {"n": 7, "log": []}, {"configurable": {"thread_id": t2}}, stream_mode="updates",
        context=rg.Ctx(user, t2)))
    assert out1 == {**local, "log": [f"hello {user}, visit 1", "charged 7"]}
    assert out1["doubled"] == 14
    # the store is shared: the second run saw the first one's visit, written by a worker
    assert chunks[0] == {"greet": {"log": [f"hello {user}, visit 2"]}}
    items = rg.store.search(("visits", user))
    assert sorted(i.key for i in items) == ["n7"]
    worker_pids = {int(p) for p in rg.recorded(t1, "greet-pid") + rg.recorded(t2, "greet-pid")}
    assert {i.value["pid"] for i in items} <= worker_pids and len(worker_pids) >= 1
    # the cache is shared: the second run's double was a hit, streamed as cached
    assert chunks[1] == {"double": {"doubled": 14}, "__metadata__": {"cached": True}}
    assert int(rg._client.get(counter)) == before + 1


def test_cache_ttl_is_honoured_on_workers(rg: Any) -> None:
    n = int(uuid.uuid4().int % 10_000) + 100
    runs = []
    for pause in (0.0, 0.0, 2.5):
        time.sleep(pause)
        t = thread("ttl")
        runs.append(rg.runtime_graph.invoke({"n": n, "log": []}, {"configurable": {"thread_id": t}},
                                            context=rg.Ctx("ttl", t))["doubled"])
    assert runs == [2 * n] * 3
    assert int(rg._client.get(f"{rg.PREFIX}:rt:double:{n}")) == 2  # once, then after expiry


def test_idempotency_key_is_stable_across_suspends_replays_and_retries(rg: Any) -> None:
    t = thread("pay")
    rg.runtime_graph.invoke({"n": 3, "log": []}, {"configurable": {"thread_id": t}},
                            context=rg.Ctx("payer", t))
    pay_keys, charge_keys = rg.recorded(t, "pay-key"), rg.recorded(t, "charge-key")
    assert len(pay_keys) >= 2 and len(set(pay_keys)) == 1  # suspended, then replayed
    assert len(charge_keys) == 2 and len(set(charge_keys)) == 1  # failed, then retried
    assert pay_keys[0] != charge_keys[0]


def test_blob_shipped_graph_takes_its_redis_store_and_cache(rg: Any) -> None:
    """A graph defined here (not importable by workers) ships pickled; its Redis store
    and cache travel as their URLs and are reopened on the workers."""
    tag = uuid.uuid4().hex[:8]

    @task(cache_policy=CachePolicy())
    def lookup(key: str) -> int:
        rg._client.incr(f"{rg.PREFIX}:rt:lookup:{tag}")
        return len(key)

    @entrypoint(checkpointer=rg.saver, store=rg.store, cache=rg.cache)
    def wf(keys: list[str], *, store: BaseStore) -> int:
        total = sum(lookup(k).result() for k in keys)
        store.put(("blob", tag), "total", {"total": total})
        return total

    wf.executor = rg.executor
    outs = [wf.invoke([tag, tag * 2], {"configurable": {"thread_id": thread("blob")}})
            for _ in range(2)]
    assert outs == [24, 24]
    assert int(rg._client.get(f"{rg.PREFIX}:rt:lookup:{tag}")) == 2  # second run: hits
    assert rg.store.get(("blob", tag), "total").value == {"total": 24}


def test_in_memory_store_is_refused_on_workers(rg: Any) -> None:
    g = rg.build_runtime().compile(checkpointer=rg.saver, executor=rg.executor,
                                   store=InMemoryStore())
    t = thread("mem")
    with pytest.raises(Exception, match="InMemoryStore"):
        g.invoke({"n": 1, "log": []}, {"configurable": {"thread_id": t}},
                 context=rg.Ctx("m", t))


def test_managed_values_and_defer_on_workers_match_embedded(rg: Any) -> None:
    config = {"configurable": {"thread_id": thread("agent")}, "recursion_limit": 7}
    remote = rg.agent_graph.invoke({"log": []}, config)
    local_graph = rg.build_agent().compile(checkpointer=InMemorySaver())
    local_config = {"configurable": {"thread_id": "local"}, "recursion_limit": 7}
    local = local_graph.invoke({"log": []}, local_config)
    assert remote == local
    assert remote["log"][-1] == f"summary of {len(remote['log']) - 1}"
    assert remote["log"].count("summary of 5") == 1 and "agent@3" in remote["log"]
    history = [s.values for s in rg.agent_graph.get_state_history(config)]
    assert history == [s.values for s in local_graph.get_state_history(local_config)]


def test_a_subgraph_on_workers_sees_the_runs_context_and_the_parents_store(rg: Any) -> None:
    t1 = thread("rt-sub")
    user = f"bob-{uuid.uuid4().hex[:6]}"
    embedded = rg.build_with_sub().compile(checkpointer=InMemorySaver(), store=InMemoryStore())
    local = embedded.invoke({"n": 3, "log": []}, {"configurable": {"thread_id": "x"}},
                            context=rg.Ctx(user, thread("local")))
    out = rg.sub_graph.invoke({"n": 3, "log": []}, {"configurable": {"thread_id": t1}},
                              context=rg.Ctx(user, t1))
    assert out == local
    assert out["log"][-1] == f"sub saw {user}"
    (item,) = rg.store.search(("sub-visits", user))
    assert item.value["pid"] == int(rg.recorded(t1, "sub-pid")[0])
