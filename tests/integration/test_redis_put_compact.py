"""A checkpoint's commit on a single Redis sends no keys: the PUT script composes its six
keys from the namespace key base and the checkpoint id, writes ``updated_at`` from the
microseconds sent, and reads the parent named by ``applied``/``extends`` from the record
sent. What it stores is what the declared-keys form (Redis Cluster's) stores."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis

from durable_graph.errors import CommitConflictError
from durable_graph.store.base import EXTENDS_LATEST, Checkpoint, new_checkpoint_id
from durable_graph.store.redis import RedisSaver, scripts
from durable_graph.store.redis.keys import ThreadKeys
from tests.integration.test_redis_status_compact import _Sent, counted

__all__ = ["counted"]  # the fixture, shared

pytestmark = pytest.mark.redis

ODD_THREADS = ["t", "we:ird{th}read", "100%3A", "%", "a}b", "n:", ":n:", "x" * 200, "é✓"]
ODD_NAMESPACES = ["", "sub:graph|1", ":n:", "}{", "ns%", "a:n:b"]


def _cfg(thread: str, ns: str = "", parent: str | None = None, **extra: Any) -> dict[str, Any]:
    conf: dict[str, Any] = {"thread_id": thread, "checkpoint_ns": ns, **extra}
    if parent:
        conf["checkpoint_id"] = parent
    return {"configurable": conf}


def _cp(checkpoint_id: str, step: int) -> Checkpoint:
    return Checkpoint(id=checkpoint_id, ts="2024-01-01T00:00:00+00:00",
                      channel_values={"static": "S" * 50, "count": [step]},
                      channel_versions={"static": 1, "count": step + 1}, versions_seen={})


def test_the_keys_the_script_composes_are_the_layouts(raw: redis.Redis) -> None:
    """Under prefixes holding ':' (even ':n:' or braces), odd thread ids and namespaces,
    the six keys composed from (namespace key base, id) are those ``ThreadKeys`` gives."""
    script = scripts._lua(scripts._PUT_KEYS + "return put_keys(ARGV[1], ARGV[2])")
    for prefix in ["dg", "a:b", "x:n:y", "p:", "{pre}", "a}b:n:"]:
        for thread in ODD_THREADS:
            for ns in ODD_NAMESPACES:
                tk = ThreadKeys(prefix, thread)
                nsk = tk.ns(ns)
                cid = new_checkpoint_id()
                want = [tk.record, tk.lease, tk.namespaces, nsk.index, nsk.blobs,
                        nsk.checkpoint(cid)]
                got = raw.eval(script, 0, nsk.base, cid)
                assert [k.decode() for k in got] == want, (prefix, thread, ns)
    with pytest.raises(redis.ResponseError, match="not a namespace key base"):
        raw.eval(script, 0, "{p:t}:rec", "x")


def _dump(client: redis.Redis, prefix: str) -> dict[str, Any]:
    """Every key under ``prefix`` (named without it) -> its content; records without
    their ``updated_at``, checked to be ISO text in UTC of about now."""
    out: dict[bytes, Any] = {}
    for key in client.scan_iter(match=f"*{prefix}*", count=1000):
        kind = client.type(key).decode()
        if kind == "string":
            value: Any = client.get(key)
        elif kind == "hash":
            value = client.hgetall(key)
        elif kind == "zset":
            value = client.zrange(key, 0, -1, withscores=True)
        else:
            value = kind
        if key.endswith(b":rec"):
            stamp = datetime.fromisoformat(value.pop(b"updated_at").decode())
            assert stamp.utcoffset() == timedelta(0)
            assert abs(datetime.now(UTC) - stamp) < timedelta(minutes=5)
        out[key.replace(prefix.encode(), b"P")] = (kind, value, client.ttl(key) > 0)
    return out


def _history(saver: RedisSaver, thread: str, ns: str, ids: list[str]) -> None:
    """An input, then loop steps (each extends and applies its parent, whose task writes
    it retires but for the outcomes), then a worker's step commit expecting the newest
    and replacing it, sparing the input (exit durability)."""
    parent = saver.put(_cfg(thread, ns), _cp(ids[0], 0), {"source": "input"},
                       {"static": 1, "count": 1})
    for step, cid in enumerate(ids[1:-1], start=1):
        pid = parent["configurable"]["checkpoint_id"]
        saver.put_writes(parent, [("count", [step]), ("__error__", "boom")], f"task{step}")
        parent = saver.put(_cfg(thread, ns, pid, **{EXTENDS_LATEST: True}), _cp(cid, step),
                           {"source": "loop", "step": step}, {"count": step + 1})
    pid = parent["configurable"]["checkpoint_id"]
    saver.put(_cfg(thread, ns, pid), _cp(ids[-1], len(ids)), {"source": "loop"},
              {"count": len(ids) + 1}, expect_latest=pid, replaces=pid, keep=ids[0])


@pytest.mark.parametrize("ids", ["uuid", "text"])
def test_it_stores_what_the_declared_form_stores(
    redis_url: str, redis_prefix: str, raw: redis.Redis, ids: str,
) -> None:
    """The same history committed with keys composed (single Redis) and declared (Redis
    Cluster's form, run here on the single Redis): the same keys, values, TTLs, under odd
    thread ids and namespaces, with parents as UUIDs (kept as bytes in the record) or
    not; ordinary writes of applied parents retired, outcomes kept."""
    made = [new_checkpoint_id() if ids == "uuid" else f"c{i:02d}:x" for i in range(5)]
    dumps = []
    for compact in (True, False):
        prefix = f"{redis_prefix}-eq"  # the same: values hold key names
        with RedisSaver.from_url(redis_url, prefix=prefix, ttl=3600, keep_last=3) as saver:
            saver._compact = compact
            for thread in ODD_THREADS[:4]:
                for ns in ODD_NAMESPACES[:3]:
                    _history(saver, thread, ns, made)
            dumps.append(_dump(raw, prefix))
            applied = ThreadKeys(prefix, ODD_THREADS[1]).ns(ODD_NAMESPACES[1]).writes(made[2])
            assert raw.hkeys(applied) == [b"task3:-1"]  # retired but for the error
            tup = saver.get_tuple(_cfg(ODD_THREADS[1], ODD_NAMESPACES[1]))
            assert tup is not None and tup.checkpoint.id == made[-1]
        for key in raw.scan_iter(match=f"*{prefix}*", count=1000):
            raw.unlink(key)
    assert dumps[0] == dumps[1]
    assert len(dumps[0]) > 4 * 3 * 5


def test_extends_a_parent_deleted_meanwhile_writes_nothing(
    redis_url: str, redis_prefix: str, raw: redis.Redis,
) -> None:
    """``extends`` sent as the record's parent: a commit over a parent gone is refused."""
    with RedisSaver.from_url(redis_url, prefix=redis_prefix) as saver:
        first = saver.put(_cfg("t:1"), _cp(new_checkpoint_id(), 0), {}, {"static": 1, "count": 1})
        pid = first["configurable"]["checkpoint_id"]
        saver.delete_checkpoints("t:1", "", [pid])
        before = sorted(raw.scan_iter(match=f"*{redis_prefix}*"))
        with pytest.raises(CommitConflictError):
            saver.put(_cfg("t:1", "", pid, **{EXTENDS_LATEST: True}), _cp(new_checkpoint_id(), 1),
                      {"source": "loop"}, {"count": 2})
        assert sorted(raw.scan_iter(match=f"*{redis_prefix}*")) == before


def test_a_commit_sends_no_keys_nor_its_parent_twice(
    counted: tuple[RedisSaver, type[_Sent]],
) -> None:
    """A loop step's commit sends about 390 B here: no six keys (306 B with this test's
    prefix, which the declared form still sends), no ISO time text (16 B more than its
    microseconds), the parent's id once (in the record), not three times, no '1'. The
    form before sent about 840 B (the declared form's 743 B with those)."""
    saver, kind = counted
    parent = saver.put(_cfg("t1"), _cp(new_checkpoint_id(), 0), {}, {"static": 1, "count": 1})
    sent = {}
    for compact in (False, True, False, True):  # each script loaded by the first
        saver._compact = compact
        pid = parent["configurable"]["checkpoint_id"]
        before = kind.sent
        parent = saver.put(_cfg("t1", "", pid, **{EXTENDS_LATEST: True}),
                           _cp(new_checkpoint_id(), 1), {"source": "loop"}, {"count": 2})
        sent[compact] = kind.sent - before
    tk = ThreadKeys(saver.prefix, "t1")
    nsk = tk.ns("")
    declared = sum(len(k) for k in (tk.record, tk.lease, tk.namespaces, nsk.index, nsk.blobs,
                                    nsk.checkpoint(pid)))
    assert sent[False] - sent[True] >= declared, sent
    assert sent[True] <= 420, sent
