"""SQLite schema 12: a thread in the row tables by its key, a number in ``thread_keys``.

``checkpoints``, ``blobs``, ``writes`` and ``leaf_refs`` keep a thread's key (its number's
bytes: one byte for a file's first 255 threads) where they kept its id, a UUID's 36
characters. Every read and error names the thread by its id; deleting a thread drops its
key, and no number is given twice. Opening an older file numbers its threads in the open's
transaction, and a trigger refuses a thread id written as text: what a process of an older
release still running on the file writes.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest

from durable_graph.errors import CheckpointStoreError
from durable_graph.store.base import new_checkpoint_id
from durable_graph.store.sqlite import SqliteSaver
from durable_graph.store.sqlite_schema import SCHEMA_VERSION
from durable_graph.store.sqlite_threads import KEYED_TABLES, key_bytes
from tests.leaf_counts import counted, held_by_rows
from tests.sqlite_keys import named_rows
from tests.unit.test_leaf_dedup import chat_app, content, run_chat
from tests.unit.test_sqlite_ids import _put as put_id

GOLDEN = Path(__file__).resolve().parents[1] / "golden"


def _cfg(thread: str, **more: Any) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread, **more}}


def _put(saver: SqliteSaver, thread: str, n: int, parent: str | None = None) -> str:
    """A checkpoint of ``{"n": n}`` on ``thread`` after ``parent``; its id."""
    checkpoint_id = new_checkpoint_id(parent)
    put_id(saver, checkpoint_id, parent, n, thread)
    return checkpoint_id


def _threads_stored(conn: sqlite3.Connection) -> set[Any]:
    return {t for table in KEYED_TABLES
            for (t,) in conn.execute(f"SELECT DISTINCT thread_id FROM {table}")}


def test_a_uuid_thread_is_kept_by_a_one_byte_key_and_read_back_by_its_id(
    tmp_path: Path,
) -> None:
    thread, other = str(uuid.uuid4()), str(uuid.uuid4())
    with SqliteSaver(tmp_path / "c.db") as saver:
        contents = run_chat(chat_app(saver), thread, 4)
        run_chat(chat_app(saver), other, 2)
        saver.put_writes(saver.get_tuple(_cfg(other)).config, [("x", 1)], "task-1")  # type: ignore[union-attr]
        conn = saver._conn
        keys = dict(conn.execute("SELECT thread_id, key FROM thread_keys").fetchall())
        assert keys == {thread: b"\x01", other: b"\x02"}
        assert _threads_stored(conn) == {b"\x01", b"\x02"}  # no id in any row table
        state = saver.get_tuple(_cfg(thread))
        assert state is not None and state.config["configurable"]["thread_id"] == thread
        assert [content(m) for m in state.checkpoint.channel_values["messages"]] == contents
        history = list(saver.list(_cfg(thread)))
        assert {h.config["configurable"]["thread_id"] for h in history} == {thread}
        assert history[-1].parent_config is None and all(
            h.parent_config["configurable"]["thread_id"] == thread  # type: ignore[index]
            for h in history[:-1])
        assert [r.checkpoint_id for r in saver.list_ids(thread)] == [
            h.checkpoint.id for h in history]
        # every thread at once: each row named by its thread's id
        every = list(saver.list(None))
        assert sorted({e.config["configurable"]["thread_id"] for e in every}) == sorted(
            [thread, other])
        assert len(every) == len(history) + len(list(saver.list(_cfg(other))))


def test_a_thread_never_stored_reads_as_empty_and_numbers_nothing(tmp_path: Path) -> None:
    with SqliteSaver(tmp_path / "c.db") as saver:
        _put(saver, "t", 0)
        assert saver.get_tuple(_cfg("nope")) is None
        assert list(saver.list(_cfg("nope"))) == []
        assert list(saver.list_ids("nope")) == []
        assert saver.value_depth("nope", "", "n", 1) is None
        saver.delete_checkpoints("nope", "", [new_checkpoint_id()])
        saver.delete_thread("nope")
        saver.set_status("nope", "done")  # a status is not a row of the row tables
        assert saver._conn.execute("SELECT thread_id FROM thread_keys").fetchall() == [("t",)]


def test_deleting_a_thread_drops_its_key_and_no_number_is_given_twice(tmp_path: Path) -> None:
    """A deleted thread's number is never given again (``AUTOINCREMENT``), not even when it
    was the highest: a key read before the delete can never name another thread."""
    with SqliteSaver(tmp_path / "c.db") as saver:
        conn = saver._conn
        run_chat(chat_app(saver), "a", 2)
        _put(saver, "b", 0)
        saver.delete_thread("b")  # the highest number
        assert conn.execute("SELECT thread_id FROM thread_keys").fetchall() == [("a",)]
        _put(saver, "c", 0)
        saver.delete_thread("a")
        _put(saver, "a", 0)  # again: a new number
        keys = dict(conn.execute("SELECT thread_id, key FROM thread_keys").fetchall())
        assert keys == {"c": b"\x03", "a": b"\x04"}
        assert _threads_stored(conn) == {b"\x03", b"\x04"}
        assert counted(conn) == held_by_rows(conn) == {}  # a's leaves went with it
        assert [h.checkpoint.channel_values for h in saver.list(_cfg("a"))] == [{"n": 0}]


def test_a_thread_purged_by_its_ttl_leaves_no_key(tmp_path: Path) -> None:
    with SqliteSaver(tmp_path / "c.db") as saver:
        run_chat(chat_app(saver), "gone", 2)
        _put(saver, "kept", 0)
        saver.set_ttl("gone", 60)
        saver._conn.execute("UPDATE expiry SET expires_at = 0 WHERE thread_id = 'gone'")
        assert saver.get_tuple(_cfg("gone")) is None  # a read purges what is due
        conn = saver._conn
        assert conn.execute("SELECT thread_id FROM thread_keys").fetchall() == [("kept",)]
        assert _threads_stored(conn) == {b"\x02"}
        assert counted(conn) == held_by_rows(conn) == {}


def test_keys_past_one_byte_take_two(tmp_path: Path) -> None:
    assert [key_bytes(n) for n in (1, 255, 256, 65535, 65536)] == [
        b"\x01", b"\xff", b"\x01\x00", b"\xff\xff", b"\x01\x00\x00"]
    with SqliteSaver(tmp_path / "c.db") as saver:
        _put(saver, "first", 0)
        saver._conn.execute("UPDATE sqlite_sequence SET seq = 254 WHERE name = 'thread_keys'")
        ids = {t: _put(saver, t, 1) for t in ("x255", "x256", "x257")}
        keys = dict(saver._conn.execute("SELECT thread_id, key FROM thread_keys").fetchall())
        assert [keys[t] for t in ids] == [b"\xff", b"\x01\x00", b"\x01\x01"]
        for thread, checkpoint_id in ids.items():
            got = saver.get_tuple(_cfg(thread))
            assert got is not None and got.checkpoint.id == checkpoint_id
        assert len(list(saver.list(None))) == 4


def test_listing_every_thread_pages_through_them_all_once(tmp_path: Path) -> None:
    """More rows than a page (100), from threads numbered out of their ids' order, with a
    copied thread sharing its source's checkpoint ids (ties broken by the key)."""
    with SqliteSaver(tmp_path / "c.db") as saver:
        made: dict[str, list[str]] = {}
        for thread in ("zz", "aa", "mm"):
            parent = None
            made[thread] = []
            for n in range(45):
                parent = _put(saver, thread, n, parent)
                made[thread].append(parent)
        saver.copy_thread("aa", "copy")
        seen = [(e.config["configurable"]["thread_id"], e.checkpoint.id)
                for e in saver.list(None)]
        expected = {(t, cid) for t, ids in {**made, "copy": made["aa"]}.items() for cid in ids}
        assert len(seen) == len(expected) == 180 and set(seen) == expected
        assert [cid for _, cid in seen] == sorted((cid for _, cid in seen), reverse=True)


