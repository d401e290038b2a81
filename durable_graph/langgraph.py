"""Our savers as LangGraph checkpointers: ``LangGraphSaver(saver)``.

A program on real LangGraph keeps its engine and gets durable-graph's stores:
checkpoints on plain Redis or Valkey with no modules (atomic commits, leases and
fencing available through the wrapped ``RedisSaver``), on SQLite, or in memory.

This is the only module that imports ``langgraph`` (install the extra:
``pip install durable-graph[langgraph]``). The adapter translates records, not
storage: a LangGraph checkpoint is stored as a durable-graph checkpoint whose
channel values are LangGraph's own typed serialization (``serde.dumps_typed``),
so every value LangGraph can checkpoint round-trips exactly, under LangGraph's
allow-list, whatever our serializer knows. LangGraph's record fields that ours
does not have (its format version, ``updated_channels``) travel in the metadata
under one reserved key and are removed again on read.
"""

from __future__ import annotations

import asyncio
import builtins
import random
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any, cast

try:
    from langgraph.checkpoint.base import (
        BaseCheckpointSaver as LGBaseSaver,
    )
    from langgraph.checkpoint.base import (
        ChannelVersions,
        get_checkpoint_metadata,
    )
    from langgraph.checkpoint.base import (
        Checkpoint as LGCheckpoint,
    )
    from langgraph.checkpoint.base import (
        CheckpointMetadata as LGMetadata,
    )
    from langgraph.checkpoint.base import (
        CheckpointTuple as LGTuple,
    )
    from langgraph.checkpoint.serde.base import SerializerProtocol
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "durable_graph.langgraph adapts durable-graph savers to LangGraph and needs it: "
        "pip install 'durable-graph[langgraph]'"
    ) from exc

from durable_graph.errors import GraphValueError
from durable_graph.store.base import BaseCheckpointSaver, Checkpoint, CheckpointTuple
from durable_graph.store.retention import thread_ids_of

__all__ = ["LangGraphSaver"]

LG_FIELDS = "__langgraph__"
"""Metadata key holding LangGraph's checkpoint fields that our record lacks."""
_RECORD_FIELDS = ("id", "ts", "channel_values", "channel_versions", "versions_seen")


