"""A namespace's checkpoint ids in pages (redis-v11), against a real Redis.

The promise: a history of any length and any insertion order lists, pages, prunes and
deletes exactly as one sorted index of ids would, while every page stays small enough for
Redis's compact listpack encoding (about 45 bytes an id, not about 145). A namespace
written before pages (one ``idx`` sorted set) goes on in that form.
"""

from __future__ import annotations

import os
import random
import uuid
from typing import Any

import pytest
import redis

from durable_graph.store.base import Checkpoint
from durable_graph.store.redis import RedisSaver
from durable_graph.store.redis.history import PAGE_BYTES, RECORD_IN_PAGE_MAX
from durable_graph.store.redis.keys import (
    ID_DIR_V13,
    ID_PAGE,
    ID_PAGE_MAX,
    PAGE_RECORDS,
    ThreadKeys,
)
from tests.redis_records import (
    id_dir,
    id_of,
    read_record,
    record_ids,
    split_member,
    stored_record,
)

pytestmark = pytest.mark.redis


def cfg(thread: str, checkpoint_id: str | None = None) -> dict[str, Any]:
    conf: dict[str, Any] = {"thread_id": thread, "checkpoint_ns": ""}
    if checkpoint_id:
        conf["checkpoint_id"] = checkpoint_id
    return {"configurable": conf}


def put(saver: RedisSaver, thread: str, checkpoint_id: str) -> None:
    cp = Checkpoint(id=checkpoint_id, ts="2026-01-01T00:00:00+00:00", channel_values={"n": 1},
                    channel_versions={"n": 1}, versions_seen={})
    saver.put(cfg(thread), cp, {"source": "loop", "step": 0}, {"n": 1})


def listed(saver: RedisSaver, thread: str, before: str | None = None,
           limit: int | None = None) -> list[str]:
    bound = cfg(thread, before) if before else None
    return [t.checkpoint.id for t in saver.list(cfg(thread), before=bound, limit=limit)]


def pages(raw: redis.Redis, saver: RedisSaver, thread: str) -> dict[str, list[str]]:
    """Page name -> its ids (a member: the id, NUL, where its record is; since redis-v13
    the id's 16 bytes), as stored; every page listpack-encoded and within bounds."""
    nsk = ThreadKeys(saver.prefix, thread).ns("")
    text = id_of(raw, nsk)
    out = {}
    for name in raw.zrange(id_dir(raw, nsk), 0, -1):
        page = nsk.base.encode() + ID_PAGE.encode() + name
        ids = [text(split_member(m)[0]) for m in raw.zrange(page, 0, -1)]
        assert raw.object("encoding", page) == b"listpack", name
        assert 0 < len(ids) <= ID_PAGE_MAX and min(ids) >= text(name), (name, len(ids))
        out[text(name)] = ids
    assert raw.type(nsk.index) == b"string", "a paged namespace keeps no single index"
    return out


def _records_of(nsk: Any, name: str) -> bytes:
    """The record string of the page named by id ``name`` (its 16 bytes since redis-v13)."""
    return nsk.base.encode() + PAGE_RECORDS.encode() + uuid.UUID(name).bytes


def test_a_long_history_in_order_fills_pages_and_lists_newest_first(
        saver: RedisSaver, raw: redis.Redis) -> None:
    ids = sorted(str(uuid.uuid4()) for _ in range(3 * ID_PAGE_MAX + 7))
    for cid in ids:
        put(saver, "t", cid)
    stored = pages(raw, saver, "t")
    nsk = ThreadKeys(saver.prefix, "t").ns("")
    # in order, a page fills its allocator class: at least half of ID_PAGE_MAX ids, and
    # less than one record short of what Redis holds for its string (and its key: 200)
    record = max(len(stored_record(raw, nsk, cid) or b"") for cid in ids)
    for name in list(stored)[:-1]:
        held, used = raw.strlen(_records_of(nsk, name)), raw.memory_usage(_records_of(nsk, name))
        assert len(stored[name]) >= ID_PAGE_MAX // 2 and used - held < record + 200, name
    assert sum(map(len, stored.values())) == len(ids)
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        raw.zrevrange(nsk.index, 0, 0)  # what a release before pages reads: it fails loudly
    assert listed(saver, "t") == ids[::-1]
    assert saver.get_tuple(cfg("t")).checkpoint.id == ids[-1]  # type: ignore[union-attr]
    for at in (0, 1, ID_PAGE_MAX - 1, ID_PAGE_MAX, ID_PAGE_MAX + 1, len(ids) - 1):
        assert listed(saver, "t", before=ids[at], limit=ID_PAGE_MAX + 5) == \
            ids[max(0, at - ID_PAGE_MAX - 5):at][::-1], at
        found = saver.get_tuple(cfg("t", ids[at]))
        assert found is not None and found.checkpoint.id == ids[at]


