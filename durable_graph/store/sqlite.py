"""SqliteSaver: checkpoints in one SQLite file, for single-machine durable runs.

The layout mirrors ``InMemorySaver``: a checkpoint row holds versions and metadata
but no values; each channel value is a blob stored once per (channel, version); and
pending writes sit in (task id, index) slots, so a task delivered twice changes
nothing. Each ``put`` is one transaction, so a crash or a value that cannot be
serialized leaves the previous checkpoint as it was.

Durability: the file runs in WAL mode with ``synchronous=NORMAL`` by default. A
commit is in the WAL (in the OS page cache) when ``put`` returns, so a process
killed with SIGKILL loses nothing it committed; only an OS crash or power loss can
drop the last few commits, since the WAL is fsynced at checkpoints rather than at
every commit. Pass ``synchronous="FULL"`` to fsync on every commit as well.

One writer per thread: a commit of the engine's loop (``EXTENDS_LATEST`` in its
config) must extend the thread's latest checkpoint in its namespace (checked inside
the write transaction, like the Redis commit script), so two processes running one
thread at once cannot fork its history: the loser gets ``CommitConflictError`` and
writes nothing. Only an explicit branch (a ``fork`` checkpoint of a replay from a
past checkpoint) may start from an older one. Other ``put`` calls (LangGraph's loop
through the adapter, copies) are stored as given, as LangGraph's savers do.

Large leaves (a chat message's text) are kept once per thread (schema 5,
``sqlite_leaves``): the input channel, a task's write and a
``messages`` delta refer to one copy by its SHA-256, counted, and dropped with the
last row that refers to it.

Schema 6 packs a checkpoint row (``sqlite_row``): versions, versions seen and
metadata as msgpack, each row whole (read on its own, verified once). Schema 7 names
channels and nodes by number (the ``names`` table, ``sqlite_names``), stores the
row's own version by its step, and the timestamp after the time in the row's id.
Schema 8 marks a channel whose value is None in the row's versions instead of storing a
value row for it (``sqlite_record``), and keeps a delta's link to its base in its value
row (``sqlite_links``; the ``chains`` table of schemas 3 to 7 is moved there and dropped
when a file is opened). A value or write row keeps its serializer's bytes deflated when that
pays (``sqlite_row.pack_blob``: a tag code of its own, so rows written before read as they
are and an older release refuses the new ones loudly). Schema 9 keeps a leaf's cell in
a row of its own (``leaf_cells``) and its key and count in ``leaf_refs``
(``sqlite_leaves``), schema 10 a checkpoint id in the key as its 16 bytes
(``sqlite_ids``), schema 11 a parent that is the checkpoint before its child as a mark
(``sqlite_parents``), schema 12 a thread in the row tables by a number of its own
(``sqlite_threads``: looked up in each transaction, the id itself in every error).

With a signing serializer, each record is signed as a whole and each value and
write for its place (``ThreadCodec``); the ``sig`` column (schema version 2) holds
the record's signature, NULL for records written before.

Retention: ``keep_last`` prunes the committed namespace inside the commit's
transaction; a thread's TTL lives in the ``expiry`` table (its own TTL and when it
expires, indexed on that time), so each commit and read purges the threads that are
due with one index probe. The table is additive: an older release ignores it (and
keeps expired threads), it does not need a new schema version.
"""

from __future__ import annotations

import builtins
import os
import sqlite3
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self, get_args

from durable_graph.errors import (
    CheckpointStoreError,
    CommitConflictError,
    GraphValueError,
    SerializationError,
)
from durable_graph.store.base import (
    EXTENDS_LATEST,
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    PendingWrite,
    ThreadStatus,
    checkpoint_config,
    config_ids,
    require_storable,
    retires_parent_writes,
)
from durable_graph.store.delta import (
    DEFAULT_SNAPSHOT_EVERY,
    delta_links,
    resolve_chains,
    snapshot_every_of,
)
from durable_graph.store.encoding import ThreadCodec, metadata_matches
from durable_graph.store.leaves import apart_in, dedups_leaves, pack_digests, resolve_leaves
from durable_graph.store.retention import (
    CheckpointRef,
    check_keep_last,
    check_ttl,
    parent_gone,
)
from durable_graph.store.serde import Serializer, TypedSerializer
from durable_graph.store.sqlite_leaves import (
    delete_releasing,
    fetch_leaves,
    hold_leaves,
    leaf_exists,
    leaves_column,
    release_leaves,
)
from durable_graph.store.sqlite_links import LOAD_CHAIN, VALUE_DEPTH, pack_link
from durable_graph.store.sqlite_named import (
    RowNames,
    dumps_versions,
    unpack_marked,
    unpack_seen,
    versions_json,
)
from durable_graph.store.sqlite_names import NameTable
from durable_graph.store.sqlite_parents import (
    previous_rows,
    resolve_parent,
    stored_parent,
)
from durable_graph.store.sqlite_record import (
    dumps_json,
    packed_row,
    record_fields,
    with_marks,
)
from durable_graph.store.sqlite_retention import (
    BEYOND_KEEP,
    DUE,
    EXISTS,
    LATEST,
    delete_ids,
    delete_thread_rows,
    pruned,
    purge,
)
from durable_graph.store.sqlite_row import (
    pack_blob,
    pack_id,
    unpack_blob,
    unpack_id,
    unpack_metadata,
    unpack_ts,
)
from durable_graph.store.sqlite_schema import apply_schema, check_version
from durable_graph.store.sqlite_threads import (
    THREAD_IS,
    ThreadKey,
    add_thread_key,
    thread_key,
    thread_names,
)

