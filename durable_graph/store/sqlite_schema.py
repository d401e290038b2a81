"""SqliteSaver's tables and the upgrades a file of an older schema gets when opened.

``apply_schema`` creates what a file lacks and stamps it with ``SCHEMA_VERSION``; a
file of a newer schema is refused, naming the upgrade. Rows are read in place, with
three exceptions, each in the open's transaction: opening a file of schema 3 to 7 moves
the delta links of its ``chains`` table into their value rows and DROPs the ``chains``
table (``sqlite_links``); opening a file of schema 5 to 8 moves the rows of its
``leaves`` table into ``leaf_cells`` and ``leaf_refs`` and DROPs it (``sqlite_leaves``),
a read-only view of the same name taking the place of each in every file; and opening a
file of schema 1 to 9 rewrites its checkpoint ids as bytes (``sqlite_ids``), a trigger
refusing them as text from then on. A process of an older release still running on the
file (or one that checked the version just before the upgrade) then fails on its next
statement that writes ``chains``, ``leaves`` or a checkpoint: restart it
(``check_version`` runs only when a file is opened). Schema 11 adds triggers on
``checkpoints`` that keep a parent stored as "the checkpoint before" right when rows are
deleted or inserted around it (``sqlite_parents``), whoever writes the file. Opening a
file of schema 1 to 11 numbers its threads and keeps the number in the row tables'
``thread_id`` column (``sqlite_threads``), a trigger refusing a thread id written there as
text from then on.
"""

from __future__ import annotations

import sqlite3

from durable_graph.errors import CheckpointStoreError
from durable_graph.store.sqlite_ids import pack_ids
from durable_graph.store.sqlite_leaves import LEAVES_SCHEMA, add_leaf_columns, split_leaves
from durable_graph.store.sqlite_links import move_chains
from durable_graph.store.sqlite_names import NAMES_SCHEMA
from durable_graph.store.sqlite_parents import PARENT_TRIGGERS
from durable_graph.store.sqlite_threads import THREAD_KEYS_SCHEMA, key_threads

__all__ = ["SCHEMA_VERSION", "apply_schema", "check_version"]

SCHEMA_VERSION = 12  # 3: values may be deltas (the chains table); 4: compact rows (sqlite_row);
# 5: large leaves kept once per thread (the leaves table, ``sqlite_leaves``), and no
# ``checkpoints_newest`` index (44 bytes a checkpoint, for listing every thread at once);
# 6: versions, versions seen and metadata packed (``sqlite_row``), leaves deflated
# (``sqlite_leaves``); 7: channel and node names by number (the names table,
# ``sqlite_names``), own versions by step, timestamps after the id (``sqlite_row``);
# 8: a channel whose value is None marked in the row's versions, without a blobs row
# (``sqlite_named.pack_marked``, ``sqlite_record``), and a delta's link to its base in
# its value row (the ``link`` column, ``sqlite_links``): opening an older file moves the
# links of its ``chains`` table there and DROPs it for a read-only view of the links, so
# an older release's process still running on the file fails on its commits instead of
# writing links this one would not see (and cannot make the table again);
# 9: a leaf's cell in ``leaf_cells`` and its key and count in ``leaf_refs``
# (``sqlite_leaves.split_leaves``): opening an older file moves its ``leaves`` rows there
# and DROPs the table for a read-only view of the same name, as 8 did with ``chains``;
# 10: a canonical UUID checkpoint id as its 16 bytes in the ``checkpoints`` key
# (``sqlite_ids``): opening an older file rewrites its ids so, and a trigger refuses
# such an id written as text (by an older release's process still running on the file);
# 11: a parent that is the checkpoint before its child stored as ``PREVIOUS`` (an empty
# blob, ``sqlite_parents``), kept right by triggers on every insert and delete;
# 12: a thread in ``checkpoints``, ``blobs``, ``writes`` and ``leaf_refs`` by its number in
# ``thread_keys`` (``sqlite_threads``): opening an older file numbers its threads and
# rewrites that column, and a trigger refuses a thread id written there as text.
# Rows of every schema read in place: nothing is rewritten but schema 8's move of the
# links, schema 9's of the leaves, schema 10's rewrite of the checkpoint ids and schema
# 12's of the threads.
# ``checkpoints`` (rows of about 90 bytes looked up by their key) and ``leaf_refs`` are
# WITHOUT ROWID: their rows live in their
# primary-key b-tree instead of beside a copy of the key. ``blobs`` and ``leaf_cells``
# are rowid tables (a file created before keeps ``blobs`` WITHOUT ROWID, as it was, with
# ``leaves``, from schema 5 to 8): a WITHOUT ROWID b-tree keeps at
# most about a quarter of a page of a row in place (1,002 bytes of a 4 KiB page) and
# spills the rest to an overflow page of its own, so each value or message of 1 to 4 KB
# took a page of 4 KB more; a rowid table keeps rows of up to 4,061 bytes in place, for
# a copy of the key in its index (about 40 bytes a row). Reads and writes are the same
# SQL on both, so neither needs another schema version.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS checkpoints (
    thread_id TEXT NOT NULL,
    checkpoint_ns TEXT NOT NULL,
    checkpoint_id TEXT NOT NULL,
    parent_id TEXT,
    ts TEXT NOT NULL,
    channel_versions TEXT NOT NULL,
    versions_seen TEXT NOT NULL,
    metadata TEXT NOT NULL,
    v INTEGER NOT NULL,
    sig BLOB,
    PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS checkpoints_sub_newest ON checkpoints
    (thread_id, checkpoint_id DESC, checkpoint_ns DESC) WHERE checkpoint_ns != '';
