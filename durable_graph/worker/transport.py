"""The Redis broker transport, hardened: garbage on a queue is dropped, not fatal.

kombu's Redis transport pops a queue item and decodes it as JSON; an item that is
not JSON (anyone who can write to Redis can push one) raises out of the worker's
event loop and stops the worker ("Unrecoverable error: JSONDecodeError"). This
transport decodes the popped item itself: an item that is not a kombu message is
logged with its queue and a short preview, pushed to the queue's dead-letter list
(``<queue>.dead``, capped) for inspection, and dropped; the worker keeps consuming.

A publish made inside ``capturing()`` is not sent but kept as the ``LPUSH`` that would
send it, for the caller to send in a round trip it makes anyway on the same Redis (a
producer's first job rides the commit before it: see ``worker/firstjob``).

``create_app`` selects it for ``redis://`` and ``unix://`` brokers
(``broker_for``): kombu has no ``unix`` transport, so a ``unix:///path.sock`` URL,
which the checkpoint store accepts, becomes kombu's socket form of the same server.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from queue import Empty
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit, urlunsplit

import redis
from kombu.exceptions import DecodeError
from kombu.transport import TRANSPORT_ALIASES
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual as kombu_virtual
from kombu.utils import encoding as kombu_encoding
from kombu.utils import json as kombu_json

_text: Any = kombu_encoding.bytes_to_str  # untyped in kombu
_loads: Any = kombu_json.loads
_dumps: Any = kombu_json.dumps

__all__ = [
    "ALIAS",
    "DEAD_LETTER_MAX",
    "HEALS",
    "NotCapturedError",
    "RedisTransport",
    "broker_for",
    "capturing",
    "dead_letter_key",
    "parse_item",
    "redis_at",
]

log = logging.getLogger("durable_graph.worker")

DEAD_LETTER_MAX = 1000
"""Items kept per dead-letter list (the newest ones)."""


def redis_at(client: Any) -> tuple[Any, ...]:
    """Where a ``redis.Redis`` client's server and database are (host, port, path, db)."""
    kwargs = client.connection_pool.connection_kwargs
    return tuple(kwargs.get(k) for k in ("host", "port", "path", "db"))


def dead_letter_key(queue: str) -> str:
    """The Redis list where undecodable items of ``queue`` are kept."""
    return f"{queue}.dead"


def parse_item(raw: bytes | str) -> dict[str, Any] | None:
    """The kombu message in a queue item, or None when it is not one."""
    try:
        message = _loads(_text(raw))
    except (ValueError, TypeError, DecodeError):
        return None
    if not isinstance(message, dict) or not isinstance(message.get("properties"), dict):
        return None
    return message


_captured: ContextVar[list[tuple[str, str]] | None] = ContextVar("dg_captured", default=None)


class NotCapturedError(Exception):
    """A publish inside ``capturing()`` that cannot be kept as one ``LPUSH`` (it was not
    sent either)."""


@contextmanager
def capturing() -> Iterator[list[tuple[str, str]]]:
    """Inside: publishes on a hardened Redis channel are kept, not sent, as the (key,
    payload) of the ``LPUSH`` that sends each (``NotCapturedError`` for one that needs more)."""
    into: list[tuple[str, str]] = []
    token = _captured.set(into)
    try:
        yield into
    finally:
        _captured.reset(token)


HEALS = "heals"
"""Transport option: a function of a delivered message, true for a message that heals
itself and so skips kombu's ``unacked`` copy (``QoS``); ``create_app`` gives one that
picks the jobs its worker's recovery sweep heals."""


