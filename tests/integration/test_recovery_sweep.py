"""The recovery sweep against a real Redis: what it heals, what it leaves alone.

Jobs are sent to a real broker queue (Redis) by the real dispatcher; the tests read
the queue back, play the worker's part with ``WorkerRuntime`` and the job book
(claims, heartbeats, probes), and check what each sweep sent again.
"""

from __future__ import annotations

import base64
import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
import redis

from durable_graph import JobCrashedError
from durable_graph.errors import CheckpointStoreError
from durable_graph.store.redis.keys import status_key
from durable_graph.store.redis.lease import Lease
from durable_graph.worker import create_app
from durable_graph.worker.app import WorkerRuntime
from durable_graph.worker.events import END, RunEvents
from durable_graph.worker.liveness import Liveness
from durable_graph.worker.recovery import LeaseScheduler
from durable_graph.worker.runs import Job, RunSpec
from durable_graph.worker.shipping import GraphRef
from tests.unit.backend_contract import wait_until

pytestmark = pytest.mark.redis
SECRET = "sweep-test-secret-0123456789"
TTL = 0.2


@pytest.fixture
def scheduler(redis_url: str, redis_prefix: str) -> Iterator[LeaseScheduler]:
    queue = f"{redis_prefix}-queue"
    app = create_app(redis_url, prefix=redis_prefix, queue=queue, secret_key=SECRET,
                     lease_ttl=TTL, heartbeat_ttl=TTL)
    runtime = WorkerRuntime.of(app)
    yield LeaseScheduler(app, runtime.saver(redis_prefix), probe_after=0.1,
                         send_skew=0.05)
    redis.Redis.from_url(redis_url).delete(queue)


def wait(seconds: float) -> None:
    threading.Event().wait(seconds)


def queued(s: LeaseScheduler) -> list[tuple[list[Any], dict[str, Any]]]:
    """(args, kwargs) of every message in the queue, oldest first."""
    raw = s.saver.client.lrange(s.settings.queue, 0, -1)
    out = []
    for item in reversed(raw):
        body = json.loads(base64.b64decode(json.loads(item)["body"]))
        out.append((body[0], body[1]))
    return out


def kinds(s: LeaseScheduler) -> list[str]:
    """The kinds of the queued jobs (probes left out)."""
    return [args[2] for args, _ in queued(s) if args[2] != "probe"]


def pop(s: LeaseScheduler) -> tuple[list[Any], dict[str, Any]]:
    """Take the oldest message off the queue (as the broker does when it loses one)."""
    first = queued(s)[0]
    s.saver.client.rpop(s.settings.queue)
    return first


def start_run(s: LeaseScheduler, thread_id: str) -> Job:
    """A running thread whose producer holds the lease and recorded the run."""
    run = RunSpec(uuid.uuid4().hex, thread_id, GraphRef("some.module:graph"), {}, "sync", (),
                  (), 25, 30, (), "", s.saver.prefix)
    s.saver.set_run(thread_id, s._dispatcher.seal_value(run))
    s.saver.set_status(thread_id, "running")
    lease = s.saver.leases.acquire(thread_id, f"run:{run.run_id}", TTL)
    assert lease is not None
    s.book.arm_idle(thread_id, TTL, only_if_idle=True)
    return Job("task", run, lease.owner, lease.generation, checkpoint_id="c1", task_id="t1",
               name="node_a")


def test_an_idle_running_thread_is_taken_over_and_recovered_once(
    scheduler: LeaseScheduler,
) -> None:
    start_run(scheduler, "dead")  # ...and its producer died before sending a job
    assert scheduler.sweep() == []  # not idle for a whole TTL yet
    wait(TTL + 0.1)
    assert scheduler.sweep() == ["dead"]
    assert scheduler.sweep() == []  # the recovery job is owed now
    assert kinds(scheduler) == ["recover"]
    assert scheduler.saver.leases.generation("dead") == 2


def test_a_thread_whose_jobs_wait_in_the_queue_is_never_taken_over(
    scheduler: LeaseScheduler,
) -> None:
    job = start_run(scheduler, "busy")
    scheduler._dispatcher.send([job])
    for _ in range(4):  # four lease TTLs in the queue, nobody renewing anything
        wait(TTL)
        assert scheduler.sweep() == []
    assert kinds(scheduler) == ["task"]
    assert scheduler.saver.leases.generation("busy") == 1


def test_an_ended_run_whose_ender_died_before_releasing_is_told_again_once(
    scheduler: LeaseScheduler,
) -> None:
    start_run(scheduler, "ended")
    scheduler.saver.set_status("ended", "done")  # its ender died before telling the producer
    wait(TTL + 0.1)
    assert scheduler.sweep() == []  # not a recovery of a running thread...
    assert kinds(scheduler) == ["recover"]  # ...but a job that ends it again, with its output
    assert scheduler.saver.leases.generation("ended") == 2
    assert scheduler.book.view(scheduler.settings.queue, 0).idle == []  # no longer watched
    wait(TTL + 0.1)
    scheduler.sweep()
    assert kinds(scheduler) == ["recover"]  # once


