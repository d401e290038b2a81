"""Subgraphs called from inside a node function (``sub.invoke(...)`` in a node)."""

from __future__ import annotations

import operator
from typing import Annotated, Any

import pytest
from typing_extensions import TypedDict

from tests.oracle.impls import Calls, new_config, same

pytestmark = pytest.mark.oracle


class S(TypedDict, total=False):
    log: Annotated[list[str], operator.add]


def chain(m: Any, calls: Calls, names: list[str], last: Any = None, **compile: Any) -> Any:
    """A subgraph running ``names`` in order; ``last`` replaces the last node's body."""
    b = m.StateGraph(S)
    prev = m.START
    for name in names:
        def body(s: S, name: str = name) -> dict[str, Any]:
            calls.hit(name)
            return {"log": [name]}
        b.add_node(name, last if (last is not None and name == names[-1]) else body)
        b.add_edge(prev, name)
        prev = name
    return b.compile(**compile)


def caller(m: Any, calls: Calls, sub: Any, name: str = "call") -> Any:
    """A graph START -> before -> ``name`` (a node function invoking ``sub``)."""
    def call(s: S) -> dict[str, Any]:
        calls.hit(name)
        out = sub.invoke({"log": [f"{name}-in"]})
        return {"log": [f"{name}:{'/'.join(out['log'])}"]}

    b = m.StateGraph(S)
    b.add_node("before", lambda s: calls.hit("before") and {"log": ["before"]})
    b.add_node(name, call)
    b.add_edge(m.START, "before")
    b.add_edge("before", name)
    return b


def failing_while(fail: dict[str, bool], calls: Calls, name: str, then: Any = None) -> Any:
    """A node body that raises while ``fail['on']``, then returns ``then(s)`` or logs."""
    def body(s: S) -> dict[str, Any]:
        calls.hit(name)
        if fail["on"]:
            raise RuntimeError(f"{name} boom")
        return then(s) if then is not None else {"log": [name]}
    return body


def asking(m: Any, calls: Calls, tag: str) -> Any:
    def ask(s: S) -> dict[str, Any]:
        calls.hit(tag)
        return {"log": [f"{tag}={m.interrupt(tag + '?')}"]}
    return ask


def test_interrupt_inside_called_subgraph_pauses_parent_and_resumes() -> None:
    def scenario(m: Any) -> Any:
        calls = Calls()
        sub = chain(m, calls, ["s1", "s2", "ask"], last=asking(m, calls, "ask"))
        g = caller(m, calls, sub).compile(checkpointer=m.InMemorySaver())
        cfg = new_config()
        first = g.invoke({"log": []}, cfg)
        snap = g.get_state(cfg)
        paused = (snap.next, [i.value for i in snap.interrupts], dict(calls))
        out = g.invoke(m.Command(resume="yes"), cfg)
        history = [(h.metadata["source"], h.metadata["step"], h.next, h.values)
                   for h in g.get_state_history(cfg)]
        return first["log"], [i.value for i in first["__interrupt__"]], paused, out, \
            dict(calls), history

    res = same(scenario)
    assert res[4] == {"before": 1, "call": 2, "s1": 1, "s2": 1, "ask": 2}


def test_error_inside_called_subgraph_resumes_at_failed_node() -> None:
    def scenario(m: Any) -> Any:
        calls = Calls()
        fail = {"on": True}
        sub = chain(m, calls, ["s1", "flaky"], last=failing_while(fail, calls, "flaky"))
        g = caller(m, calls, sub).compile(checkpointer=m.InMemorySaver())
        cfg = new_config()
        with pytest.raises(RuntimeError, match="flaky boom"):
            g.invoke({"log": []}, cfg)
        snap = g.get_state(cfg)
        fail["on"] = False
        out = g.invoke(None, cfg)
        return snap.next, out, dict(calls)

    res = same(scenario)
    assert res[2] == {"before": 1, "call": 2, "s1": 1, "flaky": 2}


def test_two_levels_of_called_subgraphs_interrupt_and_error() -> None:
    def scenario(m: Any) -> Any:
        calls = Calls()
        fail = {"on": True}
        deep = failing_while(fail, calls, "deep",
                             then=lambda s: {"log": [f"deep={m.interrupt('deep?')}"]})
        inner = chain(m, calls, ["d1", "deep"], last=deep)
        middle = caller(m, calls, inner, name="mid").compile()
        g = caller(m, calls, middle).compile(checkpointer=m.InMemorySaver())
        cfg = new_config()
        with pytest.raises(RuntimeError, match="deep boom"):
            g.invoke({"log": []}, cfg)
        fail["on"] = False
        paused = g.invoke(None, cfg)
        out = g.invoke(m.Command(resume="ok"), cfg)
        return [i.value for i in paused["__interrupt__"]], out, dict(calls)

    res = same(scenario)
    assert res[2] == {"before": 2, "call": 3, "mid": 3, "d1": 1, "deep": 3}


def test_called_subgraph_with_private_keys_returns_its_output() -> None:
    class Private(TypedDict, total=False):
        log: Annotated[list[str], operator.add]
        secret: str

    def scenario(m: Any) -> Any:
        b = m.StateGraph(Private)
        b.add_node("hide", lambda s: {"secret": "s3", "log": ["hide"]})
        b.add_edge(m.START, "hide")
        sub = b.compile()

        def call(s: S) -> dict[str, Any]:
            out = sub.invoke({"log": ["x"]})
            return {"log": [f"{sorted(out)}:{out['secret']}"]}

        p = m.StateGraph(S)
        p.add_node("call", call)
        p.add_edge(m.START, "call")
        g = p.compile(checkpointer=m.InMemorySaver())
        cfg = new_config()
        return g.invoke({"log": []}, cfg), g.get_state(cfg).values

    same(scenario)


@pytest.mark.parametrize("mode", [None, False])
def test_called_subgraph_checkpointer_modes_run_each_call_anew(mode: Any) -> None:
    def scenario(m: Any) -> Any:
        calls = Calls()
        sub = chain(m, calls, ["s1"], checkpointer=mode)
        g = caller(m, calls, sub).compile(checkpointer=m.InMemorySaver())
        cfg = new_config()
        first = g.invoke({"log": []}, cfg)
        second = g.invoke({"log": []}, cfg)
        return first, second, dict(calls)

    same(scenario)


def test_called_subgraph_checkpointer_true_keeps_its_history() -> None:
    def scenario(m: Any) -> Any:
        calls = Calls()
        b = m.StateGraph(S)
        b.add_node("s1", lambda s: calls.hit("s1") and {"log": [f"n{len(s['log'])}"]})
        b.add_edge(m.START, "s1")
        sub = b.compile(checkpointer=True)
        g = caller(m, calls, sub).compile(checkpointer=m.InMemorySaver())
        cfg = new_config()
        first = g.invoke({"log": []}, cfg)
        second = g.invoke({"log": []}, cfg)
        return first, second, dict(calls)

    same(scenario)


def test_paused_called_subgraph_state_with_subgraphs_true() -> None:
    def scenario(m: Any) -> Any:
        calls = Calls()
        sub = chain(m, calls, ["s1", "ask"], last=asking(m, calls, "ask"))
        g = caller(m, calls, sub).compile(checkpointer=m.InMemorySaver())
        cfg = new_config()
        g.invoke({"log": []}, cfg)
        snap = g.get_state(cfg, subgraphs=True)
        inner = snap.tasks[0].state
        return snap.next, inner.values, inner.next, [t.name for t in inner.tasks], \
            [i.value for i in inner.interrupts]

    same(scenario)
