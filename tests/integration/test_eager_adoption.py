"""Eager continuation against a real Redis: an adopted job is a claimed job like any other.

The worker's part is played by hand (``Eager`` over the real job book and dispatcher);
the recovery sweep is the real one (see ``test_recovery_sweep``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import redis
from test_recovery_sweep import SECRET, kinds, queued, scheduler, start_run, wait

from durable_graph.store.redis.jobbook import pipelined
from durable_graph.worker import create_app
from durable_graph.worker.app import WorkerRuntime
from durable_graph.worker.eager import Eager
from durable_graph.worker.liveness import Liveness
from durable_graph.worker.recovery import LeaseScheduler
from durable_graph.worker.runs import Job

pytestmark = pytest.mark.redis
TTL = 0.2
__all__ = ["scheduler"]  # the fixture, shared with test_recovery_sweep


def _received(scheduler: LeaseScheduler, thread_id: str, worker: str, ttl: float) -> Job:
    """The first job of a new run of ``thread_id``, sent, received and claimed by
    ``worker`` (beating for ``ttl`` seconds)."""
    first = start_run(scheduler, thread_id)
    scheduler._dispatcher.send([first])
    (_, kwargs), = queued(scheduler)
    scheduler.saver.client.delete(scheduler.settings.queue)  # a worker received it
    first = replace(first, key=kwargs["key"])
    scheduler.book.heartbeat(worker, ttl)
    assert scheduler.book.claim(first.key, thread_id, worker) == ("ok", "")
    return first


def _unclaimed(scheduler: LeaseScheduler, thread_id: str, worker: str) -> Job:
    """The first job of a new run of ``thread_id`` (never sent), with ``worker`` beating."""
    scheduler.book.heartbeat(worker, 5)
    return replace(start_run(scheduler, thread_id), key="k-first")


def _eager(scheduler: LeaseScheduler, worker: str, current: Job, *, left: int = 8,
           first_read: Any = None) -> Eager:
    """An eager slot of ``worker`` whose current job is ``current``, on the scheduler's book."""
    book = scheduler.book
    return Eager(lambda prefix: book, scheduler._dispatcher, worker=worker, left=left,
                 first_read=first_read or (lambda job: None), current=current, idle_ttl=TTL,
                 end_later=Liveness(scheduler.settings, lambda prefix: book).end_later)


def test_an_adopted_job_is_owed_and_claimed_and_a_dead_adopter_has_it_sent_again_once(
    scheduler: LeaseScheduler,
) -> None:
    book, worker = scheduler.book, "host:1:adopter"
    first = _received(scheduler, "chain", worker, TTL)

    eager = _eager(scheduler, worker, first, left=1)
    second = replace(first, key="", checkpoint_id="c2", step=1, task_id="t2", name="node_b")
    assert eager.take(second, last=True)
    assert not eager.take(replace(second, task_id="t3"), last=True)  # one slot
    assert eager.taken is not None
    adopted = eager.taken.job
    assert not eager.deeper().take(replace(second, task_id="t3"), last=True)  # depth 1

    assert kinds(scheduler) == []  # nothing was published for it
    assert book.owes("chain")
    # the first job ended with the adoption; the adopted one is claimed by its adopter
    assert {key: holder for _, key, holder in book.claims()} == {adopted.key: worker}

    wait(TTL + 0.1)  # the adopter stopped beating: it died mid-step
    assert scheduler.sweep_all().resent == 1
    (args, resent), = queued(scheduler)
    assert (args[1], args[2], resent["key"]) == ("t2", "task", adopted.key)
    assert scheduler.sweep_all().resent == 0  # once
    assert scheduler.saver.leases.generation("chain") == 1  # resent, never taken over


def test_a_job_adopted_when_the_adopter_failed_is_handed_to_the_queue(
    scheduler: LeaseScheduler,
) -> None:
    book, worker = scheduler.book, "host:2:adopter"
    first = _unclaimed(scheduler, "handed", worker)
    eager = _eager(scheduler, worker, first)
    assert eager.take(replace(first, key="", task_id="t2"), last=False)
    assert eager.taken is not None
    key = eager.taken.job.key

    eager.hand_off()  # the adopting job raised: the adopted one goes to the queue

    assert eager.taken is None
    assert [(args[1], kw["key"]) for args, kw in queued(scheduler)] == [("t2", key)]
    assert {k for _, k, _ in book.claims()} == set()  # given back: the copy claims it
    assert book.claim(key, "handed", "host:3:other") == ("ok", "")


