"""Redis-v9 records on a real Redis: small values kept in their record, links at the head
of their values, short packed records; each reads back exactly what v8 stored.

A changed scalar of at most ``records.INLINE_MAX`` stored bytes lives in its checkpoint's
``refs`` (no blob field); a child checkpoint that reads it unchanged has it written out
as a field by its own commit (from the parent's record), so pruning the parent loses
nothing. A delta's link heads its value (``records.linked``): no chain fields.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator
from typing import Annotated, Any, TypedDict

import ormsgpack
import pytest
import redis

from durable_graph import END, START, StateGraph
from durable_graph.errors import SignatureError
from durable_graph.store.base import Checkpoint, new_checkpoint_id
from durable_graph.store.codec import SignedSerializer, SigningCodec
from durable_graph.store.redis import RedisSaver
from durable_graph.store.redis.keys import CHAIN, ThreadKeys, blob_field
from durable_graph.store.redis.records import (
    LINKED,
    link_of,
    pack_record,
    record_refs,
    unpack_record,
)
from durable_graph.store.serde import TypedSerializer
from tests.redis_records import read_record, read_values, write_record

pytestmark = pytest.mark.redis

SMALL: dict[str, Any] = {"count": 200, "none": None, "flag": True, "ratio": 0.25,
                         "word": "crème brûlée", "neg": -70000}
"""Scalars whose stored bytes hold bytes of 0x80 and up (msgpack 200, Latin-1 text)."""


def cfg(thread: str, checkpoint_id: str | None = None) -> dict[str, Any]:
    conf: dict[str, Any] = {"thread_id": thread, "checkpoint_ns": ""}
    if checkpoint_id:
        conf["checkpoint_id"] = checkpoint_id
    return {"configurable": conf}


def cp(values: dict[str, Any], versions: dict[str, int], cid: str | None = None) -> Checkpoint:
    return Checkpoint(id=cid or new_checkpoint_id(), ts="2026-01-01T00:00:00+00:00",
                      channel_values=values, channel_versions=versions, versions_seen={})


@pytest.fixture(params=["plain", "signed"])
def saver(request: pytest.FixtureRequest, redis_url: str,
          redis_prefix: str) -> Iterator[RedisSaver]:
    serde = None if request.param == "plain" else SignedSerializer(
        TypedSerializer(), SigningCodec.from_secret("v" * 32))
    with RedisSaver.from_url(redis_url, prefix=redis_prefix, serde=serde) as s:
        yield s


@pytest.fixture
def raw(saver: RedisSaver) -> redis.Redis:
    """The saver's own client, for reading what it stored as it is."""
    client: redis.Redis = saver.client
    return client


def fields(raw: redis.Redis, saver: RedisSaver, thread: str) -> dict[bytes, bytes]:
    return read_values(raw, ThreadKeys(saver.prefix, thread).ns(""))


def kept_in(raw: redis.Redis, saver: RedisSaver, thread: str, cid: str) -> dict[str, bytes]:
    """field -> stored bytes of the values a checkpoint's record keeps."""
    stored = read_record(raw, ThreadKeys(saver.prefix, thread).ns(""), cid)
    assert stored is not None
    return {f: v for f, v in record_refs(unpack_record(stored, cid)) if v is not None}


def test_small_changed_values_live_in_their_record(saver: RedisSaver, raw: redis.Redis) -> None:
    versions = dict.fromkeys(SMALL, 1)
    first = cp({**SMALL, "big": "B" * 200}, {**versions, "big": 1})
    saver.put(cfg("t"), first, {"step": 0}, {**versions, "big": 1})
    assert list(fields(raw, saver, "t")) == [blob_field("big", 1).encode()]
    assert set(kept_in(raw, saver, "t", first.id)) == {blob_field(ch, 1) for ch in SMALL}
    got = saver.get_tuple(cfg("t"))
    assert got is not None and got.checkpoint.channel_values == {**SMALL, "big": "B" * 200}
    assert got.checkpoint.channel_versions == {**versions, "big": 1}
    assert type(got.checkpoint.channel_values["flag"]) is bool


