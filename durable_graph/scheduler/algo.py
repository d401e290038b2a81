"""The pure transition: plan a checkpoint's tasks, apply their writes.

(last committed checkpoint, the writes of its step's tasks) -> (next checkpoint,
the tasks of the next step). Nothing here does I/O; the embedded loop and the
distributed workers both call these functions, so both run one semantics.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from durable_graph.errors import InvalidUpdateError
from durable_graph.scheduler.channels import (
    MISSING,
    consume,
    finish,
    initial,
    is_available,
    update,
)
from durable_graph.scheduler.spec import TASKS, GraphSpec, NodeSpec, Write
from durable_graph.store.base import SPECIAL_WRITES, Checkpoint, PendingWrite
from durable_graph.types import Send

__all__ = [
    "INTERRUPT_SEEN",
    "PlannedTask",
    "TaskWrites",
    "apply_writes",
    "finished_writes",
    "plan_tasks",
    "read_values",
    "should_interrupt",
    "task_id",
]

INTERRUPT_SEEN = "__interrupt__"
"""versions_seen entry recording the channel versions at the last resume."""


def task_id(*parts: str) -> str:
    """Deterministic UUID-shaped id of a task from its identifying parts."""
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=16).hexdigest()
    return f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:]}"


@dataclass(frozen=True)
class PlannedTask:
    """A task of the next superstep."""

    id: str
    """Deterministic id: thread, namespace, checkpoint, path."""
    name: str
    """Node name."""
    path: tuple[Any, ...]
    """("pull", name) for triggered nodes, ("push", index) for Sends; orders writes."""
    triggers: tuple[str, ...]
    """Channels it runs on; marked seen when its writes are applied."""
    input: Any
    """What the node receives."""
    node: NodeSpec
    """The node it runs."""


@dataclass(frozen=True)
class TaskWrites:
    """The writes one task produced, ready to apply."""

    name: str
    path: tuple[Any, ...]
    triggers: tuple[str, ...]
    writes: Sequence[Write]


def next_channel_version(versions: Mapping[str, int], new_id: str) -> int:
    """The version a step gives the channels it changes.

    The high bits count steps, so versions order like the steps that wrote them;
    the low 32 bits come from the new checkpoint's id, so two forks of one
    checkpoint never give the same channel the same version (stores keep values
    by (channel, version)).
    """
    step = (max(versions.values(), default=0) >> 32) + 1
    salt = int.from_bytes(hashlib.blake2b(new_id.encode(), digest_size=4).digest(), "big")
    return (step << 32) | salt


def read_values(spec: GraphSpec, checkpoint: Checkpoint) -> dict[str, Any]:
    """Every available channel value, with reducer channels at their empty value."""
    stored = checkpoint.channel_values
    values: dict[str, Any] = {}
    for name, ch in spec.channels.items():
        value = stored.get(name, MISSING)
        if value is MISSING:
            value = initial(ch)
        if value is not MISSING:
            values[name] = value
    return values


def plan_tasks(
    spec: GraphSpec, checkpoint: Checkpoint, thread_id: str, ns: str,
    *, step: int | None = None, stop: int | None = None,
) -> list[PlannedTask]:
    """The tasks a checkpoint triggers: Sends, then nodes whose triggers changed (as
    LangGraph orders them).

    Given the step they run in and the run's ``stop`` step, their input holds the
    graph's managed values (``RemainingSteps``, ``IsLastStep``) too.
    """
    values = read_values(spec, checkpoint)
    inputs = values
    if step is not None and stop is not None and spec.managed:
        inputs = {**values, **{k: m.get(step, stop) for k, m in spec.managed.items()}}
    versions = checkpoint.channel_versions
    tasks: list[PlannedTask] = []
    for idx, packet in enumerate(values.get(TASKS, ())):
        if not isinstance(packet, Send) or packet.node not in spec.nodes:
            raise InvalidUpdateError(f"Send to unknown node {getattr(packet, 'node', packet)!r}")
        node = spec.nodes[packet.node]
        tid = task_id(thread_id, ns, checkpoint.id, "push", str(idx), packet.node)
        tasks.append(PlannedTask(tid, packet.node, ("push", idx), (TASKS,), packet.arg, node))
    for name, node in spec.nodes.items():
        seen = checkpoint.versions_seen.get(name, {})
        if any(
            versions.get(ch, 0) > seen.get(ch, 0)
            and is_available(spec.channels[ch], values.get(ch, MISSING))
            for ch in node.triggers
        ):
            tid = task_id(thread_id, ns, checkpoint.id, "pull", name)
            tasks.append(
                PlannedTask(tid, name, ("pull", name), node.triggers, node.read(inputs), node)
            )
    return tasks


def finished_writes(
    tasks: Iterable[PlannedTask], pending: Iterable[PendingWrite]
) -> dict[str, list[Write]]:
    """Writes of the tasks that already finished, by task id (from pending writes)."""
    ids = {t.id for t in tasks}
    done: dict[str, list[Write]] = {}
    for w in pending:
        if w.task_id in ids and w.channel not in SPECIAL_WRITES:
            done.setdefault(w.task_id, []).append((w.channel, w.value))
    return done


def apply_writes(
    spec: GraphSpec, checkpoint: Checkpoint, tasks: Sequence[TaskWrites], new_id: str
) -> tuple[Checkpoint, set[str]]:
    """The checkpoint after a superstep, and the channels that step updated.

    Writes are applied in task-path order (triggered nodes by name, then Sends in
    order), whatever order the tasks finished in, so every replay agrees.
    """
    values = dict(checkpoint.channel_values)
    versions = dict(checkpoint.channel_versions)
    seen = {node: dict(v) for node, v in checkpoint.versions_seen.items()}
    for t in tasks:
        node_seen = seen.setdefault(t.name, {})
        for ch in t.triggers:
            node_seen[ch] = versions.get(ch, 0)
    next_version = next_channel_version(versions, new_id)
    for ch in {c for t in tasks for c in t.triggers}:
        new, changed = consume(spec.channels[ch], values.get(ch, MISSING))
        if changed:
            if new is MISSING:
                values.pop(ch, None)
            else:
                values[ch] = new
            versions[ch] = next_version
    updated = _apply_channel_writes(spec, values, versions, tasks, next_version)
    if any(t.triggers for t in tasks):
        for name, ch_spec in spec.channels.items():
            if name not in updated and ch_spec.kind in ("ephemeral", "topic") and name in values:
                del values[name]
                versions[name] = next_version
                updated.add(name)
        _finish_if_last(spec, values, versions, updated, next_version)
    ts = datetime.now(UTC).isoformat()
    return Checkpoint(new_id, ts, values, versions, seen), updated


def _finish_if_last(
    spec: GraphSpec, values: dict[str, Any], versions: dict[str, int], updated: set[str],
    next_version: int,
) -> None:
    """When no channel this step made available triggers a node (the run would end
    here), deferred channels become available, as LangGraph's ``finish()`` does."""
    triggers = {ch for node in spec.nodes.values() for ch in node.triggers}
    live = {ch for ch in updated if is_available(spec.channels[ch], values.get(ch, MISSING))}
    if not live.isdisjoint(triggers):
        return
    for name, ch_spec in spec.channels.items():
        new, changed = finish(ch_spec, values.get(name, MISSING))
        if changed:
            values[name] = new
            versions[name] = next_version
            updated.add(name)


