"""SQLite schema 9: a leaf's cell in ``leaf_cells``, its key and count in ``leaf_refs``.

A chat message of 1 KB of base64 is a cell of 769 bytes; with the thread and digest
beside it (schemas 5 to 8) its row took 812 bytes or more, four to a 4 KiB page. Its
cell row alone fits five a page whatever the thread id. Opening an older file moves its
``leaves`` rows and leaves a read-only view of the same name, which an older release
still running on the file reads through and cannot write.
"""

from __future__ import annotations

import math
import shutil
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import pytest

from durable_graph.errors import CheckpointStoreError
from durable_graph.store.sqlite import SqliteSaver
from durable_graph.store.sqlite_leaves import split_leaves
from durable_graph.store.sqlite_schema import SCHEMA_VERSION
from tests.leaf_counts import counted, held_by_rows
from tests.sqlite_keys import named_rows
from tests.unit.test_leaf_dedup import chat_app, content, run_chat
from tests.unit.test_sqlite_schema8 import assert_view_refuses

GOLDEN = Path(__file__).resolve().parents[1] / "golden"


def _pages(conn: sqlite3.Connection, table: str) -> int:
    return int(conn.execute("SELECT count(*) FROM dbstat WHERE name = ?", (table,)).fetchone()[0])


def test_a_cell_row_holds_the_cell_alone_five_to_a_page(tmp_path: Path) -> None:
    thread = str(uuid.uuid4())  # a thread id as long as users' (schema 8: four a page)
    with SqliteSaver(tmp_path / "c.db") as saver:
        contents = run_chat(chat_app(saver), thread, 60)
        conn = saver._conn
        assert [r[1] for r in conn.execute("PRAGMA table_info(leaf_cells)")] == ["data"]
        cells = conn.execute("SELECT count(*) FROM leaf_cells").fetchone()[0]
        assert cells >= 60 and {len(bytes(d)) for (d,) in conn.execute(
            "SELECT data FROM leaf_cells")} == {769}  # ``B`` and the 768 bytes
        assert _pages(conn, "leaf_cells") <= math.ceil(cells / 5) + 1  # and one interior
        assert counted(conn) == held_by_rows(conn)
    with SqliteSaver(tmp_path / "c.db") as fresh:  # a process that did not write them
        state = fresh.get_tuple({"configurable": {"thread_id": thread}})
    assert state is not None
    assert [content(m) for m in state.checkpoint.channel_values["messages"]] == contents


def _old_rows(path: Path) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"file:{path}?immutable=1", uri=True)
    try:
        assert conn.execute("SELECT type FROM sqlite_master WHERE name = 'leaves'"
                            ).fetchall() == [("table",)]
        return conn.execute(
            "SELECT thread_id, digest, refs, data FROM leaves ORDER BY 1, 2").fetchall()
    finally:
        conn.close()


@pytest.mark.parametrize("fmt", ["signed-v5", "plain-v8", "signed-v8z"])
def test_opening_an_older_file_moves_its_leaves_and_drops_the_table(
    tmp_path: Path, fmt: str
) -> None:
    """Schema 5 (a WITHOUT ROWID ``leaves``) to 8z (rowid): every leaf moves with its
    count and cell as they were, and the file reads, resumes and prunes on them."""
    path = tmp_path / f"{fmt}.sqlite"
    shutil.copyfile(GOLDEN / f"checkpoints-{fmt}.sqlite", path)
    before = _old_rows(path)
    assert before
    serde = None if fmt.startswith("plain") else signed_golden()
    with SqliteSaver(path, serde=serde) as saver:
        conn = saver._conn
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("SELECT type FROM sqlite_master WHERE name = 'leaves'"
                            ).fetchall() == [("view",)]
        assert named_rows(conn, conn.execute(
            "SELECT thread_id, digest, refs, data FROM leaves").fetchall()) == before
        assert len(counted(conn)) == len(before)  # one cell a key row, none left over
        assert saver.get_tuple({"configurable": {"thread_id": "chat"}}) is not None
        saver.prune(["chat"], strategy="keep_latest")
        assert counted(conn) == held_by_rows(conn) and counted(conn)
        saver.delete_thread("chat")
        assert conn.execute("SELECT count(*) FROM leaf_cells").fetchone()[0] == sum(
            1 for row in before if row[0] != "chat")


def signed_golden() -> Any:
    from tests.unit.test_golden_checkpoints import gen

    return gen.golden_serde()


