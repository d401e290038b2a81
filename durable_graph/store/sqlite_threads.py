"""Schema 12: a thread in the row tables by a small number, its key.

Until schema 11 every row of ``checkpoints``, ``blobs``, ``writes`` and ``leaf_refs``, and
every entry of ``blobs``' key index, held the thread id as given: a UUID's 36 characters,
about a sixth of a chat's file (15 of its 88 pages over the bench's 200 turns). Schema 12
numbers each thread once in ``thread_keys`` and the ``thread_id`` column of those tables
(``KEYED_TABLES``) holds its key: that number as a blob of its big-endian bytes
(``key_bytes``), one byte for the first 255 threads of a file, two up to 65,535. A blob, as
the column's TEXT affinity would turn an integer into its decimal text, which a thread id
can also be; a blob it keeps as it is, and no release ever wrote a thread id as one.
``thread_keys`` keeps the key beside the number, so SQL joins the two as they are
(``JOIN thread_keys k ON k.key = c.thread_id``). ``threads`` and ``expiry``, a row a
thread, keep the id itself.

A key is looked up in each transaction that uses it (one probe of the table's unique
index: a reader's in the statement that reads the rows, as a scalar subquery), never kept
across transactions: deleting a thread drops its key with its rows,
and ``AUTOINCREMENT`` never gives a number twice, so a key read in one transaction never
names another thread in a later one.

A file of an older schema holds the ids themselves; opening it numbers its threads and
rewrites the column (``key_threads``, in the open's transaction), and a trigger on each
table refuses a thread id written as text from then on: what a process of an older
release still running on the file writes on every commit, which then rolls back loudly
instead of storing rows this release would never find.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

from durable_graph.errors import CheckpointStoreError

__all__ = [
    "KEYED_TABLES",
    "THREAD_IS",
    "THREAD_KEYS_SCHEMA",
    "ThreadKey",
    "add_thread_key",
    "drop_thread_key",
    "key_bytes",
    "key_threads",
    "thread_key",
    "thread_names",
]

ThreadKey = bytes
"""A thread's number in ``thread_keys`` as the row tables keep it (``key_bytes``)."""

KEYED_TABLES = ("checkpoints", "blobs", "writes", "leaf_refs")
"""The tables whose ``thread_id`` column holds the thread's key (schema 12)."""

THREAD_KEYS_SCHEMA = """
CREATE TABLE IF NOT EXISTS thread_keys (
    number INTEGER PRIMARY KEY AUTOINCREMENT,
    thread_id TEXT NOT NULL UNIQUE,
    key BLOB UNIQUE
)
"""

_SCHEMA = 12
"""The schema from which the row tables hold thread keys."""
_KEY = "SELECT key FROM thread_keys WHERE thread_id = ?"
THREAD_IS = f"thread_id = ({_KEY})"
"""SQL: a row table's row is of the thread whose id is bound, its key found in the statement
itself (a scalar subquery, searched once a statement), so the rows carry the key."""


_TEXT_REFUSED = ("a thread id written as text: this file is schema 12 or later, written by a "
                 "newer durable-graph; restart this process with that release")


def _text_refused(table: str) -> str:
    return f"""
CREATE TRIGGER IF NOT EXISTS {table}_thread_keys_only BEFORE INSERT ON {table}
WHEN typeof(NEW.thread_id) != 'blob'
BEGIN
    SELECT RAISE(ABORT, '{_TEXT_REFUSED}');
END
"""


def key_bytes(number: int) -> ThreadKey:
    """A thread's number as its row tables keep it: its big-endian bytes, no leading zero."""
    return number.to_bytes(max(1, (number.bit_length() + 7) // 8), "big")


def thread_key(conn: sqlite3.Connection, thread_id: str) -> ThreadKey | None:
    """The key of ``thread_id`` in ``conn``'s file, None when it has no rows."""
    found = conn.execute(_KEY, (thread_id,)).fetchone()
    return None if found is None else bytes(found[0])


def thread_names(conn: sqlite3.Connection, keys: Iterable[ThreadKey]) -> dict[ThreadKey, str]:
    """The thread id of each of these keys (of rows read in ``conn``'s transaction)."""
    wanted = set(keys)
    found = {bytes(key): thread_id for key, thread_id in conn.execute(
        f"SELECT key, thread_id FROM thread_keys WHERE key IN ({', '.join('?' * len(wanted))})",
        list(wanted))}
    if len(found) < len(wanted):
        raise CheckpointStoreError(
            "checkpoint rows name a thread by a key the file's thread_keys table lacks: the "
            "file was edited or truncated; it cannot be listed")
    return found


def add_thread_key(conn: sqlite3.Connection, thread_id: str) -> ThreadKey:
    """The key of ``thread_id``, numbering it when new (inside the caller's write
    transaction: a thread numbered by a transaction that rolls back never was)."""
    key = thread_key(conn, thread_id)
    if key is not None:
        return key
    number = int(conn.execute("INSERT INTO thread_keys (thread_id) VALUES (?)",
                              (thread_id,)).lastrowid or 0)
    key = key_bytes(number)
    conn.execute("UPDATE thread_keys SET key = ? WHERE number = ?", (key, number))
    return key


def drop_thread_key(conn: sqlite3.Connection, thread_id: str) -> None:
    """Forget ``thread_id``'s key (its rows are deleted: inside the caller's transaction)."""
    conn.execute("DELETE FROM thread_keys WHERE thread_id = ?", (thread_id,))


def key_threads(conn: sqlite3.Connection, version: int) -> None:
    """In a file of schema ``version`` (0 to 11; 0: a new file, or one from before
    versions), number every thread its row tables hold and keep the key in their
    ``thread_id`` column; in every file, refuse a thread id written there as text from now
    on (inside the caller's write transaction, after every other upgrade, which may still
    write ids: a file of schema 12 is not scanned)."""
    if version < _SCHEMA:
        texts = " UNION ".join(f"SELECT thread_id FROM {t} WHERE typeof(thread_id) = 'text'"
                               for t in KEYED_TABLES)
        conn.execute("INSERT OR IGNORE INTO thread_keys (thread_id) "
                     f"SELECT thread_id FROM ({texts}) ORDER BY thread_id")
        conn.create_function("dg_key_bytes", 1, key_bytes, deterministic=True)
        conn.execute("UPDATE thread_keys SET key = dg_key_bytes(number) WHERE key IS NULL")
        for table in KEYED_TABLES:
            conn.execute(
                f"UPDATE {table} SET thread_id = (SELECT k.key FROM thread_keys k "
                f"WHERE k.thread_id = {table}.thread_id) WHERE typeof(thread_id) = 'text'")
    for table in KEYED_TABLES:
        conn.execute(_text_refused(table))
