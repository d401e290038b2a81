"""InMemoryStore: the long-term memory store in a dict, for tests and embedded runs.

Values are kept as given (a shallow copy of the dict, as LangGraph does), so they
need not be JSON. It lives in one process: a copy pickled to a Celery worker is a
snapshot, not shared; use ``SqliteStore`` or ``RedisStore`` to share memory.
"""

from __future__ import annotations

import threading
from collections.abc import Generator, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from durable_graph.store.kv.base import check_index_config, check_ttl_config
from durable_graph.store.kv.engine import Record, RecordStore, Write, minutes_to_seconds
from durable_graph.store.kv.match import under_prefix
from durable_graph.store.kv.ops import Namespace, Op, Result, TTLConfig

__all__ = ["InMemoryStore"]

_Slot = tuple[Record, datetime | None]
"""A record and when it expires (None: never)."""


def _expiry(ttl: float | None, now: datetime) -> datetime | None:
    seconds = minutes_to_seconds(ttl)
    return None if seconds is None else now + timedelta(seconds=seconds)


class InMemoryStore(RecordStore):
    """A thread-safe in-process store with LangGraph's ``InMemoryStore`` API.

    Args:
        index: semantic-search configuration; not supported, must stay None.
        ttl: optional ``TTLConfig`` (default TTL in minutes, refresh on read).
    """

    def __init__(self, *, index: Any = None, ttl: TTLConfig | None = None) -> None:
        check_index_config("InMemoryStore", index)
        self.ttl_config = check_ttl_config(ttl)
        self._data: dict[Namespace, dict[str, _Slot]] = {}
        self._lock = threading.RLock()

    def __getstate__(self) -> dict[str, Any]:
        """Pickle the items (a snapshot), never the lock or sweeper thread."""
        with self._lock:
            data = {ns: dict(items) for ns, items in self._data.items()}
            return {"ttl_config": self.ttl_config, "data": data}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.ttl_config = state["ttl_config"]
        self._data = state["data"]
        self._lock = threading.RLock()

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        """``batch`` inline: nothing here blocks, so no thread hop."""
        return self.batch(ops)

    def _live(self, namespace: Namespace, key: str, now: datetime) -> Record | None:
        """The live record at namespace/key; drops it if it expired (caller holds the lock)."""
        items = self._data.get(namespace, {})
        slot = items.get(key)
        if slot is None:
            return None
        if slot[1] is not None and slot[1] <= now:
            del items[key]
            return None
        return slot[0]

    def _fetch(self, keys: Sequence[tuple[Namespace, str]], now: datetime) -> dict[
        tuple[Namespace, str], Record
    ]:
        with self._lock:
            found = {k: self._live(k[0], k[1], now) for k in keys}
        return {k: r for k, r in found.items() if r is not None}

    def _scan(
        self, prefix: Namespace, now: datetime, filter: Mapping[str, Any] | None
    ) -> Generator[Record, None, None]:
        with self._lock:
            namespaces = [ns for ns in self._data if under_prefix(ns, prefix)]
        for namespace in namespaces:
            with self._lock:
                keys = list(self._data.get(namespace, ()))
                records = [self._live(namespace, key, now) for key in keys]
            yield from (r for r in records if r is not None)

    def _namespaces(self, now: datetime) -> list[Namespace]:
        with self._lock:
            return [
                ns for ns, items in self._data.items()
                if any(self._live(ns, key, now) for key in list(items))
            ]

    def _write(self, writes: Sequence[Write], now: datetime) -> None:
        with self._lock:
            for write in writes:
                old = self._live(write.namespace, write.key, now)
                items = self._data.setdefault(write.namespace, {})
                if write.value is None:
                    items.pop(write.key, None)
                    continue
                record = Record(
                    write.namespace, write.key, write.value,
                    old.created_at if old else now, now, write.ttl,
                )
                items[write.key] = (record, _expiry(write.ttl, now))

    def _sweep(self, now: datetime) -> int:
        with self._lock:
            expired = [
                (ns, key) for ns, items in self._data.items() for key, (_, expires) in items.items()
                if expires is not None and expires <= now
            ]
            for ns, key in expired:
                del self._data[ns][key]
        return len(expired)

    def _touch(self, records: Sequence[Record], now: datetime) -> None:
        with self._lock:
            for record in records:
                items = self._data.get(record.namespace, {})
                slot = items.get(record.key)
                if slot is not None and slot[0].ttl is not None:
                    items[record.key] = (slot[0], _expiry(slot[0].ttl, now))
