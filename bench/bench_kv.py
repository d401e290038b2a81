"""Long-term memory stores and node caches side by side: ours vs LangGraph's, one run.

Stores: each is filled with ``--items`` items spread over 10 namespaces
(``("users", "u<i>", "memories")``), then timed per call (p50 / p95, microseconds):

- ``put``: a new item; ``get``: an existing item;
- ``search``: one namespace, first page of 10; ``filter``: the whole ``("users",)``
  prefix with ``{"score": {"$gte": 90}}`` (about 1 item in 10 matches), page of 10;
- ``list_ns``: ``list_namespaces(prefix=("users",))``.

Stores: ``lg-memory`` (LangGraph's InMemoryStore), ``dg-memory``, ``lg-sqlite``
(LangGraph's SqliteStore, if installed), ``dg-sqlite``, ``dg-redis``. Caches
(``set`` of one entry, ``get`` of one hit): LangGraph's and ours, in memory,
SQLite and Redis.

    python bench/bench_kv.py --url redis://127.0.0.1:6379/0 --items 2000 --calls 300
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import redis

from durable_graph import (
    InMemoryCache,
    InMemoryStore,
    RedisCache,
    RedisStore,
    SqliteCache,
    SqliteStore,
)

STORE_OPS = ("put", "get", "search", "filter", "list_ns")
CACHE_OPS = ("set", "get")


def timed(fn: Callable[[int], Any], calls: int) -> tuple[float, float]:
    """p50 and p95 of ``fn(i)`` over ``calls`` calls, in microseconds."""
    samples = []
    for i in range(calls):
        start = time.perf_counter()
        fn(i)
        samples.append((time.perf_counter() - start) * 1e6)
    samples.sort()
    return statistics.median(samples), samples[int(len(samples) * 0.95) - 1]


def fill(store: Any, items: int) -> None:
    """``items`` items over 10 namespaces, scores 0..99."""
    for n in range(items):
        ns = ("users", f"u{n % 10}", "memories")
        store.put(ns, f"m{n}", {"text": f"memory number {n}", "score": n % 100, "n": n})


def store_workload(store: Any, items: int, calls: int) -> dict[str, tuple[float, float]]:
    """Time every store op on a filled store."""
    fill(store, items)
    ns = ("users", "u3", "memories")
    return {
        "put": timed(lambda i: store.put(("users", "new"), f"k{i}", {"i": i, "score": i}), calls),
        "get": timed(lambda i: store.get(ns, f"m{(i * 10 + 3) % items}"), calls),
        "search": timed(lambda i: store.search(ns, limit=10), calls),
        "filter": timed(
            lambda i: store.search(("users",), filter={"score": {"$gte": 90}}, limit=10), calls
        ),
        "list_ns": timed(lambda i: store.list_namespaces(prefix=("users",)), calls),
    }


def cache_workload(cache: Any, calls: int) -> dict[str, tuple[float, float]]:
    """Time one-entry sets and one-key hits."""
    value = {"messages": [{"role": "ai", "content": "x" * 200}], "n": 1}
    ns = ("node", "summarize")
    return {
        "set": timed(lambda i: cache.set({(ns, f"k{i}"): (value, 300)}), calls),
        "get": timed(lambda i: cache.get([(ns, f"k{i}")]), calls),
    }


def stores(stack: ExitStack, folder: Path, url: str, prefix: str) -> Iterator[tuple[str, Any]]:
    """(name, store) pairs, LangGraph's beside ours."""
    from langgraph.store.memory import InMemoryStore as LGInMemoryStore

    yield "lg-memory", LGInMemoryStore()
    yield "dg-memory", InMemoryStore()
    try:
        from langgraph.store.sqlite import SqliteStore as LGSqliteStore
    except ImportError:
        pass
    else:
        conn = sqlite3.connect(
            folder / "lg-store.db", check_same_thread=False, isolation_level=None
        )
        stack.callback(conn.close)
        lg_sqlite = LGSqliteStore(conn)
        lg_sqlite.setup()
        yield "lg-sqlite", lg_sqlite
    yield "dg-sqlite", stack.enter_context(SqliteStore(folder / "dg-store.db"))
    yield "dg-redis", stack.enter_context(RedisStore(url, prefix=prefix))


def caches(stack: ExitStack, folder: Path, url: str, prefix: str) -> Iterator[tuple[str, Any]]:
    """(name, cache) pairs, LangGraph's beside ours."""
    from langgraph.cache.memory import InMemoryCache as LGInMemoryCache
    from langgraph.cache.redis import RedisCache as LGRedisCache
    from langgraph.cache.sqlite import SqliteCache as LGSqliteCache

    yield "lg-memory", LGInMemoryCache()
    yield "dg-memory", InMemoryCache()
    yield "lg-sqlite", LGSqliteCache(path=str(folder / "lg-cache.db"))
    yield "dg-sqlite", stack.enter_context(SqliteCache(path=folder / "dg-cache.db"))
    client = redis.Redis.from_url(url)
    stack.callback(client.close)
    yield "lg-redis", LGRedisCache(client, prefix=f"{prefix}:lgcache:")
    yield "dg-redis", stack.enter_context(RedisCache(url, prefix=prefix))


Rows = dict[str, dict[str, tuple[float, float]]]


def table(title: str, ops: tuple[str, ...], rows: Rows) -> None:
    """Print p50/p95 per op, one row per backend."""
    print(f"\n{title} (microseconds, p50 / p95)")
    print(f"{'backend':<10}" + "".join(f"{op:>18}" for op in ops))
    for name, result in rows.items():
        cells = "".join(f"{result[op][0]:>9.0f} /{result[op][1]:>7.0f}" for op in ops)
        print(f"{name:<10}{cells}")


def cleanup(url: str, prefix: str) -> None:
    """Delete every key the run wrote under ``prefix``."""
    client = redis.Redis.from_url(url)
    for pattern in (f"{{{prefix}*", f"{prefix}*"):
        for key in client.scan_iter(match=pattern, count=1000):
            client.unlink(key)
    client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="redis://127.0.0.1:6379/0", help="Redis URL")
    parser.add_argument("--items", type=int, default=2000, help="items in each store")
    parser.add_argument("--calls", type=int, default=300, help="timed calls per op")
    args = parser.parse_args()
    prefix = f"bench-kv-{uuid.uuid4().hex[:8]}"
    store_rows: Rows = {}
    cache_rows: Rows = {}
    try:
        with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
            for name, store in stores(stack, Path(tmp), args.url, prefix):
                store_rows[name] = store_workload(store, args.items, args.calls)
            for name, cache in caches(stack, Path(tmp), args.url, prefix):
                cache_rows[name] = cache_workload(cache, args.calls)
    finally:
        cleanup(args.url, prefix)
    table(f"stores, {args.items} items, {args.calls} calls per op", STORE_OPS, store_rows)
    table(f"caches, {args.calls} calls per op", CACHE_OPS, cache_rows)


if __name__ == "__main__":
    main()