@pytest.mark.parametrize("parent_id", ["uuid", "0-first"], ids=["uuid-parent", "text-parent"])
def test_a_child_reading_them_unchanged_writes_them_out_and_survives_the_parent(
        saver: RedisSaver, raw: redis.Redis, parent_id: str) -> None:
    versions = dict.fromkeys(SMALL, 1)
    first = cp(dict(SMALL), versions, None if parent_id == "uuid" else parent_id)
    parent = saver.put(cfg("t"), first, {"step": 0}, versions)
    inline = kept_in(raw, saver, "t", first.id)
    # the child holds half of them with its values and reads the rest by version only
    carried = dict(list(SMALL.items())[:3])
    child = cp({**carried, "n": 1}, {**versions, "n": 1})
    saver.put(parent, child, {"step": 1}, {"n": 1})
    stored = fields(raw, saver, "t")
    for ch in SMALL:  # each written out byte for byte as the parent's record kept it
        assert stored[blob_field(ch, 1).encode()] == inline[blob_field(ch, 1)]
    assert saver.prune(["t"]) == 1
    got = saver.get_tuple(cfg("t"))
    assert got is not None and got.checkpoint.channel_values == {**SMALL, "n": 1}


def test_a_small_value_found_nowhere_is_sent_again(saver: RedisSaver, raw: redis.Redis) -> None:
    """A checkpoint whose parent is not the one that kept its unchanged value (a fork):
    the commit names it missing, and the saver sends it as a field."""
    a = cp({"x": 7, "y": 1}, {"x": 1, "y": 1})
    base = saver.put(cfg("t"), a, {"step": 0}, {"x": 1, "y": 1})
    b = cp({"x": 7, "y": 2, "z": 9}, {"x": 1, "y": 2, "z": 1})
    saver.put(base, b, {"step": 1}, {"y": 2, "z": 1})
    fork = cp({"x": 7, "y": 3, "z": 9}, {"x": 1, "y": 3, "z": 1})  # z unchanged, kept by b
    saver.put(base, fork, {"step": 1}, {"y": 3})
    assert blob_field("z", 1).encode() in fields(raw, saver, "t")
    got = saver.get_tuple(cfg("t", fork.id))
    assert got is not None and got.checkpoint.channel_values == {"x": 7, "y": 3, "z": 9}


def test_an_edited_value_in_a_signed_record_is_refused(redis_url: str,
                                                       redis_prefix: str) -> None:
    saver = RedisSaver.from_url(redis_url, prefix=redis_prefix, serde=SignedSerializer(
        TypedSerializer(), SigningCodec.from_secret("v" * 32)))
    raw = saver.client
    a = saver.put(cfg("t"), cp({"n": 1}, {"n": 1}), {"step": 0}, {"n": 1})
    b = cp({"n": 2}, {"n": 2})
    saver.put(a, b, {"step": 1}, {"n": 2})
    first = a["configurable"]["checkpoint_id"]
    older = kept_in(raw, saver, "t", first)[blob_field("n", 1)]
    nsk = ThreadKeys(saver.prefix, "t").ns("")
    record = unpack_record(read_record(raw, nsk, b.id) or b"", b.id)
    # n's value of version 1 put in place of version 2's: its signature names version 1
    record["refs"] = ormsgpack.packb([[blob_field("n", 2), older.decode("latin-1")]])
    write_record(raw, nsk, b.id, pack_record(record, b.id))
    with pytest.raises(SignatureError):
        saver.get_tuple(cfg("t"))
    saver.close()


class Log(TypedDict):
    log: Annotated[list[str], operator.add]
    n: int


def log_app(saver: RedisSaver, steps: int) -> Any:
    g = StateGraph(Log)
    g.add_node("step", lambda s: {"log": [f"line {s['n']} " + "x" * 100], "n": s["n"] + 1})
    g.add_edge(START, "step")
    g.add_conditional_edges("step", lambda s: END if s["n"] >= steps else "step")
    return g.compile(checkpointer=saver)


