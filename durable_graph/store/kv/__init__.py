"""The long-term memory store: ``BaseStore`` and its in-memory, SQLite and Redis backends."""

from __future__ import annotations

from durable_graph.store.kv.base import BaseStore
from durable_graph.store.kv.memory import InMemoryStore
from durable_graph.store.kv.ops import (
    GetOp,
    InvalidNamespaceError,
    Item,
    ListNamespacesOp,
    MatchCondition,
    PutOp,
    SearchItem,
    SearchOp,
    TTLConfig,
)
from durable_graph.store.kv.redis import RedisStore
from durable_graph.store.kv.sqlite import SqliteStore

__all__ = [
    "BaseStore",
    "GetOp",
    "InMemoryStore",
    "InvalidNamespaceError",
    "Item",
    "ListNamespacesOp",
    "MatchCondition",
    "PutOp",
    "RedisStore",
    "SearchItem",
    "SearchOp",
    "SqliteStore",
    "TTLConfig",
]
