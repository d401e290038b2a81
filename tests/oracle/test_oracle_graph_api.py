"""Graph API parity (issue 10, part A): chat state, private and I/O schemas, undeclared
keys, Command[Literal] routing and the drawn graph, interrupts, debug events."""

# no `from __future__ import annotations`: the schemas below are built inside scenarios
# from the implementation namespace ``m``, and both libraries read them with get_type_hints
import dataclasses
import re
from typing import Annotated, Any, Literal

import pytest
from typing_extensions import TypedDict

from tests.oracle.impls import Norm, new_config, same

pytestmark = pytest.mark.oracle


def run_all(g: Any, m: Any, inputs: list[Any], modes: Any = ("updates", "values")) -> Any:
    """Stream each input on one thread; chunks, final state and the history's values."""
    cfg = new_config()
    chunks = [list(g.stream(i, cfg, stream_mode=list(modes))) for i in inputs]
    history = [(s.values, s.next) for s in g.get_state_history(cfg)]
    return chunks, g.get_state(cfg), history


# -- chat state ---------------------------------------------------------------------


def chat_graph(m: Any) -> Any:
    """bot answers; editor rewrites the first answer (same id) and deletes the user turn."""

    class State(m.MessagesState):
        turns: int

    def bot(s: State) -> dict[str, Any]:
        return {"messages": [("assistant", f"answer {len(s['messages'])}")],
                "turns": s.get("turns", 0) + 1}

    def editor(s: State) -> dict[str, Any]:
        first_ai = next(x for x in s["messages"] if x.type == "ai")
        user = s["messages"][0]
        return {"messages": [{"role": "assistant", "content": "edited", "id": first_ai.id},
                             m.RemoveMessage(id=user.id)]}

    b = m.StateGraph(State)
    b.add_node("bot", bot)
    b.add_node("editor", editor)
    b.add_edge(m.START, "bot")
    b.add_edge("bot", "editor")
    return b.compile(checkpointer=m.InMemorySaver())


def test_messages_append_replace_and_remove() -> None:
    def scenario(m: Any) -> Any:
        return run_all(chat_graph(m), m, [{"messages": [("user", "hi")]},
                                          {"messages": "again"}])

    same(scenario)


def test_messages_remove_all() -> None:
    def scenario(m: Any) -> Any:
        def reset(s: Any) -> dict[str, Any]:
            return {"messages": [m.RemoveMessage(id=m.REMOVE_ALL_MESSAGES), ("ai", "fresh")]}

        b = m.StateGraph(m.MessagesState)
        b.add_node("reset", reset)
        b.add_edge(m.START, "reset")
        g = b.compile(checkpointer=m.InMemorySaver())
        return run_all(g, m, [{"messages": [("user", "a"), ("user", "b")]}])

    same(scenario)


def test_add_messages_called_directly() -> None:
    def scenario(m: Any) -> Any:
        left = m.add_messages([], [("user", "a"), {"role": "assistant", "content": "b"}])
        right = [{"role": "user", "content": "A", "id": left[0].id}, "c"]
        merged = m.add_messages(left, right)
        removed = m.add_messages(merged, [m.RemoveMessage(id=left[1].id)])
        single = m.add_messages(removed, ("ai", "one"))
        try:
            m.add_messages(single, [m.RemoveMessage(id="missing")])
        except ValueError as exc:
            error = str(exc)
        return merged, removed, single, error

    same(scenario)


def test_messages_state_with_a_reducer_of_options() -> None:
    def scenario(m: Any) -> Any:
        class State(TypedDict):
            messages: Annotated[list, m.add_messages(format="langchain-openai")]

        b = m.StateGraph(State)
        b.add_node("n", lambda s: {"messages": [{"role": "user", "content": "x"}]})
        b.add_edge(m.START, "n")
        return b.compile().invoke({"messages": [("user", "first")]})

    same(scenario)


# -- schemas ------------------------------------------------------------------------


class Overall(TypedDict):
    a: str


class Node2Input(TypedDict):
    private_data: str


def private_graph(m: Any) -> Any:
    """LangGraph's "private state" example: node_2 reads a key only its input declares."""

    def node_1(state: Overall) -> dict[str, Any]:
        return {"private_data": "set by node_1"}

    def node_2(state: Node2Input) -> Overall:
        return {"a": f"node_2 saw {state['private_data']}"}

    def node_3(state: Overall) -> Overall:
        return {"a": state["a"] + " and node_3"}

    b = m.StateGraph(Overall)
    b.add_node("node_1", node_1)
    b.add_node("node_2", node_2)
    b.add_node("node_3", node_3)
    b.add_edge(m.START, "node_1")
    b.add_edge("node_1", "node_2")
    b.add_edge("node_2", "node_3")
    return b.compile(checkpointer=m.InMemorySaver())


def test_private_state_is_read_and_written() -> None:
    def scenario(m: Any) -> Any:
        g = private_graph(m)
        return run_all(g, m, [{"a": "start"}]), g.invoke({"a": "x"}, new_config())

    same(scenario)


