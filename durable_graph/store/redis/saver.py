"""RedisSaver: checkpoints in plain Redis (no modules), atomic, fenced, O(1) resume.

Works on Redis >= 6 and Valkey over ``redis://``, ``rediss://`` and ``unix://``,
and unchanged on Redis Cluster: every key of a thread shares one hash tag (see
``keys``), so each commit is one Lua script on one slot.

Round trips: ``put`` is one script call (two only when an unchanged channel's
value is missing from Redis, e.g. after a prune raced the commit); ``put_writes``
one; ``get_tuple`` one, latest or by id, whatever the history length (the script
finds the newest id in the index, then reads the checkpoint hash, its values and
its writes); ``list`` two per page of 100 (ids with metadata, then the matching
checkpoints), so a ``limit=1`` query never reads the whole history.
"""

from __future__ import annotations

import builtins
import dataclasses
import functools
import heapq
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol

import ormsgpack
import redis
from redis.cluster import RedisCluster

from durable_graph.errors import (
    CheckpointStoreError,
    CommitConflictError,
    FencingError,
    GraphTypeError,
    GraphValueError,
)
from durable_graph.store.base import (
    ERROR,
    EXTENDS_LATEST,
    INTERRUPT,
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    HeldWrites,
    PutArgs,
    ThreadStatus,
    checkpoint_config,
    config_ids,
    require_storable,
    retires_parent_writes,
)
from durable_graph.store.delta import (
    DEFAULT_SNAPSHOT_EVERY,
    ChannelDelta,
    plan_values,
    snapshot_every_of,
)
from durable_graph.store.encoding import ThreadCodec, metadata_matches
from durable_graph.store.leaves import dedups_leaves
from durable_graph.store.redis import retention
from durable_graph.store.redis.commit_wait import CommitWait
from durable_graph.store.redis.connection import Client, RedisConn, client_from_url, redact
from durable_graph.store.redis.jobbook import Finished, pipelined
from durable_graph.store.redis.keys import (
    ThreadKeys,
    blob_field,
    jobs_of,
    thread_from_record_key,
    thread_record_pattern,
    write_field,
)
from durable_graph.store.redis.leafblobs import LeafHints, encode_values
from durable_graph.store.redis.lease import Lease, RedisLeases
from durable_graph.store.redis.records import (
    INLINE_MAX,
    bind_run,
    blob_fields_of,
    checkpoint_fields,
    decode_tuple,
    encode_writes,
    inlinable,
    pack_record,
    page_metadata,
    unbind_run,
)
from durable_graph.store.redis.scripts import OF_PARENT, PUT_HEAD
from durable_graph.store.redis.threads import RunEnd, ThreadRecords, stamp_args
from durable_graph.store.retention import (
    CheckpointRef,
    check_keep_last,
    check_ttl,
    parent_gone,
)
from durable_graph.store.serde import Serializer, TypedSerializer
from durable_graph.types import START

__all__ = ["Prior", "RedisSaver", "Rider"]

PAGE_SIZE = 100
"""Checkpoints read per round trip while listing; bounds memory, not results."""
_DEPTHS_KEPT = 50_000
"""Value depths a saver remembers from its reads before it forgets them all."""


@dataclasses.dataclass
class _PutPlan:
    """A checkpoint's PUT script call, encoded but not sent (``RedisSaver._plan``)."""

    thread_id: str
    ns: str
    parent_id: str | None
    checkpoint_id: str
    fence: str
    codec: ThreadCodec
    wanted: dict[str, str]
    """Channel -> its blob field, for every value the checkpoint reads."""
    bases: dict[str, str]
    """Blob field of the base of each delta sent -> its channel."""
    blobs: dict[str, bytes]
    """The blobs sent (the changed values)."""
    held: dict[str, bytes]
    """Leaf fields the hints say are stored (required, not sent) -> their bytes, sent
    only if the commit finds one missing."""
    required: builtins.list[str]
    """Blob fields that must be stored already, of the values it reads unchanged; those the
    links of the values sent name (``bases``, the leaves ``held``) the script reads from
    the links themselves (not sent twice)."""
    call: Callable[[Mapping[str, bytes], Sequence[str]], tuple[str, builtins.list[str],
                                                                builtins.list[Any]]]
    """(blobs, required) -> the PUT call."""


@dataclasses.dataclass(frozen=True)
class Prior:
    """What a run's producer holds back to send just before its first commit, in the
    same round trip: the input's checkpoint and, before it, the run's record."""

    put: PutArgs
    """The input checkpoint's ``put``, which the commit expects to be the newest."""
    run: tuple[str, str, str] | None = None
    """``set_run(thread, sealed, graph, status='running')``, to store first (None: stored)."""

    def store(self, saver: RedisSaver) -> None:
        """Store them on their own, in order (the commit will not carry them)."""
        if self.run is not None:
            saver.set_run(*self.run, status="running")
        saver.put(*self.put)


class Rider(Protocol):
    """Commands sent in the round trip of a commit, after it (``commit_step(ride=...)``)."""

    def queue(self, pipe: Any) -> builtins.list[Any]:
        """Queue the commands on ``pipe``; what each call returned, in order."""
        ...

    def landed(self, replies: builtins.list[Any]) -> None:
        """Their replies (they ran after the commit, also when it was refused)."""
        ...


_KINDS = {"PUT_WRITES": "w", "PUT": "p"}


def _one_script(
    calls: Sequence[tuple[str, Sequence[str], Sequence[Any]]],
) -> tuple[str, builtins.list[str], builtins.list[Any]]:
    """``PUT_WRITES`` and ``PUT`` calls (name, keys, args) as one ``PUT_STEP`` call, whose
    reply is theirs, in order."""
    keys: builtins.list[str] = []
    heads: builtins.list[Any] = []
    args: builtins.list[Any] = []
    for name, k, a in calls:
        heads += [_KINDS[name], len(k), len(a)]
        keys += k
        args += a
    return "PUT_STEP", keys, [ormsgpack.packb(heads), *args]


def _follows(prior: Prior, config: Mapping[str, Any], expect_latest: str | None) -> bool:
    """Whether a commit is refused when ``prior``'s put is: it expects a checkpoint to
    be the newest, or it extends ``prior``'s (``EXTENDS_LATEST``: 'gone' if not stored)."""
    return bool(expect_latest) or (
        bool((config.get("configurable") or {}).get(EXTENDS_LATEST))
        and config_ids(config)[2] == prior.put[1].id)


def _fence(config: Mapping[str, Any]) -> str:
    """The fencing token of a commit as script text ('' when unfenced)."""
    fence = (config.get("configurable") or {}).get("fence")
    if fence is None:
        return ""
    if isinstance(fence, bool) or not isinstance(fence, int):
        raise GraphValueError(f"a fencing token must be an int lease generation, got {fence!r}")
    return str(fence)


