"""State schemas and routing: dataclass / pydantic state, custom reducers, Command, sequences."""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Annotated, Any

import pytest
from pydantic import BaseModel
from typing_extensions import TypedDict

from tests.oracle.impls import Calls, new_config, same

pytestmark = pytest.mark.oracle


def merge_dicts(left: dict[str, int] | None, right: dict[str, int] | None) -> dict[str, int]:
    """Custom reducer: key-wise sum."""
    out = dict(left or {})
    for k, v in (right or {}).items():
        out[k] = out.get(k, 0) + v
    return out


def keep_max(left: int | None, right: int | None) -> int:
    return max(left or 0, right or 0)


@dataclass
class DState:
    topic: str = ""
    log: Annotated[list[str], operator.add] = field(default_factory=list)


class PState(BaseModel):
    topic: str = ""
    count: int = 0
    log: Annotated[list[str], operator.add] = []


class RState(TypedDict, total=False):
    tally: Annotated[dict[str, int], merge_dicts]
    best: Annotated[int, keep_max]
    log: Annotated[list[str], operator.add]


def test_dataclass_state() -> None:
    def scenario(m: Any) -> Any:
        b = m.StateGraph(DState)
        b.add_node("a", lambda s: {"log": [f"a:{s.topic}"]})
        b.add_node("b", lambda s: {"topic": s.topic.upper(), "log": ["b"]})
        b.add_edge(m.START, "a")
        b.add_edge("a", "b")
        g = b.compile(checkpointer=m.InMemorySaver())
        cfg = new_config()
        out = g.invoke(DState(topic="cats"), cfg)
        return out, g.get_state(cfg).values, list(g.stream({"topic": "x"}, new_config()))

    same(scenario)


def test_pydantic_state() -> None:
    def scenario(m: Any) -> Any:
        b = m.StateGraph(PState)
        b.add_node("a", lambda s: {"count": s.count + 1, "log": [f"a:{s.topic}"]})
        b.add_node("b", lambda s: {"count": s.count * 10, "log": ["b"]})
        b.add_edge(m.START, "a")
        b.add_edge("a", "b")
        g = b.compile(checkpointer=m.InMemorySaver())
        cfg = new_config()
        out = g.invoke(PState(topic="dogs", count=1), cfg)
        return out, g.get_state(cfg).values, list(g.stream({"topic": "x"}, new_config(),
                                                            stream_mode="values"))

    same(scenario)


def test_pydantic_state_validation_error() -> None:
    def scenario(m: Any) -> Any:
        b = m.StateGraph(PState)
        b.add_node("a", lambda s: {"log": ["a"]})
        b.add_edge(m.START, "a")
        g = b.compile(checkpointer=m.InMemorySaver())
        try:
            g.invoke({"count": "not a number"}, new_config())
        except Exception as exc:  # noqa: BLE001
            return "raised", type(exc).__name__
        return "ok"

    same(scenario)


def test_custom_function_reducers() -> None:
    def scenario(m: Any) -> Any:
        b = m.StateGraph(RState)
        b.add_node("x", lambda s: {"tally": {"a": 1, "b": 2}, "best": 3, "log": ["x"]})
        b.add_node("y", lambda s: {"tally": {"a": 10}, "best": 7, "log": ["y"]})
        b.add_node("z", lambda s: {"tally": {"c": 1}, "best": 1, "log": ["z"]})
        b.add_edge(m.START, "x")
        b.add_edge(m.START, "y")
        b.add_edge(["x", "y"], "z")
        g = b.compile(checkpointer=m.InMemorySaver())
        cfg = new_config()
        out = g.invoke({"tally": {"a": 100}, "best": 5}, cfg)
        g.update_state(cfg, {"tally": {"b": 1}, "best": 2}, as_node="z")
        return out, g.get_state(cfg).values

    same(scenario)


def test_command_goto_and_update_from_node() -> None:
    def scenario(m: Any) -> Any:
        calls = Calls()

        def router(s: RState) -> Any:
            calls.hit("router")
            return m.Command(goto="right", update={"log": ["router"]})

        b = m.StateGraph(RState)
        b.add_node("router", router, destinations=("left", "right"))
        b.add_node("left", lambda s: calls.hit("left") and {"log": ["left"]})
        b.add_node("right", lambda s: calls.hit("right") and {"log": ["right"]})
        b.add_edge(m.START, "router")
        g = b.compile(checkpointer=m.InMemorySaver())
        cfg = new_config()
        chunks = list(g.stream({"log": []}, cfg, stream_mode="updates"))
        return chunks, g.get_state(cfg).values, dict(calls)

    same(scenario)