class QoS(kombu_redis.QoS):
    """kombu's Redis ack emulation, except for messages of tasks that heal themselves.

    kombu copies every delivered message into an ``unacked`` hash (and its index) and
    deletes it again on ack, so that a worker that dies holding it has it pushed back
    once the visibility timeout passes: two more round trips, and a copy of the message,
    per message. A durable-graph job needs neither. The job book owes it before it is
    sent, and the recovery sweep sends it again when the process that claimed it dies
    or when its message was lost unclaimed (``worker/recovery``: a probe through the
    queue), within seconds rather than a visibility timeout. Messages the transport
    option ``HEALS`` picks are therefore tracked in memory only, as kombu's in-memory
    ``QoS`` does; those a worker gives back (a rejected message to requeue, the
    prefetched messages at a warm shutdown) are pushed back to their queue at once, as
    kombu pushes back its copies. A message held when the broker cannot be reached at
    that moment is lost from the broker; the sweep's probe finds its job unclaimed.
    """

    _local: set[str]
    """Delivery tags of healing messages not yet acked (no ``unacked`` entry)."""

    def __init__(self, channel: Any, prefetch_count: int = 0) -> None:
        kombu: Any = super().__init__  # kombu is untyped
        kombu(channel, prefetch_count)
        options = channel.connection.client.transport_options
        self._heals: Callable[[Any], bool] = options.get(HEALS) or _never
        self._local = set()

    def append(self, message: Any, delivery_tag: str) -> None:
        """kombu's, with no ``unacked`` copy of a healing message."""
        if not self._heals(message):
            kombu: Any = super().append
            kombu(message, delivery_tag)
            return
        _IN_MEMORY.append(self, message, delivery_tag)
        self._local.add(delivery_tag)

    def ack(self, delivery_tag: str) -> None:
        """kombu's; a healing message has no ``unacked`` copy to delete."""
        if delivery_tag not in self._local:
            kombu: Any = super().ack
            kombu(delivery_tag)
            return
        self._local.discard(delivery_tag)
        _IN_MEMORY.ack(self, delivery_tag)

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        """kombu's; a healing message to requeue is pushed back from memory."""
        if delivery_tag not in self._local:
            kombu: Any = super().reject
            kombu(delivery_tag, requeue=requeue)
            return
        if requeue:
            self.restore_by_tag(delivery_tag, leftmost=True)
        self.ack(delivery_tag)

    def restore_by_tag(self, tag: str, client: Any = None, leftmost: bool = False) -> None:
        """kombu's restore; a healing message is pushed back from memory."""
        if tag not in self._local:
            kombu: Any = super().restore_by_tag
            kombu(tag, client=client, leftmost=leftmost)
            return
        this: Any = self
        message = this._delivered.get(tag)
        if message is None:
            return
        delivery = message.delivery_info
        channel: Any = this.channel
        with channel.conn_or_acquire(client) as conn:
            pipe = conn.pipeline()
            channel._do_restore_message(message._raw, delivery["exchange"],
                                        delivery["routing_key"], pipe, leftmost)
            pipe.execute()


def _never(message: Any) -> bool:
    return False


_IN_MEMORY: Any = kombu_virtual.QoS
"""kombu's in-memory ack bookkeeping (untyped), which ``QoS`` keeps for healing messages."""


