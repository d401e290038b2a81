"""RedisStore: the long-term memory store on plain Redis (>= 6, no modules), shared by workers.

Each item is a hash with its JSON value and timestamps; each namespace has a
sorted-set index of its keys by creation order, and a registry orders the
namespaces (layout in ``durable_graph.store.kv.redis_keys``). A put is one Lua
script, so an item and its index never disagree. Item TTLs are Redis expiry
(``PEXPIRE``): Redis drops expired items itself, and a read that meets an index
entry whose item expired removes that entry.
"""

from __future__ import annotations

import json
from collections.abc import Generator, Mapping, Sequence
from datetime import datetime
from typing import Any, Self

from durable_graph.store.closing import Closable
from durable_graph.store.kv import redis_keys as rk
from durable_graph.store.kv.base import check_index_config, check_ttl_config
from durable_graph.store.kv.engine import Record, RecordStore, Write, dump_value
from durable_graph.store.kv.match import under_prefix
from durable_graph.store.kv.ops import Namespace, TTLConfig
from durable_graph.store.redis.connection import Client
from durable_graph.store.redis_target import RedisTarget

__all__ = ["RedisStore"]

_FIRST_PAGE, _MAX_PAGE = 25, 800
"""Index entries read per round trip while scanning a namespace: few first (most searches
want a page of 10), four times more each round trip after that."""
_FIELDS = ("v", "c", "u", "t")


def _record(namespace: Namespace, key: str, row: Sequence[bytes | None]) -> Record | None:
    value, created, updated, ttl = row
    if value is None or created is None or updated is None:
        return None  # expired or deleted
    return Record(
        namespace, key, json.loads(value), datetime.fromisoformat(created.decode()),
        datetime.fromisoformat(updated.decode()), float(ttl) if ttl else None,
    )


