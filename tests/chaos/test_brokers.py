"""Crashes and outages around the broker, on RabbitMQ and on Redis, with real workers.

The graphs and their execution counters are ``celery_graphs``'s (``INCR {P}:n:<name>``
per body run); the workers are real ``celery worker`` subprocesses. No scheduler runs
in any of these tests: what recovers a run here is the broker or the producer.

- RabbitMQ redelivers the jobs of a dead consumer as soon as its connection drops
  (no visibility timeout): a SIGKILLed pool process, a SIGKILLed whole worker, every
  worker SIGKILLed and a fresh one started: each run finishes, with no lease takeover.
- A job longer than the Redis broker's visibility timeout setting runs once on RabbitMQ.
- A producer blocked in ``invoke`` across a 5 s restart of the checkpoint Redis (its
  own server, AOF on) gets the run's result, one in ``stream`` gets every chunk once,
  and a ``submit`` made during the outage succeeds once Redis is back.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "distributed"))

import celery_graphs as cg  # noqa: E402
from dg_workers import WorkerPool, wait_until  # noqa: E402

from durable_graph import RedisSaver  # noqa: E402
from durable_graph.worker import CeleryExecutor, create_app  # noqa: E402

pytestmark = [pytest.mark.chaos, pytest.mark.celery, pytest.mark.redis]

SECRET = "chaos-broker-secret-not-for-production"
RUN_TIMEOUT = 40.0
REDELIVERY_BUDGET = 5.0
"""Seconds from a kill to the run's end when the broker alone brings the job back."""
RESTART_BUDGET = 10.0
"""The same after a pool process died: the requeued job may wait for its replacement."""


class BrokerEnv:
    """One test's store (a Redis), broker (RabbitMQ or a Redis), queue, app and workers."""

    def __init__(self, store: str, broker: str, prefix: str, tmp: Path, **app_kw: Any) -> None:
        self.store, self.broker, self.prefix, self.tmp = store, broker, prefix, tmp
        self.queue = f"{prefix}.q"
        self.redis = redis.Redis.from_url(store, socket_timeout=10)
        self.app = cg.tune(create_app(store, broker_url=broker, prefix=prefix, queue=self.queue,
                                      secret_key=SECRET, **app_kw))
        self.saver = RedisSaver.from_url(store, prefix=prefix)
        self.pools: list[WorkerPool] = []
        self.environ = {
            "DURABLE_GRAPH_REDIS_URL": store, "DURABLE_GRAPH_BROKER_URL": broker,
            "DURABLE_GRAPH_PREFIX": prefix, "DURABLE_GRAPH_QUEUE": self.queue,
            "DURABLE_GRAPH_SECRET_KEY": SECRET,
            **{f"DURABLE_GRAPH_{k.upper()}": str(v) for k, v in app_kw.items()},
        }

    def workers(self, count: int, name: str) -> WorkerPool:
        """Start ``count`` workers of ``celery_graphs`` and wait until they are ready."""
        pool = WorkerPool(
            module="celery_graphs", module_dir=HERE, queue=self.queue, log_dir=self.tmp / name,
            env=self.environ, redis_url=self.store, pool_key=f"{self.prefix}:pool")
        self.pools.append(pool)
        pool.start(count)
        return pool

    def compile(self, builder: Any) -> Any:
        return builder.compile(checkpointer=self.saver, executor=CeleryExecutor(self.app))

    def n(self, name: str) -> int:
        raw = self.redis.get(f"{self.prefix}:n:{name}")
        return int(raw) if raw else 0

    def logs(self) -> str:
        return "\n".join(pool.log_tails(60) for pool in self.pools)

    def close(self) -> None:
        for pool in self.pools:
            pool.stop()
        self.redis.close()


@pytest.fixture
def amqp_env(
    redis_url: str, redis_prefix: str, tmp_path: Path, rabbitmq: Any
) -> Iterator[BrokerEnv]:
    """Checkpoints on the session's Redis, jobs on RabbitMQ in a queue of this test."""
    env = BrokerEnv(redis_url, rabbitmq.url, redis_prefix, tmp_path, visibility_timeout=10)
    try:
        yield env
    finally:
        env.close()
        rabbitmq.delete_queues(env.queue)


def until(condition: Callable[[], bool], what: str, env: BrokerEnv, timeout: float = 20.0) -> None:
    try:
        wait_until(condition, timeout, what, interval=0.01)
    except TimeoutError as exc:
        pytest.fail(f"{exc}\n{env.logs()}")


def finish(handle: Any, env: BrokerEnv, timeout: float = RUN_TIMEOUT) -> Any:
    try:
        return handle.result(timeout=timeout)
    except TimeoutError as exc:
        pytest.fail(f"{exc}\n{env.logs()}")


