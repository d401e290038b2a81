"""How to combine control flow and state updates with Command (Literal-annotated nodes)."""

import operator
from typing import Annotated, Any, Literal

from typing_extensions import TypedDict


class State(TypedDict):
    foo: str
    trail: Annotated[list[str], operator.add]


def program(m: Any) -> Any:
    def node_a(state: State) -> m.Command[Literal["node_b", "node_c"]]:
        value = "b" if len(state["foo"]) % 2 else "c"
        goto = "node_b" if value == "b" else "node_c"
        return m.Command(update={"foo": value, "trail": ["a"]}, goto=goto)

    def node_b(state: State) -> dict[str, Any]:
        return {"foo": state["foo"] + "b", "trail": ["b"]}

    def node_c(state: State) -> dict[str, Any]:
        return {"foo": state["foo"] + "c", "trail": ["c"]}

    builder = m.StateGraph(State)
    builder.add_edge(m.START, "node_a")
    builder.add_node(node_a)
    builder.add_node(node_b)
    builder.add_node(node_c)
    graph = builder.compile()
    runs = [list(graph.stream({"foo": foo, "trail": []})) for foo in ("x", "xy")]
    drawn = graph.get_graph()
    return runs, drawn.draw_mermaid(), [(e.source, e.target, e.conditional) for e in drawn.edges]