__all__ = ["SqliteSaver"]

_PAGE = 100  # checkpoint rows read per query while listing; bounds memory, not results
_LOAD_BATCH = 10  # checkpoints a listing loads per read transaction (and holds at once)

_CP_COLUMNS = (
    "thread_id, checkpoint_ns, checkpoint_id, parent_id, ts, "
    "channel_versions, versions_seen, metadata, v, sig"
)
_BRANCH_SOURCES = frozenset({"fork", "update"})
"""Metadata sources of checkpoints that may start from an older checkpoint."""

# Values of a checkpoint: its version map (JSON) joined to the blobs table. CROSS JOIN
# keeps the version map as the outer loop, so each value is one primary-key lookup
# whatever the thread's history length (a plain JOIN let SQLite scan every blob of
# the thread instead).
_LOAD_VALUES = """
SELECT b.channel, b.type, b.blob FROM json_each(?) AS cv
CROSS JOIN blobs AS b ON b.thread_id = ? AND b.checkpoint_ns = ?
    AND b.channel = cv.key AND b.version = cv.value
"""
_EXISTING_BLOBS = """
SELECT cv.key FROM json_each(?) AS cv
CROSS JOIN blobs AS b ON b.thread_id = ? AND b.checkpoint_ns = ?
    AND b.channel = cv.key AND b.version = cv.value
"""
_WRITE_LEAVES = """
SELECT leaves FROM writes
WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id = ? AND task_id = ? AND idx = ?
"""
_LOAD_WRITES = """
SELECT task_id, idx, channel, type, blob FROM writes
WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id = ?
ORDER BY task_id, idx
"""
# The ordinary writes of the latest checkpoint when a step extends it (see
# ``retires_parent_writes``); outcomes keep their negative slots.
_APPLIED_WRITES = """
writes WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id = ? AND idx >= 0
"""
# Retention: threads whose TTL ran out (the partial index keeps this one probe), a
# commit's expiry (``ttl`` is the thread's own TTL, else the committing saver's),
# and the checkpoints of a namespace beyond the newest ``keep_last``.
_EXPIRE_AFTER_COMMIT = """
INSERT INTO expiry VALUES (?1, NULL, ?2 + ?3)
ON CONFLICT (thread_id) DO UPDATE SET expires_at = ?2 + COALESCE(expiry.ttl, ?3)
"""
_EXPIRE_OWN_AFTER_COMMIT = "UPDATE expiry SET expires_at = ?2 + ttl WHERE thread_id = ?1"
_SET_TTL = """
INSERT INTO expiry VALUES (?, ?, ?)
ON CONFLICT (thread_id) DO UPDATE SET ttl = excluded.ttl, expires_at = excluded.expires_at
"""
_LIST_IDS = """
SELECT checkpoint_ns, checkpoint_id, parent_id FROM checkpoints WHERE thread_id = ?
ORDER BY checkpoint_id DESC, checkpoint_ns DESC
"""

