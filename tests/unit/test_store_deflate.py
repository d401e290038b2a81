"""Deflated leaves and values (``store/deflate.py``; redis-v8 ``leafblobs``/``records``).

The pure rules first (what is kept deflated, what an inflate refuses), then a real
Redis: a chat's base64 texts are ``B`` cells, prose ``z`` cells, an appended log's
values deflated; all read back as written, and a garbled stream or a zlib bomb
written into the store is refused without inflating it all. Last, what a reader
older than v8 does with those fields: it fails loudly, never returns their bytes.
Pending writes are deflated as values are (a step's new item is sent twice: once as
its write, once in the commit's delta), signed writes checked on the inflated bytes.
"""

from __future__ import annotations

import base64
import operator
import os
import tracemalloc
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, TypedDict

import ormsgpack
import pytest

from durable_graph import END, START, StateGraph
from durable_graph.errors import CheckpointStoreError, DurableGraphError, SerializationError
from durable_graph.store.base import Checkpoint, empty_checkpoint
from durable_graph.store.deflate import (
    FRAMING,
    MAX_RATIO,
    deflated,
    inflated,
    pack_leaf,
    unpack_leaf,
)
from durable_graph.store.encoding import ThreadCodec
from durable_graph.store.leaves import leaf_value
from durable_graph.store.redis import RedisSaver
from durable_graph.store.redis.keys import CHAIN, LEAF, ThreadKeys, leaf_digest, write_field
from durable_graph.store.redis.records import DEFLATED, FRAMED, decode_blob, unlinked
from tests.redis_records import read_values, write_value
from tests.unit.test_leaf_dedup import _redis, chat_app, content, run_chat, signed

PROSE = "the quick brown fox jumps over the lazy dog, and then it rests a while. " * 8


def _bomb() -> bytes:
    """A raw deflate stream under 300 KB that inflates to 200 MB of zeros."""
    squeezer = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = b"\x00" * (1 << 20)
    stream = b"".join(squeezer.compress(chunk) for _ in range(200)) + squeezer.flush()
    assert len(stream) < 300_000
    return stream


# -- the pure rules ----------------------------------------------------------


def test_deflated_keeps_a_stream_only_when_it_pays_within_the_bound() -> None:
    prose = PROSE.encode()
    stream = deflated(prose)
    assert stream is not None and (len(stream) + 1) * 8 <= len(prose) * 7
    assert inflated(stream) == prose
    b64 = base64.b64encode(os.urandom(768))  # ~0.78: pays
    assert deflated(b64) is not None and inflated(deflated(b64) or b"") == b64
    big = base64.b64encode(os.urandom(30_000))  # over 16 KB: the faster level, same form
    stream = deflated(big)
    assert stream is not None and (len(stream) + 1) * 8 <= len(big) * 7
    assert inflated(stream) == big
    assert deflated(os.urandom(2000)) is None  # random bytes: no gain
    assert deflated(b"a" * 60) is None  # too short to be worth a compressor
    assert deflated(b"a" * 100_000) is None  # ~1000x: past MAX_RATIO, kept as it is


