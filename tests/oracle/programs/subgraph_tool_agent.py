"""An agent whose tool calls run in a tool-calling subgraph invoked from a node
(LangGraph's "call a subgraph inside a node" how-to): the subgraph keeps private
keys and asks a human before a sensitive tool runs."""

import operator
from typing import Annotated, Any, Literal

from langchain_core.messages import AIMessage, ToolMessage
from typing_extensions import TypedDict

TOOLS = {"multiply": lambda a, b: a * b, "transfer": lambda to, amount: f"sent {amount} to {to}"}


def scripted_model(messages: list[Any]) -> AIMessage:
    """Asks for multiply and transfer at once, then answers with the tool results."""
    results = [x.content for x in messages if isinstance(x, ToolMessage)]
    if not results:
        return AIMessage(content="", tool_calls=[
            {"name": "multiply", "args": {"a": 6, "b": 7}, "id": "call_m"},
            {"name": "transfer", "args": {"to": "bob", "amount": 42}, "id": "call_t"}])
    return AIMessage(content="done: " + "; ".join(results))


class ToolState(TypedDict):
    calls: list[dict[str, Any]]
    results: Annotated[list[str], operator.add]
    approved: bool  # private to the subgraph


def program(m: Any) -> Any:
    def review(state: ToolState) -> dict[str, Any]:
        sensitive = [c["name"] for c in state["calls"] if c["name"] == "transfer"]
        if not sensitive:
            return {"approved": True}
        return {"approved": m.interrupt({"question": "run these tools?", "tools": sensitive})}

    def run_tools(state: ToolState) -> dict[str, Any]:
        if not state["approved"]:
            return {"results": [f"{c['id']}:refused" for c in state["calls"]]}
        return {"results": [f"{c['id']}:{TOOLS[c['name']](**c['args'])}" for c in state["calls"]]}

    tb = m.StateGraph(ToolState)
    tb.add_node("review", review)
    tb.add_node("run_tools", run_tools)
    tb.add_edge(m.START, "review")
    tb.add_edge("review", "run_tools")
    tool_graph = tb.compile()

    def agent(state: m.MessagesState) -> dict[str, Any]:
        return {"messages": [scripted_model(state["messages"])]}

    def tools(state: m.MessagesState) -> dict[str, Any]:
        calls = state["messages"][-1].tool_calls
        out = tool_graph.invoke({"calls": calls, "results": []})
        by_id = dict(r.split(":", 1) for r in out["results"])
        return {"messages": [ToolMessage(content=by_id[c["id"]], tool_call_id=c["id"])
                             for c in calls]}

    def route(state: m.MessagesState) -> Literal["tools", "__end__"]:
        return "tools" if state["messages"][-1].tool_calls else m.END

    builder = m.StateGraph(m.MessagesState)
    builder.add_node("agent", agent)
    builder.add_node("tools", tools)
    builder.add_edge(m.START, "agent")
    builder.add_conditional_edges("agent", route, ["tools", m.END])
    builder.add_edge("tools", "agent")
    graph = builder.compile(checkpointer=m.InMemorySaver())
    config = {"configurable": {"thread_id": "agent-sub"}}
    first = list(graph.stream({"messages": [("user", "6*7, then pay bob")]}, config,
                              stream_mode="updates", subgraphs=True))
    paused = graph.get_state(config, subgraphs=True)
    sub_state = paused.tasks[0].state
    second = list(graph.stream(m.Command(resume=True), config, stream_mode="updates",
                               subgraphs=True))
    final = graph.get_state(config)
    history = [(h.next, len(h.values.get("messages", []))) for h in graph.get_state_history(config)]
    return [(ns[0].split(":")[0] if ns else "", c) for ns, c in first], sub_state, \
        [(ns[0].split(":")[0] if ns else "", c) for ns, c in second], \
        final.values["messages"][-1].content, history
