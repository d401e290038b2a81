"""Retention on every saver: the policy (``ttl=``, ``keep_last=``), thread TTLs, pruning.

One suite over memory, SQLite and Redis (real Redis). The pruning promises are
checked on real graphs, each pruned two ways (``prune()`` after the run, or a
``keep_last`` policy applied by every commit), against the same graph run on a
saver that keeps everything: what a kept checkpoint needs (a delta chain over a
pruned snapshot, a parked interrupt, the finished tasks of a failed step, the
values a forked branch reads) survives, so the thread reads and resumes alike.
"""

from __future__ import annotations

import asyncio
import operator
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, TypedDict

import pytest

from durable_graph import END, START, Command, InMemorySaver, SqliteSaver, StateGraph, interrupt
from durable_graph.errors import CommitConflictError, GraphValueError
from durable_graph.store.base import BaseCheckpointSaver, new_checkpoint_id
from durable_graph.store.base import Checkpoint as Cp
from durable_graph.store.serde import TypedSerializer
from tests.unit.backend_contract import backend_maker, kind_params, wait_until


def _memory(folder: Path, **options: Any) -> BaseCheckpointSaver:
    return InMemorySaver(**options)


def _sqlite(folder: Path, **options: Any) -> BaseCheckpointSaver:
    return SqliteSaver(folder / "checkpoints.db", **options)


def _redis(folder: Path, **options: Any) -> BaseCheckpointSaver:
    from durable_graph.store.redis import RedisSaver

    # The conftest sets both for tests marked redis and deletes the prefix's keys after.
    url = os.environ["DURABLE_GRAPH_TEST_REDIS_URL"]
    prefix = f"{os.environ['DURABLE_GRAPH_TEST_REDIS_PREFIX']}-{uuid.uuid4().hex[:8]}"
    return RedisSaver.from_url(url, prefix=prefix, **options)


FACTORIES: dict[str, Any] = {
    "memory": pytest.param(_memory),
    "sqlite": pytest.param(_sqlite),
    "redis": pytest.param(_redis, marks=pytest.mark.redis),
}


@pytest.fixture(**kind_params(FACTORIES))
def saver_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make(saver_kind: str, tmp_path: Path) -> Iterator[Callable[..., BaseCheckpointSaver]]:
    """Builds savers of the kind under test, with the options given; closes them after."""
    yield from backend_maker(FACTORIES[saver_kind].values[0], tmp_path)


def cfg(thread: str, checkpoint_id: str | None = None) -> dict[str, Any]:
    conf: dict[str, Any] = {"thread_id": thread}
    if checkpoint_id is not None:
        conf["checkpoint_id"] = checkpoint_id
    return {"configurable": conf}


def commit(saver: BaseCheckpointSaver, thread: str, n: int, ns: str = "") -> list[str]:
    """Commit ``n`` checkpoints in a chain; their ids, oldest first."""
    parent: dict[str, Any] = {"configurable": {"thread_id": thread, "checkpoint_ns": ns}}
    made = []
    for step in range(n):
        cp = Cp(new_checkpoint_id(), "2024-01-01T00:00:00+00:00", {"n": step},
                {"n": step + 1}, {})
        parent = saver.put(parent, cp, {"step": step}, {"n": step + 1})
        made.append(cp.id)
    return made


# --- the policy's arguments --------------------------------------------------


@pytest.mark.parametrize("bad", [0, -5, 1.5, "60", True])
@pytest.mark.parametrize("name", ["ttl", "keep_last"])
def test_policy_arguments_are_checked_and_named(
    make: Callable[..., BaseCheckpointSaver], name: str, bad: Any
) -> None:
    with pytest.raises(GraphValueError, match=f"{name} must be a whole number"):
        make(**{name: bad})


