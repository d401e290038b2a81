"""A job whose process died ``max_deaths`` times runs no more, not even from a copy of its
message still queued (real Redis, the job book's scripts).

A copy exists when the lost-message probe sent the job again while a worker held the
first message unstarted (prefetched): seen as a crash-looping node run a fourth time
under load, between the sweep deciding to fail its thread and ending the job.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from durable_graph.store.redis.connection import RedisConn
from durable_graph.store.redis.jobbook import JobBook, jobs_of

pytestmark = pytest.mark.redis
THREAD = "thread-1"
JOB = "job-1"


@pytest.fixture
def book(redis_url: str, redis_prefix: str) -> Iterator[JobBook]:
    made = JobBook(RedisConn(redis.Redis.from_url(redis_url)), redis_prefix)
    made.register_sent([(JOB, THREAD, '["its message"]')])()
    yield made


def test_a_job_failed_for_its_deaths_is_not_claimed_again_before_it_ends(book: JobBook) -> None:
    assert book.claim(JOB, THREAD, "worker-a")[0] == "ok"
    taken = book.reclaim(jobs_of(book.prefix, THREAD), JOB, "worker-a", 1)
    assert taken is not None and taken.action == "fail" and taken.deaths == 1
    # a copy of the message, claimed while the sweep fails the thread: dropped
    assert book.claim(JOB, THREAD, "worker-b") == ("held", "worker-a")
    book.end(JOB, THREAD, 30)
    assert book.claim(JOB, THREAD, "worker-b")[0] == "gone"


def test_a_sweep_that_died_before_ending_it_leaves_it_to_the_next(book: JobBook) -> None:
    bucket = jobs_of(book.prefix, THREAD)
    assert book.claim(JOB, THREAD, "worker-a")[0] == "ok"
    first = book.reclaim(bucket, JOB, "worker-a", 1)
    assert first is not None and first.action == "fail"
    again = book.reclaim(bucket, JOB, "worker-a", 1)  # the next sweep: still the dead claim
    assert again is not None and again.action == "fail" and again.message == first.message
    book.end(JOB, THREAD, 30)
    assert book.reclaim(bucket, JOB, "worker-a", 1) is None


def test_below_its_max_deaths_a_job_is_claimable_again_at_once(book: JobBook) -> None:
    assert book.claim(JOB, THREAD, "worker-a")[0] == "ok"
    taken = book.reclaim(jobs_of(book.prefix, THREAD), JOB, "worker-a", 3)
    assert taken is not None and taken.action == "requeue" and taken.deaths == 1
    assert book.claim(JOB, THREAD, "worker-b")[0] == "ok"


def test_a_failed_job_that_cannot_be_ended_is_not_taken_back_by_every_sweep(
    book: JobBook,
) -> None:
    """Its message does not open (no thread to fail): the sweep drops the dead claim,
    leaving the job owed, not due (nothing sends it again)."""
    bucket = jobs_of(book.prefix, THREAD)
    assert book.claim(JOB, THREAD, "worker-a")[0] == "ok"
    taken = book.reclaim(bucket, JOB, "worker-a", 1)
    assert taken is not None and taken.action == "fail"
    book.drop_claim(bucket, JOB, "worker-a")
    assert book.reclaim(bucket, JOB, "worker-a", 1) is None
    client = book.conn.client
    assert client.hexists(bucket.owed, JOB) and client.zscore(bucket.due, JOB) is None
