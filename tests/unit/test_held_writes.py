"""A step's last task's writes go with the commit that applies them (``Persister``).

Redis and SQLite retire a checkpoint's ordinary writes once the step applying them is
committed: the last task's writes are no longer stored (sent) just to be deleted. What
users read stays the same: state, history, pending writes after an interrupt or an
error, resumes. Every test runs on the real stores (a SQLite file, a Redis server).
"""

from __future__ import annotations

import collections
import hashlib
import operator
import os
import re
import threading
import time
import uuid
from pathlib import Path
from typing import Annotated, Any

import pytest
import redis
from typing_extensions import TypedDict

from durable_graph import END, START, Command, StateGraph, entrypoint, interrupt, task
from durable_graph.errors import CommitConflictError
from durable_graph.scheduler.persist import Persister
from durable_graph.store.base import (
    RESUME,
    BaseCheckpointSaver,
    Checkpoint,
    checkpoint_config,
    empty_checkpoint,
    new_checkpoint_id,
)
from durable_graph.store.memory import InMemorySaver
from durable_graph.store.redis import RedisSaver, scripts
from durable_graph.store.sqlite import SqliteSaver

KINDS = ["memory", "sqlite", pytest.param("redis", marks=pytest.mark.redis)]
_SCRIPTS = {hashlib.sha1(v.encode()).hexdigest(): name for name in scripts.__all__
            if isinstance(v := getattr(scripts, name), str)}


class _Scripts(redis.Connection):
    """A connection that notes the name of every script it sends (EVALSHA/EVAL)."""

    sent: collections.Counter[str]

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        chunks = [command] if isinstance(command, (str, bytes)) else command
        data = b"".join(c.encode() if isinstance(c, str) else bytes(c) for c in chunks)
        i = 0
        while i < len(data):  # RESP arrays of bulk strings, one per command
            j = data.index(b"\r\n", i)
            count, i, args = int(data[i + 1:j]), j + 2, []
            for _ in range(count):
                j = data.index(b"\r\n", i)
                size = int(data[i + 1:j])
                args.append(data[j + 2:j + 2 + size])
                i = j + 2 + size + 2
            if args[0].upper() in (b"EVALSHA", b"EVAL"):
                key = args[1].decode() if args[0].upper() == b"EVALSHA" \
                    else hashlib.sha1(args[1]).hexdigest()
                type(self).sent[_SCRIPTS.get(key, key)] += 1
        super().send_packed_command(command, check_health)


class _Counted:
    """A saver of one kind, with what it stored counted as the store sees it:
    Redis the scripts sent; SQLite the rows inserted in ``writes``; memory the calls."""

    def __init__(self, kind: str, tmp: Path) -> None:
        self.kind = kind
        self._last: str | None = None  # the statement SQLite traced last
        self.counts: collections.Counter[str] = collections.Counter()
        if kind == "memory":
            self.saver: BaseCheckpointSaver = _CallsSaver(self.counts)
        elif kind == "sqlite":
            saver = SqliteSaver(tmp / f"{uuid.uuid4().hex}.db")
            saver._conn.set_trace_callback(self._sql)
            self.saver = saver
        else:
            conn = type("Scripts", (_Scripts,), {"sent": self.counts})
            prefix = f"{os.environ['DURABLE_GRAPH_TEST_REDIS_PREFIX']}-{uuid.uuid4().hex[:8]}"
            self.saver = RedisSaver.from_url(os.environ["DURABLE_GRAPH_TEST_REDIS_URL"],
                                             prefix=prefix, connection_class=conn)

    def _sql(self, statement: str) -> None:
        # SQLite traces a statement again as each trigger on it starts (``writes`` has one
        # since schema 12): the same text right after it is that, not another insert
        again, self._last = statement == self._last, statement
        if statement.startswith("INSERT OR") and "INTO writes" in statement and not again:
            self.counts["write rows"] += 1

    def task_writes_stored(self) -> int:
        """How many times ordinary task writes went to the store on their own."""
        return self.counts[{"memory": "put_writes", "sqlite": "write rows",
                            "redis": "PUT_WRITES"}[self.kind]]


