"""Human in the loop: review a tool call with interrupt(), then approve or edit it."""

from typing import Any, Literal

from langchain_core.messages import AIMessage, ToolMessage


def program(m: Any) -> Any:
    def call_llm(state: m.MessagesState) -> dict[str, Any]:
        if isinstance(state["messages"][-1], ToolMessage):
            return {"messages": [AIMessage(content=f"Weather: {state['messages'][-1].content}")]}
        return {"messages": [AIMessage(content="", id="ai-1", tool_calls=[
            {"name": "weather_search", "args": {"city": "sf"}, "id": "tc1"}])]}

    def human_review_node(state: m.MessagesState) -> m.Command[
            Literal["call_llm", "run_tool"]]:
        tool_call = state["messages"][-1].tool_calls[-1]
        review = m.interrupt({"question": "Is this correct?", "tool_call": tool_call})
        if review["action"] == "continue":
            return m.Command(goto="run_tool")
        updated = AIMessage(content="", id=state["messages"][-1].id, tool_calls=[
            {**tool_call, "args": review["data"]}])
        return m.Command(goto="run_tool", update={"messages": [updated]})

    def run_tool(state: m.MessagesState) -> dict[str, Any]:
        call = state["messages"][-1].tool_calls[-1]
        return {"messages": [ToolMessage(content=f"sunny in {call['args']['city']}",
                                         tool_call_id=call["id"])]}

    def route_after_llm(state: m.MessagesState) -> Literal["__end__", "human_review_node"]:
        return "human_review_node" if state["messages"][-1].tool_calls else m.END

    builder = m.StateGraph(m.MessagesState)
    builder.add_node(call_llm)
    builder.add_node(run_tool)
    builder.add_node(human_review_node)
    builder.add_edge(m.START, "call_llm")
    builder.add_conditional_edges("call_llm", route_after_llm)
    builder.add_edge("run_tool", "call_llm")
    graph = builder.compile(checkpointer=m.MemorySaver())

    out = []
    for thread, answer in (("approve", {"action": "continue"}),
                           ("edit", {"action": "update", "data": {"city": "San Francisco"}})):
        config = {"configurable": {"thread_id": thread}}
        first = list(graph.stream({"messages": [("user", "weather in sf?")]}, config))
        pending = graph.get_state(config)
        resumed = list(graph.stream(m.Command(resume=answer), config))
        out.append((first, pending.next, pending.interrupts, resumed,
                    graph.get_state(config).values["messages"][-1]))
    return out, graph.get_graph().draw_mermaid()
