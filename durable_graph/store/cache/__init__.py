"""Node caches: ``BaseCache`` and its in-memory, SQLite and Redis backends."""

from __future__ import annotations

from durable_graph.store.cache.base import BaseCache
from durable_graph.store.cache.memory import InMemoryCache
from durable_graph.store.cache.redis import RedisCache
from durable_graph.store.cache.sqlite import SqliteCache

__all__ = ["BaseCache", "InMemoryCache", "RedisCache", "SqliteCache"]
