"""What a job message costs to send: no result, no result-backend subscription.

A job writes into the checkpoint store; its Celery result is never read. So even on an
app with a result backend (set for the user's own tasks), sending a job must not make
Celery subscribe to a result per message, nor keep the results as the sending task's
children, and the queue is declared once per batch, not once per message.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from celery import Celery, signals
from kombu import Producer

from durable_graph.worker import create_app
from durable_graph.worker.app import JOB_TASK, CeleryDispatcher, settings_of
from durable_graph.worker.transport import Channel, capturing

pytestmark = pytest.mark.redis
SECRET = "job-message-test-secret-0123456789"


@pytest.fixture
def app(redis_url: str, redis_prefix: str) -> Iterator[Celery]:
    queue = f"{redis_prefix}-queue"
    yield create_app(redis_url, prefix=redis_prefix, queue=queue, secret_key=SECRET,
                     result_backend=redis_url)
    redis.Redis.from_url(redis_url).delete(queue)


def _messages(n: int, prefix: str) -> list[list[str]]:
    return [[f"thread-{i}", f"task-{i}", "task", "sealed", "run-1", prefix, f"key-{i}"]
            for i in range(n)]


def _queued(app: Celery) -> list[dict[str, Any]]:
    """Headers of every message in the app's Redis queue, oldest first."""
    raw = redis.Redis.from_url(settings_of(app).redis_url).lrange(settings_of(app).queue, 0, -1)
    return [json.loads(item)["headers"] for item in reversed(raw)]


def _celerys(dispatcher: CeleryDispatcher, producer: Any, args: list[str]) -> tuple[str, str]:
    """The ``LPUSH`` Celery's own ``send_task`` of ``args`` makes (caught, not sent)."""
    with capturing() as into:
        dispatcher._send_each(producer, [args], retry=False)
    assert len(into) == 1
    return into[0]


def test_jobs_are_sent_without_results_or_a_declare_each(app: Celery, redis_prefix: str,
                                                          monkeypatch: Any) -> None:
    dispatcher = CeleryDispatcher(app, settings_of(app))
    calls = {"result subscriptions": 0, "declares": 0}
    on_task_call = app.backend.on_task_call

    def subscribed(*a: Any, **k: Any) -> Any:
        calls["result subscriptions"] += 1
        return on_task_call(*a, **k)

    monkeypatch.setattr(app.backend, "on_task_call", subscribed)
    maybe_declare = Producer.maybe_declare

    def counted(self: Any, entity: Any, *a: Any, **k: Any) -> Any:
        calls["declares"] += 1
        return maybe_declare(self, entity, *a, **k)

    monkeypatch.setattr(Producer, "maybe_declare", counted)
    dispatcher._publish(_messages(5, redis_prefix))  # a batch
    dispatcher._publish(_messages(1, redis_prefix))  # one message
    headers = _queued(app)
    assert len(headers) == 6
    assert all(h["ignore_result"] is True for h in headers)
    assert headers[0]["kwargsrepr"] == repr({"run": "run-1", "prefix": redis_prefix,
                                             "key": "key-0"})
    # the one message Celery builds as the template of every job message (see
    # ``worker/messages``); then each is an LPUSH of our own
    assert calls == {"result subscriptions": 0, "declares": 1}


