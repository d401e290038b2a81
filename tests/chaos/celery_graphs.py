"""Graphs and the Celery app of the worker-crash tests (``celery -A celery_graphs worker``).

Workers get every setting from ``DURABLE_GRAPH_*`` variables (one key prefix and
one queue per test); the test process builds its own app with the same values
and compiles the builders below with ``CeleryExecutor``. Graph code reaches the
workers as a pickled blob whose functions point back into this module, which
the workers import.

Every node and ``@task`` body counts its executions: ``INCR {P}:n:<name>`` with
``P`` the prefix of the worker's environment, so the test reads how often each
piece of user code ran, across processes and crashes. Each pool process pushes
``"<pid>:<parent pid>"`` to ``{P}:pool`` when it starts (what
``tests/distributed/dg_workers.WorkerPool`` waits for).

Redis clients live in a per-process dict reached only through functions, so
cloudpickle (which pickles a ``@task`` body by value) never tries to pickle one.
"""

from __future__ import annotations

import operator
import os
import time
from typing import Annotated, Any, TypedDict

import redis
from celery.signals import worker_process_init

from durable_graph import END, START, StateGraph, task
from durable_graph.worker import create_app
from durable_graph.worker.app import settings_of

CALLS = 6
"""``@task`` calls the ``gather`` node issues, one after the other."""
HOLD = 20.0
"""Seconds the first run of ``gather``'s last phase blocks (the test kills it meanwhile)."""
CHAIN = ("s0", "s1", "s2", "s3", "s4", "s5")
STEP_SLEEP = 0.5

_clients: dict[tuple[int, str], redis.Redis] = {}


def tune(app: Any) -> Any:
    """Keep the broker's unacked-message records under the queue's own keys.

    kombu's defaults (``unacked``, ...) are shared by every Celery app on the
    Redis; a test's killed worker leaves its unacked job there, so it stays under
    the test's prefix (and is deleted with it) instead.
    """
    queue = settings_of(app).queue
    app.conf.broker_transport_options = {
        **app.conf.broker_transport_options,
        "unacked_key": f"{queue}.unacked",
        "unacked_index_key": f"{queue}.unacked_index",
        "unacked_mutex_key": f"{queue}.unacked_mutex",
    }
    return app


app = tune(create_app())
"""The workers' app: ``DURABLE_GRAPH_REDIS_URL``/``_PREFIX``/``_QUEUE``/``_SECRET_KEY``."""


def client() -> redis.Redis:
    """This process's Redis client (forked pool processes make their own)."""
    url = os.environ.get("DURABLE_GRAPH_REDIS_URL", "redis://127.0.0.1:6379/0")
    key = (os.getpid(), url)
    found = _clients.get(key)
    if found is None:
        found = _clients[key] = redis.Redis.from_url(url, socket_timeout=10)
    return found


def key(name: str) -> str:
    """A test key under this worker's prefix."""
    return f"{os.environ['DURABLE_GRAPH_PREFIX']}:{name}"


def count(name: str) -> int:
    """Record one execution of ``name``; how many there were, this one included."""
    return int(client().incr(key(f"n:{name}")))


@worker_process_init.connect
def _register_pool_process(**_: Any) -> None:
    if "DURABLE_GRAPH_PREFIX" in os.environ:
        client().rpush(key("pool"), f"{os.getpid()}:{os.getppid()}")


# -- one node, CALLS sequential @task calls, then a last phase that blocks once --------


class GatherState(TypedDict, total=False):
    n: int
    results: list[int]
    total: int


@task
def work(i: int) -> int:
    count(f"call{i}")
    return i * 10


def gather(state: GatherState) -> dict[str, Any]:
    """Each call is committed before the next is issued; then block on the first pass."""
    count("gather")
    results = [work(i).result() for i in range(state["n"])]
    passes = count("final")
    client().rpush(key("final_pids"), f"{os.getpid()}:{os.getppid()}")
    if passes == 1:
        deadline = time.monotonic() + HOLD
        while time.monotonic() < deadline and not client().exists(key("release")):
            time.sleep(0.05)
    return {"results": results}


def total(state: GatherState) -> dict[str, Any]:
    count("total")
    return {"total": sum(state["results"])}


def build_gather() -> StateGraph:
    b = StateGraph(GatherState)
    b.add_node("gather", gather)
    b.add_node("total", total)
    b.add_edge(START, "gather")
    b.add_edge("gather", "total")
    b.add_edge("total", END)
    return b


# -- a chain of slow steps ---------------------------------------------------------------


class ChainState(TypedDict, total=False):
    value: int
    log: Annotated[list[str], operator.add]


def _link(name: str, k: int) -> Any:
    def node(state: ChainState) -> dict[str, Any]:
        count(name)
        time.sleep(STEP_SLEEP)
        return {"value": state["value"] * 2 + k, "log": [name]}

    node.__name__ = node.__qualname__ = f"link_{name}"
    return node


link_s0, link_s1, link_s2, link_s3, link_s4, link_s5 = (
    _link(name, k) for k, name in enumerate(CHAIN)
)
LINKS = (link_s0, link_s1, link_s2, link_s3, link_s4, link_s5)


def chain_value(start: int) -> int:
    """What the chain computes from ``value=start``."""
    value = start
    for k in range(len(CHAIN)):
        value = value * 2 + k
    return value


def build_chain() -> StateGraph:
    b = StateGraph(ChainState).add_sequence(list(zip(CHAIN, LINKS, strict=True)))
    b.add_edge(START, CHAIN[0])
    b.add_edge(CHAIN[-1], END)
    return b