@pytest.mark.parametrize("bad", [0, -1, 2.5, "10", False])
def test_set_ttl_arguments_are_checked_and_named(
    make: Callable[..., BaseCheckpointSaver], bad: Any
) -> None:
    saver = make()
    commit(saver, "t", 1)
    with pytest.raises(GraphValueError, match="seconds must be a whole number"):
        saver.set_ttl("t", bad)
    assert saver.get_tuple(cfg("t")) is not None


def test_langgraph_style_constructors_take_the_policy(tmp_path: Path, saver_kind: str) -> None:
    if saver_kind == "sqlite":
        with SqliteSaver.from_conn_string(str(tmp_path / "x.db"), ttl=60, keep_last=2) as s:
            assert (s.ttl, s.keep_last) == (60, 2)
        with pytest.raises(GraphValueError, match="keep_last"):
            SqliteSaver.from_conn_string(str(tmp_path / "y.db"), keep_last=0)
    elif saver_kind == "memory":
        assert InMemorySaver(ttl=60, keep_last=2).keep_last == 2
    else:  # RedisSaver.from_url, the factory this suite builds Redis savers with
        s = _redis(tmp_path, ttl=60, keep_last=2)
        assert (s.ttl, s.keep_last) == (60, 2)
        with pytest.raises(GraphValueError, match="keep_last"):
            _redis(tmp_path, keep_last=0)


class Unreadable(TypedSerializer):
    """Writes like the default serializer; reading any value fails the test."""

    def loads_typed(self, data: tuple[str, bytes]) -> Any:
        raise AssertionError("pruning read a value")


def test_prune_decides_on_ids_and_reads_no_value(
    make: Callable[..., BaseCheckpointSaver],
) -> None:
    saver = make(serde=Unreadable())
    ids = commit(saver, "t", 6)
    commit(saver, "t", 2, ns="child:1")
    assert saver.prune("t", keep_last=2) == 4
    assert [r.checkpoint_id for r in saver.list_ids("t") if r.checkpoint_ns == ""] == \
        ids[-2:][::-1]
    assert saver.prune(["t"], strategy="delete") == 4
    assert list(saver.list_ids("t")) == []


def test_async_twins_as_in_langgraph(make: Callable[..., BaseCheckpointSaver]) -> None:
    saver = make()
    ids = commit(saver, "t", 4)
    commit(saver, "other", 1)

    async def scenario() -> int:
        await saver.acopy_thread("t", "copy")
        removed = await saver.aprune(["t"], keep_last=2)
        await saver.adelete_for_runs(["no-such-run"])
        return removed

    assert asyncio.run(scenario()) == 2
    assert [r.checkpoint_id for r in saver.list_ids("t")] == ids[-2:][::-1]
    assert [r.checkpoint_id for r in saver.list_ids("copy")] == ids[::-1]


# --- keep_last and ttl applied by commits -----------------------------------


def test_keep_last_is_applied_by_each_commit_per_namespace(
    make: Callable[..., BaseCheckpointSaver],
) -> None:
    saver = make(keep_last=3)
    root = commit(saver, "t", 7)
    child = commit(saver, "t", 2, ns="child:1")
    commit(saver, "other", 1)
    refs = list(saver.list_ids("t"))
    assert [r.checkpoint_id for r in refs if r.checkpoint_ns == ""] == root[-3:][::-1]
    assert [r.parent_id for r in refs if r.checkpoint_ns == ""] == root[-4:-1][::-1]
    assert [r.checkpoint_id for r in refs if r.checkpoint_ns == "child:1"] == child[::-1]
    latest = saver.get_tuple(cfg("t"))
    assert latest is not None and latest.checkpoint.channel_values == {"n": 6}
    assert saver.get_tuple(cfg("t", root[3])) is None
    assert [t.checkpoint.id for t in saver.list(cfg("t"))] == sorted(
        root[-3:] + child, reverse=True)
    assert len(list(saver.list_ids("other"))) == 1


