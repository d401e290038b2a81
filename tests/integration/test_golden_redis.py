"""Committed Redis stores (tests/golden/redis-v*.json) stay readable and resumable.

The same golden tests as ``tests/unit/test_golden_checkpoints.py``, on a signed
RedisSaver: v1 was written by the release before signatures were bound to their
place, v2 by the one that binds them (its values are bound to the key prefix, so
it is restored under the prefix it was written with, on a redis-server this test
starts for itself).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import redis

from durable_graph.errors import SignatureError
from durable_graph.store.redis import RedisSaver
from durable_graph.store.redis.keys import ThreadKeys
from tests.redis_records import value_fields

GOLDEN = Path(__file__).resolve().parents[1] / "golden"


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


_unit = _load("golden_unit_tests", Path(__file__).resolve().parents[1] / "unit"
              / "test_golden_checkpoints.py")
gen = _unit.gen

SHARED = (
    "test_history_reads_every_recorded_checkpoint",
    "test_complete_thread_state_and_history",
    "test_complete_thread_resumes_to_nothing_and_continues_with_new_input",
    "test_complete_thread_time_travel_from_an_old_checkpoint",
    "test_interrupted_thread_state",
    "test_interrupted_thread_resumes",
    "test_interrupted_thread_resumes_by_interrupt_id",
    "test_failed_thread_state_shows_error_and_finished_sibling",
    "test_failed_thread_resumes_without_rerunning_the_sibling",
    "test_entry_thread_state",
    "test_entry_thread_resumes_with_recorded_task_results",
    "test_chat_thread_history_reads_back_through_its_delta_chains",
    "test_chat_thread_resumes_with_a_new_turn",
)
"""The golden tests that run here on Redis, with this module's fixtures."""
globals().update({name: getattr(_unit, name) for name in SHARED})


