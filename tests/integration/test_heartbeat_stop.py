"""A worker process's heartbeat ends when the process stops cleanly, on the real Redis.

``Liveness.stop`` ends the heartbeat thread, records the ends still queued and takes the
process's entry out of ``{P:live:w}``: no key of the prefix comes back after it, and a
sweep finds no dead process to look at. A process that still holds a claim is declared
dead instead (its entry kept at 0), so the next sweep sends that job again: an entry
taken out would leave the claim held for good. Celery's shutdown signals stop every
runtime of the process (``WorkerRuntime.stop_here``).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from celery import Celery, signals

from durable_graph.store.redis.connection import RedisConn
from durable_graph.store.redis.jobbook import Finished, JobBook
from durable_graph.store.redis.keys import ThreadKeys, live_key
from durable_graph.worker import create_app
from durable_graph.worker.app import WorkerRuntime
from durable_graph.worker.config import Settings
from durable_graph.worker.liveness import Liveness
from durable_graph.worker.runs import Job, RunSpec
from durable_graph.worker.shipping import GraphRef
from tests.conftest import delete_prefix
from tests.unit.backend_contract import wait_until

pytestmark = pytest.mark.redis
THREAD = "thread-1"
BEAT = 0.3
"""Heartbeat TTL of these tests: a beat every 0.1 s."""


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    found = redis.Redis.from_url(redis_url)
    yield found
    found.close()


@pytest.fixture
def book(client: redis.Redis, redis_prefix: str) -> JobBook:
    return JobBook(RedisConn(client), redis_prefix)


@pytest.fixture
def live(redis_url: str, redis_prefix: str, book: JobBook) -> Iterator[Liveness]:
    found = Liveness(Settings(redis_url=redis_url, prefix=redis_prefix, heartbeat_ttl=BEAT),
                     lambda p: book)
    yield found
    found.stop()


def _jobs(client: redis.Redis, book: JobBook, prefix: str, *keys: str) -> list[Job]:
    """Jobs registered as sent, of a thread whose lease they hold."""
    run = RunSpec("run", THREAD, GraphRef("m:g"), {}, "sync", (), (), 25, -1, (), "", prefix)
    jobs = [Job("call", run, "owner", 1, checkpoint_id="c1", task_id=k, key=k) for k in keys]
    book.register_sent([(j.key, THREAD, '["its own message"]') for j in jobs])()
    client.hset(ThreadKeys(prefix, THREAD).lease, mapping={"owner": "owner", "gen": "1"})
    return jobs


def _keys(client: redis.Redis, prefix: str) -> list[bytes]:
    return [k for pattern in (f"{prefix}*", f"{{{prefix}*")
            for k in client.scan_iter(match=pattern, count=1000)]


def _beating(client: redis.Redis, prefix: str, worker: str) -> bool:
    score = client.zscore(live_key(prefix), worker)
    return score is not None and score > 0


def test_a_stopped_heartbeat_writes_no_key_after_its_prefix_is_deleted(
    live: Liveness, book: JobBook, client: redis.Redis, redis_url: str, redis_prefix: str,
) -> None:
    (job,) = _jobs(client, book, redis_prefix, "k1")
    with live.running(job) as (what, _):
        assert what == "run" and _beating(client, redis_prefix, live.worker)
    live.stop()
    # the job's end (queued for the ender thread) was recorded first: nothing held, so
    # the entry is gone, not declared dead (a sweep has no process to look at)
    assert book.claims() == []
    assert client.zscore(live_key(redis_prefix), live.worker) is None
    assert book.view("q", 0).dead == []
    delete_prefix(redis_url, redis_prefix)
    time.sleep(10 * BEAT / 3)  # ten heartbeat periods: a beat would have come back
    assert _keys(client, redis_prefix) == []


def test_a_process_stopping_with_a_claim_is_declared_dead_for_the_sweep(
    live: Liveness, book: JobBook, client: redis.Redis, redis_prefix: str,
) -> None:
    jobs = _jobs(client, book, redis_prefix, "k1", "k2")
    claims = live.claim_calls(jobs, Finished(book.conn, f"{redis_prefix}:none", ("k1", "k2")))
    assert claims is not None and [c[0] for c in claims] == ["ok", "ok"]
    live.stop()  # claimed, never run nor given back
    assert client.zscore(live_key(redis_prefix), live.worker) == 0
    assert book.view("q", 0).dead == [live.worker]
    assert {holder for _, _, holder in book.claims()} == {live.worker}


def test_a_stopped_liveness_beats_again_for_its_next_job(
    live: Liveness, book: JobBook, client: redis.Redis, redis_prefix: str,
) -> None:
    first, second = _jobs(client, book, redis_prefix, "k1", "k2")
    with live.running(first) as (what, _):
        assert what == "run"
    live.stop()
    live.stop()  # twice: nothing left to do
    assert client.zscore(live_key(redis_prefix), live.worker) is None
    with live.running(second) as (what, _):
        assert what == "run" and _beating(client, redis_prefix, live.worker)
        score = client.zscore(live_key(redis_prefix), live.worker)
        wait_until(lambda: client.zscore(live_key(redis_prefix), live.worker) != score)
    live.stop()
    assert client.zscore(live_key(redis_prefix), live.worker) is None


@pytest.mark.parametrize("signal", [signals.worker_process_shutdown, signals.worker_shutdown],
                         ids=["pool process", "worker"])
def test_celerys_shutdown_signals_stop_the_heartbeats_of_the_process(
    redis_url: str, redis_prefix: str, client: redis.Redis, signal: Any,
) -> None:
    """Sent by a worker of our app (``worker_shutdown``: the worker, with its app; a pool
    process's: its host name, the app the current one), the signal ends the heartbeats;
    sent by another app's worker, it leaves them alone."""
    app = create_app(redis_url, prefix=redis_prefix, queue=f"{redis_prefix}-q",
                     secret_key="heartbeat-stop-test-secret-0123456789", heartbeat_ttl=BEAT)
    runtime = WorkerRuntime.of(app)
    book = runtime.dispatcher.books(redis_prefix)
    (job,) = _jobs(client, book, redis_prefix, "k1")
    with runtime.liveness.running(job) as (what, _):
        assert what == "run" and _beating(client, redis_prefix, runtime.liveness.worker)

    def send(of: Celery) -> None:
        if signal is signals.worker_shutdown:
            signal.send(sender=_Worker(of))
        else:
            of.set_current()
            signal.send(sender="w@h", pid=os.getpid(), exitcode=0)

    send(Celery("another-app", set_as_current=False))
    time.sleep(BEAT)  # beats go on
    assert _beating(client, redis_prefix, runtime.liveness.worker)
    send(app)
    assert client.zscore(live_key(redis_prefix), runtime.liveness.worker) is None
    assert not client.exists(live_key(redis_prefix))


class _Worker:
    """What ``worker_shutdown`` sends as its sender, as far as the handler looks: a
    worker (Celery's ``WorkController``) with its app."""

    def __init__(self, app: Celery) -> None:
        self.app = app


class _PausingBook(JobBook):
    """A job book whose ``claims`` pauses after its read, until ``go`` is set."""

    def __init__(self, conn: RedisConn, prefix: str) -> None:
        super().__init__(conn, prefix)
        self.read, self.go = threading.Event(), threading.Event()

    def claims(self) -> Any:
        found = super().claims()
        self.read.set()
        self.go.wait(10)
        return found


def test_a_claim_made_while_stopping_waits_and_keeps_its_heartbeat(
    redis_url: str, redis_prefix: str, client: redis.Redis,
) -> None:
    """``stop`` reads the process's claims, then takes its entry out: a claim made in
    between would be held by a process with no entry, for good. Claims wait for ``stop``
    instead, and beat again after it."""
    book = _PausingBook(RedisConn(client), redis_prefix)
    live = Liveness(Settings(redis_url=redis_url, prefix=redis_prefix, heartbeat_ttl=BEAT),
                    lambda p: book)
    first, second = _jobs(client, book, redis_prefix, "k1", "k2")
    with live.running(first) as (what, _):
        assert what == "run"
    stopping = threading.Thread(target=live.stop)
    stopping.start()
    assert book.read.wait(10)  # stop saw no claim; its entry is not out yet
    claims: list[Any] = []
    claiming = threading.Thread(target=lambda: claims.append(live.claim_calls(
        [second], Finished(book.conn, f"{redis_prefix}:none", ("k2",)))))
    claiming.start()
    claiming.join(3 * BEAT)
    assert claiming.is_alive()  # waits for stop
    book.go.set()
    stopping.join(10)
    claiming.join(10)
    assert [c[0] for c in claims[0]] == ["ok"]
    assert _beating(client, redis_prefix, live.worker)  # the claim's holder has its entry
    live.stop()
    assert client.zscore(live_key(redis_prefix), live.worker) == 0  # held: declared dead
