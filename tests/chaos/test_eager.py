"""Eager continuation under a crash: a worker killed in the middle of a step it runs inline.

The chain ``eager_a -> eager_b -> eager_c`` runs on two real workers with the default
eager depth, so the worker that commits ``eager_a`` runs ``eager_b`` itself instead of
publishing it. ``eager_b`` blocks in its first execution; the test checks it is running
inline (the Celery message its process works on is ``eager_a``'s), SIGKILLs that whole
worker, and the run completes on the other one, with no scheduler process: the inline
job's claim names the dead process, so a sweep sends its message like any dead
process's job. Every body counts its executions per thread and records a violation if
it runs after its result was committed.
"""

from __future__ import annotations

import os
import signal
import uuid

import celery_graphs as cg
import pytest
from worker_env import Env, finish, until

pytestmark = [pytest.mark.chaos, pytest.mark.celery, pytest.mark.redis]


def executions(env: Env, name: str) -> list[tuple[int, int, bool]]:
    """(pid, parent pid, ran inline) of every execution of ``name`` so far."""
    out = []
    for raw in env.redis.lrange(f"{env.prefix}:e:{name}", 0, -1):
        pid, parent, inline = raw.decode().split(":")
        out.append((int(pid), int(parent), inline == "1"))
    return out


def test_a_worker_killed_mid_inline_continuation_is_recovered_and_nothing_runs_twice(
    env: Env,
) -> None:
    pool = env.workers(2, "workers")
    graph = env.compile(cg.build_eager())
    thread_id = f"eager-{uuid.uuid4().hex[:8]}"
    handle = graph.submit({"id": thread_id, "value": 1}, {"configurable": {"thread_id": thread_id}})

    until(lambda: len(executions(env, "eager_b")) == 1, "eager_b to start", env)
    (a_pid, _, a_inline), = executions(env, "eager_a")
    b_pid, b_parent, b_inline = executions(env, "eager_b")[0]
    assert not a_inline, "the first step comes from the producer's message"
    assert b_inline and b_pid == a_pid, "eager_b runs inline, in eager_a's process"
    victim = next(w for w in pool.workers if w.proc.pid == b_parent)
    os.killpg(victim.proc.pid, signal.SIGKILL)
    victim.proc.wait(timeout=10)

    out = finish(handle, env, timeout=40)

    assert out["value"] == cg.eager_value(1)
    assert out["log"] == ["eager_a", "eager_b", "eager_c"]
    runs = {k.decode(): int(v) for k, v in env.redis.hgetall(f"{env.prefix}:runs").items()}
    assert runs == {f"{thread_id}:eager_a": 1, f"{thread_id}:eager_b": 2,
                    f"{thread_id}:eager_c": 1}, runs
    assert env.redis.lrange(f"{env.prefix}:violations", 0, -1) == []
    b_again = executions(env, "eager_b")[1]
    assert b_again[1] != b_parent, "eager_b ran again on the surviving worker"
