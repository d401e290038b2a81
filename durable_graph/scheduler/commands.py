"""Turning a ``Command`` given as run input into writes (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from durable_graph.errors import GraphValueError, InvalidUpdateError
from durable_graph.scheduler.channels import MISSING
from durable_graph.scheduler.spec import GraphSpec, Write
from durable_graph.store.base import INTERRUPT, RESUME, SPECIAL_WRITES, PendingWrite
from durable_graph.types import Command, Interrupt

__all__ = ["command_writes", "pending_interrupts"]


def pending_interrupts(pending: Sequence[PendingWrite]) -> dict[str, list[Interrupt]]:
    """Interrupts still waiting for an answer, by task id."""
    finished = {w.task_id for w in pending if w.channel not in SPECIAL_WRITES}
    return {
        w.task_id: list(w.value)
        for w in pending
        if w.channel == INTERRUPT and w.task_id not in finished
    }


def command_writes(
    cmd: Command, pending: Sequence[PendingWrite], spec: GraphSpec
) -> tuple[dict[str, list[Write]], list[Write], Any]:
    """(resume writes by task id, update/goto writes, resume value no task claimed yet)."""
    if cmd.graph is not None:
        raise GraphValueError(
            "Command(graph=...) is only meaningful when returned from a node; "
            "pass Command(resume=..., update=..., goto=...) as input."
        )
    by_task: dict[str, list[Write]] = {}
    unclaimed: Any = MISSING
    if cmd.resume is not None:
        by_task, unclaimed = _resume_writes(cmd.resume, pending)
    return by_task, spec_command_writes(spec, cmd), unclaimed


def spec_command_writes(spec: GraphSpec, cmd: Command) -> list[Write]:
    """The update and goto part of a command, as the graph maps them."""
    if spec.command_writes is None:
        if cmd.update is not None or cmd.goto:
            raise GraphValueError("this graph takes no Command(update=...) or goto")
        return []
    return spec.command_writes(cmd)


def _resume_writes(
    resume: Any, pending: Sequence[PendingWrite]
) -> tuple[dict[str, list[Write]], Any]:
    waiting = pending_interrupts(pending)
    recorded = {w.task_id: list(w.value) for w in pending if w.channel == RESUME}
    owner = {i.id: tid for tid, ints in waiting.items() for i in ints}
    if isinstance(resume, dict) and resume and all(k in owner for k in resume):
        answers: dict[str, list[Any]] = {}
        for iid, value in resume.items():
            tid = owner[iid]
            answers.setdefault(tid, list(recorded.get(tid, []))).append(value)
        return {tid: [(RESUME, vals)] for tid, vals in answers.items()}, MISSING
    if len(waiting) > 1:
        ids = sorted(owner)
        raise InvalidUpdateError(
            f"{len(waiting)} interrupts are pending, so a single resume value is ambiguous: "
            f"resume with Command(resume={{interrupt_id: value, ...}}) using ids {ids}."
        )
    if len(waiting) == 1:
        (tid,) = waiting
        return {tid: [(RESUME, [*recorded.get(tid, []), resume])]}, MISSING
    return {}, resume