CREATE TABLE IF NOT EXISTS blobs (
    thread_id TEXT NOT NULL,
    checkpoint_ns TEXT NOT NULL,
    channel TEXT NOT NULL,
    version NOT NULL,
    type TEXT NOT NULL,
    blob BLOB NOT NULL,
    leaves BLOB,
    link,
    PRIMARY KEY (thread_id, checkpoint_ns, channel, version)
);
CREATE TABLE IF NOT EXISTS writes (
    thread_id TEXT NOT NULL,
    checkpoint_ns TEXT NOT NULL,
    checkpoint_id TEXT NOT NULL,
    task_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    channel TEXT NOT NULL,
    type TEXT NOT NULL,
    blob BLOB NOT NULL,
    leaves BLOB,
    PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id, task_id, idx)
);
CREATE TABLE IF NOT EXISTS threads (
    thread_id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    error_type TEXT,
    error_message TEXT,
    error_traceback TEXT
);
CREATE TABLE IF NOT EXISTS expiry (
    thread_id TEXT PRIMARY KEY,
    ttl INTEGER,
    expires_at REAL
);
CREATE INDEX IF NOT EXISTS expiry_due ON expiry (expires_at) WHERE expires_at IS NOT NULL;
""" + LEAVES_SCHEMA + ";" + NAMES_SCHEMA + ";" + THREAD_KEYS_SCHEMA


def check_version(conn: sqlite3.Connection) -> None:
    """Refuse a file of a newer schema than this release reads."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise CheckpointStoreError(
            f"checkpoint file has schema version {version}; this release reads "
            f"up to {SCHEMA_VERSION}, upgrade durable-graph"
        )


def apply_schema(conn: sqlite3.Connection) -> None:
    """Create the tables a file lacks and bring older files up to ``SCHEMA_VERSION``
    (inside the caller's write transaction)."""
    for statement in _SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    columns = {r[1] for r in conn.execute("PRAGMA table_info(checkpoints)")}
    if "sig" not in columns:  # a version 1 file: records before signing
        conn.execute("ALTER TABLE checkpoints ADD COLUMN sig BLOB")
    add_leaf_columns(conn)
    move_chains(conn)  # schema 8: after ``leaves``, so ``link`` is the last column
    split_leaves(conn)  # schema 9
    pack_ids(conn, version)  # schema 10
    for trigger in PARENT_TRIGGERS:  # schema 11
        conn.execute(trigger)
    key_threads(conn, version)  # schema 12: last, as the upgrades above write thread ids
    # Schema 5: every read of a thread goes by the primary key; only ``list(None)``
    # (all threads, newest first: an operator's or a migration's scan) used it.
    conn.execute("DROP INDEX IF EXISTS checkpoints_newest")
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
