"""A three-step graph with a fan-out, traced with OpenTelemetry on real workers.

Importable by the test process and by ``celery -A tracing_graphs worker`` (the
``DG_TEST_*`` environment, with a queue and a key prefix of its own). When
``DG_TEST_OTEL_DIR`` is set, each worker pool process installs an SDK
``TracerProvider`` that writes every finished span as one JSON line to
``<dir>/spans-<pid>.jsonl``; the test process installs its own (in memory).
"""

from __future__ import annotations

import operator
import os
import time
from pathlib import Path
from typing import Annotated, Any, TypedDict

import redis
from celery.signals import worker_process_init
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

from durable_graph import END, START, RedisSaver, Send, StateGraph
from durable_graph.worker import CeleryExecutor, create_app

REDIS_URL = os.environ.get("DG_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
PREFIX = os.environ.get("DG_TEST_PREFIX", "dg-dist-test") + ":otel"
QUEUE = os.environ.get("DG_TEST_QUEUE", "dg-dist-test") + "-otel"
SECRET = os.environ.get("DG_TEST_SECRET", "not-a-secret-only-for-tests")
POOL_KEY = f"{PREFIX}:pool"
FANOUT = 4

app = create_app(REDIS_URL, prefix=PREFIX, queue=QUEUE, secret_key=SECRET, lease_ttl=5.0)
saver = RedisSaver.from_url(REDIS_URL, prefix=PREFIX)
executor = CeleryExecutor(app)
_client = redis.Redis.from_url(REDIS_URL, socket_timeout=10)


def _one_line(span: ReadableSpan) -> str:
    return span.to_json(indent=None) + "\n"


@worker_process_init.connect
def _trace_to_file(**_: Any) -> None:
    """Register the pool process; export its spans as JSON lines when asked to."""
    folder = os.environ.get("DG_TEST_OTEL_DIR")
    if folder:
        out = (Path(folder) / f"spans-{os.getpid()}.jsonl").open("a")
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(
            ConsoleSpanExporter(out=out, formatter=_one_line)))
        trace.set_tracer_provider(provider)
    _client.rpush(POOL_KEY, f"{os.getpid()}:{os.getppid()}")


class State(TypedDict, total=False):
    n: int
    parts: Annotated[list[int], operator.add]
    total: int


def plan(state: State) -> dict[str, Any]:
    return {"parts": []}


def fan(state: State) -> list[Send]:
    return [Send("part", {"n": i}) for i in range(FANOUT)]


def part(state: State) -> dict[str, Any]:
    time.sleep(0.3)  # long enough for the other worker to take a sibling
    return {"parts": [state["n"] * 10]}


def total(state: State) -> dict[str, Any]:
    return {"total": sum(state["parts"])}


def build() -> StateGraph:
    g = StateGraph(State)
    g.add_node("plan", plan)
    g.add_node("part", part)
    g.add_node("total", total)
    g.add_edge(START, "plan")
    g.add_conditional_edges("plan", fan, ["part"])
    g.add_edge("part", "total")
    g.add_edge("total", END)
    return g


traced_graph = build().compile(checkpointer=saver, executor=executor)
