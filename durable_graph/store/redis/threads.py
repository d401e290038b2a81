"""The operator view of threads: a status record per thread and an index by status.

The record (``{P:T}:rec``) lives in the thread's slot and is the source of truth;
the commit script already keeps its last checkpoint id there. The index by status
spans threads, so on Redis Cluster it cannot share a slot with them: it is a
sorted set per status, sharded into ``STATUS_BUCKETS`` hash tags by a CRC of the
thread id. All statuses of one thread fall in one bucket, so moving a thread
between statuses is one atomic script on one slot. The record and the index are
updated one after the other (different slots), so ``list_threads`` checks each
candidate against its record and never reports a stale status.
"""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, get_args

from durable_graph.errors import GraphValueError
from durable_graph.store.base import ThreadStatus
from durable_graph.store.redis.connection import RedisConn
from durable_graph.store.redis.keys import ThreadKeys, status_key, status_keys

__all__ = ["STATUSES", "ThreadRecords"]

STATUSES: tuple[str, ...] = get_args(ThreadStatus)
_FIELDS = (
    "status",
    "updated_at",
    "last_checkpoint_id",
    "last_checkpoint_ns",
    "error_type",
    "error_message",
    "error_traceback",
    "ttl",
    "graph",
    "next",
)


def _error_fields(error: BaseException) -> dict[str, str]:
    """Type, message and traceback of the error that failed a thread."""
    cls = type(error)
    return {
        "error_type": f"{cls.__module__}.{cls.__qualname__}",
        "error_message": str(error),
        "error_traceback": "".join(traceback.format_exception(error)),
    }


