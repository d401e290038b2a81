"""How-to "add node caching": an expensive node cached by its input with a TTL.

Runs the same input twice (the second is a cache hit, streamed with
``__metadata__: {"cached": True}``), a different input (a miss), and a node whose
``key_func`` looks at one field only; compares chunks, state and history.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from typing_extensions import TypedDict

from tests.oracle.impls import Calls, new_config
from tests.oracle.runtime_impls import observe, same_rt

pytestmark = pytest.mark.oracle


class State(TypedDict, total=False):
    x: int
    user: str
    result: int
    greeting: str


def program(m: Any) -> Any:
    calls = Calls()

    def expensive_node(state: State) -> dict[str, Any]:
        calls.hit("expensive")
        time.sleep(0.01)  # the slow computation the cache saves
        return {"result": state["x"] * 2}

    def greet(state: State) -> dict[str, Any]:
        calls.hit("greet")
        return {"greeting": f"hello {state['user']} ({state['result']})"}

    builder = m.StateGraph(State)
    builder.add_node("expensive_node", expensive_node, cache_policy=m.CachePolicy(ttl=30))
    builder.add_node("greet", greet, cache_policy=m.CachePolicy(
        key_func=lambda s: s["user"]))
    builder.add_edge(m.START, "expensive_node")
    builder.add_edge("expensive_node", "greet")
    graph = builder.compile(checkpointer=m.InMemorySaver(), cache=m.InMemoryCache())
    runs = [
        observe(graph, {"x": 5, "user": "ann"}, new_config(), modes=("updates", "values")),
        observe(graph, {"x": 5, "user": "ann"}, new_config(), modes=("updates", "values")),
        observe(graph, {"x": 6, "user": "ann"}, new_config(), modes=("updates",)),
        observe(graph, {"x": 6, "user": "bob"}, new_config(), modes=("updates",)),
    ]
    return runs, dict(calls)


def test_second_run_is_served_from_the_cache() -> None:
    runs, calls = same_rt(program)
    assert calls == {"expensive": 3, "greet": 2}  # the default key is the whole input
