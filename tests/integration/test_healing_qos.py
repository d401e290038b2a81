"""A job's message keeps no ``unacked`` copy in Redis; what a worker gives back goes back.

kombu's Redis transport copies every delivered message into its ``unacked`` hash until
it is acked (two more round trips per message) so that a dead worker's messages come
back after the visibility timeout. Job messages are healed by the recovery sweep
instead (``worker/recovery``), so the transport (``transport.QoS``) tracks them in
memory only: nothing of theirs is written on delivery or deleted on ack, while other
tasks' messages, and jobs this worker's sweep would not heal (no key: an older
producer's; another prefix: another sweep's), keep kombu's copy. A job message a
worker rejects to requeue, or holds unacked when its channel closes (a warm shutdown),
is pushed back to its queue at once.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from celery import Celery
from kombu import Consumer, Queue

from durable_graph.worker import create_app
from durable_graph.worker.app import JOB_TASK, CeleryDispatcher, settings_of

pytestmark = pytest.mark.redis
SECRET = "healing-qos-test-secret-0123456789"


@pytest.fixture
def app(redis_url: str, redis_prefix: str) -> Iterator[Celery]:
    queue = f"{redis_prefix}-queue"
    yield create_app(redis_url, prefix=redis_prefix, queue=queue, secret_key=SECRET)
    redis.Redis.from_url(redis_url).delete(queue)


def _client(app: Celery) -> redis.Redis:
    return redis.Redis.from_url(settings_of(app).redis_url)


def _held(app: Celery) -> list[dict[str, Any]]:
    """Headers of the messages of the app's queue in kombu's ``unacked`` hash (shared by
    every queue of the database, hence the filter)."""
    queue = json.dumps(settings_of(app).queue).encode()
    held = [json.loads(v)[0] for v in _client(app).hvals("unacked") if queue in v]
    return [m["headers"] for m in held]


def _queued(app: Celery) -> list[dict[str, Any]]:
    raw = _client(app).lrange(settings_of(app).queue, 0, -1)
    return [json.loads(item)["headers"] for item in raw]


def _send_both(app: Celery, redis_prefix: str) -> None:
    """One job message, as producers send it, and one message of another task."""
    dispatcher = CeleryDispatcher(app, settings_of(app))
    with app.producer_or_acquire() as producer:
        dispatcher._send_each(
            producer, [["thread-1", "task-1", "task", "sealed", "run-1", redis_prefix, "k"]],
            retry=False)
    app.send_task("user.task", args=[1], queue=settings_of(app).queue)


def _take(conn: Any, app: Celery, count: int) -> list[Any]:
    """Consume ``count`` messages without acking them."""
    got: list[Any] = []
    consumer = Consumer(conn.default_channel, queues=[Queue(settings_of(app).queue)],
                        callbacks=[lambda body, msg: got.append(msg)], accept=["json"])
    consumer.qos(prefetch_count=10)
    with consumer:
        while len(got) < count:
            conn.drain_events(timeout=5)
    return got


def _receive(conn: Any, app: Celery, count: int) -> dict[str, Any]:
    """Consume ``count`` messages without acking them: task name -> message."""
    return {msg.headers["task"]: msg for msg in _take(conn, app, count)}


def test_a_job_message_has_no_unacked_copy_and_a_requeued_one_goes_back(
    app: Celery, redis_prefix: str,
) -> None:
    _send_both(app, redis_prefix)
    with app.connection_for_read() as conn:
        got = _receive(conn, app, 2)
        assert set(got) == {JOB_TASK, "user.task"}
        assert [h["task"] for h in _held(app)] == ["user.task"]  # kombu's copy: others only
        assert _queued(app) == []

        got[JOB_TASK].reject(requeue=True)
        back = _queued(app)
        assert [h["task"] for h in back] == [JOB_TASK]
        assert back[0]["redelivered"] is True
        assert [h["task"] for h in _held(app)] == ["user.task"]

        got["user.task"].ack()
        assert _held(app) == []
        assert [h["task"] for h in _queued(app)] == [JOB_TASK]


def test_an_acked_job_message_leaves_nothing_and_an_unacked_one_goes_back_at_close(
    app: Celery, redis_prefix: str,
) -> None:
    _send_both(app, redis_prefix)
    with app.connection_for_read() as conn:
        got = _receive(conn, app, 2)
        got[JOB_TASK].ack()
        assert [h["task"] for h in _held(app)] == ["user.task"]
    # the connection closed with the other task's message unacked: kombu put it back
    assert [h["task"] for h in _queued(app)] == ["user.task"]
    assert _held(app) == []

    _client(app).delete(settings_of(app).queue)
    _send_both(app, redis_prefix)
    with app.connection_for_read() as conn:
        _receive(conn, app, 2)  # neither acked: a warm shutdown's prefetched messages
    assert sorted(h["task"] for h in _queued(app)) == [JOB_TASK, "user.task"]
    assert _held(app) == []


def test_a_job_this_workers_sweep_cannot_heal_keeps_kombus_copy(
    app: Celery, redis_prefix: str,
) -> None:
    dispatcher = CeleryDispatcher(app, settings_of(app))
    jobs = [["thread-1", "task-1", "task", "sealed", "run-1", redis_prefix, ""],  # no key
            ["thread-2", "task-2", "task", "sealed", "run-2", "another-prefix", "k"]]
    with app.producer_or_acquire() as producer:
        dispatcher._send_each(producer, jobs, retry=False)
    with app.connection_for_read() as conn:
        got = _take(conn, app, 2)
        assert [h["task"] for h in _held(app)] == [JOB_TASK, JOB_TASK]
        for message in got:
            message.ack()
        assert _held(app) == []
