"""Graphs of the web view tests and the Celery app their workers run (``-A ui_graphs``).

Workers read their settings from ``DURABLE_GRAPH_*`` variables; the test process
compiles the builders below with its own ``CeleryExecutor`` on the same queue. The
graphs reach workers and the ``durable-graph ui`` server as signed blobs whose
functions point back into this module (and ``cli_graphs``, whose failing graph is
reused), so both have these directories on PYTHONPATH.

Each pool process pushes ``"<pid>:<parent pid>"`` to ``$DG_UI_POOL_KEY`` when it
starts (what ``dg_workers.WorkerPool`` waits for).
"""

from __future__ import annotations

import os
import time
from typing import Any, TypedDict

import redis
from celery.signals import worker_process_init

from durable_graph import END, START, StateGraph, interrupt
from durable_graph.worker import create_app

app = create_app()
"""The workers' app: ``DURABLE_GRAPH_REDIS_URL``, ``_QUEUE``, ``_SECRET_KEY``, ..."""

QUESTION = {"question": "ship it?", "risk": "<b>low</b>"}
MARKUP = "<script>window.__pwned = true</script><img src=x onerror=alert(1)>"
SLOW_SECONDS = 40.0


@worker_process_init.connect
def _register_pool_process(**_: Any) -> None:
    pool_key = os.environ.get("DG_UI_POOL_KEY")
    if pool_key:
        client = redis.Redis.from_url(os.environ["DURABLE_GRAPH_REDIS_URL"], socket_timeout=10)
        try:
            client.rpush(pool_key, f"{os.getpid()}:{os.getppid()}")
        finally:
            client.close()


class ReviewState(TypedDict, total=False):
    topic: str
    draft: str
    decision: Any
    reviewer: str
    published: str


def write(state: ReviewState) -> dict[str, Any]:
    return {"draft": state["topic"].upper()}


def review(state: ReviewState) -> dict[str, Any]:
    return {"decision": interrupt(QUESTION)}


def publish(state: ReviewState) -> dict[str, Any]:
    return {"published": f"{state['draft']} {state['decision']} by {state.get('reviewer')}"}


def route(state: ReviewState) -> str:
    return "publish" if state.get("draft") else END


def build_review() -> StateGraph:
    """write -> review (interrupt) -> publish, with a conditional edge to draw."""
    b = StateGraph(ReviewState)
    b.add_node("write", write)
    b.add_node("review", review)
    b.add_node("publish", publish)
    b.add_edge(START, "write")
    b.add_edge("write", "review")
    b.add_conditional_edges("review", route, ["publish", END])
    b.add_edge("publish", END)
    return b


class NoteState(TypedDict, total=False):
    note: str
    seen: bool


def keep(state: NoteState) -> dict[str, Any]:
    return {"seen": True}


def build_note() -> StateGraph:
    """One node; its state holds whatever note the test gives (markup, for escaping)."""
    b = StateGraph(NoteState)
    b.add_node("keep", keep)
    b.add_edge(START, "keep")
    b.add_edge("keep", END)
    return b


class SlowState(TypedDict, total=False):
    started: bool
    finished: bool


def begin(state: SlowState) -> dict[str, Any]:
    return {"started": True}


def linger(state: SlowState) -> dict[str, Any]:
    deadline = time.monotonic() + SLOW_SECONDS
    while time.monotonic() < deadline:
        time.sleep(0.1)
    return {"finished": True}


def build_slow() -> StateGraph:
    """begin -> linger (40 s): a thread that stays running long enough to cancel."""
    b = StateGraph(SlowState)
    b.add_node("begin", begin)
    b.add_node("linger", linger)
    b.add_edge(START, "begin")
    b.add_edge("begin", "linger")
    b.add_edge("linger", END)
    return b