class ThreadRecords:
    """Reads and writes thread records and the status index."""

    def __init__(self, conn: RedisConn, prefix: str) -> None:
        self._conn = conn
        self._prefix = prefix

    def set_status(
        self, thread_id: str, status: ThreadStatus, error: BaseException | None = None,
        *, next_nodes: Sequence[str] | None = None,
    ) -> None:
        """Record the status (and the error that failed the thread), then index it.

        Error fields describe the latest failure and stay when a later status comes
        without one, so a retried thread still shows what it last hit. ``next_nodes``
        (the nodes the thread waits to run) is kept for operators who have no graph
        code; a status given without it clears it.
        """
        if status not in STATUSES:
            raise GraphValueError(f"unknown thread status {status!r}; use one of {STATUSES}")
        thread_id = str(thread_id)
        fields: dict[str | bytes, str] = {
            "status": status,
            "updated_at": datetime.now(UTC).isoformat(),
        }
        if error is not None:
            fields.update(_error_fields(error))
        fields["next"] = "" if next_nodes is None else json.dumps(list(next_nodes))
        record = ThreadKeys(self._prefix, thread_id).record
        self._conn.call("set thread status", lambda c: c.hset(record, mapping=fields))
        self._index(thread_id, status)

    def _index(self, thread_id: str, status: str) -> None:
        """Move ``thread_id`` to ``status`` in the index ('' removes it)."""
        keys = [status_key(self._prefix, thread_id, s) for s in STATUSES]
        args = [thread_id, status, int(time.time() * 1000)]
        self._conn.run("STATUS_INDEX", keys, args, "index thread status")

    def set_run(self, thread_id: str, sealed: str, graph: str = "") -> None:
        """Keep the sealed description of the thread's current distributed run, and
        the name of its graph in clear (for listing threads by graph)."""
        record = ThreadKeys(self._prefix, str(thread_id)).record
        fields: dict[str | bytes, str] = {"run": sealed}
        if graph:
            fields["graph"] = graph
        self._conn.call("store run", lambda c: c.hset(record, mapping=fields))

    def get_run(self, thread_id: str) -> str | None:
        """The sealed description of the thread's last distributed run, if any."""
        record = ThreadKeys(self._prefix, str(thread_id)).record
        raw = self._conn.call("read run", lambda c: c.hget(record, "run"))
        return raw.decode() if raw else None

    def request_stop(self, thread_id: str, run_id: str) -> None:
        """Ask run ``run_id`` of the thread to stop at its next step boundary."""
        record = ThreadKeys(self._prefix, str(thread_id)).record
        self._conn.call("request stop", lambda c: c.hset(record, "stop", run_id))

    def stop_requested(self, thread_id: str) -> str | None:
        """The run asked to stop at its next step boundary, if any."""
        record = ThreadKeys(self._prefix, str(thread_id)).record
        raw = self._conn.call("read stop request", lambda c: c.hget(record, "stop"))
        return raw.decode() if raw else None

    def unindex(self, thread_id: str) -> None:
        """Drop a deleted thread from the status index."""
        self._index(str(thread_id), "")

    def get_status(self, thread_id: str) -> dict[str, Any] | None:
        """The thread's record, or None if it has none.

        Keys: thread_id, status (None until ``set_status``), updated_at,
        last_checkpoint_id, last_checkpoint_ns, error_type, error_message,
        error_traceback, ttl (seconds, or None), graph (its name, for distributed
        runs), next (node names the thread waits to run, or None when unknown).
        """
        record = ThreadKeys(self._prefix, str(thread_id)).record
        raw = self._conn.call("read thread status", lambda c: c.hgetall(record))
        return _record(str(thread_id), raw)

    def get_statuses(self, thread_ids: Sequence[str]) -> list[dict[str, Any] | None]:
        """``get_status`` of many threads in one pipelined round trip."""
        records = [ThreadKeys(self._prefix, str(t)).record for t in thread_ids]

        def read(client: Any) -> list[Any]:
            pipe = client.pipeline(transaction=False)
            for record in records:
                pipe.hgetall(record)
            return list(pipe.execute())

        raws = self._conn.call("read thread status", read) if records else []
        return [_record(str(t), raw) for t, raw in zip(thread_ids, raws, strict=True)]

    def list_threads(self, status: ThreadStatus | None = None) -> list[str]:
        """Thread ids with ``status`` (any status if None), most recently updated first.

        Threads that never had a status set are not indexed. Each candidate is
        checked against its record (one pipelined read), so stale index entries
        left by an interrupted update or an expired thread are skipped.
        """
        wanted = STATUSES if status is None else (status,)
        keys = [key for s in wanted for key in status_keys(self._prefix, s)]

        def read_index(client: Any) -> list[Any]:
            pipe = client.pipeline(transaction=False)
            for key in keys:
                pipe.zrange(key, 0, -1, withscores=True)
            return list(pipe.execute())

        found: dict[str, tuple[float, str]] = {}
        for key, members in zip(keys, self._conn.call("list threads", read_index), strict=True):
            for member, score in members:
                found[member.decode()] = (score, key.rsplit(":", 1)[1])
        live = self._check(found)
        return sorted(live, key=lambda t: found[t][0], reverse=True)

    def _check(self, found: dict[str, tuple[float, str]]) -> list[str]:
        """The candidates whose record still holds the status they are indexed under."""
        threads = list(found)
        records = [ThreadKeys(self._prefix, t).record for t in threads]

        def read_records(client: Any) -> list[Any]:
            pipe = client.pipeline(transaction=False)
            for record in records:
                pipe.hget(record, "status")
            return list(pipe.execute())

        statuses = self._conn.call("list threads", read_records) if threads else []
        return [
            t
            for t, s in zip(threads, statuses, strict=True)
            if s is not None and s.decode() == found[t][1]
        ]


def _record(thread_id: str, raw: dict[bytes, bytes] | None) -> dict[str, Any] | None:
    """A thread record as ``get_status`` returns it (None for no record)."""
    if not raw:
        return None
    text = {k.decode(): v.decode(errors="replace") for k, v in raw.items()}
    out: dict[str, Any] = {"thread_id": thread_id}
    out.update({name: text.get(name) for name in _FIELDS})
    out["ttl"] = int(out["ttl"]) if out["ttl"] else None
    out["next"] = json.loads(out["next"]) if out["next"] else None
    return out
