"""InMemoryCache: node results cached in this process, with per-entry TTL."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from durable_graph.store.cache.base import (
    BaseCache,
    FullKey,
    Namespace,
    ValueT,
    check_entries,
    check_keys,
    check_namespaces,
)
from durable_graph.store.serde import Serializer

__all__ = ["InMemoryCache"]

_Entry = tuple[str, bytes, float | None]
"""Serializer tag, bytes, and the monotonic time it expires (None: never)."""


class InMemoryCache(BaseCache[ValueT]):
    """A thread-safe in-process cache with LangGraph's ``InMemoryCache`` API.

    Entries are stored serialized, so a hit returns a fresh copy. Pickling (to
    ship with a graph) copies the entries: the copy is not shared.
    """

    def __init__(self, *, serde: Serializer | None = None) -> None:
        super().__init__(serde=serde)
        self._cache: dict[Namespace, dict[str, _Entry]] = {}
        self._lock = threading.RLock()

    def __getstate__(self) -> dict[str, Any]:
        with self._lock:
            return {"serde": self.serde, "cache": {k: dict(v) for k, v in self._cache.items()}}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.serde = state["serde"]
        self._cache = state["cache"]
        self._lock = threading.RLock()

    async def aget(self, keys: Sequence[FullKey]) -> dict[FullKey, ValueT]:
        """``get`` inline: nothing here blocks, so no thread hop."""
        return self.get(keys)

    async def aset(self, pairs: Mapping[FullKey, tuple[ValueT, int | None]]) -> None:
        """``set`` inline."""
        self.set(pairs)

    async def aclear(self, namespaces: Sequence[Namespace] | None = None) -> None:
        """``clear`` inline."""
        self.clear(namespaces)

    def get(self, keys: Sequence[FullKey]) -> dict[FullKey, ValueT]:
        """The live cached values among ``keys``."""
        check_keys(keys)
        now = time.monotonic()
        found: dict[FullKey, tuple[str, bytes]] = {}
        with self._lock:
            for ns, key in keys:
                entries = self._cache.get(ns, {})
                entry = entries.get(key)
                if entry is None:
                    continue
                if entry[2] is not None and entry[2] <= now:
                    del entries[key]
                    continue
                found[(ns, key)] = (entry[0], entry[1])
        return {k: self.serde.loads_typed(v) for k, v in found.items()}

    def set(self, pairs: Mapping[FullKey, tuple[ValueT, int | None]]) -> None:
        """Store each value for its TTL in seconds (None: until cleared)."""
        check_entries(pairs)
        now = time.monotonic()
        encoded = {k: (*self.serde.dumps_typed(v), ttl) for k, (v, ttl) in pairs.items()}
        with self._lock:
            for (ns, key), (tag, data, ttl) in encoded.items():
                expires = None if ttl is None else now + ttl
                self._cache.setdefault(ns, {})[key] = (tag, data, expires)

    def clear(self, namespaces: Sequence[Namespace] | None = None) -> None:
        """Drop every entry of ``namespaces``, or all entries when None."""
        check_namespaces(namespaces)
        with self._lock:
            if namespaces is None:
                self._cache.clear()
            for ns in namespaces or ():
                self._cache.pop(tuple(ns), None)
