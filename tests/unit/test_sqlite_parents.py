"""SQLite schema 11: a parent that is the checkpoint before its child stored as a mark.

Every parent reads back as the id it was written with, whatever is deleted or inserted
around it afterwards, by this saver, an older release or a hand edit: the triggers write
the id into the next row first. A signed record signs the parent's id, not the mark.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from durable_graph.errors import SignatureError
from durable_graph.store.base import Checkpoint, new_checkpoint_id
from durable_graph.store.retention import copy_thread
from durable_graph.store.sqlite import SqliteSaver
from durable_graph.store.sqlite_parents import PREVIOUS
from durable_graph.store.sqlite_row import pack_id
from tests.unit.test_leaf_dedup import chat_app, run_chat, signed

CFG = {"configurable": {"thread_id": "t"}}


def _parents(saver: SqliteSaver) -> dict[str, str | None]:
    """Each checkpoint's parent id as ``list`` reads it, and as ``list_ids`` does."""
    listed = {c.checkpoint.id: (c.parent_config or {}).get("configurable", {}).get(
        "checkpoint_id") for c in saver.list(CFG)}
    assert {r.checkpoint_id: r.parent_id for r in saver.list_ids("t")} == listed
    return listed


def _stored_parents(conn: sqlite3.Connection) -> list[Any]:
    return [p for (p,) in conn.execute("SELECT parent_id FROM checkpoints ORDER BY checkpoint_id")]


def test_a_chat_stores_each_parent_as_the_mark_and_reads_it_back(tmp_path: Path) -> None:
    with SqliteSaver(tmp_path / "c.db") as saver:
        run_chat(chat_app(saver), "t", 4)
        stored = _stored_parents(saver._conn)
        assert stored[0] is None and stored[1:] == [PREVIOUS] * (len(stored) - 1)
        ids = [c.checkpoint.id for c in saver.list(CFG)]
        assert _parents(saver) == dict(zip(ids, [*ids[1:], None], strict=True))


