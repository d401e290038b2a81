"""The lease scheduler's sweep against a real Redis: what it recovers and what not.

The sweep enqueues recovery jobs on a real broker queue (Redis), which the test
reads back instead of running a worker.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import pytest
import redis

from durable_graph.store.redis import RedisSaver
from durable_graph.worker import create_app
from durable_graph.worker.recovery import LeaseScheduler
from durable_graph.worker.runs import RunSpec
from durable_graph.worker.shipping import GraphRef

pytestmark = pytest.mark.redis
SECRET = "sweep-test-secret-0123456789"


@pytest.fixture
def scheduler(redis_url: str, redis_prefix: str) -> Iterator[LeaseScheduler]:
    queue = f"{redis_prefix}-queue"
    app = create_app(redis_url, prefix=redis_prefix, queue=queue, secret_key=SECRET,
                     lease_ttl=0.2)
    with RedisSaver.from_url(redis_url, prefix=redis_prefix) as saver:
        yield LeaseScheduler(app, saver)
    redis.Redis.from_url(redis_url).delete(queue)



def record_run(scheduler: LeaseScheduler, thread_id: str) -> None:
    run = RunSpec(uuid.uuid4().hex, thread_id, GraphRef("some.module:graph"), {}, "sync", (),
                  (), 25, 30, (), "", scheduler.saver.prefix)
    scheduler.saver.set_run(thread_id, scheduler._dispatcher.seal_value(run))


def test_an_expired_distributed_run_is_recovered_once(scheduler: LeaseScheduler) -> None:
    saver = scheduler.saver
    record_run(scheduler, "dead")
    saver.set_status("dead", "running")
    lease = saver.leases.acquire("dead", "run:1", 0.05)
    assert lease is not None
    assert scheduler.sweep() == []  # its lease is live
    threading.Event().wait(0.1)
    assert scheduler.sweep() == ["dead"]
    assert scheduler.sweep() == []  # the recovery holds the lease now
    assert saver.client.llen(scheduler.settings.queue) == 1
    assert saver.leases.generation("dead") == lease.generation + 1


def test_an_embedded_run_on_a_thread_that_once_ran_on_workers_is_left_alone(
    scheduler: LeaseScheduler,
) -> None:
    saver = scheduler.saver
    record_run(scheduler, "mixed")
    lease = saver.leases.acquire("mixed", "run:1", 5)
    assert lease is not None and saver.leases.release(lease)  # the distributed run ended
    saver.set_status("mixed", "running")  # an embedded run now: it takes no lease
    threading.Event().wait(0.1)
    assert scheduler.sweep() == []
    assert saver.client.llen(scheduler.settings.queue) == 0


def test_a_run_that_ended_after_the_listing_is_not_recovered(
    scheduler: LeaseScheduler,
) -> None:
    saver = scheduler.saver
    record_run(scheduler, "ended")
    saver.set_status("ended", "done")  # its ender died before releasing the lease
    assert saver.leases.acquire("ended", "run:1", 0.05) is not None
    threading.Event().wait(0.1)
    saver.set_status("ended", "running")
    listed = saver.list_threads

    def stale_listing(status: str | None = None) -> list[str]:
        found = listed(status)
        saver.set_status("ended", "done")  # ...and the run ends right after the listing
        return found

    saver.list_threads = stale_listing  # type: ignore[method-assign]
    assert scheduler.sweep() == []
    assert saver.client.llen(scheduler.settings.queue) == 0
    assert saver.leases.take_over("ended", "x", 5) is None  # released again
