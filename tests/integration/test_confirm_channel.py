"""The window of unconfirmed RabbitMQ publishes (``worker/confirms``), on a real RabbitMQ.

A window of publishes all arrive and are confirmed; what RabbitMQ nacks (a queue full
with ``reject-publish``) or a channel it closes (an exchange that does not exist) is
sent again the careful way; a forked child publishes on a channel of its own.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kombu import Connection, Producer

from durable_graph.worker.app import CeleryDispatcher, create_app, settings_of
from durable_graph.worker.confirms import ConfirmWindow

SECRET = "confirm-window-test-secret-0123456789"


@pytest.fixture
def queue(rabbitmq: Any) -> Iterator[str]:
    name = f"dg-confirms-{uuid.uuid4().hex[:8]}"
    yield name
    rabbitmq.delete_queues(name)


def _count(url: str, queue: str) -> int:
    with Connection(url, connect_timeout=10) as conn:
        return int(conn.default_channel.queue_declare(queue, passive=True).message_count)


def _declare(url: str, queue: str, **arguments: Any) -> None:
    with Connection(url, connect_timeout=10) as conn:
        conn.default_channel.queue_declare(queue, durable=False, auto_delete=False,
                                           arguments=arguments or None)


def _window(url: str, queue: str, resent: list[list[str]], *, exchange: str = "",
            **kw: Any) -> ConfirmWindow:
    def send(producer: Producer, messages: list[list[str]]) -> None:
        for args in messages:
            producer.publish(json.dumps(args), routing_key=queue, exchange=exchange)
    return ConfirmWindow(lambda: Connection(url, connect_timeout=10), send, resent.extend,
                         wrap=Producer, **kw)


def _messages(n: int, tag: str = "m") -> list[list[str]]:
    return [[f"{tag}-{i}"] for i in range(n)]


def test_a_window_of_publishes_all_arrive(rabbitmq: Any, queue: str) -> None:
    _declare(rabbitmq.url, queue)
    resent: list[list[str]] = []
    window = _window(rabbitmq.url, queue, resent, max_messages=8)
    seen: list[int] = []
    real_send = window._send

    def spying(producer: Any, messages: list[list[str]]) -> None:
        seen.append(window.unconfirmed)
        real_send(producer, messages)

    window._send = spying
    window.publish(_messages(100))
    window.flush()
    assert window.unconfirmed == 0
    assert max(seen) <= 8  # never more than the window unconfirmed
    assert resent == []
    assert _count(rabbitmq.url, queue) == 100
    window.close()


def test_a_producer_publishes_without_waiting_and_flush_waits_for_every_confirm(
    rabbitmq: Any, queue: str, redis_url: str, redis_prefix: str,
) -> None:
    app = create_app(redis_url, broker_url=rabbitmq.url, prefix=redis_prefix, queue=queue,
                     secret_key=SECRET)
    dispatcher = CeleryDispatcher(app, settings_of(app))
    seen: list[int] = []  # confirms still out as each publish returned
    while not any(seen) and len(seen) < 5:  # a publisher descheduled may find them all in
        messages = [[f"t-{i}", f"task-{i}", "task", "sealed", "run-1", redis_prefix,
                     f"k-{len(seen)}-{i}"] for i in range(150)]
        dispatcher._publish(messages)  # outside a job: a producer's publish
        window = dispatcher._confirms
        assert window is not None
        seen.append(window.unconfirmed)
        assert window.unconfirmed <= window.max_messages  # a full window waits
        dispatcher.flush()  # what a producer's wait on its run (RunHandle) calls first
        assert window.unconfirmed == 0 and window.resent == 0
    assert any(seen), seen  # returned before the last confirm (once in five at least)
    assert _count(rabbitmq.url, queue) == 150 * len(seen)


def test_what_rabbitmq_nacks_is_sent_again(rabbitmq: Any, queue: str) -> None:
    _declare(rabbitmq.url, queue, **{"x-max-length": 3, "x-overflow": "reject-publish"})
    resent: list[list[str]] = []
    window = _window(rabbitmq.url, queue, resent)
    window.publish(_messages(10))
    window.flush()
    assert _count(rabbitmq.url, queue) == 3
    # the 7 refused (and any unconfirmed with them) went the careful way: none lost
    assert {m[0] for m in _messages(10)[3:]} <= {m[0] for m in resent}
    assert window.resent == len(resent)
    assert window.unconfirmed == 0


def test_a_channel_rabbitmq_closes_sends_its_window_again(rabbitmq: Any, queue: str) -> None:
    _declare(rabbitmq.url, queue)
    resent: list[list[str]] = []
    window = _window(rabbitmq.url, queue, resent, exchange=f"no-such-{queue}")
    window.publish(_messages(5))
    window.flush()
    assert sorted(m[0] for m in resent) == sorted(m[0] for m in _messages(5))
    assert window.unconfirmed == 0


def test_a_forked_child_publishes_on_a_channel_of_its_own(rabbitmq: Any, queue: str) -> None:
    _declare(rabbitmq.url, queue)
    resent: list[list[str]] = []
    window = _window(rabbitmq.url, queue, resent)
    window.publish(_messages(20, "parent"))  # not flushed: unconfirmed ones may be left
    parents_channel = window._channel
    pid = os.fork()
    if pid == 0:  # the child: a fresh channel, its own window; never the parent's
        code = 1
        try:
            window.publish(_messages(30, "child"))
            window.flush()
            fresh = window._channel is not parents_channel and window.unconfirmed == 0
            code = 0 if fresh and not resent else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    window.publish(_messages(10, "parent2"))  # the parent's channel still works
    window.flush()
    assert resent == []
    assert _count(rabbitmq.url, queue) == 60
