"""The operator view of threads: a status record per thread and an index by status.

The record (``{P:T}:rec``) lives in the thread's slot and is the source of truth;
the commit script already keeps its last checkpoint id there. The index by status
spans threads, so on Redis Cluster it cannot share a slot with them: it is a
sorted set per status, sharded into ``STATUS_BUCKETS`` hash tags by a CRC of the
thread id. All statuses of one thread fall in one bucket, so moving a thread
between statuses is one atomic script on one slot. The record and the index are
updated together on one Redis (one transaction) but one after the other on Cluster
(different slots), so ``list_threads`` checks each candidate against its record and
never reports a stale status.
"""

from __future__ import annotations

import heapq
import itertools
import json
import time
import traceback
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, get_args

from redis.cluster import RedisCluster

from durable_graph.errors import GraphValueError
from durable_graph.store.base import ThreadStatus
from durable_graph.store.redis.connection import RedisConn
from durable_graph.store.redis.keys import (
    ThreadKeys,
    status_bucket,
    status_key,
    status_keys,
    thread_from_record_key,
    thread_record_pattern,
)
from durable_graph.store.redis.lease import Lease

__all__ = ["STATUSES", "RunEnd", "ThreadPage", "ThreadRecords", "stamp_args"]

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


@dataclass(frozen=True)
class RunEnd:
    """A run's end event, encoded, and where it goes (see ``ThreadRecords.close_run``)."""

    stream: str
    mode: str
    payload: bytes
    ttl: int
    maxlen: int


def _status_fields(
    status: str, error: BaseException | None, next_nodes: Sequence[str] | None,
) -> dict[str | bytes, str]:
    """A thread record's fields for ``status`` (see ``ThreadRecords.set_status``), all
    of them, as Redis Cluster's path sets them (``_changed_fields`` for the scripts)."""
    fields: dict[str | bytes, str] = {
        "status": _checked(status),
        "updated_at": datetime.now(UTC).isoformat(),
    }
    fields.update(_changed_fields(error, next_nodes))
    fields.setdefault("next", "")
    return fields


def _changed_fields(
    error: BaseException | None, next_nodes: Sequence[str] | None,
) -> dict[str | bytes, str]:
    """The fields a status script is sent besides the status and its time: the error's,
    and ``next`` if known (the script sets ``status`` and ``updated_at`` itself, and drops
    ``next`` unless sent)."""
    fields: dict[str | bytes, str] = {}
    if error is not None:
        fields.update(_error_fields(error))
    if next_nodes is not None:
        fields["next"] = json.dumps(list(next_nodes))
    return fields


def _checked(status: str) -> str:
    if status not in STATUSES:
        raise GraphValueError(f"unknown thread status {status!r}; use one of {STATUSES}")
    return status