def start_gather(env: BrokerEnv) -> tuple[Any, str, int]:
    """Submit the gather graph; wait until its node blocks after its last call.

    Returns the handle, the thread id, and the pid of the worker (parent) running it.
    """
    graph = env.compile(cg.build_gather())
    thread_id = f"gather-{uuid.uuid4().hex[:8]}"
    handle = graph.submit({"n": cg.CALLS}, {"configurable": {"thread_id": thread_id}})
    # the node counts its last phase, then records its pids: wait for both
    until(lambda: env.redis.llen(f"{env.prefix}:final_pids") == 1,
          "gather to reach its last phase", env)
    raw = env.redis.lindex(f"{env.prefix}:final_pids", 0)
    return handle, thread_id, int(raw.decode().split(":")[1])


def assert_gathered(env: BrokerEnv, out: Any, finals: int) -> None:
    results = [i * 10 for i in range(cg.CALLS)]
    assert out == {"n": cg.CALLS, "results": results, "total": sum(results)}
    assert [env.n(f"call{i}") for i in range(cg.CALLS)] == [1] * cg.CALLS, "a call ran again"
    assert env.n("final") == finals
    assert env.n("total") == 1


def assert_redelivered(
    env: BrokerEnv, handle: Any, thread_id: str, what: str, budget: float = REDELIVERY_BUDGET
) -> None:
    """Just after a kill mid-``gather``: the run ends within the redelivery budget, the
    node replayed once, and no lease takeover was needed (no scheduler runs)."""
    killed_at = time.monotonic()
    out = finish(handle, env)
    elapsed = time.monotonic() - killed_at
    assert_gathered(env, out, finals=2)
    assert env.saver.leases.generation(thread_id) == 1, "no takeover was needed"
    print(f"amqp {what} -> run done in {elapsed:.2f} s (no scheduler)")
    assert elapsed < budget


# -- RabbitMQ: a dead consumer's jobs come back at once ---------------------------------


def test_amqp_sigkill_pool_process_mid_node_requeues_at_once(amqp_env: BrokerEnv) -> None:
    env = amqp_env
    pool = env.workers(2, "workers")
    handle, thread_id, parent = start_gather(env)
    pid = int(env.redis.lindex(f"{env.prefix}:final_pids", 0).decode().split(":")[0])
    os.kill(pid, signal.SIGKILL)
    assert_redelivered(env, handle, thread_id, "pool-process kill", RESTART_BUDGET)
    assert next(w for w in pool.workers if w.proc.pid == parent).alive()


def test_amqp_sigkill_whole_worker_is_redelivered_without_a_scheduler(amqp_env: BrokerEnv) -> None:
    env = amqp_env
    pool = env.workers(2, "workers")
    handle, thread_id, parent = start_gather(env)
    owner = next(w for w in pool.workers if w.proc.pid == parent)
    os.killpg(owner.proc.pid, signal.SIGKILL)  # the worker and its pool process
    assert_redelivered(env, handle, thread_id, "whole-worker kill")


def test_amqp_every_worker_killed_then_a_fresh_one_finishes_the_run(amqp_env: BrokerEnv) -> None:
    env = amqp_env
    first = env.workers(2, "first")
    graph = env.compile(cg.build_chain())
    config = {"configurable": {"thread_id": f"chain-{uuid.uuid4().hex[:8]}"}}
    handle = graph.submit({"value": 1}, config)
    until(lambda: env.n("s2") == 1, "step s2 to start", env)
    for w in first.workers:
        os.killpg(w.proc.pid, signal.SIGKILL)
    for w in first.workers:
        w.proc.wait(timeout=10)
    committed = list(env.saver.get_tuple(config).checkpoint.channel_values.get("log", []))
    assert "s5" not in committed, "the run finished before the kill"

    env.workers(1, "fresh")
    up_at = time.monotonic()
    out = finish(handle, env)
    assert out == {"value": cg.chain_value(1), "log": list(cg.CHAIN)}
    for name in cg.CHAIN:
        assert env.n(name) == (1 if name in committed else env.n(name)) and env.n(name) in (1, 2)
    assert env.saver.leases.generation(config["configurable"]["thread_id"]) == 1
    print(f"amqp: fresh worker up -> run done in {time.monotonic() - up_at:.2f} s")