@pytest.fixture(scope="module")
def golden_redis(spawn_redis: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A redis-server of this module's own: the golden prefix collides with no one's."""
    proc, url = spawn_redis.start(str(tmp_path_factory.mktemp("golden-redis")))
    yield url
    spawn_redis.stop(proc)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "store_name" in metafunc.fixturenames:
        metafunc.parametrize("store_name", _unit.stores_for(metafunc.function.__name__,
                                                            list(gen.REDIS_FORMATS.values())))


def _restore(url: str, store_name: str) -> redis.Redis:
    client = redis.Redis.from_url(url)
    client.flushall()  # our own server (golden_redis), never a shared one
    data = json.loads((GOLDEN / store_name).read_text())
    gen.import_redis(client, data["keys"], (data["prefix"], gen.GOLDEN_PREFIX))
    return client


@pytest.fixture
def saver(golden_redis: str, store_name: str) -> Iterator[RedisSaver]:
    """A signed RedisSaver on a fresh copy of one golden Redis store."""
    _restore(golden_redis, store_name).close()
    with RedisSaver.from_url(golden_redis, prefix=gen.GOLDEN_PREFIX,
                             serde=gen.golden_serde()) as s:
        yield s


@pytest.fixture
def expected(store_name: str) -> dict[str, Any]:
    return _unit.expected_of(store_name)  # type: ignore[no-any-return]


def test_v2_values_are_bound_to_the_prefix_they_were_written_under(golden_redis: str) -> None:
    client = _restore(golden_redis, gen.REDIS_FORMATS["redis-v2"])
    data = json.loads((GOLDEN / gen.REDIS_FORMATS["redis-v2"]).read_text())
    gen.import_redis(client, data["keys"], (data["prefix"], "elsewhere"))
    client.close()
    with RedisSaver.from_url(golden_redis, prefix="elsewhere", serde=gen.golden_serde()) as s, \
            pytest.raises(SignatureError, match="'complete'"):
        s.get_tuple(gen.config("complete"))


def test_v3_holds_delta_chains() -> None:
    """The delta format's store keeps chain fields beside delta values (what v3 adds)."""
    import base64

    from durable_graph.store.redis.keys import CHAIN

    data = json.loads((GOLDEN / gen.REDIS_FORMATS["redis-v3"]).read_text())
    fields = [base64.b64decode(f) for rec in data["keys"] if rec["type"] == "hash"
              for f in rec["content"]]
    assert any(f.startswith(CHAIN.encode()) for f in fields)


def _record_types(client: redis.Redis) -> set[bytes]:
    return {client.type(key) for key in client.scan_iter(match=f"{{{gen.GOLDEN_PREFIX}:*:cp:*")}


def test_v4_packs_each_checkpoint_record_in_one_string() -> None:
    """What v4 changes: a checkpoint's record is one packed string key, not a hash."""
    import base64

    data = json.loads((GOLDEN / gen.REDIS_FORMATS["redis-v4"]).read_text())
    kinds = {rec["type"] for rec in data["keys"] if b":cp:" in base64.b64decode(rec["key"])}
    assert kinds == {"string"}


def test_v5_stores_each_delta_as_one_flat_record() -> None:
    """What v5 changes: a delta value is extension record 13, not a dataclass record."""
    import base64

    from durable_graph.store.redis.keys import CHAIN

    def deltas(fmt: str) -> list[bytes]:
        data = json.loads((GOLDEN / gen.REDIS_FORMATS[fmt]).read_text())
        chained = [base64.b64decode(f)[len(CHAIN):] for rec in data["keys"]
                   if rec["type"] == "hash" for f in rec["content"]
                   if base64.b64decode(f).startswith(CHAIN.encode())]
        values = {base64.b64decode(f): base64.b64decode(v) for rec in data["keys"]
                  if rec["type"] == "hash" for f, v in rec["content"].items()}
        return [values[f] for f in chained if f in values]

    old, new = deltas("redis-v4"), deltas("redis-v5")
    assert old and new
    assert all(b"ChannelDelta" in v for v in old)
    assert not any(b"ChannelDelta" in v for v in new)


def test_a_v3_thread_resumed_now_mixes_hash_and_packed_records_and_prunes(
    golden_redis: str,
) -> None:
    """A thread written as hashes gets packed records from new commits; history, the id
    listing and pruning read both."""
    client = _restore(golden_redis, gen.REDIS_FORMATS["redis-v3"])
    with RedisSaver.from_url(golden_redis, prefix=gen.GOLDEN_PREFIX,
                             serde=gen.golden_serde()) as saver:
        before = len(list(saver.list(gen.config("chat"))))
        graph = gen.chat_graph(saver, gen.Runs(fail=False))
        graph.invoke(gen.chat_turn(gen.CHAT_TURNS), gen.config("chat"))
        assert _record_types(client) == {b"hash", b"string"}
        history = list(saver.list(gen.config("chat")))
        assert len(history) > before
        refs = list(saver.list_ids("chat"))
        assert [r.checkpoint_id for r in refs] == [t.checkpoint.id for t in history]
        assert all(r.parent_id == (t.parent_config or {}).get("configurable", {}).get(
            "checkpoint_id") for r, t in zip(refs, history, strict=True))
        saver.prune(["chat"], keep_last=2)
        assert len(list(saver.list(gen.config("chat")))) == 2
        assert _unit._messages(graph.get_state(gen.config("chat")).values) == \
            gen.chat_messages(gen.CHAT_TURNS + 1)
    client.close()


def test_a_garbled_packed_record_is_refused(golden_redis: str) -> None:
    """The read fails as a store error (the script cannot unpack it), never half-decoded."""
    from durable_graph.errors import CheckpointStoreError

    client = _restore(golden_redis, gen.REDIS_FORMATS["redis-v4"])
    with RedisSaver.from_url(golden_redis, prefix=gen.GOLDEN_PREFIX,
                             serde=gen.golden_serde()) as saver:
        latest = saver.get_tuple(gen.config("complete"))
        assert latest is not None
        key = next(k for k in client.scan_iter(match=f"{{{gen.GOLDEN_PREFIX}:complete}}*:cp:"
                                               f"{latest.checkpoint.id}"))
        client.set(key, b"\xc1 not msgpack")
        with pytest.raises(CheckpointStoreError, match="read checkpoint"):
            saver.get_tuple(gen.config("complete"))
    client.close()


def test_v6_keeps_each_chat_text_once() -> None:
    """What v6 changes: each input text is a leaf field of the blobs hash, kept once, and
    listed in the chain field of every value that refers to it, whose tag starts with
    ``&`` (a pre-v6 reader refuses it); a value without leaves keeps its old tag."""
    import base64

    import ormsgpack

    from durable_graph.store.redis.keys import CHAIN, LEAF

    data = json.loads((GOLDEN / gen.REDIS_FORMATS["redis-v6"]).read_text())
    fields = {base64.b64decode(f): base64.b64decode(v) for rec in data["keys"]
              if rec["type"] == "hash" for f, v in rec["content"].items()}
    leaves = {f.decode(): v for f, v in fields.items() if f.startswith(LEAF.encode())}
    listed = {name for f, v in fields.items() if f.startswith(CHAIN.encode())
              for name in ormsgpack.unpackb(v)[2:]}
    texts = {m["content"] for t in range(gen.CHAT_TURNS)
             for m in gen.chat_turn(t, gen.LEAF_PAD)["messages"] if isinstance(m, dict)}
    assert sorted(v[1:].decode() for v in leaves.values()) == sorted(texts)
    refer = {f[len(CHAIN):] for f, v in fields.items()
             if f.startswith(CHAIN.encode()) and len(ormsgpack.unpackb(v)) > 2}
    tags = {f: v.partition(b"\x00")[0] for f, v in fields.items()
            if not f.startswith((LEAF.encode(), CHAIN.encode())) and b"\x00" in f}
    assert refer and {tags[f] for f in refer} == {b"&signed"}
    assert {t for f, t in tags.items() if f not in refer} == {b"signed"}
    assert listed == set(leaves)  # each held by its input and the deltas or snapshots


def test_a_v5_thread_resumed_with_large_texts_keeps_them_apart_and_prunes(
    golden_redis: str,
) -> None:
    """New commits on a thread written before v6 keep their input texts apart; history
    reads both formats, and pruning keeps every leaf a kept checkpoint reads."""
    from durable_graph.store.redis.keys import LEAF

    client = _restore(golden_redis, gen.REDIS_FORMATS["redis-v5"])
    chat = ThreadKeys(gen.GOLDEN_PREFIX, "chat").ns("")
    leaves = lambda: [f for f in value_fields(client, chat)  # noqa: E731
                      if f.startswith(LEAF.encode())]
    with RedisSaver.from_url(golden_redis, prefix=gen.GOLDEN_PREFIX,
                             serde=gen.golden_serde()) as saver:
        graph = gen.chat_graph(saver, gen.Runs(fail=False))
        big = gen.chat_turn(gen.CHAT_TURNS, gen.LEAF_PAD)
        graph.invoke(big, gen.config("chat"))
        assert len(leaves()) == 1
        want = [*gen.chat_messages(gen.CHAT_TURNS)]
        state = graph.get_state(gen.config("chat")).values
        assert _unit._messages(state)[:len(want)] == want
        assert _unit._messages(state)[len(want)][1] == big["messages"][0]["content"]
        saver.prune(["chat"], keep_last=1)
        assert _unit._messages(graph.get_state(gen.config("chat")).values) == \
            _unit._messages(state)
        assert len(leaves()) == 1  # the latest snapshot or chain still reads it
        saver.delete_thread("chat")
        assert leaves() == []
    client.close()


def test_v8_deflates_leaves_and_values_and_keeps_ts_after_the_id() -> None:
    """What v8 changes: each leaf field is a cell (``deflate.pack_leaf``: the chat's prose
    deflated, ``z``), and values whose bytes deflate by an eighth are stored so, tagged
    ``%`` after any ``&`` (``records.DEFLATED``); both read back to v7's bytes. Each
    record keeps ``ts`` as microseconds after its id's time (``t``) and no ``v``."""
    import base64

    import ormsgpack

    from durable_graph.store.deflate import inflated, unpack_leaf
    from durable_graph.store.leaves import leaf_value
    from durable_graph.store.redis.keys import CHAIN, LEAF, leaf_digest

    data = json.loads((GOLDEN / gen.REDIS_FORMATS["redis-v8"]).read_text())
    fields = {base64.b64decode(f): base64.b64decode(v) for rec in data["keys"]
              if rec["type"] == "hash" for f, v in rec["content"].items()}
    leaves = {f.decode(): v for f, v in fields.items() if f.startswith(LEAF.encode())}
    texts = {m["content"] for t in range(gen.CHAT_TURNS)
             for m in gen.chat_turn(t, gen.LEAF_PAD)["messages"] if isinstance(m, dict)}
    assert {v[:1] for v in leaves.values()} == {b"z"}
    assert sorted(leaf_value(unpack_leaf(v), leaf_digest(f)) for f, v in leaves.items()) == \
        sorted(texts)
    values = {f: v.partition(b"\x00") for f, v in fields.items()
              if not f.startswith((LEAF.encode(), CHAIN.encode())) and b"\x00" in f}
    tags = {tag for tag, _, _ in values.values()}
    assert tags == {b"signed", b"&signed", b"%signed", b"&%signed"}
    for tag, _, stream in values.values():
        if b"%" in tag:
            raw = inflated(stream)
            assert raw is not None and len(stream) * 8 < len(raw) * 7
    records = [ormsgpack.unpackb(base64.b64decode(rec["content"])) for rec in data["keys"]
               if rec["type"] == "string" and b":cp:" in base64.b64decode(rec["key"])]
    assert records and all("t" in r and "ts" not in r and "v" not in r for r in records)


def test_v9_keeps_small_values_in_short_records_and_links_in_values() -> None:
    """What v9 changes: records with short keys (``r`` the refs, ``P`` the parent's UUID
    bytes, versions seen and metadata as msgpack), each small changed value kept in its
    record's refs, and each delta link at the head of its value: no chain fields."""
    import base64

    import ormsgpack

    from durable_graph.store.redis.keys import CHAIN, LEAF
    from durable_graph.store.redis.records import LINKED, link_of

    data = json.loads((GOLDEN / gen.REDIS_FORMATS["redis-v9"]).read_text())
    fields = {base64.b64decode(f): base64.b64decode(v) for rec in data["keys"]
              if rec["type"] == "hash" for f, v in rec["content"].items()}
    assert not any(f.startswith(CHAIN.encode()) for f in fields)
    linked = [v for f, v in fields.items() if not f.startswith(LEAF.encode())
              and v.startswith(LINKED)]
    assert linked and all(ormsgpack.unpackb(link_of(v) or b"")[1] >= 0 for v in linked)
    records = [ormsgpack.unpackb(base64.b64decode(rec["content"])) for rec in data["keys"]
               if rec["type"] == "string" and b":cp:" in base64.b64decode(rec["key"])]
    assert records and all("r" in r and "refs" not in r and "parent" not in r for r in records)
    assert any("P" in r for r in records) and all(isinstance(r["m"], dict) for r in records)
    assert any(isinstance(ref, list) for r in records for ref in r["r"])


def test_v10_deflates_values_with_the_framing_dictionary() -> None:
    """What v10 changes: values (and pending writes) deflated with the LangChain framing
    as the preset dictionary, tag after ``%%``; such a stream does not inflate without it
    (a reader of v8 or v9, which takes ``%%`` for ``%``, refuses it)."""
    import base64

    from durable_graph.store.deflate import FRAMING, inflated
    from durable_graph.store.redis.keys import BLOBS, LEAF
    from durable_graph.store.redis.records import FRAMED, decode_blob, unlinked

    data = json.loads((GOLDEN / gen.REDIS_FORMATS["redis-v10"]).read_text())
    stored = [decode_blob(unlinked(base64.b64decode(v))) for rec in data["keys"]
              if base64.b64decode(rec["key"]).endswith(BLOBS.encode())
              for f, v in rec["content"].items()
              if not base64.b64decode(f).startswith(LEAF.encode())]
    framed = [(tag, raw) for tag, raw in stored if tag.lstrip("&").startswith(FRAMED)]
    assert framed
    for _, raw in framed:
        assert inflated(raw) is None and inflated(raw, zdict=FRAMING) is not None


def test_v11_keeps_ids_in_pages_and_marks_the_old_index() -> None:
    """What v11 changes: a namespace's ids in listpack pages named in a directory, each
    page's records in one string (split: what the scripts read, then the rest deflated), and
    a text at the old ``idx`` key that a reader older than v11 fails on loudly."""
    import base64

    from durable_graph.store.redis.keys import (
        CHECKPOINT,
        ID_PAGE,
        ID_PAGES,
        ID_PAGES_MARK,
        INDEX,
        PAGE_RECORDS,
    )
    from durable_graph.store.redis.records import SPLIT

    data = json.loads((GOLDEN / gen.REDIS_FORMATS["redis-v11"]).read_text())
    by_key = {base64.b64decode(rec["key"]).decode(): rec for rec in data["keys"]}
    marks = [rec for key, rec in by_key.items() if key.endswith(INDEX)]
    assert marks and all(rec["type"] == "string"
                         and base64.b64decode(rec["content"]).decode() == ID_PAGES_MARK
                         for rec in marks)
    pages = [key for key in by_key if ID_PAGE in key]
    assert pages and all(by_key[key]["type"] == "zset" for key in pages)
    assert {key.rsplit(ID_PAGE, 1)[0] + ID_PAGES for key in pages} <= set(by_key)
    assert not any(CHECKPOINT in key for key in by_key), "every record in its page's string"
    members = [base64.b64decode(m) for key in pages for m, _ in by_key[key]["content"]]
    assert members and all(b"\0" in m for m in members)
    assert all(key.replace(ID_PAGE, PAGE_RECORDS) in by_key for key in pages)
    starts = set()
    for key in pages:
        records = base64.b64decode(by_key[key.replace(ID_PAGE, PAGE_RECORDS)]["content"])
        for member in (base64.b64decode(m) for m, _ in by_key[key]["content"]):
            off, _, length = member.partition(b"\0")[2].partition(b",")
            starts.add(records[int(off):int(off) + int(length)][:1])
    assert SPLIT in starts, "records split in what the scripts read and the rest deflated"


def test_v12_keeps_values_in_pages_and_marks_the_old_hash() -> None:
    """What v12 changes: a namespace's values and leaves in listpack pages of fields named
    in a directory, each page's values in one string, and a text at the old ``blobs`` key
    that a reader older than v12 fails on loudly."""
    import base64

    from durable_graph.store.redis.keys import (
        BLOBS,
        LEAF,
        VALUE_HEAP,
        VALUE_PAGE,
        VALUE_PAGES,
        VALUES_MARK,
    )

    data = json.loads((GOLDEN / gen.REDIS_FORMATS["redis-v12"]).read_text())
    by_key = {base64.b64decode(rec["key"]): rec for rec in data["keys"]}
    marks = [rec for key, rec in by_key.items() if key.endswith(BLOBS.encode())]
    assert marks and all(rec["type"] == "string"
                         and base64.b64decode(rec["content"]).decode() == VALUES_MARK
                         for rec in marks)
    pages = [key for key in by_key if VALUE_PAGE.encode() in key]
    assert pages and all(by_key[key]["type"] == "zset" for key in pages)
    assert {key.split(VALUE_PAGE.encode())[0] + VALUE_PAGES.encode() for key in pages} \
        <= set(by_key)
    fields = []
    for key in pages:
        heap = base64.b64decode(by_key[key.replace(VALUE_PAGE.encode(), VALUE_HEAP.encode())]
                                ["content"])
        for member in (base64.b64decode(m) for m, _ in by_key[key]["content"]):
            field, _, at = member.rpartition(b"\0")
            off, _, length = at.partition(b",")
            assert len(heap[int(off):int(off) + int(length)]) == int(length) > 0
            fields.append(field)
    assert any(f.startswith(LEAF.encode()) for f in fields), "leaves kept in pages too"
    assert any(b"messages\0" in f for f in fields)


def test_v13_keeps_record_heads_value_fields_and_links_compact() -> None:
    """What v13 changes: records' heads start with 0xC2, each namespace numbers its
    channels and tags in a ``chn`` string, value fields are compact keys (a leaf's byte 0
    and its 32 digest bytes), and the value mark says so."""
    import base64

    from durable_graph.store.redis.compact import COMPACT
    from durable_graph.store.redis.keys import (
        BLOBS,
        CHANNEL_NAMES,
        ID_PAGE,
        ID_PAGES,
        ID_PAGES_MARK_V13,
        PAGE_RECORDS,
        VALUE_PAGE,
        VALUE_PAGES,
        VALUES_MARK_V13,
    )
    from tests.redis_records import split_member

    data = json.loads((GOLDEN / gen.REDIS_FORMATS["redis-v13"]).read_text())
    by_key = {base64.b64decode(rec["key"]): rec for rec in data["keys"]}
    marks = [rec for key, rec in by_key.items() if key.endswith(BLOBS.encode())]
    assert marks and all(base64.b64decode(rec["content"]).decode() == VALUES_MARK_V13
                         for rec in marks)
    # where a release before v13 looks for pages, a text it fails on (WRONGTYPE)
    for old_dir, mark in ((ID_PAGES, ID_PAGES_MARK_V13), (VALUE_PAGES, VALUES_MARK_V13)):
        olds = [rec for key, rec in by_key.items() if key.endswith(old_dir.encode())]
        assert olds and all(rec["type"] == "string" and base64.b64decode(rec["content"])
                            .decode() == mark for rec in olds)
    names = [base64.b64decode(rec["content"]) for key, rec in by_key.items()
             if key.endswith(CHANNEL_NAMES.encode())]
    assert names and all(n.endswith(b"\0") for n in names)
    assert any(n.startswith(b"__start__\0") and b"messages\0" in n for n in names)
    starts = set()
    for key in (k for k in by_key if ID_PAGE.encode() in k):
        heap = base64.b64decode(by_key[key.replace(ID_PAGE.encode(), PAGE_RECORDS.encode())]
                                ["content"])
        for member in (base64.b64decode(m) for m, _ in by_key[key]["content"]):
            at = split_member(member)[1]  # NUL, offset and length in 2 bytes each, 255
            assert at is not None and member[-1:] == b"\xff"
            starts.add(heap[at[0]:at[0] + 1])
    assert COMPACT in starts, "record heads kept compact"
    fields = [split_member(base64.b64decode(m))[0] for key, rec in by_key.items()
              if VALUE_PAGE.encode() in key for m, _ in rec["content"]]
    leaves = [f for f in fields if f[:1] == b"\0"]
    assert leaves and all(len(f) == 33 for f in leaves)
    assert not any(b"messages\0" in f or f.startswith(b"\x02leaf") for f in fields)


def test_a_v12_thread_resumed_now_gets_compact_records_and_keeps_its_fields_spelled_out(
    golden_redis: str,
) -> None:
    """A namespace whose values were paged by v12 goes on with spelled-out value fields
    (its mark unchanged) while its new records get compact heads; history, pruning and
    deleting read both."""
    from durable_graph.store.redis.compact import COMPACT
    from durable_graph.store.redis.keys import ID_PAGE, VALUE_PAGE, VALUES_MARK, VALUES_MARK_V13
    from tests.redis_records import id_dir, record_ids, stored_record, stored_values, value_dir

    client = _restore(golden_redis, gen.REDIS_FORMATS["redis-v12"])
    chat = ThreadKeys(gen.GOLDEN_PREFIX, "chat").ns("")
    old_ids = set(record_ids(client, chat))
    with RedisSaver.from_url(golden_redis, prefix=gen.GOLDEN_PREFIX,
                             serde=gen.golden_serde()) as saver:
        graph = gen.chat_graph(saver, gen.Runs(fail=False))
        graph.invoke(gen.chat_turn(gen.CHAT_TURNS), gen.config("chat"))
        new_ids = set(record_ids(client, chat)) - old_ids
        assert new_ids and all((stored_record(client, chat, cid) or b"")[:1] == COMPACT
                               for cid in new_ids)
        assert not any((stored_record(client, chat, cid) or b"")[:1] == COMPACT
                       for cid in old_ids)
        assert client.get(chat.blobs) == VALUES_MARK.encode()
        keys = stored_values(client, chat)
        assert any(k.startswith(b"messages\0") for k in keys), "fields still spelled out"
        assert any(k.startswith(b"\x02leaf\0") for k in keys)
        assert not any(k[:1] in (b"\0", b"\xff") for k in keys)
        # its page members locate their bytes as text, which a release before v13 reads
        dirs = ((id_dir(client, chat), ID_PAGE), (value_dir(client, chat), VALUE_PAGE))
        members = [m for d, infix in dirs for name in client.zrange(d, 0, -1)
                   for m in client.zrange(chat.base.encode() + infix.encode() + name, 0, -1)]
        assert members and all(m[-1:].isdigit() or m.endswith(b"\0-") for m in members)
        messages = _unit._messages(graph.get_state(gen.config("chat")).values)
        assert len(messages) == len(gen.chat_messages(gen.CHAT_TURNS + 1))
        saver.prune(["chat"], keep_last=2)
        assert _unit._messages(graph.get_state(gen.config("chat")).values) == messages
        saver.delete_thread("chat")
        graph.invoke(gen.chat_turn(0), gen.config("chat"))  # a new namespace: v13's mark
        assert client.get(chat.blobs) == VALUES_MARK_V13.encode()
    client.close()
