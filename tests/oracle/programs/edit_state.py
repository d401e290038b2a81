"""Wait for user input with a breakpoint, edit the state with update_state, resume."""

from typing import Any

from langchain_core.messages import AIMessage


def program(m: Any) -> Any:
    def draft(state: m.MessagesState) -> dict[str, Any]:
        return {"messages": [AIMessage(content="draft: hello wrld", id="draft-1")]}

    def publish(state: m.MessagesState) -> dict[str, Any]:
        return {"messages": [AIMessage(content=f"published '{state['messages'][-1].content}'")]}

    builder = m.StateGraph(m.MessagesState)
    builder.add_node("draft", draft)
    builder.add_node("publish", publish)
    builder.add_edge(m.START, "draft")
    builder.add_edge("draft", "publish")
    graph = builder.compile(checkpointer=m.MemorySaver(), interrupt_before=["publish"])

    config = {"configurable": {"thread_id": "edit"}}
    before = list(graph.stream({"messages": [("user", "write a greeting")]}, config,
                               stream_mode="values"))
    paused = graph.get_state(config)
    fixed = AIMessage(content="draft: hello world", id="draft-1")  # same id: replaces it
    new_config = graph.update_state(config, {"messages": [fixed]}, as_node="draft")
    after = list(graph.stream(None, config, stream_mode="values"))
    return before, paused.next, sorted(new_config["configurable"]), after, \
        [s.next for s in graph.get_state_history(config)]
