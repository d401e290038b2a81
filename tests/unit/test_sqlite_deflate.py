"""SQLite value and write rows stored deflated (``sqlite_row.pack_blob``, tag codes 5 to 8).

A value or pending write whose serializer bytes deflate by at least an eighth (with the
LangChain framing as dictionary, ``deflate.squeezed``) is stored so, under a tag code of
its own; everything reads back as written, rows stored before read as they are, and a
garbled stream or a zlib bomb written into the file is refused without inflating it. A
chat's message values keep their leaf references in the deflated value (``leaves``
column ``'v'``), and every retention path gives back exactly what the rows hold.
"""

from __future__ import annotations

import sqlite3
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from durable_graph.errors import CheckpointStoreError, SignatureError
from durable_graph.store.base import empty_checkpoint
from durable_graph.store.deflate import FRAMING, deflated, inflated
from durable_graph.store.sqlite import SqliteSaver
from durable_graph.store.sqlite_leaves import IN_VALUE
from tests.leaf_counts import counted, held_by_rows
from tests.unit.test_leaf_dedup import chat_app, run_chat, signed
from tests.unit.test_store_deflate import ITEM, PROSE, _bomb, log_app

DEFLATED_MSGPACK, PLAIN_MSGPACK, DEFLATED_SIGNED = b"\x05", b"\x01", b"\x08"


def _rows(path: Path, channel: str) -> list[tuple[Any, bytes]]:
    """(type, blob) of a channel's value rows past its first (``log``'s is ``[]``)."""
    conn = sqlite3.connect(path)
    try:
        return [(t, bytes(b)) for t, b in conn.execute(
            "SELECT type, blob FROM blobs WHERE channel = ? ORDER BY version", (channel,))][1:]
    finally:
        conn.close()


def _set(path: Path, sql: str, *args: Any) -> None:
    conn = sqlite3.connect(path)
    try:
        with conn:
            assert conn.execute(sql, args).rowcount >= 1
    finally:
        conn.close()


def _log(path: Path, steps: int = 4, **options: Any) -> dict[str, Any]:
    with SqliteSaver(path, **options) as saver:
        out: dict[str, Any] = log_app(saver, steps).invoke(
            {"log": [], "n": 0}, {"configurable": {"thread_id": "t"}})
    return out


def test_values_deflate_when_it_pays_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "d.db"
    out = _log(path)
    rows = _rows(path, "log")
    assert rows and {t for t, _ in rows} == {DEFLATED_MSGPACK}
    for _, stream in rows:  # 1 KB of random base64 a step: about three quarters of it
        whole = inflated(stream, zdict=FRAMING)
        assert whole is not None and len(stream) * 8 <= len(whole) * 7
    assert {t for t, _ in _rows(path, "n")} == {PLAIN_MSGPACK}  # too short to deflate
    with SqliteSaver(path) as fresh:  # a process that did not write it
        got = fresh.get_tuple({"configurable": {"thread_id": "t"}})
    assert got is not None and got.checkpoint.channel_values["log"] == out["log"]


def test_a_row_stored_before_deflate_still_reads(tmp_path: Path) -> None:
    path = tmp_path / "d.db"
    out = _log(path)
    (_, stream), *_ = _rows(path, "log")
    whole = inflated(stream, zdict=FRAMING)
    _set(path, "UPDATE blobs SET type = ?, blob = ? WHERE blob = ?", PLAIN_MSGPACK, whole,
         stream)
    with SqliteSaver(path) as saver:
        state = log_app(saver, 4).get_state({"configurable": {"thread_id": "t"}})
    assert state.values["log"] == out["log"]


@pytest.mark.parametrize("bad", ["cut", "trailing", "bomb"])
def test_a_garbled_or_bomb_value_row_is_refused_without_inflating_it(
        tmp_path: Path, bad: str) -> None:
    path = tmp_path / "d.db"
    _log(path)
    (_, stream), *_ = _rows(path, "log")
    garbled = {"cut": stream[:-8], "trailing": stream + b"more", "bomb": _bomb()}[bad]
    _set(path, "UPDATE blobs SET blob = ? WHERE blob = ?", garbled, stream)
    with SqliteSaver(path) as saver:
        tracemalloc.start()
        try:
            with pytest.raises(CheckpointStoreError,
                               match="value of channel 'log'.*does not inflate cleanly"):
                saver.get_tuple({"configurable": {"thread_id": "t"}})
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert peak < 40 << 20  # 200 MB if inflated; the bound stops at 16x the stream


