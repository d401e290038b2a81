"""The SQLite saver's leaf table (schema 5): large leaves kept once per thread, counted.

``leaves`` holds each large string or bytes leaf (``durable_graph.store.leaves``)
once per thread, with ``refs``: how many rows of ``blobs`` and ``writes`` refer
to it. Each of those rows lists its digests in its ``leaves`` column, so a row
that goes (applied writes, prune, a replaced write slot) gives its references back
and a leaf whose count reaches zero goes with it, in the same transaction; a
thread's deletion or expiry drops its leaves with its other rows. Every statement
here touches only the leaves of the rows it is given: a commit costs what it
changed, not the thread's history.

A leaf's ``data`` is its cell (``deflate.pack_leaf``): its stored bytes
(``leaves.leaf_bytes``), or, when deflate makes them at least an eighth smaller, ``z``
and their raw deflate stream (schema 6), inflated with a bound so a zlib bomb written
into the file is refused without inflating the rest. The first byte tells the forms
apart, so rows written before read as they are; a cell that does not inflate cleanly is
returned as stored and fails its hash check like any altered leaf.

Schema 7 keeps a value row's references in its value alone when they can be read
back from it: the ``leaves`` column is then the one-letter text ``IN_VALUE`` (not NULL:
NULL is "no leaves", as before; a text, so a schema 6 process, which reads the column
as digests, fails on it and rolls back instead of giving nothing back), and a row that
goes gives back what ``digests_in`` finds in its value's bytes (plain msgpack, without
building any object). A row gets that form only when ``digests_in`` gives back exactly
the digests it holds, within ``MAX_NESTING`` extensions, checked as it is written; any
other row (a signed or pickled value, a write, a value nested deeper) lists them as
before. A row of that form whose value no longer gives its references back is refused
(``CheckpointStoreError``), never taken to hold none.

Schema 7 also adds a third cell (``deflate.pack_leaf``): ``B`` and the bytes a text leaf
in canonical base64 stands for (an image or a file sent as a data URL, a tool's binary
output), used only when it is the smallest and reads back byte for byte.

Schema 9 keeps a leaf in two rows: its cell alone in ``leaf_cells`` (a rowid table
appended to in order, so its pages fill), and its key, count and cell number in
``leaf_refs`` (WITHOUT ROWID: its rows are the lookup by (thread, digest)). Until then
one ``leaves`` row kept the thread and the 32-byte digest beside the cell, and a copy
of both in the table's key index: a message of 1 KB of base64 (a cell of 769 bytes)
took a row of 812 bytes, two bytes too many for a fifth to fit a 4 KiB page (four a
page, a fifth of each page free), and more with a longer thread id; a cell row is now about
775 bytes, five a page whatever the thread id. A count changes in the small key row,
not on the cell's page. Opening an older file moves its ``leaves`` rows into the two
tables and DROPs it for a read-only view named ``leaves`` (``split_leaves``), as
schema 8 did with ``chains``: an older release still running on the file reads leaves
through the view and fails on any statement that writes them (its commit rolls back),
and cannot create the table again.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import ormsgpack

from durable_graph.errors import CheckpointStoreError, DurableGraphError
from durable_graph.store.deflate import pack_leaf, unpack_leaf
from durable_graph.store.leaves import pack_digests, unpack_digests
from durable_graph.store.sqlite_row import unpack_blob
from durable_graph.store.sqlite_threads import ThreadKey

__all__ = [
    "IN_VALUE",
    "LEAVES_SCHEMA",
    "MAX_NESTING",
    "add_leaf_columns",
    "delete_releasing",
    "delete_thread_leaves",
    "digests_in",
    "fetch_leaves",
    "hold_leaves",
    "leaf_exists",
    "leaves_column",
    "release_leaves",
    "split_leaves",
]

LEAVES_SCHEMA = """
CREATE TABLE IF NOT EXISTS leaf_refs (
    thread_id TEXT NOT NULL,
    digest BLOB NOT NULL,
    refs INTEGER NOT NULL,
    cell INTEGER NOT NULL,
    PRIMARY KEY (thread_id, digest)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS leaf_cells (data BLOB NOT NULL)
"""
_LEAVES_VIEW = """
CREATE VIEW IF NOT EXISTS leaves (thread_id, digest, refs, data) AS
SELECT r.thread_id, r.digest, r.refs, c.data FROM leaf_refs r
CROSS JOIN leaf_cells c ON c.rowid = r.cell
"""
"""Schemas 5 to 8's ``leaves`` table as a view of the two tables (``split_leaves``),
which reads use too: a key row's primary key, then its cell by rowid."""
_ADD_REF = "UPDATE leaf_refs SET refs = refs + 1 WHERE thread_id = ? AND digest = ?"
_INSERT_CELL = "INSERT INTO leaf_cells (data) VALUES (?)"
_INSERT_REF = "INSERT INTO leaf_refs VALUES (?, ?, ?, ?)"
_RELEASE = "UPDATE leaf_refs SET refs = refs - ? WHERE thread_id = ? AND digest = ?"
_UNHELD = "FROM leaf_refs WHERE thread_id = ? AND digest = ? AND refs <= 0"
_DROP_UNHELD_CELL = f"DELETE FROM leaf_cells WHERE rowid = (SELECT cell {_UNHELD})"
_DROP_UNHELD = f"DELETE {_UNHELD}"
_EXISTS = "SELECT 1 FROM leaf_refs WHERE thread_id = ? AND digest = ?"
_CHUNK = 500  # digests per lookup (SQLite's bound-parameter limit is 999 on old builds)


IN_VALUE = "v"
"""A value row's ``leaves`` column (a TEXT) when its value's bytes hold its references."""
MAX_NESTING = 64
"""Most extensions ``digests_in`` walks into, one inside another (a fixed bound, not
the Python stack's: a row's form never depends on how deep its caller ran)."""
_LEAF_EXT, _UUID_EXT = 14, 8
"""``TypedSerializer``'s extension codes of a ``LeafRef`` (its payload: the digest as
msgpack) and of a UUID (16 raw bytes); every other payload is msgpack."""


def digests_in(stored_tag: str | bytes, stored: bytes) -> list[bytes] | None:
    """The leaf digests a plain msgpack value refers to (in extensions, at most
    ``MAX_NESTING`` deep), or None when its bytes are not such a value, or nest deeper.
    Takes the value as its row stores it (``sqlite_row.pack_blob``: inflated first when
    deflated). No object is built: only digests."""
    try:
        tag, data = unpack_blob(stored_tag, stored, "value")
    except DurableGraphError:  # a code this release lacks, or a stream that does not inflate
        return None
    if tag != "msgpack":
        return None
    found: list[bytes] = []
    depth = 0

    def hook(code: int, payload: bytes) -> None:
        nonlocal depth
        if code == _LEAF_EXT:
            digest = ormsgpack.unpackb(payload)
            if type(digest) is not bytes:
                raise ValueError("not a digest")  # internal signal: not such a value
            found.append(digest)
        elif code != _UUID_EXT:
            if depth >= MAX_NESTING:
                raise ValueError("nested too deep")  # internal signal, as above
            depth += 1
            ormsgpack.unpackb(payload, ext_hook=hook, option=ormsgpack.OPT_NON_STR_KEYS)
            depth -= 1

    try:
        ormsgpack.unpackb(bytes(data), ext_hook=hook, option=ormsgpack.OPT_NON_STR_KEYS)
    except (ValueError, TypeError, RecursionError):  # msgpack's decode error is a ValueError
        return None
    return found


def leaves_column(tag: str | bytes, data: bytes, refs: bytes | None) -> bytes | str | None:
    """A value row's ``leaves`` column: ``IN_VALUE`` when ``digests_in`` reads its
    references ``refs`` (``pack_digests``) back from its bytes exactly, else ``refs``.
    The serializer's tag and bytes (the row's, once inflated, are the same bytes)."""
    if refs is None:
        return None
    found = digests_in(tag, data)
    return IN_VALUE if found is not None and pack_digests(found) == refs else refs


def _held(leaves: bytes | str, tag: bytes | None, data: bytes | None) -> bytes | None:
    """The references a stored row holds: its ``leaves`` column, or for ``IN_VALUE``
    its value's; a row of that form whose value does not give them back is refused."""
    if not isinstance(leaves, str):
        return leaves
    found = digests_in(tag, data) if leaves == IN_VALUE and tag is not None \
        and data is not None else None
    if found is None:
        raise CheckpointStoreError(
            f"a stored value row's leaf references cannot be read back from its value "
            f"(leaves column {leaves!r}): the file was altered, or written by a newer "
            f"release; nothing was deleted")
    return pack_digests(found)


def add_leaf_columns(conn: sqlite3.Connection) -> None:
    """Give ``blobs`` and ``writes`` of a file from before schema 5 their ``leaves`` column."""
    for table in ("blobs", "writes"):
        columns = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
        if "leaves" not in columns:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN leaves BLOB")


def split_leaves(conn: sqlite3.Connection) -> None:
    """Move the rows of a ``leaves`` table (schemas 5 to 8) into ``leaf_cells`` and
    ``leaf_refs``, drop it and put the ``leaves`` view in its place (inside the caller's
    write transaction; after ``LEAVES_SCHEMA``)."""
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'leaves'"
                    ).fetchone() is not None:
        rows = conn.execute("SELECT thread_id, digest, refs, data FROM leaves")
        while batch := rows.fetchmany(_CHUNK):
            for thread_id, digest, refs, cell in batch:
                _insert(conn, thread_id, digest, refs, cell)
        conn.execute("DROP TABLE leaves")
    conn.execute(_LEAVES_VIEW)