def test_a_job_adopted_with_a_commit_is_confirmed_by_take_and_ended_by_drop(
    scheduler: LeaseScheduler,
) -> None:
    book, worker = scheduler.book, "host:4:rider"
    first = _unclaimed(scheduler, "ridden", worker)

    kept = _eager(scheduler, worker, first)
    second = replace(first, key="", checkpoint_id="c2", step=1, task_id="t2")
    ride = kept.ride(second)
    assert ride is not None
    ride.landed(pipelined(book.conn, "commit and adopt", ride.queue))  # as commit_step does
    assert kept.taken is not None
    key = kept.taken.job.key
    assert {k: holder for _, k, holder in book.claims()} == {key: worker}
    assert kept.take(second, last=True)  # the step after the commit: confirmed, not again
    assert kept.taken.job.key == key and len(book.claims()) == 1
    kept.drop()  # confirmed: nothing to drop
    assert kept.taken is not None and book.owes("ridden")

    dropped = _eager(scheduler, worker, first)
    ride = dropped.ride(replace(second, task_id="t3"))
    assert ride is not None
    ride.landed(pipelined(book.conn, "commit and adopt", ride.queue))
    assert dropped.taken is not None
    other = dropped.taken.job.key
    dropped.drop()  # the commit was refused: the adopted job will not run
    assert dropped.taken is None
    assert {k for _, k, _ in book.claims()} == {key} and other != key
    assert kinds(scheduler) == []  # nothing was published


def test_an_adoption_riding_a_commit_ends_the_adopting_job_after_it(
    scheduler: LeaseScheduler,
) -> None:
    """The adopting job's end rides the commit's round trip, after the adoption (the
    thread never owes nothing in between); the adopted job's first read comes last."""
    book, worker = scheduler.book, "host:5:rider"
    first = _received(scheduler, "ends", worker, 5)
    marker = f"{scheduler.settings.prefix}:marker"
    scheduler.saver.client.set(marker, b"read with the adoption")
    eager = _eager(scheduler, worker, first, first_read=lambda job: lambda p: p.get(marker))

    ride = eager.ride(replace(first, key="", checkpoint_id="c2", step=1, task_id="t2"))
    assert ride is not None and not eager.ended_current
    sent: list[Any] = []

    def queue(p: Any) -> list[Any]:
        sent.extend(queued := ride.queue(p))
        return queued

    ride.landed(pipelined(book.conn, "commit and adopt", queue))

    assert len(sent) == 2  # the adoption with the end in one script, then the read
    assert eager.ended_current and eager.taken is not None
    assert eager.taken.early == b"read with the adoption"
    adopted = eager.taken.job.key
    assert {k: holder for _, k, holder in book.claims()} == {adopted: worker}
    assert book.claim(first.key, "ends", "host:6:copy") == ("gone", "")  # ended
    assert book.owes("ends")  # the adopted job
    book.end(adopted, "ends", TTL)
    assert not book.owes("ends")


@pytest.fixture
def own_redis(spawn_redis: Any, tmp_path: Path) -> Iterator[tuple[str, redis.Redis]]:
    """A redis-server of this test's own (its ACL is changed) and a client of it."""
    proc, url = spawn_redis.start(str(tmp_path))
    client = redis.Redis.from_url(url)
    yield url, client
    client.close()
    spawn_redis.stop(proc)


def test_an_adopted_job_whose_drop_the_store_refused_is_ended_once_it_answers_again(
    own_redis: tuple[str, redis.Redis],
) -> None:
    """Dropping an adopted job (its commit was refused, or the run stops) ends it in the
    job book. If Redis refuses that end, the job stayed owed and claimed by this live
    process: never resent, and its thread never idle again (a later run of it that loses
    its worker between two steps would not be recovered). It is ended once Redis answers."""
    url, client = own_redis
    app = create_app(url, prefix="own", queue="own-queue", secret_key=SECRET,
                     lease_ttl=TTL, heartbeat_ttl=TTL, store_retry=10)
    own = LeaseScheduler(app, WorkerRuntime.of(app).saver("own"))
    book, worker = own.book, "host:7:dropper"
    first = _unclaimed(own, "refused", worker)
    eager = _eager(own, worker, first)
    ride = eager.ride(replace(first, key="", checkpoint_id="c2", step=1, task_id="t2"))
    assert ride is not None
    ride.landed(pipelined(book.conn, "commit and adopt", ride.queue))
    assert eager.taken is not None and book.owes("refused")

    client.acl_setuser("default", enabled=True, nopass=True, commands=["-@scripting"])
    try:
        eager.drop()  # Redis refuses the end (NOPERM): a real store error
        assert eager.taken is None and book.owes("refused")  # not ended: refused
    finally:
        client.acl_setuser("default", enabled=True, nopass=True, commands=["+@all"])
    deadline = time.monotonic() + 10
    while book.owes("refused") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not book.owes("refused") and book.claims() == []
    assert kinds(own) == []  # ended, not published