class In(TypedDict):
    question: str


class Out(TypedDict):
    answer: str


class Both(In, Out):
    notes: list[str]


def io_graph(m: Any) -> Any:
    def think(state: In) -> dict[str, Any]:
        return {"notes": [f"thinking about {state['question']}"]}

    def answer(state: Both) -> dict[str, Any]:
        return {"answer": f"{state['question']}? {len(state['notes'])} note(s)"}

    b = m.StateGraph(Both, input_schema=In, output_schema=Out)
    b.add_node("think", think)
    b.add_node("answer", answer)
    b.add_edge(m.START, "think")
    b.add_edge("think", "answer")
    return b.compile(checkpointer=m.InMemorySaver())


def test_input_and_output_schemas_filter() -> None:
    def scenario(m: Any) -> Any:
        g = io_graph(m)
        out = g.invoke({"question": "why", "answer": "ignored input", "notes": ["x"]},
                       new_config())
        return out, run_all(g, m, [{"question": "how"}])

    same(scenario)


def test_an_undeclared_key_is_ignored() -> None:
    def scenario(m: Any) -> Any:
        b = m.StateGraph(Overall)
        b.add_node("n", lambda s: {"a": "kept", "undeclared": 1})
        b.add_edge(m.START, "n")
        g = b.compile(checkpointer=m.InMemorySaver())
        return run_all(g, m, [{"a": "in", "other": 2}])

    same(scenario)


# -- Command[Literal] routing and the drawn graph --------------------------------------


def routing_graph(m: Any, *, breakpoint_: bool = False) -> Any:
    class S(TypedDict):
        n: int
        path: Annotated[list[str], lambda a, b: a + b]

    def decide(s: S) -> m.Command[Literal["small", "big"]]:
        return m.Command(update={"path": ["decide"]}, goto="big" if s["n"] > 5 else "small")

    def route(s: S) -> Literal["decide", "__end__"]:
        return "decide" if len(s["path"]) < 4 else "__end__"

    b = m.StateGraph(S)
    b.add_node("decide", decide)
    b.add_node("small", lambda s: {"path": ["small"], "n": s["n"] + 3})
    b.add_node("big", lambda s: {"path": ["big"]})
    b.add_node("done", lambda s: {"path": ["done"]})
    b.add_edge(m.START, "decide")
    b.add_conditional_edges("small", route)
    b.add_conditional_edges("big", lambda s: "finish", {"finish": "done", "again": "decide"})
    kw = {"interrupt_before": ["done"], "interrupt_after": ["big"]} if breakpoint_ else {}
    return b.compile(checkpointer=m.InMemorySaver(), **kw)


def test_command_literal_routing_runs_alike() -> None:
    def scenario(m: Any) -> Any:
        return run_all(routing_graph(m), m, [{"n": 1, "path": []}])

    same(scenario)


@pytest.mark.parametrize("breakpoints", [False, True])
def test_drawn_graph_is_the_same_mermaid(breakpoints: bool) -> None:
    def scenario(m: Any) -> Any:
        graph = routing_graph(m, breakpoint_=breakpoints).get_graph()
        edges = [(e.source, e.target, e.conditional, e.data) for e in graph.edges]
        return graph.draw_mermaid(), edges, list(graph.nodes)

    same(scenario)


def test_drawn_graph_with_fan_in_lists_and_unreached_nodes() -> None:
    def scenario(m: Any) -> Any:
        b = m.StateGraph(Overall)
        for name in ("a", "b", "c", "join", "orphan"):
            b.add_node(name, lambda s: {})
        b.add_edge(m.START, "a")
        b.add_conditional_edges("a", lambda s: ["b", "c"], ["b", "c", m.END])
        b.add_edge(["b", "c"], "join")
        b.add_edge("orphan", "join")
        return b.compile().get_graph().draw_mermaid()

    same(scenario)


def test_drawn_functional_workflow() -> None:
    def scenario(m: Any) -> Any:
        @m.entrypoint(checkpointer=m.InMemorySaver())
        def workflow(x: int) -> int:
            return x

        return workflow.get_graph().draw_mermaid()

    same(scenario)


# -- types --------------------------------------------------------------------------


def test_subscriptable_types_and_interrupt_fields() -> None:
    def scenario(m: Any) -> Any:
        annotated = (m.Command[Literal["a", "b"]], m.Interrupt[str])

        @m.entrypoint(checkpointer=m.MemorySaver())
        def flow(x: int, *, previous: Any = None) -> m.entrypoint.final[int, str]:
            return m.entrypoint.final(value=x + (previous or 0), save=x * 10)

        cfg = new_config()
        outs = [flow.invoke(1, cfg), flow.invoke(2, cfg)]
        fields = [f.name for f in dataclasses.fields(m.Interrupt)]
        return len(annotated), outs, fields, m.Interrupt("v", id="x") == m.Interrupt("v", "x")

    same(scenario)


