"""SQLite schema 10: a checkpoint id in the ``checkpoints`` key as its 16 bytes.

A canonical UUID id (every id the engine makes) is stored as its bytes, any other id as
its text; every read gives the text back. Opening an older file rewrites its ids so in
the open's transaction, and a trigger refuses a canonical id written as text: what a
process of an older release still running on the file writes.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from durable_graph.errors import CheckpointStoreError
from durable_graph.store.base import Checkpoint, new_checkpoint_id
from durable_graph.store.sqlite import SqliteSaver
from durable_graph.store.sqlite_row import pack_id
from durable_graph.store.sqlite_schema import SCHEMA_VERSION
from tests.sqlite_keys import named_rows
from tests.unit.test_leaf_dedup import chat_app, content, run_chat

GOLDEN = Path(__file__).resolve().parents[1] / "golden"


def _put(saver: SqliteSaver, checkpoint_id: str, parent: str | None, n: int,
         thread: str = "t") -> None:
    cp = Checkpoint(id=checkpoint_id, ts="2026-01-01T00:00:00+00:00",
                    channel_values={"n": n}, channel_versions={"n": n + 1},
                    versions_seen={})
    conf: dict[str, Any] = {"thread_id": thread, "checkpoint_ns": ""}
    if parent:
        conf["checkpoint_id"] = parent
    saver.put({"configurable": conf}, cp, {"source": "loop", "step": n}, {"n": n + 1})


def _stored_ids(conn: sqlite3.Connection) -> list[Any]:
    return [i for (i,) in conn.execute("SELECT checkpoint_id FROM checkpoints ORDER BY 1")]


def test_engine_ids_are_stored_as_their_bytes_and_read_back_as_text(tmp_path: Path) -> None:
    with SqliteSaver(tmp_path / "c.db") as saver:
        contents = run_chat(chat_app(saver), "t", 5)
        stored = _stored_ids(saver._conn)
        assert stored and all(isinstance(i, bytes) and len(i) == 16 for i in stored)
        history = list(saver.list({"configurable": {"thread_id": "t"}}))
        ids = [c.checkpoint.id for c in history]
        assert ids == sorted(ids, reverse=True) and [pack_id(i) for i in ids] == stored[::-1]
        assert [r.checkpoint_id for r in saver.list_ids("t")] == ids
        assert [c.parent_config["configurable"]["checkpoint_id"] for c in history[:-1]] \
            == ids[1:]  # each parent the checkpoint before it
        middle = saver.get_tuple({"configurable": {"thread_id": "t", "checkpoint_id": ids[5]}})
        assert middle is not None and middle.checkpoint.id == ids[5]
        before = [c.checkpoint.id for c in saver.list(
            {"configurable": {"thread_id": "t"}},
            before={"configurable": {"checkpoint_id": ids[5]}})]
        assert before == ids[6:]
        saver.delete_checkpoints("t", "", ids[3:5])
        assert [r.checkpoint_id for r in saver.list_ids("t")] == ids[:3] + ids[5:]
        saver.prune(["t"], strategy="keep_latest")
        assert [r.checkpoint_id for r in saver.list_ids("t")] == ids[:1]
        latest = saver.get_tuple({"configurable": {"thread_id": "t"}})
        assert latest is not None
        assert [content(m) for m in latest.checkpoint.channel_values["messages"]] == contents


def test_an_id_a_caller_chose_stays_text_and_sorts_before_uuid_ids(tmp_path: Path) -> None:
    """The one change of order: a text id now sorts before every UUID id of its thread
    (SQLite orders texts before blobs), whatever its text."""
    with SqliteSaver(tmp_path / "c.db") as saver:
        first = new_checkpoint_id()
        _put(saver, first, None, 0)
        _put(saver, "zz-mine", first, 1)  # a name a caller chose: after ``first`` as text
        assert sorted(map(type, _stored_ids(saver._conn)), key=str) == [bytes, str]
        assert [c.checkpoint.id for c in saver.list({"configurable": {"thread_id": "t"}})] \
            == [first, "zz-mine"]
        got = saver.get_tuple({"configurable": {"thread_id": "t", "checkpoint_id": "zz-mine"}})
        assert got is not None and got.checkpoint.channel_values == {"n": 1}
        upper = first.upper()  # not canonical: kept as given
        _put(saver, upper, None, 2)
        assert upper in _stored_ids(saver._conn)


@pytest.mark.parametrize("fmt", ["signed-v5", "plain-v9"])
def test_opening_an_older_file_rewrites_its_ids_in_their_order(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"{fmt}.sqlite"
    shutil.copyfile(GOLDEN / f"checkpoints-{fmt}.sqlite", path)
    query = "SELECT * FROM checkpoints ORDER BY thread_id, checkpoint_ns, checkpoint_id"
    with sqlite3.connect(path) as conn:
        before = conn.execute(query).fetchall()
    assert before and all(isinstance(row[2], str) for row in before)
    serde = None if fmt.startswith("plain") else _golden_serde()
    with SqliteSaver(path, serde=serde) as saver:
        conn = saver._conn
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert named_rows(conn, conn.execute(query).fetchall()) == [
            (*r[:2], pack_id(r[2]), *r[3:]) for r in before]
        assert saver.get_tuple({"configurable": {"thread_id": "chat"}}) is not None


def _golden_serde() -> Any:
    from tests.unit.test_golden_checkpoints import gen

    return gen.golden_serde()


def test_an_older_release_still_running_cannot_commit_text_ids(tmp_path: Path) -> None:
    """A process of an older release writes the engine's ids as text: its commit is
    refused, naming the restart, and nothing of it is stored."""
    path = tmp_path / "c.db"
    with SqliteSaver(path) as saver:
        _put(saver, new_checkpoint_id(), None, 0)
    old = sqlite3.connect(path)
    row = old.execute("SELECT * FROM checkpoints").fetchone()
    with pytest.raises(sqlite3.IntegrityError, match="restart this process"):
        old.execute("INSERT OR REPLACE INTO checkpoints VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (*row[:2], new_checkpoint_id(), *row[3:]))
    old.rollback()
    assert len(_stored_ids(old)) == 1
    old.close()


def test_a_rewrite_that_fails_halfway_leaves_the_file_as_it_was(tmp_path: Path) -> None:
    """The rewrite runs in the open's transaction: an open that fails during it (here
    on its last id, after the others) leaves the old file untouched, as SQLite's
    rollback leaves it after a process killed mid-transaction."""
    path = tmp_path / "v9.sqlite"
    shutil.copyfile(GOLDEN / "checkpoints-plain-v9.sqlite", path)
    conn = sqlite3.connect(path)
    query = "SELECT * FROM checkpoints ORDER BY 1, 2, 3"
    before = conn.execute(query).fetchall()
    last = max(row[2] for row in before)
    conn.execute(f"CREATE TRIGGER stop BEFORE UPDATE ON checkpoints WHEN OLD.checkpoint_id = "
                 f"'{last}' BEGIN SELECT RAISE(ABORT, 'stopped'); END")
    conn.commit()
    with pytest.raises(CheckpointStoreError, match="stopped"):
        SqliteSaver(path)
    assert conn.execute(query).fetchall() == before
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 9
    conn.execute("DROP TRIGGER stop")
    conn.commit()
    conn.close()
    with SqliteSaver(path) as saver:
        assert all(isinstance(i, bytes) for i in _stored_ids(saver._conn))
