"""Edit a paused subgraph's state through its config, then time-travel the parent
(LangGraph's "view and update subgraph state" how-to)."""

from typing import Any

from typing_extensions import TypedDict


class State(TypedDict):
    city: str
    forecast: str


def program(m: Any) -> Any:
    def router(state: State) -> dict[str, Any]:
        return {"city": state["city"].strip().title()}

    def weather(state: State) -> dict[str, Any]:
        approved = m.interrupt({"check city": state["city"]})
        return {"forecast": f"sunny in {state['city']} ({approved})"}

    sb = m.StateGraph(State)
    sb.add_node("model_node", router)
    sb.add_node("weather_node", weather)
    sb.add_edge(m.START, "model_node")
    sb.add_edge("model_node", "weather_node")
    subgraph = sb.compile()

    pb = m.StateGraph(State)
    pb.add_node("prep", lambda s: {"forecast": "pending"})
    pb.add_node("weather_graph", subgraph)
    pb.add_edge(m.START, "prep")
    pb.add_edge("prep", "weather_graph")
    graph = pb.compile(checkpointer=m.InMemorySaver())
    config = {"configurable": {"thread_id": "weather"}}

    first = list(graph.stream({"city": " san francisco ", "forecast": ""}, config,
                              subgraphs=True, stream_mode="updates"))
    state = graph.get_state(config, subgraphs=True)
    sub_config = state.tasks[0].state.config
    before = graph.get_state(sub_config)
    sub_history = [(h.next, h.values) for h in graph.get_state_history(sub_config)]
    graph.update_state(sub_config, {"city": "La"})
    edited = graph.get_state(config, subgraphs=True).tasks[0].state
    resumed = graph.invoke(m.Command(resume="ok"), config)

    # time travel: replay the parent from before the subgraph ran, with a new city
    past = next(h for h in graph.get_state_history(config) if h.next == ("weather_graph",))
    forked = graph.update_state(past.config, {"city": "paris"})
    replay = list(graph.stream(None, forked, subgraphs=True, stream_mode="updates"))
    replay_state = graph.get_state(config, subgraphs=True)
    done = graph.invoke(m.Command(resume="fine"), config)
    names = [[p.split(":")[0] for p in ns] for ns, _ in first + replay]
    return ([c for _, c in first], before, sub_history, edited, resumed,
            [c for _, c in replay], replay_state, done, names,
            [(h.next, h.values, h.metadata["source"]) for h in graph.get_state_history(config)])
