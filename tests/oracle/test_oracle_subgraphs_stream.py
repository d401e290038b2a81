"""``stream(..., subgraphs=True)``: (namespace, chunk) pairs for every stream mode."""

from __future__ import annotations

import operator
from typing import Annotated, Any

import pytest
from typing_extensions import TypedDict

from tests.oracle.impls import Norm, new_config, same

pytestmark = pytest.mark.oracle


class S(TypedDict, total=False):
    log: Annotated[list[str], operator.add]


def nested(m: Any, ask: bool = False) -> Any:
    """parent: START -> child(sub: i1 -> grand(g1 [-> interrupt]))."""
    def g1(s: S) -> dict[str, Any]:
        m.get_stream_writer()({"g1": "custom"})
        return {"log": [f"g1={m.interrupt('g1?')}" if ask else "g1"]}

    gb = m.StateGraph(S)
    gb.add_node("g1", g1)
    gb.add_edge(m.START, "g1")
    sb = m.StateGraph(S)
    sb.add_node("i1", lambda s: {"log": ["i1"]})
    sb.add_node("grand", gb.compile())
    sb.add_edge(m.START, "i1")
    sb.add_edge("i1", "grand")
    pb = m.StateGraph(S)
    pb.add_node("child", sb.compile())
    pb.add_edge(m.START, "child")
    return pb.compile(checkpointer=m.InMemorySaver())


def chunks(items: list[Any], mode: str = "") -> list[Any]:
    """Namespaces without their task ids (each part is ``node:<task id>``); ids and
    configs of ``mode``'s chunks as labels (their pattern is still compared)."""
    norm = Norm()
    assert all(":" in part for c in items for part in c[0])
    return [(tuple(norm.ns(p) for p in c[0]), *c[1:-1], ided(norm, mode, c[-1]))
            for c in items]


def ided(norm: Norm, mode: str, chunk: Any) -> Any:
    """A tasks/checkpoints/debug chunk with its ids labelled and configs normalised."""
    if mode == "debug":
        kind = "checkpoints" if chunk["type"] == "checkpoint" else "tasks"
        return {**chunk, "timestamp": "<ts>", "payload": ided(norm, kind, chunk["payload"])}
    if mode == "tasks":
        return {**chunk, "id": norm.label("task", chunk["id"])}
    if mode == "checkpoints":
        meta = chunk["metadata"]
        parents = {norm.ns(k): norm.label("cp", v) for k, v in meta["parents"].items()}
        return {**chunk, "config": norm.config(chunk["config"]),
                "metadata": {**meta, "parents": parents},
                "parent_config": norm.config(chunk["parent_config"]),
                "tasks": [{**t, "id": norm.label("task", t["id"]),
                           "state": norm.config(t["state"])} for t in chunk["tasks"]]}
    return chunk


@pytest.mark.parametrize("mode", ["updates", "values", "custom", "tasks", "checkpoints",
                                  "debug"])
def test_nested_subgraph_stream_one_mode(mode: str) -> None:
    def scenario(m: Any) -> Any:
        return chunks(list(nested(m).stream({"log": []}, new_config(), stream_mode=mode,
                                            subgraphs=True)), mode)

    same(scenario)


def test_nested_subgraph_stream_several_modes_with_interrupt_and_resume() -> None:
    def scenario(m: Any) -> Any:
        g = nested(m, ask=True)
        cfg = new_config()
        first = list(g.stream({"log": []}, cfg, stream_mode=["updates", "values"],
                              subgraphs=True))
        second = list(g.stream(m.Command(resume="y"), cfg, stream_mode=["updates", "values"],
                               subgraphs=True))
        return chunks(first), chunks(second)

    same(scenario)
