"""Recovery that needs nothing but workers: no scheduler process in any of these tests.

Real ``celery worker`` subprocesses (prefork, ``-c 1``) on a real Redis broker; the
graphs (``celery_graphs.py``) count every body's executions in Redis and record
when calls started, on the Redis server's clock.

- a job the broker lost (popped by a worker that died before claiming it; job
  messages keep no unacked copy) is sent again once a probe shows the queue moved
  past it;
- a worker killed while sibling calls run elsewhere: its call starts again within
  5 s of the kill, the siblings are not disturbed;
- a node that kills its process fails its thread after 3 deaths, with the error
  shown by ``durable-graph show`` and raised to the producer, while 10 healthy
  threads beside it complete;
- a task longer than the visibility timeout runs once, and is not redelivered (its
  message keeps no unacked copy in Redis);
- a burst of 400 runs on 3 workers: no takeover, every body runs exactly once;
- a soak of 200 runs over 60 s with a worker or a pool process SIGKILLed every 2 s.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import celery_graphs as cg
import pytest
from worker_env import DURABLE_GRAPH, Env, finish, until

from durable_graph import JobCrashedError
from durable_graph.store.redis.jobbook import JobBook

pytestmark = [pytest.mark.chaos, pytest.mark.celery, pytest.mark.redis]


def server_time(env: Env) -> float:
    seconds, micros = env.redis.time()
    return seconds + micros / 1e6


def marks(env: Env, name: str) -> list[tuple[float, int, int]]:
    """(start time, pid, parent pid) of every execution of ``name`` so far."""
    out = []
    for raw in env.redis.lrange(f"{env.prefix}:t:{name}", 0, -1):
        at, pid, parent = raw.decode().split(":")
        out.append((float(at), int(pid), int(parent)))
    return out


def log_lines(env: Env, text: str) -> list[str]:
    return [ln for pool in env.pools for ln in pool.logs().splitlines() if text in ln]


def thread_config(name: str) -> dict[str, Any]:
    return {"configurable": {"thread_id": f"{name}-{uuid.uuid4().hex[:8]}"}}


def test_a_message_the_broker_lost_is_sent_again_and_the_run_completes(env: Env) -> None:
    graph = env.compile(cg.build_small())
    config = thread_config("lost")
    thread_id = config["configurable"]["thread_id"]
    handle = graph.submit({"id": thread_id, "value": 1}, config)
    # no worker runs yet: pop the first job off the queue, as kombu's Redis transport
    # does before a worker killed in that instant could record it as unacknowledged
    until(lambda: env.redis.llen(env.queue) == 1, "the first job to be queued", env)
    assert env.redis.rpop(env.queue) is not None
    assert env.redis.llen(env.queue) == 0
    assert JobBook(env.saver.conn, env.prefix).owes(thread_id)

    env.workers(1, "workers")
    ready_at = time.monotonic()
    out = finish(handle, env)
    elapsed = time.monotonic() - ready_at

    assert out["value"] == cg.small_value(1)
    assert out["log"] == ["small_a", "small_call", "small_c"]
    assert len(log_lines(env, "lost by the broker; sent again")) == 1
    assert env.saver.leases.generation(thread_id) == 1  # no takeover
    print(f"lost message -> run done {elapsed:.2f} s after the worker was up")
    assert elapsed < 10.0


def test_a_worker_killed_beside_running_sibling_calls_resumes_within_5s(env: Env) -> None:
    pool = env.workers(4, "workers")
    graph = env.compile(cg.build_fanout())
    handle = graph.submit({"n": 3}, thread_config("fan"))
    until(lambda: all(len(marks(env, f"sibling{i}")) == 1 for i in range(3)),
          "3 calls to start", env)
    _, _, parent = marks(env, "sibling0")[0]
    victim = next(w for w in pool.workers if w.proc.pid == parent)

    os.killpg(victim.proc.pid, signal.SIGKILL)
    killed_at = server_time(env)
    victim.proc.wait(timeout=10)
    until(lambda: len(marks(env, "sibling0")) == 2, "the killed call to start again", env,
          timeout=15)
    restarted = marks(env, "sibling0")[1][0] - killed_at
    out = finish(handle, env, timeout=30)

    assert out == {"n": 3, "results": [0, 1, 2]}
    assert [env.n(f"sibling{i}") for i in range(3)] == [2, 1, 1]
    print(f"worker killed beside {cg.SIBLING_CALL:.0f} s sibling calls -> its call started "
          f"again {restarted:.2f} s after the kill")
    assert restarted < 5.0


def show(env: Env, thread_id: str) -> str:
    done = subprocess.run(
        [*DURABLE_GRAPH, "--redis-url", env.url, "--prefix", env.prefix, "--queue", env.queue,
         "show", thread_id],
        env={**os.environ, **env.environ}, capture_output=True, text=True, timeout=60,
        check=False)
    return done.stdout + done.stderr


def test_a_node_that_kills_its_process_fails_after_3_deaths_beside_healthy_threads(
    env: Env,
) -> None:
    env.workers(3, "workers")
    crasher = env.compile(cg.build_crash())
    healthy = env.compile(cg.build_small())
    config = thread_config("crash")
    thread_id = config["configurable"]["thread_id"]
    started = time.monotonic()
    doomed = crasher.submit({"id": thread_id, "value": 0}, config)
    handles = []
    for i in range(10):
        cfg = thread_config(f"ok{i}")
        handles.append((i, healthy.submit({"id": cfg["configurable"]["thread_id"], "value": i},
                                          cfg)))

    with pytest.raises(JobCrashedError, match="died 3 times") as info:
        finish(doomed, env, timeout=60)
    failed_after = time.monotonic() - started
    for i, handle in handles:
        assert finish(handle, env)["value"] == cg.small_value(i)

    assert env.n("crash") == 3
    assert "task 'crash'" in str(info.value) and "exitcode 7" in str(info.value)
    assert doomed.status() == "failed"
    shown = show(env, thread_id)
    assert "JobCrashedError" in shown and "died 3 times" in shown, shown
    print(f"crash loop -> thread failed after 3 deaths in {failed_after:.2f} s")


def test_a_task_longer_than_the_visibility_timeout_runs_once(
    make_env: Callable[..., Env],
) -> None:
    env = make_env(visibility_timeout="10")
    env.workers(2, "workers")
    graph = env.compile(cg.build_long())
    handle = graph.submit({"id": "long", "value": 1}, thread_config("long"))
    until(lambda: marks(env, "long"), "the long task to start", env)
    # the worker holds its message with no copy in kombu's unacked hash (transport.QoS)
    assert env.redis.hlen(f"{env.queue}.unacked") == 0
    out = finish(handle, env, timeout=cg.LONG_TASK + 25)

    assert out["value"] == 2
    assert env.n("long") == 1, marks(env, "long")
    # a job's message keeps no unacked copy (transport.QoS): the broker never redelivers
    # it, however long it runs, so no copy even reaches a worker
    assert not log_lines(env, "dropped a copy of call job"), env.logs()
    print(f"{cg.LONG_TASK:.0f} s task, 10 s visibility timeout: ran once, not redelivered")


def run_counts(env: Env) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in env.redis.hgetall(f"{env.prefix}:runs").items()}


BODIES = ("small_a", "small_task", "small_call_after", "small_c")


def assert_runs_correct(env: Env, threads: dict[str, int], outs: dict[str, Any]) -> None:
    """Every run's state is the undisturbed one; no body ran after its result committed."""
    for thread_id, value in threads.items():
        assert outs[thread_id] == {"id": thread_id, "value": cg.small_value(value),
                                   "log": ["small_a", "small_call", "small_c"]}
    assert env.redis.lrange(f"{env.prefix}:violations", 0, -1) == []