def test_ttl_expires_a_thread_after_its_last_commit(
    make: Callable[..., BaseCheckpointSaver],
) -> None:
    short, long = make(ttl=1), make(ttl=600)
    commit(short, "gone", 2)
    short.set_status("gone", "done")
    commit(long, "kept", 2)
    wait_until(lambda: short.get_tuple(cfg("gone")) is None)
    assert list(short.list(cfg("gone"))) == [] and list(short.list_ids("gone")) == []
    assert short.get_status("gone") is None  # its status record went with it
    if hasattr(short, "list_threads"):
        assert "gone" not in short.list_threads()
    assert all(t.config["configurable"]["thread_id"] != "gone" for t in short.list(None))
    assert long.get_tuple(cfg("kept")) is not None
    commit(short, "gone", 1)  # written again: a new thread, none of the old history
    assert len(list(short.list(cfg("gone")))) == 1


def test_set_ttl_per_thread_on_every_saver(make: Callable[..., BaseCheckpointSaver]) -> None:
    saver = make()
    for thread in ("a", "b", "c"):
        commit(saver, thread, 2)
    saver.set_ttl("a", 1)
    saver.set_ttl("b", 1)
    saver.set_ttl("b", None)  # dropped again: the saver has no TTL, so b stays
    saver.set_ttl("c", 600)
    wait_until(lambda: saver.get_tuple(cfg("a")) is None)
    assert saver.get_tuple(cfg("b")) is not None and saver.get_tuple(cfg("c")) is not None
    assert {t.config["configurable"]["thread_id"] for t in saver.list(None)} == {"b", "c"}


# --- pruning never breaks a thread: real graphs, against a saver that keeps all ---


class Log(TypedDict, total=False):
    items: Annotated[list[str], operator.add]
    n: int
    limit: int
    answer: str


def _step(state: Log) -> dict[str, Any]:
    n = state.get("n", 0)
    return {"items": [f"item-{n}-" + "x" * 50], "n": n + 1}


def _more(state: Log) -> str:
    return "step" if state.get("n", 0) < state["limit"] else END


def looping() -> StateGraph:
    b = StateGraph(Log)
    b.add_node("step", _step)
    b.add_edge(START, "step")
    b.add_conditional_edges("step", _more)
    return b


def asking() -> StateGraph:
    def ask(state: Log) -> dict[str, Any]:
        return {"answer": interrupt("ok?"), "items": ["asked"]}

    b = looping()
    b.add_node("ask", ask)
    b.add_conditional_edges("step", lambda s: "step" if s["n"] < s["limit"] else "ask")
    b.add_edge("ask", END)
    return b


HOW = ["prune", "keep_last"]


def retaining(make: Callable[..., BaseCheckpointSaver], how: str) -> BaseCheckpointSaver:
    return make(keep_last=2) if how == "keep_last" else make()


def twins(build: Callable[[], StateGraph], saver: BaseCheckpointSaver,
          inp: dict[str, Any]) -> tuple[Any, Any]:
    """The graph on ``saver`` and on a saver that keeps everything, both run on ``inp``."""
    graph, plain = build().compile(checkpointer=saver), build().compile(
        checkpointer=InMemorySaver())
    for g in (graph, plain):
        g.invoke(inp, cfg("t"))
    return graph, plain


def settle(saver: BaseCheckpointSaver, thread: str, how: str) -> None:
    """Prune the thread now (``prune``); a ``keep_last`` saver has already."""
    if how == "prune":
        saver.prune([thread])
    assert len(list(saver.list_ids(thread))) <= 2


@pytest.mark.parametrize("how", HOW)
def test_prune_keeps_a_delta_chain_whose_snapshot_went(
    make: Callable[..., BaseCheckpointSaver], how: str
) -> None:
    saver = retaining(make, how)
    graph, plain = twins(looping, saver, {"limit": 12})
    settle(saver, "t", how)
    latest = saver.get_tuple(cfg("t"))
    assert latest is not None
    depth = saver.value_depth("t", "", "items", latest.checkpoint.channel_versions["items"])
    assert depth is not None and depth > 1, "the kept value must be a delta over a pruned one"
    assert graph.get_state(cfg("t")).values == plain.get_state(cfg("t")).values
    assert len(graph.get_state(cfg("t")).values["items"]) == 12
    for g in (graph, plain):  # and the thread goes on from there, deltas and all
        g.invoke({"limit": 15}, cfg("t"))
    assert graph.get_state(cfg("t")).values == plain.get_state(cfg("t")).values


