"""Bad input at the store layer: signed values and records bound to their place.

Someone who can write to the store (the Redis server, the SQLite file) but has no
signing key moves a validly signed value from one thread to another, swaps two
channels' values within a thread, or points a checkpoint at an older version of a
channel. Each is refused when the thread is read, with a ``SignatureError`` that
names the thread, the channel and the checkpoint, and no node runs. Real SQLite
files and the real Redis; the tampering is done with plain SQL and Redis commands.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import ormsgpack
import pytest
import redis

from durable_graph import END, START, SqliteSaver, StateGraph
from durable_graph.errors import (
    CommitConflictError,
    GraphValueError,
    SerializationError,
    SignatureError,
)
from durable_graph.store.base import (
    EXTENDS_LATEST,
    BaseCheckpointSaver,
    Checkpoint,
    empty_checkpoint,
    new_checkpoint_id,
)
from durable_graph.store.codec import SignedSerializer, SigningCodec
from durable_graph.store.redis import RedisSaver, retention
from durable_graph.store.redis.keys import ThreadKeys, blob_field
from durable_graph.store.redis.records import (
    pack_record,
    record_refs,
    record_versions,
    unpack_record,
)
from durable_graph.store.serde import TypedSerializer
from durable_graph.store.sqlite_row import pack_id
from tests.redis_records import read_record, read_value, write_record, write_value

KEY = "tamper-test-secret-" + "0" * 40


class State(TypedDict, total=False):
    a: str
    b: str
    n: int


def signed() -> SignedSerializer:
    return SignedSerializer(TypedSerializer(), SigningCodec.from_secret(KEY))


def build(saver: BaseCheckpointSaver, runs: list[str]) -> Any:
    def bump(state: State) -> State:
        runs.append("bump")
        n = state.get("n", 0) + 1
        return {"a": f"a{n}", "b": f"b{n}", "n": n}

    g = StateGraph(State)
    g.add_node("bump", bump)
    g.add_edge(START, "bump")
    g.add_edge("bump", END)
    return g.compile(checkpointer=saver)


def cfg(thread: str) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread}}


@dataclass
class Raw:
    """Raw access to one store, as an attacker with write access but no key has it."""

    saver: BaseCheckpointSaver
    get_value: Callable[[str, str, int], bytes]
    set_value: Callable[[str, str, int, bytes], None]
    point: Callable[[str, str, str, int], None]
    """(thread, checkpoint id, channel, version): edit the record's version of a channel."""
    strip_sig: Callable[[str, str], None]
    in_field: Callable[[str, str, int], bool] = lambda thread, ch, v: True
    """Whether a value is stored on its own (else in a signed record: redis-v9 keeps a
    small value in the record of the checkpoint that changed it, so moving it edits the
    record, and the refusal names the checkpoint, not the channel)."""


def _sqlite_raw(path: Path) -> Raw:
    saver = SqliteSaver(path, serde=signed())

    def sql(query: str, *args: Any) -> list[Any]:
        with sqlite3.connect(path) as conn:
            return conn.execute(query, args).fetchall()

    by_thread = "thread_id=(SELECT key FROM thread_keys WHERE thread_id=?)"  # schema 12

    def get_value(thread: str, ch: str, v: int) -> bytes:
        (row,) = sql(f"SELECT blob FROM blobs WHERE {by_thread} AND channel=? AND version=?",
                     thread, ch, v)
        return bytes(row[0])

    def set_value(thread: str, ch: str, v: int, data: bytes) -> None:
        sql(f"UPDATE blobs SET blob=? WHERE {by_thread} AND channel=? AND version=?",
            data, thread, ch, v)

    def point(thread: str, cid: str, ch: str, v: int) -> None:
        # The record rewritten in its readable (JSON) form, versions seen too: schema 6
        # names a seen channel by its index among the row's versions.
        found = saver.get_tuple({"configurable": {"thread_id": thread, "checkpoint_id": cid}})
        assert found is not None
        versions = {**found.checkpoint.channel_versions, ch: v}
        sql("UPDATE checkpoints SET channel_versions=?, versions_seen=? "
            f"WHERE {by_thread} AND checkpoint_id=?",
            json.dumps(versions, separators=(",", ":"), sort_keys=True),
            json.dumps(found.checkpoint.versions_seen, sort_keys=True), thread, pack_id(cid))

    def strip_sig(thread: str, cid: str) -> None:
        sql(f"UPDATE checkpoints SET sig=NULL WHERE {by_thread} AND checkpoint_id=?", thread,
            pack_id(cid))

    return Raw(saver, get_value, set_value, point, strip_sig)