def _applied_parent(
    config: Mapping[str, Any], metadata: CheckpointMetadata, parent_id: str | None
) -> str:
    """The parent whose ordinary writes a commit retires, if the latest ('' for none)."""
    return parent_id if parent_id and retires_parent_writes(config, metadata) else ""


def _of_parent(checkpoint_id: str, parent_id: str | None) -> str:
    """A PUT argument naming a checkpoint (``applied``, ``extends``): ``OF_PARENT`` when it is
    the parent (the script reads that from the record sent), else the id ('' for none)."""
    return OF_PARENT if checkpoint_id and checkpoint_id == parent_id else checkpoint_id


def _inline(blobs: dict[str, bytes], small: Mapping[str, str]) -> dict[str, bytes]:
    """Channel -> stored bytes of the changed values kept in the record (redis-v9), taken
    out of ``blobs``: of the ``small`` ones (channel -> field), those of at most
    ``INLINE_MAX`` bytes (no field, no 80-byte hash entry for a counter or a branch's
    None; a scalar is never a delta and refers to no leaf, so it has no link). A later
    checkpoint that reads one unchanged has it written out as a field by its commit
    (``PUT``: from its parent's record)."""
    inline = {ch: blobs[f] for ch, f in small.items() if len(blobs[f]) <= INLINE_MAX}
    for ch in inline:
        del blobs[small[ch]]
    return inline


def _carried(checkpoint: Checkpoint, new_versions: Mapping[str, int]) -> builtins.list[str]:
    """Blob fields of the values ``checkpoint`` reads by version only: channels it has a
    version of but no value for, the version not new (see ``PUT``'s ``carried``)."""
    values = checkpoint.channel_values
    return [blob_field(ch, v) for ch, v in checkpoint.channel_versions.items()
            if ch not in values and ch not in new_versions]


def _delta_bases(checkpoint: Checkpoint, channels: Sequence[str]) -> dict[str, str]:
    """Blob field of the base of each delta among ``channels`` -> its channel."""
    values = checkpoint.channel_values
    return {blob_field(ch, values[ch].base): ch for ch in channels
            if isinstance(values[ch], ChannelDelta)}


def _flatten(pairs: Mapping[str, Any]) -> list[Any]:
    return [item for pair in pairs.items() for item in pair]


