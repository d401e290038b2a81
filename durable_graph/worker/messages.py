"""Job messages, built here from one Celery built.

Celery's ``send_task`` costs several times the ``LPUSH`` that carries its message on a
Redis broker: it rebuilds the same headers, routes, signals and declares the queue for
every message. Every job message is the same ``durable_graph.job`` task on the same
queue; only its arguments, its task id and kombu's delivery tag differ. So Celery builds
one message (caught as the ``LPUSH`` it would send: ``transport.capturing``) and
``JobMessages`` fills that template in for each job: the bytes are the ones Celery and
kombu's Redis transport write (protocol 2, JSON body, base64 body encoding), so a stock
Celery worker consumes them like any other.

On another broker (RabbitMQ) Celery's ``send_task`` is caught likewise, as the arguments
it gives kombu's ``Producer.publish`` (``PublishTemplate``): each job is then one
``publish`` with those arguments, its own body and ids; kombu encodes and sends it as it
would have.

A message sent while a task runs (a job that sends the next step's jobs) names it:
``parent_id`` the running task, ``root_id`` its root. Those come from where each message
is sent, not from where the template was built: ``lineage_of`` reads them as Celery's
``send_task`` does and ``_ids`` writes them into each message.

A template that carries something per message beyond those fields (an ``eta``, an
``expires``, a queue TTL to refresh, a compressed body) is not used: ``template_of`` and
``publish_template_of`` return None and the job goes through Celery as before. So is one
Celery's configuration makes differ from the messages ``send_task`` sends
(``unfit_config``: a task-sent event with each, a priority inherited from the running
task); no template is built then.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import uuid
from collections.abc import Callable
from typing import Any

from durable_graph.worker.transport import NotCapturedError, capturing

__all__ = ["NO_LINEAGE", "JobMessages", "Lineage", "PublishTemplate", "lineage_of",
           "publish_template_of", "template_of", "unfit_config"]

_PLACEHOLDER = ["", "", "", "", "", "", ""]
"""Arguments of the message Celery builds as the template (never sent)."""
_FORMAT = {"content-type": "application/json", "content-encoding": "utf-8"}
_PER_MESSAGE = ("eta", "expires", "group", "shadow", "compression")
"""Headers that must be empty in the template: a value would be one message's own (or,
``compression``, a body ``JobMessages`` cannot fill in). ``id``, ``root_id`` and
``parent_id`` are set for each message (``_ids``)."""

Lineage = tuple[str | None, str | None]
"""(root id, parent id) of a message: those of the task running where it is sent."""
NO_LINEAGE: Lineage = (None, None)
"""Sent outside any task: its own id is its root, it has no parent."""


def lineage_of(task: Any) -> Lineage:
    """The lineage Celery's ``send_task`` gives a message sent while ``task`` runs (the
    app's ``current_worker_task``; None: outside any task)."""
    if task is None:
        return NO_LINEAGE
    request = task.request
    return request.root_id or request.id, request.id


def unfit_config(conf: Any) -> str | None:
    """Why Celery's configuration ``conf`` makes job messages differ from a template's
    (then none is built), or None."""
    if conf.task_send_sent_event:
        return "task_send_sent_event (a task-sent event with each message)"
    if conf.task_inherit_parent_priority:
        return "task_inherit_parent_priority (the running task's priority)"
    return None


class JobMessages:
    """The ``LPUSH`` (key, payload) of job messages, from one message Celery built."""

    def __init__(self, key: str, message: dict[str, Any], at: tuple[Any, ...],
                 pid: int) -> None:
        self.key = key
        """The broker's Redis list of the queue (key prefix included)."""
        self.at = at
        """Where the broker's Redis is (``transport.redis_at``)."""
        self.pid = pid
        """The process the template was built in (its ``origin`` header names it)."""
        self._message = message
        self._embed = json.loads(base64.b64decode(message["body"]))[2]

    def push(self, args: list[str], lineage: Lineage = NO_LINEAGE) -> tuple[str, str]:
        """The ``LPUSH`` that publishes the job with these task arguments: its thread,
        task id, kind and sealed payload, then its run, prefix and job book key (the
        ``durable_graph.job`` task's keyword arguments), sent with ``lineage``."""
        template = self._message
        task_id, kwargs, headers = _ids(template["headers"], args, lineage)
        body = json.dumps([args[:4], kwargs, self._embed]).encode()
        properties = {**template["properties"], "correlation_id": task_id,
                      "delivery_tag": str(uuid.uuid4())}
        if "argsrepr" in properties:  # kombu copies them there too
            properties["argsrepr"] = headers["argsrepr"]
            properties["kwargsrepr"] = headers["kwargsrepr"]
        message = {**template, "body": base64.b64encode(body).decode(), "headers": headers,
                   "properties": properties}
        return self.key, json.dumps(message)


