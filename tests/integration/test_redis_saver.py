"""RedisSaver against a real Redis: layout, round trips, fencing, retention, failures."""

from __future__ import annotations

import os
import re
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import redis
from redis.crc import key_slot

from durable_graph.errors import CheckpointStoreError, FencingError, GraphValueError
from durable_graph.store.base import ERROR, Checkpoint, PendingWrite, new_checkpoint_id
from durable_graph.store.redis import RedisSaver
from durable_graph.store.redis.keys import ThreadKeys
from tests.redis_records import delete_value, record_ids, value_fields

pytestmark = pytest.mark.redis


def cfg(thread: str = "t1", ns: str = "", checkpoint_id: str | None = None, **extra: Any) -> dict:
    conf: dict[str, Any] = {"thread_id": thread, "checkpoint_ns": ns, **extra}
    if checkpoint_id:
        conf["checkpoint_id"] = checkpoint_id
    return {"configurable": conf}


def cp(values: dict[str, Any], versions: dict[str, int]) -> Checkpoint:
    return Checkpoint(
        id=new_checkpoint_id(),
        ts="2024-01-01T00:00:00+00:00",
        channel_values=values,
        channel_versions=versions,
        versions_seen={},
    )


def chain(saver: RedisSaver, n: int, thread: str = "t1", ns: str = "", *,
          wrap: Callable[[int], Any] = lambda step: step, **extra: Any) -> list[dict]:
    """n checkpoints: ``static`` never changes (version 1), ``count`` changes every step
    (``wrap(step)``: an int is kept in the records, redis-v9; ``[step]`` in a field)."""
    parent = cfg(thread, ns, **extra)
    out = []
    for step in range(n):
        checkpoint = cp({"static": "S" * 100, "count": wrap(step)},
                        {"static": 1, "count": step + 1})
        new = {"static": 1, "count": 1} if step == 0 else {"count": step + 1}
        parent = saver.put(parent, checkpoint, {"step": step}, new)
        out.append(parent)
    return out


def thread_keys(client: redis.Redis, prefix: str, thread: str) -> list[bytes]:
    """Every key of the thread, as bytes (since redis-v13 compact ids and fields name
    pages: bytes that are not text)."""
    return sorted(client.scan_iter(match=f"{{{prefix}:{thread}}}*", count=1000))


def server_ms(client: redis.Redis) -> int:
    """The server's clock (what key expiry times are on), ms."""
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000


def expiring_between(client: redis.Redis, keys: list[bytes], low: int, high: int) -> None:
    """Every key of ``keys`` expires between server times ``low`` and ``high`` (ms): an
    expiry set ``ttl`` after a call between two ``server_ms`` readings, however slow the
    test runs (a TTL read later has counted down by then)."""
    at = {k: client.pexpiretime(k) for k in keys}
    assert keys and all(low <= t <= high for t in at.values()), (low, high, at)


class Counting:
    """Counts commands a client sends (each is one round trip here: no pipelines)."""

    def __init__(self, client: redis.Redis) -> None:
        self.calls: list[str] = []
        self._inner = client.execute_command

        def execute(*args: Any, **kw: Any) -> Any:
            self.calls.append(str(args[0]))
            return self._inner(*args, **kw)

        client.execute_command = execute  # type: ignore[method-assign]


# --- layout ------------------------------------------------------------------


def test_unchanged_channel_is_not_rewritten(saver: RedisSaver, raw: redis.Redis) -> None:
    chain(saver, 5, thread="ints")
    blobs = value_fields(raw, ThreadKeys(saver.prefix, "ints").ns(""))
    assert blobs == [b"static\x001"], "static stored once, each small count in its record"
    chain(saver, 5, wrap=lambda step: [step])
    blobs = value_fields(raw, ThreadKeys(saver.prefix, "t1").ns(""))
    assert len(blobs) == 1 + 5, "static stored once, count once per version"
    keys = thread_keys(raw, saver.prefix, "t1")
    kinds = sorted({re.split(":(?:v?pg|rc|vh):", k.decode("latin-1").split("}:", 1)[1])[0]
                    for k in keys})
    assert kinds == ["n:", "n::blobs", "n::chn", "n::idir", "n::idx", "n::pages", "n::vdir",
                     "n::vpages", "ns", "rec"]
    assert raw.type(ThreadKeys(saver.prefix, "t1").ns("").blobs) == b"string"
    nsk = ThreadKeys(saver.prefix, "t1").ns("")
    assert len(record_ids(raw, nsk)) == 5 and not any(b":cp:" in k for k in keys)
    latest = saver.get_tuple(cfg())
    assert latest is not None and latest.checkpoint.channel_values["count"] == [4]
    ints = saver.get_tuple(cfg("ints"))
    assert ints is not None and ints.checkpoint.channel_values["count"] == 4


