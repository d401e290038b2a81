"""Settings of the distributed mode, read once from the environment or given in code.

One frozen object carries them, so the Celery app, the workers' job handlers, the
producer and the scheduler get the same values explicitly instead of reading
globals. Every setting has an environment variable (for containers and the CLI)
and a keyword of ``create_app`` (for code and tests).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final

from durable_graph.errors import GraphValueError
from durable_graph.store.codec import HOW_TO_GENERATE, SigningCodec
from durable_graph.store.redis.commit_wait import CommitWait

__all__ = [
    "BROKER_SCHEMES",
    "DEFAULT_QUEUE",
    "DEFAULT_REDIS_URL",
    "ENV_BROKER_URL",
    "ENV_COMMIT_WAIT",
    "ENV_EAGER_DEPTH",
    "ENV_HEARTBEAT_TTL",
    "ENV_LEASE_TTL",
    "ENV_MAX_DEATHS",
    "ENV_PREFIX",
    "ENV_QUEUE",
    "ENV_REDIS_URL",
    "ENV_STORE_RETRY",
    "ENV_TASK_EVENTS",
    "ENV_VISIBILITY_TIMEOUT",
    "Settings",
    "broker_kind_of",
]

ENV_REDIS_URL: Final = "DURABLE_GRAPH_REDIS_URL"
"""The Redis that holds checkpoints, leases, graph blobs and run events."""
ENV_BROKER_URL: Final = "DURABLE_GRAPH_BROKER_URL"
"""Celery's broker; the checkpoint Redis when unset (a RabbitMQ URL works too)."""
ENV_PREFIX: Final = "DURABLE_GRAPH_PREFIX"
"""Key prefix of every durable-graph key in Redis."""
ENV_QUEUE: Final = "DURABLE_GRAPH_QUEUE"
"""The Celery queue durable-graph jobs go to."""
ENV_LEASE_TTL: Final = "DURABLE_GRAPH_LEASE_TTL"
"""Seconds a thread's lease lives without renewal before the scheduler takes it over."""
ENV_VISIBILITY_TIMEOUT: Final = "DURABLE_GRAPH_VISIBILITY_TIMEOUT"
"""Seconds before the Redis broker redelivers a job that a lost worker held."""
ENV_COMMIT_WAIT: Final = "DURABLE_GRAPH_COMMIT_WAIT"
"""What each commit waits for: ``aof``, ``replicas:N``, ``aof+replicas:N`` or ``none``."""
ENV_STORE_RETRY: Final = "DURABLE_GRAPH_STORE_RETRY"
"""Seconds a producer retries an unreachable Redis, and any send an unreachable broker."""
BROKER_SCHEMES: Final = {
    "redis": "redis", "rediss": "redis", "unix": "redis",
    "amqp": "amqp", "amqps": "amqp", "pyamqp": "amqp",
}
"""Broker URL scheme -> the broker kind durable-graph configures Celery for."""
ENV_HEARTBEAT_TTL: Final = "DURABLE_GRAPH_HEARTBEAT_TTL"
"""Seconds a worker process's heartbeat lives: its jobs are sent again this long after it dies."""
ENV_MAX_DEATHS: Final = "DURABLE_GRAPH_MAX_DEATHS"
"""Executions of one job that may end with their process dying before its thread fails."""

ENV_EAGER_DEPTH: Final = "DURABLE_GRAPH_EAGER_DEPTH"
"""Steps of one task a worker may run itself, one after another, instead of publishing
them (eager continuation); 0 publishes every step."""

ENV_TASK_EVENTS: Final = "DURABLE_GRAPH_TASK_EVENTS"
"""``1`` (or ``true``/``yes``/``on``): workers send Celery's task events (for Flower);
off by default, as in Celery, since they are three extra broker messages per job.
Flower and ``celery control enable_events`` turn them on at run time anyway."""

DEFAULT_REDIS_URL: Final = "redis://127.0.0.1:6379/0"
DEFAULT_QUEUE: Final = "durable_graph"


