"""Reading threads for operators: list them, describe one, from the store alone.

Nothing here imports the user's graph. A thread's next nodes come from its status
record (workers store them when a run ends), its pending interrupts and their
values from the pending writes of its latest checkpoint, its last error and
traceback from the record, its values from the checkpoint's channels. A value
whose class this process cannot import is shown as an ``Unreadable`` placeholder
instead of failing the whole view.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from durable_graph.errors import DurableGraphError, GraphValueError, ThreadNotFoundError
from durable_graph.scheduler.snapshot import build_snapshot
from durable_graph.store.base import (
    INTERRUPT,
    NULL_TASK_ID,
    BaseCheckpointSaver,
    CheckpointTuple,
)

if TYPE_CHECKING:
    from durable_graph.graph.compiled import CompiledGraph

__all__ = [
    "HistoryEntry",
    "PendingInterrupt",
    "ThreadError",
    "ThreadPage",
    "ThreadSummary",
    "ThreadView",
    "Unreadable",
    "describe_thread",
    "list_threads",
]

_STATUSES = ("running", "interrupted", "failed", "done", "cancelled")


class Unreadable:
    """A stored value this process cannot decode (its class is not importable here).

    Not a dataclass on purpose: views turn it into its repr, never into its fields.
    """

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason
        """Why it could not be decoded."""

    def __repr__(self) -> str:
        return f"<unreadable here: {self.reason}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Unreadable) and other.reason == self.reason

    def __hash__(self) -> int:
        return hash(self.reason)


@dataclass(frozen=True)
class ThreadSummary:
    """One line of ``list_threads``: a thread's status record."""

    thread_id: str
    status: str | None
    """``running``, ``interrupted``, ``failed``, ``done`` or ``cancelled``."""
    updated_at: str | None
    """ISO-8601 time the status last changed."""
    checkpoint_id: str | None
    """The thread's latest committed checkpoint."""
    graph: str | None
    """The graph's import path (or name) of its last distributed run."""
    error: str | None
    """``Type: message`` of the error that last failed it."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return asdict(self)


@dataclass(frozen=True)
class ThreadPage:
    """A page of ``list_threads``."""

    threads: list[ThreadSummary]
    total: int
    """Threads matching the filters, over all pages."""
    next_offset: int | None
    """Offset of the next page, or None on the last one."""


@dataclass(frozen=True)
class HistoryEntry:
    """One checkpoint of a thread's history."""

    checkpoint_id: str
    parent_id: str | None
    step: int | None
    source: str | None
    """``input``, ``loop``, ``update`` or ``fork``."""
    created_at: str


@dataclass(frozen=True)
class PendingInterrupt:
    """An ``interrupt(value)`` waiting for a resume value."""

    id: str
    """Resume it with ``Command(resume={id: value})`` when several are pending."""
    value: Any
    task_id: str


@dataclass(frozen=True)
class ThreadError:
    """The error that last failed the thread, as the worker saw it."""

    type: str
    message: str
    traceback: str


@dataclass(frozen=True)
class ThreadView:
    """Everything ``durable-graph show`` prints about a thread."""

    thread_id: str
    status: str | None
    updated_at: str | None
    graph: str | None
    checkpoint_id: str | None
    """The latest checkpoint (None for a thread with a record but no checkpoint)."""
    step: int | None
    values: dict[str, Any]
    """The state's channels (internal channels left out)."""
    next: tuple[str, ...] | None
    """Nodes the thread waits to run; None when the store does not know (running)."""
    interrupts: tuple[PendingInterrupt, ...]
    error: ThreadError | None
    history: tuple[HistoryEntry, ...] = field(default=())
    """Newest first."""
    pending_updates: dict[str, Any] = field(default_factory=dict)
    """A resume's state update, stored but not yet applied by a run (by channel)."""
    from_graph: bool = False
    """Whether values and next were computed with the graph (else from the store alone,
    where ``values`` leaves ``pending_updates`` out)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (values that JSON cannot hold become their repr)."""
        out = asdict(self)
        out["next"] = list(self.next) if self.next is not None else None
        return json.loads(json.dumps(out, default=repr))  # type: ignore[no-any-return]


