"""Subgraph nodes: private keys, Command.PARENT, checkpointer modes, parallel interrupts."""

from __future__ import annotations

import operator
from typing import Annotated, Any

import pytest
from typing_extensions import TypedDict

from tests.oracle.impls import Calls, new_config, same

pytestmark = pytest.mark.oracle


class S(TypedDict, total=False):
    log: Annotated[list[str], operator.add]


class Private(TypedDict, total=False):
    log: Annotated[list[str], operator.add]
    secret: str


def private_sub(m: Any, **compile: Any) -> Any:
    b = m.StateGraph(Private)
    b.add_node("hide", lambda s: {"secret": "s3", "log": ["hide"]})
    b.add_node("use", lambda s: {"log": [f"use:{s['secret']}"]})
    b.add_edge(m.START, "hide")
    b.add_edge("hide", "use")
    return b.compile(**compile)


def test_private_keys_of_a_subgraph_node_stay_inside() -> None:
    def scenario(m: Any) -> Any:
        p = m.StateGraph(S)
        p.add_node("child", private_sub(m))
        p.add_edge(m.START, "child")
        g = p.compile(checkpointer=m.InMemorySaver())
        cfg = new_config()
        out = g.invoke({"log": []}, cfg)
        chunks = list(g.stream({"log": []}, new_config(), stream_mode="updates"))
        return out, g.get_state(cfg).values, chunks

    same(scenario)


def test_command_parent_from_subgraph_node_routes_in_parent() -> None:
    def scenario(m: Any) -> Any:
        calls = Calls()

        def jump(s: S) -> Any:
            calls.hit("jump")
            return m.Command(graph=m.Command.PARENT, goto="target", update={"log": ["jumped"]})

        sb = m.StateGraph(S)
        sb.add_node("jump", jump)
        sb.add_node("never", lambda s: calls.hit("never") and {"log": ["never"]})
        sb.add_edge(m.START, "jump")
        sb.add_edge("jump", "never")
        sub = sb.compile()

        p = m.StateGraph(S)
        p.add_node("child", sub, destinations=("target",))
        p.add_node("target", lambda s: calls.hit("target") and {"log": ["target"]})
        p.add_node("other", lambda s: calls.hit("other") and {"log": ["other"]})
        p.add_edge(m.START, "child")
        p.add_edge("child", "other")
        g = p.compile(checkpointer=m.InMemorySaver())
        cfg = new_config()
        out = g.invoke({"log": ["in"]}, cfg)
        history = [(h.metadata["source"], h.metadata["step"], h.next, h.values)
                   for h in g.get_state_history(cfg)]
        chunks = list(g.stream({"log": []}, new_config(), stream_mode="updates"))
        # the parallel target and other may finish in either order, in both
        return out, dict(calls), history, chunks[0], sorted(map(str, chunks[1:]))

    same(scenario)


@pytest.mark.parametrize("mode", [None, True, False])
def test_subgraph_node_checkpointer_modes(mode: Any) -> None:
    def scenario(m: Any) -> Any:
        calls = Calls()
        sb = m.StateGraph(S)
        sb.add_node("s1", lambda s: calls.hit("s1") and {"log": [f"n{len(s['log'])}"]})
        sb.add_edge(m.START, "s1")
        p = m.StateGraph(S)
        p.add_node("child", sb.compile(checkpointer=mode))
        p.add_edge(m.START, "child")
        g = p.compile(checkpointer=m.InMemorySaver())
        cfg = new_config()
        first = g.invoke({"log": []}, cfg)
        second = g.invoke({"log": []}, cfg)
        return first, second, dict(calls)

    same(scenario)


def test_parallel_child_interrupts_each_resumed_by_id() -> None:
    def scenario(m: Any) -> Any:
        def ask(tag: str) -> Any:
            return lambda s: {"log": [f"{tag}={m.interrupt(tag)}"]}

        def sub_asking(tag: str) -> Any:
            sb = m.StateGraph(S)
            sb.add_node("ask", ask(tag))
            sb.add_edge(m.START, "ask")
            return sb.compile()

        p = m.StateGraph(S)
        p.add_node("a", sub_asking("a"))
        p.add_node("b", sub_asking("b"))
        p.add_edge(m.START, "a")
        p.add_edge(m.START, "b")
        g = p.compile(checkpointer=m.InMemorySaver())
        cfg = new_config()
        first = g.invoke({"log": []}, cfg)
        ids = {i.value: i.id for i in first["__interrupt__"]}
        out = g.invoke(m.Command(resume={ids["a"]: "A", ids["b"]: "B"}), cfg)
        return sorted(i.value for i in first["__interrupt__"]), sorted(out["log"])

    same(scenario)


def test_command_parent_from_a_root_graph_is_refused() -> None:
    import durable_graph as dg

    b = dg.StateGraph(S)
    b.add_node("jump", lambda s: dg.Command(graph=dg.Command.PARENT, goto="jump"))
    b.add_edge(dg.START, "jump")
    with pytest.raises(dg.InvalidUpdateError, match="no parent graph"):
        b.compile().invoke({"log": []})
