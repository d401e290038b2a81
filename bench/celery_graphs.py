"""The Celery app, graphs and bare baseline tasks that ``bench/bench_celery.py`` runs.

Imported by the benchmark (the producer) and by the Celery workers it starts
(``celery -A bench.celery_graphs worker``), so both see the same app object and
the same module-level graphs: workers load the graphs by import path. Everything
comes from the environment the benchmark sets before importing this module:

``DURABLE_GRAPH_REDIS_URL``, ``DURABLE_GRAPH_PREFIX``, ``DURABLE_GRAPH_QUEUE``,
``DURABLE_GRAPH_SECRET_KEY`` and, for a RabbitMQ broker, ``DURABLE_GRAPH_BROKER_URL``,
which ``create_app`` reads itself (the result backend is the checkpoint Redis
whatever the broker).

The same worker processes serve durable-graph's jobs and the bare baseline tasks:

* ``bench.noop``: returns its argument (a bare Celery round trip);
* ``bench.commit``: one Redis commit, a small Lua script that HSETs a record and
  ZADDs an index entry atomically, then returns (a round trip plus one commit);
* ``bench.commit_quiet``: the same commit without storing a result (the inner
  links of a bare Celery chain, which need no result).

durable-graph's own job task keeps ``ignore_result``; only the baseline tasks store
a result, in a Redis result backend on the same Redis (``.get()`` waits on its
pub/sub notification, no polling). Every Celery key (queue, unacked index,
bindings, results) lives under ``<prefix>:celery:`` so the benchmark can delete
exactly its own keys; on RabbitMQ the benchmark deletes its queue instead.
"""

from __future__ import annotations

import operator
import os
import threading
from typing import Annotated, Any, TypedDict

import redis

from durable_graph import END, START, StateGraph, task
from durable_graph.store.redis import RedisSaver
from durable_graph.worker import CeleryExecutor, Settings, create_app

REDIS_URL = os.environ.get("DURABLE_GRAPH_REDIS_URL", "redis://127.0.0.1:6379/0")
PREFIX = os.environ.get("DURABLE_GRAPH_PREFIX", "dg")
CELERY_KEYS = f"{PREFIX}:celery:"
"""Every Celery broker and result key of the run starts with this."""

app = create_app(
    result_backend=REDIS_URL,
    result_backend_transport_options={"global_keyprefix": CELERY_KEYS},
    result_expires=3600,
)
settings: Settings = app.conf.durable_graph_settings
if settings.broker_kind == "redis":
    # keep create_app's transport options (visibility timeout, unacked restore) and
    # only move the broker's keys under the run's prefix
    app.conf.broker_transport_options = {
        **app.conf.broker_transport_options, "global_keyprefix": CELERY_KEYS,
    }

# -- bare Celery baseline tasks ---------------------------------------------------

_COMMIT_LUA = """
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'n', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return 1
"""
_local = threading.local()


def _commit_script() -> Any:
    """This process's registered commit script (made after the pool forks)."""
    found = getattr(_local, "script", None)
    if found is None or _local.pid != os.getpid():
        client = redis.Redis.from_url(REDIS_URL)
        found = _local.script = client.register_script(_COMMIT_LUA)
        _local.pid = os.getpid()
    return found


def _one_commit(i: int) -> int:
    # both keys in one hash slot, like a durable-graph thread's keys
    tag = "{" + f"{PREFIX}:bare}}"
    _commit_script()(keys=[f"{tag}:rec", f"{tag}:idx"], args=[f"v{i % 64}", i])
    return i


@app.task(name="bench.noop", ignore_result=False)
def noop(i: int = 0) -> int:
    """A trivial task: one bare Celery round trip."""
    return i


@app.task(name="bench.commit", ignore_result=False)
def commit(i: int = 0) -> int:
    """One Redis commit (HSET + ZADD in one Lua script) and a result."""
    return _one_commit(i)


@app.task(name="bench.commit_quiet", ignore_result=True)
def commit_quiet(i: int = 0) -> int:
    """One Redis commit, no result stored (inner links of a Celery chain)."""
    return _one_commit(i)


# -- durable-graph graphs ----------------------------------------------------------

_saver = RedisSaver.from_url(REDIS_URL, prefix=PREFIX)
_executor = CeleryExecutor(app)


class ChainState(TypedDict):
    """Each node of the chain appends its name."""

    items: Annotated[list[str], operator.add]


def _appender(name: str) -> Any:
    def node(state: ChainState) -> dict[str, list[str]]:
        return {"items": [name]}

    node.__name__ = name
    return node


_chain = StateGraph(ChainState)
for _name in ("a", "b", "c"):
    _chain.add_node(_name, _appender(_name))
_chain.add_edge(START, "a")
_chain.add_edge("a", "b")
_chain.add_edge("b", "c")
_chain.add_edge("c", END)
chain_graph = _chain.compile(checkpointer=_saver, executor=_executor)
"""a -> b -> c, three supersteps on the workers."""


@task
def trivial(i: int) -> int:
    """The fanned-out ``@task``: as trivial as ``bench.noop``."""
    return i


class FanState(TypedDict):
    """The fan-out node's input size and the sum of its calls' results."""

    n: int
    total: int


def fan(state: FanState) -> dict[str, int]:
    """Start every call first, then wait on them all."""
    futures = [trivial(i) for i in range(state["n"])]
    return {"total": sum(f.result() for f in futures)}


_fan = StateGraph(FanState)
_fan.add_node("fan", fan)
_fan.add_edge(START, "fan")
_fan.add_edge("fan", END)
fan_graph = _fan.compile(checkpointer=_saver, executor=_executor)
"""One node that fans out ``n`` @task calls."""
