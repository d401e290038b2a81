"""How to delete messages: RemoveMessage in a node and in update_state."""

from typing import Any, Literal

from langchain_core.messages import AIMessage


def program(m: Any) -> Any:
    def chat(state: m.MessagesState) -> dict[str, Any]:
        return {"messages": [AIMessage(content=f"reply #{len(state['messages'])}")]}

    def delete_messages(state: m.MessagesState) -> dict[str, Any]:
        messages = state["messages"]
        if len(messages) > 3:
            return {"messages": [m.RemoveMessage(id=x.id) for x in messages[:-3]]}
        return {}

    def should_continue(state: m.MessagesState) -> Literal["delete_messages", "__end__"]:
        return "delete_messages" if len(state["messages"]) > 3 else m.END

    workflow = m.StateGraph(m.MessagesState)
    workflow.add_node("chat", chat)
    workflow.add_node("delete_messages", delete_messages)
    workflow.add_edge(m.START, "chat")
    workflow.add_conditional_edges("chat", should_continue)
    workflow.add_edge("delete_messages", m.END)
    app = workflow.compile(checkpointer=m.MemorySaver())

    config = {"configurable": {"thread_id": "2"}}
    turns = []
    for text in ("hi! I'm bob", "what's my name?", "and again?"):
        turns.append([[(x.type, x.content) for x in e["messages"]] for e in app.stream(
            {"messages": [("user", text)]}, config, stream_mode="values")])
    messages = app.get_state(config).values["messages"]
    app.update_state(config, {"messages": m.RemoveMessage(id=messages[0].id)})
    after = app.get_state(config)
    return turns, after.values, [s.metadata["source"] for s in app.get_state_history(config)]