def stamp_args(thread_id: str) -> list[Any]:
    """A status script's time (microseconds since the epoch: it writes ``updated_at``
    from it, and the index score in ms) and the thread's status bucket."""
    return [time.time_ns() // 1000, status_bucket(thread_id)]


def _status_args(thread_id: str, status: str) -> list[Any]:
    """A status script's status, then ``stamp_args``."""
    return [_checked(status), *stamp_args(thread_id)]


def _error_fields(error: BaseException) -> dict[str, str]:
    """Type, message and traceback of the error that failed a thread."""
    cls = type(error)
    return {
        "error_type": f"{cls.__module__}.{cls.__qualname__}",
        "error_message": str(error),
        "error_traceback": "".join(traceback.format_exception(error)),
    }


@dataclass(frozen=True)
class ThreadPage:
    """One page of the status index, newest first."""

    threads: list[dict[str, Any]]
    """Records (``get_status`` shape, without the traceback) plus ``indexed_at`` (ms) and
    ``run`` (the sealed run description, or None)."""
    next_cursor: str | None
    """Pass as ``after`` for the next page; None on the last page."""


def _cursor(score: float, thread_id: str) -> str:
    return f"{int(score)}:{thread_id}"


def _parse_cursor(cursor: str) -> tuple[int, str]:
    head, sep, thread_id = cursor.partition(":")
    if not sep or not head.lstrip("-").isdigit():
        raise GraphValueError(f"bad page cursor {cursor!r}: pass a next_cursor a page returned")
    return int(head), thread_id


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
        thread_id = str(thread_id)

        def both(client: Any) -> None:
            if isinstance(client, RedisCluster):  # record and index are in two slots
                fields = _status_fields(status, error, next_nodes)
                client.hset(ThreadKeys(self._prefix, thread_id).record, mapping=fields)
                self._index(thread_id, status)
                return
            # one script: atomic
            self._record(client, thread_id, status, _changed_fields(error, next_nodes))

        self._conn.call("set thread status", both)

    def _record(self, client: Any, thread_id: str, status: ThreadStatus,
                fields: Mapping[str | bytes, str], gone: Sequence[str] = ()) -> Any:
        """Update the record (``gone`` fields deleted, ``fields`` set with the status and
        its time, ``next`` dropped unless among them) and move ``thread_id`` to ``status``
        in the index, as one script by SHA, on ``client``: the client itself (a NOSCRIPT
        changed nothing, so the script is loaded and sent again) or a MULTI pipeline run
        by ``RedisConn.execute`` (which loads it first). Sent: the record key, the status,
        the time, the bucket (the script composes the index keys) and only what else
        changes."""
        args = _status_args(thread_id, status)
        if gone or fields:
            args += [len(gone), *gone]
            for name, value in fields.items():
                args += [name, value]
        return self._conn.script("RECORD_STATUS")(
            keys=[ThreadKeys(self._prefix, thread_id).record], args=args, client=client)

    def close_run(
        self, lease: Lease, status: ThreadStatus, error: BaseException | None,
        next_nodes: Sequence[str] | None, event: RunEnd,
    ) -> bool | None:
        """End a run in one round trip: if ``lease`` is still held, set the status,
        append the end event, release the lease (atomically, in this order).

        True: done; False: the lease was taken over and nothing changed; None: Redis
        Cluster (the index is in another slot), so the caller does it step by step.
        """
        if isinstance(self._conn.client, RedisCluster):
            return None
        return bool(self._conn.run("CLOSE_RUN", *self._close_call(
            lease, status, error, next_nodes, event, at=""), "end run"))

    def queue_close(
        self, pipe: Any, lease: Lease, status: ThreadStatus, next_nodes: Sequence[str] | None,
        event: RunEnd, *, at: str,
    ) -> Any:
        """Queue ``close_run`` on ``pipe``, a pipeline that commits checkpoint ``at`` just
        before; it ends the run only if that commit landed. Its reply: 1 ended, 0 the
        lease was taken over, -1 ``at`` is not the thread's newest checkpoint (nothing
        changed either way). None on Redis Cluster (not queued)."""
        if isinstance(self._conn.client, RedisCluster):
            return None
        keys, args = self._close_call(lease, status, None, next_nodes, event, at=at)
        return self._conn.script("CLOSE_RUN")(keys=keys, args=args, client=pipe)

    def _close_call(
        self, lease: Lease, status: ThreadStatus, error: BaseException | None,
        next_nodes: Sequence[str] | None, event: RunEnd, *, at: str,
    ) -> tuple[list[str], list[Any]]:
        """The keys and arguments of the ``CLOSE_RUN`` script."""
        thread_id = str(lease.thread_id)
        tk = ThreadKeys(self._prefix, thread_id)
        keys = [tk.lease, tk.record, event.stream]
        args: list[Any] = [lease.owner, lease.generation, *_status_args(thread_id, status),
                           event.mode, event.payload, event.ttl, event.maxlen, at]
        for name, value in _changed_fields(error, next_nodes).items():
            args += [name, value]
        return keys, args

    def _index(self, thread_id: str, status: str) -> None:
        """Move ``thread_id`` to ``status`` in the index ('' removes it)."""
        keys = [status_key(self._prefix, thread_id, s) for s in STATUSES]
        args = [thread_id, status, int(time.time() * 1000)]
        self._conn.run("STATUS_INDEX", keys, args, "index thread status")

    def set_run(
        self, thread_id: str, sealed: str, graph: str = "", policy: dict[str, str] | None = None,
        *, status: ThreadStatus | None = None,
    ) -> None:
        """Keep the sealed description of the thread's current distributed run, and
        the name of its graph in clear (for listing threads by graph).

        ``policy``: retention fields to record with it ('0' removes one), so the
        workers' commits of this run apply the starting saver's policy. ``status``:
        ``set_status(thread_id, status)`` in the same round trip (atomic with it).
        """
        thread_id = str(thread_id)

        def store(c: Any) -> None:
            # one key, or (with a status) the record and its index entry atomically
            together = status is not None and not isinstance(c, RedisCluster)
            if together:  # one script
                self.queue_run(c, thread_id, sealed, graph, policy, status=status)
                return
            pipe = c.pipeline(transaction=False)
            self.queue_run(pipe, thread_id, sealed, graph, policy)
            pipe.execute()
            if status is not None:
                self.set_status(thread_id, status)

        self._conn.call("store run", store)

    def queue_run(
        self, pipe: Any, thread_id: str, sealed: str, graph: str = "",
        policy: dict[str, str] | None = None, *, status: ThreadStatus | None = None,
    ) -> None:
        """Queue ``set_run``'s commands on ``pipe``; with a ``status``, one script (its
        index is another key), so ``pipe`` may also be the client itself (run now), or a
        MULTI run by ``RedisConn.execute``."""
        record = ThreadKeys(self._prefix, thread_id).record
        fields: dict[str | bytes, str] = {"run": sealed}
        if graph:
            fields["graph"] = graph
        fields.update({k: v for k, v in (policy or {}).items() if v != "0"})
        gone = [k for k, v in (policy or {}).items() if v == "0"]
        if status is not None:  # one script for the run's fields, the status's and its index
            self._record(pipe, thread_id, status, fields, gone)
            return
        if gone:
            pipe.hdel(record, *gone)
        pipe.hset(record, mapping=fields)

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
        left by an interrupted update are skipped, and those of a thread whose record
        is gone (expired by its TTL, or deleted) are dropped from the index too.
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
        """The candidates whose record still holds the status they are indexed under;
        those whose record is gone leave the index (``forget``)."""
        threads = list(found)
        statuses = self._statuses(threads)
        self.forget([(status_key(self._prefix, t, found[t][1]), t, found[t][0])
                     for t, s in zip(threads, statuses, strict=True) if s is None])
        return [
            t
            for t, s in zip(threads, statuses, strict=True)
            if s is not None and s.decode() == found[t][1]
        ]

    def _statuses(self, threads: Sequence[str]) -> list[bytes | None]:
        """The status field of each thread's record (None: no record), in one round trip."""
        records = [ThreadKeys(self._prefix, t).record for t in threads]

        def read_records(client: Any) -> list[Any]:
            pipe = client.pipeline(transaction=False)
            for record in records:
                pipe.hget(record, "status")
            return list(pipe.execute())

        return self._conn.call("read thread statuses", read_records) if threads else []

    def forget(self, entries: Sequence[tuple[str, str, float]]) -> int:
        """Drop index entries (shard key, thread id, score as read) of threads whose
        record was seen gone: a TTL expires a thread's keys, but its index entries live
        in other slots (Redis Cluster) and would stay forever. An entry whose score
        changed since (the thread was written and indexed again) stays. How many went."""
        by_key: dict[str, list[Any]] = {}
        for key, thread_id, score in entries:
            by_key.setdefault(key, []).extend((thread_id, score))
        calls = [("UNINDEX_GONE", [key], args) for key, args in by_key.items()]
        return sum(self._conn.run_many(calls, "unindex gone threads")) if calls else 0

    def sweep_gone(self, ranks: dict[str, int], *, batch: int = 100) -> int:
        """Check the next ``batch`` entries of every shard of every status for threads
        whose record is gone, and drop them (``forget``): three round trips, whatever
        the index holds, so the index stays bounded by the threads that exist even when
        nobody lists it. ``ranks``: where each shard's next batch starts (the caller
        keeps it between sweeps; a shard read to its end starts over). How many went."""
        keys = [key for s in STATUSES for key in status_keys(self._prefix, s)]

        def read(client: Any) -> list[Any]:
            pipe = client.pipeline(transaction=False)
            for key in keys:
                start = ranks.get(key, 0)
                pipe.zrange(key, start, start + batch - 1, withscores=True)
            return list(pipe.execute())

        seen = [(key, m.decode(), score)
                for key, rows in zip(keys, self._conn.call("sweep thread index", read),
                                     strict=True)
                for m, score in rows]
        statuses = self._statuses([t for _, t, _ in seen])
        gone = [entry for entry, s in zip(seen, statuses, strict=True) if s is None]
        read_here, gone_here = Counter(k for k, _, _ in seen), Counter(k for k, _, _ in gone)
        for key in keys:  # a shard read to its end starts over; else past what stays
            ranks[key] = ranks.get(key, 0) + read_here[key] - gone_here[key] \
                if read_here[key] == batch else 0
        return self.forget(gone)

    def count_by_status(self) -> dict[str, int]:
        """Threads indexed under each status: ZCARD of every shard, in one round trip."""
        keys = {s: status_keys(self._prefix, s) for s in STATUSES}

        def cards(client: Any) -> list[int]:
            pipe = client.pipeline(transaction=False)
            for shard in keys.values():
                for key in shard:
                    pipe.zcard(key)
            return list(pipe.execute())

        sizes = iter(self._conn.call("count threads", cards))
        return {s: sum(next(sizes) for _ in shard) for s, shard in keys.items()}

    def page(
        self, status: ThreadStatus | None = None, *, limit: int = 50, after: str | None = None
    ) -> ThreadPage:
        """Up to ``limit`` threads with ``status`` (any if None), newest first.

        Keyset paging over the sharded index: each shard gives its newest
        ``limit`` entries older than the cursor (``ZREVRANGEBYSCORE ... LIMIT``)
        and the shards are merged, so any page costs the same whatever its depth.
        Ties in the update time are ordered by thread id.
        """
        if limit < 1:
            raise GraphValueError(f"page limit must be at least 1, got {limit}")
        top = _parse_cursor(after) if after else None
        wanted = STATUSES if status is None else (status,)
        keys = [(s, key) for s in wanted for key in status_keys(self._prefix, s)]
        shards = self._shard_pages(keys, top, limit)
        merged = heapq.merge(*shards, key=_order)
        entries = list(itertools.islice(merged, limit + 1))
        more = len(entries) > limit
        entries = entries[:limit]
        records = self._records([t for _, t, _ in entries])
        threads = []
        for (score, _, indexed), record in zip(entries, records, strict=True):
            if record is not None and record.get("status") == indexed:
                threads.append({**record, "indexed_at": int(score)})
        self.forget([(status_key(self._prefix, t, indexed), t, score)
                     for (score, t, indexed), record in zip(entries, records, strict=True)
                     if record is None or record.get("status") is None])
        last = entries[-1] if entries else None
        cursor = _cursor(last[0], last[1]) if more and last else None
        return ThreadPage(threads, cursor)

    def _shard_pages(
        self, keys: list[tuple[str, str]], top: tuple[int, str] | None, limit: int
    ) -> list[list[tuple[float, str, str]]]:
        """Enough of each (status, shard), newest first after the cursor, to merge the
        newest ``limit + 1``: each round reads a few more entries of only the shards that
        may still hold some of them (pipelined), so a page reads about twice what it
        shows whatever the number of threads or shards."""
        high = "+inf" if top is None else top[0]
        got: list[list[tuple[float, str, str]]] = [[] for _ in keys]
        read_so_far = [0] * len(keys)
        todo = dict.fromkeys(range(len(keys)), max(4, 2 * (limit + 1) // len(keys) + 1))
        while todo:

            def read(client: Any, wanted: dict[int, int] = todo) -> list[Any]:
                pipe = client.pipeline(transaction=False)
                for i, fetch in wanted.items():
                    pipe.zrevrangebyscore(keys[i][1], high, "-inf", start=read_so_far[i],
                                          num=fetch, withscores=True)
                return list(pipe.execute())

            open_: dict[int, int] = {}
            for (i, fetch), rows in zip(todo.items(), self._conn.call("page threads", read),
                                        strict=True):
                read_so_far[i] += len(rows)
                entries = [(float(sc), m.decode(), keys[i][0]) for m, sc in rows]
                if top is not None:
                    entries = [e for e in entries if e[0] < top[0] or e[1] < top[1]]
                got[i] += entries
                if len(rows) == fetch:
                    open_[i] = fetch * 2  # this shard has more than was read
            todo = _still_needed(got, open_, limit + 1)
        for entries in got:
            entries.sort(key=_order)
        return got

    def _records(self, threads: list[str]) -> list[dict[str, Any] | None]:
        """The records of ``threads`` (``get_status`` without tracebacks, plus the sealed
        ``run``), in one round trip."""
        fields = [*(f for f in _FIELDS if f != "error_traceback"), "run"]

        def read(client: Any) -> list[Any]:
            pipe = client.pipeline(transaction=False)
            for t in threads:
                pipe.hmget(ThreadKeys(self._prefix, t).record, fields)
            return list(pipe.execute())

        rows = self._conn.call("read thread records", read) if threads else []
        out: list[dict[str, Any] | None] = []
        for t, row in zip(threads, rows, strict=True):
            raw = {f.encode(): v for f, v in zip(fields, row, strict=True) if v is not None}
            record = _record(t, raw)
            if record is not None:
                record.pop("error_traceback", None)
                record["run"] = raw[b"run"].decode() if b"run" in raw else None
            out.append(record)
        return out

    def with_prefix(self, start: str, limit: int) -> list[str]:
        """Up to ``limit`` thread ids starting with ``start`` (a SCAN of the records)."""
        pattern = thread_record_pattern(self._prefix, start)
        found: list[str] = []
        cursor = 0

        def scan(client: Any) -> tuple[int, list[bytes]]:
            return tuple(client.scan(cursor, match=pattern, count=1000))

        while True:
            cursor, keys = self._conn.call("find threads", scan)
            for key in keys:
                thread_id = thread_from_record_key(self._prefix, key.decode())
                if thread_id is not None and thread_id.startswith(start):
                    found.append(thread_id)
            if not cursor or len(found) >= limit:
                return sorted(found)[:limit]


def _order(entry: tuple[float, str, str]) -> tuple[float, _desc]:
    """Newest first, ties by thread id descending (as ZREVRANGEBYSCORE orders them)."""
    return (-entry[0], _desc(entry[1]))


def _still_needed(
    got: list[list[tuple[float, str, str]]], open_: dict[int, int], wanted: int
) -> dict[int, int]:
    """The open shards (more unread entries) that may hold one of the newest ``wanted``:
    all of them while fewer were read, else those whose last read entry is among them."""
    if not open_:
        return {}
    merged = sorted((e for entries in got for e in entries), key=_order)
    if len(merged) < wanted:
        return open_
    cutoff = _order(merged[wanted - 1])
    return {i: n for i, n in open_.items() if not got[i] or _order(got[i][-1]) <= cutoff}


class _desc(str):  # noqa: N801 - a sort key, not a type users see
    """A string that sorts in reverse, so merged shards order ties by id descending."""

    __slots__ = ()

    def __lt__(self, other: str) -> bool:
        return str.__gt__(self, other)


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
