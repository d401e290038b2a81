"""One superstep's decisions, shared by the embedded loop and the Celery workers.

``begin_step`` looks at a committed checkpoint and says what happens next: the run
is done, pauses at a breakpoint, hit its recursion limit, or runs these tasks.
``end_step`` takes the tasks' outcomes and says: fail, pause at an interrupt, or
commit this next checkpoint (possibly pausing after it). ``execute_task`` runs one
task body under its retry policy and turns what happened into an outcome.

Both sides call these and differ only in where tasks run and how outcomes come
back (threads and a queue embedded; jobs and pending writes in Redis distributed),
so a graph behaves the same whichever way it runs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from durable_graph.errors import GraphInterrupt, GraphRecursionError
from durable_graph.scheduler.algo import (
    PlannedTask,
    TaskWrites,
    apply_writes,
    plan_tasks,
    read_values,
    should_interrupt,
)
from durable_graph.scheduler.caching import CacheKey, cache_get, cache_put, make_key
from durable_graph.scheduler.channels import MISSING
from durable_graph.scheduler.retry import run_with_retry
from durable_graph.scheduler.runtime import StepRuntime, Suspended, TaskContext
from durable_graph.scheduler.spec import GraphSpec, Write
from durable_graph.store.base import (
    ERROR,
    INTERRUPT,
    NO_WRITES,
    NULL_TASK_ID,
    RESUME,
    SPECIAL_WRITES,
    Checkpoint,
    CheckpointMetadata,
    PendingWrite,
    checkpoint_config,
)
from durable_graph.types import Interrupt

__all__ = [
    "Next",
    "Outcome",
    "StepOptions",
    "begin_step",
    "checkpoint_event",
    "end_step",
    "error_as_text",
    "execute_task",
    "outcome_writes",
    "outcomes_from_pending",
    "pause_events",
    "paused_after",
    "record_outcome",
    "step_started_events",
    "task_config",
    "task_ended",
    "task_started",
    "task_updates",
    "with_null_writes",
]


@dataclass(frozen=True)
class StepOptions:
    """The run settings a step's decisions depend on."""

    interrupt_before: Sequence[str] | str = ()
    interrupt_after: Sequence[str] | str = ()
    stop_step: int | None = None
    """The last step the run may take (its recursion limit); None: unlimited."""
    recursion_limit: int = 0


@dataclass
class Outcome:
    """How one task ended: its writes, its error, or its interrupts."""

    writes: list[Write] | None = None
    error: BaseException | None = None
    interrupts: tuple[Interrupt, ...] = ()
    cached: bool = False
    """The writes came from the graph's cache: the body did not run."""
    breakpoint: bool = False
    """It paused without an interrupt value: a subgraph it ran stopped at a breakpoint
    (``interrupt_before``/``interrupt_after``)."""

    @property
    def paused(self) -> bool:
        """Whether the task paused (the run pauses after its step)."""
        return bool(self.interrupts) or self.breakpoint


@dataclass(frozen=True)
class Next:
    """What a step decided.

    ``status`` is ``running`` (run ``tasks``), ``done``, ``interrupted`` or ``failed``.
    ``metadata`` is set when ``checkpoint`` is new and must be committed.
    """

    status: str
    checkpoint: Checkpoint
    tasks: list[PlannedTask] = field(default_factory=list)
    metadata: CheckpointMetadata | None = None
    interrupts: tuple[Interrupt, ...] = ()
    error: BaseException | None = None
    updated: frozenset[str] = frozenset()


def begin_step(
    spec: GraphSpec,
    checkpoint: Checkpoint,
    step: int,
    opts: StepOptions,
    *,
    thread_id: str,
    ns: str,
) -> Next:
    """Plan step ``step`` from ``checkpoint``: run its tasks, or stop and say why."""
    if opts.stop_step is not None and step > opts.stop_step:
        return Next("failed", checkpoint, error=GraphRecursionError(
            f"Recursion limit of {opts.recursion_limit} reached without hitting a stop "
            "condition. Raise it with config={'recursion_limit': N} or check the graph "
            "for a loop."
        ))
    tasks = plan_tasks(spec, checkpoint, thread_id, ns, step=step, stop=opts.stop_step)
    if not tasks:
        return Next("done", checkpoint)
    if opts.interrupt_before and should_interrupt(checkpoint, opts.interrupt_before, tasks):
        return Next("interrupted", checkpoint, tasks)
    return Next("running", checkpoint, tasks)


