"""LangGraph checkpointers side by side: our adapter over our stores vs LangGraph's peers.

The same workload runs on every saver through LangGraph's own API: ``put`` (a
checkpoint whose two of three channels changed), ``put_writes`` (two writes of a
task), the latest ``get_tuple``, and ``list(limit=10)``. For each: p50 latency and
round trips to Redis per call (counted on redis-py's connection: a pipeline or a
script is one). Savers:

- ``dg-redis``: ``LangGraphSaver(RedisSaver)``, plain Redis, atomic fenced commits
- ``plainredis``: ``langgraph-checkpoint-plainredis`` 0.1.0 (plain Redis)
- ``dg-sqlite``: ``LangGraphSaver(SqliteSaver)``
- ``lg-sqlite``: ``langgraph-checkpoint-sqlite``
- ``dg-memory`` / ``lg-memory``: ours in memory vs LangGraph's InMemorySaver

    python bench/bench_langgraph_saver.py --url redis://127.0.0.1:6379/0 --steps 300
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import redis
import redis.connection
from langgraph.checkpoint.base import BaseCheckpointSaver, empty_checkpoint
from langgraph.checkpoint.memory import InMemorySaver as LGMemory
from langgraph.checkpoint.sqlite import SqliteSaver as LGSqlite
from langgraph_checkpoint_plainredis import RedisSaver as PlainRedis

from durable_graph import InMemorySaver, RedisSaver, SqliteSaver
from durable_graph.langgraph import LangGraphSaver

OPS = ("put", "put_writes", "get_tuple", "list10")


class RoundTrips:
    """Counts packets redis-py sends: one per command, pipeline or script call."""

    count = 0

    @classmethod
    @contextmanager
    def counting(cls) -> Iterator[None]:
        original = redis.connection.AbstractConnection.send_packed_command

        def send(self: Any, command: Any, check_health: bool = True) -> None:
            cls.count += 1
            original(self, command, check_health)

        redis.connection.AbstractConnection.send_packed_command = send  # type: ignore[method-assign]
        try:
            yield
        finally:
            redis.connection.AbstractConnection.send_packed_command = original  # type: ignore[method-assign]


def workload(saver: BaseCheckpointSaver, steps: int) -> dict[str, tuple[float, float]]:
    """p50 µs and round trips per call of each operation over ``steps`` steps."""
    times: dict[str, list[float]] = {op: [] for op in OPS}
    trips: dict[str, int] = dict.fromkeys(OPS, 0)
    thread = f"bench-{uuid.uuid4().hex[:8]}"
    config: Any = {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}
    versions: dict[str, Any] = {}
    values: dict[str, Any] = {"payload": "x" * 1024, "items": [], "step": 0}

    def timed(op: str, fn: Callable[[], Any]) -> Any:
        before = RoundTrips.count
        start = time.perf_counter()
        result = fn()
        times[op].append((time.perf_counter() - start) * 1e6)
        trips[op] += RoundTrips.count - before
        return result

    for step in range(steps):
        values = {**values, "items": [*values["items"][-9:], step], "step": step}
        changed = ["items", "step"] if step else list(values)
        for ch in changed:
            versions[ch] = saver.get_next_version(versions.get(ch), None)
        cp = empty_checkpoint()
        cp["channel_values"] = dict(values)
        cp["channel_versions"] = dict(versions)
        cp["versions_seen"] = {"node": {"step": versions["step"]}}
        new_versions = {ch: versions[ch] for ch in changed}
        meta: Any = {"source": "loop", "step": step, "parents": {}}
        config = timed("put", partial(saver.put, config, cp, meta, new_versions))
        writes = [("items", step), ("step", step)]
        timed("put_writes", partial(saver.put_writes, config, writes, f"task-{step}"))
        latest: Any = {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}
        timed("get_tuple", partial(saver.get_tuple, latest))
        timed("list10", partial(_list, saver, latest, 10))
    return {op: (statistics.median(times[op]), trips[op] / steps) for op in OPS}


def _list(saver: BaseCheckpointSaver, config: Any, limit: int) -> list[Any]:
    return list(saver.list(config, limit=limit))


Named = tuple[str, BaseCheckpointSaver, Callable[[], None]]


def savers(url: str, workdir: Path) -> Iterator[Named]:
    prefix = f"bench-lg-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(url)

    def drop_prefix(pattern: str) -> Callable[[], None]:
        def drop() -> None:
            keys = list(client.scan_iter(match=pattern, count=1000))
            for start in range(0, len(keys), 500):
                client.unlink(*keys[start:start + 500])
        return drop

    ours = RedisSaver.from_url(url, prefix=prefix + "-dg")
    yield "dg-redis", LangGraphSaver(ours), drop_prefix(f"*{prefix}-dg*")
    yield "plainredis", PlainRedis(redis.Redis.from_url(url), prefix=prefix + "-pr"), drop_prefix(
        f"{prefix}-pr*")
    yield "dg-sqlite", LangGraphSaver(SqliteSaver(workdir / "dg.sqlite")), lambda: None
    conn = sqlite3.connect(workdir / "lg.sqlite", check_same_thread=False)
    yield "lg-sqlite", LGSqlite(conn), lambda: None
    yield "dg-memory", LangGraphSaver(InMemorySaver()), lambda: None
    yield "lg-memory", LGMemory(), lambda: None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp, RoundTrips.counting():
        for name, saver, cleanup in savers(args.url, Path(tmp)):
            try:
                workload(saver, 20)  # warm up (scripts loaded, tables created)
                rows.append((name, workload(saver, args.steps)))
            finally:
                cleanup()
    header = "saver".ljust(12) + "".join(f"{op + ' µs':>14}{'RT':>6}" for op in OPS)
    print(header)
    for name, result in rows:
        cells = "".join(f"{result[op][0]:>14.1f}{result[op][1]:>6.1f}" for op in OPS)
        print(name.ljust(12) + cells)


if __name__ == "__main__":
    main()
