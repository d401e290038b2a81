"""The Celery app: one task, ``durable_graph.job``, configured for at-least-once delivery.

Messages are JSON: the job's ids in clear and the job itself sealed (see
``payload``). Jobs are acknowledged late and requeued when their worker process
is lost. On Redis, job messages keep no copy in kombu's ``unacked`` hash (the sweep
heals them: ``transport.QoS``); the visibility timeout, from the settings, serves the
app's other tasks. No result
backend: jobs write into the checkpoint store and producers read the run's
event stream.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, ClassVar

import redis
from celery import Celery, current_app, signals
from celery.signals import worker_init, worker_ready
from celery.worker.request import Request

from durable_graph.errors import (
    CheckpointStoreError,
    DispatchError,
    GraphTypeError,
    SignatureError,
)
from durable_graph.scheduler.transition import Next
from durable_graph.store.codec import (
    HOW_TO_GENERATE,
    MIN_SECRET_BYTES,
    SignedSerializer,
    SigningCodec,
)
from durable_graph.store.redis.connection import redact
from durable_graph.store.redis.jobbook import Also, JobBook
from durable_graph.store.redis.saver import RedisSaver
from durable_graph.store.serde import TypedSerializer
from durable_graph.worker import metrics
from durable_graph.worker.bundles import KINDS, bundled, bundles, together
from durable_graph.worker.config import Settings
from durable_graph.worker.confirms import ConfirmWindow
from durable_graph.worker.eager import Eager
from durable_graph.worker.events import RunEvents
from durable_graph.worker.held import HeldWrites
from durable_graph.worker.jobs import LeaseKeeper, handle
from durable_graph.worker.liveness import Books, Claim, Liveness, note_lost
from durable_graph.worker.messages import (
    JobMessages,
    Lineage,
    PublishTemplate,
    lineage_of,
    publish_template_of,
    template_of,
    unfit_config,
)
from durable_graph.worker.payload import open_sealed, publish_keys, seal
from durable_graph.worker.runs import Job, RunContext, abort_run
from durable_graph.worker.shipping import GraphLoader
from durable_graph.worker.transport import (
    HEALS,
    Channel,
    broker_for,
    capturing,
    redis_at,
)

__all__ = [
    "JOB_TASK",
    "CeleryDispatcher",
    "WorkerRuntime",
    "create_app",
    "key_problem",
    "settings_of",
]

JOB_TASK = "durable_graph.job"

_BATCH = 1000
"""Messages a publish batch buffers before it writes them to the broker."""
_CONFIRM_WAIT = 30.0
"""Seconds a batch published to RabbitMQ waits for its confirms."""
log = logging.getLogger("durable_graph.worker")


def create_app(
    redis_url: str | None = None,
    *,
    broker_url: str | None = None,
    secret_key: str | bytes | SigningCodec | None = None,
    prefix: str | None = None,
    queue: str | None = None,
    lease_ttl: float | None = None,
    visibility_timeout: float | None = None,
    commit_wait: str | None = None,
    store_retry: float | None = None,
    heartbeat_ttl: float | None = None,
    max_deaths: int | None = None,
    eager_depth: int | None = None,
    task_events: bool | None = None,
    **celery_overrides: Any,
) -> Celery:
    """A Celery app for durable-graph jobs; unset arguments come from the environment.

    ``broker_url`` may be Redis (the default: the checkpoint Redis) or RabbitMQ
    (``amqp://``). ``celery_overrides`` are Celery settings (``worker_concurrency=4``,
    ...) applied last. The same app object serves producers (``CeleryExecutor(app)``)
    and workers.
    """
    settings = Settings.from_env(
        redis_url=redis_url, broker_url=broker_url, codec=secret_key, prefix=prefix,
        queue=queue, lease_ttl=lease_ttl, visibility_timeout=visibility_timeout,
        commit_wait=commit_wait, store_retry=store_retry,
        heartbeat_ttl=heartbeat_ttl, max_deaths=max_deaths, eager_depth=eager_depth,
        task_events=task_events,
    )
    broker, transport_alias = broker_for(settings.broker)
    app = Celery("durable_graph", broker=broker, set_as_current=False)
    if transport_alias is not None:  # garbage on a Redis queue is dropped, not fatal
        app.conf.broker_transport = transport_alias
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=settings.queue,
        broker_transport_options=_transport_options(settings),
        # a send (a producer's first step, a worker's next steps, a job's retry) waits
        # for the broker to come back, rather than dropping the job a blip interrupted
        task_publish_retry_policy=_publish_retry_policy(settings.store_retry),
        broker_connection_retry_on_startup=True,
        # off by default (three broker messages per job); Flower turns them on at run time
        worker_send_task_events=settings.task_events,
        task_send_sent_event=False,
    )
    app.conf.update(celery_overrides)
    app.conf.durable_graph_settings = settings
    app.task(
        name=JOB_TASK, bind=True, acks_late=True, reject_on_worker_lost=True,
        autoretry_for=(CheckpointStoreError,), retry_backoff=True, retry_backoff_max=10,
        max_retries=30, Request=_JobRequest,
    )(_job)
    # every worker sweeps for crashed jobs and threads (see worker/recovery.py)
    app.steps["worker"].add("durable_graph.worker.recovery:RecoveryStep")
    return app


def key_problem(settings: Settings) -> str | None:
    """Why a worker with these settings must not start (no key, or a short one), or None."""
    how = f"generate one with `{HOW_TO_GENERATE}` and set DURABLE_GRAPH_SECRET_KEY"
    if settings.codec is None:
        return ("durable-graph worker refuses to start: no signing key is set, so it could "
                f"verify no job. {how} to the same value on producers and workers.")
    if settings.codec.shortest_secret < MIN_SECRET_BYTES:
        return ("durable-graph worker refuses to start: a signing key is "
                f"{settings.codec.shortest_secret} bytes, shorter than {MIN_SECRET_BYTES}. "
                f"{how} (64 hex characters) on producers and workers.")
    return None


def _refuse_weak_key(sender: Any = None, **_: Any) -> None:
    """Stop a worker of a durable-graph app before it takes a job it could not verify.

    Runs for ``durable-graph worker`` and plain ``celery -A durable_graph.worker
    worker`` alike; apps not made by ``create_app`` are left alone.
    """
    settings = getattr(getattr(sender, "app", None), "conf", {}).get("durable_graph_settings")
    problem = key_problem(settings) if isinstance(settings, Settings) else None
    if problem is not None:
        log.critical(problem)
        raise SystemExit(problem)
    if isinstance(settings, Settings) and settings.codec is not None:
        try:  # so producers with another secret fail before the first job
            saver = RedisSaver.from_url(settings.redis_url, prefix=settings.prefix)
            with saver:
                publish_keys(saver.conn, settings.prefix, settings.codec)
        except CheckpointStoreError as exc:
            log.warning("could not publish the signing key fingerprint yet: %s", exc)


def _transport_options(settings: Settings) -> dict[str, Any]:
    """kombu options of the broker: redelivery on Redis, publisher confirms on RabbitMQ."""
    if settings.broker_kind == "amqp":
        # RabbitMQ redelivers a dead consumer's unacked jobs when its connection
        # drops: no visibility timeout. Confirms make a send return only once the
        # broker has the job.
        return {"confirm_publish": True}
    return {
        "visibility_timeout": settings.visibility_timeout,
        # kombu sweeps unacked jobs of lost workers back sooner than its 60 s default
        "unacked_restore_interval": 1,
        "unacked_restore_throttle": 1,
        # this worker's sweep heals its jobs: no unacked copy of them (``transport.QoS``)
        HEALS: _healed_by_sweep(settings.prefix),
    }


def _healed_by_sweep(prefix: str) -> Callable[[Any], bool]:
    """Whether a delivered message is a job this worker's recovery sweep heals: the job
    task, with a key (the job book owes it: a message without one comes from an older
    producer), of the prefix the worker sweeps. Anything else (a probe, a job of
    another prefix, a message Celery compressed, another task) keeps kombu's copy."""

    def healed(message: Any) -> bool:
        if (message.headers or {}).get("task") != JOB_TASK:
            return False
        try:
            kwargs = json.loads(message.body)[1]
        except (ValueError, TypeError, IndexError, KeyError):
            return False
        return (isinstance(kwargs, dict) and bool(kwargs.get("key"))
                and kwargs.get("prefix") == prefix)

    return healed


