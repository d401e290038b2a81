"""The worker's lease keeper tells a takeover from a lease its own run freed."""

from __future__ import annotations

import logging
import time

import pytest

from durable_graph import FencingError, LeaseReleasedError, RedisSaver
from durable_graph.worker.jobs import LeaseKeeper

pytestmark = pytest.mark.redis


def test_a_refused_renewal_is_a_takeover_only_while_a_job_here_holds_the_lease(
    redis_url: str, redis_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    saver = RedisSaver.from_url(redis_url, prefix=redis_prefix)
    keeper = LeaseKeeper(lambda _prefix: saver, 5.0)

    ended = saver.leases.acquire("ended", "run:a", 5)
    assert ended is not None
    with keeper.hold(saver.prefix, ended, renewed=True):
        pass  # the job is done ...
    saver.leases.release(ended)  # ... and its run's end freed the lease
    taken = saver.leases.acquire("taken", "run:b", 0.05)
    assert taken is not None
    time.sleep(0.1)
    assert saver.leases.acquire("taken", "run:c", 5) is not None  # expired: taken over

    snapshot = [(lease.thread_id, lease.owner, lease.generation, saver.prefix)
                for lease in (ended, taken)]  # as the renewing thread saw them
    with caplog.at_level(logging.WARNING, logger="durable_graph.worker"), \
            keeper.hold(saver.prefix, taken, renewed=True):
        keeper.renew(snapshot)

    warned = [r.getMessage() for r in caplog.records]
    assert warned == ["lease of thread taken was taken over; its jobs here are stale"]


def test_a_lease_released_by_its_runs_end_while_its_job_returns_is_no_takeover(
    redis_url: str, redis_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The run's end (riding its last commit) releases the lease before the job that
    made it has left ``hold``: a renewal then is refused, and is no takeover; renewing
    a lease another owner took after the release still is one."""
    saver = RedisSaver.from_url(redis_url, prefix=redis_prefix)
    keeper = LeaseKeeper(lambda _prefix: saver, 5.0)
    ending = saver.leases.acquire("ending", "run:a", 5)
    retaken = saver.leases.acquire("retaken", "run:b", 5)
    assert ending is not None and retaken is not None
    with pytest.raises(LeaseReleasedError):
        saver.leases.release(ending)
        saver.leases.renew(ending, 5)
    saver.leases.release(retaken)
    assert saver.leases.acquire("retaken", "run:c", 5) is not None
    with pytest.raises(FencingError) as refused:
        saver.leases.renew(retaken, 5)
    assert not isinstance(refused.value, LeaseReleasedError)

    snapshot = [(lease.thread_id, lease.owner, lease.generation, saver.prefix)
                for lease in (ending, retaken)]
    with caplog.at_level(logging.WARNING, logger="durable_graph.worker"), \
            keeper.hold(saver.prefix, ending, renewed=True), \
            keeper.hold(saver.prefix, retaken, renewed=True):
        keeper.renew(snapshot)

    warned = [r.getMessage() for r in caplog.records]
    assert warned == ["lease of thread retaken was taken over; its jobs here are stale"]