def test_all_keys_of_a_thread_share_one_slot(saver: RedisSaver, raw: redis.Redis) -> None:
    configs = chain(saver, 2, thread="we:ird{th}read", ns="sub:1")
    saver.put_writes(configs[-1], [("x", 1)], "task")
    saver.leases.acquire("we:ird{th}read", "owner", 5)
    saver.set_status("we:ird{th}read", "running")
    keys = [k for k in raw.scan_iter(match=f"{{{saver.prefix}:*") if b":status:" not in k]
    assert len(keys) >= 8
    assert len({key_slot(k) for k in keys}) == 1
    assert saver.get_tuple(cfg("we:ird{th}read", "sub:1")) is not None


def test_thread_ids_that_look_escaped_stay_apart(saver: RedisSaver) -> None:
    chain(saver, 1, thread="a:b")
    chain(saver, 2, thread="a%3Ab")
    assert len(list(saver.list(cfg("a:b")))) == 1
    assert len(list(saver.list(cfg("a%3Ab")))) == 2
    assert {t.config["configurable"]["thread_id"] for t in saver.list(None)} == {"a:b", "a%3Ab"}


def test_decode_responses_client_is_refused(redis_url: str) -> None:
    with pytest.raises(GraphValueError, match="decode_responses"):
        RedisSaver(redis.Redis.from_url(redis_url, decode_responses=True))


# --- round trips -------------------------------------------------------------


@pytest.mark.parametrize("history", [1, 300])
def test_latest_is_one_round_trip(saver: RedisSaver, history: int) -> None:
    configs = chain(saver, history)
    saver.put_writes(configs[-1], [("count", 99)], "task")
    counter = Counting(saver._conn.client)
    latest = saver.get_tuple(cfg())
    assert latest is not None and latest.config == configs[-1]
    assert latest.pending_writes == [PendingWrite("task", "count", 99)]
    assert counter.calls == ["EVALSHA"]


def test_put_and_put_writes_are_one_round_trip_each(saver: RedisSaver) -> None:
    first = chain(saver, 1)[0]
    counter = Counting(saver._conn.client)
    second = saver.put(
        first,
        cp({"static": "S" * 100, "count": 9}, {"static": 1, "count": 2}),
        {"step": 1},
        {"count": 2},
    )
    saver.put_writes(second, [("a", 1), ("b", 2)], "task")
    assert counter.calls == ["EVALSHA", "EVALSHA"]


def test_list_limit_does_not_read_the_whole_history(saver: RedisSaver) -> None:
    configs = chain(saver, 250)
    counter = Counting(saver._conn.client)
    got = list(saver.list(cfg(), limit=1))
    assert [t.config for t in got] == [configs[-1]]
    assert len(counter.calls) <= 2
    before = list(saver.list(cfg(), before=configs[100], limit=3))
    assert [t.config for t in before] == configs[97:100][::-1]


def test_missing_unchanged_value_is_sent_on_a_second_try(saver: RedisSaver) -> None:
    first = chain(saver, 1)[0]
    delete_value(saver._conn.client, ThreadKeys(saver.prefix, "t1").ns(""), "static\x001")
    second = saver.put(
        first, cp({"static": "again", "count": 5}, {"static": 1, "count": 2}), {}, {"count": 2}
    )
    got = saver.get_tuple(second)
    assert got is not None and got.checkpoint.channel_values == {"static": "again", "count": 5}


# --- writes ------------------------------------------------------------------