def test_interrupt_ids_are_32_hex_digits() -> None:
    def scenario(m: Any) -> Any:
        def ask(s: Overall) -> dict[str, Any]:
            return {"a": m.interrupt("sure?")}

        b = m.StateGraph(Overall)
        b.add_node("ask", ask)
        b.add_edge(m.START, "ask")
        g = b.compile(checkpointer=m.InMemorySaver())
        cfg = new_config()
        (pending,) = g.invoke({"a": ""}, cfg)["__interrupt__"]
        resumed = g.invoke(m.Command(resume={pending.id: "yes"}), cfg)
        return bool(re.fullmatch(r"[0-9a-f]{32}", pending.id)), pending.value, resumed

    assert same(scenario)[0] is True


# -- debug events ---------------------------------------------------------------------


def debug_view(chunks: list[dict[str, Any]]) -> list[Any]:
    """Debug events with ids labelled and configs reduced to their shape."""
    norm = Norm()

    def view(o: Any) -> Any:
        if isinstance(o, dict):
            return {k: (norm.config(v) if k in ("config", "parent_config")
                        else norm.label("id", v) if k == "id" else view(v))
                    for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return type(o)(view(v) for v in o)
        return norm(o)

    out = []
    for c in chunks:
        assert set(c) == {"step", "timestamp", "type", "payload"}
        assert re.match(r"\d{4}-\d\d-\d\dT", c["timestamp"])
        out.append((c["step"], c["type"], view(c["payload"])))
    return out


def test_debug_event_payloads() -> None:
    def scenario(m: Any) -> Any:
        def ask(s: Overall) -> dict[str, Any]:
            return {"a": m.interrupt({"q": s["a"]})}

        b = m.StateGraph(Overall)
        b.add_node("first", lambda s: {"a": s["a"] + "!"})
        b.add_node("ask", ask)
        b.add_edge(m.START, "first")
        b.add_edge("first", "ask")
        g = b.compile(checkpointer=m.InMemorySaver())
        cfg = new_config()
        first = list(g.stream({"a": "hi"}, cfg, stream_mode="debug"))
        second = list(g.stream(m.Command(resume="ok"), cfg, stream_mode="debug"))
        return debug_view(first), debug_view(second)

    same(scenario)


def test_values_debug_and_updates_interleave_as_in_langgraph() -> None:
    def scenario(m: Any) -> Any:
        g = io_graph(m)
        cfg = new_config()
        chunks = g.stream({"question": "q"}, cfg, stream_mode=["values", "debug", "updates"])
        return [(mode, c["type"] if mode == "debug" else c) for mode, c in chunks]

    same(scenario)


# -- the messages stream mode ---------------------------------------------------------


def test_messages_mode_streams_returned_messages_once_with_metadata() -> None:
    from langchain_core.messages import AIMessage, ToolMessage

    def scenario(m: Any) -> Any:
        def bot(s: Any) -> dict[str, Any]:  # one new message, one from its input
            return {"messages": [AIMessage(content="hello"), s["messages"][0]]}

        def tool(s: Any) -> Any:
            return m.Command(update={"messages": [
                ToolMessage(content="42", tool_call_id="t1", id="tm1")]}, goto="last")

        b = m.StateGraph(m.MessagesState)
        b.add_node("bot", bot)
        b.add_node("tool", tool)
        b.add_node("last", lambda s: {"messages": AIMessage(content="single")})
        b.add_edge(m.START, "bot")
        b.add_edge("bot", "tool")
        g = b.compile(checkpointer=m.InMemorySaver())
        cfg = new_config(metadata={"user": "u1"})
        norm = Norm()
        out = []
        for mode, chunk in g.stream({"messages": [("user", "hi")]}, cfg,
                                    stream_mode=["messages", "updates"]):
            if mode == "messages":
                msg, meta = chunk
                meta = {**meta, "thread_id": "<thread>",
                        "langgraph_checkpoint_ns": norm.ns(meta["langgraph_checkpoint_ns"])}
                out.append((mode, (msg, meta)))
            else:
                out.append((mode, chunk))
        return out

    same(scenario)


def test_a_runnable_as_a_node() -> None:
    from langchain_core.runnables import RunnableLambda

    def scenario(m: Any) -> Any:
        b = m.StateGraph(Overall)
        b.add_node("shout", RunnableLambda(lambda s: {"a": s["a"].upper()}))
        b.add_edge(m.START, "shout")
        return b.compile().invoke({"a": "hi"})

    same(scenario)


@pytest.mark.parametrize("destinations", [("b", "c"), {"b": "to b", "c": "to c"}])
def test_drawn_destinations_of_add_node(destinations: Any) -> None:
    def scenario(m: Any) -> Any:
        def a(s: Overall) -> Any:
            return m.Command(goto="b")

        b = m.StateGraph(Overall)
        b.add_node("a", a, destinations=destinations)
        b.add_node("b", lambda s: {"a": "b"})
        b.add_node("c", lambda s: {"a": "c"})
        b.add_edge(m.START, "a")
        g = b.compile()
        return g.invoke({"a": ""}), g.get_graph().draw_mermaid()

    same(scenario)