class _CallsSaver(InMemorySaver):
    """An in-memory saver counting the calls of the saver contract made to it."""

    def __init__(self, counts: collections.Counter[str]) -> None:
        super().__init__()
        self.counts = counts
        self._inner = threading.local()

    def put_writes(self, config: Any, writes: Any, task_id: str) -> None:
        if not getattr(self._inner, "on", False):
            self.counts["put_writes"] += 1
        super().put_writes(config, writes, task_id)

    def put_applying(self, *args: Any) -> dict[str, Any]:
        self.counts["put_applying"] += 1
        self._inner.on = True
        try:
            return super().put_applying(*args)
        finally:
            self._inner.on = False


class Log(TypedDict, total=False):
    log: Annotated[list[str], operator.add]
    n: int


def _append(steps: int) -> StateGraph:
    g = StateGraph(Log)
    g.add_node("step", lambda s: {"log": [f"item{s.get('n', 0)}"], "n": s.get("n", 0) + 1})
    g.add_edge(START, "step")
    g.add_conditional_edges("step", lambda s: END if s["n"] >= steps else "step")
    return g


def _pair(slow: str, body: Any = None, calls: collections.Counter[str] | None = None) -> Any:
    """START -> a, b in parallel -> END; ``slow`` finishes last; ``body(name)`` may raise
    or interrupt; ``calls`` counts each node's runs."""
    def node(name: str) -> Any:
        def run(state: Log) -> Log:
            if calls is not None:
                calls[name] += 1
            if name == slow:
                time.sleep(0.2)
            extra = body(name) if body is not None else None
            return {"log": [name if extra is None else f"{name}:{extra}"]}
        return run

    g = StateGraph(Log)
    g.add_node("a", node("a"))
    g.add_node("b", node("b"))
    g.add_edge(START, "a")
    g.add_edge(START, "b")
    g.add_edge("a", END)
    g.add_edge("b", END)
    return g


def _cfg() -> dict[str, Any]:
    return {"configurable": {"thread_id": uuid.uuid4().hex}}


def _history(saver: BaseCheckpointSaver, config: dict[str, Any]) -> list[Any]:
    """Each checkpoint of a thread as users read it, ids left out: source, step, values
    and pending writes (channel and value, in order)."""
    return [(h.metadata.get("source"), h.metadata.get("step"), h.checkpoint.channel_values,
             sorted((w.channel, _shown(w.value)) for w in h.pending_writes))
            for h in saver.list(config)]


def _shown(value: Any) -> str:
    """``repr`` with interrupt ids left out (they differ from one thread to another)."""
    return re.sub(r"id='[0-9a-f]+'", "id=...", repr(value))


@pytest.mark.parametrize("durability", ["sync", "async"])
@pytest.mark.parametrize("kind", KINDS)
def test_the_last_tasks_writes_are_not_stored_apart(
    kind: str, durability: str, tmp_path: Path
) -> None:
    """A one-task step sends its writes with nothing but the commit: no write of its own
    (Redis: no PUT_WRITES script; SQLite: no row inserted in ``writes``; memory: one
    ``put_applying`` call a step, which stores them since it keeps every write)."""
    store = _Counted(kind, tmp_path)
    app = _append(5).compile(checkpointer=store.saver)
    config = _cfg()
    assert app.invoke({"log": []}, config, durability=durability)["log"] == [
        f"item{i}" for i in range(5)]
    assert store.task_writes_stored() == 0
    if kind == "redis":  # the input's with __start__'s step (one script), then 5 steps
        assert store.counts["PUT"] == 5 and store.counts["PUT_STEP"] == 1
    history = _history(store.saver, config)
    assert [h[:2] for h in history] == [("loop", i) for i in range(5, -1, -1)] + [("input", -1)]
    if kind == "memory":  # it keeps every step's writes, as before: stored with the commit
        assert store.counts["put_applying"] == 6
        assert [bool(h[3]) for h in history] == [False] + [True] * 6
        assert ("log", _shown(["item4"])) in history[1][3]
    else:  # the others retire applied writes: nothing left of them, as before
        assert all(h[3] == [] for h in history)


