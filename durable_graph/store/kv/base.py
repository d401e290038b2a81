"""BaseStore: LangGraph's long-term memory API (put, get, search, delete, list_namespaces).

Every public method builds one op (``durable_graph.store.kv.ops``) and runs it
through ``batch`` (sync) or ``abatch`` (async): a store implements those two and
nothing else, exactly as a LangGraph ``BaseStore`` subclass does. The async twins
are thin adapters over the same op builders. The op and item types are re-exported
here, as ``langgraph.store.base`` exports them, so that import path swaps too.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from typing import Any, Literal, cast

from durable_graph.errors import GraphValueError
from durable_graph.store.kv.ops import (
    NOT_PROVIDED,
    GetOp,
    InvalidNamespaceError,
    Item,
    ListNamespacesOp,
    MatchCondition,
    NamespacePath,
    NotProvided,
    Op,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
    TTLConfig,
    is_positive_number,
    validate_namespace,
    validate_namespace_labels,
)

__all__ = [
    "NOT_PROVIDED",
    "BaseStore",
    "GetOp",
    "InvalidNamespaceError",
    "Item",
    "ListNamespacesOp",
    "MatchCondition",
    "NamespacePath",
    "NotProvided",
    "Op",
    "PutOp",
    "Result",
    "SearchItem",
    "SearchOp",
    "TTLConfig",
    "check_index_config",
    "check_ttl_config",
]

_TTL_KEYS = frozenset(TTLConfig.__annotations__)


def check_index_config(store: str, index: object) -> None:
    """Raise a clear error when a store is asked for semantic (vector) search."""
    if index is not None:
        raise GraphValueError(
            f"{store}(index=...) configures semantic (vector) search, which durable_graph "
            "stores do not support; drop index= and search with filter= instead"
        )


def check_ttl_config(ttl: TTLConfig | None) -> TTLConfig | None:
    """A copy of ``ttl`` after checking its keys and values; GraphValueError otherwise."""
    if ttl is None:
        return None
    if not isinstance(ttl, Mapping):
        raise GraphValueError(f"ttl must be a TTLConfig dict, got {type(ttl).__name__}")
    unknown = sorted(set(ttl) - _TTL_KEYS)
    if unknown:
        raise GraphValueError(f"unknown TTLConfig key(s) {unknown}: use {sorted(_TTL_KEYS)}")
    default = ttl.get("default_ttl")
    if default is not None and not is_positive_number(default):
        raise GraphValueError(f"default_ttl must be positive minutes or None, got {default!r}")
    return cast(TTLConfig, dict(ttl))


class BaseStore(ABC):
    """A key-value store of JSON-like dicts under hierarchical namespaces, shared by runs.

    Subclasses implement ``batch`` (and may override ``abatch``, which by default
    runs ``batch`` in a worker thread). Items may carry a TTL in minutes; reads
    refresh it unless ``TTLConfig(refresh_on_read=False)`` or ``refresh_ttl=False``.
    """

    supports_ttl: bool = True
    """Every durable_graph store expires items (LangGraph's InMemoryStore does not)."""
    ttl_config: TTLConfig | None = None
    """Default TTL behaviour; None means no default TTL and reads refresh."""

    @abstractmethod
    def batch(self, ops: Iterable[Op]) -> list[Result]:
        """Execute ``ops`` in order; reads see the store as it was before the batch's writes."""

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        """``batch`` without blocking the event loop."""
        return await asyncio.to_thread(self.batch, list(ops))

    # -- op builders shared by the sync and async methods ------------------

    def _refresh(self, refresh_ttl: bool | None) -> bool:
        if refresh_ttl is not None:
            return refresh_ttl
        return bool((self.ttl_config or {}).get("refresh_on_read", True))

    def _get_op(self, namespace: tuple[str, ...], key: str, refresh_ttl: bool | None) -> GetOp:
        validate_namespace_labels(namespace)
        return GetOp(namespace, str(key), self._refresh(refresh_ttl))

    def _search_op(
        self, prefix: tuple[str, ...], *, filter: dict[str, Any] | None, limit: int, offset: int,
        query: str | None, refresh_ttl: bool | None,
    ) -> SearchOp:
        validate_namespace_labels(prefix)
        return SearchOp(prefix, filter, limit, offset, query, self._refresh(refresh_ttl))

    def _put_op(
        self, namespace: tuple[str, ...], key: str, value: Mapping[str, Any] | None,
        index: Literal[False] | list[str] | None, ttl: float | NotProvided | None,
    ) -> PutOp:
        validate_namespace(namespace)
        if isinstance(ttl, NotProvided):
            ttl = (self.ttl_config or {}).get("default_ttl")
        return PutOp(namespace, str(key), value, index=index, ttl=ttl)

    def _delete_op(self, namespace: tuple[str, ...], key: str) -> PutOp:
        validate_namespace_labels(namespace)
        return PutOp(namespace, str(key), None, ttl=None)

    @staticmethod
    def _list_op(
        prefix: NamespacePath | None, suffix: NamespacePath | None, max_depth: int | None,
        limit: int, offset: int,
    ) -> ListNamespacesOp:
        conditions = []
        for match_type, path in (("prefix", prefix), ("suffix", suffix)):
            if path:
                validate_namespace_labels(path)
                conditions.append(MatchCondition(match_type, path))  # type: ignore[arg-type]
        return ListNamespacesOp(tuple(conditions), max_depth, limit, offset)

    # -- sync API -----------------------------------------------------------

    def get(
        self, namespace: tuple[str, ...], key: str, *, refresh_ttl: bool | None = None
    ) -> Item | None:
        """The item at ``namespace``/``key``, or None."""
        return cast(Item | None, self.batch([self._get_op(namespace, key, refresh_ttl)])[0])

    def search(
        self, namespace_prefix: tuple[str, ...], /, *, query: str | None = None,
        filter: dict[str, Any] | None = None, limit: int = 10, offset: int = 0,
        refresh_ttl: bool | None = None,
    ) -> list[SearchItem]:
        """Items under ``namespace_prefix`` matching ``filter``, oldest first, paged."""
        op = self._search_op(
            namespace_prefix, filter=filter, limit=limit, offset=offset, query=query,
            refresh_ttl=refresh_ttl,
        )
        return cast(list[SearchItem], self.batch([op])[0])

    def put(
        self, namespace: tuple[str, ...], key: str, value: Mapping[str, Any],
        index: Literal[False] | list[str] | None = None, *,
        ttl: float | NotProvided | None = NOT_PROVIDED,
    ) -> None:
        """Store ``value`` (a dict) at ``namespace``/``key``, replacing what was there."""
        self.batch([self._put_op(namespace, key, value, index, ttl)])

    def delete(self, namespace: tuple[str, ...], key: str) -> None:
        """Remove the item at ``namespace``/``key`` (no error if absent)."""
        self.batch([self._delete_op(namespace, key)])

    def list_namespaces(
        self, *, prefix: NamespacePath | None = None, suffix: NamespacePath | None = None,
        max_depth: int | None = None, limit: int = 100, offset: int = 0,
    ) -> list[tuple[str, ...]]:
        """Namespaces holding items, sorted, filtered by prefix/suffix, truncated, paged."""
        op = self._list_op(prefix, suffix, max_depth, limit, offset)
        return cast(list[tuple[str, ...]], self.batch([op])[0])

    # -- async API ------------------------------------------------------------

    async def aget(
        self, namespace: tuple[str, ...], key: str, *, refresh_ttl: bool | None = None
    ) -> Item | None:
        """Async ``get``."""
        op = self._get_op(namespace, key, refresh_ttl)
        return cast(Item | None, (await self.abatch([op]))[0])

    async def asearch(
        self, namespace_prefix: tuple[str, ...], /, *, query: str | None = None,
        filter: dict[str, Any] | None = None, limit: int = 10, offset: int = 0,
        refresh_ttl: bool | None = None,
    ) -> list[SearchItem]:
        """Async ``search``."""
        op = self._search_op(
            namespace_prefix, filter=filter, limit=limit, offset=offset, query=query,
            refresh_ttl=refresh_ttl,
        )
        return cast(list[SearchItem], (await self.abatch([op]))[0])

    async def aput(
        self, namespace: tuple[str, ...], key: str, value: Mapping[str, Any],
        index: Literal[False] | list[str] | None = None, *,
        ttl: float | NotProvided | None = NOT_PROVIDED,
    ) -> None:
        """Async ``put``."""
        await self.abatch([self._put_op(namespace, key, value, index, ttl)])

    async def adelete(self, namespace: tuple[str, ...], key: str) -> None:
        """Async ``delete``."""
        await self.abatch([self._delete_op(namespace, key)])

    async def alist_namespaces(
        self, *, prefix: NamespacePath | None = None, suffix: NamespacePath | None = None,
        max_depth: int | None = None, limit: int = 100, offset: int = 0,
    ) -> list[tuple[str, ...]]:
        """Async ``list_namespaces``."""
        op = self._list_op(prefix, suffix, max_depth, limit, offset)
        return cast(list[tuple[str, ...]], (await self.abatch([op]))[0])