def test_ids_in_any_order_list_as_one_sorted_index_would(
        saver: RedisSaver, raw: redis.Redis) -> None:
    rng = random.Random(7)
    ids = [str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(2 * ID_PAGE_MAX + 50)]
    for cid in ids:  # random order: pages split in the middle and the first one is renamed
        put(saver, "t", cid)
    stored = pages(raw, saver, "t")
    assert len(stored) >= 3
    flat = [cid for name in sorted(stored) for cid in stored[name]]
    assert flat == sorted(ids), "pages hold disjoint ranges, in the order of their names"
    assert listed(saver, "t") == sorted(ids, reverse=True)
    gone = "00000000-0000-0000-0000-000000000000"  # a bound before every id, never stored
    assert listed(saver, "t", before=gone) == []
    between = sorted(ids)[100][:-1] + "~"  # not stored: the page of the next smaller id
    assert listed(saver, "t", before=between, limit=3) == \
        [i for i in sorted(ids, reverse=True) if i < between][:3]


def test_deleting_and_pruning_empty_pages_and_keep_the_rest_in_order(
        saver: RedisSaver, raw: redis.Redis) -> None:
    ids = sorted(str(uuid.uuid4()) for _ in range(2 * ID_PAGE_MAX + 10))
    for cid in ids:
        put(saver, "t", cid)
    first_page = ids[:ID_PAGE_MAX]
    nsk = ThreadKeys(saver.prefix, "t").ns("")
    last = stored_record(raw, nsk, ids[-1])
    assert last is not None
    saver.delete_checkpoints("t", "", first_page + [ids[-1]])
    stored = pages(raw, saver, "t")
    assert not any(last in (raw.get(_records_of(nsk, name)) or b"") for name in stored), \
        "a deleted record's bytes are gone at once, not left until its page is tidied"
    assert ids[0] not in stored, "the emptied page left the directory"
    assert listed(saver, "t") == ids[ID_PAGE_MAX:-1][::-1]
    put(saver, "t", ids[0])  # before every page again: the first page takes it
    assert listed(saver, "t")[-1] == ids[0]
    assert saver.prune_thread("t", 5) == len(ids) - ID_PAGE_MAX - 1 + 1 - 5
    assert listed(saver, "t") == ids[-6:-1][::-1]
    assert len(pages(raw, saver, "t")) == 1
    saver.delete_checkpoints("t", "", ids[-6:-1])
    assert not raw.exists(nsk.index, nsk.pages, nsk.base + ID_DIR_V13), \
        "an emptied namespace keeps no index key"
    put(saver, "t", ids[0])
    saver.delete_thread("t")
    assert raw.keys(f"*{saver.prefix}:t*") == []


def test_keep_last_on_commit_reads_only_the_pages_it_keeps(
        redis_url: str, redis_prefix: str, raw: redis.Redis) -> None:
    with RedisSaver.from_url(redis_url, prefix=redis_prefix, keep_last=3) as kept:
        ids = sorted(str(uuid.uuid4()) for _ in range(ID_PAGE_MAX + 4))
        for cid in ids:
            put(kept, "t", cid)
        assert listed(kept, "t") == ids[-3:][::-1]
        assert sum(len(p) for p in pages(raw, kept, "t").values()) == 3


def test_a_namespace_with_one_index_goes_on_in_that_form(
        saver: RedisSaver, raw: redis.Redis) -> None:
    """As a namespace written before redis-v11: its ids in one ``idx`` sorted set."""
    ids = sorted(str(uuid.uuid4()) for _ in range(5))
    for cid in ids[:3]:
        put(saver, "t", cid)
    nsk = ThreadKeys(saver.prefix, "t").ns("")
    records = {cid: read_record(raw, nsk, cid) for cid in record_ids(raw, nsk)}
    for name in raw.zrange(id_dir(raw, nsk), 0, -1):  # the layout before pages
        raw.delete(nsk.base.encode() + ID_PAGE.encode() + name,
                   nsk.base.encode() + PAGE_RECORDS.encode() + name)
    raw.delete(nsk.index, nsk.pages, nsk.base + ID_DIR_V13)
    for cid, record in records.items():
        raw.set(nsk.checkpoint(cid), record or b"")
        raw.zadd(nsk.index, {cid: 0})
    for cid in ids[3:]:
        put(saver, "t", cid)
    assert not raw.exists(nsk.pages, nsk.base + ID_DIR_V13)
    assert [i.decode() for i in raw.zrange(nsk.index, 0, -1)] == ids
    assert listed(saver, "t") == ids[::-1]
    assert saver.prune_thread("t", 2) == 3
    assert listed(saver, "t") == ids[-2:][::-1]
    saver.delete_checkpoints("t", "", ids[-2:])
    assert not raw.exists(nsk.index), "emptied: the namespace's next id starts a page"
    put(saver, "t", ids[0])
    assert list(pages(raw, saver, "t")) == [ids[0]]