class _Tolerant:
    """A serializer that turns values it cannot decode into ``Unreadable``."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def dumps_typed(self, obj: Any) -> tuple[str, bytes]:
        raise GraphValueError("a view of threads never writes")

    def loads_typed(self, data: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return self.inner.loads_typed(data, *args, **kwargs)
        except (DurableGraphError, ImportError, AttributeError, TypeError, ValueError) as exc:
            return Unreadable(f"{type(exc).__name__}: {exc}")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _reader(saver: BaseCheckpointSaver) -> BaseCheckpointSaver:
    """``saver`` reading through a tolerant serializer (a shallow copy; same connection)."""
    if not hasattr(saver, "serde"):
        return saver
    reader = copy.copy(saver)
    reader.serde = _Tolerant(saver.serde)
    return reader


def _root(thread_id: str) -> dict[str, Any]:
    return {"configurable": {"thread_id": str(thread_id), "checkpoint_ns": ""}}


_INTERNAL = frozenset({"__start__", "__pregel_tasks", "__interrupt__"})
"""Channels that carry the engine's bookkeeping, not state (with ``branch:`` ones);
a functional graph's ``__end__`` (its return) and ``__previous__`` are state."""


def _internal(channel: str) -> bool:
    return channel in _INTERNAL or channel.startswith("branch:")


def _interrupts(saved: CheckpointTuple) -> tuple[PendingInterrupt, ...]:
    out: list[PendingInterrupt] = []
    for w in saved.pending_writes:
        if w.channel != INTERRUPT:
            continue
        items = w.value if isinstance(w.value, (list, tuple)) else [w.value]
        for item in items:
            out.append(PendingInterrupt(str(getattr(item, "id", "")),
                                        getattr(item, "value", item), w.task_id))
    return tuple(out)


def _error(record: Mapping[str, Any]) -> ThreadError | None:
    if not record.get("error_type") or record.get("status") not in ("failed", "cancelled"):
        return None
    return ThreadError(str(record["error_type"]), str(record.get("error_message") or ""),
                       str(record.get("error_traceback") or ""))


def describe_thread(
    saver: BaseCheckpointSaver, thread_id: str, *, history: int = 10,
    graph: CompiledGraph | None = None,
) -> ThreadView:
    """What a thread holds and waits for, read from the store alone (no graph code).

    Args:
        saver: the thread's store (for distributed runs, signed with the workers' key).
        thread_id: the thread.
        history: how many checkpoints of history to include, newest first (0: none).
        graph: the thread's graph, when this process has it: values and next nodes are
            then exactly ``graph.get_state``'s (pending updates applied, next nodes
            known while running). Without it everything comes from the store.

    Raises:
        ThreadNotFoundError: the store has neither a record nor a checkpoint of it.
    """
    if history < 0:
        raise GraphValueError(f"history must be 0 or more checkpoints, got {history}")
    reader = _reader(saver)
    record = saver.get_status(str(thread_id)) or {}
    saved = reader.get_tuple(_root(thread_id))
    if not record and saved is None:
        raise ThreadNotFoundError(f"no thread {str(thread_id)!r} in this store")
    status = record.get("status")
    nxt = record.get("next")
    if status == "done":
        nxt = []
    entries = _history(reader, str(thread_id), history)
    values = {} if saved is None else {
        ch: v for ch, v in saved.checkpoint.channel_values.items() if not _internal(ch)}
    if saved is not None and graph is not None:
        snap = build_snapshot(graph.spec, saved, str(thread_id), "")
        values = snap.values if isinstance(snap.values, dict) else {"__root__": snap.values}
        nxt = list(snap.next)
    return ThreadView(
        thread_id=str(thread_id), status=status, updated_at=record.get("updated_at"),
        graph=record.get("graph"),
        checkpoint_id=saved.checkpoint.id if saved else None,
        step=saved.metadata.get("step") if saved else None,
        values=values,
        next=tuple(nxt) if nxt is not None else None,
        interrupts=_interrupts(saved) if saved and status != "done" else (),
        error=_error(record), history=entries,
        pending_updates={w.channel: w.value for w in (saved.pending_writes if saved else ())
                         if w.task_id == NULL_TASK_ID and not _internal(w.channel)},
        from_graph=graph is not None and saved is not None,
    )


