"""Subgraphs: a compiled StateGraph used as a node, sharing the parent's checkpointer."""

from __future__ import annotations

import operator
from typing import Annotated, Any

import pytest
from typing_extensions import TypedDict

from tests.oracle.impls import Calls, Norm, new_config, same

pytestmark = pytest.mark.oracle


class S(TypedDict, total=False):
    log: Annotated[list[str], operator.add]


def build(m: Any, calls: Calls, inner_node: Any = None) -> Any:
    """parent: START -> before -> child(sub: i1 -> i2) -> after."""
    def i1(s: S) -> dict[str, Any]:
        calls.hit("i1")
        return {"log": ["i1"]}

    def i2(s: S) -> dict[str, Any]:
        calls.hit("i2")
        return {"log": ["i2"]}

    sb = m.StateGraph(S)
    sb.add_node("i1", i1)
    sb.add_node("i2", inner_node or i2)
    sb.add_edge(m.START, "i1")
    sb.add_edge("i1", "i2")
    sub = sb.compile()

    pb = m.StateGraph(S)
    pb.add_node("before", lambda s: calls.hit("before") and {"log": ["before"]})
    pb.add_node("child", sub)
    pb.add_node("after", lambda s: calls.hit("after") and {"log": ["after"]})
    pb.add_edge(m.START, "before")
    pb.add_edge("before", "child")
    pb.add_edge("child", "after")
    return pb.compile(checkpointer=m.InMemorySaver())


def test_subgraph_plain_run() -> None:
    def scenario(m: Any) -> Any:
        calls = Calls()
        g = build(m, calls)
        cfg = new_config()
        out = g.invoke({"log": ["in"]}, cfg)
        return out, dict(calls)

    out, calls = same(scenario)
    assert calls == {"before": 1, "i1": 1, "i2": 1, "after": 1}


def test_subgraph_parent_history() -> None:
    def scenario(m: Any) -> Any:
        g = build(m, Calls())
        cfg = new_config()
        g.invoke({"log": []}, cfg)
        return [(h.metadata["source"], h.metadata["step"], h.next, h.values)
                for h in g.get_state_history(cfg)]

    same(scenario)


def test_subgraph_stream_updates_parent_level() -> None:
    def scenario(m: Any) -> Any:
        g = build(m, Calls())
        return list(g.stream({"log": []}, new_config(), stream_mode="updates"))

    same(scenario)


def test_subgraph_stream_values() -> None:
    def scenario(m: Any) -> Any:
        g = build(m, Calls())
        return list(g.stream({"log": []}, new_config(), stream_mode="values"))

    same(scenario)


def test_subgraph_error_then_resume_skips_finished_inner_nodes() -> None:
    def scenario(m: Any) -> Any:
        calls = Calls()
        fail = {"on": True}

        def i2(s: S) -> dict[str, Any]:
            calls.hit("i2")
            if fail["on"]:
                raise RuntimeError("inner boom")
            return {"log": ["i2"]}

        g = build(m, calls, inner_node=i2)
        cfg = new_config()
        with pytest.raises(RuntimeError):
            g.invoke({"log": []}, cfg)
        failed = g.get_state(cfg)
        after_fail = dict(calls)
        fail["on"] = False
        out = g.invoke(None, cfg)
        return failed.next, [t.name for t in failed.tasks], after_fail, out, dict(calls)

    res = same(scenario)
    assert res[4] == {"before": 1, "i1": 1, "i2": 2, "after": 1}


def test_subgraph_interrupt_then_resume() -> None:
    def scenario(m: Any) -> Any:
        calls = Calls()

        def i2(s: S) -> dict[str, Any]:
            calls.hit("i2")
            answer = m.interrupt({"ask": "inner"})
            return {"log": [f"i2:{answer}"]}

        g = build(m, calls, inner_node=i2)
        cfg = new_config()
        first = g.invoke({"log": []}, cfg)
        snap = g.get_state(cfg)
        out = g.invoke(m.Command(resume="yes"), cfg)
        return first, snap.next, [t.name for t in snap.tasks], \
            [i.value for i in snap.interrupts], out, dict(calls)

    res = same(scenario)
    assert res[5] == {"before": 1, "i1": 1, "i2": 2, "after": 1}


def test_subgraph_interrupt_stream_chunks() -> None:
    def scenario(m: Any) -> Any:
        calls = Calls()

        def i2(s: S) -> dict[str, Any]:
            return {"log": [f"i2:{m.interrupt('inner?')}"]}

        g = build(m, calls, inner_node=i2)
        cfg = new_config()
        first = list(g.stream({"log": []}, cfg, stream_mode="updates"))
        second = list(g.stream(m.Command(resume="y"), cfg, stream_mode="updates"))
        return first, second

    same(scenario)


SUBGRAPH_TASK_STATE = (
    "StateSnapshot.tasks[i].state for a subgraph node: LangGraph gives the subgraph's config "
    "({'configurable': {thread_id, checkpoint_ns: 'child:<task id>'}}) and, with "
    "get_state(cfg, subgraphs=True), the subgraph's own StateSnapshot; durable_graph gives None"
)


def test_subgraph_get_state_with_subgraphs_true() -> None:
    def scenario(m: Any) -> Any:
        def i2(s: S) -> dict[str, Any]:
            return {"log": [f"i2:{m.interrupt('inner?')}"]}

        g = build(m, Calls(), inner_node=i2)
        cfg = new_config()
        g.invoke({"log": []}, cfg)
        snap = g.get_state(cfg, subgraphs=True)
        inner = snap.tasks[0].state
        return (snap.next, inner.values, inner.next,
                [t.name for t in inner.tasks], [i.value for i in inner.interrupts])

    same(scenario)


def test_subgraph_called_inside_node_function() -> None:
    def scenario(m: Any) -> Any:
        calls = Calls()
        sb = m.StateGraph(S)
        sb.add_node("i1", lambda s: calls.hit("i1") and {"log": ["i1"]})
        sb.add_edge(m.START, "i1")
        sub = sb.compile()

        def call_sub(s: S) -> dict[str, Any]:
            res = sub.invoke({"log": ["x"]})
            return {"log": [f"sub:{len(res['log'])}"]}

        pb = m.StateGraph(S)
        pb.add_node("call_sub", call_sub)
        pb.add_edge(m.START, "call_sub")
        g = pb.compile(checkpointer=m.InMemorySaver())
        return g.invoke({"log": []}, new_config()), dict(calls)

    same(scenario)


def test_subgraph_task_state_is_config() -> None:
    def scenario(m: Any) -> Any:
        def i2(s: S) -> dict[str, Any]:
            return {"log": [f"i2:{m.interrupt('inner?')}"]}

        g = build(m, Calls(), inner_node=i2)
        cfg = new_config()
        g.invoke({"log": []}, cfg)
        state = g.get_state(cfg).tasks[0].state
        return None if state is None else Norm().config(state)

    assert same(scenario) == {"configurable": {"thread_id": "<thread>", "checkpoint_ns": "child"}}