def template_of(send: Callable[[list[str]], Any], task: str,
                at: tuple[Any, ...]) -> JobMessages | None:
    """The job messages of the one ``send`` builds (caught, not sent) on the broker
    Redis ``at``, or None when its message is not one ``JobMessages`` can fill in
    (then Celery sends each; it never will be: that depends on the configuration
    only). What ``send`` raises otherwise (the broker unreachable) is raised."""
    try:
        with capturing() as into:
            send(list(_PLACEHOLDER))
    except NotCapturedError:  # a queue TTL to refresh with each message
        return None
    if len(into) != 1:
        return None
    key, payload = into[0]
    try:
        message = json.loads(payload)
        headers, properties = message.get("headers", {}), message.get("properties", {})
        if (headers.get("task") != task or any(headers.get(h) for h in _PER_MESSAGE)
                or properties.get("body_encoding") != "base64"
                or any(message.get(k) != v for k, v in _FORMAT.items())):
            return None
        return JobMessages(key, message, at, os.getpid())
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, binascii.Error):
        return None  # a body that is not base64 JSON (a serializer of its own, ...)


def _ids(headers: dict[str, Any], args: list[str],
         lineage: Lineage) -> tuple[str, dict[str, str], dict[str, Any]]:
    """A fresh task id, the job task's keyword arguments, and the headers of its message
    (``headers``, the template's, with the job's id, lineage and reprs, as
    ``send_task`` sets them: the root defaults to the message's own id)."""
    task_id = str(uuid.uuid4())
    kwargs = {"run": args[4], "prefix": args[5], "key": args[6]}
    root_id, parent_id = lineage
    return task_id, kwargs, {**headers, "id": task_id, "root_id": root_id or task_id,
                             "parent_id": parent_id, "argsrepr": repr(args[:3]),
                             "kwargsrepr": repr(kwargs)}


class PublishTemplate:
    """kombu ``Producer.publish`` calls of job messages, from the one Celery made."""

    def __init__(self, body: Any, options: dict[str, Any]) -> None:
        self._embed = body[2]
        self._options = options

    def publish(self, producer: Any, args: list[str], lineage: Lineage = NO_LINEAGE) -> None:
        """Publish the job with these task arguments (as ``JobMessages.push``) on
        ``producer``, as Celery's ``send_task`` would with the template's options."""
        task_id, kwargs, headers = _ids(self._options["headers"], args, lineage)
        producer.publish((args[:4], kwargs, self._embed),
                         **{**self._options, "headers": headers, "correlation_id": task_id})


class _Recorder:
    """A producer whose ``publish`` is kept, not sent (everything else is the real one's)."""

    def __init__(self, producer: Any) -> None:
        self._producer = producer
        self.published: list[tuple[Any, dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._producer, name)

    def publish(self, body: Any, **options: Any) -> None:
        self.published.append((body, options))


def publish_template_of(send: Callable[[Any, list[str]], Any], producer: Any,
                        task: str) -> PublishTemplate | None:
    """The publish of the message ``send(producer, args)`` makes (kept, not sent), or None
    when it is not one ``PublishTemplate`` can repeat (then Celery sends each)."""
    recorder = _Recorder(producer)
    send(recorder, list(_PLACEHOLDER))
    if len(recorder.published) != 1:
        return None
    body, options = recorder.published[0]
    headers = options.get("headers") or {}
    if (headers.get("task") != task or any(headers.get(h) for h in _PER_MESSAGE)
            or options.get("expiration") is not None or options.get("retry")
            or not isinstance(body, tuple) or len(body) != 3):
        return None
    return PublishTemplate(body, options)
