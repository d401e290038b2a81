"""SqliteStore: the long-term memory store in one SQLite file (stdlib sqlite3, WAL).

Items are rows keyed by (namespace, key); a namespace is stored as its labels
joined by "." (labels cannot contain "."), so a prefix search is an index range.
Each item keeps a per-namespace sequence number and each namespace the order it
was first written, which gives search its order. Values are stored as JSON text,
so they must be JSON-serializable (tuples come back as lists). Expired items are
hidden from every read at once and deleted on the next write (or ``sweep_ttl``).
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Generator, Mapping, Sequence
from datetime import datetime
from typing import Any, Self

from durable_graph.store.closing import Closable
from durable_graph.store.kv.base import check_index_config, check_ttl_config
from durable_graph.store.kv.engine import (
    Record,
    RecordStore,
    Write,
    dump_value,
    minutes_to_seconds,
)
from durable_graph.store.kv.match import pushable_conditions
from durable_graph.store.kv.ops import Namespace, TTLConfig
from durable_graph.store.sqlite_file import SqliteFile

__all__ = ["SqliteStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv_namespaces (ns TEXT PRIMARY KEY, seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS kv_items (
    ns TEXT NOT NULL,
    key TEXT NOT NULL,
    seq INTEGER NOT NULL,
    value TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    ttl REAL,
    expires_at REAL,
    PRIMARY KEY (ns, key)
);
CREATE INDEX IF NOT EXISTS kv_items_order ON kv_items (ns, seq);
CREATE INDEX IF NOT EXISTS kv_items_expiry ON kv_items (expires_at) WHERE expires_at IS NOT NULL;
"""
_LIVE = "(i.expires_at IS NULL OR i.expires_at > :now)"
_COLUMNS = "i.ns, i.key, i.value, i.created_at, i.updated_at, i.ttl"
_SCAN = f"""
SELECT {_COLUMNS}, n.seq, i.seq FROM kv_items AS i JOIN kv_namespaces AS n ON n.ns = i.ns
WHERE {_LIVE} AND (:prefix = '' OR i.ns = :prefix OR substr(i.ns, 1, :plen) = :prefix || '.')
    AND (n.seq > :nseq OR (n.seq = :nseq AND i.seq > :iseq)){{pushed}}
ORDER BY n.seq, i.seq LIMIT :page
"""
_UPSERT = """
INSERT INTO kv_items (ns, key, seq, value, created_at, updated_at, ttl, expires_at)
VALUES (:ns, :key, (SELECT coalesce(max(seq), 0) + 1 FROM kv_items WHERE ns = :ns),
        :value, :now_iso, :now_iso, :ttl, :expires_at)
ON CONFLICT (ns, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at,
    ttl = excluded.ttl, expires_at = excluded.expires_at
"""
_ADD_NAMESPACE = """
INSERT OR IGNORE INTO kv_namespaces (ns, seq)
VALUES (?, (SELECT coalesce(max(seq), 0) + 1 FROM kv_namespaces))
"""
_FIRST_PAGE, _MAX_PAGE = 25, 800
"""Rows read per query while scanning: few first (most searches want a page of 10), four
times more each query after that; bounds memory, not results."""


def _encode_ns(namespace: Namespace) -> str:
    return ".".join(namespace)


def _decode_ns(text: str) -> Namespace:
    return tuple(text.split(".")) if text else ()


def _record(row: Sequence[Any]) -> Record:
    ns, key, value, created, updated, ttl = row[:6]
    return Record(
        _decode_ns(ns), key, json.loads(value), datetime.fromisoformat(created),
        datetime.fromisoformat(updated), ttl,
    )


def _pushed_sql(filter: Mapping[str, Any] | None, params: dict[str, Any]) -> str:
    """SQL pre-filter for ``filter`` (``AND ...`` clauses), adding its values to ``params``."""
    clauses = []
    for n, (field, op, bound) in enumerate(pushable_conditions(filter)):
        value = f"json_extract(i.value, '$.{field}')"
        if op != "=":
            value = f"CAST({value} AS REAL)"
        clauses.append(f"\n    AND {value} {op} :f{n}")
        params[f"f{n}"] = bound
    return "".join(clauses)


def _expires_at(ttl: float | None, now: datetime) -> float | None:
    seconds = minutes_to_seconds(ttl)
    return None if seconds is None else now.timestamp() + seconds