def test_parents_survive_deleting_checkpoints_by_any_writer(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    with SqliteSaver(path) as saver:
        run_chat(chat_app(saver), "t", 5)
        written = _parents(saver)
        ids = list(written)  # newest first
        saver.delete_checkpoints("t", "", [ids[3], ids[4]])
        assert _parents(saver) == {i: p for i, p in written.items() if i not in ids[3:5]}
    hand = sqlite3.connect(path)  # an older release's prune, or the sqlite3 shell
    hand.execute("DELETE FROM checkpoints WHERE checkpoint_id = ?", (pack_id(ids[7]),))
    hand.commit()
    hand.close()
    with SqliteSaver(path, keep_last=3) as saver:
        kept = {i: p for i, p in written.items() if i not in (*ids[3:5], ids[7])}
        assert _parents(saver) == kept
        run_chat(chat_app(saver), "t", 1, start=5)  # a commit trims to the newest 3
        newest = list(_parents(saver))
        assert len(newest) == 3 and _parents(saver)[newest[-1]] == ids[0]
        assert _stored_parents(saver._conn)[0] == pack_id(ids[0])  # written out


def _put(saver: SqliteSaver, checkpoint_id: str, parent: str | None, source: str) -> None:
    cp = Checkpoint(id=checkpoint_id, ts="2026-01-01T00:00:00+00:00",
                    channel_values={"n": 1}, channel_versions={"n": 1}, versions_seen={})
    conf: dict[str, Any] = {"thread_id": "t", "checkpoint_ns": ""}
    if parent:
        conf["checkpoint_id"] = parent
    saver.put({"configurable": conf}, cp, {"source": source, "step": 1}, {"n": 1})


def test_a_row_inserted_between_a_child_and_its_parent_leaves_the_parent(
    tmp_path: Path,
) -> None:
    """A late commit (another process's older id) lands between a row and its parent:
    the row keeps its parent; the late one, extending the same parent, gets the mark."""
    with SqliteSaver(tmp_path / "c.db") as saver:
        first = new_checkpoint_id()
        late = new_checkpoint_id(first)
        third = new_checkpoint_id(late)
        _put(saver, first, None, "input")
        _put(saver, third, first, "loop")
        assert _stored_parents(saver._conn) == [None, PREVIOUS]
        _put(saver, late, first, "fork")
        assert _stored_parents(saver._conn) == [None, PREVIOUS, pack_id(first)]
        assert _parents(saver) == {third: first, late: first, first: None}
        _put(saver, late, first, "fork")  # the same commit again (a redelivery)
        assert _parents(saver) == {third: first, late: first, first: None}


def test_a_fork_keeps_its_parent_id(tmp_path: Path) -> None:
    with SqliteSaver(tmp_path / "c.db") as saver:
        app = chat_app(saver)
        run_chat(app, "t", 2)
        old = [c.config for c in saver.list(CFG)][2]
        forked = app.update_state(old, {"messages": []})
        assert _parents(saver)[forked["configurable"]["checkpoint_id"]] \
            == old["configurable"]["checkpoint_id"]
        assert _stored_parents(saver._conn)[-1] == pack_id(old["configurable"]["checkpoint_id"])


def test_a_signed_record_signs_the_parent_id_not_the_mark(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    with SqliteSaver(path, serde=signed()) as saver:
        run_chat(chat_app(saver), "t", 2)
        ids = list(_parents(saver))
    conn = sqlite3.connect(path)
    # a fork's explicit parent edited into the mark: the row before is not that parent
    conn.execute("UPDATE checkpoints SET parent_id = ? WHERE checkpoint_id = ?",
                 (pack_id(ids[3]), pack_id(ids[0])))
    conn.commit()
    with SqliteSaver(path, serde=signed()) as saver, pytest.raises(SignatureError):
        saver.get_tuple(CFG)
    conn.execute("UPDATE checkpoints SET parent_id = x'' WHERE checkpoint_id = ?",
                 (pack_id(ids[0]),))  # back to the mark: the row before is its parent
    conn.commit()
    conn.close()
    with SqliteSaver(path, serde=signed()) as saver:
        got = saver.get_tuple(CFG)
        assert got is not None and got.parent_config is not None
        assert got.parent_config["configurable"]["checkpoint_id"] == ids[1]


def test_parents_read_back_across_pages_namespaces_and_threads(tmp_path: Path) -> None:
    """A listing reads the parent of each row from the row after it in its page when the
    page has it (``previous_rows``), else looks it up: across page boundaries (100 rows),
    two interleaved namespaces and, listing every thread, a copy with the same ids."""
    with SqliteSaver(tmp_path / "c.db") as saver:
        expected: dict[tuple[str, str], str | None] = {}
        last: dict[str, str | None] = {"": None, "sub:1": None}
        for i in range(250):
            ns = "sub:1" if i % 3 == 2 else ""
            cid = new_checkpoint_id()
            cp = Checkpoint(id=cid, ts="2026-01-01T00:00:00+00:00", channel_values={"n": i},
                            channel_versions={"n": i + 1}, versions_seen={})
            conf: dict[str, Any] = {"thread_id": "t", "checkpoint_ns": ns}
            if last[ns]:
                conf["checkpoint_id"] = last[ns]
            saver.put({"configurable": conf}, cp, {"source": "loop", "step": i}, {"n": i + 1})
            expected[ns, cid] = last[ns]
            last[ns] = cid
        assert _stored_parents(saver._conn).count(PREVIOUS) == 248
        copy_thread(saver, "t", "u")

        def parents(config: dict[str, Any] | None) -> dict[tuple[str, str, str], str | None]:
            return {(c.config["configurable"]["thread_id"], c.config["configurable"][
                "checkpoint_ns"], c.checkpoint.id): (c.parent_config or {}).get(
                "configurable", {}).get("checkpoint_id") for c in saver.list(config)}

        want = {("t", ns, cid): p for (ns, cid), p in expected.items()}
        assert parents({"configurable": {"thread_id": "t"}}) == want
        assert parents({"configurable": {"thread_id": "t", "checkpoint_ns": "sub:1"}}) == {
            k: p for k, p in want.items() if k[1] == "sub:1"}
        assert parents(None) == {**want, **{("u", ns, cid): p for (_, ns, cid), p in want.items()}}
        newest = saver.get_tuple({"configurable": {"thread_id": "u", "checkpoint_ns": ""}})
        assert newest is not None and newest.parent_config is not None
        assert newest.parent_config["configurable"]["checkpoint_id"] == expected["", last[""]]
