"""SqliteSaver durability and SQLite-specific behaviour.

The contract every saver shares lives in ``test_saver_contract.py``; this file holds
what only a file-backed store has: surviving SIGKILL, reopening, several connections
on one file, pragmas, the thread status table.
"""

from __future__ import annotations

import os
import queue
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from durable_graph.errors import (
    CheckpointStoreError,
    GraphValueError,
    SerializationError,
)
from durable_graph.store.base import Checkpoint, PendingWrite, new_checkpoint_id
from durable_graph.store.sqlite import SqliteSaver

REPO = Path(__file__).resolve().parents[2]

WRITER = textwrap.dedent(
    """
    import sys
    from durable_graph.store.base import Checkpoint, new_checkpoint_id
    from durable_graph.store.sqlite import SqliteSaver

    saver = SqliteSaver(sys.argv[1])
    config = {"configurable": {"thread_id": "t"}}
    latest = saver.get_tuple(config)
    n = latest.checkpoint.channel_values["n"] if latest else 0
    if latest:
        config = latest.config
    padding = "x" * 20_000  # a large blob so the kill often lands mid-transaction
    while True:
        n += 1
        cp = Checkpoint(new_checkpoint_id(), "ts", {"n": n, "pad": padding + str(n)},
                        {"n": n, "pad": n}, {})
        config = saver.put(config, cp, {"step": n}, {"n": n, "pad": n})
        saver.put_writes(config, [("w", n)], "task")
        print(n, cp.id, flush=True)
    """
)


def cfg(thread: str = "t", checkpoint_id: str | None = None) -> dict[str, Any]:
    conf: dict[str, Any] = {"thread_id": thread}
    if checkpoint_id is not None:
        conf["checkpoint_id"] = checkpoint_id
    return {"configurable": conf}


def make_cp(values: dict[str, Any], version: int = 1) -> Checkpoint:
    return Checkpoint(new_checkpoint_id(), "ts", values, dict.fromkeys(values, version), {})


# --- SIGKILL -----------------------------------------------------------------


def _start_writer(db: Path) -> tuple[subprocess.Popen[str], queue.Queue[str | None]]:
    """Start the writer subprocess; its stdout lines arrive on the queue, then None."""
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(db)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.endswith("\n"):  # a line cut short by the SIGKILL was not reported
                lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return proc, lines


