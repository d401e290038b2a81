"""SIGKILL real Celery workers in the middle of a distributed run; the run still finishes.

The graphs live in ``celery_graphs.py``; the workers are real ``celery worker``
subprocesses (``-c 1``, prefork, each in its own process group) started with
``tests/distributed/dg_workers.WorkerPool``. Every node and ``@task`` body counts
its executions in Redis, so the tests check what ran again after a crash:

- a ``@task`` call whose result was committed never runs again, and a node that
  was killed mid-way is replayed (its recorded calls answered from the store);
- killing a pool process is survived at once (Celery requeues the job); killing a
  whole worker, or every worker, is survived through the lease scheduler, within
  10 s with the default 5 s lease TTL;
- two schedulers sweeping at the same moment recover a thread exactly once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
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
from durable_graph.worker.recovery import LeaseScheduler  # noqa: E402

pytestmark = [pytest.mark.chaos, pytest.mark.celery, pytest.mark.redis]

SECRET = "chaos-test-secret-not-for-production"
RUN_TIMEOUT = 25.0
RECOVERY_BUDGET = 10.0
"""Seconds from a crash (or from a fresh worker being up) to the run's progress."""
_SCRIPT = Path(sys.executable).with_name("durable-graph")
DURABLE_GRAPH = [str(_SCRIPT)] if _SCRIPT.exists() else [
    sys.executable, "-c", "from durable_graph.cli import main; raise SystemExit(main())"]
"""The console script of this environment, or its entry point when it is not installed."""


class Env:
    """One test's prefix, queue, Redis, app and workers."""

    def __init__(self, url: str, prefix: str, tmp: Path) -> None:
        self.url, self.prefix, self.tmp = url, prefix, tmp
        self.queue = f"{prefix}.q"
        self.redis = redis.Redis.from_url(url, socket_timeout=10)
        self.app = cg.tune(create_app(url, prefix=prefix, queue=self.queue, secret_key=SECRET))
        self.saver = RedisSaver.from_url(url, prefix=prefix)
        self.pools: list[WorkerPool] = []
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def environ(self) -> dict[str, str]:
        return {
            "DURABLE_GRAPH_REDIS_URL": self.url,
            "DURABLE_GRAPH_PREFIX": self.prefix,
            "DURABLE_GRAPH_QUEUE": self.queue,
            "DURABLE_GRAPH_SECRET_KEY": SECRET,
        }

    def workers(self, count: int, name: str) -> WorkerPool:
        """Start ``count`` workers of ``celery_graphs`` and wait until they are ready."""
        pool = WorkerPool(
            module="celery_graphs", module_dir=HERE, queue=self.queue,
            log_dir=self.tmp / name, env=self.environ, redis_url=self.url,
            pool_key=f"{self.prefix}:pool",
        )
        self.pools.append(pool)
        pool.start(count)
        return pool

    def compile(self, builder: Any) -> Any:
        return builder.compile(checkpointer=self.saver, executor=CeleryExecutor(self.app))

    def n(self, name: str) -> int:
        """Executions of ``name`` so far."""
        raw = self.redis.get(f"{self.prefix}:n:{name}")
        return int(raw) if raw else 0

    def logs(self) -> str:
        parts = [pool.log_tails(60) for pool in self.pools]
        for path in sorted(self.tmp.glob("*.log")):
            parts.append(f"----- {path.name} -----\n{path.read_text(errors='replace')[-4000:]}")
        return "\n".join(parts)

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        for pool in self.pools:
            pool.stop()
        # kombu's binding set of the queue is the one broker key outside the prefix
        self.redis.delete(f"_kombu.binding.{self.queue}",
                          f"_kombu.binding_permanent.{self.queue}")
        self.redis.close()


@pytest.fixture
def env(redis_url: str, redis_prefix: str, tmp_path: Path) -> Iterator[Env]:
    e = Env(redis_url, redis_prefix, tmp_path)
    try:
        yield e
    finally:
        e.close()


def until(condition: Callable[[], bool], what: str, env: Env, timeout: float = 20.0) -> None:
    """``wait_until`` that shows the workers' logs when it times out."""
    try:
        wait_until(condition, timeout, what, interval=0.01)
    except TimeoutError as exc:
        pytest.fail(f"{exc}\n{env.logs()}")


