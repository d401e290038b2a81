"""The checkpoint format and the saver contract every store implements.

A checkpoint is the state of one thread after one superstep: channel values, their
versions, the versions each node has seen (so planning knows what is triggered),
and, stored beside it, the pending writes that tasks of its next superstep already
produced. Writes are keyed by (task id, write index): a task delivered twice lands
in the same slot, so a retried or replayed job changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple, TypedDict, get_args

from durable_graph.errors import GraphValueError
from durable_graph.store import retention

__all__ = [
    "ERROR",
    "EXTENDS_LATEST",
    "INTERRUPT",
    "NO_WRITES",
    "NULL_TASK_ID",
    "RESUME",
    "RETURN",
    "SCHEDULED",
    "SPECIAL_WRITES",
    "WRITES_IDX_MAP",
    "BaseCheckpointSaver",
    "Checkpoint",
    "CheckpointMetadata",
    "CheckpointTuple",
    "HeldWrites",
    "PendingWrite",
    "PutArgs",
    "ThreadStatus",
    "checkpoint_config",
    "config_ids",
    "empty_checkpoint",
    "new_checkpoint_id",
    "require_storable",
    "retires_parent_writes",
    "thread_id_of",
]

ERROR = "__error__"
"""Write channel: the exception a task raised."""
INTERRUPT = "__interrupt__"
"""Write channel: the interrupts a task raised."""
RESUME = "__resume__"
"""Write channel: resume values for a task's interrupts, in call order."""
RETURN = "__return__"
"""Write channel: the return value of a ``@task`` call."""
NO_WRITES = "__no_writes__"
"""Write channel: marks a task that finished without writing anything."""
EXTENDS_LATEST = "extends_latest"
"""Config key of a ``put`` that must extend the thread's latest checkpoint (one writer).

The engine's loop sets it on every commit; a store that can check it in its write
transaction (``SqliteSaver``) refuses a commit whose parent is no longer the latest
with ``CommitConflictError``. Plain ``put`` calls (LangGraph's own loop through the
adapter, copies, imports) do not set it and are stored as given.
"""
NULL_TASK_ID = "00000000-0000-0000-0000-000000000000"
"""Task id of writes that come from outside any task (``Command`` input)."""

SCHEDULED = "__scheduled__"
"""Write channel LangGraph uses for its scheduled-task slot (kept for the LangGraph adapter)."""

WRITES_IDX_MAP: Mapping[str, int] = {ERROR: -1, SCHEDULED: -2, INTERRUPT: -3, RESUME: -4}
"""Writes to these channels take a fixed slot and replace what was there."""
SPECIAL_WRITES = frozenset({ERROR, INTERRUPT, RESUME})
"""Writes that do not mean the task finished."""

ThreadStatus = Literal["running", "interrupted", "failed", "done", "cancelled"]


class CheckpointMetadata(TypedDict, total=False):
    """Why and when a checkpoint was written."""

    source: Literal["input", "loop", "update", "fork"]
    """What wrote it: the run's input, a superstep, update_state, or a fork."""
    step: int
    """Superstep number: -1 for the first input, then 0, 1, ..."""
    parents: dict[str, str]
    """Checkpoint ids of the enclosing graphs, by namespace (subgraphs)."""


@dataclass(frozen=True)
class Checkpoint:
    """Channel values and versions of one thread after one superstep."""

    id: str
    """Time-ordered unique id; later checkpoints sort after earlier ones."""
    ts: str
    """ISO-8601 time of creation."""
    channel_values: dict[str, Any]
    """Value of each channel that holds one."""
    channel_versions: dict[str, int]
    """Version of each channel; bumped whenever its value changes."""
    versions_seen: dict[str, dict[str, int]]
    """Per node, the version of each trigger channel it last ran on."""
    v: int = 1
    """Format version of this record."""


PutArgs = tuple[dict[str, Any], Checkpoint, CheckpointMetadata, dict[str, int]]
"""The arguments of a saver's ``put`` (config, checkpoint, metadata, new versions), as a
caller holds a write back to send it with a later one (``Persister.hold``)."""

