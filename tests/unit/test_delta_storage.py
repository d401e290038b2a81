"""Delta storage: list channels stored as what each step changed read back exactly as whole values.

Every saver runs the same random update sequences (append, edit by id, remove by id,
remove all) twice, once with ``delta=False`` (whole values) and once with deltas
(a small ``snapshot_every`` so chains restart often), and must give the same state
and history. Pruning a delta thread keeps every version its kept checkpoints need.
"""

from __future__ import annotations

import operator
import os
import uuid
from pathlib import Path
from typing import Annotated, Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typing_extensions import TypedDict

from durable_graph import END, REMOVE_ALL_MESSAGES, START, RemoveMessage, StateGraph, add_messages
from durable_graph.errors import GraphValueError
from durable_graph.graph import message as message_module
from durable_graph.store.base import BaseCheckpointSaver
from durable_graph.store.delta import ChannelDelta, apply_delta, diff_lists, plan_value
from durable_graph.store.memory import InMemorySaver
from durable_graph.store.sqlite import SqliteSaver
from tests.redis_records import delete_value, read_value


class State(TypedDict):
    log: Annotated[list[Any], operator.add]
    messages: Annotated[list[Any], add_messages]


def _graph() -> Any:
    g = StateGraph(State)
    g.add_node("step", lambda s: {})
    g.add_edge(START, "step")
    g.add_edge("step", END)
    return g


def _open(kind: str, tmp: Path, **kw: Any) -> BaseCheckpointSaver:
    if kind == "memory":
        return InMemorySaver(**kw)
    if kind == "sqlite":
        return SqliteSaver(tmp / f"{uuid.uuid4().hex}.db", **kw)
    from durable_graph.store.redis import RedisSaver

    prefix = f"{os.environ['DURABLE_GRAPH_TEST_REDIS_PREFIX']}-{uuid.uuid4().hex[:8]}"
    return RedisSaver.from_url(os.environ["DURABLE_GRAPH_TEST_REDIS_URL"], prefix=prefix, **kw)


KINDS = ["memory", "sqlite", pytest.param("redis", marks=pytest.mark.redis)]

# One update of the random sequence: (kind, argument).
_update = st.one_of(
    st.tuples(st.just("append"), st.integers(1, 3)),
    st.tuples(st.just("edit"), st.integers(0, 50)),
    st.tuples(st.just("remove"), st.integers(0, 50)),
    st.tuples(st.just("remove_all"), st.just(0)),
)


def _id(message: Any) -> str:
    return str(message["id"] if isinstance(message, dict) else message.id)


def _as_input(op: tuple[str, int], msgs: list[Any], n: int) -> dict[str, Any]:
    kind, arg = op
    if kind == "append":
        new = [{"id": f"m{n}-{i}", "role": "user", "content": "x" * 50} for i in range(arg)]
        return {"log": [n] * arg, "messages": new}
    if kind == "remove_all":
        return {"log": [], "messages": [RemoveMessage(id=REMOVE_ALL_MESSAGES)]}
    if not msgs:
        return {"log": [n], "messages": []}
    target = _id(msgs[arg % len(msgs)])
    if kind == "edit":
        return {"log": [n], "messages": [{"id": target, "role": "user", "content": f"edited {n}"}]}
    return {"log": [], "messages": [RemoveMessage(id=target)]}


def _run(saver: BaseCheckpointSaver, ops: list[tuple[str, int]]) -> list[Any]:
    app = _graph().compile(checkpointer=saver)
    config = {"configurable": {"thread_id": "t"}}
    for n, op in enumerate(ops):
        current = app.get_state(config).values.get("messages", []) if n else []
        app.invoke(_as_input(op, current, n), config)
    return [(s.values, s.next) for s in app.get_state_history(config)]


@pytest.mark.parametrize("kind", KINDS)
def test_delta_history_equals_whole_values(kind: str, tmp_path: Path) -> None:
    """Random appends, edits, removals and clears read back the same with and without deltas."""

    @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(_update, min_size=1, max_size=12), st.integers(1, 4))
    def check(ops: list[tuple[str, int]], every: int) -> None:
        whole = _run(_open(kind, tmp_path, delta=False), ops)
        delta_saver = _open(kind, tmp_path, snapshot_every=every)
        assert _run(delta_saver, ops) == whole

    check()


