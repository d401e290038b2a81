"""A thread's status update sends the record key, the status, the time and the thread's
status bucket: the script composes the status index keys and ``updated_at`` itself, and
what it stores is what every reader (and the Redis Cluster path) expects."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis

from durable_graph.store.redis import RedisSaver, scripts
from durable_graph.store.redis.keys import ThreadKeys, status_key, status_keys
from durable_graph.store.redis.threads import STATUSES, RunEnd

pytestmark = pytest.mark.redis

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class _Sent(redis.Connection):
    """Counts the bytes its connections write (a fresh subclass per saver)."""

    sent = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        chunks = [command] if isinstance(command, (str, bytes)) else command
        type(self).sent += sum(len(c.encode() if isinstance(c, str) else c) for c in chunks)
        super().send_packed_command(command, check_health)


@pytest.fixture
def counted(redis_url: str, redis_prefix: str) -> Iterator[tuple[RedisSaver, type[_Sent]]]:
    kind = type("Sent", (_Sent,), {"sent": 0})
    with RedisSaver.from_url(redis_url, prefix=redis_prefix, connection_class=kind) as s:
        yield s, kind


def _ms(stamp: str) -> int:
    return (datetime.fromisoformat(stamp) - EPOCH) // timedelta(milliseconds=1)


def _indexed(raw: redis.Redis, prefix: str, thread_id: str) -> dict[str, int]:
    """Status -> score of every index entry of ``thread_id`` (any shard)."""
    found = {}
    for status in STATUSES:
        for key in status_keys(prefix, status):
            score = raw.zscore(key, thread_id)
            if score is not None:
                assert key == status_key(prefix, thread_id, status)
                found[status] = int(score)
    return found


def test_the_script_formats_times_as_python_isoformat(redis_url: str) -> None:
    """``updated_at`` written from microseconds reads as ``datetime.isoformat`` wrote it:
    whole seconds without a fraction, leap days, century years, year ends."""
    rng = random.Random(7)
    edges = [datetime(y, m, d, tzinfo=UTC) for y, m, d in [
        (1970, 1, 2), (1999, 12, 31), (2000, 2, 29), (2000, 3, 1), (2024, 2, 29),
        (2100, 2, 28), (2100, 3, 1), (2400, 2, 29), (9999, 12, 31)]]
    micros = [(e - EPOCH) // timedelta(microseconds=1) + d
              for e in edges for d in (0, 1, 999_999, 86_399_999_999, -1)]
    micros += [rng.randrange(10**6, 253_402_300_799 * 10**6) for _ in range(2000)]
    expected = [(EPOCH + timedelta(microseconds=t)).isoformat() for t in micros]
    assert any("." not in e for e in expected) and any("." in e for e in expected)
    client = redis.Redis.from_url(redis_url)
    try:
        got = client.eval(scripts._ISO_FUNCTION + """
local out = {}
for i, t in ipairs(ARGV) do out[i] = iso_utc(t) end
return out
""", 0, *micros)
    finally:
        client.close()
    assert [g.decode() for g in got] == expected


def test_a_status_update_sends_little(counted: tuple[RedisSaver, type[_Sent]]) -> None:
    """Record key, status, time, bucket: no status index keys (five before, about 160 B),
    no ``updated_at`` text or field names, no empty ``next``; about 500 B before, with
    this test's prefix more than 600."""
    saver, kind = counted
    saver.set_status("t1", "running")  # the script loaded
    record = ThreadKeys(saver.prefix, "t1").record
    for status in ("done", "running", "interrupted"):
        before = kind.sent
        saver.set_status("t1", status)  # type: ignore[arg-type]
        sent = kind.sent - before
        assert sent <= 130 + len(record), (status, sent)
    assert kind.sent - before > 0


