"""Node caches: ``BaseCache`` and its in-memory, SQLite and Redis backends."""

from __future__ import annotations

from durable_graph.store.cache.base import BaseCache
from durable_graph.store.cache.memory import InMemoryCache

__all__ = ["BaseCache", "InMemoryCache"]
