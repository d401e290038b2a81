"""get_state_history: values, next, metadata, parent chain, tasks, interrupts, filters."""

from __future__ import annotations

import operator
from typing import Annotated, Any

import pytest
from typing_extensions import TypedDict

from tests.oracle.impls import Calls, Norm, new_config, same

pytestmark = pytest.mark.oracle


class S(TypedDict, total=False):
    log: Annotated[list[str], operator.add]
    n: int


def chain(m: Any, saver: Any = None, **compile_kw: Any) -> Any:
    """START -> a -> b -> c -> END, each node appending its name."""
    b = m.StateGraph(S)
    for name in "abc":
        b.add_node(name, lambda s, name=name: {"log": [name], "n": s.get("n", 0) + 1})
    b.add_edge(m.START, "a")
    b.add_edge("a", "b")
    b.add_edge("b", "c")
    b.add_edge("c", m.END)
    return b.compile(checkpointer=saver or m.InMemorySaver(), **compile_kw)


def test_history_of_linear_run() -> None:
    def scenario(m: Any) -> Any:
        g = chain(m)
        cfg = new_config()
        g.invoke({"log": ["in"], "n": 0}, cfg)
        return list(g.get_state_history(cfg))

    hist = same(scenario)
    assert [h["metadata"]["source"] for h in hist] == ["loop"] * 4 + ["input"]


def test_history_parent_chain_is_linked() -> None:
    def scenario(m: Any) -> Any:
        g = chain(m)
        cfg = new_config()
        g.invoke({"log": []}, cfg)
        hist = list(g.get_state_history(cfg))
        links = [
            h.parent_config["configurable"]["checkpoint_id"] == nxt.config["configurable"][
                "checkpoint_id"]
            for h, nxt in zip(hist, hist[1:], strict=False)
        ]
        return links, hist[-1].parent_config, len(hist)

    assert same(scenario) == ([True] * 4, None, 5)


def test_history_tasks_names_per_checkpoint() -> None:
    def scenario(m: Any) -> Any:
        g = chain(m)
        cfg = new_config()
        g.invoke({"log": []}, cfg)
        return [([t.name for t in h.tasks], h.next) for h in g.get_state_history(cfg)]

    same(scenario)


def test_history_with_interrupt() -> None:
    def scenario(m: Any) -> Any:
        def ask(s: S) -> dict[str, Any]:
            answer = m.interrupt({"q": "name?"})
            return {"log": [f"ask:{answer}"]}

        b = m.StateGraph(S)
        b.add_node("first", lambda s: {"log": ["first"]})
        b.add_node("ask", ask)
        b.add_edge(m.START, "first")
        b.add_edge("first", "ask")
        g = b.compile(checkpointer=m.InMemorySaver())
        cfg = new_config()
        g.invoke({"log": []}, cfg)
        paused = list(g.get_state_history(cfg))
        g.invoke(m.Command(resume="bob"), cfg)
        done = list(g.get_state_history(cfg))
        return paused, done

    same(scenario)


def test_history_limit() -> None:
    def scenario(m: Any) -> Any:
        g = chain(m)
        cfg = new_config()
        g.invoke({"log": []}, cfg)
        return [list(g.get_state_history(cfg, limit=k)) for k in (1, 2, 10)]

    same(scenario)


def test_history_before() -> None:
    def scenario(m: Any) -> Any:
        g = chain(m)
        cfg = new_config()
        g.invoke({"log": []}, cfg)
        hist = list(g.get_state_history(cfg))
        older = list(g.get_state_history(cfg, before=hist[1].config))
        both_ = list(g.get_state_history(cfg, before=hist[1].config, limit=2))
        norm = Norm()
        return norm(hist), norm(older), norm(both_)

    same(scenario)


@pytest.mark.parametrize(
    "flt",
    [{"source": "loop"}, {"source": "input"}, {"step": 2}, {"source": "loop", "step": 0},
     {"source": "update"}],
    ids=["loop", "input", "step2", "loop-step0", "update-none"],
)
def test_history_filter(flt: dict[str, Any]) -> None:
    def scenario(m: Any) -> Any:
        g = chain(m)
        cfg = new_config()
        g.invoke({"log": []}, cfg)
        return [(h.metadata["source"], h.metadata["step"], h.values)
                for h in g.get_state_history(cfg, filter=flt)]

    same(scenario)


def test_history_after_update_state_has_update_source() -> None:
    def scenario(m: Any) -> Any:
        g = chain(m)
        cfg = new_config()
        g.invoke({"log": []}, cfg)
        g.update_state(cfg, {"log": ["edit"]})
        hist = list(g.get_state_history(cfg))
        return hist[:2], [h.metadata["source"] for h in g.get_state_history(
            cfg, filter={"source": "update"})]

    same(scenario)


def test_history_across_two_runs_on_one_thread() -> None:
    def scenario(m: Any) -> Any:
        g = chain(m)
        cfg = new_config()
        g.invoke({"log": ["r1"]}, cfg)
        g.invoke({"log": ["r2"]}, cfg)
        return list(g.get_state_history(cfg))

    same(scenario)


def test_history_of_failed_run_records_task_error() -> None:
    def scenario(m: Any) -> Any:
        calls = Calls()

        def boom(s: S) -> dict[str, Any]:
            if calls.hit("boom") == 1:
                raise KeyError("first time")
            return {"log": ["boom"]}

        b = m.StateGraph(S)
        b.add_node("a", lambda s: {"log": ["a"]})
        b.add_node("boom", boom)
        b.add_edge(m.START, "a")
        b.add_edge("a", "boom")
        g = b.compile(checkpointer=m.InMemorySaver())
        cfg = new_config()
        with pytest.raises(KeyError):
            g.invoke({"log": []}, cfg)
        failed = g.get_state(cfg)
        hist = list(g.get_state_history(cfg))
        g.invoke(None, cfg)
        return failed, hist, list(g.get_state_history(cfg)), dict(calls)

    same(scenario)


def test_history_with_interrupt_before() -> None:
    def scenario(m: Any) -> Any:
        g = chain(m, interrupt_before=["b"])
        cfg = new_config()
        first = g.invoke({"log": []}, cfg)
        paused = list(g.get_state_history(cfg))
        g.invoke(None, cfg)
        return first, paused, list(g.get_state_history(cfg))

    same(scenario)


def test_snapshot_task_error_is_repr_string() -> None:
    def scenario(m: Any) -> Any:
        def boom(s: S) -> dict[str, Any]:
            raise KeyError("first time")

        b = m.StateGraph(S)
        b.add_node("boom", boom)
        b.add_edge(m.START, "boom")
        g = b.compile(checkpointer=m.InMemorySaver())
        cfg = new_config()
        with pytest.raises(KeyError):
            g.invoke({"log": []}, cfg)
        err = g.get_state(cfg).tasks[0].error
        return type(err).__name__, str(err)

    assert same(scenario) == ("str", "KeyError('first time')")
