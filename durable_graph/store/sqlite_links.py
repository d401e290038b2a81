"""Schema 8: a delta's link to its base kept in its own ``blobs`` row (the ``link`` column).

Schemas 3 to 7 kept each delta's link (its base version and its depth) in a table of
its own, ``chains``: a row of about 32 bytes a delta, its key a copy of the value row's.
Schema 8 keeps it in the value row, in one column:

- ``(version - base) << 8 | depth`` (an INTEGER, 6 bytes for the usual versions, whose
  high bits are the step: ``sqlite_named.own_version``) when both versions are
  integers, the base below the version by less than 2**47, and the depth below 256;
- else the JSON text ``[base, depth]`` (a text is never an integer: the two never mix);
- NULL for a whole value (depth 0).

SQL reads it through ``base_of`` and ``DEPTH``, so a chain is still walked in one
recursive query (``LOAD_CHAIN``) and pruning still keeps every link a kept value needs
(``LIVE_LINKS``). The column is not signed; neither was ``chains``. A delta's own bytes
(signed for its place with a signing serializer) name its base, and the reader checks
that each link it was given is that base (``delta.follow_links``), so an edited link is
refused, never read as another value.

Opening a file of an older schema moves its ``chains`` rows into their value rows and
DROPs the ``chains`` table (``move_chains``, inside the open's transaction). Every file
then keeps a read-only view named ``chains`` over the links (``_CHAINS_VIEW``), so an
older release can never have a ``chains`` table again: one that checked the file's
version just before this release upgraded it (its check runs before its own write
transaction) would otherwise recreate the table, stamp the file back to 7 and keep its
delta links there, unseen by this release, whose prune then deletes the bases they need.
With the view, an older release's ``CREATE TABLE IF NOT EXISTS chains`` does nothing and
every statement it writes ``chains`` with fails ("cannot modify chains because it is a
view": its commit, prune or delete rolls back, nothing written); its reads of a delta's
links read this release's.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

__all__ = ["DEPTH", "LIVE_LINKS", "LOAD_CHAIN", "VALUE_DEPTH", "base_of", "move_chains",
           "pack_link"]

_DEPTH_BITS = 8
_MAX_DEPTH = 1 << _DEPTH_BITS
_MAX_GAP = 1 << 47
_CHUNK = 1000  # chains rows moved per statement batch


def pack_link(version: Any, base: Any, depth: int) -> int | str:
    """The ``link`` column of a delta at ``version`` over ``base``, ``depth`` deltas deep."""
    if type(version) is int and type(base) is int and 0 < version - base < _MAX_GAP \
            and 0 < depth < _MAX_DEPTH:
        return (version - base) << _DEPTH_BITS | depth
    return json.dumps([base, depth], separators=(",", ":"), allow_nan=False)


def base_of(row: str) -> str:
    """SQL: the base version of the value row ``row`` (an alias of ``blobs``); NULL for a
    whole value."""
    return (f"CASE typeof({row}.link) WHEN 'integer' THEN {row}.version - "
            f"({row}.link >> {_DEPTH_BITS}) WHEN 'text' THEN json_extract({row}.link, '$[0]') END")


DEPTH = (f"CASE typeof(link) WHEN 'integer' THEN link & {_MAX_DEPTH - 1} "
         "WHEN 'text' THEN json_extract(link, '$[1]') ELSE 0 END")
"""SQL: the depth of a ``blobs`` row (0 for a whole value)."""
VALUE_DEPTH = f"""
SELECT {DEPTH} FROM blobs
WHERE thread_id = ? AND checkpoint_ns = ? AND channel = ? AND version = ?
"""
"""The depth of a stored value (no row: not stored)."""

LOAD_CHAIN = f"""
WITH RECURSIVE chain(n, version, type, blob, base) AS (
    SELECT 0, b.version, b.type, b.blob, {base_of('b')} FROM blobs b
    WHERE b.thread_id = ?1 AND b.checkpoint_ns = ?2 AND b.channel = ?3 AND b.version = ?4
    UNION ALL
    SELECT chain.n + 1, b.version, b.type, b.blob, {base_of('b')} FROM chain
    CROSS JOIN blobs b ON b.thread_id = ?1 AND b.checkpoint_ns = ?2 AND b.channel = ?3
        AND b.version = chain.base
)
SELECT version, type, blob FROM chain
"""
"""A value's chain from ``?4`` back along its links to a whole value, newest first (one
row a step: the queue's order), computed as it is read: a reader stops at the whole
value (``delta.follow_links``), so an edited link that loops cannot run forever."""

LIVE_LINKS = f"""
    SELECT b.channel, {base_of('b')} FROM live CROSS JOIN blobs b ON b.thread_id = ?1
        AND b.checkpoint_ns = ?2 AND b.channel = live.channel AND b.version = live.version
    WHERE b.link IS NOT NULL
"""
"""The recursive step of a ``live(channel, version)`` query: the base of each live delta."""


_CHAINS_VIEW = f"""
CREATE VIEW IF NOT EXISTS chains (thread_id, checkpoint_ns, channel, version, base, depth) AS
SELECT thread_id, checkpoint_ns, channel, version, {base_of('blobs')}, {DEPTH} FROM blobs
WHERE link IS NOT NULL
"""
"""Schemas 3 to 7's ``chains`` as a view of the links: no older release can write (or
recreate) the table, and its reads of links read this release's."""


def move_chains(conn: sqlite3.Connection) -> None:
    """Give ``blobs`` its ``link`` column, move the links of a ``chains`` table (schemas
    3 to 7) into their value rows, drop it and put the ``chains`` view in its place
    (inside the caller's write transaction)."""
    columns = {r[1] for r in conn.execute("PRAGMA table_info(blobs)")}
    if "link" not in columns:
        conn.execute("ALTER TABLE blobs ADD COLUMN link")
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'chains'"
                    ).fetchone() is not None:
        rows = conn.execute(
            "SELECT thread_id, checkpoint_ns, channel, version, base, depth FROM chains")
        while batch := rows.fetchmany(_CHUNK):
            conn.executemany(
                "UPDATE blobs SET link = ? WHERE thread_id = ? AND checkpoint_ns = ? "
                "AND channel = ? AND version = ?",
                [(pack_link(version, base, depth), thread_id, ns, channel, version)
                 for thread_id, ns, channel, version, base, depth in batch])
        conn.execute("DROP TABLE chains")
    conn.execute(_CHAINS_VIEW)