def test_a_message_the_broker_refused_once_is_sent_again_with_retries(
    app: Celery, redis_prefix: str, monkeypatch: Any,
) -> None:
    """A message goes first as a plain LPUSH; failing so, it is sent again through
    Celery under the publish retry policy (a batch likewise, message by message)."""
    dispatcher = CeleryDispatcher(app, settings_of(app))
    send_task, push_all = app.send_task, Channel.push_all
    tries: list[str] = []

    def blinks(self: Channel, pushes: list[tuple[str, str]]) -> None:
        tries.append("push")
        if tries.count("push") == 1:
            raise ConnectionError("the broker blinked")
        push_all(self, pushes)

    def careful(*a: Any, retry: bool, **k: Any) -> Any:
        tries.append(f"send_task retry={retry}")
        return send_task(*a, retry=retry, **k)

    dispatcher._publish(_messages(1, redis_prefix))  # builds the template
    redis.Redis.from_url(settings_of(app).redis_url).delete(settings_of(app).queue)
    monkeypatch.setattr(Channel, "push_all", blinks)
    monkeypatch.setattr(app, "send_task", careful)
    dispatcher._publish(_messages(1, redis_prefix))
    dispatcher._publish(_messages(1, redis_prefix))
    assert tries == ["push", "send_task retry=True", "push"]
    assert [h["kwargsrepr"] for h in _queued(app)] == [repr(
        {"run": "run-1", "prefix": redis_prefix, "key": "key-0"})] * 2


def test_a_job_message_is_the_one_celery_builds_but_its_ids(app: Celery,
                                                             redis_prefix: str) -> None:
    """The message ``JobMessages`` fills in has every field of the one Celery's
    ``send_task`` builds for the same job, only its task id and delivery tag its own
    (fresh for each message)."""
    dispatcher = CeleryDispatcher(app, settings_of(app))
    args = _messages(1, redis_prefix)[0]
    with app.producer_or_acquire() as producer:
        template = dispatcher._job_messages(producer)
        assert template is not None
        celery_key, celery_payload = _celerys(dispatcher, producer, args)
    key, payload = template.push(args)
    again = json.loads(template.push(args)[1])
    ours, celerys = json.loads(payload), json.loads(celery_payload)
    assert key == celery_key
    task_id = ours["headers"]["id"]
    assert task_id != again["headers"]["id"]
    assert ours["properties"]["delivery_tag"] != again["properties"]["delivery_tag"]
    for message in (ours, celerys):
        ids = message["headers"]["id"], message["headers"]["root_id"]
        assert ids == (message["properties"]["correlation_id"],) * 2
        del message["headers"]["id"], message["headers"]["root_id"]
        del message["properties"]["correlation_id"], message["properties"]["delivery_tag"]
    assert ours == celerys


def test_a_batch_to_rabbitmq_declares_the_queue_it_goes_to(
    rabbitmq: Any, redis_url: str, redis_prefix: str,
) -> None:
    """Sent before any worker declared the queue, a batch still lands (RabbitMQ drops a
    message to the default exchange that no queue is bound to)."""
    queue = f"{redis_prefix}-amqp"
    app = create_app(redis_url, broker_url=rabbitmq.url, prefix=redis_prefix, queue=queue,
                     secret_key=SECRET)
    try:
        dispatcher = CeleryDispatcher(app, settings_of(app))
        dispatcher._publish(_messages(3, redis_prefix))
        dispatcher.flush()  # a producer's publish returns before RabbitMQ confirmed it
        with app.connection_for_write() as conn:
            waiting = conn.default_channel.queue_declare(queue, passive=True).message_count
        assert waiting == 3
    finally:
        rabbitmq.delete_queues(queue)


def test_publishes_reuse_one_redis_client_per_pool(app: Celery, redis_prefix: str,
                                                   monkeypatch: Any) -> None:
    """kombu builds a ``redis.Redis`` per publish; the hardened channel builds one per pool."""
    built: list[Any] = []
    real_init = redis.Redis.__init__

    def counted(self: Any, *a: Any, **k: Any) -> None:
        built.append(self)
        real_init(self, *a, **k)

    dispatcher = CeleryDispatcher(app, settings_of(app))
    dispatcher.send_sealed(json.dumps(_messages(1, redis_prefix)[0]), register=False)  # warm
    monkeypatch.setattr(redis.Redis, "__init__", counted)
    for args in _messages(5, redis_prefix):
        dispatcher.send_sealed(json.dumps(args), register=False)  # one publish each
    assert built == []
    assert len(_queued(app)) == 6
    with app.connection_for_write() as conn:
        channel: Any = conn.default_channel
        first = channel._create_client()
        assert channel._create_client() is first
        channel._disconnect_pools()  # as after a fork: a new pool, so a new client
        second = channel._create_client()
        assert second is not first and second.connection_pool is channel.pool
        assert second.ping()


