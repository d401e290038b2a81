"""Stream modes: values, updates, custom, debug, mode lists, interrupt chunks, async forms."""

from __future__ import annotations

import asyncio
import operator
from typing import Annotated, Any

import pytest
from typing_extensions import TypedDict

from tests.oracle.impls import new_config, same

pytestmark = pytest.mark.oracle


class S(TypedDict, total=False):
    log: Annotated[list[str], operator.add]
    n: int


VALUES_INTERRUPT = (
    "stream_mode='values' on an interrupt: LangGraph ends with one more values chunk, the "
    "current state plus '__interrupt__': [Interrupt(...)]; durable_graph emits no such chunk"
)


def graph(m: Any, *, interrupting: bool = False, parallel: bool = False) -> Any:
    """START -> a -> (b [, b2]) -> c; a uses an injected writer, b get_stream_writer()."""
    def a(s: S, writer):
        writer({"from": "a", "n": s.get("n", 0)})
        return {"log": ["a"], "n": s.get("n", 0) + 1}

    def b(s: S) -> dict[str, Any]:
        w = m.get_stream_writer()
        w("b-start")
        if interrupting:
            ans = m.interrupt({"q": "b?"})
            w(f"b-resumed:{ans}")
        return {"log": ["b"]}

    bld = m.StateGraph(S)
    bld.add_node("a", a)
    bld.add_node("b", b)
    bld.add_node("c", lambda s: {"log": ["c"]})
    bld.add_edge(m.START, "a")
    bld.add_edge("a", "b")
    if parallel:
        bld.add_node("b2", lambda s: {"log": ["b2"]})
        bld.add_edge("a", "b2")
        bld.add_edge(["b", "b2"], "c")
    else:
        bld.add_edge("b", "c")
    return bld.compile(checkpointer=m.InMemorySaver())


@pytest.mark.parametrize("mode", ["values", "updates", "custom"])
def test_single_mode(mode: str) -> None:
    def scenario(m: Any) -> Any:
        return list(graph(m).stream({"log": []}, new_config(), stream_mode=mode))

    same(scenario)


@pytest.mark.parametrize("mode", ["values", "updates", "custom"])
def test_single_mode_parallel_branches(mode: str) -> None:
    def scenario(m: Any) -> Any:
        chunks = list(graph(m, parallel=True).stream({"log": []}, new_config(), stream_mode=mode))
        # parallel updates may arrive in either order within one superstep
        return chunks if mode != "updates" else sorted(map(repr, chunks))

    same(scenario)


def test_mode_list_yields_tuples() -> None:
    def scenario(m: Any) -> Any:
        return list(graph(m).stream({"log": []}, new_config(),
                                    stream_mode=["updates", "values", "custom"]))

    same(scenario)


def test_debug_type_sequence() -> None:
    def scenario(m: Any) -> Any:
        return [c["type"] for c in graph(m).stream({"log": []}, new_config(),
                                                    stream_mode="debug")]

    same(scenario)


def test_debug_with_other_mode() -> None:
    def scenario(m: Any) -> Any:
        out = graph(m).stream({"log": []}, new_config(), stream_mode=["debug", "updates"])
        return [(mode, c["type"] if mode == "debug" else c) for mode, c in out]

    same(scenario)


def test_interrupt_chunks_updates_and_values() -> None:
    def scenario(m: Any) -> Any:
        g = graph(m, interrupting=True)
        cfg = new_config()
        first = list(g.stream({"log": []}, cfg, stream_mode=["updates", "values", "custom"]))
        second = list(g.stream(m.Command(resume="yes"), cfg,
                               stream_mode=["updates", "values", "custom"]))
        return first, second

    same(scenario)


def test_interrupt_chunks_updates_and_custom() -> None:
    def scenario(m: Any) -> Any:
        g = graph(m, interrupting=True)
        cfg = new_config()
        first = list(g.stream({"log": []}, cfg, stream_mode=["updates", "custom"]))
        second = list(g.stream(m.Command(resume="yes"), cfg, stream_mode=["custom", "updates"]))
        return first, second

    same(scenario)


def test_interrupt_chunk_in_values_mode_only() -> None:
    def scenario(m: Any) -> Any:
        g = graph(m, interrupting=True)
        cfg = new_config()
        return list(g.stream({"log": []}, cfg, stream_mode="values"))

    same(scenario)


def test_debug_types_with_interrupt() -> None:
    def scenario(m: Any) -> Any:
        g = graph(m, interrupting=True)
        cfg = new_config()
        first = [c["type"] for c in g.stream({"log": []}, cfg, stream_mode="debug")]
        second = [c["type"] for c in g.stream(m.Command(resume=1), cfg, stream_mode="debug")]
        return first, second

    same(scenario)


def test_invoke_interrupt_value_is_list() -> None:
    def scenario(m: Any) -> Any:
        out = graph(m, interrupting=True).invoke({"log": []}, new_config())
        return type(out["__interrupt__"]).__name__

    assert same(scenario) == "list"


def test_astream_and_ainvoke() -> None:
    def scenario(m: Any) -> Any:
        async def go() -> Any:
            g = graph(m)
            chunks = [c async for c in g.astream({"log": []}, new_config(),
                                                 stream_mode=["updates", "custom"])]
            out = await g.ainvoke({"log": ["x"]}, new_config())
            return chunks, out

        return asyncio.run(go())

    same(scenario)


def test_astream_interrupt_and_resume() -> None:
    def scenario(m: Any) -> Any:
        async def go() -> Any:
            g = graph(m, interrupting=True)
            cfg = new_config()
            first = [c async for c in g.astream({"log": []}, cfg)]
            out = await g.ainvoke(m.Command(resume="ok"), cfg)
            return first, out

        return asyncio.run(go())

    same(scenario)


def test_async_nodes() -> None:
    def scenario(m: Any) -> Any:
        async def a(s: S) -> dict[str, Any]:
            await asyncio.sleep(0)
            return {"log": ["async-a"]}

        b = m.StateGraph(S)
        b.add_node("a", a)
        b.add_edge(m.START, "a")
        g = b.compile(checkpointer=m.InMemorySaver())

        async def go() -> Any:
            return await g.ainvoke({"log": []}, new_config())

        return asyncio.run(go())

    same(scenario)


def test_invoke_with_stream_mode_updates() -> None:
    def scenario(m: Any) -> Any:
        return graph(m).invoke({"log": []}, new_config(), stream_mode="updates")

    same(scenario)