def hold_leaves(
    conn: sqlite3.Connection, thread: ThreadKey, digests: bytes | None,
    leaves: Mapping[bytes, bytes],
) -> None:
    """Count one more reference to each leaf a new row lists (storing leaves new here,
    compressed when that pays: ``pack_leaf``; only a leaf not stored yet is compressed)."""
    for digest in unpack_digests(digests):
        if not conn.execute(_ADD_REF, (thread, digest)).rowcount:
            _insert(conn, thread, digest, 1, pack_leaf(leaves[digest]))


def _insert(conn: sqlite3.Connection, thread: ThreadKey | str, digest: bytes, refs: int,
            cell: bytes | str) -> None:
    """Store a leaf: its cell, then its key row naming it."""
    number = conn.execute(_INSERT_CELL, (cell,)).lastrowid
    conn.execute(_INSERT_REF, (thread, digest, refs, number))


def release_leaves(
    conn: sqlite3.Connection, thread: ThreadKey, rows: Iterable[tuple[bytes | None]]
) -> None:
    """Give back the references of deleted rows (their ``leaves`` columns); drop unheld leaves."""
    counts: dict[bytes, int] = {}
    for (packed,) in rows:
        for digest in unpack_digests(packed):
            counts[digest] = counts.get(digest, 0) + 1
    if not counts:
        return
    conn.executemany(_RELEASE, [(n, thread, d) for d, n in counts.items()])
    keys = [(thread, d) for d in counts]
    conn.executemany(_DROP_UNHELD_CELL, keys)
    conn.executemany(_DROP_UNHELD, keys)


