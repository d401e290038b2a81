"""A stored checkpoint as users see it: values, next nodes, tasks, errors, interrupts (pure)."""

from __future__ import annotations

from typing import Any

from durable_graph.errors import InvalidUpdateError
from durable_graph.scheduler.algo import (
    TaskWrites,
    apply_writes,
    finished_writes,
    plan_tasks,
    read_values,
)
from durable_graph.scheduler.spec import GraphSpec
from durable_graph.scheduler.transition import with_null_writes
from durable_graph.store.base import ERROR, INTERRUPT, CheckpointTuple
from durable_graph.types import StateSnapshot, StateTask

__all__ = ["build_snapshot"]


def build_snapshot(
    spec: GraphSpec, saved: CheckpointTuple, thread_id: str, ns: str, *, live: bool = True
) -> StateSnapshot:
    """The snapshot of ``saved``, with the errors and interrupts its tasks left.

    ``live`` (``get_state``) shows the current status: finished tasks' writes in
    ``values`` and only unfinished tasks in ``next``. Otherwise (history) it is the
    record of the step: values as of its start and every task it ran. Both show a
    resume's state update (``Command(update=...)``) given to it, as LangGraph does.
    """
    cp = saved.checkpoint
    tasks = plan_tasks(spec, cp, thread_id, ns)
    done = finished_writes(tasks, saved.pending_writes) if live else {}
    errors: dict[str, Any] = {}
    interrupts: dict[str, tuple[Any, ...]] = {}
    for w in saved.pending_writes:
        if w.channel == ERROR:
            errors[w.task_id] = w.value
        elif w.channel == INTERRUPT:
            interrupts[w.task_id] = tuple(w.value)
    # a resume's state update waits as writes of no task; the resumed run applies them
    shown = with_null_writes(spec, cp, saved.pending_writes)
    if done:
        try:
            shown, _ = apply_writes(
                spec, shown,
                [TaskWrites(t.name, t.path, t.triggers, done[t.id]) for t in tasks if t.id in done],
                cp.id,
            )
        except InvalidUpdateError as exc:  # e.g. a reducer that raises: show why, not crash
            errors.update({t: exc for t in done})
            done = {}
    state_tasks = tuple(
        StateTask(
            id=t.id,
            name=t.name,
            path=t.path,
            error=_error_text(errors.get(t.id)) if t.id not in done else None,
            interrupts=interrupts.get(t.id, ()) if t.id not in done else (),
            result=t.node.updates(done[t.id]) if t.id in done else None,
        )
        for t in tasks
    )
    return StateSnapshot(
        values=spec.output(read_values(spec, shown)),
        next=tuple(t.name for t in tasks if t.id not in done),
        config=saved.config,
        metadata=saved.metadata,
        created_at=cp.ts,
        parent_config=saved.parent_config,
        tasks=state_tasks,
        interrupts=tuple(i for st in state_tasks for i in st.interrupts),
    )


def _error_text(error: Any) -> str | None:
    """LangGraph shows a task's error as the repr of the exception."""
    if error is None:
        return None
    return repr(error) if isinstance(error, BaseException) else str(error)