def end_step(
    spec: GraphSpec,
    checkpoint: Checkpoint,
    tasks: Sequence[PlannedTask],
    outcomes: dict[str, Outcome],
    *,
    step: int,
    opts: StepOptions,
    new_id: str,
) -> Next:
    """The result of step ``step`` once every task has an outcome.

    The first failure in task order fails the run; otherwise any interrupt pauses
    it; otherwise the writes make the next checkpoint, which a breakpoint after
    one of these nodes may pause at.
    """
    failed = [err for t in tasks if (err := outcomes[t.id].error) is not None]
    if failed:
        return Next("failed", checkpoint, error=failed[0])
    if any(outcomes[t.id].paused for t in tasks):
        paused = tuple(i for t in tasks for i in outcomes[t.id].interrupts)
        return Next("interrupted", checkpoint, interrupts=paused)
    writes = [TaskWrites(t.name, t.path, t.triggers, outcomes[t.id].writes or ()) for t in tasks]
    new_cp, updated = apply_writes(spec, checkpoint, writes, new_id)
    metadata: CheckpointMetadata = {"source": "loop", "step": step, "parents": {}}
    status = "interrupted" if _pauses_after(new_cp, tasks, opts) else "running"
    return Next(status, new_cp, metadata=metadata, updated=frozenset(updated))


def _pauses_after(checkpoint: Checkpoint, tasks: Iterable[PlannedTask], opts: StepOptions) -> bool:
    """Whether a breakpoint after one of ``tasks`` pauses the run at ``checkpoint``,
    the checkpoint their step made."""
    return bool(opts.interrupt_after) and should_interrupt(checkpoint, opts.interrupt_after,
                                                            tasks)


def paused_after(
    spec: GraphSpec, checkpoint: Checkpoint, parent: Checkpoint, opts: StepOptions
) -> bool:
    """``end_step``'s pause decision for ``checkpoint``, a step's commit from ``parent``,
    made again from the two checkpoints alone: for a worker that recovers a run whose
    worker died between committing that step and ending the run. The nodes that ran in
    the step are those whose seen versions moved."""
    ran = [PlannedTask("", name, (), (), None, spec.nodes[name])
           for name, seen in checkpoint.versions_seen.items()
           if name in spec.nodes and seen != parent.versions_seen.get(name)]
    return _pauses_after(checkpoint, ran, opts)


def outcomes_from_pending(
    tasks: Iterable[PlannedTask], pending: Iterable[PendingWrite]
) -> dict[str, Outcome]:
    """Outcomes of the tasks that already ended, read from a checkpoint's pending writes."""
    ids = {t.id for t in tasks}
    found: dict[str, Outcome] = {}
    for w in pending:
        if w.task_id not in ids:
            continue
        out = found.setdefault(w.task_id, Outcome())
        if w.channel == ERROR:
            out.error = w.value if isinstance(w.value, BaseException) else RuntimeError(w.value)
        elif w.channel == INTERRUPT:
            out.interrupts, out.breakpoint = tuple(w.value), not w.value
        elif w.channel not in SPECIAL_WRITES:
            out.writes = [*(out.writes or []), (w.channel, w.value)]
    for out in found.values():
        if out.writes is not None:  # it finished after an earlier failure or pause
            out.error, out.interrupts, out.breakpoint = None, (), False
    return {
        tid: out for tid, out in found.items()
        if out.writes is not None or out.error is not None or out.paused
    }


def task_config(
    config: dict[str, Any], ns: str, checkpoint_id: str, task: PlannedTask
) -> tuple[dict[str, Any], str]:
    """The config a task's body receives, and the namespace its subgraphs use."""
    conf = {**config.get("configurable", {}), "checkpoint_ns": ns,
            "checkpoint_id": checkpoint_id, "task_id": task.id}
    child_ns = f"{ns}|{task.name}:{task.id}" if ns else f"{task.name}:{task.id}"
    return {**config, "configurable": conf}, child_ns


