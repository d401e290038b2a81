"""SIGKILL real Celery workers in the middle of a distributed run; the run still finishes.

The graphs live in ``celery_graphs.py``; the workers are real ``celery worker``
subprocesses (``-c 1``, prefork, each in its own process group) started with
``tests/distributed/dg_workers.WorkerPool``. Every node and ``@task`` body counts
its executions in Redis, so the tests check what ran again after a crash:

- a ``@task`` call whose result was committed never runs again, and a node that
  was killed mid-way is replayed (its recorded calls answered from the store);
- killing a pool process is survived at once (its worker declares it dead and the
  job is sent again); killing a whole worker is survived by the other workers'
  sweeps, with no scheduler, within a heartbeat TTL (3 s) and a sweep; killing
  every worker is survived by the next worker to start;
- two sweepers sweeping at the same moment send a dead process's job once.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from typing import Any

import celery_graphs as cg
import pytest
from worker_env import Env, finish, until

from durable_graph import RedisSaver
from durable_graph.worker.recovery import LeaseScheduler

pytestmark = [pytest.mark.chaos, pytest.mark.celery, pytest.mark.redis]

RECOVERY_BUDGET = 10.0
"""Seconds from a crash (or from a fresh worker being up) to the run's progress."""


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


def test_sigkill_whole_worker_mid_node_is_recovered_by_the_other_workers_within_10s(
    env: Env,
) -> None:
    pool = env.workers(2, "workers")  # and no scheduler process
    handle, config = start_gather(env)
    _, parent = final_pid(env)
    owner = next(w for w in pool.workers if w.proc.pid == parent)
    survivor = next(w for w in pool.workers if w is not owner)
    runs_before = env.n("gather")

    os.killpg(owner.proc.pid, signal.SIGKILL)  # the worker and its pool process
    killed_at = time.monotonic()
    owner.proc.wait(timeout=10)
    out = finish(handle, env)
    elapsed = time.monotonic() - killed_at

    assert_gather_recovered(env, out, runs_before)
    assert survivor.alive()
    # the job itself was sent again: no takeover, the lease generation never moved
    assert env.saver.leases.generation(config["configurable"]["thread_id"]) == 1
    resent = [ln for ln in survivor.log().splitlines() if "died; sent again" in ln]
    assert len(resent) == 1, survivor.log()
    print(f"whole-worker kill, no scheduler -> run done in {elapsed:.2f} s")
    assert elapsed < RECOVERY_BUDGET, env.logs()


class Sweeper(threading.Thread):
    """A sweeper sweeping in lock-step with its peers (a barrier per round)."""

    def __init__(self, env: Env, barrier: threading.Barrier, rounds: int) -> None:
        super().__init__(daemon=True)
        self.scheduler = LeaseScheduler(env.app, RedisSaver.from_url(env.url, prefix=env.prefix))
        self.barrier, self.rounds = barrier, rounds
        self.resent = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for _ in range(self.rounds):
                self.barrier.wait(timeout=10)
                self.resent += self.scheduler.sweep_all().resent
        except BaseException as exc:
            self.error = exc
            self.barrier.abort()


def test_sigkill_every_worker_then_two_sweepers_resend_once_and_a_fresh_worker_finishes(
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
    time.sleep(3.5)  # past the heartbeat TTL (3 s) of the killed processes
    saved = env.saver.get_tuple(config)
    assert saved is not None
    committed = list(saved.checkpoint.channel_values.get("log", []))
    assert committed[:2] == ["s0", "s1"], committed
    assert "s5" not in committed, "the run finished before the kill"
    counts_at_kill = {name: env.n(name) for name in cg.CHAIN}
    assert handle.status() == "running"

    barrier = threading.Barrier(2)
    sweepers = [Sweeper(env, barrier, rounds=3) for _ in range(2)]
    for s in sweepers:
        s.start()
    for s in sweepers:
        s.join(timeout=30)
    assert all(s.error is None for s in sweepers), [s.error for s in sweepers]
    # the killed job was sent again exactly once, by one of the two
    assert sorted(s.resent for s in sweepers) == [0, 1]

    fresh = env.workers(1, "fresh")
    ready_at = time.monotonic()
    out = finish(handle, env)
    done_at = time.monotonic()

    assert out == {"value": cg.chain_value(1), "log": list(cg.CHAIN)}
    for name in cg.CHAIN:
        runs = env.n(name)
        if name in committed:
            assert runs == 1, f"{name} was committed before the kill but ran {runs} times"
        elif counts_at_kill[name]:
            assert runs == 2, f"{name} was in flight at the kill and ran {runs} times"
        else:
            assert runs == 1, f"{name} started after the recovery and ran {runs} times"
    assert env.saver.leases.generation(thread_id) == 1
    assert fresh.workers[0].alive()
    print(f"all workers killed -> fresh worker up {ready_at - killed_at:.2f} s later -> run "
          f"done {done_at - ready_at:.2f} s after it was up")
    assert done_at - ready_at < RECOVERY_BUDGET + len(cg.CHAIN) * cg.STEP_SLEEP
    assert handle.status() == "done"
