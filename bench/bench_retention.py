"""What a retention policy applied by every commit costs, and what it saves.

Side by side in one run, on SQLite (a temporary file) and Redis (``--redis-url``, a
fresh key prefix deleted afterwards): one node appends 1 KB to an ``operator.add``
list for ``--steps`` supersteps (one invoke, ``durability="sync"``), on a saver
with no policy, with ``keep_last=10``, and with ``keep_last=10`` and a TTL. Prints
milliseconds per step (the commit's pruning runs inside it), the ratio to no policy,
the checkpoints left and the store size after.

    python bench/bench_retention.py                  # 500 steps
    python bench/bench_retention.py --steps 2000
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench_history import _append_graph, _table, redis_drop, redis_size, sqlite_size

from durable_graph.store.redis import RedisSaver
from durable_graph.store.sqlite import SqliteSaver

POLICIES: dict[str, dict[str, Any]] = {
    "none": {},
    "keep_last=10": {"keep_last": 10},
    "keep_last=10 ttl=1h": {"keep_last": 10, "ttl": 3600},
}


def _open(store: str, policy: dict[str, Any], args: argparse.Namespace, tmp: Path) -> Any:
    if store == "sqlite":
        return SqliteSaver(tmp / f"{uuid.uuid4().hex}.db", **policy)
    return RedisSaver.from_url(args.redis_url, prefix=f"retention-bench-{uuid.uuid4().hex[:8]}",
                               **policy)


def run(store: str, policy: dict[str, Any], args: argparse.Namespace, tmp: Path) -> tuple[str, ...]:
    saver = _open(store, policy, args, tmp)
    try:
        app = _append_graph(args.steps).compile(checkpointer=saver)
        config = {"configurable": {"thread_id": "append"}, "recursion_limit": args.steps + 10}
        start = time.perf_counter()
        state = app.invoke({"log": [], "n": 0}, config, durability="sync")
        per_step = (time.perf_counter() - start) * 1000 / args.steps
        assert len(state["log"]) == args.steps
        kept = sum(1 for _ in saver.list_ids("append"))
        size = sqlite_size(saver) if store == "sqlite" else redis_size(saver)
    finally:
        if store == "redis":
            redis_drop(saver)
        else:
            saver.close()
    return store, per_step, kept, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for store in ("sqlite", "redis"):
            base = None
            for name, policy in POLICIES.items():
                _, ms, kept, size = run(store, policy, args, Path(tmp))
                base = base or ms
                rows.append((store, name, f"{ms:.2f}", f"{ms / base:.2f}", str(kept),
                             f"{size / 1024:.0f}"))
    _table(f"{args.steps} steps appending 1 KB, durability='sync'",
           ("store", "policy", "ms/step", "x none", "checkpoints", "store KB"), rows)


if __name__ == "__main__":
    main()