def test_a_burst_of_400_runs_on_3_workers_takes_nothing_over_and_runs_each_body_once(
    env: Env,
) -> None:
    env.workers(3, "workers")
    graph = env.compile(cg.build_small())
    threads = {f"burst-{i}-{uuid.uuid4().hex[:6]}": i for i in range(400)}
    started = time.monotonic()
    handles = {t: graph.submit({"id": t, "value": v}, {"configurable": {"thread_id": t}})
               for t, v in threads.items()}
    outs = {t: finish(h, env, timeout=240) for t, h in handles.items()}
    elapsed = time.monotonic() - started

    assert_runs_correct(env, threads, outs)
    counts = run_counts(env)
    assert counts == {f"{t}:{b}": 1 for t in threads for b in BODIES}
    takeovers = sum(env.saver.leases.generation(t) - 1 for t in threads)
    assert takeovers == 0
    assert not log_lines(env, "sent again")
    print(f"burst of 400 runs on 3 workers: {elapsed:.1f} s, 0 takeovers, every body once")


class Chaos(threading.Thread):
    """Every 2 s, SIGKILL a whole worker (and start a new one) or one pool process."""

    def __init__(self, env: Env, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.env, self.stop = env, stop
        self.ready: list[tuple[Any, Any]] = [(p, w) for p in env.pools for w in p.workers]
        self.kills: list[str] = []
        self.error: BaseException | None = None

    def _replace(self, name: str) -> None:
        pool = self.env.workers(1, name)
        self.ready.extend((pool, w) for w in pool.workers)

    def run(self) -> None:
        try:
            n = 0
            while not self.stop.wait(2.0):
                n += 1
                live = [(p, w) for p, w in self.ready if w.alive()]
                if n % 2:
                    pool, worker = live[n % len(live)]
                    os.killpg(worker.proc.pid, signal.SIGKILL)
                    worker.proc.wait(timeout=10)
                    self.kills.append(f"worker {worker.name}")
                    threading.Thread(target=self._replace, args=(f"r{n}",), daemon=True).start()
                    continue
                for pool, worker in live:
                    pool._read_pool(self.env.redis)
                    pids = [p for p in worker.pool_pids if _alive(p)]
                    if pids:
                        os.kill(max(pids), signal.SIGKILL)
                        self.kills.append(f"pool process {max(pids)} of {worker.name}")
                        break
        except BaseException as exc:
            self.error = exc


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_soak_200_runs_over_60s_with_a_kill_every_2s_all_complete_correctly(env: Env) -> None:
    env.workers(3, "workers")
    graph = env.compile(cg.build_small(slow=True))
    threads = {f"soak-{i}-{uuid.uuid4().hex[:6]}": i for i in range(200)}
    stop = threading.Event()
    chaos = Chaos(env, stop)
    chaos.start()
    handles = {}
    try:
        for t, v in threads.items():
            handles[t] = graph.submit({"id": t, "value": v}, {"configurable": {"thread_id": t}})
            time.sleep(60.0 / len(threads))
    finally:
        stop.set()
        chaos.join(timeout=60)
    outs = {t: finish(h, env, timeout=120) for t, h in handles.items()}

    assert chaos.error is None, chaos.error
    assert len(chaos.kills) >= 28, chaos.kills
    assert all(h.status() == "done" for h in handles.values())
    assert_runs_correct(env, threads, outs)
    counts = run_counts(env)
    again = {k: v for k, v in counts.items() if v > 1}
    print(f"soak: 200/200 done, {len(chaos.kills)} kills, {len(again)} bodies ran again "
          f"(killed mid-run), 0 ran after their result was committed")