HeldWrites = tuple[dict[str, Any], str, Sequence[tuple[str, Any]]]
"""A task's writes as ``put_writes`` takes them (config, task id, writes), held back by
a caller to hand them to the commit that applies them (``put_applying``)."""


class PendingWrite(NamedTuple):
    """One write a task produced for the next superstep of a checkpoint."""

    task_id: str
    channel: str
    value: Any


@dataclass(frozen=True)
class CheckpointTuple:
    """A stored checkpoint with its config, metadata, parent and pending writes."""

    config: dict[str, Any]
    """Config addressing this checkpoint."""
    checkpoint: Checkpoint
    """The checkpoint itself."""
    metadata: CheckpointMetadata
    """Why and when it was written."""
    parent_config: dict[str, Any] | None = None
    """Config of the checkpoint it follows, if any."""
    pending_writes: list[PendingWrite] = field(default_factory=list)
    """Writes already produced by tasks of its next superstep."""


class _MonotonicClock:
    """Nanosecond timestamps that never repeat or go back within this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = 0

    def now(self) -> int:
        with self._lock:
            self._last = max(time.time_ns(), self._last + 1)
            return self._last


_CLOCK = _MonotonicClock()


def new_checkpoint_id(after: str | None = None) -> str:
    """A UUID-shaped id whose text sorts by creation time (monotonic in-process).

    The first 64 bits are nanoseconds since the epoch, the rest random, so ids from
    different processes interleave by time and never collide. ``after`` (the parent)
    makes the id sort after it even when this machine's clock is behind the one that
    made the parent: a thread's history stays in order across skewed workers.
    """
    now = _CLOCK.now()
    if after:
        with contextlib.suppress(ValueError):  # an id not made here: this clock alone
            now = max(now, (uuid.UUID(after).int >> 64) + 1)
    return str(uuid.UUID(int=(now << 64) | int.from_bytes(os.urandom(8), "big")))


def empty_checkpoint() -> Checkpoint:
    """The checkpoint of a thread that has never run."""
    return Checkpoint(
        id=new_checkpoint_id(),
        ts=datetime.now(UTC).isoformat(),
        channel_values={},
        channel_versions={},
        versions_seen={},
    )


def thread_id_of(value: Any) -> str:
    """A ``thread_id`` as stored: str as is, int and UUID as their text (as LangGraph).

    So ``1`` and ``"1"`` name one thread, as in LangGraph. Any other type (bytes,
    float, bool, dict, ...) raises GraphValueError: its text would name a thread
    nobody meant (``b"abc"`` would become ``"b'abc'"``).
    """
    if isinstance(value, str):
        return value
    if isinstance(value, int | uuid.UUID) and not isinstance(value, bool):
        return str(value)
    raise GraphValueError(
        f"thread_id must be a str, int or UUID, got {type(value).__name__} "
        f"{repr(value)[:40]}; pass e.g. config={{'configurable': {{'thread_id': 'order-42'}}}}."
    )


def config_ids(config: Mapping[str, Any] | None) -> tuple[str, str, str | None]:
    """(thread_id, checkpoint_ns, checkpoint_id) of a config, with a clear error if unusable."""
    conf = (config or {}).get("configurable") or {}
    thread_id = conf.get("thread_id")
    if thread_id is None or thread_id == "":
        raise GraphValueError(
            "A checkpointer needs a thread id: pass "
            "config={'configurable': {'thread_id': '...'}} to invoke, stream or get_state."
        )
    return thread_id_of(thread_id), str(conf.get("checkpoint_ns", "")), conf.get("checkpoint_id")


def require_storable(checkpoint: Checkpoint) -> None:
    """GraphValueError when a channel holds a value but has no version to store it under,
    or a channel name or a text version holds a NUL: SQLite's JSON functions, which find
    a checkpoint's values and walk its delta chains, read text only up to a NUL, so such
    a channel's value would be lost (every saver refuses it alike; the engine's versions
    are integers, LangGraph's integers or digits and dots), or a text version holds a lone
    surrogate, which is no UTF-8 text. Also when the checkpoint's id
    holds a NUL or a byte 1: Redis's id pages end an id at the first (redis-v11)."""
    if "\x00" in checkpoint.id or "\x01" in checkpoint.id:
        raise GraphValueError(
            f"checkpoint id {checkpoint.id!r} holds a NUL or \\x01 character, which no saver "
            "stores: use ids of printable text (new_checkpoint_id); nothing was stored")
    unversioned = set(checkpoint.channel_values) - set(checkpoint.channel_versions)
    if unversioned:
        raise GraphValueError(f"channels without a version: {sorted(unversioned)}")
    stored: Mapping[str, object] = checkpoint.channel_versions  # typed int; any may come
    for channel, version in stored.items():
        if "\x00" in channel:
            raise GraphValueError(
                f"channel {channel!r} has a NUL character in its name, which no saver "
                "stores: rename the state key; nothing was stored")
        if isinstance(version, str) and not _storable_version(version):
            raise GraphValueError(
                f"channel {channel!r} has version {version!r}, text holding a NUL character "
                "or a lone surrogate, which no saver stores: use integers or text without "
                "NUL (get_next_version); nothing was stored")