_V8_CREATE_LEAVES = """
CREATE TABLE IF NOT EXISTS leaves (
    thread_id TEXT NOT NULL, digest BLOB NOT NULL, refs INTEGER NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY (thread_id, digest)
)"""


def test_an_older_release_still_running_reads_leaves_and_cannot_write_them(
    tmp_path: Path,
) -> None:
    """A schema 8 process that checked the version before this release upgraded the file
    runs its schema on the upgraded file: it gets no ``leaves`` table back (leaves there
    would be unseen by this release, and its counts wrong); it reads this release's
    leaves through the view, and every write of them fails, so its commit rolls back."""
    path = tmp_path / "f.sqlite"
    with SqliteSaver(path) as saver:
        contents = run_chat(chat_app(saver), "t", 3)
    old = sqlite3.connect(path)
    old.execute(_V8_CREATE_LEAVES)
    old.execute("PRAGMA user_version = 8")
    old.commit()
    assert old.execute("SELECT type FROM sqlite_master WHERE name = 'leaves'"
                       ).fetchall() == [("view",)]
    (digest,) = old.execute("SELECT digest FROM leaves LIMIT 1").fetchone()
    assert old.execute("SELECT data FROM leaves WHERE thread_id = ? AND digest IN (?)",
                       (b"\x01", digest)).fetchone() is not None  # the thread's key
    assert_view_refuses(old, "leaves", [
        ("INSERT INTO leaves VALUES (?, ?, 1, ?)", ("t", b"d" * 32, b"x")),
        ("UPDATE leaves SET refs = refs + 1 WHERE thread_id = ? AND digest = ?", ("t", digest)),
        ("DELETE FROM leaves WHERE thread_id = ?", ("t",))])
    old.close()
    with SqliteSaver(path) as saver:  # and this release opens it as before
        assert saver._conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        state = saver.get_tuple({"configurable": {"thread_id": "t"}})
        assert state is not None
        assert [content(m) for m in state.checkpoint.channel_values["messages"]] == contents
        assert counted(saver._conn) == held_by_rows(saver._conn)


def test_moving_leaves_goes_in_batches_and_keeps_every_one() -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute(_V8_CREATE_LEAVES)
    rows = [(f"t{i % 3}", i.to_bytes(32, "big"), 1 + i % 4, bytes([i % 251]) * 300)
            for i in range(1234)]  # more than a batch
    conn.executemany("INSERT INTO leaves VALUES (?, ?, ?, ?)", rows)
    from durable_graph.store.sqlite_leaves import LEAVES_SCHEMA

    for statement in LEAVES_SCHEMA.split(";"):
        conn.execute(statement)
    split_leaves(conn)
    assert conn.execute("SELECT * FROM leaves ORDER BY 1, 2").fetchall() == sorted(rows)
    assert counted(conn) == {(t, d): n for t, d, n, _ in rows}
    split_leaves(conn)  # a second open: nothing to move, nothing doubled
    assert conn.execute("SELECT count(*) FROM leaf_cells").fetchone()[0] == len(rows)


def test_a_move_that_fails_halfway_leaves_the_file_as_it_was(tmp_path: Path) -> None:
    """The move runs in the open's transaction: an open that fails during it (here a
    cell the move cannot insert, after some it did) leaves the schema 8 file untouched,
    as SQLite's rollback leaves it after a process killed mid-transaction, and the next
    open moves everything."""
    path = tmp_path / "v8.sqlite"
    shutil.copyfile(GOLDEN / "checkpoints-plain-v8.sqlite", path)
    before = _old_rows(path)
    conn = sqlite3.connect(path)
    assert any(len(bytes(row[3])) < 310 for row in before)  # some cells move first
    assert any(len(bytes(row[3])) >= 310 for row in before)
    conn.execute("CREATE TABLE leaf_cells (data BLOB NOT NULL CHECK (length(data) < 310))")
    conn.commit()
    conn.close()
    with pytest.raises(CheckpointStoreError, match="CHECK constraint failed"):
        SqliteSaver(path)
    assert _old_rows(path) == before
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 8
    conn.execute("DROP TABLE leaf_cells")
    conn.commit()
    conn.close()
    with SqliteSaver(path) as saver:
        assert named_rows(saver._conn, saver._conn.execute(
            "SELECT thread_id, digest, refs, data FROM leaves").fetchall()) == before