def _publish_retry_policy(window: float) -> dict[str, float]:
    """kombu's publish retries (0, 0.5, 1, 1.5, then every 2 s) spanning ``window`` s."""
    steps, waited = 0, 0.0
    while waited < window:
        steps += 1
        waited += min(2.0, 0.5 * (steps - 1))
    return {"max_retries": max(steps, 1), "interval_start": 0, "interval_step": 0.5,
            "interval_max": 2}


def _import_from_cwd(sender: Any = None, **_: Any) -> None:
    """A worker imports graphs from its current directory, as ``python -m celery`` does,
    also when started as plain ``celery -A durable_graph.worker worker`` (whose console
    script keeps the directory on the path only while it imports the app)."""
    if _ours(sender):
        with contextlib.suppress(FileNotFoundError):
            cwd = os.getcwd()
            if cwd not in sys.path and "" not in sys.path:
                sys.path.insert(0, cwd)


def _say_ready(sender: Any = None, **_: Any) -> None:
    """One readiness line whatever the log level and however the worker was started."""
    if _ours(sender):
        settings = settings_of(sender.app)
        print(f"durable-graph worker {sender.hostname} ready: queue {settings.queue!r}, "
              f"prefix {settings.prefix!r}, store {redact(settings.redis_url)}",
              file=sys.__stderr__, flush=True)


