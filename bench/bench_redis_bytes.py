"""Where a Redis checkpoint store's bytes go: ``MEMORY USAGE`` by key kind, raw bytes by field kind.

Runs ``bench_history``'s append and chat workloads (``--steps``, default 200) on a
fresh key prefix (deleted afterwards) and prints, per workload, the store size (as
``bench_history`` counts it), then each key kind's count and ``MEMORY USAGE``
(``cp`` checkpoint records, ``blobs`` the values hash, ``idx`` the history zset, ...)
and the raw field+value bytes inside the values hash by field kind (``chain`` delta
links, ``leaf`` leaves kept apart, else the channel): what issue 13's Redis rows
are made of, so a format change can aim at the largest part.

    python bench/bench_redis_bytes.py --steps 200
"""

from __future__ import annotations

import argparse
import re
import sys
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_history as bh

from durable_graph.store.redis import RedisSaver

_KIND = re.compile(r"\}:(?:n:[^:]*:)?([a-z]+)")


def _field_kind(field: bytes) -> str:
    if field.startswith(b"\x01"):
        return "chain"
    if field.startswith(b"\x02"):
        return "leaf"
    return field.split(b"\x00")[0].decode(errors="replace")


def breakdown(url: str, workload: Callable[[Any, int], int], steps: int) -> None:
    """Print the byte breakdown of one workload's store."""
    saver = RedisSaver.from_url(url, prefix=f"bench-bytes-{uuid.uuid4().hex[:8]}")
    try:
        appended = workload(saver, steps)
        client = saver.client
        mem: Counter[str] = Counter()
        keys: Counter[str] = Counter()
        raw: Counter[str] = Counter()
        fields: Counter[str] = Counter()
        for key in client.scan_iter(match=f"*{saver.prefix}*", count=1000):
            found = _KIND.search(key.decode())
            kind = found.group(1) if found else "other"
            mem[kind] += int(client.memory_usage(key, samples=0) or 0)
            keys[kind] += 1
            if kind == "cp" and client.type(key) == b"string":
                raw["cp record"] += int(client.strlen(key))
                fields["cp record"] += 1
            if kind == "blobs":
                for field, value in client.hgetall(key).items():
                    raw[_field_kind(field)] += len(field) + len(value)
                    fields[_field_kind(field)] += 1
        total = sum(mem.values())
        print(f"\n{workload.__name__}: {total:,} B, {total / steps / 1024:.2f} KB/step, "
              f"{total / appended:.2f}x appended")
        for kind, size in mem.most_common():
            print(f"  key {kind:8s} {keys[kind]:5d} keys  {size:9,d} B  "
                  f"({size / keys[kind]:,.0f} B/key)")
        for kind, size in raw.most_common():
            print(f"  raw {kind:16s} {fields[kind]:5d}  {size:9,d} B  "
                  f"({size / fields[kind]:,.0f} B each)")
    finally:
        bh.redis_drop(saver)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    if args.steps < 1:
        parser.error(f"--steps must be at least 1, got {args.steps}")
    for workload in (bh.run_append, bh.run_chat):
        breakdown(args.redis_url, workload, args.steps)


if __name__ == "__main__":
    main()