def test_a_failed_run_whose_ender_died_before_releasing_gets_its_end_published(
    scheduler: LeaseScheduler,
) -> None:
    job = start_run(scheduler, "failed")
    scheduler.saver.set_status("failed", "failed", ValueError("boom"))
    wait(TTL + 0.1)
    scheduler.sweep()
    assert kinds(scheduler) == []
    events = RunEvents(scheduler.saver.conn, scheduler.saver.prefix,
                       WorkerRuntime.of(scheduler.app).serde)
    (_, mode, end), = events.read("failed", job.run.run_id, "0", 100)
    assert mode == END and end["status"] == "failed"
    assert end["error"]["type"] == "builtins.ValueError" and end["error"]["message"] == "boom"


def test_a_run_that_ended_and_released_its_lease_is_left_alone(
    scheduler: LeaseScheduler,
) -> None:
    job = start_run(scheduler, "released")
    scheduler.saver.set_status("released", "done")
    assert scheduler.saver.leases.release(Lease("released", job.owner, job.fence, 0))
    wait(TTL + 0.1)
    assert scheduler.sweep() == []
    assert kinds(scheduler) == []
    assert scheduler.book.view(scheduler.settings.queue, 0).idle == []


def test_a_message_the_broker_lost_is_sent_again_once_the_queue_moved_past_it(
    scheduler: LeaseScheduler,
) -> None:
    job = start_run(scheduler, "lost")
    scheduler._dispatcher.send([job])
    args, kwargs = pop(scheduler)  # popped, never recorded as unacknowledged: lost
    wait(0.2)
    assert scheduler.sweep_all().lost == 0  # nothing proves it lost yet: a probe goes out
    (probe_args, probe_kwargs), = queued(scheduler)
    assert probe_args[2] == "probe"
    pop(scheduler)
    runtime = WorkerRuntime.of(scheduler.app)
    assert runtime.run(*probe_args, run_id=probe_kwargs["run"], prefix=probe_kwargs["prefix"],
                       key=probe_kwargs["key"]) == "ok"
    assert scheduler.sweep_all().lost == 0  # this sweep learns the queue moved past it
    assert scheduler.sweep_all().lost == 1
    resent = [m for m in queued(scheduler) if m[0][2] != "probe"]
    assert resent == [(args, kwargs)]  # the same message, key and all
    assert scheduler.sweep_all().lost == 0  # once
    assert scheduler.saver.leases.generation("lost") == 1


def test_a_job_waiting_in_the_queue_is_not_resent_by_a_probe_behind_it(
    scheduler: LeaseScheduler,
) -> None:
    job = start_run(scheduler, "waiting")
    scheduler._dispatcher.send([job])
    wait(0.2)
    scheduler.sweep_all()  # sends a probe; the job is still ahead of it in the queue
    assert [args[2] for args, _ in queued(scheduler)] == ["task", "probe"]
    scheduler.sweep_all()
    assert [args[2] for args, _ in queued(scheduler)] == ["task", "probe"]


def claim(s: LeaseScheduler, job_key: str, thread_id: str, worker: str) -> None:
    s.book.heartbeat(worker, TTL)
    assert s.book.claim(job_key, thread_id, worker) == ("ok", "")


def test_a_claimed_job_is_not_run_twice_and_is_resent_when_its_process_dies(
    scheduler: LeaseScheduler,
) -> None:
    job = start_run(scheduler, "claimed")
    scheduler._dispatcher.send([job])
    args, kwargs = pop(scheduler)
    claim(scheduler, kwargs["key"], "claimed", "host:1:a")
    assert scheduler.book.claim(kwargs["key"], "claimed", "host:2:b") == ("held", "host:1:a")
    scheduler.book.heartbeat("host:1:a", TTL)
    assert scheduler.sweep_all().resent == 0  # alive
    wait(TTL + 0.1)  # it stopped beating
    assert scheduler.sweep_all().resent == 1
    assert queued(scheduler) == [(args, kwargs)]
    assert scheduler.sweep_all().resent == 0
    assert scheduler.saver.leases.generation("claimed") == 1


def test_a_job_whose_process_dies_max_deaths_times_fails_its_thread(
    scheduler: LeaseScheduler,
) -> None:
    job = start_run(scheduler, "loop")
    scheduler._dispatcher.send([job])
    key = pop(scheduler)[1]["key"]
    for death in range(1, 4):
        worker = f"host:{death}:x"
        claim(scheduler, key, "loop", worker)
        if death == 3:
            scheduler.book.note_death(key, "loop", f"host:{death}:", "exitcode 7")
            scheduler.book.declare_dead(worker)
        else:
            wait(TTL + 0.1)
        result = scheduler.sweep_all()
        assert (result.resent, result.failed) == ((1, []) if death < 3 else (0, ["loop"]))
        if death < 3:
            pop(scheduler)
    record = scheduler.saver.get_status("loop")
    assert record is not None and record["status"] == "failed"
    assert record["error_type"] == f"{JobCrashedError.__module__}.JobCrashedError"
    assert "task 'node_a'" in record["error_message"]
    assert "died 3 times (last: exitcode 7)" in record["error_message"]
    assert queued(scheduler) == []
    assert not scheduler.book.owes("loop")