def _ours(sender: Any) -> bool:
    """Whether a worker signal comes from a worker of a durable-graph app."""
    return _is_ours(getattr(sender, "app", None))


def _is_ours(app: Any) -> bool:
    return isinstance(getattr(app, "conf", {}).get("durable_graph_settings"), Settings)


def _stop_heartbeats(sender: Any = None, **_: Any) -> None:
    """A worker of a durable-graph app, or one of its pool processes, shuts down cleanly:
    the heartbeats of its app's runtime in this process end (``WorkerRuntime.stop_here``),
    instead of expiring a TTL later; another app's runtimes go on. ``worker_shutdown``'s
    sender is the worker (its ``app``), ``worker_process_shutdown``'s the pool process's
    host name: there the app is the current one (the pool's initializer made it so).
    The stop waits for the last beat and the queued ends (5 s each at most), which may
    delay a pool process's exit by as much during a store outage."""
    app = getattr(sender, "app", None) or current_app._get_current_object()
    if _is_ours(app):
        WorkerRuntime.stop_here(app=app)


worker_init.connect(_import_from_cwd, weak=False)
worker_init.connect(_refuse_weak_key, weak=False)
worker_ready.connect(_say_ready, weak=False)
signals.worker_process_shutdown.connect(_stop_heartbeats, weak=False)
signals.worker_shutdown.connect(_stop_heartbeats, weak=False)


def settings_of(app: Celery) -> Settings:
    """The durable-graph settings an app was created with."""
    settings = app.conf.get("durable_graph_settings")
    if not isinstance(settings, Settings):
        raise GraphTypeError("this Celery app was not made by durable_graph.worker.create_app")
    return settings


def _job(
    self: Any, thread_id: str, task_id: str, kind: str, payload: Any, *, run: str = "",
    prefix: str = "", key: str = "",
) -> str:
    """The one Celery task: open the sealed job, check its ids, run it.

    ``run`` and ``prefix`` (in clear) are for Celery's tooling only, and ``key`` says
    which job book entry to mark when the process running it dies; nothing else is
    taken from, or done for, a message whose payload does not verify. A ``bundle``'s
    payload is a list of jobs, each sealed on its own (see ``bundles``).
    """
    runtime = WorkerRuntime.of(self.app)
    try:
        if kind == "bundle":
            return runtime.run_bundle(thread_id, payload, run_id=run, prefix=prefix)
        return runtime.run(thread_id, task_id, kind, payload, run_id=run, prefix=prefix,
                           key=key)
    finally:  # acked after this returns: the jobs it published are in the broker first
        runtime.dispatcher.flush()


class _JobRequest(Request):  # type: ignore[misc]
    """A job's request in the worker's main process: notes a pool process dying under it."""

    def on_failure(self, exc_info: Any, send_failed_event: bool = True,
                   return_ok: bool = False) -> Any:
        exc = getattr(exc_info, "exception", None)
        exc = getattr(exc, "exc", exc)  # unwrap ExceptionWithTraceback
        if isinstance(exc, BaseException) and type(exc).__name__ == "WorkerLostError":
            note_lost(WorkerRuntime.books_of(self.task.app), self, exc)
        return super().on_failure(exc_info, send_failed_event, return_ok)


