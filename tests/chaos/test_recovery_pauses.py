"""Recovery keeps a run's pauses: a worker SIGKILLed between committing a step and
ending its run leaves a running thread owing nothing, and the recovery sweep hands it
to another worker. That worker must end the run the way the dead one was about to,
not run it on:

- a step after a node in ``interrupt_after``: the run pauses there (the next node
  does not run) and a resume runs the rest once;
- a stop request (``multitask="interrupt"``) made during the step: the run is
  cancelled at the boundary.

Real ``celery worker`` subprocesses; ``celery_graphs.die_ending`` makes the worker
process that ends the run kill itself first, once.
"""

from __future__ import annotations

import uuid
from typing import Any

import celery_graphs as cg
import pytest
from worker_env import Env, finish, until

from durable_graph.errors import RunCancelledError

pytestmark = [pytest.mark.chaos, pytest.mark.celery, pytest.mark.redis]


def _thread(name: str) -> tuple[str, dict[str, Any]]:
    thread = f"{name}-{uuid.uuid4().hex[:8]}"
    return thread, {"configurable": {"thread_id": thread}}


def _die_ending(env: Env, thread: str, status: str) -> str:
    flag = f"{env.prefix}:die-ending:{thread}"  # as celery_graphs.die_ending
    env.redis.set(flag, status)
    return flag


def _log(env: Env, config: dict[str, Any]) -> list[str]:
    saved = env.saver.get_tuple(config)
    assert saved is not None
    return list(saved.checkpoint.channel_values.get("log", []))


def test_a_run_paused_after_a_step_stays_paused_when_its_worker_died_ending_it(
    env: Env,
) -> None:
    env.workers(2, "workers")
    graph = env.compile(cg.build_pause())
    thread, config = _thread("after")
    env.redis.set(f"{env.prefix}:release", 1)  # pause_a does not wait
    flag = _die_ending(env, thread, "interrupted")

    finish(graph.submit({"id": thread, "value": 1}, config, interrupt_after=["pause_a"]),
           env, timeout=40)

    assert not env.redis.exists(flag), "the worker ending the run did not die there"
    assert env.saver.get_status(thread)["status"] == "interrupted"
    assert graph.get_state(config).next == ("pause_b",)
    assert _log(env, config) == ["pause_a"]
    assert (env.n("pause_a"), env.n("pause_b")) == (1, 0), "the run went on past the pause"
    out = finish(graph.submit(None, config), env)
    assert out["log"] == ["pause_a", "pause_b", "pause_c"]
    assert (env.n("pause_a"), env.n("pause_b"), env.n("pause_c")) == (1, 1, 1)


def test_a_run_asked_to_stop_is_cancelled_when_its_worker_died_ending_it(env: Env) -> None:
    env.workers(2, "workers")
    graph = env.compile(cg.build_pause())
    thread, config = _thread("stop")
    handle = graph.submit({"id": thread, "value": 1}, config)
    until(lambda: env.n("pause_a") == 1, "pause_a to start", env)
    flag = _die_ending(env, thread, "cancelled")
    env.saver.request_stop(thread, handle.run_id)  # what multitask="interrupt" does
    env.redis.set(f"{env.prefix}:release", 1)

    with pytest.raises(RunCancelledError):
        finish(handle, env, timeout=40)

    assert not env.redis.exists(flag), "the worker ending the run did not die there"
    assert env.saver.get_status(thread)["status"] == "cancelled"
    assert _log(env, config) == ["pause_a"]
    assert (env.n("pause_a"), env.n("pause_b")) == (1, 0), "the run went on past the stop"
