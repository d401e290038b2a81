"""Add memory to a chatbot: MessagesState, MemorySaver, two threads, stream_mode="values"."""

from typing import Any

from langchain_core.messages import AIMessage


def fake_llm(messages: list[Any]) -> AIMessage:
    last = messages[-1].content
    return AIMessage(content=f"[{len(messages)} msgs] you said: {last}")


def program(m: Any) -> Any:
    def chatbot(state: m.MessagesState) -> dict[str, Any]:
        return {"messages": [fake_llm(state["messages"])]}

    builder = m.StateGraph(m.MessagesState)
    builder.add_node("chatbot", chatbot)
    builder.add_edge(m.START, "chatbot")
    builder.add_edge("chatbot", m.END)
    graph = builder.compile(checkpointer=m.MemorySaver())

    seen = []
    config = {"configurable": {"thread_id": "1"}}
    for text in ("Hi there! My name is Will.", "Remember my name?"):
        for event in graph.stream({"messages": [{"role": "user", "content": text}]},
                                  config, stream_mode="values"):
            seen.append(event["messages"][-1])
    other = graph.invoke({"messages": [("user", "Remember my name?")]},
                         {"configurable": {"thread_id": "2"}})
    snapshot = graph.get_state(config)
    return seen, other, snapshot.values, snapshot.next