def _redis_raw(url: str, prefix: str) -> Raw:
    saver = RedisSaver.from_url(url, prefix=prefix, serde=signed())
    client = redis.Redis.from_url(url)

    def nsk(thread: str) -> Any:
        return ThreadKeys(prefix, thread).ns("")

    def get_value(thread: str, ch: str, v: int) -> bytes:
        raw = read_value(client, nsk(thread), blob_field(ch, v)) or \
            kept_in_records(thread, blob_field(ch, v))
        assert raw is not None
        return raw

    def in_field(thread: str, ch: str, v: int) -> bool:
        return read_value(client, nsk(thread), blob_field(ch, v)) is not None

    def set_value(thread: str, ch: str, v: int, data: bytes) -> None:
        field = blob_field(ch, v)
        if in_field(thread, ch, v):
            write_value(client, nsk(thread), field, data)
            return
        for cid in ids(thread):  # kept in records (redis-v9)
            fields = record(thread, cid)
            refs = record_refs(fields)
            if dict(refs).get(field) is not None:
                fields["refs"] = ormsgpack.packb(
                    [f if raw is None else [f, (data if f == field else raw).decode("latin-1")]
                     for f, raw in refs])
                store(thread, cid, fields)

    def ids(thread: str) -> list[str]:
        return [cid for cid, _ in retention.ids_of(saver._conn, prefix, thread, "")]

    def record(thread: str, cid: str) -> dict[str, bytes]:
        raw = read_record(client, nsk(thread), cid)
        assert raw is not None
        return unpack_record(raw, cid)

    def store(thread: str, cid: str, fields: dict[str, bytes]) -> None:
        write_record(client, nsk(thread), cid, pack_record(fields, cid))

    def kept_in_records(thread: str, field: str) -> bytes | None:
        """The stored bytes of a value some record of the thread keeps (redis-v9)."""
        for cid in ids(thread):
            found = dict(record_refs(record(thread, cid))).get(field)
            if found is not None:
                return found
        return None

    def point(thread: str, cid: str, ch: str, v: int) -> None:
        fields = record(thread, cid)
        versions = {**record_versions(fields), ch: v}
        if "versions" in fields:  # kept only when refs cannot give them back (redis-v7)
            fields["versions"] = json.dumps(versions, separators=(",", ":")).encode()
        kept = dict(record_refs(fields))
        kept[blob_field(ch, v)] = kept_in_records(thread, blob_field(ch, v))
        refs = [blob_field(c, ver) for c, ver in sorted(versions.items())]
        fields["refs"] = ormsgpack.packb(
            [f if kept.get(f) is None else [f, kept[f].decode("latin-1")] for f in refs])
        store(thread, cid, fields)

    def strip_sig(thread: str, cid: str) -> None:
        fields = record(thread, cid)
        del fields["sig"]
        store(thread, cid, fields)

    return Raw(saver, get_value, set_value, point, strip_sig, in_field)


@pytest.fixture(params=["sqlite", "redis"])
def raw(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Raw]:
    if request.param == "sqlite":
        yield _sqlite_raw(tmp_path / "signed.sqlite")
    else:
        url = request.getfixturevalue("redis_url")
        yield _redis_raw(url, request.getfixturevalue("redis_prefix"))


def _versions(saver: BaseCheckpointSaver, thread: str) -> tuple[str, dict[str, int]]:
    saved = saver.get_tuple(cfg(thread))
    assert saved is not None
    return saved.checkpoint.id, dict(saved.checkpoint.channel_versions)


def _refused(raw: Raw, thread: str, runs: list[str], *words: str) -> None:
    """Reading the thread fails naming the place; resuming or continuing runs nothing."""
    graph = build(raw.saver, runs)
    before = list(runs)
    with pytest.raises(SignatureError) as caught:
        graph.get_state(cfg(thread))
    for word in (repr(thread), *words):
        assert word in str(caught.value)
    with pytest.raises(SignatureError):
        graph.invoke(None, cfg(thread))
    with pytest.raises(SignatureError):
        graph.invoke({"n": 10}, cfg(thread))
    assert runs == before  # nothing ran


