"""A graph only its producer has: the distributed tests copy this file, with
``run_private.py``, into a temp dir that is not on the workers' ``PYTHONPATH``.

Workers cannot ``import private_graph``, so ``graph_auto`` (``ship="auto"``) must
reach them as the signed cloudpickle blob its producer uploads, this module pickled
by value (``SALT`` and the ``measure`` task exist nowhere else), and
``graph_import`` (``ship="import"``) must fail its run with a clear error.
"""

from __future__ import annotations

import os
from typing import Any, TypedDict

import dg_trace

from durable_graph import END, START, RedisSaver, StateGraph, task
from durable_graph.worker import CeleryExecutor, create_app

REDIS_URL = os.environ["DG_TEST_REDIS_URL"]
PREFIX = os.environ["DG_TEST_PREFIX"]
QUEUE = os.environ["DG_TEST_QUEUE"]
SECRET = os.environ["DG_TEST_SECRET"]
SALT = "private-7f3a"

app = create_app(REDIS_URL, prefix=PREFIX, queue=QUEUE, secret_key=SECRET)
saver = RedisSaver.from_url(REDIS_URL, prefix=PREFIX)


class PrivateState(TypedDict, total=False):
    words: list[str]
    lengths: list[int]
    summary: str


@task
def measure(tag: str, word: str) -> int:
    dg_trace.trace(REDIS_URL, PREFIX, tag, f"measure:{word}")
    return len(word) * 10 + 1


def measure_all(state: PrivateState, config: dict[str, Any]) -> dict[str, Any]:
    tag = str(config["configurable"]["thread_id"])
    dg_trace.trace(REDIS_URL, PREFIX, tag, "measure_all")
    futures = [measure(tag, word) for word in state["words"]]
    return {"lengths": [f.result() for f in futures]}


def summarize(state: PrivateState, config: dict[str, Any]) -> dict[str, Any]:
    dg_trace.trace(REDIS_URL, PREFIX, str(config["configurable"]["thread_id"]), "summarize")
    return {"summary": f"{SALT}:{sum(state['lengths'])}"}


def build() -> StateGraph:
    b = StateGraph(PrivateState)
    b.add_node("measure_all", measure_all)
    b.add_node("summarize", summarize)
    b.add_edge(START, "measure_all")
    b.add_edge("measure_all", "summarize")
    b.add_edge("summarize", END)
    return b


graph_auto = build().compile(checkpointer=saver, executor=CeleryExecutor(app))
graph_import = build().compile(checkpointer=saver, executor=CeleryExecutor(app, ship="import"))