def test_a_captured_publish_is_the_lpush_kombu_would_send(
    redis_url: str, redis_prefix: str,
) -> None:
    """``push_of``: a message kept as the ``LPUSH`` that publishes it (under the broker's
    global key prefix), which a consumer then receives like any; None for another Redis."""
    queue = f"{redis_prefix}-captured"
    app = create_app(redis_url, prefix=redis_prefix, queue=queue, secret_key=SECRET,
                     broker_transport_options={"global_keyprefix": f"{redis_prefix}:k:"})
    dispatcher = CeleryDispatcher(app, settings_of(app))
    client = redis.Redis.from_url(redis_url)
    args = _messages(1, redis_prefix)[0]
    pushed = dispatcher.push_of(json.dumps(args), client)
    assert pushed is not None
    key, payload = pushed
    assert key == f"{redis_prefix}:k:{queue}" and client.llen(key) == 0  # kept, not sent
    try:
        client.lpush(key, payload)
        with app.connection_for_read() as conn:
            message = conn.default_channel.basic_get(queue, no_ack=True)
        assert message is not None
        body_args, kwargs, _ = message.decode()
        assert [*body_args, kwargs["run"], kwargs["prefix"], kwargs["key"]] == args
        assert message.headers["task"] == "durable_graph.job"
    finally:
        client.delete(key)
    kwargs = client.connection_pool.connection_kwargs
    other = redis.Redis(host=kwargs.get("host", "localhost"), port=kwargs.get("port", 6379),
                        db=int(kwargs.get("db") or 0) + 1)
    assert dispatcher.push_of(json.dumps(args), other) is None


def test_a_publish_that_cannot_be_captured_is_left_to_the_usual_publish(
    app: Celery, redis_prefix: str, monkeypatch: Any,
) -> None:
    """The broker unreachable while a message is captured: ``push_of`` says None (its
    caller publishes it as usual, with retries); nothing was sent."""
    dispatcher = CeleryDispatcher(app, settings_of(app))

    def blinks(*_: Any, **__: Any) -> Any:
        raise ConnectionError("the broker blinked")

    monkeypatch.setattr(dispatcher, "_send_each", blinks)
    client = redis.Redis.from_url(settings_of(app).redis_url)
    assert dispatcher.push_of(json.dumps(_messages(1, redis_prefix)[0]), client) is None
    assert _queued(app) == []


def test_jobs_go_through_celery_while_its_publish_signals_are_hooked(
    app: Celery, redis_prefix: str,
) -> None:
    """Someone who hooks ``before_task_publish`` (to add tracing headers, say) sees every
    job message: while a receiver is connected, jobs are not built from the template."""
    dispatcher = CeleryDispatcher(app, settings_of(app))
    dispatcher._publish(_messages(1, redis_prefix))  # the template is built
    seen: list[str] = []

    def hook(sender: Any = None, headers: Any = None, **_: Any) -> None:
        seen.append(headers["kwargsrepr"])
        headers["traced"] = "yes"

    signals.before_task_publish.connect(hook)
    try:
        dispatcher._publish(_messages(2, redis_prefix))
        pushed = dispatcher.push_of(json.dumps(_messages(1, redis_prefix)[0]),
                                    redis.Redis.from_url(settings_of(app).redis_url))
    finally:
        signals.before_task_publish.disconnect(hook)
    assert pushed is not None and json.loads(pushed[1])["headers"]["traced"] == "yes"
    assert len(seen) == 3
    assert [h.get("traced") for h in _queued(app)] == [None, "yes", "yes"]


