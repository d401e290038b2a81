"""The saver contract: every checkpoint saver passes this one suite.

To add a saver, add one entry to ``FACTORIES``: a ``pytest.param`` wrapping a
factory ``(tmp_path, serde) -> saver`` (``serde`` is None for the default), with
marks if it needs a server, e.g.::

    "redis": pytest.param(_redis, marks=pytest.mark.redis),

The fixture closes a saver that has ``close()`` when the test ends.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pydantic
import pytest

from durable_graph.errors import GraphValueError, SerializationError
from durable_graph.store.base import (
    ERROR,
    INTERRUPT,
    RESUME,
    BaseCheckpointSaver,
    Checkpoint,
    CheckpointTuple,
    PendingWrite,
    new_checkpoint_id,
)
from durable_graph.store.memory import InMemorySaver
from durable_graph.store.serde import Serializer, TypedSerializer
from durable_graph.store.sqlite import SqliteSaver

Factory = Callable[[Path, Serializer | None], BaseCheckpointSaver]


def _memory(tmp_path: Path, serde: Serializer | None) -> BaseCheckpointSaver:
    return InMemorySaver(serde=serde)


def _sqlite(tmp_path: Path, serde: Serializer | None) -> BaseCheckpointSaver:
    return SqliteSaver(tmp_path / "checkpoints.db", serde=serde)


def _redis(tmp_path: Path, serde: Serializer | None) -> BaseCheckpointSaver:
    import os

    from durable_graph.store.redis import RedisSaver

    # The conftest sets both for tests marked redis and deletes the prefix's keys after.
    url = os.environ["DURABLE_GRAPH_TEST_REDIS_URL"]
    prefix = f"{os.environ['DURABLE_GRAPH_TEST_REDIS_PREFIX']}-{uuid.uuid4().hex[:8]}"
    return RedisSaver.from_url(url, prefix=prefix, serde=serde)


FACTORIES: dict[str, Any] = {
    "memory": pytest.param(_memory),
    "sqlite": pytest.param(_sqlite),
    "redis": pytest.param(_redis, marks=pytest.mark.redis),
}


# --- fixtures and helpers ----------------------------------------------------


@pytest.fixture(
    params=[pytest.param(name, marks=p.marks) for name, p in FACTORIES.items()],
    ids=list(FACTORIES),
)
def saver_kind(request: pytest.FixtureRequest) -> str:
    """The FACTORIES key of the saver under test."""
    return str(request.param)


@pytest.fixture
def make_saver(saver_kind: str, tmp_path: Path) -> Iterator[Callable[..., BaseCheckpointSaver]]:
    """Builds savers of the kind under test (each in its own folder); closes them after."""
    factory: Factory = FACTORIES[saver_kind].values[0]
    made: list[BaseCheckpointSaver] = []

    def make(serde: Serializer | None = None) -> BaseCheckpointSaver:
        folder = tmp_path / f"saver{len(made)}"
        folder.mkdir()
        made.append(factory(folder, serde))
        return made[-1]

    yield make
    for saver in made:
        close = getattr(saver, "close", None)
        if close is not None:
            close()


@pytest.fixture
def saver(make_saver: Callable[..., BaseCheckpointSaver]) -> BaseCheckpointSaver:
    """A fresh saver with the default serializer."""
    return make_saver()


def cfg(thread: str = "t1", ns: str | None = None, checkpoint_id: str | None = None) -> dict:
    conf: dict[str, Any] = {"thread_id": thread}
    if ns is not None:
        conf["checkpoint_ns"] = ns
    if checkpoint_id is not None:
        conf["checkpoint_id"] = checkpoint_id
    return {"configurable": conf}


def make_cp(
    values: dict[str, Any], versions: dict[str, int] | None = None, **kw: Any
) -> Checkpoint:
    return Checkpoint(
        id=kw.get("id") or new_checkpoint_id(),
        ts=kw.get("ts", "2024-01-01T00:00:00+00:00"),
        channel_values=values,
        channel_versions=versions if versions is not None else dict.fromkeys(values, 1),
        versions_seen=kw.get("seen", {}),
    )


def put_chain(saver: BaseCheckpointSaver, n: int, thread: str = "t1", ns: str = "") -> list[dict]:
    """Put ``n`` checkpoints, each the child of the previous; returns their configs."""
    configs: list[dict] = []
    parent = cfg(thread, ns)
    for step in range(n):
        cp = make_cp({"count": step}, {"count": step + 1})
        meta = {"source": "loop" if step else "input", "step": step, "parity": step % 2}
        parent = saver.put(parent, cp, meta, {"count": step + 1})
        configs.append(parent)
    return configs


def ids(tuples: Any) -> list[str]:
    return [t.checkpoint.id for t in tuples]


def cid(config: dict) -> str:
    return str(config["configurable"]["checkpoint_id"])


# --- values ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Point:
    """An importable dataclass, so the serializer stores it without pickle."""

    x: int
    y: list[int]


class Inner(pydantic.BaseModel):
    tags: list[str]


class Model(pydantic.BaseModel):
    name: str
    inner: Inner
    when: dt.datetime


VALUES: dict[str, Any] = {
    "int": 42,
    "big_negative": -(2**40),
    "float": 1.5,
    "str": "héllo",
    "bool": True,
    "none": None,
    "nested": {"a": [1, {"b": [2, 3]}], "c": {"d": {}}},
    "tuple": (1, "two", (3,)),
    "set": {1, 2, 3},
    "datetime": dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=dt.UTC),
    "naive_datetime": dt.datetime(2024, 5, 6, 7, 8, 9),
    "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
    "bytes": b"\x00\xffbinary",
    "empty_bytes": b"",
    "dataclass": Point(1, [2, 3]),
    "pydantic": Model(
        name="m", inner=Inner(tags=["a"]), when=dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    ),
    "list_of_tuples": [(1, 2), (3, 4)],
}


def test_round_trip_every_value_kind(saver: BaseCheckpointSaver) -> None:
    cp = make_cp(VALUES, seen={"node": {"int": 1}})
    meta = {"source": "input", "step": -1, "parents": {"": "abc"}}
    config = saver.put(cfg(), cp, meta, dict.fromkeys(VALUES, 1))
    assert config == cfg("t1", "", cp.id)

    got = saver.get_tuple(config)
    assert got is not None
    assert got.checkpoint.channel_values == VALUES
    for name, value in VALUES.items():
        assert type(got.checkpoint.channel_values[name]) is type(value), name
    assert got.checkpoint.channel_versions == cp.channel_versions
    assert got.checkpoint.versions_seen == {"node": {"int": 1}}
    assert (got.checkpoint.id, got.checkpoint.ts, got.checkpoint.v) == (cp.id, cp.ts, cp.v)
    assert got.metadata == meta
    assert got.config == config
    assert got.parent_config is None
    assert got.pending_writes == []


def test_saved_state_does_not_alias_caller_or_reader(
    saver: BaseCheckpointSaver, saver_kind: str, request: pytest.FixtureRequest
) -> None:
    values = {"items": [1, 2]}
    meta: dict[str, Any] = {"source": "input", "step": -1, "parents": {"": "p"}}
    config = saver.put(cfg(), make_cp(values), meta, {"items": 1})
    values["items"].append(3)
    meta["parents"][""] = "changed"
    first = saver.get_tuple(config)
    assert first is not None
    first.metadata["step"] = 99
    first.checkpoint.channel_values["items"].append(4)
    again = saver.get_tuple(config)
    assert again is not None
    assert again.checkpoint.channel_values == {"items": [1, 2]}
    assert again.metadata == {"source": "input", "step": -1, "parents": {"": "p"}}


def test_put_is_idempotent_for_the_same_checkpoint_id(saver: BaseCheckpointSaver) -> None:
    cp = make_cp({"a": 1})
    saver.put(cfg(), cp, {"step": 0}, {"a": 1})
    saver.put(cfg(), cp, {"step": 0}, {"a": 1})
    assert ids(saver.list(cfg())) == [cp.id]


# --- reading -----------------------------------------------------------------


def test_get_tuple_latest_and_by_id(saver: BaseCheckpointSaver) -> None:
    configs = put_chain(saver, 3)
    latest = saver.get_tuple(cfg())
    assert latest is not None
    assert latest.config == configs[-1]
    assert latest.checkpoint.channel_values == {"count": 2}
    first = saver.get_tuple(configs[0])
    assert first is not None
    assert first.checkpoint.channel_values == {"count": 0}
    assert first.metadata["step"] == 0


def test_get_tuple_missing_returns_none(saver: BaseCheckpointSaver) -> None:
    assert saver.get_tuple(cfg()) is None
    put_chain(saver, 1)
    assert saver.get_tuple(cfg("other")) is None
    assert saver.get_tuple(cfg(checkpoint_id=new_checkpoint_id())) is None


def test_config_without_thread_id_is_refused(saver: BaseCheckpointSaver) -> None:
    with pytest.raises(GraphValueError, match="thread id"):
        saver.get_tuple({"configurable": {}})
    with pytest.raises(GraphValueError):
        saver.put({}, make_cp({}), {}, {})


def test_parent_config_chain(saver: BaseCheckpointSaver) -> None:
    configs = put_chain(saver, 4)
    walked: list[dict] = []
    current: CheckpointTuple | None = saver.get_tuple(cfg())
    while current is not None:
        walked.append(current.config)
        current = saver.get_tuple(current.parent_config) if current.parent_config else None
    assert walked == configs[::-1]


# --- listing -----------------------------------------------------------------


def test_list_newest_first(saver: BaseCheckpointSaver) -> None:
    configs = put_chain(saver, 5)
    assert ids(saver.list(cfg())) == [cid(c) for c in reversed(configs)]
    assert [t.checkpoint.channel_values["count"] for t in saver.list(cfg())] == [4, 3, 2, 1, 0]


def test_list_filter_before_limit(saver: BaseCheckpointSaver) -> None:
    configs = put_chain(saver, 6)
    c = [cid(config) for config in configs]
    assert ids(saver.list(cfg(), filter={"parity": 0})) == [c[4], c[2], c[0]]
    assert ids(saver.list(cfg(), filter={"source": "loop", "parity": 1})) == [c[5], c[3], c[1]]
    assert ids(saver.list(cfg(), filter={"missing": 1})) == []
    assert ids(saver.list(cfg(), before=configs[3])) == [c[2], c[1], c[0]]
    assert ids(saver.list(cfg(), limit=2)) == [c[5], c[4]]
    assert ids(saver.list(cfg(), limit=0)) == []
    combined = saver.list(cfg(), filter={"parity": 1}, before=configs[5], limit=1)
    assert ids(combined) == [c[3]]


def test_list_all_threads_with_config_none(saver: BaseCheckpointSaver) -> None:
    a = put_chain(saver, 2, thread="a")
    b = put_chain(saver, 2, thread="b")
    everything = [cid(config) for config in a + b][::-1]
    assert ids(saver.list(None)) == everything
    threads = [t.config["configurable"]["thread_id"] for t in saver.list(None, limit=3)]
    assert threads == ["b", "b", "a"]
    assert ids(saver.list(None, filter={"step": 0})) == [everything[1], everything[3]]


def test_list_pages_through_many_checkpoints(saver: BaseCheckpointSaver) -> None:
    configs = put_chain(saver, 230)
    assert ids(saver.list(cfg())) == [cid(c) for c in reversed(configs)]
    assert len(ids(saver.list(cfg(), filter={"parity": 1}, limit=150))) == 115
    assert len(ids(saver.list(cfg(), filter={"parity": 1}, limit=100))) == 100


def test_open_list_iterator_does_not_block_writers(
    saver: BaseCheckpointSaver, saver_kind: str, request: pytest.FixtureRequest
) -> None:
    put_chain(saver, 3)
    iterator = saver.list(cfg())
    next(iterator)
    writer = threading.Thread(target=put_chain, args=(saver, 1, "other"), daemon=True)
    writer.start()
    try:
        writer.join(timeout=3)
        assert not writer.is_alive(), "put blocked while a list iterator was open"
    finally:
        iterator.close()  # type: ignore[attr-defined]
        writer.join(timeout=10)
    assert saver.get_tuple(cfg("other")) is not None


# --- isolation ---------------------------------------------------------------


def test_namespaces_isolated(saver: BaseCheckpointSaver) -> None:
    root = saver.put(cfg(ns=""), make_cp({"x": "root"}), {"step": 0}, {"x": 1})
    child = saver.put(cfg(ns="sub:1"), make_cp({"x": "child"}), {"step": 0}, {"x": 1})
    got_root, got_child = saver.get_tuple(cfg(ns="")), saver.get_tuple(cfg(ns="sub:1"))
    assert got_root is not None and got_child is not None
    assert got_root.checkpoint.channel_values == {"x": "root"}
    assert got_child.checkpoint.channel_values == {"x": "child"}
    assert got_child.config["configurable"]["checkpoint_ns"] == "sub:1"
    assert ids(saver.list(cfg(ns="sub:1"))) == [cid(child)]
    assert ids(saver.list(cfg(ns=""))) == [cid(root)]
    # A config without checkpoint_ns lists every namespace of the thread.
    assert ids(saver.list(cfg())) == [cid(child), cid(root)]
    saver.put_writes(child, [("x", "w")], "task")
    assert saver.get_tuple(root).pending_writes == []  # type: ignore[union-attr]


def test_threads_isolated(saver: BaseCheckpointSaver) -> None:
    saver.put(cfg("a"), make_cp({"x": "from a"}), {"step": 0}, {"x": 1})
    saver.put(cfg("b"), make_cp({"x": "from b"}), {"step": 0}, {"x": 1})
    got_a, got_b = saver.get_tuple(cfg("a")), saver.get_tuple(cfg("b"))
    assert got_a is not None and got_b is not None
    assert got_a.checkpoint.channel_values == {"x": "from a"}
    assert got_b.checkpoint.channel_values == {"x": "from b"}
    assert [t.config["configurable"]["thread_id"] for t in saver.list(cfg("a"))] == ["a"]


# --- pending writes ----------------------------------------------------------


def test_pending_writes_keep_first_value_per_slot(saver: BaseCheckpointSaver) -> None:
    config = put_chain(saver, 1)[0]
    saver.put_writes(config, [("a", 1), ("b", 2)], "task")
    saver.put_writes(config, [("a", 10), ("b", 20), ("c", 30)], "task")
    got = saver.get_tuple(config)
    assert got is not None
    assert got.pending_writes == [
        PendingWrite("task", "a", 1),
        PendingWrite("task", "b", 2),
        PendingWrite("task", "c", 30),
    ]
    assert all(isinstance(w, PendingWrite) for w in got.pending_writes)


@pytest.mark.parametrize("channel", [ERROR, INTERRUPT, RESUME])
def test_special_writes_replace_their_slot(saver: BaseCheckpointSaver, channel: str) -> None:
    config = put_chain(saver, 1)[0]
    saver.put_writes(config, [(channel, "first")], "task")
    saver.put_writes(config, [(channel, "second")], "task")
    saver.put_writes(config, [(channel, "other task")], "task2")
    got = saver.get_tuple(config)
    assert got is not None
    assert got.pending_writes == [
        PendingWrite("task", channel, "second"),
        PendingWrite("task2", channel, "other task"),
    ]


def test_writes_ordered_by_task_then_index(saver: BaseCheckpointSaver) -> None:
    config = put_chain(saver, 1)[0]
    saver.put_writes(config, [("z", 0), ("y", 1), ("x", 2)], "task-b")
    saver.put_writes(config, [("m", "one"), (ERROR, ("boom",))], "task-a")
    got = saver.get_tuple(config)
    assert got is not None
    assert [(w.task_id, w.channel) for w in got.pending_writes] == [
        ("task-a", ERROR),  # fixed slot -1 sorts before index 0
        ("task-a", "m"),
        ("task-b", "z"),
        ("task-b", "y"),
        ("task-b", "x"),
    ]
    assert got.pending_writes[0].value == ("boom",)


def test_writes_belong_to_one_checkpoint(saver: BaseCheckpointSaver) -> None:
    first, second = put_chain(saver, 2)
    saver.put_writes(first, [("a", 1)], "task")
    assert saver.get_tuple(second).pending_writes == []  # type: ignore[union-attr]
    assert saver.get_tuple(first).pending_writes == [  # type: ignore[union-attr]
        PendingWrite("task", "a", 1)
    ]


def test_put_writes_needs_checkpoint_id(saver: BaseCheckpointSaver) -> None:
    with pytest.raises(ValueError, match="checkpoint_id"):
        saver.put_writes(cfg(), [("a", 1)], "task")


# --- blobs -------------------------------------------------------------------


class CountingSerializer:
    """Wraps TypedSerializer and records what it was asked to encode."""

    def __init__(self) -> None:
        self.inner = TypedSerializer()
        self.encoded: list[Any] = []

    def dumps_typed(self, obj: Any) -> tuple[str, bytes]:
        self.encoded.append(obj)
        return self.inner.dumps_typed(obj)

    def loads_typed(self, data: tuple[str, bytes]) -> Any:
        return self.inner.loads_typed(data)


def test_unchanged_channels_reuse_their_blob(
    make_saver: Callable[..., BaseCheckpointSaver],
) -> None:
    serde = CountingSerializer()
    saver = make_saver(serde=serde)
    first = saver.put(cfg(), make_cp({"big": "v1", "n": 1}), {}, {"big": 1, "n": 1})
    assert sorted(serde.encoded, key=str) == [1, "v1"]
    serde.encoded.clear()
    second = saver.put(first, make_cp({"big": "v1", "n": 2}, {"big": 1, "n": 2}), {}, {"n": 2})
    assert serde.encoded == [2], "only the changed channel is serialized"
    # A checkpoint may omit an unchanged value: it is read through its version.
    third = saver.put(second, make_cp({}, {"big": 1, "n": 2}), {}, {})
    for config, n in ((second, 2), (third, 2), (first, 1)):
        got = saver.get_tuple(config)
        assert got is not None
        assert got.checkpoint.channel_values == {"big": "v1", "n": n}


def test_delete_thread(saver: BaseCheckpointSaver) -> None:
    cp = make_cp({"x": "old"})
    config = saver.put(cfg("gone"), cp, {}, {"x": 1})
    saver.put_writes(config, [("x", "w")], "task")
    put_chain(saver, 2, thread="kept")
    saver.delete_thread("gone")
    assert saver.get_tuple(cfg("gone")) is None
    assert ids(saver.list(cfg("gone"))) == []
    assert len(ids(saver.list(cfg("kept")))) == 2
    # Blobs and writes went too: the same ids now hold only the new data.
    saver.put(cfg("gone"), make_cp({"x": "new"}, id=cp.id), {}, {"x": 1})
    got = saver.get_tuple(cfg("gone"))
    assert got is not None
    assert got.checkpoint.channel_values == {"x": "new"}
    assert got.pending_writes == []


# --- failures ----------------------------------------------------------------


def test_unserializable_value_keeps_previous_checkpoint(
    make_saver: Callable[..., BaseCheckpointSaver],
) -> None:
    saver = make_saver(serde=TypedSerializer(pickle_fallback=False))
    first = saver.put(cfg(), make_cp({"ok": 1, "other": "a"}), {"step": 0}, {"ok": 1, "other": 1})
    versions = {"ok": 2, "other": 2, "bad": 1}
    bad = make_cp({"ok": 2, "other": "b", "bad": threading.Lock()}, versions)
    with pytest.raises(SerializationError, match="'bad'"):
        saver.put(first, bad, {"step": 1}, versions)
    latest = saver.get_tuple(cfg())
    assert latest is not None
    assert latest.config == first
    assert latest.checkpoint.channel_values == {"ok": 1, "other": "a"}
    assert ids(saver.list(cfg())) == [cid(first)]
    # No blob of the failed put was kept: the same versions now take new values.
    retry = make_cp({"ok": "two", "other": "bee"}, {"ok": 2, "other": 2})
    saver.put(first, retry, {"step": 1}, {"ok": 2, "other": 2})
    got = saver.get_tuple(cfg())
    assert got is not None
    assert got.checkpoint.channel_values == {"ok": "two", "other": "bee"}


def test_unserializable_write_stores_nothing(
    make_saver: Callable[..., BaseCheckpointSaver],
) -> None:
    saver = make_saver(serde=TypedSerializer(pickle_fallback=False))
    config = saver.put(cfg(), make_cp({"a": 1}), {}, {"a": 1})
    with pytest.raises(SerializationError):
        saver.put_writes(config, [("good", 1), ("bad", lambda: None)], "task")
    assert saver.get_tuple(config).pending_writes == []  # type: ignore[union-attr]


# --- concurrency -------------------------------------------------------------


def run_threads(count: int, target: Callable[[int], None]) -> None:
    """Start ``count`` threads together on ``target(n)``; re-raise the first error."""
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def run(n: int) -> None:
        try:
            barrier.wait(timeout=10)
            target(n)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a worker thread hung"
    if errors:
        raise errors[0]


def test_concurrent_put_writes_all_land(saver: BaseCheckpointSaver) -> None:
    config = put_chain(saver, 1)[0]

    def worker(n: int) -> None:
        for i in range(5):
            saver.put_writes(config, [(f"ch{i}", (n, i)), ("shared", n)], f"task-{n}-{i}")

    run_threads(8, worker)
    got = saver.get_tuple(config)
    assert got is not None
    assert len(got.pending_writes) == 8 * 5 * 2
    expected = {(f"task-{n}-{i}", f"ch{i}", (n, i)) for n in range(8) for i in range(5)}
    assert expected <= {tuple(w) for w in got.pending_writes}


def test_concurrent_puts_on_many_threads(saver: BaseCheckpointSaver) -> None:
    def worker(n: int) -> None:
        put_chain(saver, 5, thread=f"thread-{n}")

    run_threads(8, worker)
    assert len(ids(saver.list(None))) == 40
    for n in range(8):
        latest = saver.get_tuple(cfg(f"thread-{n}"))
        assert latest is not None
        assert latest.checkpoint.channel_values == {"count": 4}


# --- async -------------------------------------------------------------------


def test_async_methods_match_sync(saver: BaseCheckpointSaver) -> None:
    async def scenario() -> tuple[Any, ...]:
        first = await saver.aput(cfg(), make_cp({"a": (1, 2)}), {"step": 0}, {"a": 1})
        second = await saver.aput(first, make_cp({"a": {3}}, {"a": 2}), {"step": 1}, {"a": 2})
        await saver.aput_writes(second, [("a", "w"), (ERROR, "e")], "task")
        await saver.aput_writes(second, [("a", "ignored"), (ERROR, "e2")], "task")
        latest = await saver.aget_tuple(cfg())
        by_id = await saver.aget_tuple(first)
        listed = [t async for t in saver.alist(cfg())]
        limited = [t async for t in saver.alist(cfg(), filter={"step": 0}, limit=5)]
        return first, second, latest, by_id, listed, limited

    first, second, latest, by_id, listed, limited = asyncio.run(scenario())
    assert latest == saver.get_tuple(cfg())
    assert latest.config == second
    assert latest.checkpoint.channel_values == {"a": {3}}
    assert latest.pending_writes == [
        PendingWrite("task", ERROR, "e2"),
        PendingWrite("task", "a", "w"),
    ]
    assert by_id.checkpoint.channel_values == {"a": (1, 2)}
    assert listed == list(saver.list(cfg()))
    assert ids(listed) == [cid(second), cid(first)]
    assert ids(limited) == [cid(first)]
    asyncio.run(saver.adelete_thread("t1"))
    assert saver.get_tuple(cfg()) is None


# --- retention (LangGraph's signatures: prune, copy_thread, delete_for_runs) --


def _history(saver: BaseCheckpointSaver, thread: str, ns: str | None = None) -> list[str]:
    return ids(saver.list(cfg(thread, ns)))


def test_prune_keeps_latest_per_namespace_with_its_values_and_writes(
    saver: BaseCheckpointSaver,
) -> None:
    # "old" is written once at the first checkpoint and never again: the kept
    # latest checkpoint still reads it through its version map.
    first = make_cp({"old": "kept", "n": 0})
    parent = saver.put(cfg("t1", ""), first, {"step": 0}, {"old": 1, "n": 1})
    for n in range(1, 4):
        cp = make_cp({"n": n}, {"old": 1, "n": n + 1})
        parent = saver.put(parent, cp, {"step": n}, {"n": n + 1})
    saver.put_writes(parent, [(INTERRUPT, ["parked"])], "task-a")
    child = put_chain(saver, 3, ns="child:1")
    removed = saver.prune(["t1"])
    assert removed == 3 + 2
    assert _history(saver, "t1", "") == [cid(parent)]
    assert _history(saver, "t1", "child:1") == [cid(child[-1])]
    latest = saver.get_tuple(cfg("t1", ""))
    assert latest is not None
    assert latest.checkpoint.channel_values == {"old": "kept", "n": 3}
    assert [(w.task_id, w.channel, w.value) for w in latest.pending_writes] == [
        ("task-a", INTERRUPT, ["parked"])
    ]


def test_prune_keep_last_and_delete_strategy(saver: BaseCheckpointSaver) -> None:
    configs = put_chain(saver, 5, thread="a")
    put_chain(saver, 2, thread="b")
    assert saver.prune("a", keep_last=2) == 3
    assert _history(saver, "a") == [cid(configs[4]), cid(configs[3])]
    assert saver.get_tuple(configs[3]).checkpoint.channel_values == {"count": 3}  # type: ignore[union-attr]
    saver.prune(["b"], strategy="delete")
    assert _history(saver, "b") == []
    assert len(_history(saver, "a")) == 2


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"strategy": "keep_oldest"}, "unknown prune strategy 'keep_oldest'"),
        ({"keep_last": 0}, "keep_last must be an int of at least 1"),
        ({"keep_last": "2"}, "keep_last must be an int of at least 1"),
        ({"strategy": "delete", "keep_last": 2}, "cannot go with strategy='delete'"),
    ],
)
def test_prune_refuses_bad_arguments_and_deletes_nothing(
    saver: BaseCheckpointSaver, kwargs: dict[str, Any], words: str
) -> None:
    put_chain(saver, 3)
    with pytest.raises(GraphValueError, match=words):
        saver.prune(["t1"], **kwargs)
    assert len(_history(saver, "t1")) == 3


def test_copy_thread_copies_history_values_and_writes(saver: BaseCheckpointSaver) -> None:
    configs = put_chain(saver, 3, thread="src")
    child = put_chain(saver, 2, thread="src", ns="child:x")
    saver.put_writes(configs[-1], [("count", 99), (INTERRUPT, ["ask"])], "task-1")
    saver.copy_thread("src", "dst")
    assert _history(saver, "dst", "") == _history(saver, "src", "")
    assert _history(saver, "dst", "child:x") == [cid(c) for c in reversed(child)]
    copied = saver.get_tuple(cfg("dst", ""))
    original = saver.get_tuple(cfg("src", ""))
    assert copied is not None and original is not None
    assert copied.checkpoint.channel_values == original.checkpoint.channel_values
    assert copied.parent_config is not None
    assert cid(copied.parent_config) == cid(configs[1])
    assert sorted(copied.pending_writes) == sorted(original.pending_writes)
    assert copied.metadata == original.metadata
    with pytest.raises(GraphValueError, match="same thread"):
        saver.copy_thread("src", "src")


def test_delete_for_runs_deletes_only_those_runs(saver: BaseCheckpointSaver) -> None:
    parent = cfg("t1", "")
    kept: list[str] = []
    for step, run in enumerate(["r1", "r2", "r1", "r3"]):
        parent = saver.put(parent, make_cp({"n": step}), {"step": step, "run_id": run}, {"n": 1})
        if run != "r1":
            kept.append(cid(parent))
    other = saver.put(cfg("t2", ""), make_cp({"n": 0}), {"run_id": "r1"}, {"n": 1})
    saver.put_writes(other, [("n", 5)], "task")
    saver.delete_for_runs(["r1"])
    assert _history(saver, "t1") == list(reversed(kept))
    assert saver.get_tuple(other) is None
    saver.delete_for_runs([])
    assert _history(saver, "t1") == list(reversed(kept))