class RedisStore(Closable, RecordStore):
    """A durable store on Redis, shared by every process that uses the same URL and prefix.

    Args:
        conn: a ``redis://`` URL (picklable: workers reopen it) or a ``redis.Redis``
            client built with ``decode_responses=False``.
        prefix: namespace of every key, so several apps (or tests) share a server.
        index: semantic-search configuration; not supported, must stay None.
        ttl: optional ``TTLConfig`` (default TTL in minutes, refresh on read).
        cluster: open the URL as a Redis Cluster.
    """

    _backend: RedisTarget

    def __init__(
        self, conn: str | Client, *, prefix: str = "durable_graph", index: Any = None,
        ttl: TTLConfig | None = None, cluster: bool = False,
    ) -> None:
        check_index_config("RedisStore", index)
        self.ttl_config = check_ttl_config(ttl)
        self.prefix = prefix
        self.keys = rk.KvKeys.for_prefix(prefix)
        self._backend = RedisTarget(conn, what="RedisStore", cluster=cluster)

    @classmethod
    def from_conn_string(
        cls, url: str, *, prefix: str = "durable_graph", index: Any = None,
        ttl: TTLConfig | None = None,
    ) -> Self:
        """A store on ``url``; ``with RedisStore.from_conn_string(url) as store`` closes it."""
        return cls(url, prefix=prefix, index=index, ttl=ttl)

    def _item_key(self, namespace: Namespace, key: str) -> str:
        return self.keys.item(rk.encode_ns(namespace), key)

    def _read_rows(self, pairs: Sequence[tuple[Namespace, str]], action: str) -> list[Any]:
        def read(client: Client) -> list[Any]:
            pipe = client.pipeline(transaction=False)
            for namespace, key in pairs:
                pipe.hmget(self._item_key(namespace, key), list(_FIELDS))
            return list(pipe.execute())

        return self._backend.conn.call(action, read) if pairs else []

    def _fetch(self, keys: Sequence[tuple[Namespace, str]], now: datetime) -> dict[
        tuple[Namespace, str], Record
    ]:
        rows = self._read_rows(keys, "reading store items")
        found = {pair: _record(*pair, row) for pair, row in zip(keys, rows, strict=True)}
        return {pair: record for pair, record in found.items() if record is not None}

    def _registry(self) -> list[str]:
        """Every namespace ever written, in the order each was first written."""
        conn = self._backend.conn
        raw = conn.call("listing namespaces", lambda c: c.zrange(self.keys.registry, 0, -1))
        return [bytes(member).decode() for member in raw]

    def _scan(
        self, prefix: Namespace, now: datetime, filter: Mapping[str, Any] | None
    ) -> Generator[Record, None, None]:
        for text in self._registry():
            namespace = rk.decode_ns(text)
            if under_prefix(namespace, prefix):
                yield from self._scan_namespace(namespace)

    def _index_page(
        self, namespace: Namespace, after: str, size: int
    ) -> list[tuple[bytes, float]]:
        index = self.keys.index(rk.encode_ns(namespace))
        return list(self._backend.conn.call(
            "reading a namespace index",
            lambda c: c.zrangebyscore(index, after, "+inf", start=0, num=size, withscores=True),
        ))

    def _scan_namespace(
        self, namespace: Namespace, stale: list[str] | None = None
    ) -> Generator[Record, None, None]:
        """Live records of one namespace; index entries of expired ones are removed (and
        appended to ``stale`` when given)."""
        after, size = "-inf", _FIRST_PAGE
        while True:
            members = self._index_page(namespace, after, size)
            keys = [bytes(member).decode() for member, _ in members]
            rows = self._read_rows([(namespace, k) for k in keys], "reading store items")
            gone = []
            for key, row in zip(keys, rows, strict=True):
                record = _record(namespace, key, row)
                if record is None:
                    gone.append(key)
                else:
                    yield record
            self._unindex(namespace, gone)
            if stale is not None:
                stale.extend(gone)
            if len(members) < size:
                return
            after, size = f"({members[-1][1]!r}", min(size * 4, _MAX_PAGE)

    def _unindex(self, namespace: Namespace, keys: Sequence[str]) -> None:
        """Drop index entries of items that expired (unless written again meanwhile)."""
        if not keys:
            return
        text = rk.encode_ns(namespace)
        items = [self.keys.item(text, key) for key in keys]
        index = self.keys.index(text)
        self._run(rk.UNINDEX_IF_GONE, [index, *items], list(keys), "cleaning an index")

    def _run(self, source: str, keys: list[str], args: list[Any], action: str) -> None:
        """Run one script; every key shares the store's hash tag, so one slot, one call."""
        script = self._backend.script(source)
        self._backend.conn.call(action, lambda client: script(keys=keys, args=args))

    def _namespaces(self, now: datetime) -> list[Namespace]:
        """Namespaces whose oldest indexed item exists (two round trips), or failing
        that, any indexed item (a scan, only for namespaces whose first item expired)."""
        texts = self._registry()

        def heads(client: Client) -> list[Any]:
            pipe = client.pipeline(transaction=False)
            for text in texts:
                pipe.zrange(self.keys.index(text), 0, 0)
            return list(pipe.execute())

        firsts = [
            (text, bytes(head[0]).decode())
            for text, head in zip(texts, self._backend.conn.call("listing namespaces", heads),
                                  strict=True)
            if head
        ]
        rows = self._read_rows([(rk.decode_ns(t), k) for t, k in firsts], "listing namespaces")
        live = []
        for (text, _), row in zip(firsts, rows, strict=True):
            if row[0] is not None or self._any_live(rk.decode_ns(text)):
                live.append(rk.decode_ns(text))
        return live

    def _any_live(self, namespace: Namespace) -> bool:
        records = self._scan_namespace(namespace)
        try:
            return next(records, None) is not None
        finally:
            records.close()

    def _write(self, writes: Sequence[Write], now: datetime) -> None:
        keys, args = [self.keys.seq, self.keys.registry], [now.isoformat()]
        for write in writes:
            text = rk.encode_ns(write.namespace)
            keys += [self.keys.index(text), self.keys.item(text, write.key)]
            if write.value is None:
                args += ["del", text, write.key, "", "", ""]
                continue
            ttl = write.ttl
            args += [
                "put", text, write.key, dump_value(write.value, write.namespace, write.key),
                "" if ttl is None else str(max(1, round(ttl * 60_000))),
                "" if ttl is None else repr(float(ttl)),
            ]
        self._run(rk.WRITE, keys, args, "writing store items")

    def _sweep(self, now: datetime) -> int:
        """Redis expires items itself; this drops the index entries they left behind."""
        stale: list[str] = []
        for text in self._registry():
            for _ in self._scan_namespace(rk.decode_ns(text), stale):
                pass
        return len(stale)

    def _touch(self, records: Sequence[Record], now: datetime) -> None:
        items = [self._item_key(record.namespace, record.key) for record in records]
        self._run(rk.REFRESH, items, [], "refreshing item TTLs")
