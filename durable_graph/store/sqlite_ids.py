"""Schema 10: a checkpoint's id in the ``checkpoints`` key as its 16 bytes.

Until schema 9 the key held the id as its 36-character text (the parent, since schema 4,
was already 16 bytes: ``sqlite_row.pack_id``): 20 bytes of every checkpoint row, a
sixth of a chat's. Schema 10 keeps a canonical UUID id (every id ``new_checkpoint_id``
makes) as its bytes, and any other id as its text. The bytes of two such ids order as
their texts do (lowercase hex, dashes at the same places), so a thread's history keeps
its order; SQLite orders every text before every blob, so an id that is not a canonical
UUID (one a caller chose) now comes before those, where its text put it before.

A file of an older schema holds text ids; a file must never hold both forms of canonical
ids (a lookup by id, ``before``, and the newest of a thread each take one form), so
opening it rewrites them as bytes (``pack_ids``), in the open's transaction, and puts a
trigger on ``checkpoints`` in place that refuses a canonical id written as text: what a
process of an older release still running on the file writes on every commit, which
then rolls back loudly instead of storing a checkpoint this release would order before
every other.
"""

from __future__ import annotations

import sqlite3

from durable_graph.store.sqlite_row import pack_id

__all__ = ["pack_ids"]

_SCHEMA = 10
"""The schema from which a file's canonical ids are bytes."""
_CANONICAL = "-".join("[0-9a-f]" * n for n in (8, 4, 4, 4, 12))
"""A GLOB matching a canonical UUID's text (the form ``pack_id`` stores as bytes)."""

_TEXT_IDS_REFUSED = f"""
CREATE TRIGGER IF NOT EXISTS checkpoint_ids_as_bytes BEFORE INSERT ON checkpoints
WHEN typeof(NEW.checkpoint_id) = 'text' AND NEW.checkpoint_id GLOB '{_CANONICAL}'
BEGIN
    SELECT RAISE(ABORT, 'a checkpoint id written as text: this file is schema 10 or later,
        written by a newer durable-graph; restart this process with that release');
END
"""


def pack_ids(conn: sqlite3.Connection, version: int) -> None:
    """In a file of schema ``version`` (1 to 9; 0: a new file), rewrite the canonical text
    ids of ``checkpoints`` as bytes; in every file, refuse them as text from now on
    (inside the caller's write transaction; a file of schema 10 is not scanned)."""
    if version < _SCHEMA:
        conn.create_function("dg_pack_id", 1, pack_id, deterministic=True)
        conn.execute(
            "UPDATE checkpoints SET checkpoint_id = dg_pack_id(checkpoint_id) "
            f"WHERE typeof(checkpoint_id) = 'text' AND checkpoint_id GLOB '{_CANONICAL}'")
    conn.execute(_TEXT_IDS_REFUSED)