@pytest.mark.parametrize("kind", KINDS)
def test_a_parallel_step_stores_all_but_its_last_task_at_once(
    kind: str, tmp_path: Path
) -> None:
    """Of a step's two tasks, the first to finish is stored as it finishes (a crash
    after it never runs it again), the last goes with the commit."""
    store = _Counted(kind, tmp_path)
    seen: list[list[str]] = []

    def body(name: str) -> None:
        if name == "b":  # the slow one: a's writes are stored by now
            saved = store.saver.get_tuple(config)
            assert saved is not None
            seen.append(sorted(w.channel for w in saved.pending_writes))

    app = _pair("b", body).compile(checkpointer=store.saver)
    config = _cfg()
    assert sorted(app.invoke({"log": []}, config, durability="sync")["log"]) == ["a", "b"]
    assert store.task_writes_stored() == 1  # a's one write, {"log": ["a"]}; b's none
    assert seen == [["log"]], seen


def _same_as_unheld(kind: str, tmp_path: Path, build: Any, inputs: list[Any]) -> None:
    """Running ``build()`` with ``inputs`` (one invoke each) stores what it stored when no
    write was held: the same graph streamed with ``updates`` under ``sync`` holds none."""
    out = []
    for held in (True, False):
        store = _Counted(kind, tmp_path)
        app = build().compile(checkpointer=store.saver)
        config = _cfg()
        results = []
        for value in inputs:
            try:
                if held:
                    results.append(app.invoke(value, config, durability="sync"))
                else:
                    *_, last = app.stream(value, config, stream_mode=["updates", "values"],
                                          durability="sync")
                    results.append(last)
            except Exception as exc:  # an error's run: what it stored still counts
                results.append(repr(exc))
        state = app.get_state(config)
        tasks = sorted((t.name, t.error, _shown(t.interrupts), _shown(t.result))
                       for t in state.tasks)
        out.append((_history(store.saver, config), state.values, state.next, tasks,
                    store.task_writes_stored() if held else None))
    (history, values, nxt, tasks, _), (history0, values0, nxt0, tasks0, _) = out
    assert (history, values, nxt, tasks) == (history0, values0, nxt0, tasks0)


@pytest.mark.parametrize("kind", KINDS)
def test_an_interrupt_beside_a_last_task_keeps_its_writes(kind: str, tmp_path: Path) -> None:
    """b interrupts, a finishes last: no commit applies a's writes, so they are stored,
    shown by get_state, and the resume does not run a again."""
    calls: collections.Counter[str] = collections.Counter()

    def body(name: str) -> Any:
        return interrupt("ok?") if name == "b" else None

    _same_as_unheld(kind, tmp_path, lambda: _pair("a", body), [{"log": []}])
    store = _Counted(kind, tmp_path)
    app = _pair("a", body, calls).compile(checkpointer=store.saver)
    config = _cfg()
    app.invoke({"log": []}, config, durability="sync")
    state = app.get_state(config)
    assert state.next == ("b",)
    assert [(t.name, t.result) for t in state.tasks] == [("a", {"log": ["a"]}), ("b", None)]
    assert [i.value for i in state.interrupts] == ["ok?"]
    assert sorted(app.invoke(Command(resume="yes"), config)["log"]) == ["a", "b:yes"]
    assert calls == {"a": 1, "b": 2}


