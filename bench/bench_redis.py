"""Benchmark RedisSaver: commit round trips and latency, resume latency, bytes per step.

Runs against a real Redis under a unique key prefix and deletes only that prefix's
keys afterwards. Round trips and bytes are counted by wrapping the client's
``execute_command`` (every command outside a pipeline is one round trip).

    python bench/bench_redis.py --url redis://127.0.0.1:6379/0
"""

from __future__ import annotations

import argparse
import operator
import os
import statistics
import time
import uuid
from collections.abc import Callable
from typing import Annotated, Any, TypedDict

from durable_graph.store.base import Checkpoint, new_checkpoint_id
from durable_graph.store.redis import RedisSaver


class Meter:
    """Counts commands and request bytes a redis-py client sends."""

    def __init__(self, saver: RedisSaver) -> None:
        self.calls = 0
        self.sent = 0
        client: Any = saver.client
        inner = client.execute_command

        def execute(*args: Any, **kw: Any) -> Any:
            self.calls += 1
            self.sent += sum(len(a) if isinstance(a, bytes | str) else 8 for a in args)
            return inner(*args, **kw)

        client.execute_command = execute

    def reset(self) -> None:
        self.calls = self.sent = 0


def cfg(thread: str) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread, "checkpoint_ns": ""}}


def commit_chain(saver: RedisSaver, thread: str, steps: int, kb_per_step: int = 1) -> list[float]:
    """Commit ``steps`` checkpoints whose ``items`` list grows by 1 KB each; latency per step."""
    parent, items, latencies = cfg(thread), [], []
    for step in range(steps):
        items = [*items, "x" * (1024 * kb_per_step)]
        cp = Checkpoint(
            id=new_checkpoint_id(),
            ts="2024-01-01T00:00:00+00:00",
            channel_values={"items": items, "step": step},
            channel_versions={"items": step + 1, "step": step + 1},
            versions_seen={"node": {"items": step}},
        )
        started = time.perf_counter()
        parent = saver.put(parent, cp, {"source": "loop", "step": step}, cp.channel_versions)
        saver.put_writes(parent, [("items", ["y"])], f"task-{step}")
        latencies.append(time.perf_counter() - started)
    return latencies


def resume_chain(saver: RedisSaver, thread: str, steps: int) -> None:
    """``steps`` checkpoints of the same size: a counter and a 1 KB document that never changes."""
    parent = cfg(thread)
    for step in range(steps):
        cp = Checkpoint(
            id=new_checkpoint_id(),
            ts="2024-01-01T00:00:00+00:00",
            channel_values={"doc": "d" * 1024, "step": step},
            channel_versions={"doc": 1, "step": step + 1},
            versions_seen={},
        )
        new = {"doc": 1, "step": step + 1} if step == 0 else {"step": step + 1}
        parent = saver.put(parent, cp, {"source": "loop", "step": step}, new)


def timed(fn: Callable[[], Any], reps: int) -> float:
    """Median seconds of ``fn`` over ``reps`` runs."""
    samples = []
    for _ in range(reps):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def memory_of(saver: RedisSaver, thread: str) -> int:
    """Bytes Redis reports (MEMORY USAGE) for every key of a thread."""
    client: Any = saver.client
    keys = list(client.scan_iter(match=f"{{{saver.prefix}:{thread}}}*", count=1000))
    return sum(client.memory_usage(k, samples=0) or 0 for k in keys)


def graph_bytes_per_step(saver: RedisSaver, meter: Meter, steps: int) -> tuple[float, int] | None:
    """Bytes sent per superstep by a real StateGraph appending 1 KB per step, if available."""
    try:
        from durable_graph import END, START, StateGraph
    except ImportError:
        return None

    class State(TypedDict):
        items: Annotated[list[str], operator.add]

    def append(state: State) -> dict[str, list[str]]:
        return {"items": ["x" * 1024]}

    builder: Any = StateGraph(State)
    builder.add_node("append", append)
    builder.add_edge(START, "append")
    builder.add_conditional_edges("append", lambda s: END if len(s["items"]) >= steps else "append")
    graph = builder.compile(checkpointer=saver)
    meter.reset()
    try:
        graph.invoke({"items": []}, {**cfg("graph"), "recursion_limit": steps + 10})
    except Exception as exc:  # the engine is young: report, do not fail the bench
        print(f"(graph run skipped: {type(exc).__name__}: {exc})")
        return None
    checkpoints = len(list(saver.list(cfg("graph"))))
    return meter.sent / max(1, checkpoints), checkpoints