def execute_task(
    task: PlannedTask,
    step: StepRuntime,
    config: dict[str, Any],
    ns: str,
    *,
    values: dict[str, Any],
    resume: list[Any],
    first_attempt: int = 1,
) -> Outcome:
    """Run a task's body under its retry policy; errors and interrupts become outcomes.

    ``Suspended`` (a distributed node waiting on its ``@task`` calls) propagates:
    the node has no outcome yet. ``first_attempt`` > 1 continues the retries of a
    task that suspended during that attempt.
    """

    number = first_attempt - 1
    key, cache = node_cache(task, step)
    if key is not None:
        hit = cache_get(cache, key)
        if hit is not MISSING:
            return Outcome(writes=list(hit), cached=True)

    def attempt() -> list[Write]:
        nonlocal number
        number += 1
        step.begin_attempt(number)
        ctx = TaskContext(task.id, task.name, ns, config, step, resume=list(resume),
                          attempt=number)
        return ctx.run(lambda: task.node.run(task.input, values, ctx))

    try:
        writes = run_with_retry(attempt, task.node.retry, used=first_attempt - 1)
        if key is not None:
            cache_put(cache, key, writes)
        return Outcome(writes=writes)
    except Suspended:
        raise
    except GraphInterrupt as gi:
        return Outcome(interrupts=gi.interrupts, breakpoint=not gi.interrupts)
    except BaseException as exc:
        return Outcome(error=exc)


def node_cache(task: PlannedTask, step: StepRuntime) -> tuple[CacheKey | None, Any]:
    """The key a node task's writes are cached under and the cache (None, None: no caching)."""
    policy, cache = task.node.cache_policy, step.scope.cache
    if policy is None or cache is None:
        return None, None
    keyed = task.node.cache_input(task.input) if task.node.cache_input else task.input
    return make_key(policy, task.node.cache_ns, keyed), cache


def with_null_writes(
    spec: GraphSpec, checkpoint: Checkpoint, pending: Iterable[PendingWrite]
) -> Checkpoint:
    """The checkpoint with the writes no task made applied (a resume's state update).

    They stay pending writes of the checkpoint, so whoever loads it (the resuming
    loop, any worker) applies them the same way: same values, same versions.
    """
    null = [(w.channel, w.value) for w in pending
            if w.task_id == NULL_TASK_ID and w.channel != RESUME]
    if not null:
        return checkpoint
    applied, _ = apply_writes(
        spec, checkpoint, [TaskWrites("__input__", ("input",), (), null)], checkpoint.id)
    return applied


def checkpoint_event(
    spec: GraphSpec, checkpoint: Checkpoint, metadata: CheckpointMetadata, thread_id: str,
    ns: str, *, parent_id: str | None = None, pending: Iterable[PendingWrite] = (),
) -> dict[str, Any]:
    """The ``checkpoints`` stream chunk of a committed checkpoint, as LangGraph's.

    ``pending`` (a resumed checkpoint's writes) shows its tasks' errors and interrupts.
    """
    tasks = plan_tasks(spec, checkpoint, thread_id, ns)
    outcomes = outcomes_from_pending(tasks, pending)
    return {
        "config": checkpoint_config(thread_id, ns, checkpoint.id),
        "parent_config": checkpoint_config(thread_id, ns, parent_id) if parent_id else None,
        "values": spec.output(read_values(spec, checkpoint)),
        "metadata": metadata,
        "next": [t.name for t in tasks],
        "tasks": [_task_entry(t, outcomes.get(t.id), thread_id, ns) for t in tasks],
    }


