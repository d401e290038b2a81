"""A graph run in a subprocess so a test can SIGKILL it and resume it in another.

Usage: ``python _crash_graph.py {fanout|chain|pair} {start|resume} DB_PATH MARKER_DIR``

Every node and task appends one line to its own marker file when it starts, so a
file's line count is how many times it ran (across processes). ``start`` runs the
graph on thread "t1" from fresh input; ``resume`` runs ``invoke(None, config)``.
Both use ``SqliteSaver(DB_PATH)`` with ``durability="sync"`` and print the final
state as one JSON line prefixed with ``RESULT``.
"""

from __future__ import annotations

import contextlib
import json
import operator
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, TypedDict

from durable_graph import END, START, RedisSaver, SqliteSaver, StateGraph, task

THREAD = "t1"
FAN_TASKS = 6
CHAIN = ("s0", "s1", "s2", "s3", "s4")
SLOW = 0.3


def mark(markers: Path, name: str) -> None:
    """Record one execution of ``name`` (one line, flushed before anything else)."""
    with open(markers / f"{name}.txt", "a") as fh:
        fh.write("ran\n")
        fh.flush()
    print(f"start {name}", flush=True)


class FanState(TypedDict, total=False):
    n: int
    results: Annotated[list[int], operator.add]
    done: bool


class ChainState(TypedDict, total=False):
    log: Annotated[list[str], operator.add]


def fanout_graph(saver: SqliteSaver, markers: Path) -> Any:
    @task
    def work(i: int) -> int:
        mark(markers, f"task-{i}")
        if i >= 3:
            time.sleep(SLOW)
        print(f"done task-{i}", flush=True)
        return i * 10

    def prep(state: FanState) -> FanState:
        mark(markers, "prep")
        return {"n": FAN_TASKS}

    def fan(state: FanState) -> FanState:
        futures = [work(i) for i in range(state["n"])]
        return {"results": [f.result() for f in futures]}

    def finish(state: FanState) -> FanState:
        mark(markers, "finish")
        return {"done": True}

    b = StateGraph(FanState)
    b.add_node("prep", prep)
    b.add_node("fan", fan)
    b.add_node("finish", finish)
    b.add_edge(START, "prep")
    b.add_edge("prep", "fan")
    b.add_edge("fan", "finish")
    b.add_edge("finish", END)
    return b.compile(checkpointer=saver)


def chain_graph(saver: SqliteSaver, markers: Path) -> Any:
    def step(name: str) -> Any:
        def node(state: ChainState) -> ChainState:
            mark(markers, name)
            time.sleep(SLOW)
            return {"log": [name]}

        return node

    b = StateGraph(ChainState)
    for name in CHAIN:
        b.add_node(name, step(name))
    b.add_edge(START, CHAIN[0])
    for a, z in zip(CHAIN, CHAIN[1:]):
        b.add_edge(a, z)
    b.add_edge(CHAIN[-1], END)
    return b.compile(checkpointer=saver)


def pair_graph(saver: SqliteSaver, markers: Path) -> Any:
    """Two nodes in one step: ``fast`` finishes at once, ``slow`` sleeps (a kill lands
    while it does, after ``fast``'s writes are stored), then ``join``."""
    def node(name: str, sleep: float) -> Any:
        def run(state: ChainState) -> ChainState:
            mark(markers, name)
            time.sleep(sleep)
            mark(markers, f"{name}-done")
            return {"log": [name]}

        return run

    b = StateGraph(ChainState)
    b.add_node("fast", node("fast", 0))
    b.add_node("slow", node("slow", SLOW * 10))
    b.add_node("join", node("join", 0))
    b.add_edge(START, "fast")
    b.add_edge(START, "slow")
    b.add_edge(["fast", "slow"], "join")
    b.add_edge("join", END)
    return b.compile(checkpointer=saver)


@contextlib.contextmanager
def opened(spec: str) -> Iterator[Any]:
    """The saver a store spec names: ``redis://host:port/db#prefix`` or a SQLite path."""
    if spec.startswith(("redis://", "rediss://", "unix://")):
        url, _, prefix = spec.partition("#")
        saver: Any = RedisSaver.from_url(url, prefix=prefix or "dg")
    else:
        saver = SqliteSaver(spec)
    try:
        yield saver
    finally:
        close = getattr(saver, "close", None)
        if close is not None:
            close()


def main(argv: list[str]) -> None:
    variant, mode, db, marker_dir = argv
    markers = Path(marker_dir)
    markers.mkdir(parents=True, exist_ok=True)
    config = {"configurable": {"thread_id": THREAD}}
    with opened(db) as saver:
        build = {"fanout": fanout_graph, "chain": chain_graph, "pair": pair_graph}[variant]
        graph = build(saver, markers)
        print(f"{mode} {variant}", flush=True)
        if mode == "start":
            initial: dict[str, Any] = {"n": 0} if variant == "fanout" else {"log": []}
            out = graph.invoke(initial, config, durability="sync")
        else:
            out = graph.invoke(None, config, durability="sync")
    print("RESULT " + json.dumps(out, sort_keys=True), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