@pytest.fixture
def restartable(spawn_redis: Any, redis_prefix: str, tmp_path: Any) -> Iterator[Any]:
    """A scheduler on a Redis of this test (store and broker; AOF, fsync always), and
    ``restart(down)``: stop that Redis, wait ``down`` seconds (None: until ``up`` is
    set), start it again on the same port with the same data."""
    port = spawn_redis.free_port()
    aof = ("--appendonly", "yes", "--appendfsync", "always")
    procs = [spawn_redis.start(str(tmp_path), port, *aof)[0]]
    app = create_app(f"redis://127.0.0.1:{port}/0", prefix=redis_prefix,
                     queue=f"{redis_prefix}-queue", secret_key=SECRET, lease_ttl=TTL,
                     heartbeat_ttl=TTL, store_retry=20)
    s = LeaseScheduler(app, WorkerRuntime.of(app).saver(redis_prefix), probe_after=0.1,
                       send_skew=0.05)

    def stop() -> None:
        spawn_redis.stop(procs[-1])

    def start() -> None:
        procs.append(spawn_redis.start(str(tmp_path), port, *aof)[0])

    yield s, stop, start


def test_heartbeats_that_expired_while_the_store_was_down_are_not_deaths(
    restartable: Any,
) -> None:
    """An outage longer than the heartbeat TTL expires every worker's heartbeat: the
    sweep gives the workers one TTL to beat again before it resends their jobs."""
    s, stop, start = restartable
    job = start_run(s, "beating")
    s._dispatcher.send([job])
    key = pop(s)[1]["key"]
    claim(s, key, "beating", "host:1:a")
    assert s.sweep_all().resent == 0
    stop()
    with pytest.raises(CheckpointStoreError):
        s.sweep_all()
    wait(TTL + 0.1)  # the worker could not beat meanwhile
    start()
    assert s.sweep_all().resent == 0  # expired, but during the outage
    s.book.heartbeat("host:1:a", TTL)  # it beats again: alive
    wait(TTL / 2)
    assert s.sweep_all().resent == 0
    wait(TTL + 0.1)  # ...and now it stopped beating for good
    assert s.sweep_all().resent == 1
    assert [args[2] for args, _ in queued(s)] == ["task"]


def test_a_job_failed_by_an_outage_gives_its_claim_back_before_its_retry(
    restartable: Any,
) -> None:
    """Celery retries a job that failed on a store error, maybe on another process:
    that copy must find no claim of ours, or it is dropped while we live (a hang)."""
    s, stop, start = restartable
    job = start_run(s, "retried")
    s._dispatcher.send([job])
    job = replace(job, key=pop(s)[1]["key"])
    # a heartbeat thread that would outlive the test beats only every 20 minutes
    here = Liveness(replace(s.settings, heartbeat_ttl=3600), WorkerRuntime.books_of(s.app))
    left: list[BaseException] = []

    def run_through_an_outage() -> None:
        try:
            with here.running(job) as (what, _):
                assert what == "run"
                stop()
                s.book.claim(job.key, "retried", "host:2:b")  # a store error, as a job meets
        except CheckpointStoreError as exc:
            left.append(exc)  # only now would Celery send the retry

    runner = threading.Thread(target=run_through_an_outage)
    runner.start()
    wait(1.0)
    assert runner.is_alive(), "the error went out with the claim still ours"
    start()
    runner.join(timeout=20)
    assert not runner.is_alive() and len(left) == 1  # the job's own error, after the store
    assert s.book.claim(job.key, "retried", "host:2:b") == ("ok", "")  # the retry runs
    here.stop()


def test_every_index_every_sweeps_a_batch_of_the_status_index_loses_its_gone_threads(
    scheduler: LeaseScheduler,
) -> None:
    """A thread whose keys expired (its TTL) leaves its status-index entry behind, in
    another slot; with nobody listing threads, the sweeps drop it."""
    scheduler.saver.set_status("expired", "done")
    scheduler.saver.set_status("alive", "done")
    scheduler.saver.set_ttl("expired", 1)  # no checkpoint: the record alone expires
    shard = status_key(scheduler.saver.prefix, "expired", "done")
    wait_until(lambda: scheduler.saver.get_status("expired") is None)
    sweeps = [scheduler.sweep_all() for _ in range(scheduler.index_every)]
    assert sum(s.unindexed for s in sweeps) == 1  # one of them checked the index
    assert scheduler.saver.client.zscore(shard, "expired") is None
    assert scheduler.saver.client.zscore(status_key(scheduler.saver.prefix, "alive", "done"),
                                         "alive") is not None