def test_amqp_a_job_longer_than_the_visibility_timeout_runs_once(amqp_env: BrokerEnv) -> None:
    """15 s in one job, with the Redis broker's visibility timeout set to 10 s."""
    env = amqp_env
    assert env.environ["DURABLE_GRAPH_VISIBILITY_TIMEOUT"] == "10"
    env.workers(2, "workers")
    started = time.monotonic()
    handle, _, _ = start_gather(env)
    time.sleep(max(0.0, 15.0 - (time.monotonic() - started)))
    assert env.n("final") == 1, "the job was started a second time while it ran"
    env.redis.set(f"{env.prefix}:release", 1)
    out = finish(handle, env)
    assert time.monotonic() - started >= 15.0
    assert_gathered(env, out, finals=1)
    assert env.n("gather") == cg.CALLS + 1, "one replay per call, none for redelivery"


# -- a producer rides out a restart of the checkpoint Redis ------------------------------


@pytest.fixture(params=["redis", "same", "amqp"])
def blip_env(
    request: pytest.FixtureRequest, redis_url: str, redis_prefix: str, tmp_path: Path,
    spawn_redis: Any,
) -> Iterator[tuple[BrokerEnv, Callable[[float], None]]]:
    """Checkpoints on a Redis of this test (AOF on), jobs on the session's Redis
    (``redis``), on that same Redis (``same``) or on RabbitMQ (``amqp``); and a function
    restarting the checkpoint Redis after the given seconds of downtime."""
    workdir = tempfile.mkdtemp(prefix="dg-blip-", dir=tmp_path)
    port = spawn_redis.free_port()
    aof = ("--appendonly", "yes", "--appendfsync", "always")
    proc, store = spawn_redis.start(workdir, port, *aof)
    procs = [proc]

    def restart(down: float) -> None:
        spawn_redis.stop(procs[-1])  # SIGTERM: nothing acknowledged is lost (fsync always)
        time.sleep(down)
        procs.append(spawn_redis.start(workdir, port, *aof)[0])

    rabbitmq = request.getfixturevalue("rabbitmq") if request.param == "amqp" else None
    broker = {"redis": redis_url, "same": store, "amqp": rabbitmq and rabbitmq.url}
    env = BrokerEnv(store, str(broker[request.param]), redis_prefix, tmp_path)
    try:
        yield env, restart
    finally:
        env.close()
        if rabbitmq is not None:
            rabbitmq.delete_queues(env.queue)
        for p in procs:
            spawn_redis.stop(p)


def test_invoke_stream_and_submit_ride_out_a_5s_restart_of_the_checkpoint_redis(
    blip_env: tuple[BrokerEnv, Callable[[float], None]],
) -> None:
    env, restart = blip_env
    env.workers(2, "workers")
    graph = env.compile(cg.build_chain())
    calls = {
        "invoke": lambda: graph.invoke({"value": 1}, {"configurable": {"thread_id": "blip-1"}}),
        "stream": lambda: list(graph.stream(
            {"value": 3}, {"configurable": {"thread_id": "blip-3"}}, stream_mode="updates")),
    }
    box: dict[str, Any] = {}

    def call(name: str) -> None:
        try:
            box[name] = calls[name]()
        except BaseException as exc:
            box[f"{name} error"] = exc

    producers = [threading.Thread(target=call, args=(name,), daemon=True) for name in calls]
    for producer in producers:
        producer.start()
    until(lambda: env.n("s1") == 2, "step s1 of both runs to start", env)
    outage = threading.Thread(target=restart, args=(5.0,), daemon=True)
    outage.start()
    until(lambda: not _answers(env.store), "the checkpoint Redis to stop", env)
    down_at = time.monotonic()
    handle = graph.submit({"value": 2}, {"configurable": {"thread_id": "blip-2"}})
    submitted_after = time.monotonic() - down_at
    outage.join(timeout=30)
    for producer in producers:
        producer.join(timeout=RUN_TIMEOUT)
        assert not producer.is_alive(), f"a producer is still blocked\n{env.logs()}"
    assert not [k for k in box if k.endswith("error")], f"{box}\n{env.logs()}"
    assert box["invoke"] == {"value": cg.chain_value(1), "log": list(cg.CHAIN)}
    # the stream went on after the last event it had seen: every step once, in order
    assert [next(iter(chunk)) for chunk in box["stream"]] == list(cg.CHAIN)
    assert box["stream"][-1] == {"s5": {"value": cg.chain_value(3), "log": ["s5"]}}
    assert submitted_after >= 4.0, "submit returned while the store was still down"
    assert finish(handle, env) == {"value": cg.chain_value(2), "log": list(cg.CHAIN)}
    assert env.saver.get_status("blip-1")["status"] == "done"
    print(f"invoke and stream survived a 5 s restart; submit returned {submitted_after:.2f} s "
          "into it")


def _answers(url: str) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=0.2, socket_timeout=0.2)
        return bool(client.ping())
    except redis.RedisError:
        return False