def test_untampered_signed_threads_run_and_resume(raw: Raw) -> None:
    runs: list[str] = []
    graph = build(raw.saver, runs)
    assert graph.invoke({"n": 0}, cfg("t1")) == {"a": "a1", "b": "b1", "n": 1}
    assert graph.invoke({"n": 5}, cfg("t1")) == {"a": "a6", "b": "b6", "n": 6}
    assert graph.get_state(cfg("t1")).values["a"] == "a6"
    assert len(list(graph.get_state_history(cfg("t1")))) == 6


def test_a_value_moved_to_another_thread_is_refused(raw: Raw) -> None:
    runs: list[str] = []
    graph = build(raw.saver, runs)
    graph.invoke({"n": 0}, cfg("victim"))
    graph.invoke({"n": 40}, cfg("source"))
    cid, versions = _versions(raw.saver, "victim")
    _, src_versions = _versions(raw.saver, "source")
    named = ["'a'"] if raw.in_field("victim", "a", versions["a"]) else []
    raw.set_value("victim", "a", versions["a"], raw.get_value("source", "a", src_versions["a"]))
    _refused(raw, "victim", runs, *named, cid)


def test_two_channels_swapped_within_a_thread_are_refused(raw: Raw) -> None:
    runs: list[str] = []
    graph = build(raw.saver, runs)
    graph.invoke({"n": 0}, cfg("t"))
    cid, v = _versions(raw.saver, "t")
    named = ["'a'"] if raw.in_field("t", "a", v["a"]) else []
    a, b = raw.get_value("t", "a", v["a"]), raw.get_value("t", "b", v["b"])
    raw.set_value("t", "a", v["a"], b)
    raw.set_value("t", "b", v["b"], a)
    _refused(raw, "t", runs, *named, cid)


def _point_latest_at_an_older_a(raw: Raw, runs: list[str]) -> str:
    """Run twice, then edit the latest record's version of ``a`` back to the first run's."""
    graph = build(raw.saver, runs)
    graph.invoke({"n": 0}, cfg("t"))
    _, old = _versions(raw.saver, "t")
    graph.invoke({"n": 5}, cfg("t"))
    cid, new = _versions(raw.saver, "t")
    assert new["a"] != old["a"]
    raw.point("t", cid, "a", old["a"])  # the old value is still stored, validly signed
    return cid


def test_a_checkpoint_pointed_at_an_older_version_is_refused(raw: Raw) -> None:
    runs: list[str] = []
    cid = _point_latest_at_an_older_a(raw, runs)
    _refused(raw, "t", runs, cid, "versions")


def test_a_rollback_with_the_record_signature_removed_is_refused(raw: Raw) -> None:
    runs: list[str] = []
    cid = _point_latest_at_an_older_a(raw, runs)
    raw.strip_sig("t", cid)  # pretend to be a record written before records were signed
    _refused(raw, "t", runs, cid, "signature was removed")


def test_a_write_moved_to_another_task_is_refused(tmp_path: Path) -> None:
    saver = SqliteSaver(tmp_path / "w.sqlite", serde=signed())
    cp = empty_checkpoint()
    config = saver.put(cfg("t"), cp, {"source": "input", "step": -1}, {})
    saver.put_writes(config, [("a", "one"), ("b", "two")], "task-1")
    assert [w.value for w in saver.get_tuple(cfg("t")).pending_writes] == ["one", "two"]  # type: ignore[union-attr]
    with sqlite3.connect(tmp_path / "w.sqlite") as conn:
        conn.execute("UPDATE writes SET task_id='task-2'")
    with pytest.raises(SignatureError, match="task-2.*does not verify in slot 0"):
        saver.get_tuple(cfg("t"))


