"""The app and graph that ``bench/bench_recovery.py`` kills workers under.

Imported by the benchmark (the producer) and by the workers it starts
(``celery -A bench.recovery_graphs worker``); settings come from the
``DURABLE_GRAPH_*`` environment the benchmark sets. The one node records when each
of its executions started (Redis server time, with its pid and parent pid) and
holds its first execution for ``HOLD`` seconds, so the benchmark can kill the
worker running it and time how long until the node starts again elsewhere.
"""

from __future__ import annotations

import os
import time
from typing import Any, TypedDict

import redis

from durable_graph import END, START, StateGraph
from durable_graph.store.redis import RedisSaver
from durable_graph.worker import CeleryExecutor, create_app

REDIS_URL = os.environ.get("DURABLE_GRAPH_REDIS_URL", "redis://127.0.0.1:6379/0")
PREFIX = os.environ.get("DURABLE_GRAPH_PREFIX", "dg")
HOLD = 60.0
"""Seconds the first execution of ``hold`` blocks (the benchmark kills it before)."""

app = create_app()
_clients: dict[int, redis.Redis] = {}


def client() -> redis.Redis:
    """This process's Redis client (pool processes make their own)."""
    found = _clients.get(os.getpid())
    if found is None:
        found = _clients[os.getpid()] = redis.Redis.from_url(REDIS_URL)
    return found


def starts_key(thread: str) -> str:
    """The list of ``"<server time>:<pid>:<parent pid>"`` of each start of ``thread``'s node."""
    return f"{PREFIX}:starts:{thread}"


class HoldState(TypedDict):
    """The thread id, so the node knows where to record its starts."""

    thread: str


def hold(state: HoldState) -> dict[str, Any]:
    seconds, micros = client().time()
    key = starts_key(state["thread"])
    first = client().rpush(key, f"{seconds + micros / 1e6}:{os.getpid()}:{os.getppid()}") == 1
    if first:
        time.sleep(HOLD)
    return {}


_b = StateGraph(HoldState)
_b.add_node("hold", hold)
_b.add_edge(START, "hold")
_b.add_edge("hold", END)
hold_graph = _b.compile(checkpointer=RedisSaver.from_url(REDIS_URL, prefix=PREFIX),
                        executor=CeleryExecutor(app))
"""One node whose first execution blocks until its worker is killed."""