@pytest.mark.parametrize("how", HOW)
def test_prune_keeps_a_parked_interrupt_and_resume_works(
    make: Callable[..., BaseCheckpointSaver], how: str
) -> None:
    saver = retaining(make, how)
    graph, plain = twins(asking, saver, {"limit": 4})
    settle(saver, "t", how)
    state = graph.get_state(cfg("t"))
    assert state.next == ("ask",)
    assert [i.value for t in state.tasks for i in t.interrupts] == ["ok?"]
    outs = [g.invoke(Command(resume="yes"), cfg("t")) for g in (graph, plain)]
    assert outs[0] == outs[1] and outs[0]["answer"] == "yes"


@pytest.mark.parametrize("how", HOW)
def test_prune_keeps_the_finished_tasks_of_a_failed_step(
    make: Callable[..., BaseCheckpointSaver], how: str
) -> None:
    runs: dict[str, int] = {}

    def build(tag: str) -> Any:
        def good(state: Log) -> dict[str, Any]:
            runs[tag] = runs.get(tag, 0) + 1
            return {"items": ["good"]}

        def flaky(state: Log) -> dict[str, Any]:
            if not runs.get(tag + "-fixed"):
                raise RuntimeError("flaky failed")
            return {"items": ["flaky"]}

        b = looping()
        b.add_node("good", good)
        b.add_node("flaky", flaky)
        b.add_conditional_edges("step", lambda s: "step" if s["n"] < s["limit"] else
                                ["good", "flaky"])
        b.add_edge("good", END)
        b.add_edge("flaky", END)
        return b.compile(checkpointer=saver if tag == "kept" else InMemorySaver())

    saver = retaining(make, how)
    graphs = {tag: build(tag) for tag in ("kept", "plain")}
    for tag, g in graphs.items():
        with pytest.raises(RuntimeError, match="flaky failed"):
            g.invoke({"limit": 4}, cfg("t"))
    settle(saver, "t", how)
    assert [w.channel for w in saver.get_tuple(cfg("t")).pending_writes  # type: ignore[union-attr]
            if w.channel == "items"] == ["items"], "the finished task's write is kept"
    outs = []
    for tag, g in graphs.items():
        runs[tag + "-fixed"] = 1
        outs.append(g.invoke(None, cfg("t")))
    assert outs[0] == outs[1] and outs[0]["items"][-2:] in (["good", "flaky"], ["flaky", "good"])
    assert runs["kept"] == runs["plain"] == 1, "a finished task of the failed step ran again"


@pytest.mark.parametrize("how", HOW)
def test_prune_keeps_what_a_forked_branch_reads(
    make: Callable[..., BaseCheckpointSaver], how: str
) -> None:
    saver = make(keep_last=3) if how == "keep_last" else make()
    graph, plain = twins(looping, saver, {"limit": 6})
    forks = []
    for g in (graph, plain):
        past = list(g.get_state_history(cfg("t")))[2]  # two steps back, still kept
        assert past.values["n"] == 4
        forked = g.update_state(past.config, {"items": ["branch"]})
        forks.append(forked)
    if how == "prune":
        saver.prune(["t"])
    # the branch head is kept; the main line and the checkpoint it forked from are not
    kept = list(saver.list_ids("t"))
    assert kept[0].checkpoint_id == forks[0]["configurable"]["checkpoint_id"]
    assert all(r.checkpoint_id != kept[0].parent_id for r in kept)
    assert graph.get_state(forks[0]).values == plain.get_state(forks[1]).values
    outs = [g.invoke(None, f) for g, f in ((graph, forks[0]), (plain, forks[1]))]
    assert outs[0] == outs[1]
    assert outs[0]["items"][-3:] == ["branch", "item-4-" + "x" * 50, "item-5-" + "x" * 50]


