"""Every Redis key of RedisStore and RedisCache, built here, with the Lua scripts beside them.

Layout (``P`` is the prefix, escaped so it holds no ``{ } :``; ``N`` a namespace as
its labels joined by "." (labels never contain "."); ``K`` an item key, any text)::

    {P:kv}:seq                      str   counter: order of namespaces and items
    {P:kv}:nsreg                    zset  namespace N -> order it was first written
    {P:kv}:ns:N                     zset  item key K -> order it was created (its index)
    {P:kv}:item:<len(N)>:N:K        hash  v (JSON value), c/u (ISO created/updated), t (TTL min)
    {P:cache}:<json(namespace)>:K   str   serializer tag, NUL, bytes; Redis expiry = entry TTL

Every kv key carries the hash tag ``{P:kv}``, so a put (one script over the
counter, the registry, the indexes and the items of a batch) runs unchanged on Redis Cluster;
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
    "REFRESH",
    "UNINDEX_IF_GONE",
    "WRITE",
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


WRITE = """
-- KEYS: seq, registry, then (index, item) per write
-- ARGV: now_iso, then per write: op ('put'|'del'), ns_text, key, value, ttl_ms|'', ttl_min|''
-- A put keeps an existing item's created_at and index place; a new (or expired) item gets
-- the next sequence number, and a namespace its place on first write. A delete removes the
-- item and its index entry together, so the two never disagree.
local now = ARGV[1]
for i = 0, (#KEYS - 2) / 2 - 1 do
  local index, item, a = KEYS[3 + 2 * i], KEYS[4 + 2 * i], 2 + 6 * i
  local op, ns, key = ARGV[a], ARGV[a + 1], ARGV[a + 2]
  if op == 'del' then
    redis.call('DEL', item)
    redis.call('ZREM', index, key)
  else
    if redis.call('ZSCORE', KEYS[2], ns) == false then
      redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[1]), ns)
    end
    if redis.call('EXISTS', item) == 0 then
      redis.call('ZADD', index, redis.call('INCR', KEYS[1]), key)
      redis.call('HSET', item, 'c', now)
    end
    redis.call('HSET', item, 'v', ARGV[a + 3], 'u', now, 't', ARGV[a + 5])
    if ARGV[a + 4] == '' then
      redis.call('PERSIST', item)
    else
      redis.call('PEXPIRE', item, ARGV[a + 4])
    end
  end
end
return 1
"""
"""Apply a batch's puts and deletes in one atomic script (one round trip, one slot)."""

REFRESH = """
-- KEYS: items; restarts each item's TTL from its own stored minutes (a put may change them)
for _, item in ipairs(KEYS) do
  local t = redis.call('HGET', item, 't')
  if t and t ~= '' then
    redis.call('PEXPIRE', item, math.floor(tonumber(t) * 60000))
  end
end
return 1
"""
"""Restart the TTL clock of items."""

UNINDEX_IF_GONE = """
-- KEYS: index, then items; ARGV: their keys. Drops index entries of expired items,
-- unless an item was written again meanwhile.
for i = 2, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 0 then
    redis.call('ZREM', KEYS[1], ARGV[i - 1])
  end
end
return 1
"""
"""Remove the index entries of items that expired (never of one written again since)."""