def finish(handle: Any, env: Env) -> Any:
    try:
        return handle.result(timeout=RUN_TIMEOUT)
    except TimeoutError as exc:
        pytest.fail(f"{exc}\n{env.logs()}")


def final_pid(env: Env) -> tuple[int, int]:
    """(pid, parent pid) of the pool process that entered ``gather``'s last phase first."""
    raw = env.redis.lindex(f"{env.prefix}:final_pids", 0)
    assert raw is not None
    pid, parent = (int(x) for x in raw.decode().split(":"))
    return pid, parent


def start_gather(env: Env) -> tuple[Any, dict[str, Any]]:
    """Submit the gather graph and wait until its node blocks after its last call."""
    graph = env.compile(cg.build_gather())
    config = {"configurable": {"thread_id": f"gather-{uuid.uuid4().hex[:8]}"}}
    handle = graph.submit({"n": cg.CALLS}, config)
    until(lambda: env.n("final") == 1, "gather to reach its last phase", env)
    # the node's job is blocked: every call was committed, none is left to run
    assert [env.n(f"call{i}") for i in range(cg.CALLS)] == [1] * cg.CALLS
    assert env.n("gather") == cg.CALLS + 1, "one replay per committed call"
    assert handle.status() == "running"
    return handle, config


def assert_gather_recovered(env: Env, out: Any, graph_runs_before: int) -> None:
    results = [i * 10 for i in range(cg.CALLS)]
    assert out == {"n": cg.CALLS, "results": results, "total": sum(results)}
    # no call ran again: the replay got every result from the store
    assert [env.n(f"call{i}") for i in range(cg.CALLS)] == [1] * cg.CALLS
    # the node was replayed once after the kill, its last phase twice in all
    assert env.n("final") == 2
    assert env.n("gather") == graph_runs_before + 1
    assert env.n("total") == 1


def test_sigkill_pool_process_mid_node_requeues_and_replays_without_rerunning_calls(
    env: Env,
) -> None:
    pool = env.workers(2, "workers")
    handle, config = start_gather(env)
    pid, parent = final_pid(env)
    owner = next(w for w in pool.workers if w.proc.pid == parent)
    runs_before = env.n("gather")

    os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    out = finish(handle, env)
    elapsed = time.monotonic() - killed_at

    assert_gather_recovered(env, out, runs_before)
    assert owner.alive(), "only the pool process was killed; its worker must live on"
    replays = env.redis.lrange(f"{env.prefix}:final_pids", 0, -1)
    assert len(replays) == 2 and int(replays[1].split(b":")[0]) != pid
    assert handle.status() == "done"
    # Celery redelivered the job itself: the lease was never taken over
    assert env.saver.leases.generation(config["configurable"]["thread_id"]) == 1
    print(f"pool-process kill -> run done in {elapsed:.2f} s")
    assert elapsed < RECOVERY_BUDGET


