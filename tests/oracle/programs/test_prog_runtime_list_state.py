"""A graph whose whole state is one reducer-typed list (``StateGraph(Annotated[list, add])``):
an event log that nodes append to, with a loop, a human edit through ``update_state``
and a resumed run.
"""

from __future__ import annotations

import operator
from typing import Annotated, Any

import pytest

from tests.oracle.impls import new_config
from tests.oracle.runtime_impls import observe, same_rt

pytestmark = pytest.mark.oracle


def program(m: Any) -> Any:
    def plan(events: list[str]) -> list[str]:
        return [f"plan:{len(events)}"]

    def act(events: list[str]) -> list[str]:
        return [f"act:{events[-1]}"]

    def check(events: list[str]) -> str:
        return m.END if sum(e.startswith("act") for e in events) >= 2 else "plan"

    builder = m.StateGraph(Annotated[list, operator.add])
    builder.add_node("plan", plan)
    builder.add_node("act", act)
    builder.add_edge(m.START, "plan")
    builder.add_edge("plan", "act")
    builder.add_conditional_edges("act", check)
    graph = builder.compile(checkpointer=m.InMemorySaver(), interrupt_before=["act"])
    cfg = new_config()
    first = observe(graph, ["goal"], cfg, modes=("updates", "values"))
    graph.update_state(cfg, ["human: go"])
    rest = [list(graph.stream(None, cfg, stream_mode="values")) for _ in range(3)]
    return first, rest, graph.get_state(cfg), list(graph.get_state_history(cfg))


def test_one_value_state_with_a_human_edit() -> None:
    same_rt(program)