def test_delta_links_head_their_values_and_read_as_whole_values(
        saver: RedisSaver, raw: redis.Redis, redis_url: str) -> None:
    app = log_app(saver, 8)
    final = app.invoke({"log": [], "n": 0}, cfg("log"))
    stored = fields(raw, saver, "log")
    assert not any(f.startswith(CHAIN.encode()) for f in stored)
    links = {f: ormsgpack.unpackb(link) for f, v in stored.items()
             if (link := link_of(v)) is not None}
    assert links and all(stored[f].startswith(LINKED) for f in links)
    depths = sorted(link[1] for link in links.values())
    assert depths == list(range(1, len(depths) + 1)) and len(depths) >= 7  # one per step
    fresh = RedisSaver(saver.client, prefix=saver.prefix, serde=saver.serde)  # knows none
    versions = saver.get_tuple(cfg("log")).checkpoint.channel_versions  # type: ignore[union-attr]
    assert fresh.value_depth("", "", "log", versions["log"]) is None  # no such thread
    assert fresh.value_depth("log", "", "log", versions["log"]) == depths[-1]
    assert fresh.value_depth("log", "", "log", 10**9) is None
    whole = RedisSaver.from_url(redis_url, prefix=saver.prefix + "-whole", delta=False,
                                serde=saver.serde)
    try:
        log_app(whole, 8).invoke({"log": [], "n": 0}, cfg("log"))
        ours = [t.checkpoint.channel_values for t in saver.list(cfg("log"))]
        assert ours == [t.checkpoint.channel_values for t in whole.list(cfg("log"))]
        assert ours[0]["log"] == final["log"] and len(ours) == 10
        assert saver.prune(["log"], keep_last=2) == 8
        assert saver.get_tuple(cfg("log")).checkpoint.channel_values == ours[0]  # type: ignore[union-attr]
    finally:
        whole.delete_thread("log")
        whole.close()


def test_a_commit_sent_again_still_writes_out_what_its_parent_keeps(
        saver: RedisSaver, raw: redis.Redis) -> None:
    """A distributed step's commit can read a value by version that no store holds yet
    (an update folded into the step): the first try names it missing, the second sends
    it, and must still write out the small value the parent's record keeps."""
    a = cp({"x": 200}, {"x": 1})
    parent = saver.put(cfg("t"), a, {"step": 0}, {"x": 1})
    b = cp({"x": 200, "r": ["update"]}, {"x": 1, "r": 1})
    saver.put(parent, b, {"step": 1}, {})  # neither sent: r missing, x in a's record
    stored = fields(raw, saver, "t")
    assert {blob_field("x", 1).encode(), blob_field("r", 1).encode()} <= set(stored)
    assert saver.prune(["t"]) == 1
    got = saver.get_tuple(cfg("t"))
    assert got is not None and got.checkpoint.channel_values == {"x": 200, "r": ["update"]}


def test_replacing_a_step_writes_out_what_it_kept_in_one_script(
        redis_url: str, redis_prefix: str) -> None:
    """Exit durability: a step's commit replaces the step before (its parent is the run's
    start), so a small value that step changed is in the record being replaced: the same
    script writes it out before dropping it, with no second try."""
    calls: list[bytes] = []

    class Counting(redis.Connection):
        def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            chunks = [command] if isinstance(command, (str, bytes)) else command
            head = bytes(chunks[0])[:40]
            calls.extend(name for name in (b"EVALSHA", b"EVAL\r") if name in head)
            super().send_packed_command(command, check_health)

    saver = RedisSaver.from_url(redis_url, prefix=redis_prefix, connection_class=Counting)
    start = cp({"x": 0}, {"x": 1})
    saver.put(cfg("t"), start, {"step": 0}, {"x": 1})
    step1 = cp({"x": 1, "small": 5}, {"x": 2, "small": 1})
    saver.put(cfg("t", start.id), step1, {"step": 1}, {"x": 2, "small": 1})
    step2 = cp({"x": 2, "small": 5}, {"x": 3, "small": 1})
    calls.clear()
    saver.put(cfg("t", start.id), step2, {"step": 2}, {"x": 3},
              expect_latest=step1.id, replaces=step1.id, keep=start.id)
    assert calls == [b"EVALSHA"]  # one script: nothing named missing, nothing sent again
    assert saver.get_tuple(cfg("t", step1.id)) is None
    got = saver.get_tuple(cfg("t"))
    assert got is not None and got.checkpoint.channel_values == {"x": 2, "small": 5}
    saver.close()