def _celery_then_template(rabbitmq: Any, redis_url: str, redis_prefix: str,
                          name: str) -> list[tuple[dict[str, Any], dict[str, Any], Any]]:
    """One job published by Celery's ``send_task``, then one by the ``PublishTemplate``
    (built here, in the caller's context), as a consumer of a RabbitMQ queue receives
    them: (headers, other properties, body) each."""
    queue = f"{redis_prefix}-{name}"
    app = create_app(redis_url, broker_url=rabbitmq.url, prefix=redis_prefix, queue=queue,
                     secret_key=SECRET)
    dispatcher = CeleryDispatcher(app, settings_of(app))
    args = _messages(1, redis_prefix)[0]
    try:
        with app.producer_or_acquire() as producer:
            producer.maybe_declare(app.amqp.queues[queue])
            assert dispatcher._publish_template(producer) is not None
            dispatcher._celery_send(producer, args, retry=False)
        dispatcher._publish([args])  # from the template
        dispatcher.flush()  # confirmed: in the queue
        got = []
        with app.connection_for_read() as conn:
            for _ in range(2):
                message = conn.default_channel.basic_get(queue, no_ack=True)
                assert message is not None
                props = dict(message.properties)
                got.append((props.pop("application_headers"), props, json.loads(message.body)))
        return got
    finally:
        rabbitmq.delete_queues(queue)


def test_a_rabbitmq_job_publish_repeats_the_one_celery_made(
    rabbitmq: Any, redis_url: str, redis_prefix: str,
) -> None:
    """On RabbitMQ each job is kombu's publish with the arguments Celery gave it for the
    first job (``PublishTemplate``): what a consumer receives is Celery's message, only
    the task id its own."""
    (celerys, celery_props, celery_body), (ours, our_props, our_body) = _celery_then_template(
        rabbitmq, redis_url, redis_prefix, "amqp-template")
    assert our_body == celery_body
    assert ours["id"] != celerys["id"] and ours["id"] == our_props["correlation_id"]
    for headers, props in ((ours, our_props), (celerys, celery_props)):
        assert headers["root_id"] == headers["id"]
        del headers["id"], headers["root_id"], props["correlation_id"]
    assert (ours, our_props) == (celerys, celery_props)


def _received(app: Celery, count: int) -> list[list[str]]:
    """The job arguments of the next ``count`` messages a consumer of the app's queue
    gets (kombu's read, as a worker's), none left after."""
    got = []
    with app.connection_for_read() as conn:
        channel = conn.default_channel
        for _ in range(count):
            message = channel.basic_get(settings_of(app).queue, no_ack=True)
            assert message is not None, f"{len(got)} of {count} messages reached the queue"
            body_args, kwargs, _ = message.decode()
            got.append([*body_args, kwargs["run"], kwargs["prefix"], kwargs["key"]])
        assert channel.basic_get(settings_of(app).queue, no_ack=True) is None
    return got


def test_jobs_published_under_a_global_key_prefix_reach_the_queue_workers_read(
    redis_url: str, redis_prefix: str,
) -> None:
    """With the broker's ``global_keyprefix``, jobs sent from the template (a batch, one
    alone, a sweep's resend) land in the list a consumer of the queue reads: the prefix
    once, not twice."""
    queue, keyprefix = f"{redis_prefix}-kp", f"{redis_prefix}:k:"
    app = create_app(redis_url, prefix=redis_prefix, queue=queue, secret_key=SECRET,
                     broker_transport_options={"global_keyprefix": keyprefix})
    dispatcher = CeleryDispatcher(app, settings_of(app))
    client = redis.Redis.from_url(redis_url)
    messages = _messages(4, redis_prefix)
    try:
        dispatcher._publish(messages[:3])
        assert dispatcher._built() is not None  # sent from the template
        dispatcher.send_sealed(json.dumps(messages[3]), register=False)  # a resend
        assert client.llen(f"{keyprefix}{queue}") == 4
        assert sorted(_received(app, 4)) == sorted(messages)
    finally:
        client.delete(f"{keyprefix}{queue}", f"{keyprefix}{keyprefix}{queue}")