def test_inflated_refuses_garbled_streams_and_bombs_without_inflating_them() -> None:
    stream = deflated(PROSE.encode())
    assert stream is not None
    assert inflated(stream[: len(stream) // 2]) is None  # cut short: never ends
    assert inflated(stream + b"more") is None  # bytes after the end
    assert inflated(b"\xff" * 40) is None  # not deflate at all
    tracemalloc.start()
    try:
        assert inflated(_bomb()) is None
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 40 << 20  # 200 MB inflated; the bound stops at 16x 300 KB


def test_leaf_cells_read_back_and_a_bad_one_fails_its_hash() -> None:
    """Each cell form reads back byte for byte; a ``z`` cell that does not inflate comes
    back as stored, so ``leaf_value`` refuses it as altered: nothing of it is used."""
    for stored in (b"s" + PROSE.encode(), b"s" + base64.b64encode(os.urandom(768)),
                   b"b" + os.urandom(500)):
        cell = pack_leaf(stored)
        assert unpack_leaf(cell) == stored
    assert pack_leaf(b"s" + PROSE.encode())[:1] == b"z"
    bomb = b"z" + _bomb()
    assert unpack_leaf(bomb) == bomb
    with pytest.raises(SerializationError, match="does not match its content hash"):
        leaf_value(unpack_leaf(bomb), b"\x00" * 32)
    assert len(b"s" + PROSE.encode()) <= MAX_RATIO * len(pack_leaf(b"s" + PROSE.encode()))


# -- on Redis ----------------------------------------------------------------


class Log(TypedDict):
    log: Annotated[list[str], operator.add]
    n: int


def log_app(saver: Any, steps: int) -> Any:
    """``steps`` supersteps, each appending 1 KB of random base64 to ``log``."""
    g = StateGraph(Log)
    g.add_node("step", lambda s: {"log": [base64.b64encode(os.urandom(768)).decode()],
                                  "n": s["n"] + 1})
    g.add_edge(START, "step")
    g.add_conditional_edges("step", lambda s: END if s["n"] >= steps else "step")
    return g.compile(checkpointer=saver)


def _fields(saver: RedisSaver, thread: str) -> dict[bytes, bytes]:
    return read_values(saver.client, ThreadKeys(saver.prefix, thread).ns(""))


def _values(fields: dict[bytes, bytes]) -> dict[bytes, bytes]:
    """The channel value fields (not leaves or chain fields), past their links (v9)."""
    return {f: unlinked(v) for f, v in fields.items()
            if not f.startswith((LEAF.encode(), CHAIN.encode()))}


def _leaves(fields: dict[bytes, bytes]) -> dict[bytes, bytes]:
    return {f: v for f, v in fields.items() if f.startswith(LEAF.encode())}


def _is_deflated(raw: bytes) -> bool:
    return raw.partition(b"\x00")[0].lstrip(b"&").startswith(DEFLATED.encode())


@pytest.fixture(params=[None, "signed"], ids=["plain", "signed"])
def saver(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RedisSaver]:
    made = _redis(tmp_path, serde=signed() if request.param else None)
    assert isinstance(made, RedisSaver)
    yield made
    made.close()


@pytest.mark.redis
def test_redis_keeps_base64_texts_as_their_bytes_and_prose_deflated(saver: RedisSaver) -> None:
    app = chat_app(saver)
    texts = run_chat(app, "b64", 4)
    cells = _leaves(_fields(saver, "b64")).values()
    assert cells and {c[:1] for c in cells} == {b"B"} and {len(c) for c in cells} == {769}
    config = {"configurable": {"thread_id": "prose"}}
    for turn in range(3):
        app.invoke({"messages": [{"id": f"m{turn}", "role": "user",
                                  "content": f"{turn} {PROSE}"}]}, config)
    cells = _leaves(_fields(saver, "prose")).values()
    assert cells and {c[:1] for c in cells} == {b"z"} and max(map(len, cells)) < 200
    fresh = RedisSaver(saver.client, prefix=saver.prefix, serde=saver.serde)
    for thread, want in (("b64", texts), ("prose", [f"{t} {PROSE}" for t in range(3)])):
        tup = fresh.get_tuple({"configurable": {"thread_id": thread}})
        assert tup is not None
        assert [content(m) for m in tup.checkpoint.channel_values["messages"]] == want


@pytest.mark.redis
def test_redis_deflates_an_appended_logs_values_and_reads_them_back(
        saver: RedisSaver) -> None:
    app = log_app(saver, 6)
    config = {"configurable": {"thread_id": "log"}}
    final = app.invoke({"log": [], "n": 0}, config)
    values = _values(_fields(saver, "log"))
    deflated_values = [v for v in values.values() if _is_deflated(v)]
    assert len(deflated_values) >= 6  # each step's 1 KB line, in its delta or snapshot
    for raw in deflated_values:  # each at least an eighth smaller than undeflated
        tag, _, stream = raw.partition(b"\x00")
        whole = inflated(stream, zdict=FRAMING if _framed(tag) else None)
        assert whole is not None and len(raw) * 8 <= (len(tag) + len(whole)) * 7
    history = list(saver.list(config))
    assert [len(t.checkpoint.channel_values.get("log", [])) for t in history] == \
        [6, 5, 4, 3, 2, 1, 0, 0]
    assert history[0].checkpoint.channel_values["log"] == final["log"]
    app.invoke(None, config)  # resumes on what it read: nothing left to run
    assert app.get_state(config).values["log"] == final["log"]


def _framed(tag: str | bytes) -> bool:
    """Whether a stored tag says its stream was deflated with ``deflate.FRAMING``
    (redis-v10, ``records.FRAMED``)."""
    text = tag if isinstance(tag, str) else tag.decode()
    return text.lstrip("&").startswith(FRAMED)


@pytest.mark.redis
def test_redis_refuses_a_garbled_or_bomb_value_without_inflating_it(
        saver: RedisSaver) -> None:
    config = {"configurable": {"thread_id": "log"}}
    log_app(saver, 3).invoke({"log": [], "n": 0}, config)
    stored = _fields(saver, "log")
    for field_of, raw in list(_values(stored).items()):
        if not _is_deflated(raw):
            continue
        link = stored[field_of][:len(stored[field_of]) - len(raw)]  # kept: v9 walks it
        tag, _, stream = raw.partition(b"\x00")
        nsk = ThreadKeys(saver.prefix, "log").ns("")
        for bad in (stream[:-8], _bomb()):
            write_value(saver.client, nsk, field_of, link + tag + b"\x00" + bad)
            tracemalloc.start()
            try:
                with pytest.raises(CheckpointStoreError, match="does not inflate cleanly"):
                    list(saver.list(config))
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
            assert peak < 40 << 20
        write_value(saver.client, nsk, field_of, stored[field_of])
    assert len(list(saver.list(config))) == 5


@pytest.mark.redis
def test_redis_refuses_a_leaf_cell_that_is_a_bomb(saver: RedisSaver) -> None:
    run_chat(chat_app(saver), "t", 2)
    nsk = ThreadKeys(saver.prefix, "t").ns("")
    for field in _leaves(_fields(saver, "t")):
        write_value(saver.client, nsk, field, b"z" + _bomb())
    with pytest.raises(SerializationError, match="does not match its content hash"):
        saver.get_tuple({"configurable": {"thread_id": "t"}})


@pytest.mark.redis
def test_a_reader_older_than_v8_fails_loudly_on_v8_fields(saver: RedisSaver) -> None:
    """What a v7 reader does with v8's fields, through the code it shares with v8
    (unchanged since v6): it hashes a leaf field as the leaf's bytes (``leaf_value``),
    and splits a value's tag with ``decode_blob`` and hands it to the serializer. Both
    refuse; neither returns a byte of the deflate stream as content."""
    run_chat(chat_app(saver), "t", 3)
    log_app(saver, 2).invoke({"log": [], "n": 0}, {"configurable": {"thread_id": "log"}})
    leaves = _leaves(_fields(saver, "t"))
    assert leaves
    for field, cell in leaves.items():
        with pytest.raises(SerializationError, match="does not match its content hash"):
            leaf_value(cell, leaf_digest(field.decode()))
    deflated_values = [v for v in _values(_fields(saver, "log")).values() if _is_deflated(v)]
    assert deflated_values
    tc = ThreadCodec(saver.serde, saver.prefix, "log", "")
    for raw in deflated_values:
        with pytest.raises(DurableGraphError):
            tc.value("cp", "log", 1, decode_blob(raw), signed_record=False)


# -- pending writes ------------------------------------------------------------

ITEM = base64.b64encode(os.urandom(768)).decode()
"""A chat message's 1 KB of random base64: deflates to about three quarters."""


def _put(saver: RedisSaver) -> tuple[dict[str, Any], Checkpoint]:
    """A stored checkpoint of thread ``t`` and its config."""
    cp = empty_checkpoint()
    config = saver.put({"configurable": {"thread_id": "t", "checkpoint_ns": ""}}, cp,
                       {"step": 0}, {})
    return config, cp


def _stored(saver: RedisSaver, cp: Checkpoint) -> tuple[str, dict[bytes, bytes]]:
    """(writes key, field -> stored value) of ``cp``'s pending writes."""
    key = ThreadKeys(saver.prefix, "t").ns("").writes(cp.id)
    return key, {bytes(f): bytes(v) for f, v in saver.client.hgetall(key).items()}


@pytest.mark.redis
def test_a_deflated_write_reads_back_as_written(saver: RedisSaver) -> None:
    config, cp = _put(saver)
    writes = [("messages", [ITEM]), ("note", PROSE), ("n", 7)]
    saver.put_writes(config, writes, "task-1")
    _, stored = _stored(saver, cp)
    triples = {f: ormsgpack.unpackb(v) for f, v in stored.items()}
    tags = {f: tag for f, (_, tag, _) in triples.items()}
    assert tags[b"task-1:0"].startswith(DEFLATED) and tags[b"task-1:1"].startswith(DEFLATED)
    assert not tags[b"task-1:2"].startswith(DEFLATED)  # too short to deflate
    for field in (b"task-1:0", b"task-1:1"):
        channel, tag, stream = triples[field]
        whole = inflated(stream, zdict=FRAMING if _framed(tag) else None)
        assert whole is not None and (len(tag) + len(stream)) * 8 <= (len(tag) + len(whole)) * 7
    fresh = RedisSaver(saver.client, prefix=saver.prefix, serde=saver.serde)
    got = fresh.get_tuple(config)
    assert got is not None
    assert [(w.channel, w.value) for w in got.pending_writes] == writes


@pytest.mark.redis
def test_a_write_stored_before_deflate_still_reads(saver: RedisSaver) -> None:
    config, cp = _put(saver)
    key, _ = _stored(saver, cp)
    tc = saver.codec_of("t", "")
    tag, data = tc.write(cp.id, "task-1", 0, "messages", [ITEM])
    saver.client.hset(key, write_field("task-1", 0), ormsgpack.packb(["messages", tag, data]))
    got = saver.get_tuple(config)
    assert got is not None and [(w.channel, w.value) for w in got.pending_writes] == \
        [("messages", [ITEM])]


@pytest.mark.redis
def test_a_garbled_or_bomb_write_is_refused_without_inflating_it(saver: RedisSaver) -> None:
    config, cp = _put(saver)
    saver.put_writes(config, [("messages", [ITEM])], "task-1")
    key, stored = _stored(saver, cp)
    channel, tag, stream = ormsgpack.unpackb(stored[b"task-1:0"])
    assert tag.startswith(DEFLATED)
    for bad in (stream[:-8], stream + b"more", _bomb()):
        saver.client.hset(key, "task-1:0", ormsgpack.packb([channel, tag, bad]))
        tracemalloc.start()
        try:
            with pytest.raises(CheckpointStoreError, match="pending write 'task-1:0'.*does "
                               "not inflate cleanly"):
                saver.get_tuple(config)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 40 << 20
    saver.client.hset(key, "task-1:0", stored[b"task-1:0"])
    got = saver.get_tuple(config)
    assert got is not None and got.pending_writes[0].value == [ITEM]


@pytest.mark.redis
def test_a_reader_older_than_deflated_writes_fails_loudly(saver: RedisSaver) -> None:
    """An older reader unpacks the triple and hands its tag and bytes to the codec as they
    are (``tc.pending``): ``%tag`` is an unknown format, or a bad signature when signed."""
    config, cp = _put(saver)
    saver.put_writes(config, [("messages", [ITEM])], "task-1")
    _, stored = _stored(saver, cp)
    channel, tag, stream = ormsgpack.unpackb(stored[b"task-1:0"])
    assert tag.startswith(DEFLATED)
    with pytest.raises(DurableGraphError):
        saver.codec_of("t", "").pending(cp.id, "task-1", 0, channel, (tag, stream))


def test_a_message_deflates_with_the_framing_dictionary_and_only_with_it() -> None:
    """A short LangChain message's bytes, about half framing, deflate by about 45% with
    ``FRAMING`` (by less than an eighth without, so they were kept whole); the stream
    reads back only with the dictionary (a v8 or v9 reader refuses it)."""
    from langchain_core.messages import HumanMessage

    from durable_graph.store.serde import TypedSerializer

    _, data = TypedSerializer().dumps_typed(
        [HumanMessage(content="Where is my parcel? It was due on Monday.", id="m-4")])
    assert deflated(data) is None
    stream = deflated(data, zdict=FRAMING)
    assert stream is not None and len(stream) * 5 < len(data) * 3
    assert inflated(stream, zdict=FRAMING) == data
    assert inflated(stream) is None