def _task_entry(
    task: PlannedTask, outcome: Outcome | None, thread_id: str, ns: str
) -> dict[str, Any]:
    """One task of a ``checkpoints`` chunk: its error, or its result, or its interrupts."""
    state = None
    if task.node.subgraph is not None:
        _, child_ns = task_config({}, ns, "", task)
        state = {"configurable": {"thread_id": thread_id, "checkpoint_ns": child_ns}}
    head: dict[str, Any] = {"id": task.id, "name": task.name}
    if outcome is not None and outcome.error is not None:
        return {**head, "error": outcome.error, "state": state}
    interrupts = tuple(dataclasses.asdict(i) for i in outcome.interrupts) if outcome else ()
    result = task.node.updates(outcome.writes) if outcome and outcome.writes else None
    if result:
        return {**head, "result": result, "interrupts": interrupts, "state": state}
    return {**head, "interrupts": interrupts, "state": state}


def task_started(task: PlannedTask) -> dict[str, Any]:
    """The ``tasks`` stream chunk of a task about to run."""
    return {"id": task.id, "name": task.name, "input": task.input,
            "triggers": tuple(task.triggers)}


def step_started_events(
    tasks: Sequence[PlannedTask], done: Mapping[str, list[Write]], modes: frozenset[str],
    keep: frozenset[str] | None = None,
) -> list[tuple[str, Any]]:
    """The events of a step's ``tasks`` starting (``tasks`` mode, those that finished
    before the step resumed too), then the writes of those that finished (``updates``,
    marked cached, narrowed to ``keep``), as LangGraph streams a (resumed) step."""
    shown = [t for t in tasks if not t.node.hidden]
    events: list[tuple[str, Any]] = []
    if "tasks" in modes:
        events += [("tasks", task_started(t)) for t in shown]
    if "updates" in modes:
        events += [("updates", task_updates(t, Outcome(writes=done[t.id], cached=True), keep))
                   for t in shown if t.id in done]
    return events


def task_updates(
    task: PlannedTask, outcome: Outcome, keep: frozenset[str] | None = None
) -> dict[str, Any]:
    """The ``updates`` stream chunk of a task that finished (cache hits say so); with
    ``keep``, narrowed to those keys (None when it wrote none of them)."""
    wrote = task.node.updates(outcome.writes or ())
    if keep is not None and isinstance(wrote, dict):
        wrote = {k: v for k, v in wrote.items() if k in keep} or None
    chunk: dict[str, Any] = {task.name: wrote}
    if outcome.cached:
        chunk["__metadata__"] = {"cached": True}
    return chunk


def task_ended(task: PlannedTask, outcome: Outcome) -> dict[str, Any]:
    """The ``tasks`` stream chunk of a task that ended (LangGraph's ``task_result``)."""
    return {"id": task.id, "name": task.name, "error": outcome.error,
            "result": _or_empty(task.node.updates(outcome.writes or ())),
            "interrupts": [dataclasses.asdict(i) for i in outcome.interrupts]}


def pause_events(
    spec: GraphSpec, checkpoint: Checkpoint, interrupts: tuple[Interrupt, ...]
) -> list[tuple[str, Any]]:
    """The ``updates`` and ``values`` chunks of a run that pauses (as LangGraph streams
    them): the interrupts, and the state with ``__interrupt__`` when a node asked."""
    events: list[tuple[str, Any]] = [("updates", {INTERRUPT: interrupts})]
    values = spec.output(read_values(spec, checkpoint))
    if interrupts and isinstance(values, dict):
        events.append(("values", {**values, INTERRUPT: list(interrupts)}))
    return events


def _or_empty(result: Any) -> Any:
    return {} if result is None else result


def outcome_writes(outcome: Outcome) -> list[Write]:
    """The pending writes that store an outcome (a task with no writes leaves a marker)."""
    if outcome.writes is not None:
        return outcome.writes or [(NO_WRITES, None)]
    if outcome.paused:
        return [(INTERRUPT, list(outcome.interrupts))]
    return [(ERROR, outcome.error)]


def error_as_text(error: BaseException | None) -> RuntimeError:
    """An error a store cannot keep, kept as its type and message."""
    return RuntimeError(f"{type(error).__name__}: {error}")


def record_outcome(put: Callable[[list[Write]], object], outcome: Outcome) -> None:
    """Store an outcome with ``put``; an error the store cannot keep is kept as its text."""
    try:
        put(outcome_writes(outcome))
    except Exception:
        if outcome.error is None:
            raise
        put([(ERROR, error_as_text(outcome.error))])