@pytest.mark.parametrize("kind", KINDS)
def test_an_error_beside_a_last_task_keeps_its_writes(kind: str, tmp_path: Path) -> None:
    """b fails, a finishes last: a's writes are stored with b's error; a rerun of the
    thread runs b only."""
    calls: collections.Counter[str] = collections.Counter()
    failing = [True]

    def body(name: str) -> None:
        if name == "b" and failing[0]:
            raise ValueError("boom")

    _same_as_unheld(kind, tmp_path, lambda: _pair("a", body), [{"log": []}])
    store = _Counted(kind, tmp_path)
    app = _pair("a", body, calls).compile(checkpointer=store.saver)
    config = _cfg()
    with pytest.raises(ValueError, match="boom"):
        app.invoke({"log": []}, config, durability="sync")
    state = app.get_state(config)
    assert [(t.name, t.result, t.error) for t in state.tasks] == [
        ("a", {"log": ["a"]}, None), ("b", None, "ValueError('boom')")]
    failing[0] = False
    assert sorted(app.invoke(None, config)["log"]) == ["a", "b"]
    assert calls == {"a": 1, "b": 2}


@pytest.mark.parametrize("kind", KINDS)
def test_functional_calls_and_subgraphs_store_the_same(kind: str, tmp_path: Path) -> None:
    """An entrypoint's @task calls are stored as they finish, its own return goes with
    the commit; a subgraph's steps commit in its namespace the same way."""
    @task
    def double(x: int) -> int:
        return 2 * x

    def main(x: int) -> int:
        return sum(f.result() for f in [double(x), double(x + 1)])

    def flow() -> Any:
        return _AsBuilder(main)

    _same_as_unheld(kind, tmp_path, flow, [3, 4])

    def nested() -> StateGraph:
        inner = _append(2).compile()
        g = StateGraph(Log)
        g.add_node("inner", inner)
        g.add_node("after", lambda s: {"log": ["after"]})
        g.add_edge(START, "inner")
        g.add_edge("inner", "after")
        g.add_edge("after", END)
        return g

    _same_as_unheld(kind, tmp_path, nested, [{"log": []}, {"log": ["again"]}])


class _AsBuilder:
    """An entrypoint where ``_same_as_unheld`` wants a builder: ``compile(checkpointer)``."""

    def __init__(self, main: Any) -> None:
        self.main = main

    def compile(self, checkpointer: BaseCheckpointSaver) -> Any:
        return entrypoint(checkpointer=checkpointer)(self.main)


@pytest.mark.parametrize("kind", KINDS)
def test_sync_stores_the_last_task_before_streaming_its_update(
    kind: str, tmp_path: Path
) -> None:
    """Under ``sync``, a caller that gets the last task's update finds its writes stored
    (not held: the caller's code runs before the commit)."""
    store = _Counted(kind, tmp_path)
    app = _append(2).compile(checkpointer=store.saver)
    config = _cfg()
    for chunk in app.stream({"log": []}, config, stream_mode="updates", durability="sync"):
        saved = store.saver.get_tuple(config)
        assert saved is not None
        assert "log" in {w.channel for w in saved.pending_writes}, chunk


def _persister(saver: BaseCheckpointSaver, thread_id: str) -> tuple[Persister, Checkpoint]:
    """A persister with the input checkpoint of ``thread_id`` stored."""
    base = empty_checkpoint()
    first = Checkpoint(new_checkpoint_id(after=base.id), base.ts, {"x": 1}, {"x": 1}, {})
    p = Persister(saver, thread_id=thread_id, ns="", durability="sync", parent=None)
    p.put_checkpoint(first, {"source": "input", "step": -1, "parents": {}})
    return p, first


def _next(cp: Checkpoint) -> Checkpoint:
    return Checkpoint(new_checkpoint_id(after=cp.id), cp.ts, {"x": 2}, {"x": 2}, {})


