"""RedisCache: node results cached in Redis, shared by every worker, TTL by Redis expiry.

Each entry is one string key (layout in ``durable_graph.store.kv.redis_keys``)
holding the serializer's tag, a NUL byte and the bytes; ``SET ... PX`` gives it
its TTL, so Redis drops expired entries itself. ``clear`` finds a namespace's
entries with ``SCAN MATCH`` (no index to keep in step). An entry that cannot be
decoded (a format from another version, or a signature that does not verify
with a signing serde) is logged, deleted and treated as a miss.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

from durable_graph.errors import SerializationError
from durable_graph.store.cache.base import (
    BaseCache,
    FullKey,
    Namespace,
    ValueT,
    check_entries,
    check_keys,
    check_namespaces,
)
from durable_graph.store.closing import Closable
from durable_graph.store.kv.redis_keys import CacheKeys
from durable_graph.store.redis.connection import Client
from durable_graph.store.redis_target import RedisTarget
from durable_graph.store.serde import Serializer

__all__ = ["RedisCache"]

log = logging.getLogger("durable_graph.cache")
_SCAN_COUNT = 500
"""Keys Redis examines per SCAN step while clearing."""


class RedisCache(Closable, BaseCache[ValueT]):
    """A node cache on Redis with LangGraph's ``RedisCache`` API, shared by all workers.

    Args:
        redis: a ``redis://`` URL (picklable: workers reopen it) or a ``redis.Redis``
            client built with ``decode_responses=False``.
        serde: serializer of cached values (default msgpack, no pickle fallback).
        prefix: namespace of every key, so several apps (or tests) share a server.
        cluster: open the URL as a Redis Cluster.
    """

    _backend: RedisTarget

    def __init__(
        self, redis: str | Client, *, serde: Serializer | None = None,
        prefix: str = "durable_graph", cluster: bool = False,
    ) -> None:
        super().__init__(serde=serde)
        self.prefix = prefix
        self.keys = CacheKeys.for_prefix(prefix)
        self._backend = RedisTarget(redis, what="RedisCache", cluster=cluster)

    def get(self, keys: Sequence[FullKey]) -> dict[FullKey, ValueT]:
        """The live cached values among ``keys``."""
        check_keys(keys)
        if not keys:
            return {}
        names = [self.keys.entry(ns, key) for ns, key in keys]
        raw = self._backend.conn.call("reading the node cache", lambda c: c.mget(names))
        found: dict[FullKey, ValueT] = {}
        for full_key, name, blob in zip(keys, names, raw, strict=True):
            if blob is not None:
                value = self._decode(name, bytes(blob))
                if value is not _MISS:
                    found[full_key] = value
        return found

    def _decode(self, name: str, blob: bytes) -> Any:
        tag, sep, data = blob.partition(b"\0")
        try:
            if not sep:
                raise SerializationError("no format tag")
            return self.serde.loads_typed((tag.decode(), data))
        except (SerializationError, UnicodeDecodeError) as exc:
            log.warning("dropping unreadable node cache entry %s: %s", name, exc)
            self._backend.conn.call("dropping a cache entry", lambda c: c.delete(name))
            return _MISS

    def set(self, pairs: Mapping[FullKey, tuple[ValueT, int | None]]) -> None:
        """Store each value for its TTL in seconds (None: until cleared)."""
        check_entries(pairs)
        entries = []
        for (ns, key), (value, ttl) in pairs.items():
            tag, data = self.serde.dumps_typed(value)
            px = None if ttl is None else max(1, round(ttl * 1000))
            entries.append((self.keys.entry(ns, key), tag.encode() + b"\0" + data, px))

        def run(client: Client) -> None:
            pipe = client.pipeline(transaction=False)
            for name, blob, px in entries:
                pipe.set(name, blob, px=px)
            pipe.execute()

        if entries:
            self._backend.conn.call("writing the node cache", run)

    def clear(self, namespaces: Sequence[Namespace] | None = None) -> None:
        """Drop every entry of ``namespaces``, or all entries when None."""
        check_namespaces(namespaces)
        if namespaces is None:
            patterns = [self.keys.all_pattern()]
        else:
            patterns = [self.keys.namespace_pattern(tuple(ns)) for ns in namespaces]
        for pattern in patterns:
            self._backend.conn.call("clearing the node cache", partial(_unlink, pattern=pattern))


_MISS: Any = object()
"""Marks an entry that could not be decoded."""


def _unlink(client: Client, pattern: str) -> None:
    """Delete every key matching ``pattern``, a SCAN page at a time."""
    batch: list[bytes] = []
    for name in client.scan_iter(match=pattern, count=_SCAN_COUNT):
        batch.append(name)
        if len(batch) >= _SCAN_COUNT:
            client.unlink(*batch)
            batch.clear()
    if batch:
        client.unlink(*batch)
