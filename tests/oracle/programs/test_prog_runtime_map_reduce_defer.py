"""How-to "map-reduce" with ``defer``: jokes generated in parallel with Send, a slower side
branch, and a deferred ``best_joke`` that waits for every branch before it picks.

Branches have different lengths (the side branch takes three steps), so without
``defer`` the reducer would run early; both implementations must run it once, last.
"""

from __future__ import annotations

import operator
from typing import Annotated, Any

import pytest
from typing_extensions import TypedDict

from tests.oracle.impls import new_config
from tests.oracle.runtime_impls import observe, same_rt

pytestmark = pytest.mark.oracle


class Overall(TypedDict, total=False):
    topic: str
    subjects: list[str]
    jokes: Annotated[list[str], operator.add]
    notes: Annotated[list[str], operator.add]
    best_selected_joke: str


class JokeState(TypedDict):
    subject: str


def program(m: Any) -> Any:
    def generate_topics(state: Overall) -> dict[str, Any]:
        return {"subjects": [f"{state['topic']}-{s}" for s in ("cats", "dogs", "owls")]}

    def generate_joke(state: JokeState) -> dict[str, Any]:
        return {"jokes": [f"Why did the {state['subject']} cross the road?"]}

    def continue_to_jokes(state: Overall) -> list[Any]:
        return [m.Send("generate_joke", {"subject": s}) for s in state["subjects"]]

    def research(state: Overall) -> dict[str, Any]:
        return {"notes": [f"research on {state['topic']}"]}

    def review(state: Overall) -> dict[str, Any]:
        return {"notes": [f"reviewed {len(state.get('notes', []))} notes"]}

    def best_joke(state: Overall) -> dict[str, Any]:
        best = max(state["jokes"], key=len)
        return {"best_selected_joke": f"{best} ({len(state['notes'])} notes)"}

    builder = m.StateGraph(Overall)
    builder.add_node("generate_topics", generate_topics)
    builder.add_node("generate_joke", generate_joke)
    builder.add_node("research", research)
    builder.add_node("review", review)
    builder.add_node("best_joke", best_joke, defer=True)
    builder.add_edge(m.START, "generate_topics")
    builder.add_edge(m.START, "research")
    builder.add_edge("research", "review")
    builder.add_conditional_edges("generate_topics", continue_to_jokes, ["generate_joke"])
    builder.add_edge("generate_joke", "best_joke")
    builder.add_edge("review", "best_joke")
    builder.add_edge("best_joke", m.END)
    graph = builder.compile(checkpointer=m.InMemorySaver())
    cfg = new_config()
    seen = observe(graph, {"topic": "animals"}, cfg, modes=("updates",), sort_updates=True)
    seen["values"] = list(graph.stream({"topic": "birds"}, new_config(), stream_mode="values"))
    return seen


def test_deferred_reducer_runs_once_after_every_branch() -> None:
    result = same_rt(program)
    updates = [c for _, c in result["chunks"]]
    assert sum("best_joke" in c for c in updates) == 1