class SqliteStore(Closable, RecordStore):
    """A durable store in one SQLite file with LangGraph's ``SqliteStore`` API.

    Args:
        conn: a file path (picklable: ships to Celery workers, which reopen the
            file) or an open ``sqlite3.Connection`` (this process only).
        index: semantic-search configuration; not supported, must stay None.
        ttl: optional ``TTLConfig`` (default TTL in minutes, refresh on read).
    """

    _backend: SqliteFile

    def __init__(
        self, conn: str | os.PathLike[str] | sqlite3.Connection, *, index: Any = None,
        ttl: TTLConfig | None = None,
    ) -> None:
        check_index_config("SqliteStore", index)
        self.ttl_config = check_ttl_config(ttl)
        self._backend = SqliteFile(conn, schema=_SCHEMA, what="SqliteStore")

    @classmethod
    def from_conn_string(
        cls, conn_string: str, *, index: Any = None, ttl: TTLConfig | None = None
    ) -> Self:
        """A store on the file ``conn_string``; ``with SqliteStore.from_conn_string(p) as s``."""
        return cls(conn_string, index=index, ttl=ttl)

    def setup(self) -> None:
        """Create the tables now (they are created on first use anyway)."""
        with self._backend.transaction():
            pass

    def _sweep(self, now: datetime) -> int:
        with self._backend.transaction() as conn:
            cursor = conn.execute("DELETE FROM kv_items WHERE expires_at <= ?", (now.timestamp(),))
            return cursor.rowcount

    def _fetch(self, keys: Sequence[tuple[Namespace, str]], now: datetime) -> dict[
        tuple[Namespace, str], Record
    ]:
        query = f"SELECT {_COLUMNS} FROM kv_items AS i WHERE ns = :ns AND key = :key AND {_LIVE}"
        found: dict[tuple[Namespace, str], Record] = {}
        with self._backend.transaction(write=False) as conn:
            for namespace, key in keys:
                params = {"ns": _encode_ns(namespace), "key": key, "now": now.timestamp()}
                row = conn.execute(query, params).fetchone()
                if row is not None:
                    found[(namespace, key)] = _record(row)
        return found

    def _scan(
        self, prefix: Namespace, now: datetime, filter: Mapping[str, Any] | None
    ) -> Generator[Record, None, None]:
        text = _encode_ns(prefix)
        params: dict[str, Any] = {
            "now": now.timestamp(), "prefix": text, "plen": len(text) + 1, "nseq": 0, "iseq": 0,
            "page": _FIRST_PAGE,
        }
        query = _SCAN.format(pushed=_pushed_sql(filter, params))
        while True:
            with self._backend.transaction(write=False) as conn:
                rows = conn.execute(query, params).fetchall()
            yield from (_record(row) for row in rows)
            if len(rows) < params["page"]:
                return
            params["nseq"], params["iseq"] = rows[-1][6], rows[-1][7]
            params["page"] = min(params["page"] * 4, _MAX_PAGE)

    def _namespaces(self, now: datetime) -> list[Namespace]:
        query = f"SELECT DISTINCT i.ns FROM kv_items AS i WHERE {_LIVE}"
        with self._backend.transaction(write=False) as conn:
            rows = conn.execute(query, {"now": now.timestamp()}).fetchall()
        return [_decode_ns(row[0]) for row in rows]

    def _write(self, writes: Sequence[Write], now: datetime) -> None:
        encoded = [
            (w, None if w.value is None else dump_value(w.value, w.namespace, w.key))
            for w in writes
        ]
        with self._backend.transaction() as conn:
            self._sweep(now)  # an expired item put again starts anew, at the end
            for write, value in encoded:
                ns = _encode_ns(write.namespace)
                if value is None:
                    conn.execute("DELETE FROM kv_items WHERE ns = ? AND key = ?", (ns, write.key))
                    continue
                conn.execute(_ADD_NAMESPACE, (ns,))
                conn.execute(_UPSERT, {
                    "ns": ns, "key": write.key, "value": value, "now_iso": now.isoformat(),
                    "ttl": write.ttl, "expires_at": _expires_at(write.ttl, now),
                })

    def _touch(self, records: Sequence[Record], now: datetime) -> None:
        with self._backend.transaction() as conn:
            conn.executemany(
                "UPDATE kv_items SET expires_at = ? WHERE ns = ? AND key = ? AND ttl IS NOT NULL",
                [
                    (_expires_at(r.ttl, now), _encode_ns(r.namespace), r.key)
                    for r in records
                ],
            )
