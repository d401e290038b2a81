"""Graphs with runtime context, a Redis store and a Redis cache, run on real workers.

Importable by the test process and by ``celery -A runtime_graphs worker`` (the same
``DG_TEST_*`` environment as ``graphs_fixture``). The store and the cache are plain
Redis ones under the test prefix, so every worker and the test share them. Bodies
record what they saw in Redis under ``{P}:rt:{thread}:...``: the worker pid, the
idempotency key of each execution, and a counter per cached computation.
"""

from __future__ import annotations

import operator
import os
from dataclasses import dataclass
from typing import Annotated, Any, TypedDict

import redis
from celery.signals import worker_process_init

from durable_graph import (
    END,
    START,
    CachePolicy,
    RedisCache,
    RedisSaver,
    RedisStore,
    RemainingSteps,
    RetryPolicy,
    Runtime,
    StateGraph,
    get_task_context,
    task,
)
from durable_graph.worker import CeleryExecutor, create_app

REDIS_URL = os.environ.get("DG_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
PREFIX = os.environ.get("DG_TEST_PREFIX", "dg-dist-test")
QUEUE = os.environ.get("DG_TEST_QUEUE", "dg-dist-test")
SECRET = os.environ.get("DG_TEST_SECRET", "not-a-secret-only-for-tests")
POOL_KEY = f"{PREFIX}:pool"

app = create_app(REDIS_URL, prefix=PREFIX, queue=QUEUE, secret_key=SECRET, lease_ttl=5.0)
saver = RedisSaver.from_url(REDIS_URL, prefix=PREFIX)
executor = CeleryExecutor(app)
store = RedisStore(REDIS_URL, prefix=f"{PREFIX}:store")
cache = RedisCache(REDIS_URL, prefix=f"{PREFIX}:cache")
_client = redis.Redis.from_url(REDIS_URL, socket_timeout=10)


@worker_process_init.connect
def _register_pool_process(**_: Any) -> None:
    _client.rpush(POOL_KEY, f"{os.getpid()}:{os.getppid()}")


def record(thread: str, what: str, value: Any) -> None:
    """Append ``value`` to the list ``{P}:rt:{thread}:{what}``."""
    _client.rpush(f"{PREFIX}:rt:{thread}:{what}", str(value))


def recorded(thread: str, what: str) -> list[str]:
    return [v.decode() for v in _client.lrange(f"{PREFIX}:rt:{thread}:{what}", 0, -1)]


@dataclass
class Ctx:
    user: str
    thread: str


class State(TypedDict, total=False):
    n: int
    log: Annotated[list[str], operator.add]
    doubled: int


def greet(state: State, runtime: Runtime[Ctx]) -> dict[str, Any]:
    """Reads the run's context; remembers the visit in the shared store."""
    ctx = runtime.context
    seen = runtime.store.search(("visits", ctx.user))
    runtime.store.put(("visits", ctx.user), f"n{state['n']}", {"pid": os.getpid()})
    record(ctx.thread, "greet-pid", os.getpid())
    return {"log": [f"hello {ctx.user}, visit {len(seen) + 1}"]}


def double(state: State, runtime: Runtime[Ctx]) -> dict[str, Any]:
    """An expensive computation cached in Redis by its input."""
    _client.incr(f"{PREFIX}:rt:double:{state['n']}")
    return {"doubled": state["n"] * 2}


@task(retry_policy=RetryPolicy(initial_interval=0.01, jitter=False))
def charge(thread: str, amount: int) -> str:
    """A payment: fails once, then succeeds; records its key on every attempt."""
    key = get_task_context().idempotency_key
    record(thread, "charge-key", key)
    if len(recorded(thread, "charge-key")) < 2:
        raise ConnectionError("payment API timed out")
    return f"charged {amount}"


def pay(state: State, runtime: Runtime[Ctx]) -> dict[str, Any]:
    """Calls the payment task; replays after it finishes, with the same key."""
    record(runtime.context.thread, "pay-key", get_task_context().idempotency_key)
    return {"log": [charge(runtime.context.thread, state["n"]).result()]}


def build_runtime() -> StateGraph:
    b = StateGraph(State, context_schema=Ctx)
    b.add_node("greet", greet)
    b.add_node("double", double, cache_policy=CachePolicy(key_func=lambda s: str(s["n"]), ttl=2))
    b.add_node("pay", pay)
    b.add_edge(START, "greet")
    b.add_edge("greet", "double")
    b.add_edge("double", "pay")
    b.add_edge("pay", END)
    return b


runtime_graph = build_runtime().compile(
    checkpointer=saver, executor=executor, store=store, cache=cache)


class AgentState(TypedDict, total=False):
    log: Annotated[list[str], operator.add]
    remaining_steps: RemainingSteps


def agent(state: AgentState) -> dict[str, Any]:
    """Loops until the recursion limit is near, reading the managed value."""
    return {"log": [f"agent@{state['remaining_steps']}"]}


def side(state: AgentState) -> dict[str, Any]:
    return {"log": ["side"]}


def summary(state: AgentState) -> dict[str, Any]:
    """Deferred: runs once, after the agent loop and the side branch are both done."""
    return {"log": [f"summary of {len(state['log'])}"]}


def build_agent() -> StateGraph:
    b = StateGraph(AgentState)
    b.add_node("agent", agent)
    b.add_node("side", side)
    b.add_node("summary", summary, defer=True)
    b.add_edge(START, "agent")
    b.add_edge(START, "side")
    b.add_conditional_edges(
        "agent", lambda s: "summary" if s["remaining_steps"] <= 3 else "agent")
    b.add_edge("side", "summary")
    return b


agent_graph = build_agent().compile(checkpointer=saver, executor=executor)


def sub_visit(state: State, runtime: Runtime[Ctx]) -> dict[str, Any]:
    """A subgraph's node: sees the run's context and the parent graph's store."""
    ctx = runtime.context
    runtime.store.put(("sub-visits", ctx.user), f"n{state['n']}", {"pid": os.getpid()})
    record(ctx.thread, "sub-pid", os.getpid())
    return {"log": [f"sub saw {ctx.user}"]}


visit_sub = StateGraph(State, context_schema=Ctx)
visit_sub.add_node("sub_visit", sub_visit)
visit_sub.add_edge(START, "sub_visit")


def build_with_sub() -> StateGraph:
    """greet -> visit (a subgraph whose node uses the context and the store)."""
    b = StateGraph(State, context_schema=Ctx)
    b.add_node("greet", greet)
    b.add_node("visit", visit_sub.compile())
    b.add_edge(START, "greet")
    b.add_edge("greet", "visit")
    return b


sub_graph = build_with_sub().compile(checkpointer=saver, executor=executor, store=store)