class Channel(kombu_redis.Channel):
    """A kombu Redis channel whose reads survive items that are not messages, and
    whose publishes reuse one client."""

    QoS = QoS

    _reused: Any = None
    """The synchronous client ``_create_client`` hands out while the pool is the same."""
    _plain: Any = None
    """A client of the same pool that adds no global key prefix (``push_all``)."""

    def _create_client(self, asynchronous: bool = False) -> Any:
        """kombu's client, built once per connection pool instead of once per call.

        kombu builds a new ``redis.Redis`` for every publish (``conn_or_acquire``);
        building one costs more CPU than the publish itself. A client only lends out
        its pool's connections, so one serves every call; a new pool (after a fork or a
        reconnect) gets a new client.
        """
        build: Any = super()._create_client  # kombu's channel is untyped
        if asynchronous:
            return build(asynchronous=True)
        this: Any = self
        reused = self._reused
        if reused is None or reused.connection_pool is not this.pool:
            reused = self._reused = build()
        return reused

    def _plain_client(self) -> Any:
        """A ``redis.Redis`` on kombu's pool that leaves keys as they are, one per pool."""
        pooled = self._create_client()
        if not getattr(pooled, "global_keyprefix", ""):
            return pooled
        plain = self._plain
        if plain is None or plain.connection_pool is not pooled.connection_pool:
            plain = self._plain = redis.Redis(connection_pool=pooled.connection_pool)
        return plain

    def same_redis(self, client: Any) -> bool:
        """Whether this channel's Redis is ``client``'s: the same server and database."""
        this: Any = self
        return redis_at(this.client) == redis_at(client)

    def push_all(self, pushes: list[tuple[str, str]]) -> None:
        """Send ``LPUSH``es made beforehand (key, payload), in one round trip.

        Their keys are whole: a captured ``LPUSH`` carries the broker's global key
        prefix already (``_put``), so they go through a client that adds none (kombu's
        adds it to every key it is given)."""
        client = self._plain_client()
        if len(pushes) == 1:
            client.lpush(*pushes[0])
            return
        pipe = client.pipeline(transaction=False)
        for key, payload in pushes:
            pipe.lpush(key, payload)
        pipe.execute()

    def _put(self, queue: Any, message: Any, **kwargs: Any) -> Any:
        """kombu's ``_put``; inside ``capturing()``, the ``LPUSH`` kept instead of sent."""
        into = _captured.get()
        this: Any = self
        if into is None or kwargs.get("_publish_batch") is not None:
            put: Any = super()._put  # kombu's channel is untyped
            return put(queue, message, **kwargs)
        if this._expires and queue in this._expires:  # a queue TTL to refresh too
            raise NotCapturedError(f"queue {queue!r} expires")
        key = this._q_for_pri(queue, this._get_message_priority(message, reverse=False))
        into.append((getattr(this.client, "global_keyprefix", "") + key, _dumps(message)))
        return None

    def _drop(self, queue: str, raw: bytes) -> None:
        preview = bytes(raw[:80])
        log.error("dropped an item on queue %r that is not a message (%d bytes: %r...); "
                  "kept in Redis list %r", queue, len(raw), preview, dead_letter_key(queue))
        try:
            with self.conn_or_acquire() as client:
                client.lpush(dead_letter_key(queue), raw)
                client.ltrim(dead_letter_key(queue), 0, DEAD_LETTER_MAX - 1)
        except Exception as exc:  # the log line above is the record that matters
            log.warning("could not keep the dropped item: %s", exc)

    def _brpop_read(self, **options: Any) -> bool:
        """kombu's ``_brpop_read`` with a decode that drops garbage instead of raising."""
        this: Any = self  # kombu's channel is untyped
        try:
            try:
                dest__item = self.client.parse_response(
                    self.client.connection, "BRPOP", **options)
            except self.connection_errors:
                self.client.connection.disconnect()
                raise
            if not dest__item:
                raise Empty()
            dest, item = dest__item
            dest = _text(dest).rsplit(self.sep, 1)[0]
            self._queue_cycle.rotate(dest)
            message = parse_item(item)
            if message is None:
                self._drop(dest, item)
                raise Empty()
            self.connection._deliver(message, dest)
            return True
        finally:
            this._in_poll = None
            flush = getattr(self, "_flush_brpop_reauth", None)
            if flush is not None:
                flush()

    def _get(self, queue: Any, timeout: Any = None) -> Any:
        """kombu's ``_get`` (polling reads) with the same decode."""
        this: Any = self
        with this.conn_or_acquire() as client:
            for pri in this.priority_steps:
                item = client.rpop(this._q_for_pri(queue, pri))
                if not item:
                    continue
                this._maybe_update_queues_expire(client, queue)
                message = parse_item(item)
                if message is None:
                    self._drop(queue, item)
                    continue
                return message
            this._maybe_update_queues_expire(client, queue)
            raise Empty()


class RedisTransport(kombu_redis.Transport):
    """kombu's Redis transport with the hardened channel."""

    Channel = Channel


ALIAS = "dgredis"
"""kombu transport alias of ``RedisTransport`` (for URLs of the ``alias+socket://`` form)."""
TRANSPORT_ALIASES.setdefault(ALIAS, f"{__name__}:RedisTransport")


def _password_in_userinfo(url: str) -> str:
    """``?password=`` moved into ``:password@`` (kombu rejects it in the query)."""
    parts = urlsplit(url)
    query = parse_qs(parts.query, keep_blank_values=True)
    password = query.pop("password", [None])[0]
    if password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    rest = urlencode({k: v[-1] for k, v in query.items()})
    return urlunsplit(parts._replace(netloc=f"{user}:{quote(password, safe='')}@{host}",
                                     query=rest))


def broker_for(url: str) -> tuple[str, str | None]:
    """(broker URL, transport alias or None) Celery should use for ``url``.

    ``redis://`` URLs get the hardened transport (a ``?password=`` moves into the
    authority, where kombu reads it and masks it in logs); a ``unix://`` URL
    becomes ``dgredis+socket:///path`` (its ``db`` as the virtual host); anything
    else (``rediss://``, ``amqp://``, ...) is left to kombu as it is.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "redis":
        return _password_in_userinfo(url), ALIAS
    if scheme == "unix":
        query = parse_qs(parts.query)
        db = (query.get("db") or ["0"])[0]
        password = (query.get("password") or [parts.password or ""])[0]
        auth = f":{quote(password, safe='')}@" if password else ""
        return f"{ALIAS}+socket://{auth}{parts.path}?virtual_host={db}", None
    return url, None
