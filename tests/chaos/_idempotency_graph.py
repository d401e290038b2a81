"""A payment graph run in a subprocess, so a test can SIGKILL it mid-payment and resume.

Usage: ``python _idempotency_graph.py {start|resume} DB_PATH MARKER_DIR``

The ``charge`` node and its ``pay`` task each append the idempotency key
``get_task_context()`` gives them to a marker file before doing the slow "external"
call, so the files list the key every execution saw, across processes.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, TypedDict

from durable_graph import END, START, SqliteSaver, StateGraph, get_task_context, task

CONFIG = {"configurable": {"thread_id": "pay-1"}}


class Order(TypedDict, total=False):
    amount: int
    receipt: str


def note(markers: Path, name: str) -> str:
    key = get_task_context().idempotency_key
    with open(markers / f"{name}.txt", "a") as fh:
        fh.write(key + "\n")
    print(f"start {name}", flush=True)
    return key


def build(db: str, markers: Path) -> Any:
    @task
    def pay(amount: int) -> str:
        key = note(markers, "pay")
        time.sleep(60)  # the payment API is slow: the test kills us here
        return f"paid {amount} with {key}"

    def charge(order: Order) -> Order:
        note(markers, "charge")
        return {"receipt": pay(order["amount"]).result()}

    builder = StateGraph(Order)
    builder.add_node("charge", charge)
    builder.add_edge(START, "charge")
    builder.add_edge("charge", END)
    return builder.compile(checkpointer=SqliteSaver(db))


def main() -> None:
    mode, db, markers = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    graph = build(db, markers)
    graph.invoke({"amount": 5} if mode == "start" else None, CONFIG, durability="sync")


if __name__ == "__main__":
    main()