@pytest.mark.parametrize("kind", KINDS)
def test_held_outcomes_are_kept_with_the_commit(kind: str, tmp_path: Path) -> None:
    """Outcome writes held with ordinary ones are stored by the commit that applies the
    ordinary ones (Redis: in its own script, PUT_STEP); stores that keep every write
    (memory) keep the ordinary ones too."""
    store = _Counted(kind, tmp_path)
    thread = uuid.uuid4().hex
    p, first = _persister(store.saver, thread)
    p.put_writes("t1", [("x", 2), (RESUME, ["yes"])], hold=True)
    p.put_checkpoint(_next(first), {"source": "loop", "step": 0, "parents": {}})
    p.flush()
    saved = store.saver.get_tuple(checkpoint_config(thread, "", first.id))
    assert saved is not None
    kept = sorted(w.channel for w in saved.pending_writes)
    assert kept == (["__resume__", "x"] if kind == "memory" else ["__resume__"])
    if kind == "redis":
        assert store.counts["PUT_WRITES"] == 0 and store.counts["PUT_STEP"] == 1


@pytest.mark.parametrize("kind", KINDS)
def test_held_writes_go_first_when_something_else_is_stored(kind: str, tmp_path: Path) -> None:
    """Another task's writes, a checkpoint that does not apply them (not the next
    step's), ``send_held`` and ``flush`` each store the held writes, as they are."""
    store = _Counted(kind, tmp_path)
    thread = uuid.uuid4().hex
    p, first = _persister(store.saver, thread)
    p.put_writes("t1", [("x", 2)], hold=True)
    p.put_writes("t2", [("x", 3)], hold=True)  # t1's go now, t2's wait
    p.send_held()
    p.put_writes("t3", [("x", 4)], hold=True)
    p.put_checkpoint(_next(first), {"source": "update", "step": 0, "parents": {}})
    p.put_writes("t4", [("x", 5)], hold=True)
    p.flush()
    writes = {cid: sorted((w.task_id, w.value) for w in t.pending_writes)
              for cid in {first.id} for t in [store.saver.get_tuple(
                  checkpoint_config(thread, "", cid))] if t is not None}
    assert writes[first.id] == [("t1", 2), ("t2", 3), ("t3", 4)]
    latest = store.saver.get_tuple({"configurable": {"thread_id": thread}})
    assert latest is not None
    assert [(w.task_id, w.value) for w in latest.pending_writes] == [("t4", 5)]


def test_a_refused_commit_stores_the_held_writes(tmp_path: Path) -> None:
    """A commit that fails (here: another process committed meanwhile) stores the writes
    it would have applied, as when they were sent first; its error is raised."""
    saver = SqliteSaver(tmp_path / "c.db")
    thread = uuid.uuid4().hex
    p, first = _persister(saver, thread)
    other = Persister(saver, thread_id=thread, ns="", durability="sync", parent=first)
    other.put_checkpoint(_next(first), {"source": "loop", "step": 0, "parents": {}})
    p.put_writes("t1", [("x", 2)], hold=True)
    with pytest.raises(CommitConflictError):
        p.put_checkpoint(_next(first), {"source": "loop", "step": 0, "parents": {}})
    saved = saver.get_tuple(checkpoint_config(thread, "", first.id))
    assert saved is not None
    assert [(w.task_id, w.channel, w.value) for w in saved.pending_writes] == [("t1", "x", 2)]


@pytest.mark.parametrize("kind", KINDS)
def test_sync_stores_held_writes_before_a_pause_reaches_the_caller(
    kind: str, tmp_path: Path
) -> None:
    """b interrupts and a, the last to finish, was held (a ``values`` stream shows no
    task's end): the step pauses without a commit, and its ``values`` chunk with the
    interrupt reaches a caller that finds a's writes stored (``sync``)."""
    store = _Counted(kind, tmp_path)
    app = _pair("a", lambda name: interrupt("ok?") if name == "b" else None).compile(
        checkpointer=store.saver)
    config = _cfg()
    paused = []
    for chunk in app.stream({"log": []}, config, stream_mode="values", durability="sync"):
        if "__interrupt__" in chunk:
            saved = store.saver.get_tuple(config)
            assert saved is not None
            paused.append(sorted(w.channel for w in saved.pending_writes))
    assert paused == [["__interrupt__", "log"]]
