"""Map-reduce with Send into a subgraph: each document is summarised by a compiled
two-step subgraph (a node of the parent), then the summaries are combined."""

import operator
from typing import Annotated, Any

from typing_extensions import TypedDict


class Overall(TypedDict):
    docs: list[str]
    summaries: Annotated[list[str], operator.add]
    report: str


class DocState(TypedDict):
    doc: str
    words: list[str]  # private to the subgraph
    summaries: Annotated[list[str], operator.add]


def program(m: Any) -> Any:
    def split(state: DocState) -> dict[str, Any]:
        return {"words": state["doc"].split()}

    def summarise(state: DocState) -> dict[str, Any]:
        return {"summaries": [f"{state['words'][0]}..({len(state['words'])})"]}

    sb = m.StateGraph(DocState)
    sb.add_node("split", split)
    sb.add_node("summarise", summarise)
    sb.add_edge(m.START, "split")
    sb.add_edge("split", "summarise")
    summariser = sb.compile()

    def fan_out(state: Overall) -> list[Any]:
        return [m.Send("summarise_doc", {"doc": d, "summaries": []}) for d in state["docs"]]

    def combine(state: Overall) -> dict[str, Any]:
        return {"report": " | ".join(sorted(state["summaries"]))}

    builder = m.StateGraph(Overall)
    builder.add_node("summarise_doc", summariser)
    builder.add_node("combine", combine)
    builder.add_conditional_edges(m.START, fan_out, ["summarise_doc"])
    builder.add_edge("summarise_doc", "combine")
    graph = builder.compile(checkpointer=m.InMemorySaver())
    config = {"configurable": {"thread_id": "map-reduce-sub"}}
    docs = ["alpha beta gamma", "delta epsilon", "zeta", "eta theta iota kappa"]
    chunks = list(graph.stream({"docs": docs, "summaries": []}, config, stream_mode="updates",
                               subgraphs=True))
    by_level = sorted(repr((len(ns), [p.split(":")[0] for p in ns], c)) for ns, c in chunks)
    state = graph.get_state(config)
    history = [(h.next, sorted(h.values.get("summaries", [])), h.metadata["step"])
               for h in graph.get_state_history(config)]
    return by_level, state.values, history
