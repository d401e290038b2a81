"""Time travel: replay from a past checkpoint, fork with update_state, update_state shapes."""

from __future__ import annotations

import operator
from typing import Annotated, Any

import pytest
from typing_extensions import TypedDict

from tests.oracle.impls import Calls, Norm, new_config, raised, same

pytestmark = pytest.mark.oracle


class S(TypedDict, total=False):
    log: Annotated[list[str], operator.add]
    topic: str


def counted_chain(m: Any, calls: Calls, **compile_kw: Any) -> Any:
    """START -> a -> b -> c; each node counts its calls and logs its name + topic."""
    b = m.StateGraph(S)
    for name in "abc":
        def node(s: S, name: str = name) -> dict[str, Any]:
            calls.hit(name)
            return {"log": [f"{name}:{s.get('topic', '')}"]}
        b.add_node(name, node)
    b.add_edge(m.START, "a")
    b.add_edge("a", "b")
    b.add_edge("b", "c")
    return b.compile(checkpointer=m.InMemorySaver(), **compile_kw)


REPLAY_REUSES_WRITES = (
    "replay: invoke(None, config-of-past-checkpoint) in LangGraph re-executes the tasks of that "
    "checkpoint (first a 'fork' checkpoint copy with step+1, then every node again); "
    "durable_graph reuses the past checkpoint's saved pending writes, so the first node after "
    "the checkpoint is NOT re-run and no 'fork' checkpoint is written"
)


def past(g: Any, cfg: dict[str, Any], next_node: str) -> Any:
    """The history snapshot whose next superstep runs ``next_node``."""
    return next(h for h in g.get_state_history(cfg) if h.next == (next_node,))


def test_replay_from_past_checkpoint() -> None:
    def scenario(m: Any) -> Any:
        calls = Calls()
        g = counted_chain(m, calls)
        cfg = new_config()
        g.invoke({"log": [], "topic": "t"}, cfg)
        before = dict(calls)
        target = past(g, cfg, "b")
        out = g.invoke(None, target.config)
        hist = list(g.get_state_history(cfg))
        return out, before, dict(calls), len(hist), hist[:3]

    lg = same(scenario)
    assert lg[2] == {"a": 1, "b": 2, "c": 2}


def test_replay_stream_updates_from_past_checkpoint() -> None:
    def scenario(m: Any) -> Any:
        calls = Calls()
        g = counted_chain(m, calls)
        cfg = new_config()
        g.invoke({"log": [], "topic": "t"}, cfg)
        target = past(g, cfg, "c")
        return list(g.stream(None, target.config, stream_mode="updates")), dict(calls)

    same(scenario)


def test_replay_history_has_fork_checkpoint() -> None:
    def scenario(m: Any) -> Any:
        calls = Calls()
        g = counted_chain(m, calls)
        cfg = new_config()
        g.invoke({"log": [], "topic": "t"}, cfg)
        g.invoke(None, past(g, cfg, "a").config)
        return [(h.metadata["source"], h.metadata["step"], h.next)
                for h in g.get_state_history(cfg)], dict(calls)

    hist, calls = same(scenario)
    assert hist[3] == ("fork", 1, ("a",)) and calls == {"a": 2, "b": 2, "c": 2}


def test_replay_from_latest_checkpoint_writes_fork() -> None:
    def scenario(m: Any) -> Any:
        calls = Calls()
        g = counted_chain(m, calls)
        cfg = new_config()
        g.invoke({"log": [], "topic": "t"}, cfg)
        latest = g.get_state(cfg)
        out = g.invoke(None, latest.config)
        return out, dict(calls), len(list(g.get_state_history(cfg)))

    same(scenario)


def test_get_state_of_past_checkpoint_matches_history() -> None:
    def scenario(m: Any) -> Any:
        g = counted_chain(m, Calls())
        cfg = new_config()
        g.invoke({"log": [], "topic": "t"}, cfg)
        return [(g.get_state(h.config).next, g.get_state(h.config).metadata["step"])
                for h in g.get_state_history(cfg)]

    assert same(scenario)[1] == (("c",), 2)


def test_fork_with_update_state_on_past_checkpoint() -> None:
    def scenario(m: Any) -> Any:
        calls = Calls()
        g = counted_chain(m, calls)
        cfg = new_config()
        g.invoke({"log": [], "topic": "cats"}, cfg)
        target = past(g, cfg, "b")
        forked = g.update_state(target.config, {"topic": "dogs"})
        fork_snap = g.get_state(forked)
        out = g.invoke(None, forked)
        hist = list(g.get_state_history(cfg))
        return Norm().config(forked), fork_snap, out, dict(calls), len(hist)

    lg = same(scenario)
    assert lg[3] == {"a": 1, "b": 2, "c": 2}


def test_fork_update_state_with_explicit_as_node() -> None:
    def scenario(m: Any) -> Any:
        calls = Calls()
        g = counted_chain(m, calls)
        cfg = new_config()
        g.invoke({"log": [], "topic": "x"}, cfg)
        target = past(g, cfg, "b")
        forked = g.update_state(target.config, {"log": ["manual-b"]}, as_node="b")
        snap = g.get_state(forked)
        out = g.invoke(None, forked)
        return snap, out, dict(calls)

    lg = same(scenario)
    assert lg[2] == {"a": 1, "b": 1, "c": 2}