_INSERT_CHECKPOINT = (
    f"INSERT OR REPLACE INTO checkpoints ({_CP_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_UPSERT_STATUS = """
INSERT INTO threads VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (thread_id) DO UPDATE SET
    status = excluded.status,
    updated_at = excluded.updated_at,
    error_type = COALESCE(excluded.error_type, threads.error_type),
    error_message = COALESCE(excluded.error_message, threads.error_message),
    error_traceback = COALESCE(excluded.error_traceback, threads.error_traceback)
"""

Synchronous = Literal["NORMAL", "FULL"]
_Row = tuple[Any, ...]
_THREAD_ONLY = THREAD_IS
"""The condition for every namespace of a thread given its id (``list``; ``_page`` splits
it in two): its key found in the statement (schema 12, ``sqlite_threads.THREAD_IS``)."""
_THREAD_AND_NS = f"{_THREAD_ONLY} AND checkpoint_ns = ?"
"""The condition for one namespace of a thread given its id."""
_Place = tuple[ThreadKey, str, str | bytes]
"""A checkpoint row's (thread key, namespace, stored id): ``previous_rows``' keys."""


def _connect(path: str | os.PathLike[str]) -> sqlite3.Connection:
    """Open (creating parent folders) a connection the saver owns and shares across threads."""
    text = os.fspath(path)
    if text != ":memory:" and not text.startswith("file:"):
        Path(text).parent.mkdir(parents=True, exist_ok=True)
    # isolation_level=None: the saver issues BEGIN/COMMIT itself, so a put is one
    # transaction no matter what the sqlite3 module would open implicitly.
    return sqlite3.connect(
        text, timeout=30.0, isolation_level=None, check_same_thread=False, uri=True
    )


class SqliteSaver(BaseCheckpointSaver):
    """Stores checkpoints in a SQLite file (WAL mode); survives a killed process.

    Args:
        path_or_connection: A file path (parent folders are created) or an open
            ``sqlite3.Connection``. A given connection stays the caller's: ``close``
            leaves it open. Open it with ``check_same_thread=False`` if the saver's
            async methods or several threads use it.
        serde: Serializer for channel values and writes; ``TypedSerializer()`` by default.
        synchronous: ``"NORMAL"`` (survives process kill) or ``"FULL"`` (also survives
            OS crash or power loss, at the cost of an fsync per commit).
        ttl: retention policy: seconds a thread lives after its last commit (None:
            forever); ``set_ttl`` gives one thread its own. Expired threads vanish
            from every read and are purged by the next read or commit.
        keep_last: retention policy: each commit keeps the newest ``keep_last``
            checkpoints of its namespace and deletes older ones (None: all kept).

    Metadata must be JSON-serializable: it reads back as its JSON would. The parent id,
    timestamp, versions, versions seen and metadata are compact BLOBs (``sqlite_row``,
    schemas 4 and 6; ``sqlite_named``, schema 7: names by number from the ``names``
    table); their unpack functions read them in the ``sqlite3`` shell's place.
    """

    retires_applied_writes = True  # in the commit's transaction (else it is refused)

    def __init__(
        self,
        path_or_connection: str | os.PathLike[str] | sqlite3.Connection,
        *,
        serde: Serializer | None = None,
        synchronous: Synchronous = "NORMAL",
        delta: bool = True,
        snapshot_every: int = DEFAULT_SNAPSHOT_EVERY,
        ttl: int | None = None,
        keep_last: int | None = None,
    ) -> None:
        if synchronous not in get_args(Synchronous):
            raise GraphValueError(f"synchronous must be NORMAL or FULL, not {synchronous!r}")
        self.snapshot_every = snapshot_every_of(delta, snapshot_every)
        self.ttl = check_ttl(ttl)
        self.keep_last = check_keep_last(keep_last)
        self.serde: Serializer = serde or TypedSerializer()
        self._dedup = dedups_leaves(self.serde)
        self._lock = threading.RLock()
        self._names = NameTable()
        self._owns_conn = not isinstance(path_or_connection, sqlite3.Connection)
        try:
            if isinstance(path_or_connection, sqlite3.Connection):
                self._conn = path_or_connection
            else:
                self._conn = _connect(path_or_connection)
            self._setup(synchronous)
        except BaseException as exc:
            if hasattr(self, "_conn"):
                self.close()  # a connection we opened must not leak
            if isinstance(exc, sqlite3.Error | OSError):  # e.g. a parent path that is a file
                raise CheckpointStoreError(
                    f"cannot open the SQLite checkpoint store at {path_or_connection!r}: {exc}"
                ) from exc
            raise

    @classmethod
    def from_conn_string(
        cls, path: str | os.PathLike[str], *, ttl: int | None = None,
        keep_last: int | None = None,
    ) -> Self:
        """A saver on the file at ``path``; usable as ``with SqliteSaver.from_conn_string(p)``.

        Kept for LangGraph users, whose ``from_conn_string`` is a context manager:
        the returned saver is one too, and closes its connection on exit.
        """
        return cls(path, ttl=ttl, keep_last=keep_last)

    def _setup(self, synchronous: Synchronous) -> None:
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute(f"PRAGMA synchronous={synchronous}")
            # Packed versions (schema 6, 7) as JSON for ``json_each`` (``_LIVE_VALUES``);
            # the names a statement decodes are loaded before it (``_delete_ids``).
            self._conn.create_function(
                "dg_versions", 3, lambda versions, checkpoint_id, parent: versions_json(
                    versions, RowNames(unpack_id(checkpoint_id), unpack_id(parent),
                                       self._names.cached)),
                deterministic=True)
            # The version is checked inside the upgrade's write transaction: checked
            # before it, a newer release could upgrade the file in between, and this
            # one would stamp it with its own older version.
            with self._transaction() as conn:
                check_version(conn)
                apply_schema(conn)

    @contextmanager
    def _transaction(self, *, write: bool = True) -> Iterator[sqlite3.Connection]:
        """One transaction under the saver's lock; sqlite errors become store errors.

        Writes use BEGIN IMMEDIATE so the write lock is taken up front: two processes
        never both read, then both fail to upgrade to writing. Reads get a snapshot.
        A transaction the caller left open on a given connection is committed too.
        """
        with self._lock:
            conn = self._conn
            try:
                began = not conn.in_transaction
                if began:
                    conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                try:
                    yield conn
                except BaseException:
                    conn.rollback()
                    raise
                conn.commit()
            except BaseException as exc:
                self._names.forget()  # names it added never existed
                if not isinstance(exc, sqlite3.Error):
                    raise
                raise CheckpointStoreError(f"SQLite checkpoint store failed: {exc}") from exc

    def close(self) -> None:
        """Close the connection if the saver opened it; a given connection stays open."""
        with self._lock:
            if self._owns_conn:
                self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def get_tuple(self, config: Mapping[str, Any]) -> CheckpointTuple | None:
        """The checkpoint named by ``checkpoint_id``, or the thread's latest one."""
        thread_id, ns, checkpoint_id = config_ids(config)
        query = f"SELECT {_CP_COLUMNS} FROM checkpoints WHERE {_THREAD_AND_NS}"
        args: list[Any] = [thread_id, ns]
        if checkpoint_id is None:  # and the one before it: its parent, nearly always
            query += " ORDER BY checkpoint_id DESC LIMIT 2"
        else:
            query += " AND checkpoint_id = ?"
            args.append(pack_id(checkpoint_id))
        self._purge_due()
        with self._transaction(write=False) as conn:
            rows = conn.execute(query, args).fetchall()
            return self._load(conn, rows[0], previous_rows(rows), thread_id) if rows else None

    def list(
        self,
        config: Mapping[str, Any] | None,
        *,
        filter: Mapping[str, Any] | None = None,
        before: Mapping[str, Any] | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        """Checkpoints newest first, read a page of rows at a time, loaded a few per read
        transaction (``_LOAD_BATCH``; the first alone, so it comes as soon as it is read).

        The lock is never held while the caller consumes an item, so an abandoned
        iterator cannot block other threads.
        """
        self._purge_due()
        thread_id = None if config is None else config_ids(config)[0]
        where, args = _list_scope(config, before)
        count = 0
        cursor: _Row | None = None
        while limit is None or count < limit:
            rows, names = self._page(where, args, cursor, named=thread_id is None)
            previous = previous_rows(rows)  # the parents a page has (``sqlite_parents``)
            wanted = [(row, thread_id or names[row[0]]) for row in rows if not filter
                      or metadata_matches(unpack_metadata(row[7]), filter)]
            if limit is not None:
                wanted = wanted[:limit - count]
            at = 0
            while at < len(wanted):
                size = _LOAD_BATCH if count else 1  # the first item as soon as it is read
                items, error = self._load_batch(wanted[at:at + size], previous)
                at += size
                count += len(items)
                yield from items
                if error is not None:  # after the items before it, as one by one would
                    raise error
            if len(rows) < _PAGE:
                return
            cursor = (rows[-1][2], rows[-1][0], rows[-1][1])

    def _load_batch(
        self, rows: Sequence[tuple[_Row, str]], previous: Mapping[_Place, str | bytes]
    ) -> tuple[Sequence[CheckpointTuple], Exception | None]:
        """The checkpoints of ``rows`` (each with its thread id) loaded in one read
        transaction, up to the first that fails to load, and that failure (None if none
        did); a store error raises."""
        items: builtins.list[CheckpointTuple] = []  # ``list``: the method, in the class
        with self._transaction(write=False) as conn:
            for row, thread_id in rows:
                try:
                    items.append(self._load(conn, row, previous, thread_id))
                except sqlite3.Error:
                    raise  # the store failed: ``_transaction`` names it
                except Exception as exc:  # this row: refused after the ones before it
                    return items, exc
        return items, None

    def _page(
        self, where: Sequence[str], args: Sequence[Any], cursor: _Row | None, *, named: bool
    ) -> tuple[Sequence[_Row], Mapping[ThreadKey, str]]:
        """The next page of checkpoint rows, newest first, after ``cursor`` (keyset paging),
        and when ``named`` (rows of every thread) the thread id of each of their keys."""
        clauses: list[str] = [*where]
        params: list[Any] = [*args]
        if cursor is not None:
            clauses.append("(checkpoint_id, thread_id, checkpoint_ns) < (?, ?, ?)")
            params.extend(cursor)
        query = f"SELECT {_CP_COLUMNS} FROM checkpoints"
        if clauses:
            query += " WHERE " + " AND ".join(clauses)
        if where[:1] == [_THREAD_ONLY]:
            # Every namespace of one thread: the root's rows newest first from the primary
            # key, merged with the subgraphs' from their partial index (a thread of one
            # namespace keeps no second index of its rows).
            query = f"{query} AND checkpoint_ns = '' UNION ALL {query} AND checkpoint_ns != ''"
            params = [*params, *params]
        query += " ORDER BY checkpoint_id DESC, thread_id DESC, checkpoint_ns DESC LIMIT ?"
        with self._transaction(write=False) as conn:
            rows = conn.execute(query, [*params, _PAGE]).fetchall()
            return rows, thread_names(conn, {row[0] for row in rows}) if named else {}

    def _load(
        self, conn: sqlite3.Connection, row: _Row, previous: Mapping[_Place, str | bytes],
        thread_id: str,
    ) -> CheckpointTuple:
        """Rebuild a checkpoint tuple from its row (of thread ``thread_id``), its value
        blobs and its writes.

        With a signing serializer the record is verified first (``_record``), then
        each value for its (channel, version) and each write for its slot.
        """
        key, ns, stored_id, parent, ts, versions, _, metadata, v, _ = row
        # the parent as signed: its id, never the mark (``sqlite_parents``)
        row = (*row[:3], resolve_parent(conn, (key, ns), stored_id, parent, previous),
               *row[4:])
        checkpoint_id, parent_id = unpack_id(stored_id), unpack_id(row[3])
        tc = ThreadCodec(self.serde, "", thread_id, ns)
        version_of, seen_of, marks, signed = self._record(
            conn, tc, row, (checkpoint_id, parent_id))

        def value(channel: str, version: Any, tag: str | bytes, blob: bytes) -> Any:
            return tc.value(checkpoint_id, channel, version, unpack_blob(
                tag, blob, f"value of channel {channel!r} version {version}"),
                signed_record=signed)

        found_values = {
            channel: value(channel, version_of[channel], tag, blob)
            for channel, tag, blob in conn.execute(_LOAD_VALUES, (
                versions if isinstance(versions, str)  # JSON text already (schema < 6)
                else dumps_versions(version_of), key, ns))
        }
        values = with_marks(
            found_values, version_of, marks, where=f"checkpoint {checkpoint_id} of thread "
            f"{thread_id!r}", unsigned_in_signed_store=tc.bound is not None and not signed)
        resolve_chains(values, lambda channel, head: (
            (version, value(channel, version, tag, blob))
            for version, tag, blob in conn.execute(LOAD_CHAIN, (key, ns, channel, head))
        ))
        found = conn.execute(_LOAD_WRITES, (key, ns, checkpoint_id)).fetchall()
        pending = {
            i: tc.pending(checkpoint_id, task_id, idx, channel, unpack_blob(
                tag, blob, f"pending write {task_id}:{idx} of checkpoint {checkpoint_id}"))
            for i, (task_id, idx, channel, tag, blob) in enumerate(found)
        }
        for decoded in (values, pending):
            resolve_leaves(decoded, lambda digests: fetch_leaves(conn, key, digests))
        writes = [PendingWrite(task_id, channel, pending[i])
                  for i, (task_id, _, channel, _, _) in enumerate(found)]
        return CheckpointTuple(
            config=checkpoint_config(thread_id, ns, checkpoint_id),
            checkpoint=Checkpoint(
                id=checkpoint_id,
                ts=unpack_ts(ts, checkpoint_id),
                channel_values=values,
                channel_versions=version_of,
                versions_seen=seen_of,
                v=v,
            ),
            metadata=unpack_metadata(metadata),
            parent_config=checkpoint_config(thread_id, ns, parent_id) if parent_id else None,
            pending_writes=writes,
        )

    def put(
        self,
        config: Mapping[str, Any],
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: Mapping[str, int],
    ) -> dict[str, Any]:
        """Store the checkpoint row and its new value blobs in one transaction.

        Only values whose (channel, version) blob is missing are serialized; a value
        that cannot be serialized rolls the whole put back.
        """
        thread_id, ns, parent_id = config_ids(config)
        tc = ThreadCodec(self.serde, "", thread_id, ns)
        require_storable(checkpoint)
        versions = checkpoint.channel_versions
        versions_text = dumps_json(versions, "channel versions")
        now = time.time()
        with self._transaction() as conn:
            purge(conn, now)
            key = add_thread_key(conn, thread_id)
            row, marks = self._checkpoint_row(
                conn, tc, key, (parent_id, checkpoint, metadata), versions_text)
            extends = (config.get("configurable") or {}).get(EXTENDS_LATEST) \
                and self._check_extends(conn, (key, ns), checkpoint.id, parent_id, metadata,
                                        thread_id=thread_id)
            if extends and retires_parent_writes(config, metadata):
                delete_releasing(conn, key, _APPLIED_WRITES, (key, ns, parent_id))
            present = {channel for (channel,) in conn.execute(
                _EXISTING_BLOBS, (versions_text, key, ns))}
            missing = {  # a channel marked None has no row (schema 8)
                ch: value for ch, value in checkpoint.channel_values.items()
                if ch not in present and ch not in marks
            }
            split = self._split(conn, key, list(missing.items()))
            leaves = {d: data for _, own in split for d, data in own.items()}
            refs = {ch: pack_digests(own) for ch, (_, own) in zip(missing, split, strict=True)}
            stored = {ch: value for ch, (value, _) in zip(missing, split, strict=True)}
            blobs = tc.values(stored, versions)  # raises before anything is stored
            links = {ch: pack_link(versions[ch], base, depth)  # schema 8: in the value row
                     for ch, (base, depth) in delta_links(missing).items()}
            for ch, tagged in blobs.items():
                code, data = pack_blob(tagged)  # its references read before it is deflated
                if conn.execute(
                    "INSERT OR IGNORE INTO blobs (thread_id, checkpoint_ns, channel, version, "
                    "type, blob, leaves, link) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (key, ns, ch, versions[ch], code, data,
                     leaves_column(*tagged, refs.get(ch)), links.get(ch)),
                ).rowcount:
                    hold_leaves(conn, key, refs.get(ch), leaves)
            conn.execute(_INSERT_CHECKPOINT, (*row[:3], stored_parent(  # schema 11
                conn, (key, ns), row[2], parent_id), *row[4:]))
            self._apply_policy(conn, (key, ns), thread_id, now)
        return checkpoint_config(thread_id, ns, checkpoint.id)

    def _record(self, conn: sqlite3.Connection, tc: ThreadCodec, row: _Row,
                ids: tuple[str, str | None]) -> tuple[Any, Any, frozenset[str], bool]:
        """A row's versions, versions seen and channels marked None (``sqlite_record``),
        and whether its record is signed (then
        verified; SignatureError if it does not verify). The versions are unpacked first,
        since a named row signs what its numbers stand for: msgpack, never a pickle."""
        (checkpoint_id, parent_id), versions, seen, sig = ids, row[5], row[6], row[9]
        names = RowNames(checkpoint_id, parent_id, self._name_of(conn))
        try:
            version_of, marks = unpack_marked(versions, names)
            seen_of = unpack_seen(seen, version_of, names)
        except (IndexError, KeyError, TypeError, ValueError) as exc:  # msgpack's too
            raise SerializationError(
                f"checkpoint {checkpoint_id} of thread {tc.thread_id!r}: its versions or "
                f"versions seen cannot be read ({type(exc).__name__}: {exc}); the row was "
                "edited. Refused; nothing was run.") from None
        signed = bool(sig) and tc.bound is not None and tc.check_record(
            checkpoint_id, record_fields(row, version_of, seen_of, marks), sig)
        return version_of, seen_of, marks, signed

    def _checkpoint_row(
        self, conn: sqlite3.Connection, tc: ThreadCodec, key: ThreadKey,
        given: tuple[str | None, Checkpoint, CheckpointMetadata], versions_text: str,
    ) -> tuple[_Row, frozenset[str]]:
        """The signed checkpoints-table row of a checkpoint of the thread keyed ``key``
        (``packed_row``), its names numbered in ``conn``'s transaction; and the channels
        it marks None."""
        parent_id, checkpoint, metadata = given
        names = RowNames(checkpoint.id, parent_id, self._name_of(conn),
                         lambda name: self._names.id_of(conn, name))
        packed = packed_row((key, tc.ns), checkpoint, metadata,
                            versions_text=versions_text, names=names)
        row, marks = packed.row, packed.marks
        fields = record_fields(row, packed.versions, packed.seen, marks)
        return (*row[:-1], tc.sign_record(checkpoint.id, fields)), marks

    def _name_of(self, conn: sqlite3.Connection) -> Callable[[int], str]:
        """The name a number of a named row stands for, in ``conn``'s file."""
        return lambda number: self._names.name_of(conn, number)

    def _split(
        self, conn: sqlite3.Connection, key: ThreadKey, items: Sequence[tuple[str, Any]]
    ) -> Sequence[tuple[Any, dict[bytes, bytes]]]:
        """Values or writes with the leaves kept apart as references (``leaves.apart_in``)."""
        if not self._dedup:
            return [(value, {}) for _, value in items]
        return apart_in(items, lambda digest: leaf_exists(conn, key, digest))

    def _apply_policy(self, conn: sqlite3.Connection, place: tuple[ThreadKey, str],
                      thread_id: str, now: float) -> None:
        """A commit's retention: drop checkpoints beyond ``keep_last``, restart the TTL."""
        if self.keep_last is not None:
            doomed = [unpack_id(cid) for (cid,) in conn.execute(
                BEYOND_KEEP, (*place, self.keep_last))]
            if doomed:
                delete_ids(conn, place, doomed, self._names)
        if self.ttl is not None:
            conn.execute(_EXPIRE_AFTER_COMMIT, (thread_id, now, self.ttl))
        else:
            conn.execute(_EXPIRE_OWN_AFTER_COMMIT, (thread_id, now))

    def _purge_due(self) -> None:
        """Purge the threads whose TTL ran out, if any (one indexed probe when none)."""
        now = time.time()
        with self._transaction(write=False) as conn:
            if conn.execute(DUE + " LIMIT 1", (now,)).fetchone() is None:
                return
        with self._transaction() as conn:
            purge(conn, now)

    def set_ttl(self, thread_id: str, seconds: int | None) -> None:
        """Expire the thread ``seconds`` after its last commit (or after this call).

        ``None`` drops the thread's own TTL: the saver's ``ttl`` (if any) applies again.
        """
        own = check_ttl(seconds, "seconds")
        now = time.time()
        ttl = own or self.ttl
        with self._transaction() as conn:
            purge(conn, now)
            conn.execute(_SET_TTL, (str(thread_id), own, None if ttl is None else now + ttl))

    def list_ids(self, thread_id: str) -> Iterator[CheckpointRef]:
        """Every checkpoint of a thread newest first, as ids and parents only."""
        self._purge_due()
        with self._transaction(write=False) as conn:
            key = thread_key(conn, str(thread_id))
            if key is None:
                return iter(())
            rows = conn.execute(_LIST_IDS, (key,)).fetchall()
            known = previous_rows([(key, ns, cid) for ns, cid, _ in rows])
            refs = [CheckpointRef(ns, unpack_id(cid), unpack_id(resolve_parent(
                conn, (key, ns), cid, parent, known))) for ns, cid, parent in rows]
        return iter(refs)

    @staticmethod
    def _check_extends(
        conn: sqlite3.Connection, place: tuple[ThreadKey, str], checkpoint_id: str,
        parent_id: str | None, metadata: CheckpointMetadata, *, thread_id: str,
    ) -> bool:
        """Compare-and-set: refuse a commit that does not extend the latest checkpoint of
        thread ``thread_id`` (keyed ``place[0]``) in its namespace.

        True when the parent is the latest (the commit extends the thread's line).
        """
        found = conn.execute(LATEST, place).fetchone()
        latest = unpack_id(found[0]) if found else None
        if parent_id is not None and conn.execute(
                EXISTS, (*place, pack_id(parent_id))).fetchone() is None:
            raise CommitConflictError(parent_gone(thread_id, parent_id))
        if latest is None or latest in (parent_id, checkpoint_id):
            return latest is not None and latest == parent_id
        if metadata.get("source") in _BRANCH_SOURCES and parent_id is not None:
            return False  # an explicit branch from a past checkpoint
        raise CommitConflictError(
            f"commit to thread {thread_id!r} rejected: it extends checkpoint "
            f"{parent_id or '(none)'} but the thread's latest is {latest}; another process "
            "is running this thread (or ran it meanwhile). Nothing was written; load the "
            "thread again (invoke(None, config) resumes from its latest checkpoint)."
        )

    def put_writes(
        self,
        config: Mapping[str, Any],
        writes: Sequence[tuple[str, Any]],
        task_id: str,
    ) -> None:
        """Store a task's writes in (task_id, index) slots, in one transaction.

        Error, interrupt and resume writes replace their fixed slot; any other write
        keeps the first value stored, so a redelivered task changes nothing.
        """
        thread_id, ns, checkpoint_id = config_ids(config)
        if checkpoint_id is None:
            raise GraphValueError("put_writes needs a config with a checkpoint_id")
        tc = ThreadCodec(self.serde, "", thread_id, ns)
        with self._transaction() as conn:
            key = add_thread_key(conn, thread_id)
            if pruned(conn, key, ns, checkpoint_id):
                return  # a late write to a pruned checkpoint: nothing would read or drop it
            rows = []
            leaves: dict[bytes, bytes] = {}
            split = self._split(conn, key, list(writes))
            for idx, ((channel, _), (stored, own)) in enumerate(zip(writes, split, strict=True)):
                slot = WRITES_IDX_MAP.get(channel, idx)
                leaves.update(own)
                code, data = pack_blob(tc.write(checkpoint_id, task_id, slot, channel, stored))
                verb = "REPLACE" if channel in WRITES_IDX_MAP else "IGNORE"
                rows.append((verb, (key, ns, checkpoint_id, task_id, slot, channel,
                                    code, data, pack_digests(own))))
            for verb, args in rows:
                if verb == "REPLACE":  # the slot's previous write gives its leaves back
                    release_leaves(conn, key, conn.execute(
                        _WRITE_LEAVES, args[:5]).fetchall())
                if conn.execute(
                        f"INSERT OR {verb} INTO writes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        args).rowcount:
                    hold_leaves(conn, key, args[-1], leaves)

    def delete_thread(self, thread_id: str) -> None:
        """Delete every checkpoint, value, write and status record of a thread."""
        with self._transaction() as conn:
            delete_thread_rows(conn, str(thread_id))

    def delete_checkpoints(self, thread_id: str, checkpoint_ns: str, ids: Sequence[str]) -> None:
        """Delete these checkpoints, their writes, and values no other checkpoint reads."""
        with self._transaction() as conn:
            key = thread_key(conn, str(thread_id))
            if key is not None:
                delete_ids(conn, (key, checkpoint_ns), ids, self._names)

    def value_depth(
        self, thread_id: str, checkpoint_ns: str, channel: str, version: int
    ) -> int | None:
        with self._transaction(write=False) as conn:
            key = thread_key(conn, str(thread_id))
            row = None if key is None else conn.execute(
                VALUE_DEPTH, (key, checkpoint_ns, channel, version)).fetchone()
        if row is None:
            return None
        return int(row[0] or 0)

    def set_status(
        self,
        thread_id: str,
        status: ThreadStatus,
        error: BaseException | None = None,
    ) -> None:
        """Record a thread's run status, and the error that failed it, for operators.

        The error fields describe the most recent failure and are kept when a later
        status comes without an error, so a retried thread still shows what it hit.
        """
        if status not in get_args(ThreadStatus):
            raise GraphValueError(f"unknown thread status {status!r}")
        error_fields: tuple[str | None, ...] = (None, None, None)
        if error is not None:
            cls = type(error)
            error_fields = (
                f"{cls.__module__}.{cls.__qualname__}",
                str(error),
                "".join(traceback.format_exception(error)),
            )
        now = datetime.now(UTC).isoformat()
        with self._transaction() as conn:
            conn.execute(_UPSERT_STATUS, (str(thread_id), status, now, *error_fields))

    def get_status(self, thread_id: str) -> dict[str, Any] | None:
        """The status record ``set_status`` keeps for a thread, or None if it has none.

        Keys: thread_id, status, updated_at, error_type, error_message, error_traceback.
        """
        self._purge_due()
        with self._transaction(write=False) as conn:
            cursor = conn.execute("SELECT * FROM threads WHERE thread_id = ?", (str(thread_id),))
            row = cursor.fetchone()
            names = [d[0] for d in cursor.description]
        return None if row is None else dict(zip(names, row, strict=True))


def _list_scope(
    config: Mapping[str, Any] | None, before: Mapping[str, Any] | None
) -> tuple[list[str], list[Any]]:
    """SQL conditions for ``list``: thread, namespace if given, and ``before``."""
    where: list[str] = []
    args: list[Any] = []
    if config is not None:
        thread_id, ns, _ = config_ids(config)
        args.append(thread_id)
        if "checkpoint_ns" in (config.get("configurable") or {}):
            where.append(_THREAD_AND_NS)
            args.append(ns)
        else:
            where.append(_THREAD_ONLY)
    before_id = ((before or {}).get("configurable") or {}).get("checkpoint_id")
    if before_id is not None:
        where.append("checkpoint_id < ?")
        args.append(pack_id(before_id))
    return where, args
