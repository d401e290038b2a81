"""A task killed mid-body (SIGKILL) and re-run in a new process sees the same idempotency key."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.chaos

SCRIPT = Path(__file__).with_name("_idempotency_graph.py")
REPO = Path(__file__).resolve().parents[2]


def spawn(mode: str, db: Path, markers: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), mode, str(db), str(markers)], cwd=REPO,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )


def keys(markers: Path, name: str) -> list[str]:
    path = markers / f"{name}.txt"
    return path.read_text().split() if path.exists() else []


def run_until_paying(mode: str, db: Path, markers: Path, seen: int) -> None:
    """Start the run and SIGKILL it while ``pay`` is inside its slow external call."""
    proc = spawn(mode, db, markers)
    deadline = time.monotonic() + 30
    try:
        while len(keys(markers, "pay")) < seen:
            if proc.poll() is not None:
                pytest.fail(f"run exited early: {proc.communicate()}")
            assert time.monotonic() < deadline, "pay never started"
            time.sleep(0.01)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)


def test_killed_payment_sees_the_same_key_when_resumed(tmp_path: Path) -> None:
    db = tmp_path / "pay.sqlite"
    run_until_paying("start", db, tmp_path, seen=1)
    run_until_paying("resume", db, tmp_path, seen=2)
    pay, charge = keys(tmp_path, "pay"), keys(tmp_path, "charge")
    assert len(pay) == 2 and pay[0] == pay[1]  # one payment, whatever the crashes
    assert len(charge) == 2 and charge[0] == charge[1]
    assert pay[0] != charge[0]  # the node and its task are different calls