def _history(reader: BaseCheckpointSaver, thread_id: str, limit: int) -> tuple[HistoryEntry, ...]:
    """The thread's newest ``limit`` checkpoints, newest first."""
    return tuple(
        HistoryEntry(t.checkpoint.id,
                     (t.parent_config or {}).get("configurable", {}).get("checkpoint_id"),
                     t.metadata.get("step"), t.metadata.get("source"), t.checkpoint.ts)
        for t in (reader.list(_root(thread_id), limit=limit) if limit else ())
    )


def _age_limit(age: float | timedelta | None, name: str) -> float | None:
    """Seconds of an age filter, checked."""
    if age is None:
        return None
    seconds = age.total_seconds() if isinstance(age, timedelta) else float(age)
    if seconds < 0:
        raise GraphValueError(f"{name} must be a positive age, got {age!r}")
    return seconds


def _age(record: Mapping[str, Any], now: float) -> float:
    stamp = record.get("updated_at")
    if not stamp:
        return float("inf")
    return now - datetime.fromisoformat(str(stamp)).timestamp()


def list_threads(
    saver: Any,
    *,
    status: str | None = None,
    older_than: float | timedelta | None = None,
    newer_than: float | timedelta | None = None,
    graph: str | None = None,
    limit: int = 50,
    offset: int = 0,
) -> ThreadPage:
    """Threads with a status record, most recently updated first, filtered and paged.

    Args:
        saver: a ``RedisSaver`` (the store that indexes threads by status).
        status: keep threads with this status.
        older_than: keep threads last updated at least this long ago (seconds or timedelta).
        newer_than: keep threads updated within this long.
        graph: keep threads whose graph name contains this text.
        limit: threads per page (1 or more).
        offset: threads to skip (``ThreadPage.next_offset`` of the previous page).
    """
    if status is not None and status not in _STATUSES:
        raise GraphValueError(f"unknown status {status!r}; use one of {', '.join(_STATUSES)}")
    if limit < 1 or offset < 0:
        raise GraphValueError(f"limit must be 1 or more and offset 0 or more "
                              f"(got limit={limit}, offset={offset})")
    if not hasattr(saver, "list_threads"):
        raise GraphValueError(f"{type(saver).__name__} keeps no index of threads; "
                              "listing threads needs a RedisSaver")
    old, new = _age_limit(older_than, "older_than"), _age_limit(newer_than, "newer_than")
    ids = saver.list_threads(status)
    records = saver.get_statuses(ids) if hasattr(saver, "get_statuses") else [
        saver.get_status(t) for t in ids]
    now = time.time()
    kept = [
        r for r in records
        if r is not None
        and (old is None or _age(r, now) >= old)
        and (new is None or _age(r, now) <= new)
        and (graph is None or graph in (r.get("graph") or ""))
    ]
    page = kept[offset:offset + limit]
    more = offset + limit < len(kept)
    return ThreadPage([_summary(r) for r in page], len(kept), offset + limit if more else None)


def _summary(record: Mapping[str, Any]) -> ThreadSummary:
    error = (f"{record['error_type']}: {record.get('error_message') or ''}"
             if record.get("error_type") and record.get("status") == "failed" else None)
    return ThreadSummary(str(record["thread_id"]), record.get("status"),
                         record.get("updated_at"), record.get("last_checkpoint_id"),
                         record.get("graph"), error)