def commit_rows(saver: RedisSaver, meter: Meter, steps: int) -> list[tuple[str, str]]:
    """Round trips, latency, bytes and memory of step commits that append 1 KB each."""
    meter.reset()
    lat = sorted(commit_chain(saver, "commit", steps))
    p50, p99 = statistics.median(lat) * 1e3, lat[max(0, int(len(lat) * 0.99) - 1)] * 1e3
    return [
        ("round trips per step commit (put + put_writes)", f"{meter.calls / steps:.2f}"),
        ("commit latency p50 / p99 (ms)", f"{p50:.3f} / {p99:.3f}"),
        ("bytes sent per step, 1 KB appended (direct puts)", f"{meter.sent / steps:,.0f}"),
        (
            "Redis memory per step (MEMORY USAGE / steps)",
            f"{memory_of(saver, 'commit') / steps:,.0f}",
        ),
    ]


def resume_rows(saver: RedisSaver, meter: Meter, history: int, reps: int) -> list[tuple[str, str]]:
    """Round trips and latency of get_tuple(latest) on a short and a long history."""
    resume_chain(saver, "short", 10)
    resume_chain(saver, "long", history)
    meter.reset()
    saver.get_tuple(cfg("long"))
    trips = meter.calls  # read now: the timed calls below go through the same meter
    short = timed(lambda: saver.get_tuple(cfg("short")), reps)
    long = timed(lambda: saver.get_tuple(cfg("long")), reps)
    return [
        ("round trips for get_tuple(latest)", str(trips)),
        ("resume latency, 10 checkpoints (ms, median)", f"{short * 1e3:.3f}"),
        (f"resume latency, {history:,} checkpoints (ms, median)", f"{long * 1e3:.3f}"),
        ("resume ratio long/short (target <= 1.2)", f"{long / short:.2f}"),
    ]


def run(args: argparse.Namespace) -> None:
    """Run every measurement under a fresh prefix, print the table, delete the prefix."""
    prefix = args.prefix or f"bench-{uuid.uuid4().hex[:8]}"
    saver = RedisSaver.from_url(args.url, prefix=prefix)
    meter = Meter(saver)
    try:
        rows = commit_rows(saver, meter, args.steps)
        rows += resume_rows(saver, meter, args.history, args.reps)
        graph = graph_bytes_per_step(saver, meter, args.graph_steps)
        if graph is not None:
            label = f"bytes sent per checkpoint, StateGraph 1 KB append ({graph[1]} cps)"
            rows.append((label, f"{graph[0]:,.0f}"))
        width = max(len(name) for name, _ in rows)
        print(f"RedisSaver bench on {args.url} (prefix {prefix})")
        for name, value in rows:
            print(f"  {name:<{width}}  {value:>16}")
    finally:
        client: Any = saver.client
        for key in list(client.scan_iter(match=f"{{{prefix}*", count=1000)):
            client.unlink(key)
        saver.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--url", default=os.environ.get("DURABLE_GRAPH_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    parser.add_argument("--prefix", help="key prefix (default: a fresh bench-<uuid>)")
    parser.add_argument("--steps", type=int, default=200, help="commits in the commit bench")
    parser.add_argument(
        "--history", type=int, default=10_000, help="checkpoints of the long thread"
    )
    parser.add_argument("--reps", type=int, default=300, help="get_tuple runs per thread")
    parser.add_argument("--graph-steps", type=int, default=100, help="supersteps of the graph run")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