def test_duplicated_job_changes_nothing(saver: RedisSaver, raw: redis.Redis) -> None:
    config = chain(saver, 1)[0]
    cid = config["configurable"]["checkpoint_id"]
    wkey = f"{{{saver.prefix}:t1}}:n::w:{cid}"
    saver.put_writes(config, [("a", "first"), (ERROR, "e1")], "task")
    before = raw.hgetall(wkey)
    saver.put_writes(config, [("a", "second"), (ERROR, "e1")], "task")
    assert raw.hgetall(wkey) == before
    assert sorted(before) == [b"task:-1", b"task:0"]
    got = saver.get_tuple(config)
    assert got is not None
    assert got.pending_writes == [
        PendingWrite("task", ERROR, "e1"),
        PendingWrite("task", "a", "first"),
    ]


# --- fencing -----------------------------------------------------------------


def wait_for(predicate: Any, timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def test_stale_owner_is_fenced_and_changes_nothing(saver: RedisSaver, raw: redis.Redis) -> None:
    lease_a = saver.leases.acquire("t1", "owner-a", ttl=0.3)
    assert lease_a is not None
    assert saver.leases.acquire("t1", "owner-b", ttl=5) is None, "A's lease is live"
    configs = chain(saver, 3, fence=lease_a.generation)
    lease_b = wait_for(lambda: saver.leases.acquire("t1", "owner-b", ttl=5))
    assert lease_b.generation == lease_a.generation + 1
    snapshot = {k: raw.dump(k) for k in thread_keys(raw, saver.prefix, "t1")}

    stale = lease_a.fence(configs[-1])
    late = cp({"static": "S" * 100, "count": 666}, {"static": 1, "count": 4})
    with pytest.raises(FencingError, match="stale"):
        saver.put(stale, late, {"step": 3}, {"count": 4})
    with pytest.raises(FencingError):
        saver.put_writes(stale, [("count", 666)], "late-task")
    with pytest.raises(FencingError):
        saver.leases.renew(lease_a, ttl=5)
    assert saver.leases.release(lease_a) is False
    assert {k: raw.dump(k) for k in thread_keys(raw, saver.prefix, "t1")} == snapshot

    fresh = saver.put(lease_b.fence(configs[-1]), late, {"step": 3}, {"count": 4})
    history = [t.config for t in saver.list(cfg())]
    assert history == [fresh, *configs[::-1]]
    assert [t.metadata["step"] for t in saver.list(cfg())] == [3, 2, 1, 0]


def test_two_owners_race_only_one_commits_per_generation(saver: RedisSaver) -> None:
    base = chain(saver, 1)[0]
    results: dict[str, Any] = {}
    barrier = threading.Barrier(2)

    def owner(name: str) -> None:
        barrier.wait()
        lease = saver.leases.acquire("t1", name, ttl=10)
        results[name] = lease
        if lease is not None:
            saver.put(
                lease.fence(base),
                cp({"count": name}, {"static": 1, "count": 2}),
                {"owner": name},
                {"count": 2},
            )

    threads = [threading.Thread(target=owner, args=(n,)) for n in ("x", "y")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    winners = [n for n, lease in results.items() if lease is not None]
    assert len(winners) == 1
    assert [t.metadata.get("owner") for t in saver.list(cfg())] == [winners[0], None]


def test_lease_release_and_reacquire_bumps_generation(saver: RedisSaver) -> None:
    first = saver.leases.acquire("t1", "a", ttl=5)
    assert first is not None
    again = saver.leases.acquire("t1", "a", ttl=5)
    assert again is not None and again.generation == first.generation
    renewed = saver.leases.renew(first, ttl=10)
    assert renewed.expires_at_ms >= first.expires_at_ms
    assert saver.leases.release(renewed)
    second = saver.leases.acquire("t1", "b", ttl=5)
    assert second is not None and second.generation == first.generation + 1
    saver.delete_thread("t1")
    assert saver.leases.generation("t1") == second.generation, "tokens never go back"
    with pytest.raises(GraphValueError):
        saver.put(cfg(fence="1"), cp({}, {}), {}, {})


# --- retention ---------------------------------------------------------------


def test_prune_keeps_what_resuming_needs(saver: RedisSaver, raw: redis.Redis) -> None:
    configs = chain(saver, 10, wrap=lambda step: [step])
    for config in configs:
        saver.put_writes(config, [("count", "w")], "task")
    assert saver.prune("t1", keep_last=3) == 7
    kept = [t.config for t in saver.list(cfg())]
    assert kept == configs[-3:][::-1]
    latest = saver.get_tuple(cfg())
    assert latest is not None
    assert latest.checkpoint.channel_values == {"static": "S" * 100, "count": [9]}
    assert latest.pending_writes == [PendingWrite("task", "count", "w")]
    assert saver.get_tuple(configs[0]) is None
    blobs = value_fields(raw, ThreadKeys(saver.prefix, "t1").ns(""))
    assert sorted(blobs) == sorted([b"count\x008", b"count\x009", b"count\x0010", b"static\x001"])
    keys = thread_keys(raw, saver.prefix, "t1")
    assert sum(b":w:" in k for k in keys) == 3
    assert record_ids(raw, ThreadKeys(saver.prefix, "t1").ns("")) == \
        [c["configurable"]["checkpoint_id"] for c in configs[-3:]]
    with pytest.raises(GraphValueError):
        saver.prune("t1", keep_last=0)


def test_delete_thread_leaves_only_the_lease(saver: RedisSaver, raw: redis.Redis) -> None:
    configs = chain(saver, 3, ns="")
    chain(saver, 2, ns="sub")
    saver.put_writes(configs[0], [("a", 1)], "task")
    saver.leases.acquire("t1", "a", ttl=5)
    saver.set_status("t1", "done")
    chain(saver, 1, thread="other")
    saver.delete_thread("t1")
    assert [k.split(b"}:")[1] for k in thread_keys(raw, saver.prefix, "t1")] == [b"lease"]
    assert saver.list_threads() == []
    assert saver.get_tuple(cfg("other")) is not None


def test_ttl_per_thread_and_default(saver: RedisSaver, raw: redis.Redis, redis_url: str) -> None:
    chain(saver, 2)
    before = server_ms(raw)
    saver.set_ttl("t1", 100)
    expiring_between(raw, thread_keys(raw, saver.prefix, "t1"), before + 100_000,
                     server_ms(raw) + 100_000)
    chain(saver, 1)  # a commit re-applies the thread's TTL to what it touches
    expiring_between(raw, thread_keys(raw, saver.prefix, "t1"), before + 100_000,
                     server_ms(raw) + 100_000)
    assert saver.get_status("t1")["ttl"] == 100  # type: ignore[index]
    saver.set_ttl("t1", None)
    assert all(raw.ttl(k) == -1 for k in thread_keys(raw, saver.prefix, "t1"))

    with RedisSaver.from_url(redis_url, prefix=saver.prefix, ttl=50) as short:
        committed = server_ms(raw)
        config = chain(short, 1, thread="t2")[0]
        short.put_writes(config, [("a", 1)], "task")
        expiring_between(raw, thread_keys(raw, saver.prefix, "t2"), committed + 50_000,
                         server_ms(raw) + 50_000)
        before = server_ms(raw)
        short.set_ttl("t2", 100)
        expiring_between(raw, thread_keys(raw, saver.prefix, "t2"), before + 100_000,
                         server_ms(raw) + 100_000)
        short.set_ttl("t2", None)  # back to the policy the commit recorded on the thread
        expiring_between(raw, thread_keys(raw, saver.prefix, "t2"), committed + 50_000,
                         server_ms(raw) + 50_000)
    assert raw.hget(f"{{{saver.prefix}:t2}}:rec", "policy_ttl") == b"50"
    chain(saver, 1, thread="t2")  # a saver without a policy commits: the thread stays
    assert raw.hget(f"{{{saver.prefix}:t2}}:rec", "policy_ttl") is None
    kept = [k for k in thread_keys(raw, saver.prefix, "t2") if b":w:" not in k]
    assert [k for k in kept if raw.ttl(k) != -1 and b":cp:" not in k] == []


# --- thread records ----------------------------------------------------------


def test_status_record_and_index(saver: RedisSaver) -> None:
    configs = chain(saver, 2)
    saver.set_status("t1", "running")
    saver.set_status("t2", "running")
    try:
        raise KeyError("boom")
    except KeyError as exc:
        saver.set_status("t2", "failed", exc)
    record = saver.get_status("t2")
    assert record is not None
    assert record["status"] == "failed"
    assert record["error_type"] == "builtins.KeyError"
    assert "boom" in record["error_message"] and "Traceback" in record["error_traceback"]
    assert (
        saver.get_status("t1")["last_checkpoint_id"] == configs[-1]["configurable"]["checkpoint_id"]
    )  # type: ignore[index]
    assert saver.list_threads("running") == ["t1"]
    assert saver.list_threads("failed") == ["t2"]
    assert sorted(saver.list_threads()) == ["t1", "t2"]
    saver.set_status("t2", "running")
    assert saver.get_status("t2")["error_type"] == "builtins.KeyError"  # type: ignore[index]
    assert sorted(saver.list_threads("running")) == ["t1", "t2"]
    assert saver.get_status("nobody") is None
    with pytest.raises(GraphValueError):
        saver.set_status("t1", "bogus")  # type: ignore[arg-type]


# --- failures ----------------------------------------------------------------


def test_unreachable_redis_fails_fast_with_a_clear_error(spawn_redis: Any) -> None:
    url = f"redis://:s3cret@127.0.0.1:{spawn_redis.free_port()}/0"
    saver = RedisSaver.from_url(url, prefix="x")
    started = time.monotonic()
    with pytest.raises(CheckpointStoreError) as info:
        saver.get_tuple(cfg())
    assert time.monotonic() - started < 5
    message = str(info.value)
    assert "127.0.0.1" in message and "s3cret" not in message and "***" in message


def test_blackholed_redis_fails_within_the_connect_timeout() -> None:
    saver = RedisSaver.from_url("redis://10.255.255.1:6379/0", socket_connect_timeout=0.3)
    started = time.monotonic()
    with pytest.raises(CheckpointStoreError, match="10.255.255.1"):
        saver.put(cfg(), cp({"a": 1}, {"a": 1}), {}, {"a": 1})
    assert time.monotonic() - started < 5


def test_connection_killed_mid_commit_leaves_whole_checkpoints(
    redis_url: str, redis_prefix: str, raw: redis.Redis
) -> None:
    name = f"victim-{uuid.uuid4().hex[:8]}"
    saver = RedisSaver.from_url(redis_url, prefix=redis_prefix, client_name=name, retry=None)
    stop = threading.Event()
    committed: list[tuple[dict, int]] = []
    failures: list[BaseException] = []

    def commit_loop() -> None:
        parent = cfg()
        step = 0
        while not stop.is_set():
            step += 1
            big = {"blob": os.urandom(256 * 1024).hex(), "step": step}
            try:
                parent = saver.put(
                    parent,
                    cp(big, {"blob": step, "step": step}),
                    {"step": step},
                    {"blob": step, "step": step},
                )
                committed.append((parent, step))
            except CheckpointStoreError as exc:
                failures.append(exc)

    worker = threading.Thread(target=commit_loop)
    worker.start()
    try:
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and len(failures) < 5:
            for line in raw.client_list():
                if line.get("name") == name:
                    raw.client_kill_filter(_id=line["id"])
            time.sleep(0.01)
    finally:
        stop.set()
        worker.join(10)
    assert failures, "no commit was interrupted"
    assert committed, "no commit went through"
    for config, step in committed:
        got = saver.get_tuple(config)
        assert got is not None and got.checkpoint.channel_values["step"] == step
    for item in saver.list(cfg()):  # every checkpoint there is whole, acked or not
        assert set(item.checkpoint.channel_values) == {"blob", "step"}
        assert item.metadata["step"] == item.checkpoint.channel_values["step"]
    saver.close()


def test_thread_resumes_after_redis_restarts(redis_prefix: str, spawn_redis: Any) -> None:
    with tempfile.TemporaryDirectory(prefix="dg-aof-") as workdir:
        port = spawn_redis.free_port()
        aof = ("--appendonly", "yes", "--appendfsync", "always")
        proc, url = spawn_redis.start(workdir, port, *aof)
        saver = RedisSaver.from_url(url, prefix=redis_prefix, socket_connect_timeout=0.5)
        try:
            configs = chain(saver, 5)
            proc.kill()
            proc.wait()
            with pytest.raises(CheckpointStoreError):
                saver.get_tuple(cfg())
            proc, _ = spawn_redis.start(workdir, port, *aof)
            latest = saver.get_tuple(cfg())
            assert latest is not None and latest.config == configs[-1]
            nxt = saver.put(
                configs[-1],
                cp({"static": "S" * 100, "count": 5}, {"static": 1, "count": 6}),
                {"step": 5},
                {"count": 6},
            )
            assert [t.config for t in saver.list(cfg())][:2] == [nxt, configs[-1]]
        finally:
            saver.close()
            spawn_redis.stop(proc)