def _storable_version(text: str) -> bool:
    """Whether every saver stores a text version as it is: no NUL (SQLite's JSON functions
    end text there), and UTF-8 encodable (a lone surrogate is not: SQLite and Redis keep a
    version in UTF-8 text, a blob's name)."""
    if "\x00" in text:
        return False
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def retires_parent_writes(config: Mapping[str, Any], metadata: Mapping[str, Any]) -> bool:
    """Whether a ``put`` retires its parent's ordinary pending writes (when it is the latest).

    A step of the engine's loop (``EXTENDS_LATEST``, source ``loop``) holds its parent's
    writes applied, as values (so as deltas): keeping them too would store each step's
    output twice. Outcomes stay: errors, interrupts and resume values (negative slots),
    which history shows and a resume reads. Inputs, branches, copies and the workers'
    step commits (which find finished tasks by their writes) keep every write.
    """
    return bool((config.get("configurable") or {}).get(EXTENDS_LATEST)) \
        and metadata.get("source") == "loop"


def checkpoint_config(thread_id: str, ns: str, checkpoint_id: str) -> dict[str, Any]:
    """The config that addresses one checkpoint."""
    return {
        "configurable": {
            "thread_id": thread_id,
            "checkpoint_ns": ns,
            "checkpoint_id": checkpoint_id,
        }
    }


