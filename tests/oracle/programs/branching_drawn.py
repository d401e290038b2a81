"""Branches: parallel fan-out and fan-in, a conditional edge with a path map, the drawing."""

import operator
from typing import Annotated, Any

from typing_extensions import TypedDict


class State(TypedDict):
    aggregate: Annotated[list, operator.add]
    which: str


def program(m: Any) -> Any:
    def step(name: str) -> Any:
        return lambda state: {"aggregate": [name]}

    builder = m.StateGraph(State)
    for name in ("a", "b", "c", "d", "e"):
        builder.add_node(name, step(name))
    builder.add_edge(m.START, "a")

    def route_bc_or_cd(state: State) -> list[str]:
        return ["b", "c"] if state["which"] == "bc" else ["c", "d"]

    builder.add_conditional_edges("a", route_bc_or_cd, {"b": "b", "c": "c", "d": "d"})
    for node in ("b", "c", "d"):
        builder.add_edge(node, "e")
    builder.add_edge("e", m.END)
    graph = builder.compile(checkpointer=m.InMemorySaver())
    runs = [graph.invoke({"aggregate": [], "which": w},
                         {"configurable": {"thread_id": w}}) for w in ("bc", "cd")]
    drawn = graph.get_graph()
    return runs, drawn.draw_mermaid(), list(drawn.nodes)