def delete_thread_leaves(conn: sqlite3.Connection, thread: ThreadKey) -> None:
    """Delete every leaf of a thread (inside the caller's transaction)."""
    conn.execute("DELETE FROM leaf_cells WHERE rowid IN "
                 "(SELECT cell FROM leaf_refs WHERE thread_id = ?)", (thread,))
    conn.execute("DELETE FROM leaf_refs WHERE thread_id = ?", (thread,))


def delete_releasing(
    conn: sqlite3.Connection, thread: ThreadKey, rows: str, params: Sequence[Any], *,
    with_: str = "",
) -> None:
    """``DELETE FROM {rows}`` (a table and its WHERE clause, after an optional ``WITH``
    clause), giving back the leaf references of the rows it deletes (their ``leaves``
    column, or for ``IN_VALUE`` their value's: ``digests_in``), in the caller's
    transaction. Read first, then deleted: ``DELETE ... RETURNING`` needs SQLite 3.35,
    which older distributions (Debian 11, RHEL 9) do not have."""
    found = conn.execute(
        f"{with_} SELECT leaves, CASE WHEN typeof(leaves) = 'text' THEN type END, "
        f"CASE WHEN typeof(leaves) = 'text' THEN blob END FROM {rows} AND leaves IS NOT NULL",
        params).fetchall()
    release_leaves(conn, thread, [(_held(*row),) for row in found])
    conn.execute(f"{with_} DELETE FROM {rows}", params)


def leaf_exists(conn: sqlite3.Connection, thread: ThreadKey, digest: bytes) -> bool:
    """Whether the thread keeps this leaf."""
    return conn.execute(_EXISTS, (thread, digest)).fetchone() is not None


def fetch_leaves(
    conn: sqlite3.Connection, thread: ThreadKey, digests: Iterable[bytes]
) -> dict[bytes, bytes]:
    """The stored bytes of these leaves of a thread (those found)."""
    wanted = list(digests)
    found: dict[bytes, bytes] = {}
    for i in range(0, len(wanted), _CHUNK):
        chunk = wanted[i:i + _CHUNK]
        marks = ", ".join("?" * len(chunk))
        found.update(  # a text cell (edited by hand) fails its hash check, as bytes
            (bytes(d), unpack_leaf(data) if isinstance(data, bytes) else str(data).encode())
            for d, data in conn.execute(
                f"SELECT digest, data FROM leaves WHERE thread_id = ? AND digest IN ({marks})",
                (thread, *chunk)))
    return found