def test_sqlite_commit_is_compare_and_set_on_the_latest(tmp_path: Path) -> None:
    saver = SqliteSaver(tmp_path / "cas.sqlite")
    runs: list[str] = []
    graph = build(saver, runs)
    graph.invoke({"n": 0}, cfg("t"))
    stale = saver.get_tuple(cfg("t"))
    assert stale is not None
    graph.invoke({"n": 5}, cfg("t"))  # another writer moved the thread on
    latest_before = saver.get_tuple(cfg("t"))
    cp = stale.checkpoint
    child = Checkpoint(new_checkpoint_id(), cp.ts, cp.channel_values, cp.channel_versions,
                       cp.versions_seen)
    as_loop = {"configurable": {**stale.config["configurable"], EXTENDS_LATEST: True}}
    with pytest.raises(CommitConflictError, match="latest is"):
        saver.put(as_loop, child, {"source": "loop", "step": 9}, {})
    latest_after = saver.get_tuple(cfg("t"))
    assert latest_after is not None and latest_before is not None
    assert latest_after.checkpoint.id == latest_before.checkpoint.id
    assert saver.get_tuple({"configurable": {"thread_id": "t", "checkpoint_id": child.id}}) is None
    saver.put(stale.config, child, {"source": "loop", "step": 9}, {})  # a plain put, as LangGraph
    assert saver.get_tuple({"configurable": {"thread_id": "t", "checkpoint_id": child.id}})


# -- run records and run events (the distributed mode's records) ----------------------


def test_run_records_and_events_are_bound_to_their_thread_and_run(
    redis_url: str, redis_prefix: str
) -> None:
    from durable_graph.worker.events import RunEvents
    from durable_graph.worker.payload import seal

    saver = RedisSaver.from_url(redis_url, prefix=redis_prefix, serde=signed())
    client = redis.Redis.from_url(redis_url)
    record = seal(SigningCodec.from_secret(KEY), {"run": "of thread a"})
    saver.set_run("a", record)
    assert saver.get_run("a") == record
    stored = client.hget(ThreadKeys(redis_prefix, "a").record, "run")
    assert stored is not None and stored.startswith(b"bound:")
    client.hset(ThreadKeys(redis_prefix, "b").record, "run", stored)  # moved to thread b
    with pytest.raises(SignatureError, match="run record of thread 'b' does not verify"):
        saver.get_run("b")
    client.hset(ThreadKeys(redis_prefix, "b").record, "run", record)  # lifted out, bare
    with pytest.raises(SignatureError, match="lacks its thread binding"):
        saver.get_run("b")

    events = RunEvents(saver.conn, redis_prefix, saver.serde)
    events.publish("a", "run-1", "values", {"x": 1})
    assert [(m, p) for _, m, p in events.read("a", "run-1", block_ms=10)] == [("values", {"x": 1})]
    ((_, fields),) = client.xrange(events.key("a", "run-1"))
    client.xadd(events.key("a", "run-2"), fields)  # replayed into another run's stream
    with pytest.raises(SignatureError):
        list(events.read("a", "run-2", block_ms=10))


# -- the saver contract under careless calls: every saver, one table ---------------------


