"""Redis-v13 records on a real Redis: a record's head kept compact where Redis stores it,
given back byte for byte wherever the scripts read it (``store/redis/compact.py``).

What could go wrong is checked against what the saver sent: every record read back is
the canonical packing of its own fields (so the bytes a signature covers are unchanged,
and signed stores verify), fields that cannot compact are spelled out, a namespace's
channel names live and die with it, and a record whose names are lost is refused by name.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from typing import Annotated, Any, TypedDict

import pytest
import redis

from durable_graph import END, START, StateGraph
from durable_graph.errors import CheckpointStoreError
from durable_graph.graph.message import add_messages
from durable_graph.store.base import Checkpoint, new_checkpoint_id
from durable_graph.store.codec import SignedSerializer, SigningCodec
from durable_graph.store.memory import MemorySaver
from durable_graph.store.redis import RedisSaver
from durable_graph.store.redis.compact import COMPACT
from durable_graph.store.redis.keys import ThreadKeys
from durable_graph.store.redis.records import (
    SPLIT,
    SPLIT_NUMBERED,
    pack_record,
    unpack_record,
)
from durable_graph.store.serde import TypedSerializer
from tests.redis_records import read_record, read_values, record_ids, stored_record, stored_values

pytestmark = pytest.mark.redis


class Chat(TypedDict):
    messages: Annotated[list[Any], add_messages]
    turns: int


def _chat(saver: Any) -> Any:
    g = StateGraph(Chat)
    g.add_node("reply", lambda s: {"messages": [{"id": f"a{s['turns']}", "role": "ai",
                                                 "content": "re"}],
                                   "turns": s["turns"] + 1})
    g.add_edge(START, "reply")
    g.add_edge("reply", END)
    return g.compile(checkpointer=saver)


def cfg(thread: str) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread}}


@pytest.fixture(params=["plain", "signed"])
def saver(request: pytest.FixtureRequest, redis_url: str,
          redis_prefix: str) -> Iterator[RedisSaver]:
    serde = None if request.param == "plain" else SignedSerializer(
        TypedSerializer(), SigningCodec.from_secret("h" * 32))
    with RedisSaver.from_url(redis_url, prefix=redis_prefix, serde=serde) as s:
        yield s


@pytest.fixture
def client(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url)


def _history(app: Any, thread: str) -> list[tuple[Any, ...]]:
    return [(s.values, s.next, s.metadata["step"], s.metadata["source"])
            for s in app.get_state_history(cfg(thread))]


def test_a_chat_keeps_compact_heads_and_reads_back_what_was_sent(
        saver: RedisSaver, client: redis.Redis) -> None:
    app = _chat(saver)
    for turn in range(6):
        app.invoke({"messages": [{"id": f"u{turn}", "role": "user", "content": "hi"}],
                    "turns": turn}, cfg("t"))
    nsk = ThreadKeys(saver.prefix, "t").ns("")
    ids = record_ids(client, nsk)
    assert len(ids) == 18
    compact = 0
    for cid in ids:
        stored, whole = stored_record(client, nsk, cid), read_record(client, nsk, cid)
        assert stored is not None and whole is not None
        if stored[:1] == COMPACT:
            compact += 1
            assert whole[:1] in (SPLIT, SPLIT_NUMBERED) and len(stored) < len(whole)
            # the head the scripts give back is the saver's own packing of those fields,
            # byte for byte (the rest is kept as it came), so a signature still verifies
            head = 3 + int.from_bytes(whole[1:3], "big")
            assert pack_record(unpack_record(whole, cid), cid)[:head] == whole[:head]
            assert stored.endswith(whole[head:])
        else:
            assert stored == whole
    assert compact >= 16  # all but records too small to split (the first input's)
    names = client.get(nsk.channel_names)
    assert names is not None and names.endswith(b"\x00")
    # the channels its fields name and the serializer tags its values carry
    tags = {b"msgpack", b"%%msgpack"} if saver.serde.__class__ is TypedSerializer else {
        b"signed", b"%%signed"}
    assert set(names[:-1].split(b"\x00")) == {
        b"__start__", b"messages", b"turns", b"branch:to:reply"} | tags
    # the same history as a store that keeps no compact record
    assert _history(app, "t") == _history(_replayed(6), "t")
    # where a release before v13 looks for pages, a text: it fails loudly (WRONGTYPE)
    # instead of finding no checkpoint and starting the thread over
    for old_dir in (nsk.pages, nsk.value_pages):
        with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
            client.zrevrange(old_dir, 0, 0)


def _replayed(turns: int) -> Any:
    app = _chat(MemorySaver())
    for turn in range(turns):
        app.invoke({"messages": [{"id": f"u{turn}", "role": "user", "content": "hi"}],
                    "turns": turn}, cfg("t"))
    return app


def _put(saver: RedisSaver, versions: dict[str, Any], parent: str | None,
         cid: str | None = None) -> str:
    conf: dict[str, Any] = {"thread_id": "odd", "checkpoint_ns": ""}
    if parent:
        conf["checkpoint_id"] = parent
    cp = Checkpoint(id=cid or new_checkpoint_id(), ts="2026-01-01T00:00:00+00:00",
                    channel_values={ch: f"value of {ch!r}" * 8 for ch in versions},
                    channel_versions=versions,
                    versions_seen={"__input__": {}, "__start__": {"__start__": 1}})
    saver.put({"configurable": conf}, cp, {"source": "loop", "step": 1, "parents": {}},
              versions)
    return cp.id


def test_fields_that_cannot_compact_are_spelled_out_and_read_back(
        saver: RedisSaver, client: redis.Redis) -> None:
    versions = {"plain": 7, "text": "00000000000000000000000000000002.0.25",
                "big": 2**50, "zero": 0, "crème": 2**48 - 1}
    first = _put(saver, {"plain": 1}, None)
    cid = _put(saver, versions, first)
    nsk = ThreadKeys(saver.prefix, "odd").ns("")
    stored = stored_record(client, nsk, cid)
    assert stored is not None and stored[:1] == COMPACT
    for spelled in (b"text\x0000000000000000000000000000000002.0.25",
                    b"big\x00" + str(2**50).encode()):
        assert spelled in stored
    for compacted in (b"zero\x000", "crème\x00".encode() + str(2**48 - 1).encode()):
        assert compacted not in stored
    got = saver.get_tuple(cfg("odd"))
    assert got is not None
    assert got.checkpoint.channel_versions == versions
    assert got.checkpoint.channel_values == {ch: f"value of {ch!r}" * 8 for ch in versions}
    assert got.parent_config is not None
    assert got.parent_config["configurable"]["checkpoint_id"] == first


def test_past_254_names_fields_are_spelled_out(saver: RedisSaver, client: redis.Redis) -> None:
    parent = None
    channels = [f"ch{i:03}" for i in range(300)]
    for start in range(0, 300, 100):
        parent = _put(saver, {ch: 1 for ch in channels[start:start + 100]}, parent)
    nsk = ThreadKeys(saver.prefix, "odd").ns("")
    names = client.get(nsk.channel_names)
    assert names is not None and len(names.split(b"\x00")) - 1 == 254
    stored = stored_record(client, nsk, parent)
    assert stored is not None and b"ch299\x001" in stored and b"ch200" not in stored[:40]
    got = saver.get_tuple(cfg("odd"))
    assert got is not None and got.checkpoint.channel_versions == {
        ch: 1 for ch in channels[200:]}


def test_names_expire_and_go_with_the_thread(saver: RedisSaver, client: redis.Redis) -> None:
    app = _chat(saver)
    app.invoke({"messages": [], "turns": 0}, cfg("t"))
    names = ThreadKeys(saver.prefix, "t").ns("").channel_names
    assert client.exists(names) and client.ttl(names) == -1
    saver.set_ttl("t", 600)
    assert 0 < client.ttl(names) <= 600
    app.invoke({"messages": [], "turns": 1}, cfg("t"))
    assert 0 < client.ttl(names) <= 600
    saver.delete_thread("t")
    assert not client.exists(names)
    app.invoke({"messages": [], "turns": 0}, cfg("t"))  # numbered afresh, read back
    assert _chat(saver).get_state(cfg("t")).values["turns"] == 1


def test_a_record_whose_names_are_lost_is_refused_by_name(
        saver: RedisSaver, client: redis.Redis) -> None:
    app = _chat(saver)
    for turn in range(2):
        app.invoke({"messages": [], "turns": turn}, cfg("t"))
    client.delete(ThreadKeys(saver.prefix, "t").ns("").channel_names)
    with pytest.raises(CheckpointStoreError, match="channel number 1, which its namespace "
                       "does not hold"):
        saver.get_tuple(cfg("t"))


class OddTags(TypedSerializer):
    """Tags no serializer of ours writes: starting with the bytes compact values start
    with, longer than a numbered tag, or chosen per value."""

    TAGS = {"a": "\x04odd", "b": "\x05odd", "c": "t" * 70, "d": "\x07", "e": "msgpack"}

    def dumps_typed(self, obj: Any) -> tuple[str, bytes]:
        tag, data = super().dumps_typed(obj)
        if isinstance(obj, str) and obj[:1] in self.TAGS:
            return self.TAGS[obj[:1]], data
        return tag, data

    def loads_typed(self, data: tuple[str, bytes]) -> Any:
        tag, raw = data
        return super().loads_typed(("msgpack" if tag in self.TAGS.values() else tag, raw))


def test_values_with_odd_tags_and_versions_read_back_as_sent(
        redis_url: str, redis_prefix: str, client: redis.Redis) -> None:
    with RedisSaver.from_url(redis_url, prefix=redis_prefix, serde=OddTags()) as saver:
        values = {ch: ch + " value" * 10 for ch in ("a", "b", "c", "d", "e")}  # not inline
        versions: dict[str, Any] = {"a": 1, "b": 2, "c": 3, "d": 4,
                                    "e": "00000000000000000000000000000002.0.25"}
        cp = Checkpoint(id=new_checkpoint_id(), ts="2026-01-01T00:00:00+00:00",
                        channel_values=values, channel_versions=versions,
                        versions_seen={})
        saver.put({"configurable": {"thread_id": "v", "checkpoint_ns": ""}}, cp,
                  {"source": "loop", "step": 1, "parents": {}}, versions)
        got = saver.get_tuple(cfg("v"))
        assert got is not None and got.checkpoint.channel_values == values
        assert got.checkpoint.channel_versions == versions
        nsk = ThreadKeys(redis_prefix, "v").ns("")
        stored = stored_values(client, nsk)
        assert read_values(client, nsk) == {
            f.encode(): v for f, v in _sent(saver, cp).items()}
        starts = {v[:2] for v in stored.values()}
        assert {b"\x05\x04", b"\x05\x05", b"\x05\x07"} <= starts  # kept as sent, behind 5
        assert any(v.startswith(b"t" * 70 + b"\x00") for v in stored.values())  # not numbered
        assert b"\xff" + b"e\x0000000000000000000000000000000002.0.25" in stored  # spelled out


def _sent(saver: RedisSaver, cp: Checkpoint) -> dict[str, bytes]:
    """What the saver sends for each of ``cp``'s values (field -> stored bytes)."""
    from durable_graph.store.redis.keys import blob_field
    from durable_graph.store.redis.records import encode_value

    return {blob_field(ch, v): encode_value(saver.serde.dumps_typed(cp.channel_values[ch]))
            for ch, v in cp.channel_versions.items()}


