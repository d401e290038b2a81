"""Record the golden checkpoints: ``python tests/golden/make_golden.py``.

Writes ``checkpoints.sqlite`` (a SqliteSaver file) and ``expected.json`` (the ids
and history lengths recorded) next to this script. Run it only when the checkpoint
format changes on purpose; ``tests/unit/test_golden_checkpoints.py`` reads a copy
of the committed files, so a change that cannot read or resume old threads fails.

The graphs live here so the test builds exactly the same ones. Threads:

- ``complete``: a 3-node chain a -> b -> c that finished.
- ``interrupted``: ``ask`` paused on ``interrupt("approve?")``; ``after`` follows.
- ``failed``: ``ok`` and ``flaky`` ran in parallel; ``ok`` finished, ``flaky`` raised.
- ``entry``: an ``@entrypoint`` whose two ``@task`` calls finished before it raised.
"""

from __future__ import annotations

import json
import operator
import sys
from collections import Counter
from pathlib import Path
from typing import Annotated, Any, TypedDict

from durable_graph import END, START, SqliteSaver, StateGraph, entrypoint, interrupt, task

HERE = Path(__file__).resolve().parent
DB_NAME = "checkpoints.sqlite"
EXPECTED_NAME = "expected.json"
THREADS = ("complete", "interrupted", "failed", "entry")


class State(TypedDict, total=False):
    x: int
    log: Annotated[list[str], operator.add]


class Runs:
    """Counts executions and decides whether the failing nodes fail."""

    def __init__(self, fail: bool) -> None:
        self.fail = fail
        self.count: Counter[str] = Counter()

    def hit(self, name: str) -> None:
        self.count[name] += 1


def chain_graph(saver: SqliteSaver, runs: Runs) -> Any:
    def make(name: str) -> Any:
        def node(state: State) -> State:
            runs.hit(name)
            return {"log": [name], "x": state.get("x", 0) + 1}

        return node

    b = StateGraph(State)
    for name in ("a", "b", "c"):
        b.add_node(name, make(name))
    b.add_edge(START, "a")
    b.add_edge("a", "b")
    b.add_edge("b", "c")
    b.add_edge("c", END)
    return b.compile(checkpointer=saver)


def interrupt_graph(saver: SqliteSaver, runs: Runs) -> Any:
    def ask(state: State) -> State:
        runs.hit("ask")
        answer = interrupt("approve?")
        return {"log": [f"ask:{answer}"]}

    def after(state: State) -> State:
        runs.hit("after")
        return {"log": ["after"]}

    b = StateGraph(State)
    b.add_node("ask", ask)
    b.add_node("after", after)
    b.add_edge(START, "ask")
    b.add_edge("ask", "after")
    b.add_edge("after", END)
    return b.compile(checkpointer=saver)


def failing_graph(saver: SqliteSaver, runs: Runs) -> Any:
    def ok(state: State) -> State:
        runs.hit("ok")
        return {"log": ["ok"]}

    def flaky(state: State) -> State:
        runs.hit("flaky")
        if runs.fail:
            raise RuntimeError("flaky failed")
        return {"log": ["flaky"]}

    def join(state: State) -> State:
        runs.hit("join")
        return {"x": len(state["log"])}

    b = StateGraph(State)
    b.add_node("ok", ok)
    b.add_node("flaky", flaky)
    b.add_node("join", join)
    b.add_edge(START, "ok")
    b.add_edge(START, "flaky")
    b.add_edge(["ok", "flaky"], "join")
    b.add_edge("join", END)
    return b.compile(checkpointer=saver)


def entry_graph(saver: SqliteSaver, runs: Runs) -> Any:
    @task
    def square(n: int) -> int:
        runs.hit(f"square{n}")
        return n * n

    @entrypoint(checkpointer=saver)
    def workflow(n: int) -> dict[str, Any]:
        runs.hit("workflow")
        values = [square(i).result() for i in range(1, n + 1)]
        if runs.fail:
            raise RuntimeError("workflow failed after its tasks")
        return {"squares": values}

    return workflow


def config(thread: str) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread}}


def record(directory: Path) -> dict[str, Any]:
    """Run every golden thread into ``directory/checkpoints.sqlite``; return what was stored."""
    db = directory / DB_NAME
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    runs = Runs(fail=True)
    with SqliteSaver(db) as saver:
        chain_graph(saver, runs).invoke({"x": 0}, config("complete"), durability="sync")
        interrupt_graph(saver, runs).invoke({"x": 0}, config("interrupted"), durability="sync")
        try:
            failing_graph(saver, runs).invoke({"x": 0}, config("failed"), durability="sync")
        except RuntimeError:
            pass
        else:
            raise AssertionError("the failed thread did not fail")
        try:
            entry_graph(saver, runs).invoke(2, config("entry"), durability="sync")
        except RuntimeError:
            pass
        else:
            raise AssertionError("the entry thread did not fail")
        expected: dict[str, Any] = {}
        for thread in THREADS:
            history = list(saver.list(config(thread)))
            expected[thread] = {
                "checkpoint_ids": [t.checkpoint.id for t in history],
                "steps": [t.metadata.get("step") for t in history],
                "pending_channels": sorted(w.channel for w in history[0].pending_writes),
            }
        saver._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    (directory / EXPECTED_NAME).write_text(json.dumps(expected, indent=2, sort_keys=True) + "\n")
    return expected


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE
    print(json.dumps(record(out), indent=2))
