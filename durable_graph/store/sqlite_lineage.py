"""The SQLite saver's row chains (schema 6): a checkpoint row resolved through its parents.

A step changes a few channels, so a checkpoint row written right after its parent
keeps only what changed against the parent's versions and versions seen
(``sqlite_row.diff_row``), at most ``ROW_CHAIN`` rows back to a whole row. Reading a
row walks its parents (primary-key lookups, each record verified with a signing
serializer, as its own signature covers only its own fields) and applies the diffs
oldest first: a read costs at most ``ROW_CHAIN`` lookups at any history length.

A row that stays must never resolve through a row that goes: before checkpoints are
deleted (prune, ``keep_last``, ``delete_checkpoints``) or replaced, ``store_whole``
rewrites each remaining diff row whose parent goes as a whole row (same versions,
re-signed), so no chain is ever broken.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping
from typing import Any

from durable_graph.errors import CheckpointStoreError
from durable_graph.store.encoding import ThreadCodec
from durable_graph.store.sqlite_row import (
    ROW_CHAIN,
    apply_diff,
    is_diff,
    pack_id,
    pack_seen_by,
    pack_versions,
    unpack_id,
    unpack_seen,
    unpack_versions,
)

__all__ = ["CP_COLUMNS", "Maps", "Row", "record_fields", "resolve_maps", "store_whole",
           "whole_columns"]

CP_COLUMNS = (
    "thread_id, checkpoint_ns, checkpoint_id, parent_id, ts, "
    "channel_versions, versions_seen, metadata, v, sig"
)
Row = tuple[Any, ...]
Maps = tuple[dict[str, Any], dict[str, Any]]
"""A checkpoint's whole channel versions and versions seen."""

_ROW = f"""
SELECT {CP_COLUMNS} FROM checkpoints WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id = ?
"""
_CHUNK = 400  # ids per lookup (SQLite's bound-parameter limit is 999 on old builds)


def record_fields(row: Row) -> dict[str, Any]:
    """What a record's signature covers: every column but the place and the signature."""
    return dict(zip(("parent", "ts", "versions", "seen", "metadata", "v"), row[3:9], strict=True))


def resolve_maps(
    conn: sqlite3.Connection, tc: ThreadCodec, row: Row,
    known: Mapping[tuple[Any, ...], Maps] | None = None,
) -> Maps:
    """A row's whole versions and versions seen, through its parents if it is a diff
    (``known``: rows already resolved and verified, by (thread, namespace, id))."""
    chain = [row]
    maps: Maps | None = None
    while is_diff(chain[-1][5]):
        thread_id, ns, checkpoint_id, parent = chain[-1][:4]
        parent_id = unpack_id(parent)
        if known and (thread_id, ns, parent_id) in known:
            maps = known[(thread_id, ns, parent_id)]
            break
        found = None if parent_id is None else conn.execute(
            _ROW, (thread_id, ns, parent_id)).fetchone()
        if found is None or len(chain) > ROW_CHAIN:
            raise CheckpointStoreError(
                f"checkpoint {checkpoint_id} of thread {thread_id!r} keeps its versions as a "
                "change to its parent's, and the parent is missing: the file was edited or "
                "damaged. Restore it from a backup.")
        tc.check_record(found[2], record_fields(found), found[9])
        chain.append(found)
    if maps is None:  # the chain's oldest row is whole
        versions = unpack_versions(chain[-1][5])
        maps = (versions, unpack_seen(chain[-1][6], versions))
        chain.pop()
    for link in reversed(chain):
        maps = apply_diff(link[5], link[6], maps)
    return maps


def whole_columns(maps: Maps, versions_text: str) -> tuple[str | bytes, str | bytes]:
    """The versions and versions-seen columns of a whole row."""
    return pack_versions(maps[0], versions_text), pack_seen_by(maps[1], maps[0])


def store_whole(
    conn: sqlite3.Connection, tc: ThreadCodec, scope: tuple[str, str], ids: Iterable[str]
) -> None:
    """Before the rows ``ids`` of a namespace go (or are replaced): every other row of it
    whose versions are a diff against one of them is rewritten whole, and re-signed."""
    going = list(dict.fromkeys(ids))
    doomed = set(going)
    children: list[Row] = []
    for i in range(0, len(going), _CHUNK):
        chunk = [pack_id(cid) for cid in going[i:i + _CHUNK]]
        marks = ", ".join("?" * len(chunk))
        children += conn.execute(
            f"SELECT {CP_COLUMNS} FROM checkpoints WHERE thread_id = ? AND checkpoint_ns = ? "
            f"AND parent_id IN ({marks})", (*scope, *chunk)).fetchall()
    rewrites = []
    for row in children:
        if row[2] in doomed or not is_diff(row[5]):
            continue
        maps = resolve_maps(conn, tc, row)
        text = json.dumps(maps[0], separators=(",", ":"), sort_keys=True)
        whole = (*row[:5], *whole_columns(maps, text), *row[7:9], None)
        rewrites.append((*whole[5:7], tc.sign_record(row[2], record_fields(whole)), *row[:3]))
    conn.executemany(
        "UPDATE checkpoints SET channel_versions = ?, versions_seen = ?, sig = ? "
        "WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id = ?", rewrites)