def _parent(saver: RedisSaver, thread: str, cid: str) -> str | None:
    got = saver.get_tuple(cfg_at(thread, cid))
    assert got is not None, cid
    return (got.parent_config or {}).get("configurable", {}).get("checkpoint_id")


def cfg_at(thread: str, cid: str) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread, "checkpoint_ns": "", "checkpoint_id": cid}}


def _put_child(saver: RedisSaver, thread: str, cid: str, parent: str | None) -> None:
    conf: dict[str, Any] = {"thread_id": thread, "checkpoint_ns": ""}
    if parent:
        conf["checkpoint_id"] = parent
    cp = Checkpoint(id=cid, ts="2026-01-01T00:00:00+00:00", channel_values={"n": 1},
                    channel_versions={"n": 1},
                    versions_seen={"__input__": {}, "__start__": {"__start__": 1}})
    saver.put({"configurable": conf}, cp, {"source": "loop", "step": 1, "parents": {}},
              {"n": 1})


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_parents_flagged_as_the_id_before_read_back_through_inserts_deletes_and_prunes(
        saver: RedisSaver, client: redis.Redis, seed: int) -> None:
    """A model check: a record whose parent is the id before it does not store it (flag 2);
    ids inserted between, deleted or pruned around it never change the parent it reads."""
    rng = random.Random(seed)
    nsk = ThreadKeys(saver.prefix, "p").ns("")
    model: dict[str, str | None] = {}
    ids = sorted(str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(400))
    flagged = 0
    for op in range(160):
        roll = rng.random()
        if roll < 0.75 or len(model) < 3:
            cid = rng.choice([i for i in ids if i not in model])
            older = sorted(i for i in model if i < cid)
            # mostly the id before it (a thread's usual commit), else any, else none
            parent = (older[-1] if older and rng.random() < 0.7 else
                      rng.choice(older) if older and rng.random() < 0.8 else None)
            _put_child(saver, "p", cid, parent)
            model[cid] = parent
            flagged += ((stored_record(client, nsk, cid) or b"\0\0")[1] & 3) == 2
        elif roll < 0.92:
            gone = rng.sample(sorted(model), k=min(len(model) - 1, rng.randint(1, 5)))
            saver.delete_checkpoints("p", "", gone)
            for cid in gone:
                del model[cid]
        else:
            keep = rng.randint(2, len(model))
            saver.prune_thread("p", keep)
            for cid in sorted(model)[:-keep]:
                del model[cid]
        if op % 10 == 9 or op == 159:
            for cid in rng.sample(sorted(model), k=min(12, len(model))):
                assert _parent(saver, "p", cid) == model[cid], (op, cid)
            listed = {t.checkpoint.id: (t.parent_config or {}).get("configurable", {}).get(
                "checkpoint_id") for t in saver.list(cfg("p"))}
            assert listed == model, op
            refs = {r.checkpoint_id: r.parent_id for r in saver.list_ids("p")}
            assert refs == {c: p or None for c, p in model.items()} or refs == {
                c: p or "" for c, p in model.items()}, op
    assert flagged > 40, "a parent that is the id before is flagged, not stored"