def test_opening_an_older_file_keys_its_threads_in_the_open(tmp_path: Path) -> None:
    path = tmp_path / "v11.sqlite"
    shutil.copyfile(GOLDEN / "checkpoints-signed-v11.sqlite", path)
    with sqlite3.connect(path) as conn:
        before = {t: conn.execute(f"SELECT * FROM {t}").fetchall() for t in KEYED_TABLES}
    assert all(isinstance(row[0], str) for rows in before.values() for row in rows)
    from tests.golden import make_golden as gen

    with SqliteSaver(path, serde=gen.golden_serde()) as saver:
        conn = saver._conn
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        for table, rows in before.items():
            assert named_rows(conn, conn.execute(f"SELECT * FROM {table}").fetchall()) \
                == sorted(rows)
        numbered = conn.execute("SELECT thread_id FROM thread_keys ORDER BY number").fetchall()
        assert [t for (t,) in numbered] == sorted(t for (t,) in numbered)  # by id, at the open
        assert counted(conn) == held_by_rows(conn)
        pad = gen.pad_of("checkpoints-signed-v11.sqlite")
        out = gen.chat_graph(saver, gen.Runs(fail=False)).invoke(
            gen.chat_turn(gen.CHAT_TURNS, pad), gen.config("chat"))
        assert len(out["messages"]) == len(gen.chat_messages(gen.CHAT_TURNS + 1, pad))
        saver.prune(["chat"], strategy="keep_latest")
        assert counted(conn) == held_by_rows(conn)