class BaseCheckpointSaver(ABC):
    """The saver contract: read, list and write checkpoints and their pending writes.

    Implementations must be safe to call from several threads at once. Async
    methods run the sync ones on a worker thread unless a saver overrides them.
    """

    snapshot_every: int = 0
    """Deltas between whole values of a list channel (0: this saver stores whole values)."""
    ttl: int | None = None
    """Retention policy: seconds a thread lives after its last commit (None: forever)."""
    keep_last: int | None = None
    """Retention policy: checkpoints each commit keeps in its namespace (None: all)."""
    retires_applied_writes: bool = False
    """Whether a ``put`` that ``retires_parent_writes`` deletes the parent's ordinary
    writes when the parent is the latest (errors, interrupts and resume values stay)."""

    def value_depth(
        self, thread_id: str, checkpoint_ns: str, channel: str, version: int
    ) -> int | None:
        """Deltas a read of this stored value replays (0: whole), or None if not stored."""
        return None

    @abstractmethod
    def get_tuple(self, config: Mapping[str, Any]) -> CheckpointTuple | None:
        """The checkpoint named by ``checkpoint_id``, or the thread's latest one."""

    def get_tuple_for_run(self, config: Mapping[str, Any]) -> CheckpointTuple | None:
        """What a run reads as it starts: ``get_tuple(config)``, then the thread (not the
        namespace: a status is per thread) marked ``"running"`` with ``set_status``.

        A saver may do both in one call (``RedisSaver`` on a single Redis: one script);
        the result and the status it leaves are those of the two calls in this order.
        """
        saved = self.get_tuple(config)
        self.set_status(config_ids(config)[0], "running")
        return saved

    @abstractmethod
    def list(
        self,
        config: Mapping[str, Any] | None,
        *,
        filter: Mapping[str, Any] | None = None,
        before: Mapping[str, Any] | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        """Checkpoints of a thread (and namespace), newest first.

        ``filter`` keeps those whose metadata has every given key/value; ``before``
        keeps those older than the checkpoint it names; ``limit`` caps the count.
        """

    def list_ids(self, thread_id: str) -> Iterator[retention.CheckpointRef]:
        """Every checkpoint of a thread (all namespaces) newest first, as ids only.

        What ``prune`` decides on; stores override it to read no values. This
        default loads each checkpoint through ``list``.
        """
        return retention.refs_of(self.list({"configurable": {"thread_id": str(thread_id)}}))

    @abstractmethod
    def put(
        self,
        config: Mapping[str, Any],
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: Mapping[str, int],
    ) -> dict[str, Any]:
        """Store ``checkpoint`` as the child of the one ``config`` names.

        ``new_versions`` lists the channels whose values changed since the parent;
        a store may keep the other values by reference. Returns the new config.
        """

    @abstractmethod
    def put_writes(
        self,
        config: Mapping[str, Any],
        writes: Sequence[tuple[str, Any]],
        task_id: str,
    ) -> None:
        """Store a task's writes against the checkpoint ``config`` names.

        A write to a channel of ``WRITES_IDX_MAP`` replaces its slot; other writes
        keep the first value stored in their (task_id, index) slot. A write to a
        checkpoint that is gone while a newer one of its namespace is stored (pruned or
        deleted: a late duplicate of a task whose step was committed) stores nothing,
        so it cannot leak; one to a checkpoint not stored yet is kept.
        """

    def put_applying(
        self,
        config: Mapping[str, Any],
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: Mapping[str, int],
        writes: HeldWrites,
    ) -> dict[str, Any]:
        """``put`` of a checkpoint that applies ``writes``: a task's writes against its
        parent that the caller held back instead of storing them first.

        Only the writes the store keeps once this commit lands (``kept_writes``) are
        stored, before the checkpoint (a store may send both in one round trip); those
        the commit would retire at once are not sent at all. The store then holds what
        ``put_writes`` then ``put`` leave, but where a store retires nothing because the
        parent is no longer the latest (Redis, under a concurrent writer): that parent
        is left without those ordinary writes.
        """
        w_config, task_id, task_writes = writes
        kept = self.kept_writes(config, metadata, task_writes)
        if kept:
            self.put_writes(w_config, kept, task_id)
        return self.put(config, checkpoint, metadata, new_versions)

    def put_pair(
        self, first: PutArgs, second: PutArgs, writes: HeldWrites | None = None,
    ) -> dict[str, Any]:
        """Store two consecutive checkpoints: ``put(*first)``, then ``second``, whose
        config names ``first``'s checkpoint as its parent (``put_applying`` when
        ``writes``, a task's writes against ``first``, were held back for it). Returns
        the second's config.

        The engine's loop stores a run's input checkpoint and its first step's this way
        (``Persister``): a store may send both in one round trip (Redis: one script).
        The effects and errors are those of the two calls in order: if ``first`` is
        refused or fails, its error is raised and nothing of ``second`` (or of
        ``writes``) is stored.
        """
        self.put(*first)
        if writes is not None:
            return self.put_applying(*second, writes)
        return self.put(*second)

    def kept_writes(
        self, config: Mapping[str, Any], metadata: CheckpointMetadata,
        writes: Sequence[tuple[str, Any]],
    ) -> Sequence[tuple[str, Any]]:
        """Those of ``writes`` (to the parent of a ``put(config, ..., metadata, ...)``)
        this store keeps once that put is committed: all, or, when the put retires its
        parent's ordinary writes, the outcomes (errors, interrupts, resume values)."""
        if self.retires_applied_writes and retires_parent_writes(config, metadata):
            return [w for w in writes if w[0] in WRITES_IDX_MAP]
        return list(writes)

    @abstractmethod
    def delete_thread(self, thread_id: str) -> None:
        """Delete every checkpoint and write of a thread."""

    def delete_checkpoints(self, thread_id: str, checkpoint_ns: str, ids: Sequence[str]) -> None:
        """Delete these checkpoints of one namespace with their writes and unread values.

        The one primitive behind ``prune``, ``delete_for_runs`` and retention policies.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot delete single checkpoints")

    def prune(
        self,
        thread_ids: str | Sequence[str],
        *,
        strategy: str = "keep_latest",
        keep_last: int | None = None,
    ) -> int:
        """Keep the newest checkpoint (or ``keep_last``) of each namespace; the count deleted.

        LangGraph's signature: ``strategy="keep_latest"`` keeps one per namespace,
        ``"delete"`` deletes the threads. A single id may be given as a string.
        """
        keep = retention.keep_count(strategy, keep_last)
        removed = 0
        for thread_id in retention.thread_ids_of(thread_ids):
            if keep == 0:
                removed += sum(1 for _ in self.list_ids(thread_id))
                self.delete_thread(thread_id)
            else:
                removed += self.prune_thread(thread_id, keep)
        return removed

    def prune_thread(self, thread_id: str, keep: int) -> int:
        """Delete all but the newest ``keep`` checkpoints of each namespace; the count.

        Stores with a faster way (one script per namespace) override this.
        """
        removed = 0
        for ns, ids in retention.prune_plan(self, thread_id, keep).items():
            self.delete_checkpoints(thread_id, ns, ids)
            removed += len(ids)
        return removed

    def set_ttl(self, thread_id: str, seconds: int | None) -> None:
        """Expire the thread ``seconds`` after its last commit (or after this call).

        ``None`` drops the thread's own TTL: the saver's ``ttl`` (if any) applies again.
        """
        raise NotImplementedError(f"{type(self).__name__} keeps no thread TTLs")

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy every checkpoint and pending write of one thread to another (LangGraph's API)."""
        retention.copy_thread(self, str(source_thread_id), str(target_thread_id))

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Delete the checkpoints whose metadata ``run_id`` is one of ``run_ids`` (all threads)."""
        retention.delete_for_runs(self, run_ids)

    def set_status(
        self,
        thread_id: str,
        status: ThreadStatus,
        error: BaseException | None = None,
    ) -> None:
        """Record a thread's run status for operators.

        Stores without an operator view of threads keep nothing; the default
        checks its arguments and keeps nothing, because the checkpoints themselves
        stay the source of truth.
        """
        if status not in get_args(ThreadStatus):
            raise GraphValueError(
                f"unknown thread status {status!r}; use one of {get_args(ThreadStatus)}")

    def get_status(self, thread_id: str) -> dict[str, Any] | None:
        """A thread's run status record, or None where the store keeps none."""
        return None

    async def aget_tuple(self, config: Mapping[str, Any]) -> CheckpointTuple | None:
        """Async ``get_tuple``."""
        return await asyncio.to_thread(self.get_tuple, config)

    async def alist(
        self,
        config: Mapping[str, Any] | None,
        *,
        filter: Mapping[str, Any] | None = None,
        before: Mapping[str, Any] | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        """Async ``list``."""
        items = await asyncio.to_thread(
            lambda: list(self.list(config, filter=filter, before=before, limit=limit))
        )
        for item in items:
            yield item

    async def aput(
        self,
        config: Mapping[str, Any],
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: Mapping[str, int],
    ) -> dict[str, Any]:
        """Async ``put``."""
        return await asyncio.to_thread(self.put, config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self,
        config: Mapping[str, Any],
        writes: Sequence[tuple[str, Any]],
        task_id: str,
    ) -> None:
        """Async ``put_writes``."""
        await asyncio.to_thread(self.put_writes, config, writes, task_id)

    async def adelete_thread(self, thread_id: str) -> None:
        """Async ``delete_thread``."""
        await asyncio.to_thread(self.delete_thread, thread_id)

    async def aprune(
        self,
        thread_ids: str | Sequence[str],
        *,
        strategy: str = "keep_latest",
        keep_last: int | None = None,
    ) -> int:
        """Async ``prune``."""
        return await asyncio.to_thread(
            lambda: self.prune(thread_ids, strategy=strategy, keep_last=keep_last))

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Async ``copy_thread``."""
        await asyncio.to_thread(self.copy_thread, source_thread_id, target_thread_id)

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Async ``delete_for_runs``."""
        await asyncio.to_thread(self.delete_for_runs, run_ids)