class LangGraphSaver(LGBaseSaver[Any]):
    """A ``langgraph.checkpoint.base.BaseCheckpointSaver`` over a durable-graph saver.

    Args:
        saver: An ``InMemorySaver``, ``SqliteSaver`` or ``RedisSaver`` (any saver of
            ours that implements the retention methods ``copy_thread``, ``prune``
            and ``delete_for_runs``).
        serde: LangGraph's serializer for channel values and writes (default:
            LangGraph's ``JsonPlusSerializer``).
    """

    def __init__(self, saver: BaseCheckpointSaver, *, serde: SerializerProtocol | None = None):
        if not isinstance(saver, BaseCheckpointSaver):
            raise GraphValueError(
                f"LangGraphSaver wraps a durable-graph saver (InMemorySaver, SqliteSaver, "
                f"RedisSaver), got {type(saver).__name__}"
            )
        super().__init__(serde=serde)
        self.saver = saver

    # -- records ------------------------------------------------------------------

    def _to_ours(
        self, checkpoint: LGCheckpoint, metadata: Mapping[str, Any]
    ) -> tuple[Checkpoint, dict[str, Any]]:
        values = {
            ch: self.serde.dumps_typed(value)
            for ch, value in checkpoint["channel_values"].items()
        }
        extra = {k: v for k, v in checkpoint.items() if k not in _RECORD_FIELDS}
        ours = Checkpoint(
            id=checkpoint["id"],
            ts=checkpoint["ts"],
            channel_values=values,
            channel_versions=cast(dict[str, int], dict(checkpoint["channel_versions"])),
            versions_seen={
                n: cast(dict[str, int], dict(v)) for n, v in checkpoint["versions_seen"].items()
            },
        )
        return ours, {**metadata, LG_FIELDS: extra}

    def _to_langgraph(self, saved: CheckpointTuple) -> LGTuple:
        metadata: dict[str, Any] = dict(saved.metadata)
        extra: dict[str, Any] = dict(metadata.pop(LG_FIELDS, None) or {})
        cp = saved.checkpoint
        checkpoint = cast(
            LGCheckpoint,
            {
                "v": extra.pop("v", 1),
                **extra,
                "id": cp.id,
                "ts": cp.ts,
                "channel_values": {
                    ch: self._loads(value) for ch, value in cp.channel_values.items()
                },
                "channel_versions": dict(cp.channel_versions),
                "versions_seen": {n: dict(v) for n, v in cp.versions_seen.items()},
            },
        )
        writes = [(w.task_id, w.channel, self._loads(w.value)) for w in saved.pending_writes]
        return LGTuple(
            config=cast(Any, saved.config),
            checkpoint=checkpoint,
            metadata=cast(LGMetadata, metadata),
            parent_config=cast(Any, saved.parent_config),
            pending_writes=writes,
        )

    def _loads(self, stored: Any) -> Any:
        tag, data = stored
        return self.serde.loads_typed((tag, data))

    # -- the contract -------------------------------------------------------------

    def get_tuple(self, config: Any) -> LGTuple | None:
        """The checkpoint ``config`` names, or the latest of its thread and namespace."""
        saved = self.saver.get_tuple(config)
        return None if saved is None else self._to_langgraph(saved)

    def list(
        self,
        config: Any | None,
        *,
        filter: dict[str, Any] | None = None,
        before: Any | None = None,
        limit: int | None = None,
    ) -> Iterator[LGTuple]:
        """Checkpoints newest first, as LangGraph lists them (``config=None``: every thread)."""
        for saved in self.saver.list(config, filter=filter, before=before, limit=limit):
            yield self._to_langgraph(saved)

    def put(
        self,
        config: Any,
        checkpoint: LGCheckpoint,
        metadata: LGMetadata,
        new_versions: ChannelVersions,
    ) -> Any:
        """Store ``checkpoint`` as the child of the one ``config`` names."""
        ours, meta = self._to_ours(checkpoint, get_checkpoint_metadata(config, metadata))
        return self.saver.put(config, ours, cast(Any, meta), cast(Any, new_versions))

    def put_writes(
        self,
        config: Any,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Store a task's writes in LangGraph's slots (special channels replace theirs)."""
        encoded = [(ch, self.serde.dumps_typed(value)) for ch, value in writes]
        self.saver.put_writes(config, encoded, task_id)

    def delete_thread(self, thread_id: str) -> None:
        """Delete every checkpoint and write of a thread."""
        self.saver.delete_thread(str(thread_id))

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Delete the checkpoints (and their writes) whose metadata names one of ``run_ids``."""
        self.saver.delete_for_runs(run_ids)

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy every checkpoint and write of one thread to another."""
        self.saver.copy_thread(str(source_thread_id), str(target_thread_id))

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """Keep each namespace's latest checkpoint (``"keep_latest"``) or none (``"delete"``).

        One id given as a plain string is that thread (never one thread per letter).
        """
        self.saver.prune(thread_ids_of(thread_ids), strategy=strategy)

    def get_next_version(self, current: Any, channel: None) -> Any:
        """The version after ``current``: int, float and str versions keep their type."""
        if current is None:
            return 1
        if isinstance(current, str):
            number = int(current.split(".")[0]) + 1
            return f"{number:032}.{random.random():016}"
        return current + 1

    # -- async twins ----------------------------------------------------------------

    async def aget_tuple(self, config: Any) -> LGTuple | None:
        """Async ``get_tuple``."""
        return await asyncio.to_thread(self.get_tuple, config)

    async def alist(
        self,
        config: Any | None,
        *,
        filter: dict[str, Any] | None = None,
        before: Any | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[LGTuple]:
        """Async ``list``."""
        items = await asyncio.to_thread(
            lambda: builtins.list(self.list(config, filter=filter, before=before, limit=limit))
        )
        for item in items:
            yield item

    async def aput(
        self,
        config: Any,
        checkpoint: LGCheckpoint,
        metadata: LGMetadata,
        new_versions: ChannelVersions,
    ) -> Any:
        """Async ``put``."""
        return await asyncio.to_thread(self.put, config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self,
        config: Any,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Async ``put_writes``."""
        await asyncio.to_thread(self.put_writes, config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        """Async ``delete_thread``."""
        await asyncio.to_thread(self.delete_thread, thread_id)

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Async ``delete_for_runs``."""
        await asyncio.to_thread(self.delete_for_runs, run_ids)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Async ``copy_thread``."""
        await asyncio.to_thread(self.copy_thread, source_thread_id, target_thread_id)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """Async ``prune``."""
        await asyncio.to_thread(self.prune, thread_ids, strategy=strategy)