def _store(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> BaseCheckpointSaver:
    if kind == "memory":
        from durable_graph import InMemorySaver

        return InMemorySaver()
    if kind == "sqlite":
        return SqliteSaver(tmp_path / "rows.sqlite")
    return RedisSaver.from_url(request.getfixturevalue("redis_url"),
                               prefix=request.getfixturevalue("redis_prefix"))


def _seed(saver: BaseCheckpointSaver) -> dict[str, Any]:
    cp = Checkpoint(new_checkpoint_id(), "2026-01-01T00:00:00+00:00", {"a": "kept"}, {"a": 1},
                    {})
    config = saver.put(cfg("t"), cp, {"source": "input", "step": -1}, {"a": 1})
    saver.put_writes(config, [("a", "pending")], "task-1")
    return config


def _cp(values: dict[str, Any], versions: dict[str, int]) -> Checkpoint:
    return Checkpoint(new_checkpoint_id(), "2026-01-01T00:00:01+00:00", values, versions, {})


STORE_ROWS: list[tuple[str, set[str], Callable[[Any, dict[str, Any]], Any],
                       type[BaseException], str]] = [
    ("put_writes without a checkpoint id", {"memory", "sqlite", "redis"},
     lambda s, c: s.put_writes(cfg("t"), [("a", 1)], "task-2"),
     GraphValueError, "needs a config with a checkpoint_id"),
    ("a value without a version", {"memory", "sqlite", "redis"},
     lambda s, c: s.put(c, _cp({"a": 1, "b": 2}, {"a": 2}), {"step": 0}, {"a": 2}),
     GraphValueError, "channels without a version: ['b']"),
    ("a text version holding a NUL (SQLite lost its value)", {"memory", "sqlite", "redis"},
     lambda s, c: s.put(c, Checkpoint(new_checkpoint_id(), "2026-01-01T00:00:01+00:00",
                                      {"a": [1]}, {"a": "x\x00y"}, {}),
                        {"step": 0}, {"a": "x\x00y"}),
     GraphValueError, "text holding a NUL character"),
    ("a channel name holding a NUL (SQLite lost its value)", {"memory", "sqlite", "redis"},
     lambda s, c: s.put(c, _cp({"a\x00b": [1]}, {"a\x00b": 2}), {"step": 0}, {"a\x00b": 2}),
     GraphValueError, "NUL character in its name"),
    ("a text version holding a lone surrogate (no UTF-8 text)", {"memory", "sqlite", "redis"},
     lambda s, c: s.put(c, _cp({"a": [1]}, {"a": "\ud800"}),  # type: ignore[dict-item]
                        {"step": 0}, {"a": "\ud800"}),  # type: ignore[dict-item]
     GraphValueError, "lone surrogate, which no saver stores"),
    ("a checkpoint id holding a NUL (Redis's id pages end an id there)",
     {"memory", "sqlite", "redis"},
     lambda s, c: s.put(c, dataclasses.replace(_cp({"a": [1]}, {"a": 2}), id="x\x00y"),
                        {"step": 0}, {"a": 2}),
     GraphValueError, "holds a NUL or"),
    ("a value that cannot be serialized", {"memory", "sqlite", "redis"},
     lambda s, c: s.put(c, _cp({"a": threading.Lock()}, {"a": 2}), {"step": 0}, {"a": 2}),
     SerializationError, "cannot store channel 'a'"),
    ("a write that cannot be serialized", {"memory", "sqlite", "redis"},
     lambda s, c: s.put_writes(c, [("a", threading.Lock())], "task-2"),
     SerializationError, "write to channel 'a'"),
    ("metadata that is not JSON", {"sqlite", "redis"},
     lambda s, c: s.put(c, _cp({"a": 1}, {"a": 2}), {"step": object()}, {"a": 2}),
     SerializationError, "checkpoint metadata as JSON"),
    ("an unknown thread status", {"memory", "sqlite", "redis"},
     lambda s, c: s.set_status("t", "paused"), GraphValueError, "thread status 'paused'"),
    ("a thread id of bytes", {"memory", "sqlite", "redis"},
     lambda s, c: s.get_tuple(cfg(b"t")), GraphValueError, "str, int or UUID"),
    ("a fencing token that is not an int", {"redis"},
     lambda s, c: s.put({"configurable": {**c["configurable"], "fence": "7"}},
                        _cp({"a": 1}, {"a": 2}), {"step": 0}, {"a": 2}),
     GraphValueError, "fencing token must be an int"),
    ("a signed store reading unsigned values", {"sqlite", "redis"},
     lambda s, c: _signed_reader(s).get_tuple(cfg("t")),
     SignatureError, "unsigned payload"),
]


def _signed_reader(saver: Any) -> Any:
    """The same store opened with a signing key (values were written without one)."""
    if isinstance(saver, SqliteSaver):
        return SqliteSaver(saver._conn, serde=signed())
    return RedisSaver(saver.client, prefix=saver.prefix, serde=signed())


CASES = [(kind, name, call, error, words)
         for name, kinds, call, error, words in STORE_ROWS
         for kind in ("memory", "sqlite", "redis") if kind in kinds]


@pytest.mark.parametrize(("kind", "name", "call", "error", "words"), CASES,
                         ids=[f"{c[1]}-{c[0]}" for c in CASES])
def test_careless_store_calls_fail_clearly_and_change_nothing(
    kind: str, name: str, call: Callable[[Any, dict[str, Any]], Any],
    error: type[BaseException], words: str, tmp_path: Path, request: pytest.FixtureRequest,
) -> None:
    saver = _store(kind, tmp_path, request)
    config = _seed(saver)
    before = saver.get_tuple(cfg("t"))
    with pytest.raises(error) as caught:
        call(saver, config)
    assert words in str(caught.value)
    after = saver.get_tuple(cfg("t"))
    assert before is not None and after is not None
    assert after.checkpoint.id == before.checkpoint.id
    assert after.checkpoint.channel_values == {"a": "kept"}
    assert [(w.task_id, w.value) for w in after.pending_writes] == [("task-1", "pending")]