@pytest.mark.parametrize("kind", KINDS)
def test_a_step_stores_a_delta_and_prune_keeps_its_chain(kind: str, tmp_path: Path) -> None:
    """After appends, the latest value is a delta; pruning to the newest keeps it readable."""
    saver = _open(kind, tmp_path, snapshot_every=100)
    app = _graph().compile(checkpointer=saver)
    config = {"configurable": {"thread_id": "t"}}
    for n in range(6):
        message = {"id": f"m{n}", "role": "user", "content": "hi"}
        app.invoke({"log": [n], "messages": [message]}, config)
    latest = saver.get_tuple(config)
    assert latest is not None
    version = latest.checkpoint.channel_versions["log"]
    depth = saver.value_depth("t", "", "log", version)
    assert depth is not None and depth >= 5  # stored as a delta on a long chain
    messages = latest.checkpoint.channel_versions["messages"]
    assert (saver.value_depth("t", "", "messages", messages) or 0) >= 5
    saver.prune(["t"], strategy="keep_latest")
    assert len(list(saver.list(config))) == 1
    state = app.get_state(config).values
    assert state["log"] == list(range(6))
    assert [_id(m) for m in state["messages"]] == [f"m{n}" for n in range(6)]
    app.invoke({"log": [6], "messages": []}, config)  # resumes on the pruned chain
    assert app.get_state(config).values["log"] == list(range(7))


