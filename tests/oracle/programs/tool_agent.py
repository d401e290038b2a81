"""A tool-calling agent (the ReAct loop) with a scripted model and a tool node."""

from typing import Any, Literal

from langchain_core.messages import AIMessage, ToolMessage

TOOLS = {"multiply": lambda a, b: a * b, "add": lambda a, b: a + b}


def scripted_model(messages: list[Any]) -> AIMessage:
    """Asks for multiply, then add, then answers with the last tool result."""
    done = sum(1 for x in messages if isinstance(x, ToolMessage))
    if done == 0:
        return AIMessage(content="", tool_calls=[
            {"name": "multiply", "args": {"a": 3, "b": 4}, "id": "call_1"}])
    if done == 1:
        return AIMessage(content="", tool_calls=[
            {"name": "add", "args": {"a": 12, "b": 5}, "id": "call_2"}])
    return AIMessage(content=f"The answer is {messages[-1].content}")


def program(m: Any) -> Any:
    def agent(state: m.MessagesState) -> dict[str, Any]:
        return {"messages": [scripted_model(state["messages"])]}

    def tools(state: m.MessagesState) -> dict[str, Any]:
        results = []
        for call in state["messages"][-1].tool_calls:
            value = TOOLS[call["name"]](**call["args"])
            results.append(ToolMessage(content=str(value), tool_call_id=call["id"]))
        return {"messages": results}

    def should_continue(state: m.MessagesState) -> Literal["tools", "__end__"]:
        return "tools" if state["messages"][-1].tool_calls else m.END

    builder = m.StateGraph(m.MessagesState)
    builder.add_node("agent", agent)
    builder.add_node("tools", tools)
    builder.add_edge(m.START, "agent")
    builder.add_conditional_edges("agent", should_continue, ["tools", m.END])
    builder.add_edge("tools", "agent")
    graph = builder.compile(checkpointer=m.InMemorySaver())
    config = {"configurable": {"thread_id": "agent"}}
    chunks = list(graph.stream({"messages": [("user", "what is 3*4+5?")]}, config))
    history = [(len(s.values["messages"]), s.next) for s in graph.get_state_history(config)]
    return chunks, graph.get_state(config).values["messages"][-1], history, \
        graph.get_graph().draw_mermaid()
