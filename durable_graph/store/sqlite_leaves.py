"""The SQLite saver's leaf table (schema 5): large leaves kept once per thread, counted.

``leaves`` holds each large string or bytes leaf (``durable_graph.store.leaves``)
once per thread, with ``refs``: how many rows of ``blobs`` and ``writes`` refer
to it. Each of those rows lists its digests in its ``leaves`` column, so a row
that goes (applied writes, prune, a replaced write slot) gives its references back
and a leaf whose count reaches zero goes with it, in the same transaction; a
thread's deletion or expiry drops its leaves with its other rows. Every statement
here touches only the leaves of the rows it is given: a commit costs what it
changed, not the thread's history.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from durable_graph.store.leaves import unpack_digests

__all__ = [
    "LEAVES_SCHEMA",
    "add_leaf_columns",
    "delete_releasing",
    "fetch_leaves",
    "hold_leaves",
    "leaf_exists",
    "release_leaves",
]

LEAVES_SCHEMA = """
CREATE TABLE IF NOT EXISTS leaves (
    thread_id TEXT NOT NULL,
    digest BLOB NOT NULL,
    refs INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (thread_id, digest)
) WITHOUT ROWID
"""
_HOLD = """
INSERT INTO leaves VALUES (?, ?, 1, ?)
ON CONFLICT (thread_id, digest) DO UPDATE SET refs = refs + 1
"""
_RELEASE = "UPDATE leaves SET refs = refs - ? WHERE thread_id = ? AND digest = ?"
_DROP_UNHELD = "DELETE FROM leaves WHERE thread_id = ? AND digest = ? AND refs <= 0"
_EXISTS = "SELECT 1 FROM leaves WHERE thread_id = ? AND digest = ?"
_CHUNK = 500  # digests per lookup (SQLite's bound-parameter limit is 999 on old builds)


def add_leaf_columns(conn: sqlite3.Connection) -> None:
    """Give ``blobs`` and ``writes`` of a file from before schema 5 their ``leaves`` column."""
    for table in ("blobs", "writes"):
        columns = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
        if "leaves" not in columns:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN leaves BLOB")


def hold_leaves(
    conn: sqlite3.Connection, thread_id: str, digests: bytes | None, leaves: Mapping[bytes, bytes]
) -> None:
    """Count one more reference to each leaf a new row lists (storing leaves new here)."""
    conn.executemany(_HOLD, [(thread_id, d, leaves[d]) for d in unpack_digests(digests)])


def release_leaves(
    conn: sqlite3.Connection, thread_id: str, rows: Iterable[tuple[bytes | None]]
) -> None:
    """Give back the references of deleted rows (their ``leaves`` columns); drop unheld leaves."""
    counts: dict[bytes, int] = {}
    for (packed,) in rows:
        for digest in unpack_digests(packed):
            counts[digest] = counts.get(digest, 0) + 1
    if not counts:
        return
    conn.executemany(_RELEASE, [(n, thread_id, d) for d, n in counts.items()])
    conn.executemany(_DROP_UNHELD, [(thread_id, d) for d in counts])


def delete_releasing(
    conn: sqlite3.Connection, thread_id: str, rows: str, params: Sequence[Any], *, with_: str = ""
) -> None:
    """``DELETE FROM {rows}`` (a table and its WHERE clause, after an optional ``WITH``
    clause), giving back the leaf references of the rows it deletes, in the caller's
    transaction. Read first, then deleted: ``DELETE ... RETURNING`` needs SQLite 3.35,
    which older distributions (Debian 11, RHEL 9) do not have."""
    release_leaves(conn, thread_id, conn.execute(
        f"{with_} SELECT leaves FROM {rows} AND leaves IS NOT NULL", params).fetchall())
    conn.execute(f"{with_} DELETE FROM {rows}", params)


def leaf_exists(conn: sqlite3.Connection, thread_id: str, digest: bytes) -> bool:
    """Whether the thread keeps this leaf."""
    return conn.execute(_EXISTS, (thread_id, digest)).fetchone() is not None


def fetch_leaves(
    conn: sqlite3.Connection, thread_id: str, digests: Iterable[bytes]
) -> dict[bytes, bytes]:
    """The stored bytes of these leaves of a thread (those found)."""
    wanted = list(digests)
    found: dict[bytes, bytes] = {}
    for i in range(0, len(wanted), _CHUNK):
        chunk = wanted[i:i + _CHUNK]
        marks = ", ".join("?" * len(chunk))
        found.update(  # a text cell (edited by hand) fails its hash check, as bytes
            (bytes(d), data if isinstance(data, bytes) else str(data).encode())
            for d, data in conn.execute(
                f"SELECT digest, data FROM leaves WHERE thread_id = ? AND digest IN ({marks})",
                (thread_id, *chunk)))
    return found