def test_a_thread_that_expires_under_a_running_step_refuses_the_commit(
    make: Callable[..., BaseCheckpointSaver],
) -> None:
    saver = make(ttl=1)

    def slow(state: Log) -> dict[str, Any]:
        if state.get("n", 0) == 1:  # outlive the TTL: the thread expires under this step
            wait_until(lambda: saver.get_tuple(cfg("t")) is None)
        return _step(state)

    b = StateGraph(Log)
    b.add_node("step", slow)
    b.add_edge(START, "step")
    b.add_conditional_edges("step", _more)
    with pytest.raises(CommitConflictError, match="the checkpoint it extends, .* is gone"):
        b.compile(checkpointer=saver).invoke({"limit": 3}, cfg("t"), durability="sync")
    assert saver.get_tuple(cfg("t")) is None, "nothing half-written (a delta over nothing)"
    assert list(saver.list(cfg("t"))) == []


# --- nothing of a pruned checkpoint stays behind ------------------------------------


def write_ids(saver: BaseCheckpointSaver, thread: str) -> set[str]:
    """Ids of the checkpoints ``saver`` holds pending writes of, read from its storage
    (not through the API, which shows only the writes of checkpoints that exist)."""
    if isinstance(saver, InMemorySaver):
        return {key[2] for key in saver._writes if key[0] == thread}
    if isinstance(saver, SqliteSaver):
        with saver._transaction(write=False) as conn:
            rows = conn.execute(
                "SELECT DISTINCT checkpoint_id FROM writes w JOIN thread_keys k "
                "ON k.key = w.thread_id WHERE k.thread_id = ?", (thread,)).fetchall()
        return {row[0] for row in rows}
    from durable_graph.store.redis.keys import WRITES, ThreadKeys

    tag = ThreadKeys(saver.prefix, thread).tag  # type: ignore[attr-defined]
    keys = saver.client.scan_iter(match=f"{tag}*", count=1000)  # type: ignore[attr-defined]
    return {k.rsplit(WRITES.encode(), 1)[1].decode() for k in keys if WRITES.encode() in k}


@pytest.mark.parametrize("how", HOW)
def test_a_late_write_to_a_pruned_checkpoint_leaves_nothing_behind(
    make: Callable[..., BaseCheckpointSaver], how: str
) -> None:
    """A task that finished after its step was committed elsewhere (a redelivered or
    duplicate execution) writes to a checkpoint that pruning removed: nothing of it may
    stay, or every such write leaks for good. A write to the newest checkpoint, or to a
    checkpoint not committed yet, is stored as before."""
    saver = retaining(make, how)
    old = commit(saver, "t", 1)[0]
    saver.put_writes(cfg("t", old), [("n", 1)], "task-1")
    kept = commit(saver, "t", 2)  # a new checkpoint chain (a keep_last saver prunes old)
    settle(saver, "t", how)
    assert write_ids(saver, "t") == set()
    saver.put_writes(cfg("t", old), [("n", 2)], "task-2")  # the late duplicate
    saver.put_writes(cfg("t", old), [("__error__", "late")], "task-3")
    assert write_ids(saver, "t") == set(), "writes of a pruned checkpoint stayed behind"
    saver.put_writes(cfg("t", kept[-1]), [("n", 3)], "task-4")
    ahead = new_checkpoint_id()  # writes may reach a store before their checkpoint
    saver.put_writes(cfg("t", ahead), [("n", 4)], "task-5")
    assert write_ids(saver, "t") == {kept[-1], ahead}
    latest = saver.get_tuple(cfg("t"))
    assert latest is not None and [w.task_id for w in latest.pending_writes] == ["task-4"]
