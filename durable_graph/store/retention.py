"""Retention every saver shares: copy a thread, prune its history, delete runs.

Written once over the saver contract (``list``, ``put``, ``put_writes``) plus two
primitives each store implements, ``list_ids`` (ids and parents, no values) and
``delete_checkpoints``, so memory, SQLite and Redis prune and copy alike with
LangGraph's signatures. Pruning keeps whatever a kept checkpoint needs: its own
pending writes (a parked interrupt lives there) and every channel value it
references, however old the version, with every link of its delta chain (the
stores drop only values no kept checkpoint reads).

A saver's retention policy (``ttl=``, ``keep_last=``) is checked here too, so the
three savers take the same arguments with the same errors. TTLs are whole seconds
(LangGraph's ``langgraph.json`` counts checkpointer TTLs in minutes; a number of
seconds is what Redis ``EXPIRE`` and our ``set_ttl`` take).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from durable_graph.errors import GraphValueError

if TYPE_CHECKING:
    from durable_graph.store.base import BaseCheckpointSaver, CheckpointTuple

__all__ = [
    "PRUNE_STRATEGIES",
    "CheckpointRef",
    "check_keep_last",
    "check_ttl",
    "copy_thread",
    "delete_for_runs",
    "keep_count",
    "parent_gone",
    "prune_plan",
    "refs_of",
    "thread_ids_of",
]

PRUNE_STRATEGIES = ("keep_latest", "delete")
"""LangGraph's strategies: the newest checkpoint of each namespace, or none."""


class CheckpointRef(NamedTuple):
    """A stored checkpoint's place in its thread's history, without its values."""

    checkpoint_ns: str
    """The namespace it belongs to ('' for the root graph)."""
    checkpoint_id: str
    """Its id (ids sort by creation time)."""
    parent_id: str | None
    """The checkpoint it follows, if any (a fork's parent is an older checkpoint)."""


def _at_least_one(value: Any, problem: str) -> int | None:
    """``value`` if None or an int of at least 1, else GraphValueError ``problem``."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                              or value < 1):
        raise GraphValueError(f"{problem}, got {value!r}")
    return value


def check_ttl(value: Any, name: str = "ttl") -> int | None:
    """A TTL in whole seconds (at least 1), or None; GraphValueError naming ``name`` else."""
    return _at_least_one(
        value, f"{name} must be a whole number of seconds of at least 1 (or None: keep "
        "forever; for minutes, as in langgraph.json, pass minutes * 60)")


def check_keep_last(value: Any) -> int | None:
    """A saver's ``keep_last`` (checkpoints kept per namespace, at least 1), or None."""
    return _at_least_one(
        value, "keep_last must be a whole number of at least 1 (checkpoints kept per "
        "namespace; None keeps them all)")


def parent_gone(thread_id: str, parent_id: str) -> str:
    """Why a commit extending a checkpoint that no longer exists is refused."""
    return (
        f"commit to thread {thread_id!r} rejected: the checkpoint it extends, {parent_id}, "
        "is gone (the thread's TTL ran out, or it was deleted or pruned, while this step "
        "ran), and the new checkpoint may be stored as changes to its values. Nothing was "
        "written; run the thread again, or give it a TTL longer than its slowest step."
    )


def thread_ids_of(thread_ids: str | Iterable[str]) -> list[str]:
    """A list of thread ids; one id given as a plain string is one thread, not its letters."""
    return [thread_ids] if isinstance(thread_ids, str) else [str(t) for t in thread_ids]


def keep_count(strategy: str, keep_last: int | None) -> int:
    """How many checkpoints of each namespace a prune keeps (0: the whole thread goes)."""
    if strategy not in PRUNE_STRATEGIES:
        raise GraphValueError(
            f"unknown prune strategy {strategy!r}: use one of {', '.join(PRUNE_STRATEGIES)}"
        )
    if keep_last is None:
        return 1 if strategy == "keep_latest" else 0
    if strategy != "keep_latest":
        raise GraphValueError("prune(keep_last=N) keeps N checkpoints; it cannot go with "
                              f"strategy={strategy!r}")
    if isinstance(keep_last, bool) or not isinstance(keep_last, int) or keep_last < 1:
        raise GraphValueError(f"keep_last must be an int of at least 1, got {keep_last!r}")
    return keep_last


def prune_plan(saver: BaseCheckpointSaver, thread_id: str, keep: int) -> dict[str, list[str]]:
    """Per namespace, the ids of the checkpoints beyond the newest ``keep`` (to delete).

    Reads ids only (``list_ids``): no value is loaded to decide what goes.
    """
    seen: dict[str, int] = {}
    doomed: dict[str, list[str]] = {}
    for ref in saver.list_ids(thread_id):
        seen[ref.checkpoint_ns] = seen.get(ref.checkpoint_ns, 0) + 1
        if seen[ref.checkpoint_ns] > keep:
            doomed.setdefault(ref.checkpoint_ns, []).append(ref.checkpoint_id)
    return doomed


def refs_of(items: Iterable[CheckpointTuple]) -> Iterator[CheckpointRef]:
    """The refs of loaded checkpoints (for savers with no cheaper id listing)."""
    for item in items:
        conf = item.config["configurable"]
        parent = (item.parent_config or {}).get("configurable", {}).get("checkpoint_id")
        yield CheckpointRef(conf.get("checkpoint_ns", ""), conf["checkpoint_id"], parent)


def copy_thread(saver: BaseCheckpointSaver, source: str, target: str) -> int:
    """Copy every checkpoint (oldest first, ids kept) and pending write; returns the count."""
    if source == target:
        raise GraphValueError(f"copy_thread: source and target are the same thread {source!r}")
    items = list(saver.list({"configurable": {"thread_id": source}}))
    for item in reversed(items):
        _copy_one(saver, item, target)
    return len(items)


def _copy_one(saver: BaseCheckpointSaver, item: CheckpointTuple, target: str) -> None:
    ns = item.config["configurable"].get("checkpoint_ns", "")
    parent = (item.parent_config or {}).get("configurable", {}).get("checkpoint_id")
    conf: dict[str, Any] = {"thread_id": target, "checkpoint_ns": ns}
    if parent:
        conf["checkpoint_id"] = parent
    cp = item.checkpoint
    stored = saver.put({"configurable": conf}, cp, item.metadata, dict(cp.channel_versions))
    by_task: dict[str, list[tuple[str, Any]]] = {}
    for write in item.pending_writes:
        by_task.setdefault(write.task_id, []).append((write.channel, write.value))
    for task_id, writes in by_task.items():
        saver.put_writes(stored, writes, task_id)


def delete_for_runs(saver: BaseCheckpointSaver, run_ids: Sequence[str]) -> int:
    """Delete every checkpoint whose metadata ``run_id`` is one of ``run_ids``; the count."""
    wanted = {str(r) for r in thread_ids_of(run_ids)}
    if not wanted:
        return 0
    doomed: dict[tuple[str, str], list[str]] = {}
    for item in saver.list(None):
        if str(item.metadata.get("run_id")) in wanted:
            conf = item.config["configurable"]
            key = (conf["thread_id"], conf.get("checkpoint_ns", ""))
            doomed.setdefault(key, []).append(conf["checkpoint_id"])
    for (thread_id, ns), ids in doomed.items():
        saver.delete_checkpoints(thread_id, ns, ids)
    return sum(len(ids) for ids in doomed.values())