class CeleryDispatcher:
    """Sends jobs as ``durable_graph.job`` messages on the app's queue."""

    def __init__(self, app: Celery, settings: Settings, books: Books | None = None) -> None:
        self._app, self._settings = app, settings
        self._codec = settings.require_codec()
        self.books = books or Books(settings.redis_url)
        self._template: tuple[int, JobMessages | None] | None = None
        """(process, its job message template) once built; None in it: Celery sends."""
        self._publishing: tuple[int, PublishTemplate | None] | None = None
        """The same for the publishes of job messages on another broker."""
        self._confirms: ConfirmWindow | None = None
        """RabbitMQ: this process's window of unconfirmed publishes, once used."""

    def _message(self, job: Job) -> list[str]:
        """The task arguments of ``job`` with a key of its own: ids in clear, the job sealed."""
        if not job.key:
            job = replace(job, key=uuid.uuid4().hex)
        sealed = seal(self._codec, job, pickled=job.call is not None)
        return [job.run.thread_id, job.task_id, job.kind, sealed, job.run.run_id,
                job.run.prefix, job.key]

    def _send(self, messages: list[list[str]]) -> None:
        """Record the jobs as owed as they are published (see ``store.redis.jobbook``).

        Each job is owed under its own message (a sweep resends it alone); the calls
        among them travel in bundles (``bundles``)."""
        by_prefix: dict[str, list[tuple[str, str, str]]] = {}
        for args in messages:
            by_prefix.setdefault(args[5], []).append((args[6], args[0], json.dumps(args)))
        confirms = [self.books(prefix).register_sent(jobs) for prefix, jobs in by_prefix.items()]
        try:
            self._publish(bundles(messages))
        finally:
            for confirm in confirms:
                confirm()

    def seal(self, job: Job) -> str:
        """The message of ``job`` as JSON text, to be sent later with ``send_sealed``."""
        return json.dumps(self._message(job))

    def seal_value(self, obj: Any) -> str:
        """``obj`` signed as base64 text (a run record)."""
        return seal(self._codec, obj)

    def open_value(self, text: str) -> Any:
        """What ``seal_value`` sealed; SignatureError for anything else."""
        return open_sealed(self._codec, text, "run record")

    def send(self, jobs: Sequence[Job]) -> None:
        """Register ``jobs`` as owed, then publish them over one broker connection."""
        self._send([self._message(job) for job in jobs])

    def send_sealed(self, sealed: str | bytes, *, register: bool = True) -> None:
        """Publish a message ``seal`` made earlier (a sweep resends registered ones)."""
        message = json.loads(sealed)
        if register:
            self._send([message])
        else:
            self._publish([message])

    def push_of(self, sealed: str, client: Any) -> tuple[str, str] | None:
        """The ``LPUSH`` (key, payload) that publishes a message ``seal`` made, for the
        caller to send in a round trip of its own on ``client``: only when the broker is
        that client's Redis (server and database), through the hardened transport; None:
        publish it as usual (nothing was sent; also when the broker could not be reached
        now: the usual publish retries it)."""
        return self._push_args(json.loads(sealed), client)

    def seal_pushed(self, job: Job, client: Any) -> tuple[str, tuple[str, str] | None]:
        """``seal(job)`` and its ``push_of`` on ``client``, the message not read back."""
        args = self._message(job)
        return json.dumps(args), self._push_args(args, client)

    def _push_args(self, args: list[str], client: Any) -> tuple[str, str] | None:
        """``push_of`` the message of these task arguments."""
        if self._settings.broker_kind != "redis" or not isinstance(client, redis.Redis):
            return None  # kombu has no Redis Cluster broker
        try:
            template = self._built()
            if template is None:
                with self._app.producer_or_acquire() as producer:
                    template = self._job_messages(producer)
                    if template is None:  # not one to fill in: Celery's own, caught
                        return self._caught(producer, args, client)
        except Exception as exc:  # NotCapturedError, or the broker blinked
            log.debug("job message not captured (%s); it is published as usual", exc)
            return None
        return template.push(args, self._lineage()) if template.at == redis_at(client) else None

    def _caught(self, producer: Any, args: list[str], client: Any) -> tuple[str, str] | None:
        """The ``LPUSH`` Celery's publish of ``args`` makes, caught (not sent)."""
        channel = producer.channel
        if not isinstance(channel, Channel) or not channel.same_redis(client):
            return None
        with capturing() as into:
            self._send_each(producer, [args], retry=False)
        return into[0] if len(into) == 1 else None

    def _built(self) -> JobMessages | None:
        """This process's job message template, if built (see ``_job_messages``)."""
        built = self._template
        if built is None or built[0] != os.getpid() or _publish_hooked():
            return None
        return built[1]

    def _job_messages(self, producer: Any) -> JobMessages | None:
        """This process's job message template on a Redis broker, built once by Celery
        (see ``worker/messages``); None: Celery sends each job.

        None is kept for the process only when the configuration is the reason (the
        same wherever and whenever the template is built); not when the broker could
        not be reached, nor while publishes are hooked."""
        if _publish_hooked():
            return None
        built = self._template
        if built is not None and built[0] == os.getpid():
            return built[1]
        channel, template = producer.channel, None
        if (self._settings.broker_kind == "redis" and isinstance(channel, Channel)
                and self._template_fits()):
            try:
                template = template_of(
                    lambda args: self._send_each(producer, [args], retry=False), JOB_TASK,
                    redis_at(channel.client))
            except Exception as exc:  # the broker blinked: Celery sends, until next time
                log.debug("no job message template yet (%s)", exc)
                return None
        self._template = (os.getpid(), template)
        return template

    def _template_fits(self) -> bool:
        """Whether Celery's configuration lets job messages be built from a template."""
        unfit = unfit_config(self._app.conf)
        if unfit is not None:
            log.debug("job messages go through Celery's send_task: %s", unfit)
        return unfit is None

    def _lineage(self) -> Lineage:
        """The root and parent ids of a job message sent now (those of the running task)."""
        return lineage_of(self._app.current_worker_task)

    def send_probe(self, prefix: str, sent_ms: int) -> None:
        """Publish the queue's probe (see ``worker/recovery``), signed like any job."""
        sealed = seal(self._codec, ("probe", prefix, self._settings.queue, sent_ms))
        self._publish([["", "", "probe", sealed, "", prefix, ""]])

    def _publish(self, messages: list[list[str]]) -> None:
        """Publish over one broker connection; several messages in one round trip where
        the transport can (kombu's publish batch: one Redis pipeline).

        Sent first without kombu's retry wrapper (one message too: the wrapper and a
        queue declaration under it cost more CPU than the publish itself); what fails so
        is sent again message by message, each with the publish retry policy (a message
        that did arrive twice is a copy, and copies are dropped by their claim).
        """
        if self._settings.broker_kind == "amqp":
            window = self._window()
            # Not waited for here: a worker waits before its job is acked (``_job``), a
            # producer when it waits on the run (``RunHandle``) or exits. Each job is owed
            # in the store before it is published, so one lost with a producer that died
            # before its confirm is sent again by the recovery sweep (``recovery``).
            window.publish(messages)
            return
        with self._app.producer_or_acquire() as producer:
            template = self._job_messages(producer)
            together: Callable[[Any, list[list[str]]], None]
            if template is not None:
                together = functools.partial(self._pushed, template)
            elif len(messages) > 1 and producer.supports_batch_publish:
                together = self._batched
            else:
                together = functools.partial(self._send_each, retry=False)
            try:
                together(producer, messages)
                return
            except Exception as exc:  # the broker blinked: the careful way
                log.warning("%d job(s) not published (%s); sending them one by one, with "
                            "retries", len(messages), exc)
            self._send_each(producer, messages, retry=True)

    def _pushed(self, template: JobMessages, producer: Any, messages: list[list[str]]) -> None:
        """Our own ``LPUSH``es on the Redis broker: one round trip per ``_BATCH``."""
        lineage = self._lineage()
        for start in range(0, len(messages), _BATCH):
            producer.channel.push_all(
                [template.push(args, lineage) for args in messages[start:start + _BATCH]])

    def _batched(self, producer: Any, messages: list[list[str]]) -> None:
        """kombu's publish batch: one Redis pipeline."""
        with producer.batch(max_size=_BATCH):
            self._send_each(producer, messages, retry=False)

    def _window(self) -> ConfirmWindow:
        """This process's window of unconfirmed RabbitMQ publishes (``worker/confirms``)."""
        if self._confirms is None:
            self._confirms = ConfirmWindow(
                lambda: self._app.connection_for_write(heartbeat=0),
                lambda producer, messages: self._send_each(producer, messages, retry=False),
                self._resend,
                wrap=lambda channel: self._app.amqp.Producer(channel, auto_declare=False))
        return self._confirms

    def _resend(self, messages: list[list[str]]) -> None:
        """Publish ``messages`` the careful way: each waits for its confirm, with retries."""
        with self._app.producer_or_acquire() as producer:
            self._send_each(producer, messages, retry=True)

    def flush(self) -> None:
        """Return once RabbitMQ confirmed every job this process published (no-op on Redis)."""
        if self._confirms is not None:
            self._confirms.flush()

    def _send_each(self, producer: Any, messages: list[list[str]], *, retry: bool) -> None:
        """``send_task`` each message, without what a job needs none of: a result (jobs
        write to the store; so no result backend subscription per message), a place in
        the sending task's children, Celery's slow ``saferepr``. A batch (``retry``
        False: a failure sends it again the careful way) declares the queue once, not
        once per message, and repeats the publish Celery made of the first job this
        process sent (``worker/messages``); a careful send declares it with each, under
        its retries."""
        template, lineage = None, self._lineage()
        if not retry:  # kombu remembers what it declared on the connection
            producer.maybe_declare(self._app.amqp.queues[self._settings.queue])
            template = self._publish_template(producer)
        for args in messages:
            if template is not None:
                template.publish(producer, args, lineage)
            else:
                self._celery_send(producer, args, retry=retry)

    def _celery_send(self, producer: Any, args: list[str], *, retry: bool) -> None:
        """Celery's ``send_task`` of one job message (see ``_send_each``)."""
        kwargs = {"run": args[4], "prefix": args[5], "key": args[6]}
        self._app.send_task(
            JOB_TASK, args=args[:4], kwargs=kwargs, queue=self._settings.queue,
            producer=producer, argsrepr=repr(args[:3]), kwargsrepr=repr(kwargs),
            retry=retry, declare=None if retry else [], ignore_result=True,
            add_to_parent=False,
        )

    def _publish_template(self, producer: Any) -> PublishTemplate | None:
        """This process's template of job publishes on a broker other than Redis (built
        once by Celery, see ``worker/messages``); None: Celery sends each job (kept as
        ``_job_messages`` keeps it)."""
        if self._settings.broker_kind == "redis" or _publish_hooked():
            return None  # a Redis broker: ``_job_messages`` (or Celery when hooked)
        built = self._publishing
        if built is not None and built[0] == os.getpid():
            return built[1]
        template = None
        try:
            if self._template_fits():
                template = publish_template_of(
                    lambda p, args: self._celery_send(p, args, retry=False), producer,
                    JOB_TASK)
        except Exception as exc:  # the broker blinked: Celery sends, until next time
            log.debug("no job publish template yet (%s)", exc)
            return None
        self._publishing = (os.getpid(), template)
        return template


