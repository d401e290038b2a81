"""Node and ``@task`` caching: keys from inputs, lookups and stores in the run's cache.

A cache follows LangGraph's ``BaseCache`` API: ``get([(ns, key), ...])`` returns the
entries found and ``set({(ns, key): (value, ttl)})`` stores some. Nodes cache their
writes, ``@task`` calls their return value, each under the namespace
``("__pregel_ns_writes", function, [node])`` as LangGraph does, and a key that
hashes the input, so every process computes the same key for the same input and
workers sharing a durable cache share its hits.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from durable_graph.scheduler.channels import MISSING
from durable_graph.types import CachePolicy

__all__ = ["CACHE_NS_WRITES", "CacheKey", "cache_get", "cache_put", "identifier", "make_key"]

log = logging.getLogger("durable_graph.cache")

CACHE_NS_WRITES = "__pregel_ns_writes"
"""First part of every namespace this package caches task results under."""


@dataclass(frozen=True)
class CacheKey:
    """Where one task's result is cached."""

    ns: tuple[str, ...]
    """Namespace: (CACHE_NS_WRITES, function identifier[, node name])."""
    key: str
    """Hash of what the policy's ``key_func`` made of the input."""
    ttl: int | None
    """Seconds the entry lives; None: no expiry."""


def identifier(fn: Any) -> str:
    """``module.qualname`` of a function (``__dynamic__`` when it has none)."""
    module, name = getattr(fn, "__module__", None), getattr(fn, "__qualname__", None)
    if module is None or name is None:
        return "__dynamic__"
    return f"{module}.{name}"


def make_key(policy: CachePolicy[Any], ns: tuple[str, ...], *args: Any, **kwargs: Any) -> CacheKey:
    """The key a task with these arguments is cached under."""
    raw = policy.key_func(*args, **kwargs)
    data = raw.encode() if isinstance(raw, str) else bytes(raw)
    return CacheKey(ns, hashlib.blake2b(data, digest_size=16).hexdigest(), policy.ttl)


def cache_get(cache: Any, key: CacheKey) -> Any:
    """The cached value, or MISSING (also when the cache cannot be read: logged)."""
    try:
        found = cache.get([(key.ns, key.key)])
    except Exception:
        log.warning("cache read of %s failed; the task runs", key.ns, exc_info=True)
        return MISSING
    return found.get((key.ns, key.key), MISSING)


def cache_put(cache: Any, key: CacheKey, value: Any) -> None:
    """Store a task's result (a failed store is logged: the run goes on)."""
    try:
        cache.set({(key.ns, key.key): (value, key.ttl)})
    except Exception:
        log.warning("cache write of %s failed", key.ns, exc_info=True)


@dataclass(frozen=True)
class CachingCall:
    """A ``@task`` body that stores its result in the running task's cache.

    It holds the key, not the cache: wherever it runs (a pool thread or a worker),
    it uses that run's cache, so it ships to workers as plain data.
    """

    fn: Callable[[], Any]
    key: CacheKey
    cache_of: Callable[[], Any]

    def __call__(self) -> Any:
        value = self.fn()
        cache = self.cache_of()
        if cache is not None:
            cache_put(cache, self.key, value)
        return value
