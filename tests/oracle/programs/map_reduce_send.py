"""Map-reduce with Send: generate a joke per subject in parallel, then pick the best."""

import operator
from typing import Annotated, Any

from typing_extensions import TypedDict


class OverallState(TypedDict):
    topic: str
    subjects: list[str]
    jokes: Annotated[list[str], operator.add]
    best_selected_joke: str


class JokeState(TypedDict):
    subject: str


def program(m: Any) -> Any:
    def generate_topics(state: OverallState) -> dict[str, Any]:
        return {"subjects": [f"{state['topic']}-{i}" for i in range(3)]}

    def generate_joke(state: JokeState) -> dict[str, Any]:
        return {"jokes": [f"joke about {state['subject']}"]}

    def continue_to_jokes(state: OverallState) -> list[Any]:
        return [m.Send("generate_joke", {"subject": s}) for s in state["subjects"]]

    def best_joke(state: OverallState) -> dict[str, Any]:
        return {"best_selected_joke": max(state["jokes"])}

    graph = m.StateGraph(OverallState)
    graph.add_node("generate_topics", generate_topics)
    graph.add_node("generate_joke", generate_joke)
    graph.add_node("best_joke", best_joke)
    graph.add_edge(m.START, "generate_topics")
    graph.add_conditional_edges("generate_topics", continue_to_jokes, ["generate_joke"])
    graph.add_edge("generate_joke", "best_joke")
    graph.add_edge("best_joke", m.END)
    app = graph.compile()
    chunks = sorted(map(repr, app.stream({"topic": "animals"})))
    return chunks, sorted(app.invoke({"topic": "cars"})["jokes"]), app.get_graph().draw_mermaid()
