"""A subgraph compiled with a breakpoint (``interrupt_before``): the parent pauses,
the subgraph's state is read and edited through its config, and a node of the
subgraph is acted as (LangGraph's "view and update state in subgraphs" guide)."""

from typing import Any

from typing_extensions import TypedDict


class RouterState(TypedDict):
    route: str
    city: str
    answer: str


def program(m: Any) -> Any:
    def model_node(state: RouterState) -> dict[str, Any]:
        return {"city": "san francisco"}

    def weather_node(state: RouterState) -> dict[str, Any]:
        return {"answer": f"It's sunny in {state['city']}!"}

    sb = m.StateGraph(RouterState)
    sb.add_node("model_node", model_node)
    sb.add_node("weather_node", weather_node)
    sb.add_edge(m.START, "model_node")
    sb.add_edge("model_node", "weather_node")
    subgraph = sb.compile(interrupt_before=["weather_node"])

    def router(state: RouterState) -> dict[str, Any]:
        return {"route": "weather"}

    pb = m.StateGraph(RouterState)
    pb.add_node("router", router)
    pb.add_node("weather_graph", subgraph)
    pb.add_node("normal_llm_node", lambda s: {"answer": "hi"})
    pb.add_edge(m.START, "router")
    pb.add_conditional_edges(
        "router", lambda s: "weather_graph" if s["route"] == "weather" else "normal_llm_node",
        ["weather_graph", "normal_llm_node"])
    pb.add_edge("weather_graph", m.END)
    pb.add_edge("normal_llm_node", m.END)
    graph = pb.compile(checkpointer=m.InMemorySaver())

    def names(chunks: list[Any]) -> list[Any]:
        return [([p.split(":")[0] for p in ns], c) for ns, c in chunks]

    seen = []
    for thread, edit in (("1", None), ("2", "weather_node")):
        config = {"configurable": {"thread_id": thread}}
        seen.append(names(list(graph.stream({"route": "", "city": "", "answer": ""}, config,
                                            subgraphs=True))))
        state = graph.get_state(config, subgraphs=True)
        sub_config = state.tasks[0].state.config
        seen += [state.next, state.tasks[0].state.next, graph.get_state(sub_config).values]
        if edit is None:
            graph.update_state(sub_config, {"city": "la"})
        else:
            graph.update_state(sub_config, {"answer": "rainy"}, as_node=edit)
        seen.append(graph.get_state(config, subgraphs=True).tasks[0].state)
        seen.append(names(list(graph.stream(None, config, subgraphs=True))))
        seen.append(graph.get_state(config).values)
        seen.append([(h.next, h.values) for h in graph.get_state_history(config)])
    return seen