def test_command_goto_list_and_send() -> None:
    def scenario(m: Any) -> Any:
        def fan(s: RState) -> Any:
            return m.Command(update={"log": ["fan"]},
                             goto=["left", m.Send("worker", {"log": ["w1"]}),
                                   m.Send("worker", {"log": ["w2"]})])

        b = m.StateGraph(RState)
        b.add_node("fan", fan)
        b.add_node("left", lambda s: {"log": ["left"]})
        b.add_node("worker", lambda s: {"log": [f"worker:{s['log'][-1]}"]})
        b.add_edge(m.START, "fan")
        g = b.compile(checkpointer=m.InMemorySaver())
        out = g.invoke({"log": []}, new_config())
        return sorted(out["log"])

    same(scenario)


def test_command_as_input_with_update_and_goto() -> None:
    def scenario(m: Any) -> Any:
        b = m.StateGraph(RState)
        b.add_node("a", lambda s: {"log": ["a"]})
        b.add_node("b", lambda s: {"log": ["b"]})
        b.add_edge(m.START, "a")
        g = b.compile(checkpointer=m.InMemorySaver())
        cfg = new_config()
        g.invoke({"log": []}, cfg)
        out = g.invoke(m.Command(update={"log": ["cmd"]}, goto="b"), cfg)
        return out, len(list(g.get_state_history(cfg)))

    same(scenario)


def test_add_sequence() -> None:
    def scenario(m: Any) -> Any:
        def one(s: RState) -> dict[str, Any]:
            return {"log": ["one"]}

        def two(s: RState) -> dict[str, Any]:
            return {"log": ["two"]}

        b = m.StateGraph(RState)
        b.add_sequence([one, two, ("three", lambda s: {"log": ["three"]})])
        b.add_edge(m.START, "one")
        g = b.compile(checkpointer=m.InMemorySaver())
        cfg = new_config()
        chunks = list(g.stream({"log": []}, cfg))
        return chunks, [h.next for h in g.get_state_history(cfg)]

    same(scenario)


def test_conditional_edge_returning_list() -> None:
    def scenario(m: Any) -> Any:
        b = m.StateGraph(RState)
        b.add_node("start", lambda s: {"log": ["start"]})
        for name in ("p", "q", "r"):
            b.add_node(name, lambda s, name=name: {"log": [name]})
        b.add_edge(m.START, "start")
        b.add_conditional_edges("start", lambda s: ["p", "r"])
        g = b.compile(checkpointer=m.InMemorySaver())
        cfg = new_config()
        out = g.invoke({"log": []}, cfg)
        return sorted(out["log"]), [sorted(h.next) for h in g.get_state_history(cfg)]

    same(scenario)


def test_conditional_edge_with_path_map_and_end() -> None:
    def scenario(m: Any) -> Any:
        b = m.StateGraph(RState)
        b.add_node("loop", lambda s: {"best": s.get("best", 0) + 1, "log": ["loop"]})
        b.add_edge(m.START, "loop")
        b.add_conditional_edges("loop", lambda s: "again" if s["best"] < 3 else "stop",
                                {"again": "loop", "stop": m.END})
        g = b.compile(checkpointer=m.InMemorySaver())
        cfg = new_config()
        out = g.invoke({"best": 0}, cfg)
        return out, [h.metadata["step"] for h in g.get_state_history(cfg)]

    same(scenario)


def test_conditional_edge_to_send_list() -> None:
    def scenario(m: Any) -> Any:
        b = m.StateGraph(RState)
        b.add_node("plan", lambda s: {"log": ["plan"]})
        b.add_node("work", lambda s: {"tally": {s["item"]: 1}})
        b.add_edge(m.START, "plan")
        b.add_conditional_edges(
            "plan", lambda s: [m.Send("work", {"item": i}) for i in ("a", "b", "a")]
        )
        g = b.compile(checkpointer=m.InMemorySaver())
        return g.invoke({"log": []}, new_config())

    same(scenario)
