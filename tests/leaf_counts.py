"""Leaf counts of a SQLite store against its rows: every leaf's stored ``refs`` must
equal how many value and write rows refer to it, whatever form each row keeps."""

from __future__ import annotations

import sqlite3

from durable_graph.store.leaves import digests_of, unpack_digests
from durable_graph.store.serde import TypedSerializer
from durable_graph.store.sqlite_leaves import IN_VALUE
from durable_graph.store.sqlite_row import unpack_blob


def held_by_rows(conn: sqlite3.Connection) -> dict[tuple[str, bytes], int]:
    """How many value and write rows of a thread refer to each of its leaves: their
    decoded values' digests (``digests_of``; a signed row: its ``leaves`` column, the
    same digests as its signed value's, which needs the row's place to open)."""
    serde = TypedSerializer()
    held: dict[tuple[str, bytes], int] = {}
    for table in ("blobs", "writes"):
        for thread, tag, blob, packed in conn.execute(
                f"SELECT thread_id, type, blob, leaves FROM {table} WHERE leaves IS NOT NULL"):
            if packed != IN_VALUE:
                digests = set(unpack_digests(packed))
            else:
                digests = digests_of(serde.loads_typed(unpack_blob(tag, blob, table)))
            for digest in digests:
                held[thread, digest] = held.get((thread, digest), 0) + 1
    return held


def counted(conn: sqlite3.Connection) -> dict[tuple[str, bytes], int]:
    """Each leaf's stored count, by (thread, digest), once every stored cell is checked
    to belong to exactly one key row and every key row to name a stored cell (schema 9:
    ``leaf_cells`` and ``leaf_refs``): no cell left behind, none shared, none missing."""
    cells = sorted(n for (n,) in conn.execute("SELECT rowid FROM leaf_cells"))
    named = sorted(n for (n,) in conn.execute("SELECT cell FROM leaf_refs"))
    assert cells == named, f"leaf cells {cells} but key rows naming {named}"
    return {(t, bytes(d)): n for t, d, n in conn.execute(
        "SELECT thread_id, digest, refs FROM leaf_refs")}