def test_sigkill_whole_worker_mid_node_is_recovered_by_the_scheduler_within_10s(
    env: Env,
) -> None:
    pool = env.workers(2, "workers")
    with open(env.tmp / "scheduler.log", "wb") as log:
        scheduler = subprocess.Popen(
            [*DURABLE_GRAPH, "--redis-url", env.url, "--prefix", env.prefix,
             "--queue", env.queue, "scheduler", "--interval", "0.5"],
            env={**os.environ, **env.environ}, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    env.procs.append(scheduler)
    handle, config = start_gather(env)
    _, parent = final_pid(env)
    owner = next(w for w in pool.workers if w.proc.pid == parent)
    survivor = next(w for w in pool.workers if w is not owner)
    runs_before = env.n("gather")
    assert env.saver.leases.generation(config["configurable"]["thread_id"]) == 1

    os.killpg(owner.proc.pid, signal.SIGKILL)  # the worker and its pool process
    killed_at = time.monotonic()
    owner.proc.wait(timeout=10)
    out = finish(handle, env)
    elapsed = time.monotonic() - killed_at

    assert_gather_recovered(env, out, runs_before)
    assert survivor.alive() and scheduler.poll() is None
    thread_id = config["configurable"]["thread_id"]
    # the scheduler took the lease over once (generation 1 -> 2) and said so once
    assert env.saver.leases.generation(thread_id) == 2
    sched_log = (env.tmp / "scheduler.log").read_text()
    recoveries = [ln for ln in sched_log.splitlines()
                  if repr(thread_id) in ln and "recovery enqueued" in ln]
    assert len(recoveries) == 1, sched_log
    print(f"whole-worker kill -> run done in {elapsed:.2f} s (lease TTL 5 s)")
    assert elapsed < RECOVERY_BUDGET, env.logs()


class Sweeper(threading.Thread):
    """A LeaseScheduler sweeping in lock-step with its peers (a barrier per round)."""

    def __init__(self, env: Env, barrier: threading.Barrier, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.scheduler = LeaseScheduler(env.app, RedisSaver.from_url(env.url, prefix=env.prefix))
        self.barrier, self.stop = barrier, stop
        self.recovered: list[tuple[float, str]] = []
        self.rounds = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                self.barrier.wait(timeout=10)
                for thread_id in self.scheduler.sweep():
                    self.recovered.append((time.monotonic(), thread_id))
                self.rounds += 1
                time.sleep(0.2)
        except threading.BrokenBarrierError:
            pass  # the other sweeper stopped first
        except BaseException as exc:
            self.error = exc
            self.barrier.abort()


def test_sigkill_every_worker_then_a_fresh_worker_and_two_schedulers_finish_the_run(
    env: Env,
) -> None:
    first = env.workers(2, "first")
    graph = env.compile(cg.build_chain())
    thread_id = f"chain-{uuid.uuid4().hex[:8]}"
    config = {"configurable": {"thread_id": thread_id}}
    handle = graph.submit({"value": 1}, config)
    until(lambda: env.n("s2") == 1, "step s2 to start", env)

    for w in first.workers:
        os.killpg(w.proc.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    for w in first.workers:
        w.proc.wait(timeout=10)
    time.sleep(0.3)  # let anything still in flight in Redis settle
    saved = env.saver.get_tuple(config)
    assert saved is not None
    committed = list(saved.checkpoint.channel_values.get("log", []))
    assert committed[:2] == ["s0", "s1"], committed
    assert "s5" not in committed, "the run finished before the kill"
    counts_at_kill = {name: env.n(name) for name in cg.CHAIN}
    assert handle.status() == "running"

    fresh = env.workers(1, "fresh")
    ready_at = time.monotonic()
    stop = threading.Event()
    barrier = threading.Barrier(2)
    sweepers = [Sweeper(env, barrier, stop) for _ in range(2)]
    for s in sweepers:
        s.start()
    try:
        out = finish(handle, env)
        done_at = time.monotonic()
    finally:
        stop.set()
        barrier.abort()
        for s in sweepers:
            s.join(timeout=10)
    assert all(s.error is None for s in sweepers), [s.error for s in sweepers]

    assert out == {"value": cg.chain_value(1), "log": list(cg.CHAIN)}
    for name in cg.CHAIN:
        runs = env.n(name)
        if name in committed:
            assert runs == 1, f"{name} was committed before the kill but ran {runs} times"
        elif counts_at_kill[name]:
            assert runs in (1, 2), f"{name} was in flight at the kill and ran {runs} times"
        else:
            assert runs == 1, f"{name} started after the recovery and ran {runs} times"
    # exactly one of the two schedulers recovered the thread, exactly once
    recovered = [r for s in sweepers for r in s.recovered]
    assert [tid for _, tid in recovered] == [thread_id], recovered
    assert env.saver.leases.generation(thread_id) == 2
    assert all(s.rounds >= 1 for s in sweepers)
    assert fresh.workers[0].alive()
    recovery = recovered[0][0] - ready_at
    print(f"all workers killed -> fresh worker up in {ready_at - killed_at:.2f} s -> recovery "
          f"enqueued {recovery:.2f} s later -> run done {done_at - ready_at:.2f} s after it was up "
          f"({done_at - killed_at:.2f} s after the kill)")
    assert recovery < RECOVERY_BUDGET
    assert done_at - ready_at < RECOVERY_BUDGET + len(cg.CHAIN) * cg.STEP_SLEEP
    assert handle.status() == "done"
