"""Recovery keeps a run's pauses: a worker SIGKILLed between committing a step and
ending its run leaves a running thread owing nothing, and the recovery sweep hands it
to another worker. That worker must end the run the way the dead one was about to,
not run it on:

- a step after a node in ``interrupt_after``: the run pauses there (the next node
  does not run) and a resume runs the rest once;
- a stop request (``multitask="interrupt"``) made during the step: the run is
  cancelled at the boundary;
- a resume that passed a breakpoint (``interrupt_before``), whose producer died after
  recording the run: the run goes on from the breakpoint instead of pausing there again.

Real ``celery worker`` subprocesses; ``celery_graphs.die_ending`` makes the worker
process that ends the run kill itself first, once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import celery_graphs as cg
import pytest
from worker_env import Env, finish, until

from durable_graph.errors import RunCancelledError

pytestmark = [pytest.mark.chaos, pytest.mark.celery, pytest.mark.redis]
HERE = Path(__file__).resolve().parent


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


_RESUME_AND_DIE = """
import os, signal, sys
import celery_graphs as cg
from durable_graph import RedisSaver
from durable_graph.worker import CeleryExecutor, runs

def die(*args, **kwargs):  # the run is recorded; its first job is not sent yet
    os.kill(os.getpid(), signal.SIGKILL)

runs._send_tasks = die
saver = RedisSaver.from_url(os.environ["DURABLE_GRAPH_REDIS_URL"],
                            prefix=os.environ["DURABLE_GRAPH_PREFIX"])
graph = cg.build_pause().compile(checkpointer=saver, executor=CeleryExecutor(cg.app))
graph.invoke(None, {"configurable": {"thread_id": sys.argv[1]}}, interrupt_before=["pause_b"])
"""


def test_a_resumed_run_whose_producer_died_before_sending_runs_past_the_breakpoint(
    env: Env,
) -> None:
    """A resume passes the breakpoint the thread paused at (embedded: ``mark_resumed``).
    Its producer dies after recording the run, before sending its first job: the
    recovering worker starts from that same checkpoint and must not pause there again."""
    env.workers(2, "workers")
    graph = env.compile(cg.build_pause())
    thread, config = _thread("resumed")
    env.redis.set(f"{env.prefix}:release", 1)
    finish(graph.submit({"id": thread, "value": 1}, config, interrupt_before=["pause_b"]),
           env)
    assert graph.get_state(config).next == ("pause_b",)

    producer = subprocess.run(
        [sys.executable, "-c", _RESUME_AND_DIE, thread], cwd=HERE, timeout=60,
        env={**os.environ, **env.environ, "PYTHONPATH": f"{HERE}:{HERE.parent.parent}"},
        capture_output=True, check=False)
    assert producer.returncode == -signal.SIGKILL, producer.stderr.decode()[-3000:]
    assert env.saver.get_status(thread)["status"] == "running"

    until(lambda: env.saver.get_status(thread)["status"] != "running",
          "the recovered run to end", env, timeout=40)
    assert env.saver.get_status(thread)["status"] == "done", "it paused at the breakpoint again"
    assert _log(env, config) == ["pause_a", "pause_b", "pause_c"]
    assert (env.n("pause_a"), env.n("pause_b"), env.n("pause_c")) == (1, 1, 1)