def test_fork_from_input_checkpoint() -> None:
    def scenario(m: Any) -> Any:
        calls = Calls()
        g = counted_chain(m, calls)
        cfg = new_config()
        g.invoke({"log": [], "topic": "x"}, cfg)
        first = list(g.get_state_history(cfg))[-1]
        forked = g.update_state(first.config, {"topic": "y"})
        return g.get_state(forked), g.invoke(None, forked), dict(calls)

    same(scenario)


def test_update_state_returned_config_shape() -> None:
    def scenario(m: Any) -> Any:
        g = counted_chain(m, Calls())
        cfg = new_config()
        g.invoke({"log": [], "topic": "x"}, cfg)
        norm = Norm()
        latest = g.get_state(cfg)
        norm.config(latest.config)
        new = g.update_state(cfg, {"topic": "z"})
        snap = g.get_state(cfg)
        return sorted(new), norm.config(new), norm(snap)

    same(scenario)


def test_update_state_on_fresh_thread() -> None:
    def scenario(m: Any) -> Any:
        g = counted_chain(m, Calls())
        cfg = new_config()
        new = g.update_state(cfg, {"topic": "seed"}, as_node="a")
        snap = g.get_state(cfg)
        out = g.invoke(None, cfg)
        return Norm().config(new), snap, out

    same(scenario)


def test_update_state_as_node_inferred_from_last_node() -> None:
    def scenario(m: Any) -> Any:
        g = counted_chain(m, Calls(), interrupt_after=["a"])
        cfg = new_config()
        g.invoke({"log": [], "topic": "x"}, cfg)
        g.update_state(cfg, {"log": ["edit"]})
        snap = g.get_state(cfg)
        meta = dict(snap.metadata)
        return snap.next, snap.values, meta["source"], meta["step"], g.invoke(None, cfg)

    same(scenario)


def test_update_state_unknown_as_node() -> None:
    def scenario(m: Any) -> Any:
        g = counted_chain(m, Calls())
        cfg = new_config()
        g.invoke({"log": [], "topic": "x"}, cfg)
        return raised(lambda: g.update_state(cfg, {"topic": "q"}, as_node="nope"))

    same(scenario)


def test_update_state_ambiguous_after_parallel_nodes() -> None:
    def scenario(m: Any) -> Any:
        b = m.StateGraph(S)
        b.add_node("x", lambda s: {"log": ["x"]})
        b.add_node("y", lambda s: {"log": ["y"]})
        b.add_edge(m.START, "x")
        b.add_edge(m.START, "y")
        g = b.compile(checkpointer=m.InMemorySaver())
        cfg = new_config()
        g.invoke({"log": []}, cfg)
        return raised(lambda: g.update_state(cfg, {"topic": "q"}))

    same(scenario)


def test_human_in_the_loop_edit_then_resume() -> None:
    def scenario(m: Any) -> Any:
        calls = Calls()

        def draft(s: S) -> dict[str, Any]:
            calls.hit("draft")
            return {"topic": "draft-v1"}

        def review(s: S) -> dict[str, Any]:
            calls.hit("review")
            verdict = m.interrupt({"check": s["topic"]})
            return {"log": [f"review:{s['topic']}:{verdict}"]}

        b = m.StateGraph(S)
        b.add_node("draft", draft)
        b.add_node("review", review)
        b.add_edge(m.START, "draft")
        b.add_edge("draft", "review")
        g = b.compile(checkpointer=m.InMemorySaver())
        cfg = new_config()
        first = g.invoke({"log": []}, cfg)
        new_cfg = g.update_state(cfg, {"topic": "draft-v2"})
        edited = g.get_state(cfg)
        out = g.invoke(m.Command(resume="ok"), cfg)
        return first, Norm().config(new_cfg), edited, out, dict(calls)

    same(scenario)


def test_update_state_as_node_on_interrupted_thread_skips_node() -> None:
    def scenario(m: Any) -> Any:
        calls = Calls()

        def review(s: S) -> dict[str, Any]:
            calls.hit("review")
            return {"log": [f"review:{m.interrupt('?')}"]}

        b = m.StateGraph(S)
        b.add_node("review", review)
        b.add_node("after", lambda s: calls.hit("after") and {"log": ["after"]})
        b.add_edge(m.START, "review")
        b.add_edge("review", "after")
        g = b.compile(checkpointer=m.InMemorySaver())
        cfg = new_config()
        g.invoke({"log": []}, cfg)
        g.update_state(cfg, {"log": ["by-hand"]}, as_node="review")
        snap = g.get_state(cfg)
        out = g.invoke(None, cfg)
        return snap, out, dict(calls)

    same(scenario)


def test_update_state_with_interrupt_before_then_resume() -> None:
    def scenario(m: Any) -> Any:
        calls = Calls()
        g = counted_chain(m, calls, interrupt_before=["c"])
        cfg = new_config()
        g.invoke({"log": [], "topic": "t"}, cfg)
        g.update_state(cfg, {"topic": "changed"})
        snap = g.get_state(cfg)
        out = g.invoke(None, cfg)
        return snap, out, dict(calls), len(list(g.get_state_history(cfg)))

    same(scenario)


def test_update_state_as_end_or_start() -> None:
    def scenario(m: Any) -> Any:
        g = counted_chain(m, Calls())
        cfg = new_config()
        g.invoke({"log": [], "topic": "t"}, cfg)
        res = raised(lambda: Norm().config(g.update_state(cfg, {"topic": "s"}, as_node=m.START)))
        return res, g.get_state(cfg)

    same(scenario)
