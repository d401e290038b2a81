"""SqliteSaver's retention in SQL: deleting threads and checkpoints, and TTL purges.

Every function runs inside the caller's write transaction. Deleting checkpoints keeps
every value a kept checkpoint reads, directly or as a link of its delta chain
(``_LIVE_VALUES``), and gives back the leaves of the rows that go (``sqlite_leaves``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from durable_graph.store.sqlite_leaves import delete_releasing, delete_thread_leaves
from durable_graph.store.sqlite_links import LIVE_LINKS
from durable_graph.store.sqlite_names import NameTable
from durable_graph.store.sqlite_parents import PARENT_OF
from durable_graph.store.sqlite_row import pack_id
from durable_graph.store.sqlite_threads import (
    KEYED_TABLES,
    ThreadKey,
    drop_thread_key,
    thread_key,
)

__all__ = [
    "BEYOND_KEEP",
    "DUE",
    "EXISTS",
    "LATEST",
    "delete_ids",
    "delete_thread_rows",
    "pruned",
    "purge",
]

_OWN_ROW_TABLES = ("threads", "expiry")
"""The tables with a row a thread, by its id (``expiry``: its own TTL and when it
expires); the rest hold its key (``sqlite_threads.KEYED_TABLES``)."""

# Threads whose TTL ran out (the partial index keeps this one probe), the newest
# checkpoint of a namespace, whether one is stored, whether a newer one is, and those
# beyond ``keep_last``: ids as stored (``sqlite_row.pack_id``), read back with ``unpack_id``.
LATEST = """
SELECT checkpoint_id FROM checkpoints WHERE thread_id = ? AND checkpoint_ns = ?
ORDER BY checkpoint_id DESC LIMIT 1
"""
EXISTS = """
SELECT 1 FROM checkpoints WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id = ?
"""
_NEWER = """
SELECT 1 FROM checkpoints WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id > ? LIMIT 1
"""
BEYOND_KEEP = """
SELECT checkpoint_id FROM checkpoints WHERE thread_id = ? AND checkpoint_ns = ?
ORDER BY checkpoint_id DESC LIMIT -1 OFFSET ?
"""
DUE = "SELECT thread_id FROM expiry WHERE expires_at <= ?"

# Values that no remaining checkpoint of a namespace reads (after deleting some),
# directly or as a link of the delta chain of a value it reads (schema 8: the link in
# the value row, ``sqlite_links``).
# NOT IN (not a correlated NOT EXISTS): SQLite indexes the live set once, so a
# keep_last commit costs O(values) instead of O(values x live values).
_LIVE_VALUES = f"""
WITH RECURSIVE live(channel, version) AS (
    SELECT cv.key, cv.value
    FROM checkpoints c, json_each(dg_versions(c.channel_versions, c.checkpoint_id, {PARENT_OF})) cv
    WHERE c.thread_id = ?1 AND c.checkpoint_ns = ?2
    UNION {LIVE_LINKS}
)
"""
_UNREAD_BLOBS = """
blobs WHERE thread_id = ?1 AND checkpoint_ns = ?2
    AND (channel, version) NOT IN (SELECT channel, version FROM live)
"""


def delete_thread_rows(conn: sqlite3.Connection, thread_id: str) -> None:
    """Delete every row of a thread, and its key (inside the caller's transaction)."""
    key = thread_key(conn, thread_id)
    if key is not None:
        delete_thread_leaves(conn, key)  # the cells, found through their key rows
        for table in KEYED_TABLES:
            conn.execute(f"DELETE FROM {table} WHERE thread_id = ?", (key,))
        drop_thread_key(conn, thread_id)
    for table in _OWN_ROW_TABLES:
        conn.execute(f"DELETE FROM {table} WHERE thread_id = ?", (thread_id,))


def purge(conn: sqlite3.Connection, now: float) -> None:
    """Delete every thread whose TTL ran out by ``now`` (inside the caller's transaction)."""
    for (thread_id,) in conn.execute(DUE, (now,)).fetchall():
        delete_thread_rows(conn, thread_id)


def pruned(conn: sqlite3.Connection, thread: ThreadKey, ns: str, checkpoint_id: str) -> bool:
    """Whether the checkpoint is gone while a newer one is stored (pruned or deleted);
    a checkpoint not stored yet is newer than all of them. SQLite compares the ids as
    stored (``sqlite_row.pack_id``: text before bytes)."""
    stored = pack_id(checkpoint_id)
    return conn.execute(_NEWER, (thread, ns, stored)).fetchone() is not None \
        and conn.execute(EXISTS, (thread, ns, stored)).fetchone() is None


def delete_ids(conn: sqlite3.Connection, scope: tuple[ThreadKey, str], ids: Sequence[str],
                names: NameTable) -> None:
    """Delete checkpoints of one namespace, their writes, and values nothing kept reads
    (``_LIVE_VALUES`` decodes the versions of the rows kept: ``names`` learns them all)."""
    names.load(conn)
    for checkpoint_id in ids:
        conn.execute(
            "DELETE FROM checkpoints WHERE thread_id = ? AND checkpoint_ns = ? "
            "AND checkpoint_id = ?", (*scope, pack_id(checkpoint_id)))
        delete_releasing(conn, scope[0], "writes WHERE thread_id = ? AND checkpoint_ns = ? "
                         "AND checkpoint_id = ?", (*scope, checkpoint_id))
    delete_releasing(conn, scope[0], _UNREAD_BLOBS, scope, with_=_LIVE_VALUES)
