"""SIGKILL a graph run on SqliteSaver mid-step, resume it in a new process.

The run lives in ``_crash_graph.py`` (a subprocess in its own process group).
Markers count executions; the SqliteSaver's pending writes, read after the kill and
before the resume, tell which task results were committed: those must never run
again, and nothing may run more than twice.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from durable_graph.store.base import RETURN

pytestmark = pytest.mark.chaos

SCRIPT = Path(__file__).with_name("_crash_graph.py")
sys.path.insert(0, str(SCRIPT.parent))
from _crash_graph import opened  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
CONFIG = {"configurable": {"thread_id": "t1"}}
TIMEOUT = 30.0


def runs(markers: Path, name: str) -> int:
    """How many times ``name`` started (lines in its marker file)."""
    path = markers / f"{name}.txt"
    return len(path.read_text().splitlines()) if path.exists() else 0


def wait_for(condition: Callable[[], bool], proc: subprocess.Popen[str], what: str) -> None:
    """Poll ``condition`` until true; fail if the process exits or time runs out."""
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"run exited ({proc.returncode}) before {what}:\n{out}\n{err}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.005)


def spawn(variant: str, mode: str, db: str, markers: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), variant, mode, str(db), str(markers)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # own process group: the kill hits the whole run
    )


def kill(proc: subprocess.Popen[str]) -> None:
    assert proc.poll() is None, "the run finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == -signal.SIGKILL


def resume(variant: str, db: str, markers: Path) -> dict[str, Any]:
    proc = spawn(variant, "resume", db, markers)
    try:
        out, err = proc.communicate(timeout=TIMEOUT * 2)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("resume did not finish")
    assert proc.returncode == 0, f"resume failed:\n{out}\n{err}"
    lines = [ln for ln in out.splitlines() if ln.startswith("RESULT ")]
    assert lines, out
    return json.loads(lines[-1].removeprefix("RESULT "))  # type: ignore[no-any-return]


def committed_task_results(db: str) -> dict[int, int]:
    """Task index -> result of every ``work`` call recorded on the latest checkpoint."""
    with opened(db) as saver:
        saved = saver.get_tuple(CONFIG)
    assert saved is not None
    results: dict[int, int] = {}
    for w in saved.pending_writes:
        if w.channel == RETURN:
            name, value = w.value
            assert name == "work"
            results[value // 10] = value
    return results


def return_writes(db: str) -> int:
    if not db.startswith("redis") and not Path(db).exists():
        return 0
    with opened(db) as saver:
        saved = saver.get_tuple(CONFIG)
    return 0 if saved is None else sum(w.channel == RETURN for w in saved.pending_writes)


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def paths(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """(store spec, marker dir): the same crash runs on SQLite and on a real Redis."""
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
        prefix = request.getfixturevalue("redis_prefix")
        yield f"{url}#{prefix}", tmp_path / "markers"
    else:
        yield str(tmp_path / "run.sqlite"), tmp_path / "markers"


def test_sigkill_during_task_fanout_resumes_without_rerunning_committed_tasks(
    paths: tuple[str, Path],
) -> None:
    db, markers = paths
    proc = spawn("fanout", "start", db, markers)
    try:
        wait_for(lambda: len(list(markers.glob("task-*.txt"))) >= 2, proc, "two tasks started")
        # tasks 0-2 finish at once, 3-5 sleep: wait for a commit so the kill lands between
        wait_for(lambda: return_writes(db) >= 1, proc, "a committed task result")
        kill(proc)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()

    committed = committed_task_results(db)
    assert committed, "no task result was committed before the kill"
    assert len(committed) < 6, "every task committed: the kill came too late to test resume"
    before = {i: runs(markers, f"task-{i}") for i in range(6)}
    assert runs(markers, "prep") == 1
    assert runs(markers, "finish") == 0

    out = resume("fanout", db, markers)

    assert out == {"n": 6, "results": [0, 10, 20, 30, 40, 50], "done": True}
    for i in range(6):
        count = runs(markers, f"task-{i}")
        assert 1 <= count <= 2, f"task-{i} ran {count} times"
        if i in committed:
            assert count == 1, f"task-{i} was committed but ran again"
        else:
            assert count == before[i] + 1, f"task-{i} was not committed, must run once more"
    assert runs(markers, "prep") == 1
    assert runs(markers, "finish") == 1


def test_sigkill_during_a_chain_does_not_rerun_finished_steps(
    paths: tuple[str, Path],
) -> None:
    db, markers = paths
    proc = spawn("chain", "start", db, markers)
    try:
        wait_for(lambda: runs(markers, "s2") >= 1, proc, "step s2 started")
        kill(proc)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()

    with opened(db) as saver:
        saved = saver.get_tuple(CONFIG)
    assert saved is not None
    finished = saved.checkpoint.channel_values.get("log", [])
    assert finished[:2] == ["s0", "s1"], finished  # sync: s1's checkpoint preceded s2
    assert "s4" not in finished
    before = {name: runs(markers, name) for name in ("s0", "s1", "s2", "s3", "s4")}

    out = resume("chain", db, markers)

    assert out == {"log": ["s0", "s1", "s2", "s3", "s4"]}
    for name in ("s0", "s1", "s2", "s3", "s4"):
        count = runs(markers, name)
        if name in finished:
            assert count == 1, f"{name} finished before the kill but ran {count} times"
        else:
            assert 1 <= count <= 2, f"{name} ran {count} times"
            assert count == before[name] + 1, f"{name} must run exactly once on resume"


def test_resume_of_a_finished_run_runs_nothing(paths: tuple[str, Path]) -> None:
    db, markers = paths
    proc = spawn("chain", "start", db, markers)
    out, err = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, err
    assert resume("chain", db, markers) == {"log": ["s0", "s1", "s2", "s3", "s4"]}
    assert all(runs(markers, n) == 1 for n in ("s0", "s1", "s2", "s3", "s4"))


def _pending_of(db: str) -> list[str]:
    """The channels and values of the pending writes on the thread's latest checkpoint."""
    if not db.startswith("redis") and not Path(db).exists():
        return []
    with opened(db) as saver:
        saved = saver.get_tuple(CONFIG)
    return [] if saved is None else [repr(w.value) for w in saved.pending_writes]


def test_sigkill_mid_step_keeps_the_task_that_finished_first(
    paths: tuple[str, Path],
) -> None:
    """Two tasks in one step: the one that finished is stored as it finished (only a
    step's last task waits for the commit), so the resume runs the other one only."""
    db, markers = paths
    proc = spawn("pair", "start", db, markers)
    try:
        wait_for(lambda: "['fast']" in _pending_of(db) and runs(markers, "slow") >= 1,
                 proc, "fast's writes stored while slow sleeps")
        kill(proc)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert (runs(markers, "fast"), runs(markers, "slow"), runs(markers, "join")) == (1, 1, 0)
    assert runs(markers, "slow-done") == 0, "slow finished before the kill: nothing tested"

    out = resume("pair", db, markers)

    assert sorted(out["log"][:2]) == ["fast", "slow"] and out["log"][2:] == ["join"]
    assert (runs(markers, "fast"), runs(markers, "slow"), runs(markers, "join")) == (1, 2, 1)
