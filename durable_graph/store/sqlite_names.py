"""The SQLite saver's name table (schema 7): channel and node names as small integers.

A checkpoint row names every channel of its versions, and the nodes of its versions
seen, in full: at schema 6 about 40 of its 200 bytes. Schema 7 numbers each name once
per file in ``names`` and a row refers to the number (``sqlite_row``'s named forms).

A name's number never changes and is never reused (names are never deleted: a few
bytes each, and a graph has a handful), so a number read once can be kept for the
life of the connection, in any process. One exception: a name added by a transaction
that rolls back never existed, and another process may give its number to another
name; ``forget`` (called by the saver on every rollback) drops what this table
learned, and it is learned again from the file.

A row's signature covers the names its numbers stand for (``SqliteSaver`` signs the
decoded versions of a named row), so a name table edited in the file fails the
signature of every signed row that uses it.
"""

from __future__ import annotations

import sqlite3

from durable_graph.errors import CheckpointStoreError

__all__ = ["NAMES_SCHEMA", "NameTable"]

NAMES_SCHEMA = """
CREATE TABLE IF NOT EXISTS names (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
)
"""


class NameTable:
    """What this process learned of a file's ``names`` table, both ways."""

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}
        self._names: dict[int, str] = {}

    def id_of(self, conn: sqlite3.Connection, name: str) -> int:
        """The number of ``name``, adding it (inside the caller's write transaction)."""
        known = self._ids.get(name)
        if known is not None:
            return known
        conn.execute("INSERT OR IGNORE INTO names (name) VALUES (?)", (name,))
        (number,) = conn.execute("SELECT id FROM names WHERE name = ?", (name,)).fetchone()
        self._learn(int(number), name)
        return int(number)

    def name_of(self, conn: sqlite3.Connection, number: int) -> str:
        """The name numbered ``number``; CheckpointStoreError when the file lacks it."""
        known = self._names.get(number)
        if known is not None:
            return known
        found = conn.execute("SELECT name FROM names WHERE id = ?", (number,)).fetchone()
        if found is None or not isinstance(found[0], str):
            raise _missing(number)
        self._learn(number, found[0])
        return found[0]

    def cached(self, number: int) -> str:
        """The name numbered ``number`` as learned (``load``), for SQL functions."""
        try:
            return self._names[number]
        except KeyError:
            raise _missing(number) from None

    def load(self, conn: sqlite3.Connection) -> None:
        """Learn every name of the file (before SQL that decodes many rows)."""
        for number, name in conn.execute("SELECT id, name FROM names"):
            self._learn(int(number), name)

    def forget(self) -> None:
        """Drop everything learned (a transaction rolled back: its names never existed)."""
        self._ids.clear()
        self._names.clear()

    def _learn(self, number: int, name: str) -> None:
        self._ids[name] = number
        self._names[number] = name


def _missing(number: int) -> CheckpointStoreError:
    return CheckpointStoreError(
        f"a checkpoint row refers to name number {number!r}, which the file's names "
        "table lacks: the file was edited or truncated; it cannot be read")
