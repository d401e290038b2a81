"""BaseCache: LangGraph's node-result cache API (get, set with per-entry TTL, clear).

Entries are addressed by ``(namespace, key)``: the namespace names the node (or
task), the key is a hash of its input. ``set`` takes ``{(namespace, key): (value,
ttl_seconds)}``; ``clear`` drops whole namespaces (exact match) or everything.
Values go through ``serde`` (by default msgpack without a pickle fallback, so a
shared cache never unpickles), so every backend returns a fresh copy.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, Generic, TypeAlias, TypeVar

from durable_graph.errors import GraphValueError
from durable_graph.store.kv.ops import is_positive_number
from durable_graph.store.serde import Serializer, TypedSerializer

__all__ = [
    "BaseCache",
    "FullKey",
    "Namespace",
    "ValueT",
    "check_entries",
    "check_keys",
    "check_namespaces",
]

ValueT = TypeVar("ValueT")
Namespace: TypeAlias = tuple[str, ...]
FullKey: TypeAlias = tuple[Namespace, str]


def _check_key(full_key: object) -> None:
    ok = (
        isinstance(full_key, tuple)
        and len(full_key) == 2
        and isinstance(full_key[0], tuple)
        and all(isinstance(label, str) for label in full_key[0])
        and isinstance(full_key[1], str)
    )
    if not ok:
        raise GraphValueError(
            f"a cache key must be (namespace tuple of str, key str), got {full_key!r}"
        )


def check_keys(keys: Sequence[FullKey]) -> None:
    """Raise GraphValueError unless every key is a (namespace, key) pair of strings."""
    for full_key in keys:
        _check_key(full_key)


def check_entries(pairs: Mapping[FullKey, tuple[Any, int | None]]) -> None:
    """Raise GraphValueError for a bad key, or a TTL that is not None or positive seconds."""
    for full_key, entry in pairs.items():
        _check_key(full_key)
        if not isinstance(entry, tuple) or len(entry) != 2:
            raise GraphValueError(
                f"cache entry for {full_key!r} must be (value, ttl), got {entry!r}"
            )
        ttl = entry[1]
        if ttl is not None and not is_positive_number(ttl):
            raise GraphValueError(
                f"cache TTL for {full_key!r} must be positive seconds or None, got {ttl!r}"
            )


def check_namespaces(namespaces: Sequence[Namespace] | None) -> None:
    """Raise GraphValueError unless ``namespaces`` is None or a sequence of str tuples."""
    for ns in namespaces or ():
        if not isinstance(ns, tuple) or not all(isinstance(label, str) for label in ns):
            raise GraphValueError(f"a cache namespace must be a tuple of str, got {ns!r}")


class BaseCache(ABC, Generic[ValueT]):
    """A cache of node results; backends implement ``get``, ``set`` and ``clear``."""

    serde: Serializer
    """How values become bytes; default msgpack with no pickle fallback."""

    def __init__(self, *, serde: Serializer | None = None) -> None:
        self.serde = serde or TypedSerializer(pickle_fallback=False)

    @abstractmethod
    def get(self, keys: Sequence[FullKey]) -> dict[FullKey, ValueT]:
        """The live cached values among ``keys`` (misses and expired entries left out)."""

    @abstractmethod
    def set(self, pairs: Mapping[FullKey, tuple[ValueT, int | None]]) -> None:
        """Store each value for its TTL in seconds (None: until cleared)."""

    @abstractmethod
    def clear(self, namespaces: Sequence[Namespace] | None = None) -> None:
        """Drop every entry of ``namespaces`` (exact match), or all entries when None."""

    async def aget(self, keys: Sequence[FullKey]) -> dict[FullKey, ValueT]:
        """Async ``get``."""
        return await asyncio.to_thread(self.get, keys)

    async def aset(self, pairs: Mapping[FullKey, tuple[ValueT, int | None]]) -> None:
        """Async ``set``."""
        await asyncio.to_thread(self.set, pairs)

    async def aclear(self, namespaces: Sequence[Namespace] | None = None) -> None:
        """Async ``clear``."""
        await asyncio.to_thread(self.clear, namespaces)
