"""Schema 11: a checkpoint's parent stored as "the checkpoint before it", when it is.

A thread's checkpoints almost all extend the one before them, so a row's 16-byte parent
id (``sqlite_row.pack_id``) nearly always repeats the key of the row before it in its
thread and namespace. Schema 11 stores that parent as ``PREVIOUS`` (an empty blob, no
id's form: NULL is "no parent", an id is 16 bytes or a text) and reads it back as the id
of the row before; any other parent (a fork's, or one whose rows were deleted) is stored
as before. A signed record signs the parent's id, never the mark, so a reader checks the
parent it resolved.

The row before must stay the parent: the triggers (``PARENT_TRIGGERS``) write the id
into the next row before a row is deleted or another inserted in between, for every
writer of the file (an older release's prune and a hand edit in the ``sqlite3`` shell
too). A thread's own checkpoints are only ever appended by this saver (ids grow with
time); an insert in between is a late commit from another process, or a copy.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

from durable_graph.errors import CheckpointStoreError
from durable_graph.store.sqlite_row import pack_id, unpack_id
from durable_graph.store.sqlite_threads import ThreadKey

__all__ = ["PARENT_OF", "PARENT_TRIGGERS", "PREVIOUS", "previous_rows", "resolve_parent",
           "stored_parent"]

PREVIOUS = b""
"""A stored parent: the checkpoint before this one in its thread and namespace."""

_BEFORE = """
SELECT checkpoint_id FROM checkpoints WHERE thread_id = ? AND checkpoint_ns = ?
AND checkpoint_id < ? ORDER BY checkpoint_id DESC LIMIT 1
"""


PARENT_OF = (
    "CASE WHEN c.parent_id = x'' THEN (SELECT p.checkpoint_id FROM checkpoints p "
    "WHERE p.thread_id = c.thread_id AND p.checkpoint_ns = c.checkpoint_ns "
    "AND p.checkpoint_id < c.checkpoint_id ORDER BY p.checkpoint_id DESC LIMIT 1) "
    "ELSE c.parent_id END")
"""SQL: the stored parent id of the checkpoint row ``c``, the mark resolved."""


def _next_row(r: str) -> str:
    """SQL: the row after row ``r`` (a trigger's OLD or NEW) in its thread and namespace,
    when it names the row before it as its parent."""
    return (f"thread_id = {r}.thread_id AND checkpoint_ns = {r}.checkpoint_ns "
            "AND checkpoint_id = (SELECT min(n.checkpoint_id) FROM checkpoints n "
            f"WHERE n.thread_id = {r}.thread_id AND n.checkpoint_ns = {r}.checkpoint_ns "
            f"AND n.checkpoint_id > {r}.checkpoint_id) AND parent_id = x''")


PARENT_TRIGGERS = (
    "CREATE TRIGGER IF NOT EXISTS parent_kept_on_delete BEFORE DELETE ON checkpoints BEGIN "
    f"UPDATE checkpoints SET parent_id = OLD.checkpoint_id WHERE {_next_row('OLD')}; END",
    "CREATE TRIGGER IF NOT EXISTS parent_kept_on_insert BEFORE INSERT ON checkpoints BEGIN "
    "UPDATE checkpoints SET parent_id = (SELECT max(b.checkpoint_id) FROM checkpoints b "
    "WHERE b.thread_id = NEW.thread_id AND b.checkpoint_ns = NEW.checkpoint_ns "
    f"AND b.checkpoint_id <= NEW.checkpoint_id) WHERE {_next_row('NEW')}; END",
)
"""Before a row is deleted, the row after it that names it as ``PREVIOUS`` gets its id;
before a row is inserted, the row after it that names the row before as ``PREVIOUS``
gets that row's id (the new row's own when it replaces a row of the same id)."""


def stored_parent(conn: sqlite3.Connection, place: tuple[ThreadKey, str], stored_id: str | bytes,
                  parent_id: str | None) -> str | bytes | None:
    """How a new row at ``stored_id`` keeps ``parent_id``: ``PREVIOUS`` when the row
    before it is that parent, else its id (``pack_id``)."""
    if parent_id is None:
        return None
    packed = pack_id(parent_id)
    found = conn.execute(_BEFORE, (*place, stored_id)).fetchone()
    return PREVIOUS if found is not None and found[0] == packed else packed


def resolve_parent(conn: sqlite3.Connection, place: tuple[ThreadKey, str], stored_id: str | bytes,
                   stored: str | bytes | None,
                   known: Mapping[tuple[ThreadKey, str, str | bytes], str | bytes] | None = None,
                   ) -> str | bytes | None:
    """The parent a row keeps (``stored``) as ids are stored (``pack_id``): for
    ``PREVIOUS`` the id of the row before it, from ``known`` (``previous_rows``) when it
    has the row, else looked up."""
    if stored != PREVIOUS:
        return stored
    before = (known or {}).get((*place, stored_id))
    if before is None:
        found = conn.execute(_BEFORE, (*place, stored_id)).fetchone()
        if found is None:
            raise CheckpointStoreError(
                f"checkpoint {unpack_id(stored_id)} names the checkpoint before it as its "
                "parent, but its thread has none stored: the file was edited by hand")
        before = found[0]
    return before


def previous_rows(
    rows: Sequence[Sequence[Any]],
) -> dict[tuple[ThreadKey, str, str | bytes], str | bytes]:
    """For rows whose first columns are (thread key, namespace, stored id), read newest
    first in that order (a listing's page: every row of a namespace between two of its
    rows is there too), the stored id of the row before each one that has it in ``rows``."""
    newest: dict[tuple[ThreadKey, str], str | bytes] = {}
    out: dict[tuple[ThreadKey, str, str | bytes], str | bytes] = {}
    for row in reversed(rows):
        place = (row[0], row[1])
        if place in newest:
            out[(*place, row[2])] = newest[place]
        newest[place] = row[2]
    return out