@pytest.fixture
def in_a_job(app: Celery) -> Iterator[str]:
    """Inside a job a worker runs, as Celery's worker sets it up: its request on the
    task stack (not called directly). Yields the running job's id."""
    from celery._state import _task_stack

    task = app.tasks[JOB_TASK]
    task.push_request(id="running-job-1", root_id="root-1", called_directly=False)
    _task_stack.push(task)
    try:
        yield "running-job-1"
    finally:
        _task_stack.pop()
        task.pop_request()


def test_a_template_built_inside_a_running_job_is_used_with_each_messages_lineage(
    app: Celery, redis_prefix: str, in_a_job: str,
) -> None:
    """Sent while a job runs, Celery names it as the message's parent (and its root as
    the root): the template built there is used, and each message gets the lineage of
    where it is sent, as ``send_task`` gives it, there and after the job."""
    from celery._state import _task_stack

    dispatcher = CeleryDispatcher(app, settings_of(app))
    args = _messages(1, redis_prefix)[0]
    with app.producer_or_acquire() as producer:
        template = dispatcher._job_messages(producer)
        assert template is not None
        celerys = json.loads(_celerys(dispatcher, producer, args)[1])["headers"]
        dispatcher._publish([args])
        ours = _queued(app)[-1]
        task = _task_stack.pop()  # the job ended; the process sends again
        try:
            assert dispatcher._job_messages(producer) is template
            dispatcher._publish([args])
            celerys_after = json.loads(_celerys(dispatcher, producer, args)[1])["headers"]
        finally:
            _task_stack.push(task)
    after = _queued(app)[-1]
    assert (ours["parent_id"], ours["root_id"]) == (in_a_job, "root-1")
    assert (celerys["parent_id"], celerys["root_id"]) == (in_a_job, "root-1")
    assert (after["parent_id"], after["root_id"]) == (None, after["id"])
    assert (celerys_after["parent_id"], celerys_after["root_id"]) == (
        None, celerys_after["id"])
    for headers in (ours, celerys, after, celerys_after):
        del headers["id"], headers["root_id"], headers["parent_id"]
    assert ours == celerys and after == celerys_after


@pytest.mark.parametrize("setting", ["task_compression", "task_send_sent_event",
                                     "task_inherit_parent_priority"])
def test_a_configuration_the_template_cannot_follow_is_found_once_per_process(
    app: Celery, redis_prefix: str, setting: str, monkeypatch: Any,
) -> None:
    """A configuration that makes job messages differ from a template (a compressed body,
    a task-sent event with each, an inherited priority): Celery sends every job, and the
    process decides so once (no message built as a template with each publish); where
    the configuration says so before, no template message is built at all (so no
    task-sent event for it)."""
    app.conf[setting] = "gzip" if setting == "task_compression" else True
    dispatcher = CeleryDispatcher(app, settings_of(app))
    placeholders = []
    celery_send = dispatcher._celery_send

    def counted(producer: Any, args: list[str], *, retry: bool) -> None:
        if args[0] == "":
            placeholders.append(args)
        celery_send(producer, args, retry=retry)

    monkeypatch.setattr(dispatcher, "_celery_send", counted)
    messages = _messages(3, redis_prefix)
    for args in messages:
        dispatcher._publish([args])
    assert dispatcher._template == (os.getpid(), None)
    assert len(placeholders) == (1 if setting == "task_compression" else 0)
    assert sorted(_received(app, 3)) == sorted(messages)


def test_a_rabbitmq_job_published_inside_a_running_job_names_it_as_parent(
    rabbitmq: Any, redis_url: str, redis_prefix: str, in_a_job: str,
) -> None:
    """``PublishTemplate`` built inside a running job: used, each publish with the
    lineage of where it is sent (the running job its parent), as Celery's."""
    for headers, _, _ in _celery_then_template(rabbitmq, redis_url, redis_prefix,
                                               "amqp-lineage"):
        assert (headers["parent_id"], headers["root_id"]) == (in_a_job, "root-1")
