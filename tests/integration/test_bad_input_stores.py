"""Bad input at the store layer: signed values and records bound to their place.

Someone who can write to the store (the Redis server, the SQLite file) but has no
signing key moves a validly signed value from one thread to another, swaps two
channels' values within a thread, or points a checkpoint at an older version of a
channel. Each is refused when the thread is read, with a ``SignatureError`` that
names the thread, the channel and the checkpoint, and no node runs. Real SQLite
files and the real Redis; the tampering is done with plain SQL and Redis commands.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import ormsgpack
import pytest
import redis

from durable_graph import END, START, SqliteSaver, StateGraph
from durable_graph.errors import CommitConflictError, SignatureError
from durable_graph.store.base import (
    EXTENDS_LATEST,
    BaseCheckpointSaver,
    Checkpoint,
    empty_checkpoint,
    new_checkpoint_id,
)
from durable_graph.store.codec import SignedSerializer, SigningCodec
from durable_graph.store.redis import RedisSaver
from durable_graph.store.redis.keys import ThreadKeys, blob_field
from durable_graph.store.serde import TypedSerializer

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


def _sqlite_raw(path: Path) -> Raw:
    saver = SqliteSaver(path, serde=signed())

    def sql(query: str, *args: Any) -> list[Any]:
        with sqlite3.connect(path) as conn:
            return conn.execute(query, args).fetchall()

    def get_value(thread: str, ch: str, v: int) -> bytes:
        (row,) = sql("SELECT blob FROM blobs WHERE thread_id=? AND channel=? AND version=?",
                     thread, ch, v)
        return bytes(row[0])

    def set_value(thread: str, ch: str, v: int, data: bytes) -> None:
        sql("UPDATE blobs SET blob=? WHERE thread_id=? AND channel=? AND version=?",
            data, thread, ch, v)

    def point(thread: str, cid: str, ch: str, v: int) -> None:
        (row,) = sql("SELECT channel_versions FROM checkpoints WHERE thread_id=? "
                     "AND checkpoint_id=?", thread, cid)
        versions = {**json.loads(row[0]), ch: v}
        sql("UPDATE checkpoints SET channel_versions=? WHERE thread_id=? AND checkpoint_id=?",
            json.dumps(versions, separators=(",", ":"), sort_keys=True), thread, cid)

    def strip_sig(thread: str, cid: str) -> None:
        sql("UPDATE checkpoints SET sig=NULL WHERE thread_id=? AND checkpoint_id=?", thread, cid)

    return Raw(saver, get_value, set_value, point, strip_sig)


def _redis_raw(url: str, prefix: str) -> Raw:
    saver = RedisSaver.from_url(url, prefix=prefix, serde=signed())
    client = redis.Redis.from_url(url)

    def nsk(thread: str) -> Any:
        return ThreadKeys(prefix, thread).ns("")

    def get_value(thread: str, ch: str, v: int) -> bytes:
        raw = client.hget(nsk(thread).blobs, blob_field(ch, v))
        assert raw is not None
        return raw

    def set_value(thread: str, ch: str, v: int, data: bytes) -> None:
        client.hset(nsk(thread).blobs, blob_field(ch, v), data)

    def point(thread: str, cid: str, ch: str, v: int) -> None:
        key = nsk(thread).checkpoint(cid)
        versions = {**json.loads(client.hget(key, "versions") or b"{}"), ch: v}
        refs = [blob_field(c, ver) for c, ver in sorted(versions.items())]
        client.hset(key, mapping={"versions": json.dumps(versions, separators=(",", ":")),
                                  "refs": ormsgpack.packb(refs)})

    def strip_sig(thread: str, cid: str) -> None:
        client.hdel(nsk(thread).checkpoint(cid), "sig")

    return Raw(saver, get_value, set_value, point, strip_sig)


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
    raw.set_value("victim", "a", versions["a"], raw.get_value("source", "a", src_versions["a"]))
    _refused(raw, "victim", runs, "'a'", cid)


def test_two_channels_swapped_within_a_thread_are_refused(raw: Raw) -> None:
    runs: list[str] = []
    graph = build(raw.saver, runs)
    graph.invoke({"n": 0}, cfg("t"))
    cid, v = _versions(raw.saver, "t")
    a, b = raw.get_value("t", "a", v["a"]), raw.get_value("t", "b", v["b"])
    raw.set_value("t", "a", v["a"], b)
    raw.set_value("t", "b", v["b"], a)
    _refused(raw, "t", runs, "'a'", cid)


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