class RedisSaver(BaseCheckpointSaver):
    """Checkpoint saver on plain Redis; the store of the distributed (Celery) mode.

    Args:
        client: a ``redis.Redis`` or ``redis.cluster.RedisCluster`` built with
            ``decode_responses=False``.
        prefix: namespace of every key, so several apps (or test runs) share a server.
        serde: serializer of channel values and writes.
        ttl: retention policy: seconds a thread lives after its last commit (None:
            forever); ``set_ttl`` overrides it per thread.
        keep_last: retention policy: each commit keeps the newest ``keep_last``
            checkpoints of its namespace (in the same script) and deletes older ones.
            Both are recorded on the threads this saver commits, so Celery workers
            committing a run's steps apply the policy of the saver that started it.
        commit_wait: what each commit waits for before it returns: ``"aof"``
            (WAITAOF, fsynced on the server), ``"replicas:N"`` (WAIT), ``"aof+replicas:N"``
            or a ``CommitWait``; None trusts the server's reply (see ``commit_wait``).
    """

    retires_applied_writes = True  # the PUT script, while the parent is the newest

    def __init__(
        self,
        client: Client,
        *,
        prefix: str = "dg",
        serde: Serializer | None = None,
        ttl: int | None = None,
        keep_last: int | None = None,
        delta: bool = True,
        snapshot_every: int = DEFAULT_SNAPSHOT_EVERY,
        commit_wait: CommitWait | str | None = None,
        _where: str | None = None,
        _owns_client: bool = False,
        _thread_policy: bool = False,
    ) -> None:
        if not prefix:
            raise GraphValueError("RedisSaver needs a non-empty key prefix")
        self.ttl = check_ttl(ttl)
        self.keep_last = check_keep_last(keep_last)
        if _thread_policy and (ttl or keep_last):
            raise GraphValueError("a worker's saver applies each thread's recorded policy; "
                                  "it takes no ttl or keep_last of its own")
        self._thread_policy = _thread_policy
        self.serde: Serializer = serde or TypedSerializer()
        self.snapshot_every = snapshot_every_of(delta, snapshot_every)
        self.prefix = prefix
        self._conn = RedisConn(client, _where, CommitWait.of(commit_wait))
        self._compact = not isinstance(client, RedisCluster)
        """A single Redis: the PUT script composes its keys from its arguments (on Redis
        Cluster they are declared, for its slot routing)."""
        self._owns_client = _owns_client
        self.leases = RedisLeases(self._conn, prefix)
        """Lease API for coordinators: acquire, renew, release (see ``lease``)."""
        self._threads = ThreadRecords(self._conn, prefix)
        self._depths: dict[tuple[str, str, str, int], int] = {}
        """Stored depth of each value this saver last read, by (thread, ns, channel,
        version): a commit on top of a checkpoint just loaded plans its deltas without
        another round trip (a value is never rewritten at its version; a base deleted
        meanwhile is caught by the commit script)."""
        self._dedup = dedups_leaves(self.serde)
        self._leaf_hints = LeafHints()
        """Leaves this saver kept apart lately: a later value holding one refers to it
        too (``leafblobs``; the leaf is sent again all the same)."""

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str = "dg",
        serde: Serializer | None = None,
        ttl: int | None = None,
        keep_last: int | None = None,
        delta: bool = True,
        snapshot_every: int = DEFAULT_SNAPSHOT_EVERY,
        cluster: bool = False,
        commit_wait: CommitWait | str | None = None,
        _thread_policy: bool = False,
        **client_kwargs: Any,
    ) -> RedisSaver:
        """A saver on a new client for ``url``, with connect/read timeouts (5 s / 10 s).

        ``client_kwargs`` go to ``redis.Redis.from_url`` (or ``RedisCluster.from_url``
        with ``cluster=True``) and override the defaults.
        """
        client = client_from_url(url, cluster=cluster, **client_kwargs)
        where = f"Redis at {redact(url)}"
        return cls(client, prefix=prefix, serde=serde, ttl=ttl, keep_last=keep_last,
                   delta=delta, snapshot_every=snapshot_every, commit_wait=commit_wait,
                   _where=where, _owns_client=True,
                   _thread_policy=_thread_policy)

    def _policy(self) -> tuple[str, str]:
        """(ttl, keep_last) as script arguments: this saver's ('0': none), or ('', ''):
        the policy recorded on the thread (a worker's saver)."""
        if self._thread_policy:
            return "", ""
        return str(self.ttl or 0), str(self.keep_last or 0)

    @property
    def client(self) -> Client:
        """The underlying redis-py client."""
        return self._conn.client

    def close(self) -> None:
        """Close the client if ``from_url`` made it; a client passed in is the caller's."""
        if self._owns_client:
            self._conn.client.close()

    def __enter__(self) -> RedisSaver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reads ---------------------------------------------------------------

    def get_tuple(self, config: Mapping[str, Any]) -> CheckpointTuple | None:
        """The checkpoint named by ``checkpoint_id``, or the latest: one round trip."""
        thread_id, ns, checkpoint_id = config_ids(config)
        found = self._load(thread_id, ns, [checkpoint_id] if checkpoint_id else [])
        return found[0] if found else None

    def get_tuple_for_run(self, config: Mapping[str, Any]) -> CheckpointTuple | None:
        """``get_tuple(config)`` with the thread marked "running": on a single Redis one
        script (``LOAD_RUNNING``: sent no keys, the namespace base, time and status
        bucket); on Redis Cluster (the status index is in another slot) the two calls.
        Not waited for by a commit wait, as neither call it stands for is."""
        if not self._compact:
            return super().get_tuple_for_run(config)
        thread_id, ns, checkpoint_id = config_ids(config)
        found = self._load(thread_id, ns, [checkpoint_id] if checkpoint_id else [],
                           running=True)
        return found[0] if found else None

    def queue_get_tuple(self, pipe: Any, config: Mapping[str, Any]) -> Any:
        """Queue ``get_tuple(config)``'s read on ``pipe`` (a pipeline another read shares:
        one round trip for both); ``tuple_from`` decodes its reply."""
        thread_id, ns, checkpoint_id = config_ids(config)
        nsk = ThreadKeys(self.prefix, thread_id).ns(ns)
        return self._conn.script("LOAD")(keys=[nsk.index, nsk.blobs],
                                         args=[nsk.base, *([checkpoint_id] if checkpoint_id
                                                           else [])], client=pipe)

    def tuple_from(self, config: Mapping[str, Any], reply: Any) -> CheckpointTuple | None:
        """What ``get_tuple(config)`` returns, from the reply of ``queue_get_tuple``."""
        thread_id, ns, _ = config_ids(config)
        found = self._decode(thread_id, ns, reply[:1])
        return found[0] if found else None

    def _load(
        self, thread_id: str, ns: str, ids: Sequence[str], *, running: bool = False,
    ) -> builtins.list[CheckpointTuple]:
        """Checkpoints ``ids`` of one namespace (the latest if none), values and writes
        included; ``running``: the thread marked running in the same script (single Redis)."""
        nsk = ThreadKeys(self.prefix, thread_id).ns(ns)
        if running:
            entries = self._conn.run("LOAD_RUNNING", [], [nsk.base, *stamp_args(thread_id), *ids],
                                     "read checkpoint and mark thread running")
        else:
            entries = self._conn.run(
                "LOAD", [nsk.index, nsk.blobs], [nsk.base, *ids], "read checkpoint"
            )
        return self._decode(thread_id, ns, entries)

    def _decode(
        self, thread_id: str, ns: str, entries: Sequence[Any]
    ) -> builtins.list[CheckpointTuple]:
        """LOAD's entries as checkpoint tuples, remembering the delta depth of each value
        read (so a commit over them plans its deltas without another round trip)."""
        tc = self.codec_of(thread_id, ns)
        depths: dict[tuple[str, int], int] = {}
        loaded = [decode_tuple(tc, entry, depths) for entry in entries]
        if len(self._depths) > _DEPTHS_KEPT:
            self._depths.clear()
        self._depths.update({(thread_id, ns, ch, v): d for (ch, v), d in depths.items()})
        return loaded

    def codec_of(self, thread_id: str, ns: str) -> ThreadCodec:
        """How values of ``thread_id``/``ns`` are signed for their place here."""
        return ThreadCodec(self.serde, self.prefix, thread_id, ns)

    def list(
        self,
        config: Mapping[str, Any] | None,
        *,
        filter: Mapping[str, Any] | None = None,
        before: Mapping[str, Any] | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        """Checkpoints newest first, a page at a time, across namespaces or threads.

        A config without ``checkpoint_ns`` covers every namespace of its thread;
        ``None`` covers every thread under this prefix (found with SCAN, so that
        one is an operator query, not a hot path).
        """
        if limit is not None and limit <= 0:
            return
        before_id = ((before or {}).get("configurable") or {}).get("checkpoint_id")
        page = PAGE_SIZE if filter or limit is None else min(limit, PAGE_SIZE)
        streams = [
            self._list_ns(thread_id, ns, before_id, filter, page)
            for thread_id, ns in self._scopes(config)
        ]
        merged = heapq.merge(*streams, key=lambda t: t.checkpoint.id, reverse=True)
        for count, item in enumerate(merged, start=1):
            yield item
            if limit is not None and count >= limit:
                return  # before pulling another item, which could fetch another page

    def _scopes(self, config: Mapping[str, Any] | None) -> builtins.list[tuple[str, str]]:
        """(thread, namespace) pairs a ``list`` call covers."""
        if config is not None:
            thread_id, ns, _ = config_ids(config)
            if "checkpoint_ns" in (config.get("configurable") or {}):
                return [(thread_id, ns)]
            return [
                (thread_id, n) for n in retention.namespaces(self._conn, self.prefix, thread_id)
            ]
        pattern = thread_record_pattern(self.prefix)
        raw = self._conn.call("list threads", lambda c: list(c.scan_iter(match=pattern, count=500)))
        threads = {thread_from_record_key(self.prefix, key.decode()) for key in raw}
        return [
            (t, n)
            for t in sorted(t for t in threads if t is not None)
            for n in retention.namespaces(self._conn, self.prefix, t)
        ]

    def _list_ns(
        self,
        thread_id: str,
        ns: str,
        before_id: str | None,
        filter: Mapping[str, Any] | None,
        page: int,
    ) -> Iterator[CheckpointTuple]:
        """One namespace's checkpoints, newest first: ids + metadata, then the matches."""
        nsk = ThreadKeys(self.prefix, thread_id).ns(ns)
        bound = f"({before_id}" if before_id else "+"
        while True:
            flat = self._conn.run("PAGE", [nsk.index], [nsk.base, bound, page], "list checkpoints")
            pairs = [(flat[i].decode(), flat[i + 1]) for i in range(0, len(flat), 2)]
            wanted = [
                cid
                for cid, meta in pairs
                if not filter or metadata_matches(page_metadata(meta, cid), filter)
            ]
            if wanted:
                yield from self._load(thread_id, ns, wanted)
            if len(pairs) < page:
                return
            bound = "(" + pairs[-1][0]

    # -- writes --------------------------------------------------------------

    def put(
        self,
        config: Mapping[str, Any],
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: Mapping[str, int],
        *,
        expect_latest: str | None = None,
        replaces: str | None = None,
        keep: str | None = None,
        parent: Checkpoint | None = None,
    ) -> dict[str, Any]:
        """Commit a checkpoint, its changed values and the thread record in one script.

        Only channels in ``new_versions`` are serialized and sent; the script checks
        that the values of the others are stored and, if one is not, writes nothing
        and names it so that it is sent on a second try. Everything is encoded
        before Redis is touched. A stale ``fence`` raises ``FencingError``.

        For distributed steps: ``expect_latest`` commits only while that checkpoint
        is the newest (else ``CommitConflictError``: another worker committed the
        step); ``replaces`` deletes that checkpoint in the same script (``exit``
        durability keeps no step history), sparing values ``keep`` still reads.
        ``parent`` (the whole checkpoint the step started from) makes changed list
        channels deltas against it, planned as the embedded loop plans them.

        A delta is committed only while its base value is stored (checked in the
        script); else the whole values are, or, for deltas planned by the caller,
        nothing (``CheckpointStoreError``).
        """
        return self.commit_step(config, checkpoint, metadata, new_versions, parent=parent,
                                expect_latest=expect_latest, replaces=replaces, keep=keep)[0]

    def put_applying(
        self,
        config: Mapping[str, Any],
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: Mapping[str, int],
        writes: HeldWrites,
    ) -> dict[str, Any]:
        """``BaseCheckpointSaver.put_applying``: the writes kept (outcomes, when the
        commit retires the ordinary ones) go in the commit's own script (``PUT_STEP``;
        outcomes replace their slots, so ``commit_step``'s one-execution rule for a
        task's ordinary writes does not apply to them)."""
        if not retires_parent_writes(config, metadata):  # as put_writes, then put
            return super().put_applying(config, checkpoint, metadata, new_versions, writes)
        w_config, task_id, task_writes = writes
        kept = self.kept_writes(config, metadata, task_writes)
        if not kept:
            return self.put(config, checkpoint, metadata, new_versions)
        return self.commit_step(config, checkpoint, metadata, new_versions,
                                task_writes=(w_config, task_id, kept))[0]

    def put_pair(
        self, first: PutArgs, second: PutArgs, writes: HeldWrites | None = None,
    ) -> dict[str, Any]:
        """``BaseCheckpointSaver.put_pair`` in one round trip and one script
        (``PUT_STEP``, as a producer's first job: ``commit_step(prior=...)``): the second
        extends the first (``EXTENDS_LATEST``), so were the first refused, the second
        writes nothing either and both are sent again one after the other. Writes held
        for the second that it keeps (outcomes), one after the other as ever."""
        if writes is not None and self.kept_writes(second[0], second[2], writes[2]):
            return super().put_pair(first, second, writes)
        return self.commit_step(*second, prior=Prior(first))[0]

    def commit_step(
        self, config: Mapping[str, Any], checkpoint: Checkpoint, metadata: CheckpointMetadata,
        new_versions: Mapping[str, int], *,
        task_writes: tuple[Mapping[str, Any], str, Sequence[tuple[str, Any]]] | None = None,
        parent: Checkpoint | None = None,
        ride: Rider | None = None,
        prior: Prior | None = None,
        **cas: str | None,
    ) -> tuple[dict[str, Any], str]:
        """``put`` (``cas``: its ``expect_latest``, ``replaces`` and ``keep``; ``parent``),
        and the run asked to stop at this step boundary ('' if none), read in the same
        script (``request_stop``): a distributed step's commit.

        ``task_writes`` (config, task id, writes): ``put_task_writes`` of the step's
        last task, run first in the commit's own script (``PUT_STEP``). Each of the two
        checks its own fence before its own writes, and the commit runs whatever the
        writes replied: writes refused (``fenced``, ``gone``) leave the commit to reply for
        itself, and a commit refused or failing after them leaves the writes stored, as
        when they were two scripts, the writes' first. ``ride``: more commands sent in
        the round trip of the (first) commit script, after it. ``prior``: a run's record
        and the ``put`` of the checkpoint this commit expects to be the newest or extends
        (its input), held back to be sent first in the same round trip, all in one MULTI
        (with ``ride`` after the commit; the puts in one script, ``PUT_STEP``):
        were the put refused, nothing of the commit is written either, and the put and
        the commit are sent again one after the other (``put``'s checks and errors
        apply). On Redis Cluster and with commit waits, one after the other at once.
        """
        expect_latest, replaces, keep = (cas.pop(k, None)
                                         for k in ("expect_latest", "replaces", "keep"))
        if cas:
            raise GraphTypeError(f"commit_step() got unexpected arguments {sorted(cas)}")
        if prior is not None and (task_writes is not None
                                  or not _follows(prior, config, expect_latest)
                                  or self._conn.commit_wait is not None
                                  or not isinstance(self._conn.client, redis.Redis)):
            prior.store(self)  # sent together only with a lone commit that expects it
            prior = None
        before = None
        if task_writes is not None:
            w_config, w_task, w_list = task_writes
            before = self._writes_call(w_config, w_list, w_task, None, whole=True)
        require_storable(checkpoint)
        whole = checkpoint
        if parent is not None:
            thread_id, ns, _ = config_ids(config)
            checkpoint = self._with_deltas(thread_id, ns, checkpoint, parent, new_versions)
        first = self._plan(*prior.put, ["", "", ""]) if prior is not None else None
        plan = self._plan(config, checkpoint, metadata, new_versions,
                          [expect_latest or "", replaces or "", keep or ""])
        if prior is not None and first is not None:  # the input planned first: its leaves
            replies = self._with_prior(prior, [first.call(first.blobs, first.required),
                                               plan.call(plan.blobs, plan.required)], ride)
            if replies[0][0] != b"ok":  # refused: so was the commit that expects it newest
                self.put(*prior.put)
                return self.commit_step(config, whole, metadata, new_versions, parent=parent,
                                        expect_latest=expect_latest, replaces=replaces,
                                        keep=keep, ride=ride)
            reply = replies[1]
            self._stored_depths(first.thread_id, first.ns, prior.put[1], prior.put[3])
        else:
            reply = self._commit(plan.call(plan.blobs, plan.required), before=before, ride=ride)
        if before is not None:
            written, reply = reply
            self._check_fence(written, config_ids(task_writes[0])[0], _fence(task_writes[0]))  # type: ignore[index]
        if reply[0] == b"missing":
            missing = {raw.decode() for raw in reply[1:]}
            if missing & set(plan.bases):
                if parent is None:
                    raise CheckpointStoreError(
                        f"commit to thread {plan.thread_id!r} rejected: the stored value a "
                        f"delta of channel {plan.bases[min(missing & set(plan.bases))]!r} "
                        "extends is gone (deleted meanwhile). Nothing was written; run the "
                        "thread again.")
                # the task's writes (if any) went in already; commit the whole values
                return self.commit_step(config, whole, metadata, new_versions,
                                        expect_latest=expect_latest, replaces=replaces, keep=keep)
            more = {ch: f for ch, f in plan.wanted.items() if f in missing}
            for found in (plan.held, *self._encode(plan.codec, checkpoint, more)):
                plan.blobs.update(found)  # every leaf's bytes this time, no hint trusted
            # still required: what was not sent now (kept in the parent's record, v9)
            reply = self._commit(plan.call(plan.blobs, [f for f in plan.required
                                                        if f not in plan.blobs]))
        committed = self._committed(reply, plan, expect_latest)
        self._stored_depths(plan.thread_id, plan.ns, checkpoint, new_versions)
        return committed

    def _stored_depths(
        self, thread_id: str, ns: str, stored: Checkpoint, new_versions: Mapping[str, int],
    ) -> None:
        """Remember the delta depth of each value a commit stored (``stored``: as stored,
        deltas and all), as reading them back would: the next commit over this
        checkpoint plans its deltas without reading it (a job adopted with the commit
        does not, see ``worker/eager``) and without another round trip."""
        if len(self._depths) > _DEPTHS_KEPT:
            self._depths.clear()
        self._depths.update({
            (thread_id, ns, ch, stored.channel_versions[ch]):
                value.depth if isinstance(value, ChannelDelta) else 0
            for ch, value in stored.channel_values.items() if ch in new_versions})

    def _with_prior(
        self, prior: Prior, calls: Sequence[tuple[str, Sequence[str], Sequence[Any]]],
        ride: Rider | None = None,
    ) -> builtins.list[Any]:
        """The replies of the PUT ``calls`` (one script, ``PUT_STEP``), sent after
        ``prior.run`` and before ``ride``'s commands (a producer's first job: see
        ``worker/firstjob``) in one MULTI (none for the script alone: ``put_pair``)."""
        conn = self._conn

        def go(client: Any) -> builtins.list[Any]:
            pipe = client.pipeline(transaction=prior.run is not None or ride is not None)
            if prior.run is not None:
                self._queue_run(pipe, *prior.run)
            name, keys, args = _one_script(calls)
            conn.script(name)(keys=list(keys), args=list(args), client=pipe)
            riding = len(ride.queue(pipe)) if ride is not None else 0
            replies = conn.execute(pipe)
            end = len(replies) - riding
            if ride is not None:
                ride.landed(replies[end:])
            return list(replies[end - 1])
        return conn.call("store run and input, commit checkpoint", go)

    def _committed(
        self, reply: Any, plan: _PutPlan, expect_latest: str | None
    ) -> tuple[dict[str, Any], str]:
        """``commit_step``'s answer from the PUT script's reply (its errors raised)."""
        thread_id = plan.thread_id
        self._check_fence(reply, thread_id, plan.fence)
        if reply[0] == b"gone":
            raise CommitConflictError(parent_gone(thread_id, str(plan.parent_id)))
        if reply[0] == b"conflict":
            raise CommitConflictError(
                f"commit to thread {thread_id!r} rejected: checkpoint {expect_latest} is no "
                f"longer the newest ({reply[1].decode()} is); another worker committed this "
                "step. Nothing was written."
            )
        stop = reply[1] if len(reply) > 1 else b""
        return checkpoint_config(thread_id, plan.ns, plan.checkpoint_id), stop.decode()

    def _plan(
        self, config: Mapping[str, Any], checkpoint: Checkpoint, metadata: CheckpointMetadata,
        new_versions: Mapping[str, int], cas: builtins.list[str],
    ) -> _PutPlan:
        """The PUT of ``checkpoint`` encoded (``cas``: expect, drop, keep), not sent yet."""
        thread_id, ns, parent_id = config_ids(config)
        tc = self.codec_of(thread_id, ns)
        wanted = blob_fields_of(checkpoint)
        changed = [ch for ch in wanted if ch in new_versions]
        bases = _delta_bases(checkpoint, changed)
        extends = parent_id if (config.get("configurable") or {}).get(EXTENDS_LATEST) else None
        blobs, held = self._encode(tc, checkpoint, {ch: wanted[ch] for ch in changed})
        inline = _inline(blobs, {ch: wanted[ch] for ch in changed
                                 if inlinable(checkpoint.channel_values[ch])})
        return _PutPlan(
            thread_id, ns, parent_id, checkpoint.id, _fence(config), tc, wanted, bases,
            blobs=blobs, held=held,
            required=[wanted[ch] for ch in wanted if ch not in new_versions],
            call=functools.partial(
                self._put_call, thread_id=thread_id, ns=ns, checkpoint_id=checkpoint.id,
                fence=_fence(config),
                cas=[*cas, _of_parent(_applied_parent(config, metadata, parent_id), parent_id),
                     _of_parent(extends or "", parent_id)],
                fields=checkpoint_fields(tc, checkpoint, metadata, parent_id, inline),
                carried=_carried(checkpoint, new_versions) if parent_id else []))

    def _with_deltas(
        self, thread_id: str, ns: str, checkpoint: Checkpoint, parent: Checkpoint,
        new_versions: Mapping[str, int],
    ) -> Checkpoint:
        """``checkpoint`` with changed list channels as deltas against ``parent``'s values."""
        if self.snapshot_every < 1:
            return checkpoint
        values = plan_values(
            checkpoint.channel_values, new_versions,
            (parent.channel_values, parent.channel_versions),
            depth_of=lambda ch, v: self.value_depth(thread_id, ns, ch, v),
            every=self.snapshot_every, depths={})
        return dataclasses.replace(checkpoint, channel_values=values)

    def _encode(
        self, tc: ThreadCodec, checkpoint: Checkpoint, fields: Mapping[str, str]
    ) -> tuple[dict[str, bytes], dict[str, bytes]]:
        """Blob field -> stored bytes for the given channels of ``checkpoint`` (their
        chain fields and the new leaves kept apart too: ``leafblobs``), and the same for
        the leaves the hints say are stored already (to require, not send)."""
        hints = self._leaf_hints
        split = self._dedup and (hints.knows(tc.thread_id, tc.ns) or START in fields)
        out, held, apart = encode_values(  # unless split, no leaf would go apart
            tc, {ch: checkpoint.channel_values[ch] for ch in fields},
            checkpoint.channel_versions, fields,
            hints.kept(tc.thread_id, tc.ns) if split else None)
        if apart:  # most commits keep none apart: no lock taken for them
            hints.add(tc.thread_id, tc.ns, apart)
        return out, held

    def value_depth(
        self, thread_id: str, checkpoint_ns: str, channel: str, version: int
    ) -> int | None:
        known = self._depths.get((thread_id, checkpoint_ns, channel, version))
        if known is not None:
            return known
        blobs = ThreadKeys(self.prefix, thread_id).ns(checkpoint_ns).blobs
        link = self._conn.run("VALUE_LINK", [blobs], [blob_field(channel, version)],
                              "read a value's delta depth")
        if link is None:
            return None
        return int(ormsgpack.unpackb(link)[1]) if link else 0

    def _put_call(
        self, blobs: Mapping[str, bytes], required: Sequence[str], *, thread_id: str, ns: str,
        checkpoint_id: str, fence: str, cas: Sequence[str], fields: Mapping[str, Any],
        carried: Sequence[str],
    ) -> tuple[str, builtins.list[str], builtins.list[Any]]:
        """The PUT script call (name, keys, args): fence check, value check, every write."""
        tk = ThreadKeys(self.prefix, thread_id)
        nsk = tk.ns(ns)
        keys = [] if self._compact else [tk.record, tk.lease, tk.namespaces, nsk.index,
                                         nsk.blobs, nsk.checkpoint(checkpoint_id)]
        now = time.time_ns() // 1000  # the script stores it as datetime.isoformat's text
        blob_args = _flatten(blobs)
        ttl, keep_last = self._policy()
        named = dict(zip(("expect", "drop", "keep", "applied", "extends"), cas, strict=True),
                     default_ttl=ttl, keep_last=keep_last, fence=fence, ns=ns)
        head = [named[name] for name in PUT_HEAD]
        while head and not head[-1]:
            head.pop()
        args: list[Any] = [checkpoint_id, nsk.base, now, ormsgpack.packb(head),
                           pack_record(fields, checkpoint_id), len(blob_args), *blob_args,
                           len(required), *required, *carried]
        return ("PUT", keys, args)

    def _commit(
        self, put: tuple[str, Sequence[str], Sequence[Any]], *,
        before: tuple[builtins.list[str], builtins.list[Any]] | None = None,
        ride: Rider | None = None,
    ) -> Any:
        """Run the PUT script ``put``: fence check, value check, then every write, atomically.

        ``before``: a PUT_WRITES call run first, in the same script (``PUT_STEP``); then
        the reply is ``PUT_STEP``'s: [its reply, PUT's reply]. ``ride``: commands sent
        just after."""
        call = put if before is None else _one_script([("PUT_WRITES", *before), put])
        action = "store pending writes and commit checkpoint" if before else "commit checkpoint"
        if ride is not None:
            return self._riding(call, ride, action)
        return self._conn.run(*call, action)

    def _riding(
        self, call: tuple[str, Sequence[str], Sequence[Any]], ride: Rider, action: str,
    ) -> Any:
        """The reply of the script ``call``, with ``ride``'s commands sent just after, in
        one round trip; in two when commits wait (the script waits as ``run`` does)."""
        conn = self._conn
        if conn.commit_wait is not None:
            reply = conn.run(*call, action)
            ride.landed(pipelined(conn, action, ride.queue))
            return reply
        name, keys, args = call

        def build(p: Any) -> builtins.list[Any]:
            return [conn.script(name)(keys=list(keys), args=list(args), client=p),
                    *ride.queue(p)]

        replies = pipelined(conn, action, build)
        ride.landed(replies[1:])
        return replies[0]

    def _check_fence(self, reply: Any, thread_id: str, fence: str) -> None:
        """Raise FencingError for a commit the script rejected as stale."""
        if reply[0] == b"fenced":
            raise FencingError(
                f"commit to thread {thread_id!r} rejected: fencing token {fence} is stale "
                f"(the lease is at generation {reply[1].decode()}); another owner took the "
                "thread over, so this one must stop. Nothing was written."
            )

    def put_writes(
        self,
        config: Mapping[str, Any],
        writes: Sequence[tuple[str, Any]],
        task_id: str,
    ) -> None:
        """Store a task's writes in ``task_id:idx`` slots: one script, all or nothing.

        Error, interrupt and resume writes replace their fixed slot; any other
        write keeps the first value stored, so a redelivered job changes nothing.
        """
        self._put_writes(config, writes, task_id, None, whole=False)

    def put_task_writes(
        self, config: Mapping[str, Any], writes: Sequence[tuple[str, Any]], task_id: str
    ) -> None:
        """``put_writes`` for a distributed job: a task's writes come from one execution.

        Slots keep their first value either way; here, once a task has writes, a
        second execution of it (a redelivered job) stores none of its own, so two
        executions are never mixed.
        """
        self._put_writes(config, writes, task_id, None, whole=True)

    def put_call_writes(
        self,
        config: Mapping[str, Any],
        writes: Sequence[tuple[str, Any]],
        call_id: str,
        caller: str,
        *,
        ends: tuple[str, float] | None = None,
    ) -> bytes | None:
        """``put_writes`` for a distributed ``@task`` call that ``caller`` may wait on.

        The write that finishes the last call a suspended caller waits on returns
        the job that replays the caller (see ``suspend``); any other returns None.
        ``ends`` (job key, idle TTL in seconds): the call's job, ended in the job book
        by the same script (``JobBook.end``), also when the write is fenced; on Redis
        Cluster (two slots) by a second call right after.
        """
        return self._put_writes(config, writes, call_id, caller, whole=True, ends=ends)

    def call_writes_script(
        self, config: Mapping[str, Any], writes: Sequence[tuple[str, Any]], call_id: str,
        caller: str, ends: tuple[str, float],
    ) -> tuple[builtins.list[str], builtins.list[Any]] | None:
        """The keys and arguments of the ``PUT_CALL_WRITES`` script ``put_call_writes``
        runs (the writes encoded now), to run later with others (``land_call_writes``);
        None where it cannot run so (Redis Cluster, or commits that wait for replicas)."""
        if self._conn.commit_wait is not None or not isinstance(self._conn.client, redis.Redis):
            return None
        call = self._writes_call(config, writes, call_id, caller, whole=True)
        return None if call is None else self._ending(call, config_ids(config)[0], ends)

    def _ending(
        self, call: tuple[builtins.list[str], builtins.list[Any]], thread_id: str,
        ends: tuple[str, float],
    ) -> tuple[builtins.list[str], builtins.list[Any]]:
        """``PUT_CALL_WRITES``'s keys and arguments: PUT_WRITES's ``call``, and the end of
        the job ``ends`` (job key, idle TTL in seconds)."""
        keys, args = call
        return ([*jobs_of(self.prefix, thread_id).ordered(), *keys],
                [ends[0], thread_id, int(ends[1] * 1000), *args])

    def land_call_writes(
        self, calls: Sequence[tuple[Mapping[str, Any], tuple[builtins.list[str],
                                                             builtins.list[Any]]]],
    ) -> builtins.list[bytes | FencingError | None]:
        """Run the ``call_writes_script``s of several calls (config, script) in one round
        trip, each atomic on its own: per call, what ``put_call_writes`` returns (the
        caller's wake job, or None) or the FencingError it raises (its job ended all the
        same)."""
        replies = self._conn.run_many([("PUT_CALL_WRITES", keys, args) for _, (keys, args)
                                       in calls], "store calls' results and end their jobs")
        out: builtins.list[bytes | FencingError | None] = []
        for (config, _), reply in zip(calls, replies, strict=True):
            try:
                self._check_fence(reply, config_ids(config)[0], _fence(config))
            except FencingError as exc:
                out.append(exc)
                continue
            out.append(bytes(reply[1]) if len(reply) > 1 else None)
        return out

    def _put_writes(
        self,
        config: Mapping[str, Any],
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        caller: str | None,
        *,
        whole: bool,
        ends: tuple[str, float] | None = None,
    ) -> bytes | None:
        call = self._writes_call(config, writes, task_id, caller, whole=whole)
        if call is None:
            return None
        thread_id = config_ids(config)[0]
        reply = self._run_writes(call, thread_id, ends)
        self._check_fence(reply, thread_id, _fence(config))
        return bytes(reply[1]) if len(reply) > 1 else None

    def _run_writes(
        self, call: tuple[builtins.list[str], builtins.list[Any]], thread_id: str,
        ends: tuple[str, float] | None,
    ) -> Any:
        """PUT_WRITES's reply; with ``ends``, the job ended in the same script (one round
        trip), or right after it on Redis Cluster (another slot)."""
        if ends is None:
            return self._conn.run("PUT_WRITES", *call, "store pending writes")
        if isinstance(self._conn.client, RedisCluster):
            reply = self._conn.run("PUT_WRITES", *call, "store pending writes")
            self._conn.run("END_JOB", jobs_of(self.prefix, thread_id).ordered(),
                           [ends[0], thread_id, int(ends[1] * 1000)], "end job")
            return reply
        return self._conn.run("PUT_CALL_WRITES", *self._ending(call, thread_id, ends),
                              "store a call's result and end its job")

    def _writes_call(
        self, config: Mapping[str, Any], writes: Sequence[tuple[str, Any]], task_id: str,
        caller: str | None, *, whole: bool,
    ) -> tuple[builtins.list[str], builtins.list[Any]] | None:
        """Keys and arguments of the PUT_WRITES script (encoded); None: nothing to do."""
        thread_id, ns, checkpoint_id = config_ids(config)
        if checkpoint_id is None:
            raise GraphValueError("put_writes needs a config with a checkpoint_id")
        fence = _fence(config)
        encoded = encode_writes(self.codec_of(thread_id, ns), checkpoint_id, writes, task_id)
        if not encoded and not fence and caller is None:
            return None
        tk = ThreadKeys(self.prefix, thread_id)
        nsk = tk.ns(ns)
        keys = [tk.lease, nsk.writes(checkpoint_id), tk.record, nsk.checkpoint(checkpoint_id),
                nsk.index]
        args: list[Any] = [fence, self._policy()[0], task_id if caller else "",
                           "1" if whole else "0", checkpoint_id]
        if caller:
            keys += [nsk.waits(checkpoint_id, caller), nsk.wake(checkpoint_id, caller)]
        for slot, replaces, value in encoded:
            args += [slot, "1" if replaces else "0", value]
        return keys, args

    def finished(self, config: Mapping[str, Any], task_ids: Sequence[str]) -> set[str]:
        """Which of ``task_ids`` have an outcome stored for the config's checkpoint."""
        thread_id, ns, checkpoint_id = config_ids(config)
        if checkpoint_id is None:
            raise GraphValueError("finished() needs a config with a checkpoint_id")
        if not task_ids:
            return set()
        key = ThreadKeys(self.prefix, thread_id).ns(ns).writes(checkpoint_id)
        done = self._conn.run("FINISHED", [key], list(task_ids), "read finished tasks")
        return {raw.decode() for raw in done}

    def finished_read(self, config: Mapping[str, Any], task_ids: Sequence[str]) -> Finished:
        """``finished(config, task_ids)``'s read, to queue on a pipeline another read shares
        (or to fold into a job's claim); its reply decodes with ``{raw.decode() for raw in
        reply}``."""
        thread_id, ns, checkpoint_id = config_ids(config)
        if checkpoint_id is None:
            raise GraphValueError("finished() needs a config with a checkpoint_id")
        key = ThreadKeys(self.prefix, thread_id).ns(ns).writes(checkpoint_id)
        return Finished(self._conn, key, tuple(task_ids))

    def clear_outcomes(self, config: Mapping[str, Any], task_ids: Sequence[str]) -> None:
        """Forget the error and interrupt outcomes of tasks about to run again."""
        thread_id, ns, checkpoint_id = config_ids(config)
        if checkpoint_id is None:
            raise GraphValueError("clear_outcomes() needs a config with a checkpoint_id")
        tk = ThreadKeys(self.prefix, thread_id)
        slots = [write_field(t, WRITES_IDX_MAP[ch]) for t in task_ids for ch in (ERROR, INTERRUPT)]
        fence = _fence(config)
        reply = self._conn.run("CLEAR_OUTCOMES", [tk.lease, tk.ns(ns).writes(checkpoint_id)],
                               [fence, *slots], "clear task outcomes")
        if reply == b"fenced":
            raise FencingError(f"clearing outcomes of thread {thread_id!r} refused: fencing "
                               f"token {fence} is stale")

    def suspend(
        self, config: Mapping[str, Any], task_id: str, calls: Sequence[str], wake: bytes,
        ttl: int,
    ) -> bool:
        """Park a task until ``calls`` finish; False if they already have (replay now).

        ``wake`` is the job that replays the task; the write that finishes its last
        call takes it (``put_writes(caller=...)``). Kept for ``ttl`` seconds.
        """
        thread_id, ns, checkpoint_id = config_ids(config)
        if checkpoint_id is None:
            raise GraphValueError("suspend() needs a config with a checkpoint_id")
        tk = ThreadKeys(self.prefix, thread_id)
        nsk = tk.ns(ns)
        keys = [nsk.writes(checkpoint_id), nsk.waits(checkpoint_id, task_id),
                nsk.wake(checkpoint_id, task_id), tk.lease]
        fence = _fence(config)
        reply = bytes(self._conn.run("SUSPEND", keys, [wake, ttl, fence, *calls],
                                     "suspend task"))
        if reply == b"fenced":
            raise FencingError(f"suspending a task of thread {thread_id!r} refused: fencing "
                               f"token {fence} is stale")
        return reply == b"waiting"

    # -- retention -----------------------------------------------------------

    def delete_thread(self, thread_id: str) -> None:
        """Delete every checkpoint, value, write and the record of a thread."""
        self._depths.clear()  # what this saver read may be gone
        retention.delete_thread(self._conn, self.prefix, str(thread_id))
        self._threads.unindex(str(thread_id))

    def delete_checkpoints(self, thread_id: str, checkpoint_ns: str, ids: Sequence[str]) -> None:
        """Delete these checkpoints, their writes, and values no other checkpoint reads."""
        self._depths.clear()  # what this saver read may be gone
        retention.delete_checkpoints(self._conn, self.prefix, str(thread_id), checkpoint_ns,
                                     builtins.list(ids))

    def prune_thread(self, thread_id: str, keep: int) -> int:
        """Keep the newest ``keep`` checkpoints per namespace and all they need (a script each)."""
        self._depths.clear()  # what this saver read may be gone
        return retention.prune(self._conn, self.prefix, thread_id, keep)

    def set_ttl(self, thread_id: str, seconds: int | None) -> None:
        """Expire the thread ``seconds`` after its last commit (or after this call).

        ``None`` drops the thread's own TTL: the saver's ``ttl`` (as last recorded on
        the thread by a commit) applies again, else the thread is kept forever.
        """
        retention.set_ttl(self._conn, self.prefix, str(thread_id),
                          check_ttl(seconds, "seconds"))

    def list_ids(self, thread_id: str) -> Iterator[CheckpointRef]:
        """Every checkpoint of a thread newest first, as ids and parents (no values)."""
        refs = [
            CheckpointRef(ns, checkpoint_id, parent)
            for ns in retention.namespaces(self._conn, self.prefix, str(thread_id))
            for checkpoint_id, parent in retention.ids_of(
                self._conn, self.prefix, str(thread_id), ns)
        ]
        return iter(sorted(refs, key=lambda r: (r.checkpoint_id, r.checkpoint_ns), reverse=True))

    # -- thread records ------------------------------------------------------

    def set_status(
        self, thread_id: str, status: ThreadStatus, error: BaseException | None = None,
        *, next_nodes: Sequence[str] | None = None,
    ) -> None:
        """Record a thread's run status (the error that failed it, the nodes it waits
        to run) for operators."""
        self._threads.set_status(thread_id, status, error, next_nodes=next_nodes)

    def close_run(
        self, lease: Lease, status: ThreadStatus, error: BaseException | None,
        next_nodes: Sequence[str] | None, event: RunEnd,
    ) -> bool | None:
        """End a distributed run in one round trip (see ``ThreadRecords.close_run``):
        True done, False the lease was taken over, None not on Redis Cluster."""
        return self._threads.close_run(lease, status, error, next_nodes, event)

    def queue_close_run(
        self, pipe: Any, lease: Lease, status: ThreadStatus, next_nodes: Sequence[str] | None,
        event: RunEnd, *, at: str,
    ) -> Any:
        """Queue ``close_run`` (no error) on ``pipe``, conditional on checkpoint ``at``
        being the thread's newest (see ``ThreadRecords.queue_close``); None on Cluster."""
        return self._threads.queue_close(pipe, lease, status, next_nodes, event, at=at)

    def get_status(self, thread_id: str) -> dict[str, Any] | None:
        """The thread's record (status, last checkpoint, last error), or None."""
        return self._threads.get_status(thread_id)

    def get_statuses(self, thread_ids: Sequence[str]) -> builtins.list[dict[str, Any] | None]:
        """The records of many threads in one round trip."""
        return self._threads.get_statuses(thread_ids)

    def set_run(
        self, thread_id: str, sealed: str, graph: str = "", *,
        status: ThreadStatus | None = None,
    ) -> None:
        """Keep the sealed description of the thread's distributed run (workers resume it);
        ``status``: ``set_status`` in the same round trip.

        With a signing serializer the record is also signed for its place (this
        prefix and thread), so a run record copied to another thread is refused.
        """
        self._threads.set_run(thread_id, *self._run_fields(thread_id, sealed, graph),
                              status=status)

    def _run_fields(
        self, thread_id: str, sealed: str, graph: str
    ) -> tuple[str, str, dict[str, str]]:
        """``set_run``'s record fields: the run bound to its place, graph, policy."""
        bound = bind_run(self.codec_of(str(thread_id), ""), sealed)
        ttl, keep_last = self._policy()
        return bound, graph, {"policy_ttl": ttl, "keep_last": keep_last} if ttl else {}

    def _queue_run(self, pipe: Any, thread_id: str, sealed: str, graph: str) -> None:
        """``set_run(..., status="running")`` queued on ``pipe`` (a MULTI)."""
        self._threads.queue_run(pipe, thread_id, *self._run_fields(thread_id, sealed, graph),
                                status="running")

    def request_stop(self, thread_id: str, run_id: str) -> None:
        """Ask run ``run_id`` of the thread to stop at its next step boundary."""
        self._threads.request_stop(thread_id, run_id)

    def stop_requested(self, thread_id: str) -> str | None:
        """The run of the thread asked to stop at its next step boundary, if any."""
        return self._threads.stop_requested(thread_id)

    def get_run(self, thread_id: str) -> str | None:
        """The sealed description of the thread's last distributed run, or None.

        SignatureError when it was moved here from another thread or altered.
        """
        raw = self._threads.get_run(thread_id)
        return None if raw is None else unbind_run(self.codec_of(str(thread_id), ""), raw)

    @property
    def conn(self) -> RedisConn:
        """The client with error translation and registered scripts (for the worker)."""
        return self._conn

    def list_threads(self, status: ThreadStatus | None = None) -> builtins.list[str]:
        """Thread ids with ``status`` (any if None), most recently updated first."""
        return self._threads.list_threads(status)