def test_large_records_start_a_page_by_bytes_and_the_largest_keep_their_own_key(
        saver: RedisSaver, raw: redis.Redis) -> None:
    """A commit writes its page's record string whole: a page of large records closes at
    ``PAGE_BYTES`` (so a commit copies about that much at most), and a record over
    ``RECORD_IN_PAGE_MAX`` keeps a key of its own."""
    ids = sorted(str(uuid.uuid4()) for _ in range(80))
    for i, cid in enumerate(ids):
        cp = Checkpoint(id=cid, ts="2026-01-01T00:00:00+00:00", channel_values={"n": 1},
                        channel_versions={"n": 1}, versions_seen={})
        note = os.urandom(6000 if i == 40 else 1500).hex()  # about 6 KB deflated once, else 1.6
        saver.put(cfg("t"), cp, {"source": "loop", "step": i, "note": note}, {"n": 1})
    nsk = ThreadKeys(saver.prefix, "t").ns("")
    stored = pages(raw, saver, "t")
    assert len(stored) >= 3 and all(len(p) < ID_PAGE_MAX for p in stored.values())
    assert all(raw.strlen(_records_of(nsk, name)) < PAGE_BYTES + RECORD_IN_PAGE_MAX
               for name in stored)
    own = lambda cid: nsk.checkpoint("").encode() + uuid.UUID(cid).bytes  # noqa: E731
    assert raw.exists(own(ids[40])) and not raw.exists(own(ids[39]))
    assert listed(saver, "t") == ids[::-1]
    got = saver.get_tuple(cfg("t", ids[40]))
    assert got is not None and len(got.metadata["note"]) == 12000
    saver.delete_checkpoints("t", "", [ids[40]])
    assert not raw.exists(own(ids[40])) and listed(saver, "t") == \
        [i for i in ids[::-1] if i != ids[40]]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_puts_rewrites_deletes_and_prunes_match_one_sorted_index(
        saver: RedisSaver, raw: redis.Redis, seed: int) -> None:
    """A model check: random commits (new ids in and out of order, an existing id written
    again with new metadata), deletes and prunes, against a sorted list of ids and the step
    each was last written with; after every operation the listed history, a read by id and
    the pages' invariants (listpack, ranges in the order of their names) agree."""
    rng = random.Random(seed)
    model: dict[str, int] = {}
    most = 0  # pages at once: the run must split pages, not only fill one
    thread = f"m{seed}"

    def write(cid: str, step: int) -> None:
        cp = Checkpoint(id=cid, ts="2026-01-01T00:00:00+00:00", channel_values={"n": 1},
                        channel_versions={"n": 1}, versions_seen={})
        saver.put(cfg(thread), cp, {"source": "loop", "step": step}, {"n": 1})
        model[cid] = step

    for op in range(400):
        roll = rng.random()
        if roll < 0.9 or not model:
            cid = (str(uuid.UUID(int=rng.getrandbits(128))) if rng.random() < 0.8 or not model
                   else rng.choice(sorted(model)))  # now and then one written before
            write(cid, op)
        elif roll < 0.98:
            gone = rng.sample(sorted(model), k=min(len(model), rng.randint(1, 5)))
            saver.delete_checkpoints(thread, "", gone)
            for cid in gone:
                del model[cid]
        else:
            keep = rng.randint(max(1, len(model) * 3 // 4), max(1, len(model)))
            saver.prune_thread(thread, keep)
            for cid in sorted(model)[:-keep]:
                del model[cid]
        if op % 40 == 39 or op == 399:
            assert listed(saver, thread) == sorted(model, reverse=True), op
            if model:
                stored = pages(raw, saver, thread)
                flat = [cid for name in sorted(stored) for cid in stored[name]]
                assert flat == sorted(model), op
                most = max(most, len(stored))
                for cid in rng.sample(sorted(model), k=min(5, len(model))):
                    got = saver.get_tuple(cfg(thread, cid))
                    assert got is not None and got.metadata["step"] == model[cid], (op, cid)
    assert most >= 2
