"""Paging, counting and finding threads in the status index, on a real Redis (the web
view's list reads these: a page costs the same at any depth of 100,000 threads)."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from durable_graph.errors import GraphValueError
from durable_graph.store.base import Checkpoint, new_checkpoint_id
from durable_graph.store.redis import RedisSaver
from durable_graph.store.redis.keys import ThreadKeys, status_key
from durable_graph.store.redis.threads import ThreadRecords
from tests.unit.backend_contract import wait_until

pytestmark = pytest.mark.redis


@pytest.fixture
def records(redis_url: str, redis_prefix: str) -> ThreadRecords:
    saver = RedisSaver.from_url(redis_url, prefix=redis_prefix)
    return ThreadRecords(saver.conn, redis_prefix)


def _index(client: redis.Redis, prefix: str, thread: str, status: str, score: int) -> None:
    """A thread with a record and an index entry at a chosen time (to force ties)."""
    client.hset(ThreadKeys(prefix, thread).record, mapping={"status": status})
    client.zadd(status_key(prefix, thread, status), {thread: score})


def _all_pages(records: ThreadRecords, status: str | None, limit: int) -> list[str]:
    seen, cursor = [], None
    while True:
        page = records.page(status, limit=limit, after=cursor)  # type: ignore[arg-type]
        seen += [t["thread_id"] for t in page.threads]
        cursor = page.next_cursor
        if cursor is None:
            return seen


def test_pages_walk_every_thread_once_newest_first_across_ties(
    records: ThreadRecords, redis_url: str, redis_prefix: str
) -> None:
    client = redis.Redis.from_url(redis_url)
    expected = []
    for i in range(60):  # runs of equal update times, spread over the shards
        thread, score = f"t{i:03d}", 1_000 + i // 13
        _index(client, redis_prefix, thread, "done" if i % 4 else "failed", score)
        expected.append((score, thread))
    expected.sort(reverse=True)
    order = [t for _, t in expected]
    for limit in (1, 7, 25, 100):
        assert _all_pages(records, None, limit) == order
    assert _all_pages(records, "failed", 5) == [t for t in order if int(t[1:]) % 4 == 0]
    assert records.count_by_status() == {"running": 0, "interrupted": 0, "cancelled": 0,
                                         "failed": 15, "done": 45}


def test_a_page_skips_entries_whose_record_moved_on(
    records: ThreadRecords, redis_url: str, redis_prefix: str
) -> None:
    client = redis.Redis.from_url(redis_url)
    _index(client, redis_prefix, "moved", "running", 5)
    _index(client, redis_prefix, "stays", "running", 4)
    client.hset(ThreadKeys(redis_prefix, "moved").record, "status", "done")  # index not yet
    page = records.page("running", limit=10)
    assert [t["thread_id"] for t in page.threads] == ["stays"]
    assert page.threads[0]["status"] == "running" and page.next_cursor is None


def test_bad_cursors_and_limits_are_refused(records: ThreadRecords) -> None:
    with pytest.raises(GraphValueError, match="cursor"):
        records.page(None, after="not-a-cursor")
    with pytest.raises(GraphValueError, match="limit"):
        records.page(None, limit=0)


def test_threads_are_found_by_the_start_of_their_id(
    records: ThreadRecords, redis_url: str, redis_prefix: str
) -> None:
    client = redis.Redis.from_url(redis_url)
    for thread in ("order:1", "order:2", "order*x", "other"):
        _index(client, redis_prefix, thread, "done", 1)
    assert records.with_prefix("order", 10) == ["order*x", "order:1", "order:2"]
    assert records.with_prefix("order:", 10) == ["order:1", "order:2"]
    assert records.with_prefix("order*", 10) == ["order*x"]  # glob characters are literal
    assert records.with_prefix("nothing", 10) == []


def _indexed(client: redis.Redis, prefix: str, thread: str, status: str = "done") -> bool:
    return client.zscore(status_key(prefix, thread, status), thread) is not None


def test_threads_whose_keys_expired_leave_the_index_on_read_and_by_the_sweep(
    records: ThreadRecords, redis_url: str, redis_prefix: str
) -> None:
    """The status index is in other slots than the threads, so a thread's TTL cannot
    take its entry along: listing must not show it, and the entry must go (else the
    index grows by one entry per expired thread, forever)."""
    client = redis.Redis.from_url(redis_url)
    expired = ("expired-1", "expired-2", "expired-3")
    with RedisSaver.from_url(redis_url, prefix=redis_prefix, ttl=1) as short:
        for thread in expired:
            short.put({"configurable": {"thread_id": thread, "checkpoint_ns": ""}},
                      Checkpoint(new_checkpoint_id(), "2024-01-01T00:00:00+00:00", {}, {}, {}),
                      {}, {})
            short.set_status(thread, "done")
    records.set_status("kept", "done")
    _index(client, redis_prefix, "deleted", "running", 7)
    client.unlink(ThreadKeys(redis_prefix, "deleted").record)  # deleted some other way
    records_of = [ThreadKeys(redis_prefix, t).record for t in expired]
    # all three, however slowly they were written (expired-3's TTL started last)
    wait_until(lambda: client.exists(*records_of) == 0, timeout=30)
    assert _indexed(client, redis_prefix, "expired-1")  # the TTL took only the thread

    page = records.page("done", limit=2)  # reads "kept" and the newest one expired
    assert [t["thread_id"] for t in page.threads] == ["kept"]
    assert not _indexed(client, redis_prefix, "expired-3")  # dropped by the read
    assert _indexed(client, redis_prefix, "expired-1")
    # nobody reads the rest: sweeps drop them, a batch of every shard at a time
    ranks: dict[str, int] = {}
    assert sum(records.sweep_gone(ranks, batch=1) for _ in range(4)) == 3
    assert not any(_indexed(client, redis_prefix, t) for t in ("expired-1", "expired-2"))
    assert not _indexed(client, redis_prefix, "deleted", "running")
    assert records.count_by_status()["done"] == 1 and records.list_threads() == ["kept"]
    # and a listing drops what it finds gone as well
    _index(client, redis_prefix, "gone-too", "failed", 9)
    client.unlink(ThreadKeys(redis_prefix, "gone-too").record)
    assert records.list_threads() == ["kept"]
    assert not _indexed(client, redis_prefix, "gone-too", "failed")


def test_dropping_a_gone_entry_spares_a_thread_indexed_again_meanwhile(
    records: ThreadRecords, redis_url: str, redis_prefix: str
) -> None:
    client = redis.Redis.from_url(redis_url)
    _index(client, redis_prefix, "back", "done", 5)
    seen = status_key(redis_prefix, "back", "done")
    client.unlink(ThreadKeys(redis_prefix, "back").record)
    records.set_status("back", "done")  # written again after the read saw it gone
    assert records.forget([(seen, "back", 5.0)]) == 0
    assert _indexed(client, redis_prefix, "back")
    assert records.list_threads() == ["back"]


def test_a_run_record_with_its_status_is_one_script_that_also_moves_the_index(
    records: ThreadRecords, redis_url: str, redis_prefix: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``set_run`` with a status: the run's fields set, the policy fields given as '0'
    deleted, the status recorded and the thread moved to that status in the index, in
    one script call by SHA (not an HDEL, an HSET and an index script)."""
    client = redis.Redis.from_url(redis_url)
    record = ThreadKeys(redis_prefix, "rec").record
    records.set_run("rec", "sealed-1", "g", {"policy_ttl": "60", "keep_last": "3"},
                    status="done")
    assert _indexed(client, redis_prefix, "rec", "done")
    queued: list[str] = []
    real = redis.Redis.execute_command

    def spy(self: redis.Redis, *args: Any, **options: Any) -> Any:
        queued.append(str(args[0]))
        return real(self, *args, **options)

    monkeypatch.setattr(redis.Redis, "execute_command", spy)
    records.set_run("rec", "sealed-2", "g2", {"policy_ttl": "0", "keep_last": "5"},
                    status="running")
    monkeypatch.undo()
    assert queued == ["EVALSHA"]
    fields = {k.decode(): v.decode() for k, v in client.hgetall(record).items()}
    assert fields["run"] == "sealed-2" and fields["graph"] == "g2"
    assert fields["status"] == "running" and fields["keep_last"] == "5"
    assert "policy_ttl" not in fields
    assert _indexed(client, redis_prefix, "rec", "running")
    assert not _indexed(client, redis_prefix, "rec", "done")
    records.set_status("rec", "interrupted", next_nodes=["n"])
    assert _indexed(client, redis_prefix, "rec", "interrupted")
    assert not _indexed(client, redis_prefix, "rec", "running")
    assert client.hget(record, "next") == b'["n"]' and client.hget(record, "run") == b"sealed-2"
