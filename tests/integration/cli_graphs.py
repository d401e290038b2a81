"""Graphs of the CLI tests and the Celery app their workers run (``-A cli_graphs``).

Workers read their settings from ``DURABLE_GRAPH_*`` variables; the test process
makes its own app with the same queue and secret and compiles the builders below
with ``CeleryExecutor``. The compiled graph reaches workers (and ``durable-graph
show``) as a signed blob whose functions point back into this module, so every
process that loads it has this directory on ``PYTHONPATH``.

Each pool process pushes ``"<pid>:<parent pid>"`` to ``$DG_CLI_POOL_KEY`` when it
starts (what ``tests/distributed/dg_workers.WorkerPool`` waits for).
"""

from __future__ import annotations

import os
from typing import Any, TypedDict

import redis
from celery.signals import worker_process_init

from durable_graph import END, START, StateGraph, interrupt
from durable_graph.worker import create_app

app = create_app()
"""The workers' app: ``DURABLE_GRAPH_REDIS_URL``, ``_QUEUE``, ``_SECRET_KEY``, ..."""

QUESTION = "approve?"
BOOM = "boom"


@worker_process_init.connect
def _register_pool_process(**_: Any) -> None:
    pool_key = os.environ.get("DG_CLI_POOL_KEY")
    if pool_key:
        url = os.environ.get("DURABLE_GRAPH_REDIS_URL", "redis://127.0.0.1:6379/0")
        client = redis.Redis.from_url(url, socket_timeout=10)
        try:
            client.rpush(pool_key, f"{os.getpid()}:{os.getppid()}")
        finally:
            client.close()


# -- approval: write -> approve (interrupt) -> publish -------------------------------------


class ApprovalState(TypedDict, total=False):
    topic: str
    draft: str
    decision: str
    reviewer: str
    published: str


def write(state: ApprovalState) -> dict[str, Any]:
    return {"draft": state["topic"].upper()}


def approve(state: ApprovalState) -> dict[str, Any]:
    return {"decision": interrupt(QUESTION)}


def publish(state: ApprovalState) -> dict[str, Any]:
    reviewer = state.get("reviewer", "nobody")
    return {"published": f"{state['draft']} {state['decision']} by {reviewer}"}


def build_approval() -> StateGraph:
    b = StateGraph(ApprovalState)
    b.add_node("write", write)
    b.add_node("approve", approve)
    b.add_node("publish", publish)
    b.add_edge(START, "write")
    b.add_edge("write", "approve")
    b.add_edge("approve", "publish")
    b.add_edge("publish", END)
    return b


# -- failing: prepare -> explode (raises) ---------------------------------------------------


class BoomState(TypedDict, total=False):
    value: int


def prepare(state: BoomState) -> dict[str, Any]:
    return {"value": state["value"] + 1}


def explode(state: BoomState) -> dict[str, Any]:
    raise ValueError(BOOM)


def build_boom() -> StateGraph:
    b = StateGraph(BoomState)
    b.add_node("prepare", prepare)
    b.add_node("explode", explode)
    b.add_edge(START, "prepare")
    b.add_edge("prepare", "explode")
    b.add_edge("explode", END)
    return b


# -- gated: first -> slow (waits for a token on its gate list) -> last ----------------------
# The test holds ``slow`` inside its node until it pushes a token, so a cancel (or new
# input) lands while the node runs. Each node counts its runs under the gate key.


class GatedState(TypedDict, total=False):
    gate: str
    n: int
    note: str


def _client() -> redis.Redis:
    url = os.environ.get("DURABLE_GRAPH_REDIS_URL", "redis://127.0.0.1:6379/0")
    return redis.Redis.from_url(url, socket_timeout=60)


def _count(gate: str, node: str) -> None:
    client = _client()
    try:
        client.incr(f"{gate}:runs:{node}")
    finally:
        client.close()


def first(state: GatedState) -> dict[str, Any]:
    _count(state["gate"], "first")
    return {"n": state.get("n", 0) + 1}


def slow(state: GatedState) -> dict[str, Any]:
    _count(state["gate"], "slow")
    client = _client()
    try:
        client.blpop([state["gate"]], timeout=30)
    finally:
        client.close()
    return {"n": state["n"] + 1}


def last(state: GatedState) -> dict[str, Any]:
    _count(state["gate"], "last")
    return {"n": state["n"] * 10}


def build_gated() -> StateGraph:
    b = StateGraph(GatedState)
    b.add_sequence([first, slow, last])
    b.add_edge(START, "first")
    b.add_edge("last", END)
    return b


# -- flaky: prepare -> flaky (fails until its gate key is set) ------------------------------


def flaky(state: GatedState) -> dict[str, Any]:
    _count(state["gate"], "flaky")
    client = _client()
    try:
        ok = client.exists(f"{state['gate']}:ok")
    finally:
        client.close()
    if not ok:
        raise RuntimeError("flaky: not yet")
    return {"n": state["n"] * 100}


def build_flaky() -> StateGraph:
    b = StateGraph(GatedState)
    b.add_sequence([first, flaky])
    b.add_edge(START, "first")
    b.add_edge("flaky", END)
    return b
