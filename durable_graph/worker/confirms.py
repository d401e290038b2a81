"""Publishes to RabbitMQ that do not wait for each publisher confirm (issue 15).

One confirm channel per process (on a connection of its own; a forked child starts
over and never touches its parent's), publishes written without waiting, confirms read
as they arrive. At most ``max_messages`` messages (or ``max_bytes`` of payload) are
unconfirmed at a time: a full window waits for confirms before it publishes more.
``flush`` waits for every confirm: before a worker acks the job that published, when a
producer waits on a run it submitted (``RunHandle``), and at process exit. A producer's
submit does not wait (one confirm round trip a submit was about a tenth of issue 15's
200 concurrent runs, ``bench/bench_speed.py``): its jobs are owed in the store before they are
published, so a job lost with a producer that died unconfirmed is sent again by the
recovery sweep, like any message the broker lost.

A nack, a closed channel or a broken connection sends every unconfirmed message of the
window again the careful way (``resend``: publish-and-wait, with retries), so nothing is
lost; a message that did arrive twice is a copy, and copies are dropped by their claim.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from durable_graph.errors import GraphValueError

__all__ = ["ConfirmWindow"]

log = logging.getLogger("durable_graph.worker")

MAX_MESSAGES = 64
MAX_BYTES = 512 * 1024

_windows: weakref.WeakSet[ConfirmWindow] = weakref.WeakSet()


class _UnconfirmedError(Exception):
    """RabbitMQ nacked a published message, or no confirm arrived in time."""


class ConfirmWindow:
    """A window of unconfirmed publishes on this process's confirm channel.

    ``connect`` opens a kombu connection; ``wrap(channel)`` makes what publishes on the
    confirm channel (a kombu producer); ``send(wrapped, messages)`` publishes job messages
    with it; ``resend(messages)`` publishes them the careful way.
    """

    def __init__(
        self, connect: Callable[[], Any], send: Callable[[Any, list[list[str]]], None],
        resend: Callable[[list[list[str]]], None], *,
        wrap: Callable[[Any], Any] = lambda channel: channel, max_messages: int = MAX_MESSAGES,
        max_bytes: int = MAX_BYTES, wait: float = 30.0,
    ) -> None:
        if max_messages < 1 or max_bytes < 1:
            raise GraphValueError(f"a confirm window holds at least one message and byte, not "
                             f"max_messages={max_messages}, max_bytes={max_bytes}")
        self._connect, self._send, self._resend, self._wrap = connect, send, resend, wrap
        self.max_messages, self.max_bytes, self._wait = max_messages, max_bytes, wait
        self._lock = threading.RLock()
        self._pid = 0
        self._conn: Any = None
        self._channel: Any = None
        """What publishes on the confirm channel (``wrap`` of it)."""
        self._pending: dict[int, list[str]] = {}
        self._bytes = 0
        self._next = 1
        self.resent = 0
        """Messages sent again the careful way (a nack, a broken channel or connection)."""
        _windows.add(self)

    @property
    def unconfirmed(self) -> int:
        """Messages published and not confirmed yet."""
        return len(self._pending)

    def publish(self, messages: list[list[str]]) -> None:
        """Publish ``messages`` without waiting for their confirms (a full window waits)."""
        with self._lock:
            sent = 0
            try:
                channel = self._open()
                for args in messages:
                    while self._pending and (len(self._pending) >= self.max_messages
                                             or self._bytes >= self.max_bytes):
                        self._drain(block=True)
                    self._pending[self._next] = args
                    self._bytes += _size(args)
                    self._next += 1
                    sent += 1
                    self._send(channel, [args])
                self._drain(block=False)
            except Exception as exc:  # every failure: the careful way
                self._recover(exc, messages[sent:])

    def flush(self) -> None:
        """Return once every message published so far is confirmed (or sent again)."""
        with self._lock:
            if self._pid != os.getpid():
                return  # a forked child: its parent's window is not its own
            try:
                while self._pending:
                    self._drain(block=True)
            except Exception as exc:
                self._recover(exc)

    def close(self) -> None:
        """Flush, then close the channel and its connection."""
        self.flush()
        with self._lock:
            self._drop()

    def _open(self) -> Any:
        pid = os.getpid()
        if self._pid != pid:  # forked: forget the parent's channel, never use it
            self._pid, self._conn, self._channel = pid, None, None
            self._pending, self._bytes, self._next = {}, 0, 1
        if self._channel is None:
            conn = self._connect()
            channel = conn.channel()
            channel.confirm_select()
            channel.events["basic_ack"].add(self._ack)
            channel.events["basic_nack"].add(self._nack)
            channel.basic_publish = channel._basic_publish  # not one wait per message
            self._conn, self._channel, self._next = conn, self._wrap(channel), 1
        return self._channel

    def _drain(self, *, block: bool) -> None:
        """Read the confirms that arrived; ``block``: wait for at least one event."""
        if block:
            deadline = time.monotonic() + self._wait
            before = len(self._pending)
            while len(self._pending) == before:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise _UnconfirmedError(f"no publisher confirm in {self._wait:.0f}s")
                with contextlib.suppress(TimeoutError):
                    self._conn.drain_events(timeout=min(left, 1.0))
        while True:
            try:
                self._conn.drain_events(timeout=0)
            except TimeoutError:
                return

    def _ack(self, tag: int, multiple: bool) -> None:
        for done in ([t for t in self._pending if t <= tag] if multiple else [tag]):
            args = self._pending.pop(done, None)
            if args is not None:
                self._bytes -= _size(args)

    def _nack(self, tag: int, multiple: bool, *_: Any) -> None:
        raise _UnconfirmedError(f"RabbitMQ refused published job(s) (delivery tag {tag})")

    def _recover(self, exc: BaseException, unsent: list[list[str]] | None = None) -> None:
        """Send every unconfirmed (and ``unsent``) message again the careful way; a
        fresh channel next time."""
        lost = list(self._pending.values()) + list(unsent or [])
        self._drop()
        if not lost:
            return
        log.warning("%d published job(s) not confirmed (%s); sending them again, one by "
                    "one, with retries", len(lost), exc)
        self.resent += len(lost)
        self._resend(lost)

    def _drop(self) -> None:
        channel, conn = self._channel, self._conn
        self._channel, self._conn = None, None
        self._pending, self._bytes, self._next = {}, 0, 1
        for closing in (channel, conn):
            if closing is not None:
                with contextlib.suppress(Exception):
                    closing.close()


def _size(args: list[str]) -> int:
    return sum(len(part) for part in args)


@atexit.register
def _flush_all() -> None:
    """At exit: wait for the confirms of every window of this process."""
    for window in list(_windows):
        with contextlib.suppress(Exception):
            window.flush()
