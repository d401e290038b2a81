"""Every Redis key of RedisStore and RedisCache, built here, with the Lua scripts beside them.

Layout (``P`` is the prefix, escaped so it holds no ``{ } :``; ``N`` a namespace as
its labels joined by "." (labels never contain "."); ``K`` an item key, any text)::

    {P:kv}:seq                      str   counter: order of namespaces and items
    {P:kv}:nsreg                    zset  namespace N -> order it was first written
    {P:kv}:ns:N                     zset  item key K -> order it was created (its index)
    {P:kv}:item:<len(N)>:N:K        hash  v (JSON value), c/u (ISO created/updated), t (TTL min)
    {P:cache}:<json(namespace)>:K   str   serializer tag, NUL, bytes; Redis expiry = entry TTL

Every kv key carries the hash tag ``{P:kv}``, so a put (one script over the
counter, the registry, the index and the item) runs unchanged on Redis Cluster;
the cache's keys share ``{P:cache}`` so ``MGET`` over them is single-slot too.
The length before ``N`` keeps item keys unambiguous whatever ``K`` contains, and
the JSON namespace in cache keys ends at its closing bracket, so a scan for one
namespace's entries never matches another namespace.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import ClassVar, Self

from durable_graph.errors import GraphValueError
from durable_graph.store.kv.ops import Namespace
from durable_graph.store.redis.keys import escape

__all__ = [
    "DELETE",
    "PUT",
    "REFRESH",
    "UNINDEX_IF_GONE",
    "CacheKeys",
    "KvKeys",
    "decode_ns",
    "encode_ns",
    "glob_escape",
]

_GLOB_SPECIAL = re.compile(r"([*?\[\]\\])")


def glob_escape(text: str) -> str:
    """``text`` as a literal inside a Redis ``MATCH`` pattern."""
    return _GLOB_SPECIAL.sub(r"\\\1", text)


def encode_ns(namespace: Namespace) -> str:
    """A kv namespace as key text (labels joined by ".")."""
    return ".".join(namespace)


def decode_ns(text: str) -> Namespace:
    """Inverse of ``encode_ns``."""
    return tuple(text.split(".")) if text else ()


@dataclass(frozen=True)
class _Tagged:
    """Keys that all start with one hash tag, ``{P:<kind>}``."""

    base: str
    """The hash tag every key starts with."""

    kind: ClassVar[str]

    @classmethod
    def for_prefix(cls, prefix: str) -> Self:
        """The keys of the store or cache under ``prefix``."""
        if not prefix:
            raise GraphValueError("a Redis key prefix must not be empty")
        return cls(f"{{{escape(prefix)}:{cls.kind}}}")


class KvKeys(_Tagged):
    """Keys of one RedisStore."""

    kind = "kv"

    @property
    def seq(self) -> str:
        """Counter giving namespaces and items their order."""
        return f"{self.base}:seq"

    @property
    def registry(self) -> str:
        """Sorted set of namespaces, by the order each was first written."""
        return f"{self.base}:nsreg"

    def index(self, ns_text: str) -> str:
        """Sorted set of one namespace's item keys, by creation order."""
        return f"{self.base}:ns:{ns_text}"

    def item(self, ns_text: str, key: str) -> str:
        """Hash of one item."""
        return f"{self.base}:item:{len(ns_text)}:{ns_text}:{key}"


class CacheKeys(_Tagged):
    """Keys of one RedisCache."""

    kind = "cache"

    @staticmethod
    def _ns(namespace: Namespace) -> str:
        return json.dumps(list(namespace), ensure_ascii=False, separators=(",", ":"))

    def entry(self, namespace: Namespace, key: str) -> str:
        """String key of one cached value."""
        return f"{self.base}:{self._ns(namespace)}:{key}"

    def namespace_pattern(self, namespace: Namespace) -> str:
        """``SCAN MATCH`` pattern of one namespace's entries (exactly that namespace)."""
        return f"{glob_escape(self.base)}:{glob_escape(self._ns(namespace))}:*"

    def all_pattern(self) -> str:
        """``SCAN MATCH`` pattern of every entry."""
        return f"{glob_escape(self.base)}:*"


PUT = """
-- KEYS: seq, registry, index, item; ARGV: ns_text, key, value, now_iso, ttl_ms|'', ttl_min|''
if redis.call('ZSCORE', KEYS[2], ARGV[1]) == false then
  redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[1]), ARGV[1])
end
if redis.call('EXISTS', KEYS[4]) == 0 then
  redis.call('ZADD', KEYS[3], redis.call('INCR', KEYS[1]), ARGV[2])
  redis.call('HSET', KEYS[4], 'c', ARGV[4])
end
redis.call('HSET', KEYS[4], 'v', ARGV[3], 'u', ARGV[4], 't', ARGV[6])
if ARGV[5] == '' then
  redis.call('PERSIST', KEYS[4])
else
  redis.call('PEXPIRE', KEYS[4], ARGV[5])
end
return 1
"""
"""Create or update one item, keeping its created_at and place; set or clear its expiry."""

REFRESH = """
-- KEYS: item; restarts the item's TTL from its own stored minutes (a put may have changed it)
local t = redis.call('HGET', KEYS[1], 't')
if t and t ~= '' then
  return redis.call('PEXPIRE', KEYS[1], math.floor(tonumber(t) * 60000))
end
return 0
"""
"""Restart one item's TTL clock."""

UNINDEX_IF_GONE = """
-- KEYS: index, item; ARGV: key. Drops an expired item's index entry, unless it was re-put.
if redis.call('EXISTS', KEYS[2]) == 0 then
  return redis.call('ZREM', KEYS[1], ARGV[1])
end
return 0
"""
"""Remove the index entry of an item that expired (never of one written again since)."""

DELETE = """
-- KEYS: index, item; ARGV: key. Item and index entry go together, so a concurrent put
-- never ends up with an item its index forgot.
redis.call('DEL', KEYS[2])
return redis.call('ZREM', KEYS[1], ARGV[1])
"""
"""Delete one item and its index entry."""
