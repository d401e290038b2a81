"""A bundle's claims, checked again and kept alive, on the real Redis (review findings).

* A call a sweep took back from a bundle and sent alone may be claimed by another thread
  of the same process (a threads pool): same worker id. The bundle's check must not take
  that claim for its own (the call would run twice).
* A bundle's claim, and its check, extend its process's heartbeat when it is alive, so
  no sweep finds the process dead before the bundle's next check is due.
* Results a late landing could not store (a store blip) are tried again by the lander
  thread, not left until the bundle's next call ends.
"""

from __future__ import annotations

import time
import types
from typing import Any

import pytest
import redis

from durable_graph.store.base import RETURN
from durable_graph.store.redis.connection import RedisConn
from durable_graph.store.redis.jobbook import Finished, JobBook, jobs_of
from durable_graph.store.redis.keys import ThreadKeys, live_key
from durable_graph.worker.config import Settings
from durable_graph.worker.held import HeldWrites
from durable_graph.worker.liveness import Liveness
from durable_graph.worker.runs import Job, RunSpec
from durable_graph.worker.shipping import GraphRef

pytestmark = pytest.mark.redis
THREAD = "thread-1"


def _calls(prefix: str, n: int) -> list[Job]:
    run = RunSpec("run", THREAD, GraphRef("m:g"), {}, "sync", (), (), 25, -1, (), "", prefix)
    return [Job("call", run, "owner", 1, checkpoint_id="c1", task_id=f"call{i}", key=f"k{i}")
            for i in range(n)]


def _setup(request: pytest.FixtureRequest, redis_url: str, prefix: str, n: int,
           ) -> tuple[Any, JobBook, Liveness, list[Job]]:
    client = redis.Redis.from_url(redis_url)
    conn = RedisConn(client)
    book = JobBook(conn, prefix)
    jobs = _calls(prefix, n)
    book.register_sent([(j.key, THREAD, '["its own message"]') for j in jobs])()
    client.hset(ThreadKeys(prefix, THREAD).lease, mapping={"owner": "owner", "gen": "1"})
    live = Liveness(Settings(redis_url=redis_url, prefix=prefix), lambda p: book)
    request.addfinalizer(live.stop)  # before the prefix's keys go
    return client, book, live, jobs


def _finished(book: JobBook, prefix: str, jobs: list[Job]) -> Finished:
    return Finished(book.conn, f"{prefix}:no-writes", tuple(j.task_id for j in jobs))


def test_a_bundles_check_does_not_take_its_process_claim_of_the_calls_own_message(
    redis_url: str, redis_prefix: str, request: pytest.FixtureRequest,
) -> None:
    client, book, live, jobs = _setup(request, redis_url, redis_prefix, 2)
    claims = live.claim_calls(jobs, _finished(book, redis_prefix, jobs))
    assert claims is not None and [c[0] for c in claims] == ["ok", "ok"]
    # the process looked dead: a sweep takes call 1 back and sends it alone, and another
    # thread of this very process claims that message (the same worker id)
    assert book.reclaim(jobs_of(redis_prefix, THREAD), "k1", live.worker, 3).action == "requeue"
    with live.running(jobs[1]) as (what, _):
        assert what == "run"
        assert client.hget(jobs_of(redis_prefix, THREAD).ordered()[2], "k1").decode() \
            == live.worker
        again = live.claim_calls(jobs[1:], _finished(book, redis_prefix, jobs[1:]), again=True)
        assert again is not None and again[0][0] == "died"  # the bundle skips it
    # with no death counted, the bundle's own claim stands when checked again
    fresh = live.claim_calls(jobs[:1], _finished(book, redis_prefix, jobs[:1]), again=True)
    assert fresh is not None and fresh[0][0] == "ok"


def test_a_bundles_claims_extend_a_live_heartbeat_and_never_revive_a_dead_one(
    redis_url: str, redis_prefix: str, request: pytest.FixtureRequest,
) -> None:
    client, book, live, jobs = _setup(request, redis_url, redis_prefix, 2)
    key = live_key(redis_prefix)
    client.zadd(key, {live.worker: 0})  # found dead: a claim does not make it look alive
    live._prefixes.add(redis_prefix)  # no heartbeat thread: the scores are the test's
    assert live.claim_calls(jobs, _finished(book, redis_prefix, jobs)) is not None
    assert client.zscore(key, live.worker) == 0
    now_ms = time.time() * 1000
    client.zadd(key, {live.worker: now_ms + 100})  # alive, about to expire
    assert live.claim_calls(jobs, _finished(book, redis_prefix, jobs), again=True) is not None
    score = client.zscore(key, live.worker)
    assert score is not None and score >= now_ms + live.settings.heartbeat_ttl * 1000 - 50


def test_results_a_late_landing_could_not_store_are_tried_again_by_the_lander() -> None:
    class Saver:
        fail, landed = 1, 0

        def call_writes_script(self, *_: Any) -> tuple[list[str], list[str]]:
            return ["k"], ["a"]

        def land_call_writes(self, calls: list[Any]) -> list[None]:
            if Saver.fail:
                Saver.fail -= 1
                raise ConnectionError("store blip")
            Saver.landed += len(calls)
            return [None] * len(calls)

    def rc() -> Any:
        return types.SimpleNamespace(ending=("end", 1.0), saver=Saver(),
                                     config=lambda cid: {}, emit=lambda *a: None)

    job: Any = types.SimpleNamespace(checkpoint_id="c", task_id="t", caller=None)
    held = HeldWrites(hold_for=0.02)
    assert held.hold(rc(), job, [(RETURN, ("t", 1))])
    deadline = time.monotonic() + 5
    while Saver.fail and time.monotonic() < deadline:  # the lander's first try: the blip
        time.sleep(0.01)
    assert Saver.fail == 0 and Saver.landed == 0 and len(held.jobs) == 1
    assert held.hold(rc(), job, [(RETURN, ("t", 2))])  # the bundle goes on, a call runs
    while Saver.landed < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert Saver.landed == 2 and held.jobs == []  # landed with no call of the bundle ending