def test_leaf_digests_are_lifted_and_a_link_altered_to_another_leaf_is_refused(
        redis_url: str, redis_prefix: str, client: redis.Redis) -> None:
    """A value's leaf digests are stored once, in its link (``lifted``); the bytes put
    back are those signed, so a link made to name another leaf of the thread is refused."""
    import ormsgpack

    from durable_graph.errors import SignatureError
    from durable_graph.store.redis.keys import LEAF, blob_field, leaf_digest
    from durable_graph.store.redis.records import link_of, unlinked
    from tests.redis_records import write_value
    from tests.unit.test_leaf_dedup import chat_app, run_chat

    serde = SignedSerializer(TypedSerializer(), SigningCodec.from_secret("h" * 32))
    with RedisSaver.from_url(redis_url, prefix=redis_prefix, serde=serde) as saver:
        app = chat_app(saver)
        contents = run_chat(app, "t", 2)
        assert [m["content"] for m in _dicts(app.get_state(cfg("t")).values["messages"])] \
            == contents
        nsk = ThreadKeys(redis_prefix, "t").ns("")
        sent = read_values(client, nsk)
        lifted = {f: v for f, v in sent.items()
                  if link_of(v) and b"*" in unlinked(v).partition(b"\0")[0]}
        assert lifted, "values that refer to leaves keep their digests in their links only"
        for value in lifted.values():
            for leaf in ormsgpack.unpackb(link_of(value) or b"")[2:]:
                assert leaf_digest(leaf) not in unlinked(value)
        latest = saver.get_tuple(cfg("t"))
        assert latest is not None
        messages = blob_field("messages", latest.checkpoint.channel_versions["messages"])
        value = sent[messages.encode()]
        link = ormsgpack.unpackb(link_of(value) or b"")
        others = [f for f in sent if f.startswith(LEAF.encode()) and f.decode() not in link]
        assert others
        link[-1] = others[0].decode()  # the link names another leaf of the thread
        forged = ormsgpack.packb(link)
        write_value(client, nsk, messages, b"\x03" + len(forged).to_bytes(4, "big") + forged
                    + unlinked(value))
        with pytest.raises(SignatureError):
            saver.get_tuple(cfg("t"))