def _publish_hooked() -> bool:
    """Whether someone hooks Celery's publishes (to add tracing headers, say): then every
    job message goes through Celery's ``send_task``."""
    return bool(signals.before_task_publish.receivers or signals.after_task_publish.receivers)


class WorkerRuntime:
    """Per worker process: savers, graph loader, lease keeper and dispatcher.

    Built lazily in each process (after Celery forks its pool), never shared.
    """

    _by_app: ClassVar[dict[tuple[int, int], WorkerRuntime]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, app: Celery) -> None:
        self.settings = settings_of(app)
        self.codec = self.settings.require_codec()
        self.serde = SignedSerializer(TypedSerializer(), self.codec)
        self._savers: dict[str, RedisSaver] = {}
        self._books: dict[str, JobBook] = {}
        self.dispatcher = CeleryDispatcher(app, self.settings, self.books_of(app))
        self.liveness = Liveness(self.settings, self._book)
        self.keeper = LeaseKeeper(self.saver, self.settings.lease_ttl)
        self._loaders: dict[str, GraphLoader] = {}
        self._keys_published = False

    @staticmethod
    def books_of(app: Celery) -> Books:
        """The job books of ``app``'s Redis (one per app, shared by a process's parts)."""
        found = app.conf.get("durable_graph_books")
        if not isinstance(found, Books):
            found = Books(settings_of(app).redis_url)
            app.conf.durable_graph_books = found
        return found

    @classmethod
    def of(cls, app: Celery) -> WorkerRuntime:
        """This process's runtime for ``app``."""
        key = (id(app), os.getpid())
        with cls._lock:
            found = cls._by_app.get(key)
            if found is None:
                found = cls._by_app[key] = cls(app)
        return found

    @classmethod
    def stop_here(cls, *, app: Celery | None = None, prefix: str | None = None) -> None:
        """Stop the heartbeats of this process's runtimes (``Liveness.stop``): at a clean
        shutdown (``app``: its runtime only), or at the end of a test that ran jobs in its
        own process (``prefix``: the runtimes of that prefix, or beating for a prefix
        starting with it, only)."""
        pid = os.getpid()
        with cls._lock:
            mine = [r for (a, p), r in cls._by_app.items()
                    if p == pid and (app is None or a == id(app))]
        for runtime in mine:
            if prefix is None or runtime.beats_under(prefix):
                runtime.liveness.stop()

    def beats_under(self, prefix: str) -> bool:
        """Whether this runtime's prefix, or one its heartbeats are for, starts with ``prefix``."""
        return any(p.startswith(prefix)
                   for p in (self.settings.prefix, *self.liveness.prefixes()))

    def saver(self, prefix: str) -> RedisSaver:
        """The signed RedisSaver of ``prefix`` on the settings' Redis."""
        found = self._savers.get(prefix)
        if found is None:
            found = self._savers[prefix] = RedisSaver.from_url(
                self.settings.redis_url, prefix=prefix, serde=self.serde,
                commit_wait=self.settings.commit_waiter, _thread_policy=True)
        return found

    @staticmethod
    def _refuse(thread_id: Any, kind: Any, why: str) -> str:
        """Log a refused message and drop it: nothing it says is trusted or acted on.

        An unverified message could name any live run, so it must not even report
        itself to that run's producer (a forger could fail someone else's run).
        """
        log.error("refused and dropped a %r job naming thread %r: %s", kind, thread_id, why)
        metrics.job_done(kind if kind in KINDS else "unknown", "refused")
        return "refused"

    def _book(self, prefix: str) -> JobBook:
        """The job book of ``prefix`` on the saver's connection (claims pipeline with it)."""
        found = self._books.get(prefix)
        if found is None:
            found = self._books[prefix] = JobBook(self.saver(prefix).conn, prefix)
        return found

    def loader(self, prefix: str) -> GraphLoader:
        """The graph loader reading blobs under ``prefix``."""
        found = self._loaders.get(prefix)
        if found is None:
            found = self._loaders[prefix] = GraphLoader(
                self.saver(prefix).client, prefix, self.codec)
        return found

    def run(
        self, thread_id: str, task_id: str, kind: str, payload: str, *, run_id: str = "",
        prefix: str = "", key: str = "",
    ) -> str:
        """Open, check and run one job; returns a short acknowledgement."""
        opened = self._open(thread_id, task_id, kind, payload, key)
        return opened if isinstance(opened, str) else self._run_claimed(opened)

    def _open(self, thread_id: str, task_id: str, kind: str, payload: str,
              key: str) -> Job | str:
        """The job a message carries, checked against its clear ids; else what became of
        the message (refused, or a probe seen)."""
        if not self._keys_published:  # again, in case Redis was down when the worker started
            publish_keys(self.saver(self.settings.prefix).conn, self.settings.prefix, self.codec)
            self._keys_published = True
        try:
            job = open_sealed(self.codec, payload)
        except SignatureError as exc:
            return self._refuse(thread_id, kind, str(exc))
        if kind == "probe":
            return self._probe(job)
        if not isinstance(job, Job) or (job.run.thread_id, job.task_id, job.kind) != (
            thread_id, task_id, kind
        ) or job.key != (key or job.key):
            return self._refuse(thread_id, kind,
                                "the clear ids of the message do not match its sealed job")
        return job

    def _run_claimed(self, job: Job, claimed: Claim | None = None,
                     held: HeldWrites | None = None) -> str:
        """Claim ``job`` (unless ``claimed`` is its claim, made with its bundle's) and run
        it, then the jobs it adopted; ``held``: where a bundle's call holds its result."""
        eager = Eager(self._book, self.dispatcher, worker=self.liveness.worker,
                      left=self.settings.eager_depth, first_read=self._first_read,
                      current=job, idle_ttl=self.settings.lease_ttl,
                      end_later=self.liveness.end_later)
        with self.liveness.running(job, also=self._first_read(job),
                                   claimed=claimed) as (claim, early):
            if claim == "drop":
                return "dropped"
            try:
                ack = self._run(job, renewed=claim == "run", eager=eager, early=early,
                                held=held)
            except BaseException:
                eager.hand_off()
                raise
        self._continue(eager)
        return ack

    def run_bundle(self, thread_id: str, items: Any, *, run_id: str = "",
                   prefix: str = "") -> str:
        """Run the jobs of a bundle one after another, each as if its message had come
        alone (``run``): opened and checked, claimed, fenced, recorded and ended on its
        own. So a bundle delivered again (its worker process died, or a store error
        retries it) runs only its jobs that have not ended: the others' claims find them
        gone, or held by the sweep that resent them. The claims of a bundle's calls are
        made in one round trip (``Liveness.claim_calls``), and checked again before a call
        once a third of the heartbeat TTL passed since (``_claim_again``); those of the
        calls it did not reach are given back if it stops early.

        A store error stops the bundle there (the error retries it whole, as it would a
        lone job); a bundle that is no list of [task id, kind, payload, key] is refused.
        """
        if not isinstance(items, list) or not items or not all(bundled(i) for i in items):
            return self._refuse(thread_id, "bundle",
                                "a bundle's payload is not a list of [task id, kind, sealed "
                                "job, key]")
        acks, jobs = [], []
        for task_id, kind, payload, key in items:
            opened = self._open(thread_id, task_id, kind, payload, key)
            if isinstance(opened, str):
                acks.append(opened)
            else:
                jobs.append(opened)
        claims, claimed_at = self._claim_together(jobs), time.monotonic()
        held = HeldWrites() if claims else None
        unstarted = 0
        try:
            for n, job in enumerate(jobs):
                if held is not None and held.due():
                    held.land()
                if claims and time.monotonic() - claimed_at > self.settings.heartbeat_ttl / 3:
                    claims[n:] = self._claim_again(jobs[n:], claims[n:])
                    claimed_at = time.monotonic()
                unstarted = n + 1
                acks.append(self._run_claimed(job, claims[n] if claims else None, held))
            if held is not None:
                held.land()
        except BaseException:
            if claims:
                self._stopped(held, [j for j, c in zip(jobs[unstarted:], claims[unstarted:],
                                                       strict=True) if c[0] == "ok"])
            raise
        return " ".join(acks)

    def _stopped(self, held: HeldWrites | None, unstarted: list[Job]) -> None:
        """A bundle stopped on an error: land the results it holds (else give their jobs
        back, to run again), and give back the claims of the calls it did not start."""
        if held is not None:
            try:
                held.land()
            except Exception as exc:
                log.warning("the results of %d calls were not stored (%s); they run again",
                            len(held.jobs), exc)
                unstarted = [*held.jobs, *unstarted]
        self.liveness.give_back(unstarted)

    def _claim_together(self, jobs: list[Job], *, again: bool = False) -> list[Claim] | None:
        """The claims of a bundle's calls, made together; None to claim each as it runs
        (a bundle of other jobs, or of calls of several checkpoints or leases)."""
        if len(jobs) < (1 if again else 2) or not together(jobs):
            return None
        first = jobs[0]
        finished = self.saver(first.run.prefix).finished_read(
            {"configurable": {"thread_id": first.run.thread_id, "checkpoint_ns": first.run.ns,
                              "checkpoint_id": first.checkpoint_id}},
            [job.task_id for job in jobs])
        return self.liveness.claim_calls(jobs, finished, again=again)

    def _claim_again(self, jobs: list[Job], claims: list[Claim]) -> list[Claim]:
        """The claims of a bundle's calls not started yet, checked again (one round trip)
        when a while passed since they were made: a process that looked dead meanwhile (a
        call that held the GIL or waited on the store past the heartbeat TTL) had them
        taken back by a sweep and sent alone, so another process may run or have recorded
        them; the bundle skips those (``Liveness.claim_calls``)."""
        ours = [n for n, claim in enumerate(claims) if claim[0] == "ok"]
        again = self._claim_together([jobs[n] for n in ours], again=True) if ours else None
        if again is None:
            return claims
        out = list(claims)
        for n, claim in zip(ours, again, strict=True):
            out[n] = claim
        return out

    def _first_read(self, job: Job) -> Also | None:
        """The store read ``job`` starts with, made with its claim in one round trip
        (``RunContext.early``): a task's checkpoint, whether a call already finished."""
        saver = self.saver(job.run.prefix)
        config = {"configurable": {"thread_id": job.run.thread_id, "checkpoint_ns": job.run.ns,
                                   "checkpoint_id": job.checkpoint_id}}
        if job.kind == "task":
            return lambda p: saver.queue_get_tuple(p, config)
        if job.kind == "call":
            return saver.finished_read(config, [job.task_id])
        return None

    def _continue(self, eager: Eager) -> None:
        """Run the jobs adopted one after another (see ``worker/eager``), each claimed,
        fenced and ended like a received one; one that fails here goes to the queue."""
        while (adopted := eager.taken) is not None:
            current, eager = eager, eager.deeper()
            job = adopted.job
            try:
                with self.liveness.running(job, adopted=True):
                    self._run(job, renewed=True, eager=eager, early=adopted.early,
                              planned=adopted.planned)
            except Exception:  # a store error: the queue runs it again, as Celery would
                log.exception("%s job %s of thread %s failed in this process; sent to the "
                              "queue to run again", job.kind, job.key, job.run.thread_id)
                eager.hand_off()
                current.hand_off(release=False)  # running() gave its claim back
                return
            current.taken = None

    def _probe(self, probe: Any) -> str:
        """The queue moved past a probe: every job sent before it was received."""
        if not (isinstance(probe, tuple) and len(probe) == 4 and probe[0] == "probe"):
            log.error("refused a probe whose sealed content is not a probe")
            return "refused"
        _, prefix, queue, sent_ms = probe
        self.dispatcher.books(prefix).probe_seen(queue, sent_ms)
        return "ok"

    def _run(
        self, job: Job, *, renewed: bool, eager: Eager | None = None, early: Any = None,
        planned: tuple[int, Next] | None = None, held: HeldWrites | None = None,
    ) -> str:
        thread_id = job.run.thread_id
        saver = self.saver(job.run.prefix)
        events = RunEvents(saver.conn, job.run.prefix, self.serde)
        try:
            graph = self.loader(job.run.prefix).load(job.run.graph)
        except (DispatchError, SignatureError, ImportError) as exc:
            log.error("cannot load the graph of thread %r: %s", thread_id, exc)
            abort_run(saver, events, job, exc)
            metrics.job_done(job.kind, "failed")
            return "failed"
        # a job's end rides a round trip it makes anyway where it can: a call's result
        # (one script), a task's commit with the adoption of its successor (see
        # ``worker/eager``) or with the run's close (``CloseRide``); else it is recorded
        # after the job, off its path
        ending = (job.key, self.settings.lease_ttl) \
            if job.kind in ("call", "task") and job.key else None
        rc = RunContext(job.run, graph, saver, events, self.dispatcher, job.owner, job.fence,
                        eager=eager, early=early, ending=ending, planned=planned, held=held)
        handle(rc, job, self.keeper, renewed=renewed)
        if ending is not None and (rc.ending is None or (eager and eager.ended_current)):
            self.liveness.ended(job)
        return "ok"