def _rows(conn: sqlite3.Connection) -> dict[str, list[Any]]:
    return {t: sorted(conn.execute(f"SELECT * FROM {t}").fetchall()) for t in KEYED_TABLES}


def _as_it_was_then_keyed(path: Path, before: dict[str, list[Any]], then: str = "") -> None:
    """The file is still schema 11 with ``before``'s rows and no ``thread_keys`` (then
    ``then`` runs on it), and the next open keys it all."""
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 11
        assert _rows(conn) == before
        assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'thread_keys'"
                            ).fetchall() == []
        if then:
            conn.execute(then)
    with SqliteSaver(path) as saver:
        assert _threads_stored(saver._conn) == {key_bytes(n) for n in range(1, 6)}
        assert saver.get_tuple(_cfg("chat")) is not None
        assert counted(saver._conn) == held_by_rows(saver._conn)


def test_an_open_that_fails_while_keying_leaves_the_file_as_it_was(tmp_path: Path) -> None:
    """The keys are written in the open's transaction: an open that fails after keying some
    tables (here the last, whose update a trigger refuses) leaves the schema 11 file
    untouched, as a process killed mid-transaction would, and the next open keys it all."""
    path = tmp_path / "v11.sqlite"
    shutil.copyfile(GOLDEN / "checkpoints-plain-v11.sqlite", path)
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TRIGGER no_keys BEFORE UPDATE OF thread_id ON leaf_refs "
                     "BEGIN SELECT RAISE(ABORT, 'refused mid-upgrade'); END")
        before = _rows(conn)
    with pytest.raises(CheckpointStoreError, match="refused mid-upgrade"):
        SqliteSaver(path)
    _as_it_was_then_keyed(path, before, then="DROP TRIGGER no_keys")


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_a_process_killed_while_keying_leaves_the_file_as_it_was(tmp_path: Path) -> None:
    """A process SIGKILLed in the middle of the open that keys a schema 11 file (held there
    once it numbered the threads, as it computes their keys) leaves the file as it was;
    the next open keys it all."""
    path = tmp_path / "v11.sqlite"
    shutil.copyfile(GOLDEN / "checkpoints-plain-v11.sqlite", path)
    with sqlite3.connect(path) as conn:
        before = _rows(conn)
    program = textwrap.dedent(f"""
        import sys, time
        from durable_graph.store import sqlite_threads
        def held(number):  # the rows' rewrite calls it: stop there, mid-transaction
            print("keying", flush=True)
            time.sleep(60)
        sqlite_threads.key_bytes = held
        from durable_graph.store.sqlite import SqliteSaver
        SqliteSaver({str(path)!r})
    """)
    proc = subprocess.Popen([sys.executable, "-c", program], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "keying"
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
        if proc.stdout is not None:
            proc.stdout.close()
    _as_it_was_then_keyed(path, before)


@pytest.mark.parametrize("table", KEYED_TABLES)
def test_an_older_release_still_running_cannot_write_a_thread_id(
    tmp_path: Path, table: str
) -> None:
    """What a schema 11 process still running on an upgraded file does on its next commit:
    it writes the thread's id, which the file refuses, so its transaction rolls back and
    nothing of it is stored."""
    path = tmp_path / "c.db"
    with SqliteSaver(path) as saver:
        run_chat(chat_app(saver), "t", 2)
        latest = saver.get_tuple(_cfg("t"))
        assert latest is not None
        saver.put_writes(latest.config, [("x", 1)], "task-1")  # a row in ``writes``
    conn = sqlite3.connect(path)
    (row,) = conn.execute(f"SELECT * FROM {table} LIMIT 1").fetchall()
    columns = ", ".join("?" * len(row))
    count = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    with pytest.raises(sqlite3.IntegrityError, match="thread id written as text.*restart"):
        conn.execute(f"INSERT INTO {table} VALUES ({columns})", ("other", *row[1:]))
    assert conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == count
    conn.close()


def test_a_thread_id_that_is_digits_or_bytes_like_stays_its_own(tmp_path: Path) -> None:
    """A thread id that reads as a number, or as a key would (``"\\x01"``), is only ever
    text in ``thread_keys``: it never meets another thread's rows."""
    with SqliteSaver(tmp_path / "c.db") as saver:
        ids = {t: _put(saver, t, i) for i, t in enumerate(("1", "\x01", "2", "01"))}
        for thread, checkpoint_id in ids.items():
            got = [h.checkpoint.id for h in saver.list(_cfg(thread))]
            assert got == [checkpoint_id], thread
        saver.delete_thread("1")
        assert saver.get_tuple(_cfg("\x01")) is not None
        assert saver.get_tuple(_cfg("1")) is None
