"""Leaf dedup: a large string kept once per thread, on the memory, SQLite and Redis savers.

A chat's message goes into the input channel, the consuming task's write and the
``messages`` delta; each saver must keep its text once, give the same states and
history as before, refuse a leaf whose bytes were altered, and drop leaves when
nothing kept refers to them (prune, keep_last, TTL, delete_thread), never before.
"""

from __future__ import annotations

import base64
import hashlib
import os
import sqlite3
import sys
import time
import tracemalloc
import uuid
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, TypedDict

import ormsgpack
import pydantic
import pytest

from durable_graph import END, START, InMemorySaver, SqliteSaver, StateGraph, add_messages
from durable_graph.errors import CheckpointStoreError, SerializationError
from durable_graph.store.base import BaseCheckpointSaver, Checkpoint, new_checkpoint_id
from durable_graph.store.codec import SignedSerializer, SigningCodec
from durable_graph.store.deflate import MAX_RATIO, pack_leaf, unpack_leaf
from durable_graph.store.delta import ChannelDelta
from durable_graph.store.leaves import (
    LEAF_MIN,
    LeafRef,
    dedups_leaves,
    digests_of,
    join_leaves,
    leaf_bytes,
    leaf_value,
    pack_digests,
    split_leaves,
)
from durable_graph.store.redis import RedisSaver
from durable_graph.store.redis.keys import CHAIN, LEAF, NamespaceKeys, ThreadKeys, leaf_field
from durable_graph.store.redis.leafblobs import LeafHints
from durable_graph.store.redis.records import link_of, unlinked
from durable_graph.store.retention import copy_thread
from durable_graph.store.serde import TypedSerializer
from durable_graph.store.sqlite_leaves import (
    IN_VALUE,
    MAX_NESTING,
    digests_in,
    leaves_column,
    release_leaves,
)
from durable_graph.store.sqlite_schema import SCHEMA_VERSION
from tests.leaf_counts import counted, held_by_rows
from tests.redis_records import delete_value, prefix_values, read_value, read_values, write_value