def _dicts(messages: list[Any]) -> list[dict[str, Any]]:
    return [m if isinstance(m, dict) else {"content": m.content} for m in messages]


def test_ids_are_bytes_until_another_id_comes_and_bounds_list_as_text_sorts(
        saver: RedisSaver, client: redis.Redis) -> None:
    """A namespace of canonical UUIDs keeps their 16 bytes; a listing's bound of any text
    lists exactly the ids whose text sorts below it; the first id that is no such UUID has
    the namespace's ids spelled out, and every read goes on as one sorted index of texts."""
    from durable_graph.store.redis.keys import ID_PAGES_MARK, ID_PAGES_MARK_V13

    rng = random.Random(5)
    ids = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(150)]
    for cid in ids:
        _put_child(saver, "b", cid, None)
    nsk = ThreadKeys(saver.prefix, "b").ns("")
    assert client.get(nsk.index) == ID_PAGES_MARK_V13.encode()

    def listed(before: str | None = None, limit: int | None = None) -> list[str]:
        bound = cfg_at("b", before) if before is not None else None
        return [t.checkpoint.id for t in saver.list(cfg("b"), before=bound, limit=limit)]

    def bounds(known: list[str]) -> list[str]:
        picked = rng.sample(known, 4)
        return [*picked, *(c[:n] for c in picked for n in (1, 9, 35)),
                *(c[:n] + x for c in picked for n in (0, 13, 30) for x in "-0g~"),
                *(c.upper() for c in picked), *(c + "0" for c in picked), "~", "0", "f" * 40]

    def check(known: list[str]) -> None:
        for bound in bounds(known):  # the first three below it, as text sorts
            assert listed(bound, 3) == sorted((i for i in known if i < bound),
                                              reverse=True)[:3], bound

    check(ids)
    others = ["zzz", "checkpoint-1", "1", "18000000-0000-0000-0000-00000000000G"]
    for cid in others:  # not canonical UUIDs: the ids are spelled out, for good
        _put_child(saver, "b", cid, None)
    assert client.get(nsk.index) == ID_PAGES_MARK.encode()
    everything = ids + others
    assert listed() == sorted(everything, reverse=True)
    check(everything)
    assert saver.get_tuple(cfg_at("b", "zzz")) is not None
    assert saver.get_tuple(cfg("b")).checkpoint.id == "zzz"  # type: ignore[union-attr]
