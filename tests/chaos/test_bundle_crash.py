"""SIGKILL a worker in the middle of a bundle of ``@task`` calls; the node still finishes.

A node starts 16 calls at once; they travel in four bundles of four (see
``worker/bundles``), the first of them calls 0, 4, 8 and 12. Call 8 blocks on its
first run and the test kills the process running it: calls 0 and 4 of its bundle
finished before and their results are recorded while it blocks (a bundle holds results
a few milliseconds, ``worker/held``, not until its next call returns), call 12 had not
started. Every call body counts its
runs in Redis: at the end no call whose result was recorded ran again, and every call
ran once, but call 8, which ran again after the kill.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from typing import Any

import celery_graphs as cg
import pytest
from worker_env import Env, finish, until

from durable_graph.store.base import RETURN

pytestmark = [pytest.mark.chaos, pytest.mark.celery, pytest.mark.redis]

RECOVERY_BUDGET = 15.0
"""Seconds from the kill to the run's end."""


def _runs_of(env: Env, i: int) -> list[tuple[int, int]]:
    """(pid, parent pid) of each run of call ``i``."""
    raw = env.redis.lrange(f"{env.prefix}:t:bundle{i}", 0, -1)
    return [(int(a), int(b)) for a, b in (r.decode().split(":") for r in raw)]


def _recorded(env: Env, config: dict[str, Any]) -> set[int]:
    """The calls whose results are recorded now (each returns ten times its index)."""
    saved = env.saver.get_tuple(config)
    assert saved is not None
    return {w.value[1] // 10 for w in saved.pending_writes if w.channel == RETURN}


@pytest.mark.parametrize("whole_worker", [False, True], ids=["pool-process", "whole-worker"])
def test_sigkill_mid_bundle_keeps_finished_calls_and_runs_the_rest_once(
    env: Env, whole_worker: bool,
) -> None:
    pool = env.workers(2, "workers")
    graph = env.compile(cg.build_bundled())
    config = {"configurable": {"thread_id": f"bundle-{uuid.uuid4().hex[:8]}"}}
    handle = graph.submit({"n": cg.BUNDLE_CALLS}, config)
    blocks = cg.BUNDLE_BLOCKS
    # each run is counted, then its process noted (two commands): wait for the note
    until(lambda: len(_runs_of(env, blocks)) == 1, "the bundle to reach its blocking call", env)
    [(pid, parent)] = _runs_of(env, blocks)
    # the same process ran the calls before it in its bundle, one message for all three
    assert [_runs_of(env, i) for i in (0, 4)] == [[(pid, parent)], [(pid, parent)]]
    owner = next(w for w in pool.workers if w.proc.pid == parent)
    until(lambda: {0, 4} <= _recorded(env, config),
          "the results of the calls before it to land while it blocks", env)
    recorded = _recorded(env, config)
    assert blocks not in recorded

    if whole_worker:
        os.killpg(owner.proc.pid, signal.SIGKILL)
        owner.proc.wait(timeout=10)
    else:
        os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    out = finish(handle, env, timeout=RECOVERY_BUDGET + 10)
    elapsed = time.monotonic() - killed_at

    assert out["results"] == [i * 10 for i in range(cg.BUNDLE_CALLS)]
    runs = [env.n(f"bundle{i}") for i in range(cg.BUNDLE_CALLS)]
    # no call whose result was recorded ran again; the killed one ran once more
    assert all(runs[i] == 1 for i in recorded), (recorded, runs)
    assert runs == [2 if i == blocks else 1 for i in range(cg.BUNDLE_CALLS)], runs
    again = _runs_of(env, blocks)[1]
    assert again[0] != pid
    if not whole_worker:
        assert owner.alive(), "only the pool process was killed; its worker must live on"
    print(f"{'whole-worker' if whole_worker else 'pool-process'} kill mid-bundle -> run done "
          f"in {elapsed:.2f} s")
    assert elapsed < RECOVERY_BUDGET, env.logs()