def test_what_a_status_update_stores(
    saver: RedisSaver, raw: redis.Redis, redis_prefix: str,
) -> None:
    """The record holds status and ``updated_at`` (ISO, UTC, the index score's time);
    ``next`` is kept only while given; errors stay; the index has one entry per thread,
    in its own bucket's shard, under odd prefixes and thread ids too."""
    threads = ["t1", "we:ird{th}read", "100%3A", "%", "a%25b", "x" * 200]
    for thread in threads:
        low = (datetime.now(UTC) - EPOCH) // timedelta(milliseconds=1)
        saver.set_status(thread, "interrupted", next_nodes=["a", "b"])
        high = (datetime.now(UTC) - EPOCH) // timedelta(milliseconds=1)
        record = saver.get_status(thread)
        assert record is not None and record["status"] == "interrupted"
        assert record["next"] == ["a", "b"]
        stamp = record["updated_at"]
        assert datetime.fromisoformat(stamp).utcoffset() == timedelta(0), stamp
        assert low <= _ms(stamp) <= high
        assert _indexed(raw, redis_prefix, thread) == {"interrupted": _ms(stamp)}
    try:
        raise ValueError("boom")
    except ValueError as exc:
        saver.set_status("we:ird{th}read", "failed", exc)
    saver.set_status("we:ird{th}read", "running")
    record = saver.get_status("we:ird{th}read")
    assert record is not None and record["status"] == "running" and record["next"] is None
    assert record["error_type"] == "builtins.ValueError" and "boom" in record["error_message"]
    assert set(_indexed(raw, redis_prefix, "we:ird{th}read")) == {"running"}
    assert saver.list_threads("running") == ["we:ird{th}read"]
    assert sorted(saver.list_threads("interrupted")) == sorted(set(threads) - {"we:ird{th}read"})
    fields = raw.hgetall(ThreadKeys(redis_prefix, "t1").record)
    assert set(fields) == {b"status", b"updated_at", b"next"}
    shards = {k.decode() for k in raw.scan_iter(match=f"{{{redis_prefix}:status:*")}
    assert shards == {status_key(redis_prefix, t, s) for t in threads
                      for s in _indexed(raw, redis_prefix, t)}


def test_a_prefix_holding_colons_and_a_run_record_with_its_status(
    redis_url: str, redis_prefix: str, raw: redis.Redis,
) -> None:
    """The script finds the prefix in the record key up to the thread's tag, whatever
    it holds; ``set_run`` with a status sets both in the same script."""
    prefix = redis_prefix + ":a:b"
    with RedisSaver.from_url(redis_url, prefix=prefix) as saver:
        saver.set_run("t:1", "sealed", "g", status="running")
        record = saver.get_status("t:1")
        assert record is not None and record["status"] == "running"
        assert record["graph"] == "g" and record["next"] is None
        assert _indexed(raw, prefix, "t:1") == {"running": _ms(record["updated_at"])}
        assert saver.list_threads() == ["t:1"]
        saver.delete_thread("t:1")
        assert saver.list_threads() == [] and _indexed(raw, prefix, "t:1") == {}


def test_close_run_sets_the_status_and_its_index(
    saver: RedisSaver, raw: redis.Redis, redis_prefix: str,
) -> None:
    """``CLOSE_RUN`` shares the status script: record, index, event, lease released."""
    lease = saver.leases.acquire("t:1", "me", 60)
    assert lease is not None
    saver.set_status("t:1", "running", next_nodes=["n"])
    stream = ThreadKeys(saver.prefix, "t:1").events("run-1")
    event = RunEnd(stream, "end", b"payload", 60, 100)
    assert saver.close_run(lease, "done", None, None, event) is True
    record = saver.get_status("t:1")
    assert record is not None and record["status"] == "done" and record["next"] is None
    assert _indexed(raw, redis_prefix, "t:1") == {"done": _ms(record["updated_at"])}
    assert raw.xlen(stream) == 1
    assert raw.hget(ThreadKeys(saver.prefix, "t:1").lease, "owner") == b""

