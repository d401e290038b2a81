"""How to define input/output schemas for a graph."""

from typing import Any

from typing_extensions import TypedDict


class InputState(TypedDict):
    question: str


class OutputState(TypedDict):
    answer: str


class OverallState(InputState, OutputState):
    pass


def program(m: Any) -> Any:
    def answer_node(state: InputState) -> dict[str, Any]:
        return {"answer": "bye", "question": state["question"]}

    builder = m.StateGraph(OverallState, input_schema=InputState, output_schema=OutputState)
    builder.add_node(answer_node)
    builder.add_edge(m.START, "answer_node")
    builder.add_edge("answer_node", m.END)
    graph = builder.compile(checkpointer=m.InMemorySaver())
    config = {"configurable": {"thread_id": "io"}}
    out = graph.invoke({"question": "hi"}, config)
    streamed = list(graph.stream({"question": "again", "answer": "not input"}, config,
                                 stream_mode=["values", "updates"]))
    return out, streamed, graph.get_state(config).values
