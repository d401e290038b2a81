"""A ReAct-style agent that watches ``RemainingSteps`` and ``IsLastStep`` and answers
before the recursion limit would stop it (LangGraph's prebuilt agent pattern).

The "model" keeps asking for a tool until the run has few steps left; then it gives
up politely instead of raising GraphRecursionError. Compared with two limits.
"""

from __future__ import annotations

import operator
from typing import Annotated, Any

import pytest
from typing_extensions import TypedDict

from tests.oracle.impls import new_config
from tests.oracle.runtime_impls import observe, same_rt

pytestmark = pytest.mark.oracle


def program(m: Any) -> Any:
    # functional form: the annotations are each implementation's own managed types
    agent_state = TypedDict("agent_state", {  # type: ignore[misc]  # noqa: UP013
        "messages": Annotated[list[str], operator.add],
        "remaining_steps": m.RemainingSteps,
        "is_last_step": m.IsLastStep,
    })

    def agent(state):  # noqa: ANN001, ANN202 - LangGraph reads node hints
        if state["is_last_step"] or state["remaining_steps"] < 3:
            return {"messages": ["ai: sorry, need more steps to process this request."]}
        return {"messages": [f"ai: call search ({state['remaining_steps']} left)"]}

    def tools(state):  # noqa: ANN001, ANN202
        return {"messages": [f"tool: result {len(state['messages'])}"]}

    def should_continue(state):  # noqa: ANN001, ANN202
        return "tools" if "call search" in state["messages"][-1] else m.END

    builder = m.StateGraph(agent_state)
    builder.add_node("agent", agent)
    builder.add_node("tools", tools)
    builder.add_edge(m.START, "agent")
    builder.add_conditional_edges("agent", should_continue, ["tools", m.END])
    builder.add_edge("tools", "agent")
    graph = builder.compile(checkpointer=m.InMemorySaver())
    short = observe(graph, {"messages": ["user: weather?"]}, new_config(recursion_limit=6),
                    modes=("updates", "values"))
    longer = graph.invoke({"messages": ["user: news?"]}, new_config(recursion_limit=11))
    return short, longer


def test_agent_stops_before_the_recursion_limit() -> None:
    short, longer = same_rt(program)
    assert short["state"]["values"]["messages"][-1].startswith("ai: sorry")
    assert longer["messages"][-1].startswith("ai: sorry")
