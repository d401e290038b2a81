"""A distributed run's events: workers append them, the producer blocks reading them.

One Redis stream per run, in the thread's slot. Workers append the stream-mode
chunks the producer asked for as they happen, and one ``end`` event when the run
is done, interrupted or failed. The producer reads with ``XREAD BLOCK``, so it
waits without polling. Payloads go through the saver's (signed) serializer,
signed for their place (prefix, thread, run, mode), so an event copied into
another run's stream does not verify there.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from durable_graph.store.encoding import bound_serializer, place_of
from durable_graph.store.redis.connection import RedisConn
from durable_graph.store.redis.keys import ThreadKeys
from durable_graph.store.redis.records import decode_blob, encode_blob
from durable_graph.store.redis.threads import RunEnd
from durable_graph.store.serde import Serializer

__all__ = ["END", "RunEvents"]

END = "__end__"
"""Mode of the last event of a run: payload is {status, output, interrupts, error}."""
_TTL = 24 * 3600
"""Seconds a run's events outlive its last event (a producer that went away)."""
_END_TTL = 3600
"""Seconds a finished run's events stay for a producer that reads them late."""
_MAXLEN = 100_000


class RunEvents:
    """Append and read the event stream of runs under one key prefix."""

    def __init__(self, conn: RedisConn, prefix: str, serde: Serializer) -> None:
        self._conn, self._prefix, self._serde = conn, prefix, serde

    def key(self, thread_id: str, run_id: str) -> str:
        """The stream of one run."""
        return ThreadKeys(self._prefix, thread_id).events(run_id)

    def publish(self, thread_id: str, run_id: str, mode: str, payload: Any) -> None:
        """Append one event (one round trip); after the end, the stream lives an hour."""
        end = self.encode(thread_id, run_id, mode, payload)

        def add(client: Any) -> None:
            pipe = client.pipeline(transaction=False)
            pipe.xadd(end.stream, {"m": mode, "p": end.payload}, maxlen=end.maxlen,
                      approximate=True)
            pipe.expire(end.stream, end.ttl)
            pipe.execute()

        self._conn.call("publish run event", add)

    def encode(self, thread_id: str, run_id: str, mode: str, payload: Any) -> RunEnd:
        """One event, signed for its place, and where it goes (``publish`` sends it;
        ``RedisSaver.close_run`` sends a run's end with the rest of the end)."""
        place = place_of("event", self._prefix, thread_id, run_id, mode)
        bound = bound_serializer(self._serde)
        tagged = (bound.dumps_bound(payload, place) if bound is not None
                  else self._serde.dumps_typed(payload))
        return RunEnd(self.key(thread_id, run_id), mode, encode_blob(tagged),
                      _END_TTL if mode == END else _TTL, _MAXLEN)

    def read(
        self, thread_id: str, run_id: str, after: str = "0", block_ms: int = 1000
    ) -> Iterator[tuple[str, str, Any]]:
        """(event id, mode, payload) after ``after``, waiting up to ``block_ms`` for one."""
        key = self.key(thread_id, run_id)
        reply = self._conn.call(
            "read run events", lambda c: c.xread({key: after}, count=500, block=block_ms)
        )
        for _stream, entries in reply or []:
            for raw_id, fields in entries:
                mode = fields[b"m"].decode()
                place = place_of("event", self._prefix, thread_id, run_id, mode)
                blob = decode_blob(fields[b"p"])
                bound = bound_serializer(self._serde)
                payload = (bound.loads_bound(blob, place) if bound is not None
                           else self._serde.loads_typed(blob))
                yield raw_id.decode(), mode, payload

