"""How to pass private state between nodes (node input schemas declare private keys)."""

from typing import Any

from typing_extensions import TypedDict


class OverallState(TypedDict):
    a: str


class Node1Output(TypedDict):
    private_data: str


class Node2Input(TypedDict):
    private_data: str


def program(m: Any) -> Any:
    def node_1(state: OverallState) -> Node1Output:
        output = {"private_data": "set by node_1"}
        return output

    def node_2(state: Node2Input) -> OverallState:
        return {"a": f"set by node_2 from {state['private_data']}"}

    def node_3(state: OverallState) -> OverallState:
        return {"a": state["a"] + ", then node_3"}

    builder = m.StateGraph(OverallState).add_sequence([node_1, node_2, node_3])
    builder.add_edge(m.START, "node_1")
    graph = builder.compile(checkpointer=m.InMemorySaver())
    config = {"configurable": {"thread_id": "p"}}
    updates = list(graph.stream({"a": "set at start"}, config, stream_mode="updates"))
    return updates, graph.get_state(config).values, graph.invoke({"a": "again"}, config)