def _apply_channel_writes(
    spec: GraphSpec,
    values: dict[str, Any],
    versions: dict[str, int],
    tasks: Sequence[TaskWrites],
    next_version: int,
) -> set[str]:
    grouped: dict[str, list[Any]] = {}
    writers: dict[str, list[str]] = {}
    for t in sorted(tasks, key=lambda t: t.path):
        for ch, value in t.writes:
            if ch in spec.channels:
                grouped.setdefault(ch, []).append(value)
                writers.setdefault(ch, []).append(t.name)
    updated: set[str] = set()
    for ch, written in grouped.items():
        try:
            new, changed = update(spec.channels[ch], ch, values.get(ch, MISSING), written)
        except InvalidUpdateError as exc:
            raise InvalidUpdateError(f"{exc} (written by nodes {writers[ch]})") from None
        except Exception as exc:  # a user's reducer: say which channel and writers
            raise InvalidUpdateError(
                f"the reducer of channel {ch!r} raised {type(exc).__name__}: {exc} "
                f"(applying the writes of nodes {writers[ch]}); the step was not committed"
            ) from exc
        if changed:
            if new is MISSING:
                values.pop(ch, None)
            else:
                values[ch] = new
            versions[ch] = next_version
            updated.add(ch)
    return updated


def should_interrupt(
    checkpoint: Checkpoint, nodes: Sequence[str] | str, tasks: Iterable[PlannedTask]
) -> bool:
    """Whether a static breakpoint fires: state changed since the last resume and a
    breakpoint node is among ``tasks``."""
    seen = checkpoint.versions_seen.get(INTERRUPT_SEEN, {})
    if not any(v > seen.get(ch, 0) for ch, v in checkpoint.channel_versions.items()):
        return False
    return any(
        not t.node.hidden and (nodes == "*" or t.name in nodes) for t in tasks
    )


def mark_resumed(checkpoint: Checkpoint) -> Checkpoint:
    """The same checkpoint with breakpoints marked as passed (on resume)."""
    seen = dict(checkpoint.versions_seen)
    seen[INTERRUPT_SEEN] = dict(checkpoint.channel_versions)
    return Checkpoint(
        checkpoint.id, checkpoint.ts, checkpoint.channel_values,
        checkpoint.channel_versions, seen, checkpoint.v,
    )