def text(n: int = 1024) -> str:
    return base64.b64encode(os.urandom(n * 3 // 4)).decode()[:n]


# -- the pure plan -----------------------------------------------------------


def test_split_and_join_give_back_the_value_with_its_types() -> None:
    big, blob = text(), os.urandom(LEAF_MIN)
    value = {"a": [big, ("t", big)], "b": blob, "small": "x" * (LEAF_MIN - 1), "n": 3}
    leaves: dict[bytes, bytes] = {}
    split = split_leaves(value, leaves)
    assert len(leaves) == 2  # the text twice, one leaf
    assert split["a"][0] == split["a"][1][1] == LeafRef(next(
        d for d, v in leaves.items() if v[:1] == b"s"))
    assert split["small"] is value["small"] and type(split["a"][1]) is tuple
    assert digests_of(split) == set(leaves)
    back = join_leaves(split, lambda d: leaf_value(leaves[d], d))
    assert back == value and type(back["b"]) is bytes


def test_a_value_without_large_leaves_is_returned_as_it_is() -> None:
    value = {"a": [1, "short", (2, 3)], "b": {"c": None}}
    leaves: dict[bytes, bytes] = {}
    assert split_leaves(value, leaves) is value and not leaves


def test_deltas_and_pydantic_models_are_walked() -> None:
    pydantic = pytest.importorskip("pydantic")

    class Msg(pydantic.BaseModel):
        id: str
        content: Any

    big = text()
    msg = Msg(id="m1", content=big)
    leaves: dict[bytes, bytes] = {}
    delta = split_leaves(ChannelDelta(5, 1, (("c", (0, 2)), ("n", (msg,)))), leaves)
    assert delta.ops[0] == ("c", (0, 2)) and len(leaves) == 1
    stored = delta.ops[1][1][0]
    assert type(stored) is Msg and type(stored.content) is LeafRef and msg.content == big
    join_leaves(stored, lambda d: leaf_value(leaves[d], d))
    assert stored.content == big


def test_an_altered_leaf_is_refused() -> None:
    leaves: dict[bytes, bytes] = {}
    ref = split_leaves(text(), leaves)
    with pytest.raises(SerializationError, match="does not match its content hash"):
        leaf_value(b"s" + text().encode(), ref.digest)


def test_only_serializers_that_know_leaf_refs_dedup() -> None:
    codec = SigningCodec.from_secret("k" * 32)
    assert dedups_leaves(TypedSerializer()) and dedups_leaves(
        SignedSerializer(TypedSerializer(), codec))

    class Other(TypedSerializer):
        pass

    assert not dedups_leaves(Other())


# -- on the savers -----------------------------------------------------------


class Chat(TypedDict):
    messages: Annotated[list[Any], add_messages]


def chat_app(saver: BaseCheckpointSaver) -> Any:
    g = StateGraph(Chat)
    g.add_node("noop", lambda s: {})
    g.add_edge(START, "noop")
    g.add_edge("noop", END)
    return g.compile(checkpointer=saver)


def run_chat(app: Any, thread: str, turns: int, start: int = 0) -> list[str]:
    """``turns`` turns of 1 KB messages (every 4th also edits one); the contents kept."""
    config = {"configurable": {"thread_id": thread}}
    for turn in range(start, start + turns):
        new = [{"id": f"m{turn}", "role": "user", "content": text()}]
        if turn % 4 == 3:
            new.append({"id": f"m{turn - 2}", "role": "user", "content": text()})
        app.invoke({"messages": new}, config)
    return [content(m) for m in app.get_state(config).values["messages"]]


def content(message: Any) -> str:
    return str(message["content"] if isinstance(message, dict) else message.content)


def signed() -> SignedSerializer:
    return SignedSerializer(TypedSerializer(), SigningCodec.from_secret("s" * 32))


def _memory(folder: Path, **options: Any) -> BaseCheckpointSaver:
    return InMemorySaver(**options)


def _sqlite(folder: Path, **options: Any) -> BaseCheckpointSaver:
    return SqliteSaver(folder / f"c{len(list(folder.iterdir()))}.db", **options)


def _redis(folder: Path, **options: Any) -> BaseCheckpointSaver:
    # The conftest sets both for tests marked redis and deletes the prefix's keys after.
    url = os.environ["DURABLE_GRAPH_TEST_REDIS_URL"]
    prefix = f"{os.environ['DURABLE_GRAPH_TEST_REDIS_PREFIX']}-{uuid.uuid4().hex[:8]}"
    return RedisSaver.from_url(url, prefix=prefix, **options)


_BUILDERS = {"memory": _memory, "sqlite": _sqlite, "redis": _redis}


@pytest.fixture(params=["memory", "sqlite", "sqlite-signed", "memory-signed",
                        pytest.param("redis", marks=pytest.mark.redis),
                        pytest.param("redis-signed", marks=pytest.mark.redis)])
def make(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., Any]]:
    kind = str(request.param)
    made: list[BaseCheckpointSaver] = []

    def build(**options: Any) -> BaseCheckpointSaver:
        if kind.endswith("signed"):
            options.setdefault("serde", signed())
        saver = _BUILDERS[kind.partition("-")[0]](tmp_path, **options)
        made.append(saver)
        return saver

    yield build
    for saver in made:
        close = getattr(saver, "close", None)
        if close is not None:
            close()


def _redis_leaves(saver: RedisSaver) -> list[tuple[NamespaceKeys, bytes]]:
    """(namespace, leaf field) of every leaf the saver's prefix keeps."""
    return [(nsk, field) for nsk, field in prefix_values(saver.client, saver.prefix)
            if field.startswith(LEAF.encode())]


def leaf_count(saver: BaseCheckpointSaver) -> int:
    if isinstance(saver, RedisSaver):
        return len(_redis_leaves(saver))
    if isinstance(saver, SqliteSaver):
        return int(saver._conn.execute("SELECT count(*) FROM leaf_cells").fetchone()[0])
    assert isinstance(saver, InMemorySaver)
    return len(saver._leaves)


def history(saver: BaseCheckpointSaver, thread: str) -> list[Any]:
    return [(t.checkpoint.id, t.checkpoint.channel_values, t.pending_writes)
            for t in saver.list({"configurable": {"thread_id": thread}})]


def test_each_text_is_kept_once_and_reads_are_as_without_dedup(
        make: Callable[..., BaseCheckpointSaver]) -> None:
    saver = make()
    contents = run_chat(chat_app(saver), "t", 8)
    assert len(contents) == 8
    assert leaf_count(saver) == 8 + 2  # each message's text, and the two edits' new ones
    whole = make(serde=Other(), delta=False)  # the same history, nothing deduped
    for item in saver.list({"configurable": {"thread_id": "t"}}):
        whole.put({"configurable": {"thread_id": "t", "checkpoint_ns": "",
                                    "checkpoint_id": item.parent_config and
                                    item.parent_config["configurable"]["checkpoint_id"]}},
                  item.checkpoint, item.metadata, dict(item.checkpoint.channel_versions))
    assert leaf_count(whole) == 0
    ours = {cid: values for cid, values, _ in history(saver, "t")}
    theirs = {cid: values for cid, values, _ in history(whole, "t")}
    assert ours == theirs and len(ours) == 3 * 8


class Other(TypedSerializer):
    """A serializer the savers do not know: no leaf dedup."""


def test_a_thread_resumes_and_keeps_growing(make: Callable[..., BaseCheckpointSaver]) -> None:
    saver = make()
    app = chat_app(saver)
    first = run_chat(app, "t", 4)
    again = run_chat(chat_app(saver), "t", 4, start=4)
    assert again[:4] != first or again[:2] == first[:2]
    assert len(again) == 8 and leaf_count(saver) == 8 + 2


def test_delete_thread_and_ttl_drop_every_leaf(make: Callable[..., BaseCheckpointSaver]) -> None:
    saver = make()
    run_chat(chat_app(saver), "gone", 3)
    kept = run_chat(chat_app(saver), "kept", 3)
    assert leaf_count(saver) == 6
    saver.delete_thread("gone")
    assert leaf_count(saver) == 3
    assert [content(m) for m in saver.get_tuple(
        {"configurable": {"thread_id": "kept"}}).checkpoint.channel_values["messages"]] == kept
    saver.set_ttl("kept", 1)
    time.sleep(1.1)
    assert saver.get_tuple({"configurable": {"thread_id": "kept"}}) is None
    assert leaf_count(saver) == 0


def test_keep_last_bounds_the_leaves_to_what_kept_checkpoints_read(
        make: Callable[..., BaseCheckpointSaver]) -> None:
    saver = make(keep_last=2, snapshot_every=3)
    app = chat_app(saver)
    contents = run_chat(app, "t", 12)
    # The kept checkpoints read the latest messages (whole or through a chain of at
    # most 3 deltas); edited-away texts and old inputs are gone.
    assert len(contents) == 12 and leaf_count(saver) <= 12 + 1
    state = saver.get_tuple({"configurable": {"thread_id": "t"}})
    assert [content(m) for m in state.checkpoint.channel_values["messages"]] == contents
    more = run_chat(app, "t", 12, start=12)
    assert len(more) == 24 and leaf_count(saver) <= 24 + 1


def test_prune_keeps_every_leaf_a_kept_checkpoint_reads(
        make: Callable[..., BaseCheckpointSaver]) -> None:
    saver = make(snapshot_every=3)
    contents = run_chat(chat_app(saver), "t", 10)
    before = leaf_count(saver)
    saver.prune(["t"], strategy="keep_latest")
    assert 10 <= leaf_count(saver) < before
    latest = saver.get_tuple({"configurable": {"thread_id": "t"}})
    assert [content(m) for m in latest.checkpoint.channel_values["messages"]] == contents
    assert len(list(saver.list({"configurable": {"thread_id": "t"}}))) == 1


def test_copy_thread_keeps_its_own_leaves(make: Callable[..., BaseCheckpointSaver]) -> None:
    saver = make()
    contents = run_chat(chat_app(saver), "a", 3)
    copy_thread(saver, "a", "b")
    saver.delete_thread("a")
    state = saver.get_tuple({"configurable": {"thread_id": "b"}})
    assert [content(m) for m in state.checkpoint.channel_values["messages"]] == contents
    assert leaf_count(saver) == 3


def kept(saver: BaseCheckpointSaver, thread: str, leaf: str) -> bool:
    digest = hashlib.sha256(leaf_bytes(leaf)).digest()
    if isinstance(saver, RedisSaver):
        nsk = ThreadKeys(saver.prefix, thread).ns("")
        return read_value(saver.client, nsk, leaf_field(digest)) is not None
    if isinstance(saver, SqliteSaver):
        return saver._conn.execute(
            "SELECT 1 FROM leaves l JOIN thread_keys k ON k.key = l.thread_id "
            "WHERE k.thread_id = ? AND digest = ?", (thread, digest)).fetchone() is not None
    assert isinstance(saver, InMemorySaver)
    return saver._leaves.has(thread, digest)


def test_pending_writes_hold_their_leaves_until_replaced_or_pruned(
        make: Callable[..., BaseCheckpointSaver]) -> None:
    saver = make()
    if isinstance(saver, RedisSaver):
        pytest.skip("Redis keeps leaves apart in channel values only: a step's writes "
                    "are retired by its commit, and an input's by the next step's")
    contents = run_chat(chat_app(saver), "t", 1)
    held = leaf_count(saver)
    latest = saver.get_tuple({"configurable": {"thread_id": "t"}})
    big, fresh = text(), text()
    saver.put_writes(latest.config, [("__start__", big)], "task-0")  # input: apart
    # a text the thread keeps is referred to; a new one stays in its write
    saver.put_writes(latest.config, [("messages", [contents[0], fresh]), ("__error__", big)],
                     "task-1")
    assert leaf_count(saver) == held + 1 and kept(saver, "t", big)
    assert not kept(saver, "t", fresh)
    saver.put_writes(latest.config, [("messages", [text()]), ("__error__", "small")], "task-1")
    writes = saver.get_tuple(latest.config).pending_writes
    assert {(w[0], w[1]): w[2] for w in writes} == {
        ("task-0", "__start__"): big, ("task-1", "messages"): [contents[0], fresh],
        ("task-1", "__error__"): "small"}
    assert leaf_count(saver) == held + 1  # task-0's input still holds it
    saver.delete_checkpoints("t", "", [latest.checkpoint.id])
    assert not kept(saver, "t", big) and kept(saver, "t", contents[0])
    assert leaf_count(saver) == held


def test_sqlite_refuses_an_altered_leaf(tmp_path: Path) -> None:
    for serde in (None, signed()):
        path = tmp_path / f"{serde is None}.db"
        with SqliteSaver(path, serde=serde) as saver:
            run_chat(chat_app(saver), "t", 2)
        conn = sqlite3.connect(path)
        # one byte more (a deflated cell, schema 6, gains trailing garbage)
        conn.execute("UPDATE leaf_cells SET data = CAST(data || X'20' AS BLOB)")
        conn.commit()
        conn.close()
        with SqliteSaver(path, serde=serde) as saver, pytest.raises(
                SerializationError, match="does not match its content hash"):
            saver.get_tuple({"configurable": {"thread_id": "t"}})


@pytest.mark.redis
@pytest.mark.parametrize("serde", [None, signed()], ids=["plain", "signed"])
def test_redis_refuses_an_altered_or_missing_leaf(
        tmp_path: Path, serde: SignedSerializer | None) -> None:
    saver = _redis(tmp_path, serde=serde)
    assert isinstance(saver, RedisSaver)
    try:
        run_chat(chat_app(saver), "t", 2)
        config = {"configurable": {"thread_id": "t"}}
        (nsk, field), *_ = _redis_leaves(saver)
        text = read_value(saver.client, nsk, field)
        assert text is not None
        write_value(saver.client, nsk, field, text + b" ")  # one byte more: a new text
        with pytest.raises(SerializationError, match="does not match its content hash"):
            saver.get_tuple(config)
        delete_value(saver.client, nsk, field)
        with pytest.raises(SerializationError, match="is gone"):
            saver.get_tuple(config)
    finally:
        saver.close()


def test_sqlite_schema_7_upgrades_a_schema_4_file(tmp_path: Path) -> None:
    golden = Path(__file__).parent.parent / "golden" / "checkpoints-signed-v4.sqlite"
    copy = tmp_path / "v4.sqlite"
    copy.write_bytes(golden.read_bytes())
    from tests.golden import make_golden as gen

    with SqliteSaver(copy, serde=gen.golden_serde()) as saver:
        assert saver._conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        columns = {r[1] for r in saver._conn.execute("PRAGMA table_info(blobs)")}
        assert "leaves" in columns
        before = saver.get_tuple({"configurable": {"thread_id": "chat"}})
        assert before is not None
        contents = run_chat(chat_app(saver), "new", 2)
        assert len(contents) == 2 and leaf_count(saver) == 2


class Rec(pydantic.BaseModel):
    """A model with plain defaults (importable: the serializer stores it by name)."""

    id: str
    flag: Any = False
    extra: dict[str, Any] = pydantic.Field(default_factory=dict)
    name: str | None = None
    model: str | None = pydantic.Field(default_factory=lambda: os.environ.get("REC_MODEL"))


def test_a_field_whose_default_comes_from_a_factory_keeps_its_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A factory may read the environment (a clock, a counter): what it gave at write
    time is stored, so a read later, elsewhere, gives the same value back."""
    serde = TypedSerializer()
    monkeypatch.setenv("REC_MODEL", "gpt-a")
    written = Rec(id="a")
    blob = serde.dumps_typed(written)
    monkeypatch.setenv("REC_MODEL", "gpt-b")
    back = serde.loads_typed(blob)
    assert back.model == "gpt-a" and back == written


def test_a_pydantic_record_leaves_out_its_plain_defaults() -> None:
    serde = TypedSerializer()
    plain, full = Rec(id="a", model=None), Rec(id="a", flag=0, extra={"k": 1}, name="n")
    small, big = serde.dumps_typed(plain), serde.dumps_typed(full)
    assert small[0] == "msgpack" and b"extra" not in small[1] and b"flag" not in small[1]
    assert serde.loads_typed(small) == plain
    back = serde.loads_typed(big)
    assert back == full and type(back.flag) is int  # 0 is not the default False
    old = ormsgpack.packb(ormsgpack.Ext(11, ormsgpack.packb(  # written before: every field
        [Rec.__module__, Rec.__qualname__,
         {"id": "a", "flag": False, "extra": {}, "name": None, "model": None}])))
    assert serde.loads_typed(("msgpack", old)) == plain


@pytest.mark.parametrize("serde", [None, signed()], ids=["plain", "signed"])
def test_sqlite_gives_leaves_back_without_delete_returning(
    tmp_path: Path, serde: SignedSerializer | None
) -> None:
    """``DELETE ... RETURNING`` needs SQLite 3.35 (Debian 11 and RHEL 9 ship 3.34): the
    saver reads what a delete gives back first, so every statement runs on older ones,
    and the references still add up after retired writes, keep_last and prune: each
    leaf's count is the number of rows whose decoded value or write refers to it (a
    plain value row keeps them in its value alone: an empty ``leaves`` column)."""
    saver = SqliteSaver(tmp_path / "old.db", serde=serde, keep_last=2, snapshot_every=3)
    statements: list[str] = []
    saver._conn.set_trace_callback(statements.append)
    contents = run_chat(chat_app(saver), "t", 6)
    saver.prune(["t"], strategy="keep_latest")
    assert statements and not [s for s in statements if "RETURNING" in s.upper()]
    conn = saver._conn
    refs = counted(conn)
    assert refs == held_by_rows(conn) and refs
    columns = [c for (c,) in conn.execute("SELECT leaves FROM blobs WHERE leaves IS NOT NULL")]
    # plain values: every list in the value alone; signed ones (an envelope): listed
    assert columns and all((c == IN_VALUE) == (serde is None) for c in columns)
    state = saver.get_tuple({"configurable": {"thread_id": "t"}})
    assert [content(m) for m in state.checkpoint.channel_values["messages"]] == contents
    saver.close()


PRE_V6_TAGS = frozenset({b"msgpack", b"null", b"bytes", b"pickle", b"signed"})
"""The value tags a Redis reader older than v6 decodes (``TypedSerializer.loads_typed``,
and ``SignedSerializer``'s tag); any other it refuses (SerializationError)."""


def undeflated_tag(tag: bytes) -> bytes:
    """A stored value's tag without its deflate marker (redis-v8's ``records.DEFLATED``,
    v10's ``records.FRAMED``, after an ``&``): what the tag was before v8."""
    refers = tag.startswith(b"&")
    return tag[:refers] + tag[refers:].removeprefix(b"%%").removeprefix(b"%")


@pytest.mark.redis
@pytest.mark.parametrize("serde", [None, signed()], ids=["plain", "signed"])
def test_redis_values_referring_to_leaves_have_a_tag_old_readers_refuse(
        tmp_path: Path, serde: SignedSerializer | None) -> None:
    """A value that holds a ``LeafRef`` is stored with a tag no pre-v6 reader decodes
    (``&`` and the serializer's tag), so a worker not yet upgraded fails loudly on it
    instead of running on placeholders; a value without leaves keeps its old tag, and
    every v6 saver reads both."""
    saver = _redis(tmp_path, serde=serde)
    assert isinstance(saver, RedisSaver)
    try:
        app = chat_app(saver)
        config = {"configurable": {"thread_id": "t"}}
        texts = run_chat(app, "t", 3)
        app.invoke({"messages": [{"id": "s", "role": "user", "content": "short"}]}, config)
        nsk = ThreadKeys(saver.prefix, "t").ns("")
        stored = {f: v for f, v in read_values(saver.client, nsk).items()
                  if not f.startswith((LEAF.encode(), CHAIN.encode()))}
        values = {f: unlinked(v) for f, v in stored.items()}  # v9: links head the values
        chains = {f: ormsgpack.unpackb(link) for f, v in stored.items()
                  if (link := link_of(v)) is not None}
        refer = {f for f, v in values.items() if len(chains.get(f, [])) > 2}
        tags = {f: undeflated_tag(v.partition(b"\x00")[0]) for f, v in values.items()}
        assert refer and refer != set(values)
        assert {tags[f] for f in refer}.isdisjoint(PRE_V6_TAGS)
        # v13: their leaves' digests lifted out too ("*": ``lifted``)
        assert all(tags[f].startswith(b"&*") and tags[f][2:] in PRE_V6_TAGS for f in refer)
        assert {tags[f] for f in values if f not in refer} <= PRE_V6_TAGS
        assert [content(m) for m in app.get_state(config).values["messages"]] == \
            [*texts, "short"]
        plain_serde = None if serde is None else signed()
        keeps_none = SignedSerializer(Other(), SigningCodec.from_secret("s" * 32)) \
            if serde is not None else Other()
        for reader in (RedisSaver(saver.client, prefix=saver.prefix, serde=plain_serde),
                       RedisSaver(saver.client, prefix=saver.prefix, serde=keeps_none)):
            assert history(reader, "t") == history(saver, "t")
    finally:
        saver.close()


def test_leaf_hints_keep_the_newest_entries_over_all_threads() -> None:
    """``LeafHints``: one LRU of (thread, ns, digest); the least recently kept go first,
    and a thread whose every hint went is known no more."""
    hints = LeafHints(limit=3)
    hints.add("a", "", [b"1", b"2"])
    hints.add("b", "", [b"3"])
    hints.add("a", "", [b"1"])  # kept again: newest
    hints.add("c", "", [b"4"])  # over the limit: a's 2 goes
    assert len(hints) == 3
    assert hints.kept("a", "")(b"1") and not hints.kept("a", "")(b"2")
    assert not hints.kept("b", "x")(b"3") and hints.kept("b", "")(b"3")
    hints.add("c", "", [b"5", b"6"])  # b's 3 and a's 1 go
    assert not hints.knows("a", "") and not hints.knows("b", "") and hints.knows("c", "")
    assert len(hints) == 3


def test_sqlite_refuses_a_deflated_leaf_that_inflates_past_its_bound(tmp_path: Path) -> None:
    """A deflated leaf cell is inflated at most ``MAX_RATIO`` times its size: a zlib bomb
    written into the file is refused as an altered leaf, without inflating it all."""
    path = tmp_path / "c.db"
    with SqliteSaver(path, serde=signed()) as saver:
        run_chat(chat_app(saver), "t", 1)
    squeezer = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = b"\x00" * (1 << 20)
    bomb = b"z" + squeezer.compress(b"s") + b"".join(
        squeezer.compress(chunk) for _ in range(200)) + squeezer.flush()
    assert len(bomb) < 300_000
    conn = sqlite3.connect(path)
    conn.execute("UPDATE leaf_cells SET data = ?", (bomb,))
    conn.commit()
    conn.close()
    tracemalloc.start()
    try:
        with SqliteSaver(path, serde=signed()) as saver, pytest.raises(
                SerializationError, match="does not match its content hash"):
            saver.get_tuple({"configurable": {"thread_id": "t"}})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 40 << 20  # the bomb inflates to 200 MB; the bound stops at ~16x 200 KB


def test_sqlite_keeps_a_leaf_raw_when_it_would_deflate_past_the_bound() -> None:
    """The writer keeps a leaf deflated only when it inflates at most ``MAX_RATIO`` times,
    so every cell it writes reads back within the reader's bound."""
    # 100,001 letters: not base64 (whose length is a multiple of 4), so never a ``B`` cell
    for stored in (b"s" + b"a" * 100_001, b"s" + text(4000).encode()):
        cell = pack_leaf(stored)
        assert unpack_leaf(cell) == stored
        if cell[:1] == b"z":
            assert len(stored) <= MAX_RATIO * (len(cell) - 1)
    assert pack_leaf(b"s" + b"a" * 100_001)[:1] == b"s"  # ~1000x: kept raw


def test_sqlite_keeps_canonical_base64_text_as_its_bytes() -> None:
    """A text leaf that is exactly ``b64encode`` of some bytes is kept as those bytes
    (``B``, a quarter smaller); any other text keeps its cell as before, and every cell
    reads back byte for byte."""
    raw = os.urandom(768)
    stored = b"s" + base64.b64encode(raw)
    assert pack_leaf(stored) == b"B" + raw
    assert unpack_leaf(pack_leaf(stored)) == stored
    padded = b"s" + base64.b64encode(raw[:767])  # with "=" padding
    assert pack_leaf(padded)[:1] == b"B" and unpack_leaf(pack_leaf(padded)) == padded
    not_canonical = [
        stored[:-1],  # no longer a multiple of 4
        stored[:200] + b"\n" + stored[200:],  # a line break
        b"s" + base64.urlsafe_b64encode(raw).replace(b"-", b"_") + b"-_-_",  # another alphabet
        b"s" + b"QR==" * 100,  # decodes, but b64encode gives "QQ==" back
        b"b" + base64.b64encode(raw),  # a bytes leaf: kept as before
    ]
    for other in not_canonical:
        cell = pack_leaf(other)
        assert cell[:1] != b"B" and unpack_leaf(cell) == other
    # the smallest cell wins: deflate over base64 of very repetitive bytes
    words = b"s" + base64.b64encode(b"".join(
        f"word {i % 7} and word {i % 5}; ".encode() for i in range(120)))
    cell = pack_leaf(words)
    assert cell[:1] == b"z" and len(cell) < len(words) * 3 // 4
    assert unpack_leaf(cell) == words


def test_sqlite_refuses_an_edited_base64_leaf(tmp_path: Path) -> None:
    """A chat's base64 messages are kept as ``B`` cells and read back; a cell edited in
    the file fails its content hash and is refused."""
    path = tmp_path / "c.db"
    with SqliteSaver(path, serde=signed()) as saver:
        contents = run_chat(chat_app(saver), "t", 3)
    conn = sqlite3.connect(path)
    cells = [bytes(d) for (d,) in conn.execute("SELECT data FROM leaves")]
    assert cells and {c[:1] for c in cells} == {b"B"} and all(len(c) == 769 for c in cells)
    with SqliteSaver(path, serde=signed()) as saver:
        state = saver.get_tuple({"configurable": {"thread_id": "t"}})
        assert state is not None
        assert [content(m) for m in state.checkpoint.channel_values["messages"]] == contents
    conn.executemany("UPDATE leaf_cells SET data = ? WHERE data = ?", [
        (c[:100] + bytes([c[100] ^ 1]) + c[101:], c) for c in cells])  # one bit of each
    conn.commit()
    conn.close()
    with SqliteSaver(path, serde=signed()) as saver, pytest.raises(
            SerializationError, match="does not match its content hash"):
        saver.get_tuple({"configurable": {"thread_id": "t"}})


def test_sqlite_value_rows_keep_their_references_in_the_value_exactly(tmp_path: Path) -> None:
    """Plain value rows keep their references in the value alone, and every count still
    adds up, with no leaf leaked or lost, through keep_last, prune, ``delete_checkpoints``,
    ``copy_thread`` and ``delete_thread``."""
    saver = SqliteSaver(tmp_path / "c.db", keep_last=3, snapshot_every=3)
    conn = saver._conn

    def check(threads: set[str]) -> None:
        assert counted(conn) == held_by_rows(conn)
        assert {t for (t,) in conn.execute(
            "SELECT DISTINCT k.thread_id FROM leaves l JOIN thread_keys k ON k.key = l.thread_id"
        )} == threads

    contents = run_chat(chat_app(saver), "t", 9)
    assert conn.execute("SELECT COUNT(*) FROM blobs WHERE leaves = 'v'").fetchone()[0] > 0
    check({"t"})
    copy_thread(saver, "t", "u")
    check({"t", "u"})
    saver.prune(["t"], strategy="keep_latest")
    check({"t", "u"})
    ids = [c.checkpoint_id for c in saver.list_ids("u")]
    saver.delete_checkpoints("u", "", ids[1:])
    check({"t", "u"})
    saver.delete_thread("t")
    check({"u"})
    state = saver.get_tuple({"configurable": {"thread_id": "u"}})
    assert state is not None
    assert [content(m) for m in state.checkpoint.channel_values["messages"]] == contents
    saver.delete_thread("u")
    assert conn.execute("SELECT COUNT(*) FROM leaf_cells").fetchone()[0] == 0
    saver.close()



def test_schema_6_deletes_fail_loudly_on_rows_keeping_references_in_the_value(
        tmp_path: Path) -> None:
    """A schema 6 process that still has the file open gives a deleted row's references
    back from its ``leaves`` column alone (``SELECT leaves ... IS NOT NULL``, then
    ``release_leaves``): on ``IN_VALUE`` it must raise, rolling its transaction back,
    not release nothing and leak the leaves for good."""
    with SqliteSaver(tmp_path / "c.db") as saver:
        run_chat(chat_app(saver), "t", 3)
        conn = saver._conn
        rows = conn.execute("SELECT leaves FROM blobs WHERE leaves IS NOT NULL").fetchall()
        assert IN_VALUE in {c for (c,) in rows}
        for row in rows:
            if row[0] == IN_VALUE:
                with pytest.raises(TypeError):  # schema 6's unpack_digests: bytes('v')
                    release_leaves(conn, "t", [row])


def _nested(depth: int) -> Any:
    value: Any = text()
    for _ in range(depth):
        value = (value,)  # a tuple: one msgpack extension each
    return value


def test_digests_in_walks_a_fixed_depth_whatever_the_stack() -> None:
    """``digests_in`` reads references at most ``MAX_NESTING`` extensions deep, and
    gives the same answer from a deep stack: a row's form never depends on it."""
    serde = TypedSerializer()
    leaves: dict[bytes, bytes] = {}
    tag, data = serde.dumps_typed(split_leaves(_nested(MAX_NESTING), leaves))
    deeper_tag, deeper = serde.dumps_typed(split_leaves(_nested(MAX_NESTING + 1), {}))

    def at_depth(n: int, tag: str, data: bytes) -> list[bytes] | None:
        return at_depth(n - 1, tag, data) if n else digests_in(tag, data)

    assert digests_in(tag, data) == at_depth(300, tag, data) == list(leaves)
    assert digests_in(deeper_tag, deeper) is None
    assert at_depth(300, deeper_tag, deeper) is None


def _put_value(saver: SqliteSaver, value: Any, parent: str | None) -> str:
    checkpoint_id = new_checkpoint_id(parent)
    configurable = {"thread_id": "t", "checkpoint_ns": ""}
    if parent:
        configurable["checkpoint_id"] = parent
    versions = {"__start__": 2 if parent else 1}
    saver.put({"configurable": configurable},
              Checkpoint(id=checkpoint_id, ts="2026-01-01T00:00:00+00:00",
                         channel_values={"__start__": value}, channel_versions=versions,
                         versions_seen={}), {"source": "loop", "step": 1}, versions)
    return checkpoint_id


def test_a_deeply_nested_value_lists_its_references_and_gives_them_back(
        tmp_path: Path) -> None:
    """A value nested deeper than ``digests_in`` walks lists its references, so deleting
    it from a deep stack gives them back; no leaf is left without a row."""
    with SqliteSaver(tmp_path / "c.db") as saver:
        first = _put_value(saver, _nested(MAX_NESTING + 36), None)
        _put_value(saver, "small", first)
        conn = saver._conn
        (column,) = conn.execute("SELECT leaves FROM blobs WHERE version = 1").fetchone()
        assert isinstance(column, bytes) and len(column) == 32

        def deep(n: int) -> None:
            return deep(n - 1) if n else saver.delete_checkpoints("t", "", [first])

        deep(sys.getrecursionlimit() - _frames() - 60)  # too few frames left for 100 levels
        assert conn.execute("SELECT COUNT(*) FROM leaf_cells").fetchone()[0] == 0


def _frames() -> int:
    """How many frames the stack holds here."""
    frame, n = sys._getframe(), 0
    while frame is not None:
        frame, n = frame.f_back, n + 1  # type: ignore[assignment]
    return n


def test_a_row_whose_value_no_longer_gives_its_references_back_is_refused(
        tmp_path: Path) -> None:
    """An ``IN_VALUE`` row whose value does not parse (edited in the file) is refused
    with the store's error and nothing is deleted: never taken to hold no references."""
    with SqliteSaver(tmp_path / "c.db", keep_last=100) as saver:
        run_chat(chat_app(saver), "t", 3)
        conn = saver._conn
        before = counted(conn)
        with conn:
            assert conn.execute("UPDATE blobs SET blob = x'c1' WHERE leaves = ?",
                                (IN_VALUE,)).rowcount
        ids = [c.checkpoint_id for c in saver.list_ids("t")]
        with pytest.raises(CheckpointStoreError, match="cannot be read back from its value"):
            saver.delete_checkpoints("t", "", ids)
        assert counted(conn) == before
        assert [c.checkpoint_id for c in saver.list_ids("t")] == ids


def test_digests_in_reads_references_without_building_objects() -> None:
    """``digests_in`` finds every reference of a plain msgpack value, inside deltas and
    models too; anything else (a pickle, a signed envelope, garbage) is None, and a row
    whose value does not give its references back exactly lists them (``leaves_column``)."""
    serde = TypedSerializer()
    leaves: dict[bytes, bytes] = {}
    value = split_leaves({"m": [{"content": text()}, (text(), 3)],
                          "d": ChannelDelta(5, 1, (("n", ({"c": text()},)),))}, leaves)
    tag, data = serde.dumps_typed(value)
    assert tag == "msgpack" and len(leaves) == 3
    found = digests_in(tag, data)
    assert found is not None and sorted(found) == sorted(leaves)
    refs = pack_digests(leaves)
    assert leaves_column(tag, data, refs) == IN_VALUE
    assert leaves_column(tag, data, None) is None
    plain_tag, plain = serde.dumps_typed({"no": "leaves"})
    assert digests_in(plain_tag, plain) == []
    assert leaves_column(plain_tag, plain, refs) == refs  # not what the value holds
    assert digests_in("pickle", data) is None
    assert digests_in(b"\x01", b"\xc1") is None  # msgpack never uses 0xc1
    signed_tag, envelope = signed().dumps_typed(value)
    assert digests_in(signed_tag, envelope) is None
    assert leaves_column(signed_tag, envelope, refs) == refs