def _kill_after(db: Path, commits: int, timeout: float = 60.0) -> dict[int, str]:
    """Run a writer until it reports ``commits`` more commits, SIGKILL it, return all reports."""
    proc, lines = _start_writer(db)
    reported: dict[int, str] = {}
    deadline = time.monotonic() + timeout
    try:
        while len(reported) < commits:
            try:
                line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"writer reported {len(reported)} commits in {timeout}s")
            if line is None:
                stderr = proc.stderr.read() if proc.stderr else ""
                pytest.fail(f"writer exited early: {stderr}")
            n, checkpoint_id = line.split()
            reported[int(n)] = checkpoint_id
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=timeout) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=timeout)
    # Lines printed before the kill and still in the pipe are commits too.
    while (line := lines.get(timeout=timeout)) is not None:
        n, checkpoint_id = line.split()
        reported[int(n)] = checkpoint_id
    for pipe in (proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()
    return reported


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_sigkill_loses_no_reported_commit(tmp_path: Path) -> None:
    db = tmp_path / "nested" / "checkpoints.db"
    reported = _kill_after(db, commits=40)
    # A second writer resumes from what the first left, and is killed too.
    reported |= _kill_after(db, commits=40)
    assert len(reported) >= 80

    with SqliteSaver(db) as saver:
        for n, checkpoint_id in reported.items():
            got = saver.get_tuple(cfg(checkpoint_id=checkpoint_id))
            assert got is not None, f"reported commit {n} is missing"
            assert got.checkpoint.channel_values["n"] == n
            assert got.checkpoint.channel_values["pad"].endswith(str(n))
            assert got.pending_writes == [PendingWrite("task", "w", n)]
        # Each writer may have committed one checkpoint it was killed before printing;
        # the second writer resumed from it, so the chain has no gaps.
        chain = [t.checkpoint.channel_values["n"] for t in saver.list(cfg())]
        assert chain == list(range(len(chain), 0, -1))
        assert set(reported) <= set(chain)
        assert len(chain) - len(reported) <= 2
        latest = saver.get_tuple(cfg())
        assert latest is not None
        assert latest.checkpoint.channel_values["n"] == len(chain)
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


# --- files and connections ---------------------------------------------------


def test_reopen_reads_what_was_committed(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "cp.db"
    with SqliteSaver(path) as saver:
        config = saver.put(cfg(), make_cp({"x": (1, 2)}), {"step": 3}, {"x": 1})
        saver.put_writes(config, [("x", "w")], "task")
    with SqliteSaver.from_conn_string(str(path)) as reopened:
        got = reopened.get_tuple(cfg())
        assert got is not None
        assert got.config == config
        assert got.checkpoint.channel_values == {"x": (1, 2)}
        assert got.metadata == {"step": 3}
        assert got.pending_writes == [PendingWrite("task", "x", "w")]


@pytest.mark.parametrize(("synchronous", "level"), [("NORMAL", 1), ("FULL", 2)])
def test_wal_mode_and_synchronous_level(tmp_path: Path, synchronous: Any, level: int) -> None:
    with SqliteSaver(tmp_path / "cp.db", synchronous=synchronous) as saver:
        conn = saver._conn
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert conn.execute("PRAGMA synchronous").fetchone() == (level,)


def test_bad_synchronous_level_is_refused(tmp_path: Path) -> None:
    with pytest.raises(GraphValueError, match="synchronous"):
        SqliteSaver(tmp_path / "cp.db", synchronous="OFF")  # type: ignore[arg-type]


def test_given_connection_is_used_and_left_open(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "cp.db", check_same_thread=False)
    saver = SqliteSaver(conn)
    saver.put(cfg(), make_cp({"x": 1}), {}, {"x": 1})
    saver.close()
    assert conn.execute("SELECT count(*) FROM checkpoints").fetchone() == (1,)
    conn.close()


def test_in_memory_connection_string(tmp_path: Path) -> None:
    with SqliteSaver(":memory:") as saver:
        saver.put(cfg(), make_cp({"x": 1}), {}, {"x": 1})
        assert saver.get_tuple(cfg()) is not None
    assert not list(tmp_path.iterdir())


def test_closed_saver_raises_store_error(tmp_path: Path) -> None:
    with SqliteSaver.from_conn_string(tmp_path / "cp.db") as saver:
        pass
    with pytest.raises(CheckpointStoreError):
        saver.get_tuple(cfg())


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "cp.db"
    SqliteSaver(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(CheckpointStoreError, match="schema version 99"):
        SqliteSaver(path)


def test_two_savers_on_one_file_write_concurrently(tmp_path: Path) -> None:
    path = tmp_path / "cp.db"
    savers = [SqliteSaver(path), SqliteSaver(path)]
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            config = cfg(f"thread-{n}")
            for i in range(20):
                config = savers[n % 2].put(config, make_cp({"i": i}, i + 1), {}, {"i": i + 1})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert len(list(savers[0].list(None))) == 120
    assert savers[1].get_tuple(cfg("thread-4")).checkpoint.channel_values == {"i": 19}  # type: ignore[union-attr]
    for saver in savers:
        saver.close()


def test_metadata_that_is_not_json_is_refused_and_nothing_written(tmp_path: Path) -> None:
    with SqliteSaver(tmp_path / "cp.db") as saver:
        with pytest.raises(SerializationError, match="metadata"):
            saver.put(cfg(), make_cp({"x": 1}), {"when": object()}, {"x": 1})  # type: ignore[typeddict-unknown-key]
        assert saver.get_tuple(cfg()) is None
        assert saver._conn.execute("SELECT count(*) FROM blobs").fetchone() == (0,)


# --- thread status -----------------------------------------------------------


def _fail() -> None:
    raise RuntimeError("node exploded")


def test_status_records_last_error(tmp_path: Path) -> None:
    with SqliteSaver(tmp_path / "cp.db") as saver:
        assert saver.get_status("t") is None
        saver.set_status("t", "running")
        first = saver.get_status("t")
        assert first is not None
        assert (first["status"], first["error_type"]) == ("running", None)
        try:
            _fail()
        except RuntimeError as exc:
            saver.set_status("t", "failed", exc)
        failed = saver.get_status("t")
        assert failed is not None
        assert failed["status"] == "failed"
        assert failed["error_type"] == "builtins.RuntimeError"
        assert failed["error_message"] == "node exploded"
        assert "in _fail" in failed["error_traceback"]
        assert failed["updated_at"] >= first["updated_at"]
        saver.set_status("t", "running")
        retried = saver.get_status("t")
        assert retried is not None
        assert retried["status"] == "running"
        assert retried["error_message"] == "node exploded"  # the last error stays visible


def test_status_is_validated_and_deleted_with_the_thread(tmp_path: Path) -> None:
    with SqliteSaver(tmp_path / "cp.db") as saver:
        with pytest.raises(GraphValueError, match="status"):
            saver.set_status("t", "exploded")  # type: ignore[arg-type]
        saver.set_status("t", "done")
        saver.set_status("other", "interrupted")
        saver.delete_thread("t")
        assert saver.get_status("t") is None
        assert saver.get_status("other") is not None


def test_put_is_one_transaction(tmp_path: Path) -> None:
    with SqliteSaver(tmp_path / "cp.db") as saver:
        # Make the checkpoint insert fail after the blobs of the same put were inserted.
        saver._conn.execute(
            "CREATE TRIGGER fail BEFORE INSERT ON checkpoints WHEN NEW.thread_id = "
            "(SELECT key FROM thread_keys WHERE thread_id = 'boom') "
            "BEGIN SELECT RAISE(ABORT, 'injected'); END"
        )
        with pytest.raises(CheckpointStoreError, match="injected"):
            saver.put(cfg("boom"), make_cp({"x": 1}), {}, {"x": 1})
        saver.put(cfg("fine"), make_cp({"y": 2}), {}, {"y": 1})
        rows = saver._conn.execute(
            "SELECT k.thread_id FROM blobs b JOIN thread_keys k ON k.key = b.thread_id").fetchall()
        assert rows == [("fine",)]
        # the failed put numbered no thread: "boom" never was
        assert saver._conn.execute("SELECT thread_id FROM thread_keys").fetchall() == [("fine",)]
