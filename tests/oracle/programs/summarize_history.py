"""Add a summary of the conversation history: a summary key beside MessagesState."""

from typing import Any, Literal

from langchain_core.messages import AIMessage, HumanMessage, SystemMessage


def program(m: Any) -> Any:
    class State(m.MessagesState):
        summary: str

    def call_model(state: State) -> dict[str, Any]:
        summary = state.get("summary", "")
        messages = state["messages"]
        if summary:
            messages = [SystemMessage(content=f"Summary: {summary}"), *messages]
        return {"messages": [AIMessage(content=f"seen {len(messages)}")]}

    def should_continue(state: State) -> Literal["summarize_conversation", "__end__"]:
        return "summarize_conversation" if len(state["messages"]) > 4 else m.END

    def summarize_conversation(state: State) -> dict[str, Any]:
        words = " ".join(str(x.content) for x in state["messages"])
        summary = f"{state.get('summary', '')}|{len(words.split())} words".strip("|")
        delete = [m.RemoveMessage(id=x.id) for x in state["messages"][:-2]]
        return {"summary": summary, "messages": delete}

    workflow = m.StateGraph(State)
    workflow.add_node("conversation", call_model)
    workflow.add_node(summarize_conversation)
    workflow.add_edge(m.START, "conversation")
    workflow.add_conditional_edges("conversation", should_continue)
    workflow.add_edge("summarize_conversation", m.END)
    app = workflow.compile(checkpointer=m.MemorySaver())

    config = {"configurable": {"thread_id": "4"}}
    updates = []
    for text in ("hi! I'm bob", "what's my name?", "i like the celtics!", "who do I like?"):
        for event in app.stream({"messages": [HumanMessage(content=text)]}, config,
                                stream_mode="updates"):
            updates.append(event)
    values = app.get_state(config).values
    return updates, values, app.get_graph().draw_mermaid()
