"""InMemorySaver: checkpoints in a dict, serialized so that saved state never aliases live state."""

from __future__ import annotations

import builtins
import copy
import heapq
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from durable_graph.errors import CommitConflictError, GraphValueError
from durable_graph.store.base import (
    EXTENDS_LATEST,
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    PendingWrite,
    checkpoint_config,
    config_ids,
    require_storable,
)
from durable_graph.store.delta import (
    DEFAULT_SNAPSHOT_EVERY,
    delta_links,
    resolve_values,
    snapshot_every_of,
)
from durable_graph.store.encoding import ThreadCodec, metadata_matches
from durable_graph.store.leaves import LeafBank, apart_in, dedups_leaves, resolve_leaves
from durable_graph.store.retention import (
    CheckpointRef,
    check_keep_last,
    check_ttl,
    parent_gone,
)
from durable_graph.store.serde import Serializer, TypedSerializer

__all__ = ["InMemorySaver", "MemorySaver"]

Blob = tuple[str, bytes]


@dataclass(frozen=True)
class _Saved:
    """A stored checkpoint: the record without values, plus metadata and parent."""

    checkpoint: Checkpoint
    metadata: CheckpointMetadata
    parent_id: str | None


class InMemorySaver(BaseCheckpointSaver):
    """Keeps checkpoints in process memory; for tests, notebooks and short-lived runs.

    Channel values are stored once per (channel, version) and pending writes in
    (task id, index) slots, the same layout the durable stores use; a large string
    or bytes leaf is kept once per thread however many values and writes hold it
    (``durable_graph.store.leaves``).

    Retention policy, applied by every commit: ``keep_last=N`` keeps the newest N
    checkpoints of the committed namespace; ``ttl`` (seconds) drops a thread that
    many seconds after its last commit (``set_ttl`` sets one thread's own TTL).
    """

    def __init__(
        self,
        *,
        serde: Serializer | None = None,
        delta: bool = True,
        snapshot_every: int = DEFAULT_SNAPSHOT_EVERY,
        ttl: int | None = None,
        keep_last: int | None = None,
    ) -> None:
        self.serde: Serializer = serde or TypedSerializer()
        self._dedup = dedups_leaves(self.serde)
        self._leaves = LeafBank()
        self.snapshot_every = snapshot_every_of(delta, snapshot_every)
        self.ttl = check_ttl(ttl)
        self.keep_last = check_keep_last(keep_last)
        self._own_ttl: dict[str, int] = {}
        self._expires: dict[str, float] = {}
        self._due: builtins.list[tuple[float, str]] = []  # heap of (expires, thread)
        self._links: dict[tuple[str, str, str, int], tuple[int, int]] = {}
        self._lock = threading.RLock()
        self._checkpoints: dict[tuple[str, str], dict[str, _Saved]] = {}
        self._blobs: dict[tuple[str, str, str, int], Blob] = {}
        self._writes: dict[tuple[str, str, str], dict[tuple[str, int], tuple[str, Blob]]] = {}

    def get_tuple(self, config: Mapping[str, Any]) -> CheckpointTuple | None:
        thread_id, ns, checkpoint_id = config_ids(config)
        with self._lock:
            self._purge_expired()
            saved = self._checkpoints.get((thread_id, ns))
            if not saved:
                return None
            if checkpoint_id is None:
                checkpoint_id = max(saved)
            entry = saved.get(checkpoint_id)
            if entry is None:
                return None
            return self._load(thread_id, ns, entry)

    def list(
        self,
        config: Mapping[str, Any] | None,
        *,
        filter: Mapping[str, Any] | None = None,
        before: Mapping[str, Any] | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        with self._lock:
            self._purge_expired()
            keys = [k for k in self._checkpoints if config is None or k[0] == config_ids(config)[0]]
            if config is not None and "checkpoint_ns" in (config.get("configurable") or {}):
                keys = [k for k in keys if k[1] == config_ids(config)[1]]
            entries = [(k, e) for k in keys for e in self._checkpoints[k].values()]
        before_id = (before or {}).get("configurable", {}).get("checkpoint_id")
        entries.sort(key=lambda ke: ke[1].checkpoint.id, reverse=True)
        count = 0
        for (thread_id, ns), entry in entries:
            if before_id is not None and entry.checkpoint.id >= before_id:
                continue
            if filter and not metadata_matches(entry.metadata, filter):
                continue
            if limit is not None and count >= limit:
                return
            count += 1
            with self._lock:
                item = self._load(thread_id, ns, entry)
            yield item  # outside the lock: a paused iterator must not block writers

    def put(
        self,
        config: Mapping[str, Any],
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: Mapping[str, int],
    ) -> dict[str, Any]:
        thread_id, ns, parent_id = config_ids(config)
        require_storable(checkpoint)
        with self._lock:
            self._purge_expired()
            extends = (config.get("configurable") or {}).get(EXTENDS_LATEST)
            if extends and parent_id and parent_id not in self._checkpoints.get(
                    (thread_id, ns), {}):
                raise CommitConflictError(parent_gone(thread_id, parent_id))
            missing = {
                ch: v
                for ch, v in checkpoint.channel_values.items()
                if (thread_id, ns, ch, checkpoint.channel_versions[ch]) not in self._blobs
            }
            split = dict(zip(missing, self._split(thread_id, list(missing.items())),
                             strict=True))
            # raises before anything is stored
            blobs = ThreadCodec(self.serde, "", thread_id, ns).values(
                {ch: value for ch, (value, _) in split.items()}, checkpoint.channel_versions)
            for ch, blob in blobs.items():
                bkey = (thread_id, ns, ch, checkpoint.channel_versions[ch])
                self._blobs[bkey] = blob
                self._leaves.hold(bkey, split[ch][1])
            for ch, link in delta_links(missing).items():
                self._links[(thread_id, ns, ch, checkpoint.channel_versions[ch])] = link
            record = Checkpoint(
                id=checkpoint.id,
                ts=checkpoint.ts,
                channel_values={},
                channel_versions=dict(checkpoint.channel_versions),
                versions_seen={k: dict(v) for k, v in checkpoint.versions_seen.items()},
                v=checkpoint.v,
            )
            saved = self._checkpoints.setdefault((thread_id, ns), {})
            saved[checkpoint.id] = _Saved(record, copy.deepcopy(metadata), parent_id)
            if self.keep_last is not None and len(saved) > self.keep_last:
                self.delete_checkpoints(thread_id, ns, sorted(saved)[:-self.keep_last])
            self._expire_in(thread_id, self._own_ttl.get(thread_id, self.ttl))
        return checkpoint_config(thread_id, ns, checkpoint.id)

    def _split(
        self, thread_id: str, items: builtins.list[tuple[str, Any]]
    ) -> builtins.list[tuple[Any, dict[bytes, bytes]]]:
        """Values or writes with the leaves kept apart as references (``leaves.apart_in``)."""
        if not self._dedup:
            return [(value, {}) for _, value in items]
        return apart_in(items, lambda digest: self._leaves.has(thread_id, digest))

    def set_ttl(self, thread_id: str, seconds: int | None) -> None:
        """Expire the thread ``seconds`` after its last commit (or after this call).

        ``None`` drops the thread's own TTL: the saver's ``ttl`` (if any) applies again.
        """
        own = check_ttl(seconds, "seconds")
        thread_id = str(thread_id)
        with self._lock:
            self._purge_expired()
            if own is None:
                self._own_ttl.pop(thread_id, None)
            else:
                self._own_ttl[thread_id] = own
            if any(k[0] == thread_id for k in self._checkpoints):
                self._expire_in(thread_id, own or self.ttl)

    def _expire_in(self, thread_id: str, seconds: int | None) -> None:
        """Make the thread expire ``seconds`` from now (None: never)."""
        if seconds is None:
            self._expires.pop(thread_id, None)
            return
        when = time.time() + seconds
        self._expires[thread_id] = when
        heapq.heappush(self._due, (when, thread_id))

    def _purge_expired(self) -> None:
        """Drop every thread whose TTL ran out (the heap's stale entries are skipped)."""
        now = time.time()
        while self._due and self._due[0][0] <= now:
            when, thread_id = heapq.heappop(self._due)
            if self._expires.get(thread_id) == when:
                self.delete_thread(thread_id)

    def list_ids(self, thread_id: str) -> Iterator[CheckpointRef]:
        """Every checkpoint of a thread newest first, as ids and parents only."""
        with self._lock:
            self._purge_expired()
            refs = [
                CheckpointRef(ns, checkpoint_id, entry.parent_id)
                for (thread, ns), saved in self._checkpoints.items() if thread == str(thread_id)
                for checkpoint_id, entry in saved.items()
            ]
        return iter(sorted(refs, key=lambda r: (r.checkpoint_id, r.checkpoint_ns), reverse=True))

    def put_writes(
        self,
        config: Mapping[str, Any],
        writes: Sequence[tuple[str, Any]],
        task_id: str,
    ) -> None:
        thread_id, ns, checkpoint_id = config_ids(config)
        if checkpoint_id is None:
            raise GraphValueError("put_writes needs a config with a checkpoint_id")
        tc = ThreadCodec(self.serde, "", thread_id, ns)
        with self._lock:
            self._purge_expired()
            encoded = [
                (ch, WRITES_IDX_MAP.get(ch, idx), tc.write(checkpoint_id, task_id,
                                                         WRITES_IDX_MAP.get(ch, idx), ch,
                                                         stored), own)
                for idx, ((ch, _), (stored, own)) in enumerate(
                    zip(writes, self._split(thread_id, list(writes)), strict=True))
            ]
            saved = self._checkpoints.get((thread_id, ns), {})
            if checkpoint_id not in saved and any(cid > checkpoint_id for cid in saved):
                return  # a late write to a pruned checkpoint: nothing would read or drop it
            slots = self._writes.setdefault((thread_id, ns, checkpoint_id), {})
            for ch, slot, blob, held in encoded:
                key = (task_id, slot)
                if ch in WRITES_IDX_MAP or key not in slots:
                    slots[key] = (ch, blob)
                    self._leaves.hold((thread_id, ns, checkpoint_id, task_id, slot), held)

    def delete_thread(self, thread_id: str) -> None:
        with self._lock:
            self._own_ttl.pop(thread_id, None)
            self._expires.pop(thread_id, None)
            for key in [k for k in self._checkpoints if k[0] == thread_id]:
                del self._checkpoints[key]
            for bkey in [k for k in self._blobs if k[0] == thread_id]:
                del self._blobs[bkey]
                self._links.pop(bkey, None)
            for wkey in [k for k in self._writes if k[0] == thread_id]:
                del self._writes[wkey]
            self._leaves.drop_thread(thread_id)

    def delete_checkpoints(self, thread_id: str, checkpoint_ns: str, ids: Sequence[str]) -> None:
        """Delete these checkpoints, their writes, and values no other checkpoint reads.

        Only the values the deleted checkpoints read (and their delta chains) can go,
        so a commit's ``keep_last`` costs what the namespace keeps, not the whole store.
        """
        key = (str(thread_id), checkpoint_ns)
        with self._lock:
            saved = self._checkpoints.get(key, {})
            gone = [saved.pop(cid) for cid in ids if cid in saved]
            for checkpoint_id in ids:
                slots = self._writes.pop((*key, checkpoint_id), {})
                self._leaves.release((*key, checkpoint_id, *slot) for slot in slots)
            for bkey in self._reads(key, gone) - self._reads(key, saved.values()):
                if self._blobs.pop(bkey, None) is not None:
                    self._leaves.release([bkey])
                self._links.pop(bkey, None)

    def _reads(
        self, key: tuple[str, str], entries: Iterable[_Saved]
    ) -> set[tuple[str, str, str, int]]:
        """The stored values ``entries`` read, each with every link of its delta chain."""
        out: set[tuple[str, str, str, int]] = set()
        for entry in entries:
            for ch, version in entry.checkpoint.channel_versions.items():
                link: tuple[str, str, str, int] | None = (*key, ch, version)
                while link is not None and link not in out:
                    out.add(link)
                    base = self._links.get(link)
                    link = (*key, ch, base[0]) if base else None
        return out

    def value_depth(
        self, thread_id: str, checkpoint_ns: str, channel: str, version: int
    ) -> int | None:
        key = (thread_id, checkpoint_ns, channel, version)
        with self._lock:
            if key not in self._blobs:
                return None
            return self._links.get(key, (0, 0))[1]

    def _chain(
        self, tc: ThreadCodec, checkpoint_id: str, channel: str, version: int
    ) -> builtins.list[Any]:
        """Decoded values from ``version`` back along its delta links to a whole value."""
        out = []
        key: tuple[str, str, str, int] | None = (tc.thread_id, tc.ns, channel, version)
        while key is not None and key in self._blobs:
            out.append(tc.value(checkpoint_id, channel, key[3], self._blobs[key],
                                signed_record=True))
            link = self._links.get(key)
            key = (*key[:3], link[0]) if link else None
        return out

    def _load(self, thread_id: str, ns: str, entry: _Saved) -> CheckpointTuple:
        cp = entry.checkpoint
        tc = ThreadCodec(self.serde, "", thread_id, ns)
        values = {}
        for ch, version in cp.channel_versions.items():
            blob = self._blobs.get((thread_id, ns, ch, version))
            if blob is not None:
                values[ch] = tc.value(cp.id, ch, version, blob, signed_record=True)
        resolve_values(values, lambda ch, version: self._chain(tc, cp.id, ch, version))
        slots = sorted(self._writes.get((thread_id, ns, cp.id), {}).items())
        pending = {
            i: tc.pending(cp.id, task_id, slot, ch, blob)
            for i, ((task_id, slot), (ch, blob)) in enumerate(slots)
        }
        for decoded in (values, pending):
            resolve_leaves(decoded, lambda digests: self._leaves.fetch(thread_id, digests))
        writes = [PendingWrite(task_id, ch, pending[i])
                  for i, ((task_id, _), (ch, _)) in enumerate(slots)]
        return CheckpointTuple(
            config=checkpoint_config(thread_id, ns, cp.id),
            checkpoint=Checkpoint(
                id=cp.id,
                ts=cp.ts,
                channel_values=values,
                channel_versions=dict(cp.channel_versions),
                versions_seen={k: dict(v) for k, v in cp.versions_seen.items()},
                v=cp.v,
            ),
            metadata=copy.deepcopy(entry.metadata),
            parent_config=(
                checkpoint_config(thread_id, ns, entry.parent_id) if entry.parent_id else None
            ),
            pending_writes=writes,
        )


MemorySaver = InMemorySaver
"""LangGraph's older name for ``InMemorySaver``."""
