"""A namespace's channel values in pages (redis-v12), against a real Redis.

The promise: values of any size, under any channel name (odd bytes and commas in it too),
written and deleted in any order, read back exactly as stored, while every value page stays
small enough for Redis's compact listpack encoding, a value no checkpoint reads any more
goes, and a thread deleted leaves no key behind. A namespace written before (one ``blobs``
hash) goes on in that form.
"""

from __future__ import annotations

import random
import uuid
from typing import Any

import pytest
import redis

from durable_graph.store.base import Checkpoint
from durable_graph.store.redis import RedisSaver
from durable_graph.store.redis.history import PAGE_BYTES, RECORD_IN_PAGE_MAX
from durable_graph.store.redis.keys import (
    ID_PAGE_MAX,
    VALUE_HEAP,
    VALUE_PAGE,
    VALUES_MARK_V13,
    ThreadKeys,
    blob_field,
)
from tests.redis_records import read_values, value_dir

pytestmark = pytest.mark.redis

CHANNELS = ("log", "odd\x01name,1", "caf\u00e9", "x")


def cfg(thread: str, checkpoint_id: str | None = None) -> dict[str, Any]:
    conf: dict[str, Any] = {"thread_id": thread, "checkpoint_ns": ""}
    if checkpoint_id:
        conf["checkpoint_id"] = checkpoint_id
    return {"configurable": conf}


def value_pages(raw: redis.Redis, saver: RedisSaver, thread: str) -> dict[bytes, list[bytes]]:
    """Page name -> its members, as stored; every page listpack-encoded, within bounds,
    holding no key below its name, its string within bounds."""
    nsk = ThreadKeys(saver.prefix, thread).ns("")
    out = {}
    for name in raw.zrange(value_dir(raw, nsk), 0, -1):
        page = nsk.base.encode() + VALUE_PAGE.encode() + name  # a compact key: bytes
        members = raw.zrange(page, 0, -1)
        assert raw.object("encoding", page) == b"listpack", name
        assert 0 < len(members) <= ID_PAGE_MAX and min(members) >= name, name
        assert raw.strlen(nsk.base.encode() + VALUE_HEAP.encode() + name) <= \
            PAGE_BYTES + RECORD_IN_PAGE_MAX
        out[name] = members
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_values_read_back_and_go_with_the_last_checkpoint_that_reads_them(
        saver: RedisSaver, raw: redis.Redis, seed: int) -> None:
    """A model check: checkpoints with values of random sizes (a few over a page's bound,
    kept in keys of their own) on channels with plain and odd names, ids in and out of
    order, random deletes and prunes; after every few operations each kept checkpoint reads
    its values back, the stored fields are exactly those the kept checkpoints read, and the
    pages keep their invariants; deleting the thread leaves no key."""
    rng = random.Random(seed)
    thread = f"v{seed}"
    nsk = ThreadKeys(saver.prefix, thread).ns("")
    model: dict[str, dict[str, Any]] = {}
    versions: dict[str, dict[str, int]] = {}
    next_version = 0
    most = 0
    for op in range(300):
        roll = rng.random()
        if roll < 0.85 or not model:
            values, vs = {}, {}
            for ch in rng.sample(CHANNELS, k=rng.randint(1, 3)):
                next_version += 1
                size = rng.choice((40, 300, 900, 3000, 6000))
                values[ch] = [rng.randbytes(size).hex()[:size], next_version]
                vs[ch] = next_version
            cid = str(uuid.UUID(int=rng.getrandbits(128)))
            saver.put(cfg(thread), Checkpoint(id=cid, ts="2026-01-01T00:00:00+00:00",
                                              channel_values=values, channel_versions=vs,
                                              versions_seen={}),
                      {"source": "loop", "step": op}, vs)
            model[cid], versions[cid] = values, vs
        elif roll < 0.97:
            gone = rng.sample(sorted(model), k=min(len(model), rng.randint(1, 4)))
            saver.delete_checkpoints(thread, "", gone)
            for cid in gone:
                del model[cid], versions[cid]
        else:
            keep = rng.randint(max(1, len(model) * 2 // 3), len(model))
            saver.prune_thread(thread, keep)
            for cid in sorted(model)[:-keep]:
                del model[cid], versions[cid]
        if op % 30 == 29 or op == 299:
            for cid in rng.sample(sorted(model), k=min(6, len(model))):
                got = saver.get_tuple(cfg(thread, cid))
                assert got is not None and got.checkpoint.channel_values == model[cid], op
            wanted = {blob_field(ch, v).encode() for vs in versions.values()
                      for ch, v in vs.items()}
            assert set(read_values(raw, nsk)) == wanted, op
            most = max(most, len(value_pages(raw, saver, thread)))
    assert most >= 3, "the run splits value pages, not only fills one"
    assert raw.get(nsk.blobs) == VALUES_MARK_V13.encode()
    saver.delete_thread(thread)
    assert list(raw.scan_iter(match=f"{{{saver.prefix}:{thread}}}*")) == []


def test_a_namespace_with_one_hash_of_values_goes_on_in_that_form(
        saver: RedisSaver, raw: redis.Redis) -> None:
    """A namespace whose values are one hash (redis-v11 and before) keeps writing and
    reading them there, and drops them from there; it has no value pages."""
    nsk = ThreadKeys(saver.prefix, "old").ns("")
    raw.hset(nsk.blobs, "unused\x001", b"")  # what an older release left: a hash
    ids = sorted(str(uuid.uuid4()) for _ in range(3))
    for i, cid in enumerate(ids):
        values = {"log": ["entry" * 20, i]}
        saver.put(cfg("old"), Checkpoint(id=cid, ts="2026-01-01T00:00:00+00:00",
                                         channel_values=values,
                                         channel_versions={"log": i + 1}, versions_seen={}),
                  {"source": "loop", "step": i}, {"log": i + 1})
    assert raw.type(nsk.blobs) == b"hash" and not raw.exists(nsk.value_pages)
    assert {blob_field("log", v).encode() for v in (1, 2, 3)} <= set(raw.hkeys(nsk.blobs))
    got = saver.get_tuple(cfg("old", ids[1]))
    assert got is not None and got.checkpoint.channel_values == {"log": ["entry" * 20, 1]}
    saver.delete_checkpoints("old", "", ids[:2])
    assert set(raw.hkeys(nsk.blobs)) == {b"unused\x001", blob_field("log", 3).encode()}
