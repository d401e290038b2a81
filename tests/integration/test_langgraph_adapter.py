"""Our savers as LangGraph checkpointers: the peer conformance suite, then real graphs.

``langgraph-checkpoint-conformance`` (the suite LangGraph publishes for third-party
checkpointers) runs on ``LangGraphSaver`` over each of our stores, optional
capabilities included; then real LangGraph graphs run on it over a real Redis.
"""

from __future__ import annotations

import asyncio
import operator
import os
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Annotated, Any, TypedDict

import pytest
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.types import Command, Send, interrupt

from durable_graph import InMemorySaver, RedisSaver, SqliteSaver
from durable_graph.errors import GraphValueError
from durable_graph.langgraph import LangGraphSaver
from durable_graph.store.base import BaseCheckpointSaver

pytestmark = pytest.mark.oracle


def _redis_saver() -> RedisSaver:
    url = os.environ["DURABLE_GRAPH_TEST_REDIS_URL"]
    prefix = f"{os.environ['DURABLE_GRAPH_TEST_REDIS_PREFIX']}-{uuid.uuid4().hex[:8]}"
    return RedisSaver.from_url(url, prefix=prefix)


STORES: dict[str, Any] = {
    "memory": lambda tmp: InMemorySaver(),
    "sqlite": lambda tmp: SqliteSaver(tmp / f"{uuid.uuid4().hex}.sqlite"),
    "redis": pytest.param(lambda tmp: _redis_saver(), marks=pytest.mark.redis),
}


@pytest.fixture(params=list(STORES.values()), ids=list(STORES))
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], BaseCheckpointSaver]:
    factory = request.param
    return lambda: factory(tmp_path)


def test_peer_conformance_suite_passes_with_every_capability(
    make_store: Callable[[], BaseCheckpointSaver],
) -> None:
    @checkpointer_test(name=f"durable-graph-{uuid.uuid4().hex[:6]}")
    async def factory() -> AsyncIterator[LangGraphSaver]:
        yield LangGraphSaver(make_store())

    report = asyncio.run(validate(factory))
    summary = {name: (r.passed, r.tests_failed, r.failures) for name, r in report.results.items()}
    assert set(summary) == {"put", "put_writes", "get_tuple", "list", "delete_thread",
                            "delete_for_runs", "copy_thread", "prune"}
    assert all(passed for passed, _, _ in summary.values()), summary
    assert sum(r.tests_passed for r in report.results.values()) > 60


def test_wraps_only_our_savers() -> None:
    with pytest.raises(GraphValueError, match="wraps a durable-graph saver"):
        LangGraphSaver(object())  # type: ignore[arg-type]


# --- real LangGraph graphs on the adapter, over Redis ---------------------------


class Fan(TypedDict):
    items: list[str]
    done: Annotated[list[str], operator.add]


def _fan_graph(saver: LangGraphSaver) -> Any:
    def route(state: Fan) -> list[Send]:
        return [Send("work", {"items": [item], "done": []}) for item in state["items"]]

    builder = StateGraph(Fan)
    builder.add_node("work", lambda s: {"done": [s["items"][0].upper()]})
    builder.add_conditional_edges(START, route, ["work"])
    builder.add_edge("work", END)
    return builder.compile(checkpointer=saver)


class Approval(TypedDict):
    request: str
    answer: str


def _approval_graph(saver: LangGraphSaver, calls: list[str]) -> Any:
    def ask(state: Approval) -> dict[str, str]:
        calls.append("ask")
        return {"answer": interrupt({"question": f"approve {state['request']}?"})}

    builder = StateGraph(Approval)
    builder.add_node("ask", ask)
    builder.add_node("finish", lambda s: {"answer": s["answer"] + "!"})
    builder.add_edge(START, "ask")
    builder.add_edge("ask", "finish")
    builder.add_edge("finish", END)
    return builder.compile(checkpointer=saver)


@pytest.mark.redis
def test_real_langgraph_send_fan_out_on_redis() -> None:
    saver = LangGraphSaver(_redis_saver())
    graph = _fan_graph(saver)
    config = {"configurable": {"thread_id": "fan"}}
    out = graph.invoke({"items": ["a", "b", "c"], "done": []}, config)
    assert sorted(out["done"]) == ["A", "B", "C"]
    history = list(graph.get_state_history(config))
    assert [h.metadata["step"] for h in history] == [1, 0, -1]
    assert graph.get_state(config).values == out


@pytest.mark.redis
def test_real_langgraph_interrupt_and_resume_across_savers_on_redis() -> None:
    store = _redis_saver()
    calls: list[str] = []
    config = {"configurable": {"thread_id": "approval"}}
    first = _approval_graph(LangGraphSaver(store), calls).invoke({"request": "x"}, config)
    assert first["__interrupt__"][0].value == {"question": "approve x?"}
    # A new saver object on the same Redis prefix (as a second process would have)
    again = LangGraphSaver(RedisSaver.from_url(os.environ["DURABLE_GRAPH_TEST_REDIS_URL"],
                                               prefix=store.prefix))
    graph = _approval_graph(again, calls)
    assert graph.get_state(config).next == ("ask",)
    out = graph.invoke(Command(resume="yes"), config)
    assert out == {"request": "x", "answer": "yes!"}
    assert calls == ["ask", "ask"]  # the interrupted node re-runs once, as LangGraph does


@pytest.mark.redis
def test_real_langgraph_messages_state_on_redis() -> None:
    from langchain_core.messages import AIMessage, HumanMessage

    def reply(state: MessagesState) -> dict[str, Any]:
        return {"messages": [AIMessage(content=f"echo {state['messages'][-1].content}")]}

    builder = StateGraph(MessagesState)
    builder.add_node("reply", reply)
    builder.add_edge(START, "reply")
    graph = builder.compile(checkpointer=LangGraphSaver(_redis_saver()))
    config = {"configurable": {"thread_id": "chat"}}
    graph.invoke({"messages": [HumanMessage(content="hi")]}, config)
    out = graph.invoke({"messages": [("user", "again")]}, config)
    assert [type(m).__name__ for m in out["messages"]] == [
        "HumanMessage", "AIMessage", "HumanMessage", "AIMessage"]
    assert out["messages"][-1].content == "echo again"
    assert all(m.id for m in out["messages"])


def test_prune_takes_one_thread_id_given_as_a_string(tmp_path: Path) -> None:
    """A single thread id given as a string is that thread, never its letters."""
    saver = LangGraphSaver(SqliteSaver(tmp_path / "prune.sqlite"))
    graph = _fan_graph(saver)
    for thread in ("ab", "a", "b"):
        graph.invoke({"items": ["x"], "done": []}, {"configurable": {"thread_id": thread}})

    def count(thread: str) -> int:
        return len(list(saver.list({"configurable": {"thread_id": thread}})))

    assert {t: count(t) for t in ("ab", "a", "b")} == {"ab": 3, "a": 3, "b": 3}
    saver.prune("ab")  # type: ignore[arg-type]
    assert {t: count(t) for t in ("ab", "a", "b")} == {"ab": 1, "a": 3, "b": 3}
    asyncio.run(saver.aprune("a"))  # type: ignore[arg-type]
    assert {t: count(t) for t in ("ab", "a", "b")} == {"ab": 1, "a": 1, "b": 3}
