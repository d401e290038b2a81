"""SqliteCache: node results cached in one SQLite file, shared by the processes of a machine.

A row per (namespace, key) holds the serializer's tag and bytes and, for entries
with a TTL, the wall-clock time it expires. Expired rows are never returned and
are deleted by the next ``set``.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Mapping, Sequence

from durable_graph.store.cache.base import (
    BaseCache,
    FullKey,
    Namespace,
    ValueT,
    check_entries,
    check_keys,
    check_namespaces,
)
from durable_graph.store.closing import Closable
from durable_graph.store.serde import Serializer
from durable_graph.store.sqlite_file import SqliteFile

__all__ = ["SqliteCache"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS node_cache (
    ns TEXT NOT NULL,
    key TEXT NOT NULL,
    expires_at REAL,
    tag TEXT NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (ns, key)
);
"""


def _encode_ns(namespace: Namespace) -> str:
    """A namespace as text: JSON, so any label (commas, dots, empty) round-trips."""
    return json.dumps(list(namespace), ensure_ascii=False)


class SqliteCache(Closable, BaseCache[ValueT]):
    """A durable node cache in one SQLite file with LangGraph's ``SqliteCache`` API.

    Args:
        path: the database file (picklable: ships to workers, which reopen it).
        serde: serializer of cached values (default msgpack, no pickle fallback).
    """

    _backend: SqliteFile

    def __init__(
        self, *, path: str | os.PathLike[str] | sqlite3.Connection,
        serde: Serializer | None = None,
    ) -> None:
        super().__init__(serde=serde)
        self._backend = SqliteFile(path, schema=_SCHEMA, what="SqliteCache")

    def get(self, keys: Sequence[FullKey]) -> dict[FullKey, ValueT]:
        """The live cached values among ``keys``."""
        check_keys(keys)
        query = (
            "SELECT tag, value FROM node_cache WHERE ns = ? AND key = ? "
            "AND (expires_at IS NULL OR expires_at > ?)"
        )
        now = time.time()
        found: dict[FullKey, tuple[str, bytes]] = {}
        if not keys:
            return {}
        with self._backend.transaction(write=False) as conn:
            for ns, key in keys:
                row = conn.execute(query, (_encode_ns(ns), key, now)).fetchone()
                if row is not None:
                    found[(ns, key)] = (row[0], bytes(row[1]))
        return {k: self.serde.loads_typed(v) for k, v in found.items()}

    def set(self, pairs: Mapping[FullKey, tuple[ValueT, int | None]]) -> None:
        """Store each value for its TTL in seconds (None: until cleared)."""
        check_entries(pairs)
        now = time.time()
        rows = [
            (_encode_ns(ns), key, None if ttl is None else now + ttl, *self.serde.dumps_typed(v))
            for (ns, key), (v, ttl) in pairs.items()
        ]
        with self._backend.transaction() as conn:
            conn.execute("DELETE FROM node_cache WHERE expires_at <= ?", (now,))
            conn.executemany("INSERT OR REPLACE INTO node_cache VALUES (?, ?, ?, ?, ?)", rows)

    def clear(self, namespaces: Sequence[Namespace] | None = None) -> None:
        """Drop every entry of ``namespaces``, or all entries when None."""
        check_namespaces(namespaces)
        with self._backend.transaction() as conn:
            if namespaces is None:
                conn.execute("DELETE FROM node_cache")
                return
            conn.executemany(
                "DELETE FROM node_cache WHERE ns = ?", [(_encode_ns(ns),) for ns in namespaces]
            )