def _number(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise GraphValueError(f"{name}={raw!r} is not a number of seconds") from None
    if value <= 0:
        raise GraphValueError(f"{name} must be a positive number of seconds, got {raw!r}")
    return value


_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off"})


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    if raw.strip().lower() in _TRUE:
        return True
    if raw.strip().lower() in _FALSE:
        return False
    raise GraphValueError(f"{name}={raw!r} must be 1/true/yes/on or 0/false/no/off")


def _count(env: Mapping[str, str], name: str, default: int, least: int = 1) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    if not raw.strip().isdigit() or int(raw) < least:
        raise GraphValueError(f"{name}={raw!r} must be a whole number of at least {least}")
    return int(raw)


@dataclass(frozen=True)
class Settings:
    """Everything a producer, a worker and the scheduler must agree on."""

    redis_url: str = DEFAULT_REDIS_URL
    broker_url: str | None = None
    """None: the checkpoint Redis is also the broker."""
    prefix: str = "dg"
    queue: str = DEFAULT_QUEUE
    lease_ttl: float = 5.0
    """A thread whose jobs all died is taken over this long after its last renewal."""
    visibility_timeout: float = 300.0
    """Redis broker redelivery of the app's other unacknowledged tasks (Celery's default
    is an hour); jobs keep no unacked copy: the recovery sweep heals them."""
    commit_wait: str | None = None
    """Every commit waits for this (``aof``, ``replicas:N``, ...); None: the reply only."""
    store_retry: float = 30.0
    """A producer retries store reads and its submit, and every send retries the broker,
    this long through an outage."""
    heartbeat_ttl: float = 3.0
    """A worker process that stops beating this long is dead: its jobs are sent again."""
    max_deaths: int = 3
    """A job whose process died this many times fails its thread (a crash loop)."""
    eager_depth: int = 8
    """A worker that commits a step whose next step is one task runs that task itself,
    up to this many in a row (then it publishes the next); 0: always publish."""
    task_events: bool = False
    """Workers send Celery's task events (Flower's task view); Celery's default, off:
    each job would publish three more broker messages."""
    codec: SigningCodec | None = field(default=None, repr=False)
    """Signs every message payload, graph blob and checkpoint value."""

    def __post_init__(self) -> None:
        if not (isinstance(self.max_deaths, int) and self.max_deaths >= 1):
            raise GraphValueError(
                f"max_deaths must be a whole number of at least 1, got {self.max_deaths!r}")
        if not (isinstance(self.eager_depth, int) and not isinstance(self.eager_depth, bool)
                and self.eager_depth >= 0):
            raise GraphValueError(
                f"eager_depth must be a whole number of at least 0 (0: no eager continuation), "
                f"got {self.eager_depth!r}")
        if not isinstance(self.task_events, bool):
            raise GraphValueError(f"task_events must be True or False, got {self.task_events!r}")
        for name in ("lease_ttl", "visibility_timeout", "heartbeat_ttl"):
            if not getattr(self, name) > 0:
                raise GraphValueError(
                    f"{name} must be a positive number of seconds, got {getattr(self, name)!r}")
        broker_kind_of(self.broker)  # a bad URL fails here, not at the first send
        CommitWait.of(self.commit_wait)
        if self.store_retry < 0:
            raise GraphValueError(
                f"store_retry must be >= 0 seconds (0: no retry), got {self.store_retry!r}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from ``DURABLE_GRAPH_*`` variables, then ``overrides`` (None = unset)."""
        env = os.environ if environ is None else environ
        settings = cls(
            redis_url=env.get(ENV_REDIS_URL) or DEFAULT_REDIS_URL,
            broker_url=env.get(ENV_BROKER_URL) or None,
            prefix=env.get(ENV_PREFIX) or "dg",
            queue=env.get(ENV_QUEUE) or DEFAULT_QUEUE,
            lease_ttl=_number(env, ENV_LEASE_TTL, 5.0),
            visibility_timeout=_number(env, ENV_VISIBILITY_TIMEOUT, 300.0),
            commit_wait=env.get(ENV_COMMIT_WAIT) or None,
            store_retry=_number(env, ENV_STORE_RETRY, 30.0),
            heartbeat_ttl=_number(env, ENV_HEARTBEAT_TTL, 3.0),
            max_deaths=_count(env, ENV_MAX_DEATHS, 3),
            eager_depth=_count(env, ENV_EAGER_DEPTH, 8, least=0),
            task_events=_flag(env, ENV_TASK_EVENTS, False),
            codec=_codec_from_env(env),
        )
        given = {k: v for k, v in overrides.items() if v is not None}
        if isinstance(given.get("codec"), (str, bytes)):
            given["codec"] = SigningCodec.from_secret(given["codec"])
        return replace(settings, **given)

    @property
    def broker(self) -> str:
        """The broker URL Celery connects to."""
        return self.broker_url or self.redis_url

    @property
    def broker_kind(self) -> str:
        """``redis`` or ``amqp`` (RabbitMQ): what the broker URL's scheme names."""
        return broker_kind_of(self.broker)

    @property
    def commit_waiter(self) -> CommitWait | None:
        """``commit_wait`` parsed."""
        return CommitWait.of(self.commit_wait)

    def require_codec(self) -> SigningCodec:
        """The signing codec; a clear error when no key was configured."""
        if self.codec is None:
            raise GraphValueError(
                "durable-graph signs every job and graph it ships, and no signing key is "
                "set: set DURABLE_GRAPH_SECRET_KEY to the same long random secret on "
                "producers and workers (or pass secret_key= to create_app); generate one "
                f"with `{HOW_TO_GENERATE}`."
            )
        return self.codec


def broker_kind_of(url: str) -> str:
    """``redis`` or ``amqp`` for a broker URL; a clear error for any other scheme."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    kind = BROKER_SCHEMES.get(scheme)
    if kind is None:
        raise GraphValueError(
            f"broker URL scheme {scheme!r} is not supported: use a Redis URL (redis://, "
            f"rediss://, unix://) or a RabbitMQ URL (amqp://, amqps://) in {ENV_BROKER_URL}")
    return kind


def _codec_from_env(env: Mapping[str, str]) -> SigningCodec | None:
    """The codec the environment configures, or None when it sets no key."""
    if not any(env.get(k) for k in ("DURABLE_GRAPH_SECRET_KEY", "DURABLE_GRAPH_SECRET_KEYS")):
        return None
    return SigningCodec.from_env(env)