@pytest.mark.parametrize("kind", KINDS)
def test_a_chat_of_plain_dicts_stores_deltas_without_langchain_core(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without langchain_core, messages stay dicts: a merge keeps the state's own dicts, so
    each turn is stored as a delta (copying each one made every turn a whole list)."""
    monkeypatch.setattr(message_module, "_langchain", lambda: None)
    saver = _open(kind, tmp_path, snapshot_every=100)
    app = _graph().compile(checkpointer=saver)
    config = {"configurable": {"thread_id": "t"}}
    sent = [{"id": f"m{n}", "role": "user", "content": f"hi {n}"} for n in range(6)]
    for n, message in enumerate(sent):
        app.invoke({"messages": [message]}, config)
        if n == 3:  # an edit by id is a delta too
            app.invoke({"messages": [{**sent[1], "content": "edited"}]}, config)
    latest = saver.get_tuple(config)
    assert latest is not None
    messages = latest.checkpoint.channel_versions["messages"]
    assert (saver.value_depth("t", "", "messages", messages) or 0) >= 6
    values = app.get_state(config).values["messages"]
    assert all(type(m) is dict for m in values)
    assert [m["content"] for m in values] == ["hi 0", "edited", "hi 2", "hi 3", "hi 4", "hi 5"]
    assert sent[0] == {"id": "m0", "role": "user", "content": "hi 0"}  # the caller's, untouched


def test_diff_rebuilds_by_identity_only() -> None:
    """An equal but different item is new, so ``True`` never comes back as ``1``."""
    a, b, c = object(), object(), object()
    old = [a, b, 1]
    new = [a, c, b, True]
    ops = diff_lists(old, new)
    assert apply_delta(old, ops) == new
    assert apply_delta(old, ops)[3] is True
    stored, depth = plan_value(old, [*old, c], 0, 7, 10)
    assert isinstance(stored, ChannelDelta) and (stored.base, depth) == (7, 1)
    assert plan_value(old, [*old, c], 10, 7, 10) == ([*old, c], 0)  # K reached


@pytest.mark.parametrize("bad", [{"delta": "yes"}, {"snapshot_every": 0}, {"snapshot_every": True}])
def test_bad_delta_options_are_refused(bad: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(GraphValueError, match="delta|snapshot_every"):
        InMemorySaver(**bad)
    with pytest.raises(GraphValueError, match="delta|snapshot_every"):
        SqliteSaver(tmp_path / "x.db", **bad)


@pytest.mark.parametrize("kind", KINDS)
def test_prune_keeps_a_parked_interrupt_on_a_delta_thread(kind: str, tmp_path: Path) -> None:
    """A thread parked at an interrupt, pruned to its newest checkpoint, resumes exactly."""
    from durable_graph import Command, interrupt

    def ask(state: State) -> dict[str, Any]:
        answer = interrupt("more?")
        return {"log": [answer]}

    g = StateGraph(State)
    g.add_node("ask", ask)
    g.add_edge(START, "ask")
    g.add_edge("ask", END)
    saver = _open(kind, tmp_path, snapshot_every=100)
    app = g.compile(checkpointer=saver)
    config = {"configurable": {"thread_id": "t"}}
    for n in range(4):
        app.invoke({"log": [n]}, config)
        app.invoke(Command(resume=f"a{n}"), config)
    app.invoke({"log": ["last"]}, config)  # parked at the interrupt
    saver.prune(["t"], strategy="keep_latest")
    assert [c.checkpoint.id for c in saver.list(config)] == [saver.get_tuple(config).checkpoint.id]
    state = app.invoke(Command(resume="done"), config)
    assert state["log"] == [0, "a0", 1, "a1", 2, "a2", 3, "a3", "last", "done"]


def test_diff_of_a_list_repeating_one_object_stays_small() -> None:
    """Appending an object the list already holds copies one run, not one op per item."""
    item = "x" * 100
    old = [item] * 50
    ops = diff_lists(old, [*old, item])
    assert apply_delta(old, ops) == [item] * 51
    assert len(ops) <= 2


_PERSISTED = ["sqlite", pytest.param("redis", marks=pytest.mark.redis)]


@pytest.mark.parametrize("kind", _PERSISTED)
def test_a_step_retires_its_parents_applied_writes_but_keeps_outcomes(
    kind: str, tmp_path: Path
) -> None:
    """Each step's output is stored once: a committed successor holds it as values.

    The writes of past steps are gone (their values live on in the next checkpoint),
    the latest checkpoint keeps its writes, and interrupts stay on the step that
    raised them, so history and resumes read the same as before.
    """
    from durable_graph import Command, interrupt

    def ask(state: State) -> dict[str, Any]:
        return {"log": [interrupt("more?")]}

    g = StateGraph(State)
    g.add_node("step", lambda s: {"log": ["s"]})
    g.add_node("ask", ask)
    g.add_edge(START, "step")
    g.add_edge("step", "ask")
    g.add_edge("ask", END)
    saver = _open(kind, tmp_path)
    app = g.compile(checkpointer=saver)
    config = {"configurable": {"thread_id": "t"}}
    app.invoke({"log": [0]}, config)  # parked at the interrupt
    parked = saver.get_tuple(config)
    assert parked is not None and [w.channel for w in parked.pending_writes] == ["__interrupt__"]
    assert app.invoke(Command(resume="yes"), config)["log"] == [0, "s", "yes"]
    history = list(saver.list(config))
    assert [h.metadata["source"] for h in history] == ["loop", "loop", "loop", "input"]
    writes = [sorted(w.channel for w in h.pending_writes) for h in history]
    # __start__'s and step's writes went with the commits that applied them; the step
    # that was parked keeps its interrupt and the resume value it got
    assert writes == [[], ["__interrupt__", "__resume__"], [], []]
    snaps = list(app.get_state_history(config))
    assert [s.next for s in snaps] == [(), ("ask",), ("step",), ("__start__",)]
    assert [i.value for i in snaps[1].interrupts] == ["more?"]


@pytest.mark.redis
def test_a_redis_commit_given_its_parent_stores_deltas_and_never_a_dangling_one(
    tmp_path: Path,
) -> None:
    """``put(parent=)`` (the workers' commits) plans deltas as the embedded loop does.

    A delta whose base value is gone by the time the script runs is not committed:
    the whole value is stored instead.
    """
    from durable_graph.store.base import Checkpoint, new_checkpoint_id
    from durable_graph.store.redis import RedisSaver
    from durable_graph.store.redis.keys import ThreadKeys, blob_field

    saver = _open("redis", tmp_path)
    assert isinstance(saver, RedisSaver)
    parent: Checkpoint | None = None
    log: list[Any] = []
    for step in range(4):
        log = [*log, f"item{step}"]
        cp = Checkpoint(new_checkpoint_id(), "2026-01-01T00:00:00+00:00", {"log": log},
                        {"log": step + 1}, {})
        conf: dict[str, Any] = {"thread_id": "t", "checkpoint_ns": ""}
        if parent is not None:
            conf["checkpoint_id"] = parent.id
        if step == 3:  # read (its depth is known), then the base vanishes (outside prune)
            assert saver.get_tuple({"configurable": {"thread_id": "t"}}) is not None
            delete_value(saver.client, ThreadKeys(saver.prefix, "t").ns(""), blob_field("log", 3))
        saver.put({"configurable": conf}, cp, {"source": "loop", "step": step},
                  {"log": step + 1}, parent=parent)
        parent = cp
    nsk = ThreadKeys(saver.prefix, "t").ns("")
    assert read_value(saver.client, nsk, blob_field("log", 3)) is None
    depths = [saver.value_depth("t", "", "log", v) for v in (1, 2, 4)]
    assert depths == [0, 1, 0]  # a delta, then (its base gone) the whole value
    latest = saver.get_tuple({"configurable": {"thread_id": "t"}})
    assert latest is not None and latest.checkpoint.channel_values["log"] == log


def test_history_streams_a_page_at_a_time(tmp_path: Path) -> None:
    """The newest snapshot of a long history comes after one page of rows, not all of them."""
    saver = SqliteSaver(tmp_path / "long.db")
    app = _graph().compile(checkpointer=saver)
    config = {"configurable": {"thread_id": "t"}}
    for n in range(120):  # 360 checkpoints: more than three pages
        app.invoke({"log": [n], "messages": []}, config)
    statements: list[str] = []
    saver._conn.set_trace_callback(statements.append)
    history = app.get_state_history(config)
    assert next(history).values["log"] == list(range(120))
    pages = [s for s in statements if "LIMIT" in s and "FROM checkpoints" in s
             and "LIMIT 1\n" not in s]  # not the lookup of a parent (``sqlite_parents``)
    assert len(pages) == 1 and len(statements) < 20
    rest = sum(1 for _ in history)
    assert rest == 359
    saver._conn.set_trace_callback(None)


# One edit of a list: (kind, position); new items are fresh objects.
_list_edit = st.tuples(st.sampled_from(["append", "insert", "replace", "remove", "clear"]),
                       st.integers(0, 30))


def _edited(items: list[Any], edit: tuple[str, int], n: int) -> list[Any]:
    kind, at = edit
    new = {"n": n}
    if kind == "append" or not items:
        return [*items, new]
    i = at % len(items)
    if kind == "insert":
        return [*items[:i], new, *items[i:]]
    if kind == "replace":
        return [*items[:i], new, *items[i + 1:]]
    if kind == "remove":
        return [*items[:i], *items[i + 1:]]
    return []


@pytest.mark.redis
def test_workers_commits_read_back_as_whole_values(tmp_path: Path) -> None:
    """The workers' commit path (``put(parent=)``) on random list edits reads back exactly."""
    from durable_graph.store.base import Checkpoint, new_checkpoint_id
    from durable_graph.store.redis import RedisSaver

    @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(_list_edit, min_size=1, max_size=15), st.integers(1, 4))
    def check(edits: list[tuple[str, int]], every: int) -> None:
        saver = _open("redis", tmp_path, snapshot_every=every)
        assert isinstance(saver, RedisSaver)
        parent: Checkpoint | None = None
        items: list[Any] = []
        written = []
        for n, edit in enumerate(edits):
            items = _edited(items, edit, n)
            cp = Checkpoint(new_checkpoint_id(), "2026-01-01T00:00:00+00:00", {"log": items},
                            {"log": n + 1}, {})
            conf: dict[str, Any] = {"thread_id": "t", "checkpoint_ns": ""}
            if parent is not None:
                conf["checkpoint_id"] = parent.id
                saver.get_tuple({"configurable": {**conf}})  # as a worker loads its step
            saver.put({"configurable": conf}, cp, {"source": "loop", "step": n},
                      {"log": n + 1}, parent=parent)
            parent = cp
            written.append(list(items))
        read = [t.checkpoint.channel_values["log"]
                for t in saver.list({"configurable": {"thread_id": "t"}})]
        assert read == written[::-1]
        deltas.extend(d for v in range(1, len(edits) + 1)
                      if (d := saver.value_depth("t", "", "log", v)))
        saver.delete_thread("t")

    deltas: list[int] = []
    check()
    assert deltas  # the plans did store deltas, not only whole values