def test_pending_writes_deflate_and_a_garbled_one_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "d.db"
    with SqliteSaver(path) as saver:
        config = saver.put({"configurable": {"thread_id": "t", "checkpoint_ns": ""}},
                           empty_checkpoint(), {"step": 0}, {})
        writes = [("messages", [ITEM]), ("note", PROSE), ("n", 7)]
        saver.put_writes(config, writes, "task-1")
        types = dict(saver._conn.execute("SELECT idx, type FROM writes").fetchall())
        assert types == {0: DEFLATED_MSGPACK, 1: DEFLATED_MSGPACK, 2: PLAIN_MSGPACK}
        got = saver.get_tuple(config)
        assert got is not None and [(w.channel, w.value) for w in got.pending_writes] == writes
        with saver._conn:
            saver._conn.execute("UPDATE writes SET blob = ? WHERE idx = 0", (_bomb(),))
        with pytest.raises(CheckpointStoreError,
                           match="pending write task-1:0 .*does not inflate cleanly"):
            saver.get_tuple(config)


def test_a_signed_value_is_checked_on_its_inflated_bytes(tmp_path: Path) -> None:
    """Signed values deflate too (code 8); bytes changed under a valid deflate stream
    reach the signature check and fail it: nothing unsigned is decoded."""
    path = tmp_path / "d.db"
    out = _log(path, serde=signed())
    rows = _rows(path, "log")
    assert {t for t, _ in rows} == {DEFLATED_SIGNED}
    with SqliteSaver(path, serde=signed()) as saver:
        state = log_app(saver, 4).get_state({"configurable": {"thread_id": "t"}})
    assert state.values["log"] == out["log"]
    _, stream = rows[-1]
    whole = inflated(stream, zdict=FRAMING)
    assert whole is not None
    i = whole.index(out["log"][-1][:16].encode())
    other = b"Y" if whole[i:i + 1] == b"X" else b"X"  # one byte changed, whatever it was
    forged = deflated(whole[:i] + other + whole[i + 1:], zdict=FRAMING)
    assert forged is not None
    _set(path, "UPDATE blobs SET blob = ? WHERE blob = ?", forged, stream)
    with SqliteSaver(path, serde=signed()) as saver, pytest.raises(SignatureError):
        saver.get_tuple({"configurable": {"thread_id": "t"}})


def test_a_chats_deflated_values_keep_their_leaf_references(tmp_path: Path) -> None:
    """A message's value row (a new message: its leaf reference and framing) deflates and
    still holds its references in the value; keep_last, prune and deleting every
    checkpoint give back exactly what the rows hold, to nothing."""
    with SqliteSaver(tmp_path / "c.db", keep_last=4) as saver:
        conn = saver._conn
        texts = run_chat(chat_app(saver), "chat", 12)
        assert len(texts) == 12
        kinds = conn.execute("SELECT DISTINCT type FROM blobs WHERE leaves = ?",
                             (IN_VALUE,)).fetchall()
        assert (DEFLATED_MSGPACK,) in kinds
        assert counted(conn) == held_by_rows(conn) and counted(conn)
        saver.prune(["chat"], strategy="keep_latest")
        assert counted(conn) == held_by_rows(conn) and counted(conn)
        saver.delete_checkpoints("chat", "", [c.checkpoint_id for c in saver.list_ids("chat")])
        assert counted(conn) == held_by_rows(conn) == {}


def test_a_garbled_deflated_value_with_references_is_never_taken_to_hold_none(
        tmp_path: Path) -> None:
    """Deleting a row whose references are in its deflated value, when that value no
    longer inflates, is refused and deletes nothing (its leaves are not orphaned)."""
    with SqliteSaver(tmp_path / "c.db") as saver:
        conn = saver._conn
        run_chat(chat_app(saver), "chat", 4)
        (rowid,) = conn.execute("SELECT rowid FROM blobs WHERE leaves = ? AND type = ? LIMIT 1",
                                (IN_VALUE, DEFLATED_MSGPACK)).fetchone()
        with conn:
            conn.execute("UPDATE blobs SET blob = x'ff00ff00' WHERE rowid = ?", (rowid,))
        before = conn.execute("SELECT COUNT(*) FROM blobs").fetchone()
        with pytest.raises(CheckpointStoreError, match="nothing was deleted"):
            saver.delete_checkpoints(
                "chat", "", [c.checkpoint_id for c in saver.list_ids("chat")])
        assert conn.execute("SELECT COUNT(*) FROM blobs").fetchone() == before
