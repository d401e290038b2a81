"""A producer starting a run on a thread whose previous run just ended (real Redis, no
worker needed): the ending run tells its producer before it frees the thread's lease,
so the next run waits for that lease instead of failing; a running thread still refuses."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any, TypedDict

import pytest

from durable_graph import END, START, RedisSaver, StateGraph
from durable_graph.errors import DispatchError
from durable_graph.worker import CeleryExecutor, create_app

pytestmark = pytest.mark.redis


class S(TypedDict):
    x: int


@pytest.fixture
def graph(redis_url: str, redis_prefix: str) -> Iterator[Any]:
    app = create_app(redis_url, prefix=redis_prefix, queue=f"{redis_prefix}.q",
                     secret_key="producer-lease-test-secret")
    b = StateGraph(S)
    b.add_node("n", lambda s: {"x": s["x"] + 1})
    b.add_edge(START, "n")
    b.add_edge("n", END)
    with RedisSaver.from_url(redis_url, prefix=redis_prefix) as saver:
        yield b.compile(checkpointer=saver, executor=CeleryExecutor(app))


def test_a_run_waits_for_the_lease_of_a_run_that_just_ended(graph: Any) -> None:
    saver = graph.saver
    ending = saver.leases.acquire("t", "run:before", 30)
    saver.set_status("t", "interrupted")  # told its producer, lease not freed yet
    threading.Timer(0.3, saver.leases.release, args=(ending,)).start()
    handle = graph.submit({"x": 1}, {"configurable": {"thread_id": "t"}})
    assert handle.status() == "running"
    assert saver.leases.generation("t") == ending.generation + 1


def test_a_running_thread_refuses_a_second_run_at_once(graph: Any) -> None:
    graph.saver.leases.acquire("busy", "run:other", 30)
    graph.saver.set_status("busy", "running")
    with pytest.raises(DispatchError, match="running on the workers already"):
        graph.submit({"x": 1}, {"configurable": {"thread_id": "busy"}})
