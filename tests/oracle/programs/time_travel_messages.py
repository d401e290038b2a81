"""Time travel: replay from a past checkpoint and fork it with an edited message."""

from typing import Any

from langchain_core.messages import AIMessage


def program(m: Any) -> Any:
    calls = []

    def joke(state: m.MessagesState) -> dict[str, Any]:
        topic = state["messages"][-1].content
        calls.append(topic)
        return {"messages": [AIMessage(content=f"a joke about {topic}")]}

    def rate(state: m.MessagesState) -> dict[str, Any]:
        return {"messages": [AIMessage(content=f"rated: {len(state['messages'])}/10")]}

    builder = m.StateGraph(m.MessagesState)
    builder.add_node("joke", joke)
    builder.add_node("rate", rate)
    builder.add_edge(m.START, "joke")
    builder.add_edge("joke", "rate")
    graph = builder.compile(checkpointer=m.InMemorySaver())
    config = {"configurable": {"thread_id": "tt"}}
    graph.invoke({"messages": [("user", "cats")]}, config)

    states = list(graph.get_state_history(config))
    before_joke = next(s for s in states if s.next == ("joke",))
    replayed = graph.invoke(None, before_joke.config)
    user = before_joke.values["messages"][-1]
    forked = graph.update_state(before_joke.config, {"messages": [
        {"role": "user", "content": "dogs", "id": user.id}]})
    fork_out = graph.invoke(None, forked)
    return replayed, fork_out, calls, len(list(graph.get_state_history(config)))
