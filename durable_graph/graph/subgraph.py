"""Running a compiled graph inside a task of another graph.

As a node, or called from a node function (``sub.invoke(...)`` inside a node),
the subgraph runs in the parent task's checkpoint namespace, on the parent's
checkpointer unless it has its own (``checkpointer=True``: one namespace per
node, without task ids, kept across calls; ``False``: no checkpoints). When the
parent task re-runs after an error or an interrupt, the subgraph finds its own
checkpoint there and resumes at its own failed or paused node instead of
starting over.

On Celery workers the parent task's job hands the call to its step runtime (a
``SubgraphHost``), which runs the subgraph's steps as jobs of their own.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from durable_graph.errors import GraphInterrupt
from durable_graph.scheduler.channels import MISSING as _MISSING
from durable_graph.scheduler.commands import pending_interrupts
from durable_graph.scheduler.loop import CHECKPOINT_MAP, SUBGRAPHS
from durable_graph.scheduler.runtime import TaskContext
from durable_graph.store.base import ERROR, INTERRUPT, RESUME, BaseCheckpointSaver
from durable_graph.types import Command

if TYPE_CHECKING:
    from durable_graph.graph.compiled import CompiledGraph

__all__ = [
    "SubgraphCall",
    "SubgraphHost",
    "called_subgraph",
    "child_input",
    "child_namespace",
    "child_run_config",
    "run_in_task",
    "subgraph_runner",
]


@dataclass(frozen=True)
class SubgraphCall:
    """One run of a subgraph inside a task: ``run_in_task``'s arguments."""

    child: CompiledGraph
    value: Any
    ctx: TaskContext
    config: Any = None
    interrupt_before: Any = None
    interrupt_after: Any = None
    context: Any = None
    durability: str | None = None


@runtime_checkable
class SubgraphHost(Protocol):
    """A step runtime that can run a subgraph's steps elsewhere (workers' jobs)."""

    def takes_subgraph(self, call: SubgraphCall) -> bool:
        """Whether ``run_subgraph`` runs this call (else it runs inline)."""
        ...

    def run_subgraph(self, call: SubgraphCall) -> Any:
        """The subgraph's output, its error raised, or ``Suspended`` until it ends."""
        ...


def subgraph_runner(child: CompiledGraph) -> Callable[[Any, TaskContext], Any]:
    """A node body that runs ``child`` durably inside the parent task."""

    def run(value: Any, ctx: TaskContext) -> Any:
        return run_in_task(child, value, ctx)

    return run


def called_subgraph(fn: Any, graph_type: type) -> Any:
    """The compiled graph (of ``graph_type``) a node function refers to by a free or
    global name, as LangGraph finds it for ``get_state(subgraphs=True)``; or None.
    Subgraphs compiled with ``checkpointer=False`` keep no state and are not found."""
    try:
        found = inspect.getclosurevars(fn)
    except TypeError:  # a builtin or a callable object: nothing to look into
        return None
    for value in (*found.nonlocals.values(), *found.globals.values()):
        if isinstance(value, graph_type) and getattr(value, "checkpointer", None) is not False:
            return value
    return None


def child_namespace(child: CompiledGraph, ns: str) -> str:
    """Where ``child`` checkpoints inside a task of namespace ``ns``: that namespace,
    or with ``checkpointer=True`` the same without task ids (one history per thread)."""
    if child.checkpointer is not True:
        return ns
    return "|".join(part.split(":")[0] for part in ns.split("|"))


def run_in_task(
    child: CompiledGraph, value: Any, ctx: TaskContext, config: Any = None, *,
    interrupt_before: Any = None, interrupt_after: Any = None, context: Any = None,
    durability: str | None = None,
) -> Any:
    """Run ``child`` on ``value`` inside the running task ``ctx``; its output.

    An interrupt inside pauses the parent task (``GraphInterrupt``); the parent's
    resume answers reach the child's paused node when the parent task re-runs.
    ``config`` (merged over the task's), the interrupt lists, ``context`` and
    ``durability`` are a nested ``invoke``'s own arguments.
    """
    host = ctx.step
    if isinstance(host, SubgraphHost):
        call = SubgraphCall(child, value, ctx, config, interrupt_before, interrupt_after,
                            context, durability)
        if host.takes_subgraph(call):
            return host.run_subgraph(call)
    saver = _saver(child, ctx)
    run_config = _run_config(child, ctx, config)
    run_input = child_input(child, value, ctx, run_config)
    scope = ctx.step.scope
    loop = child.make_loop(
        run_config, durability=durability or ctx.step.durability, saver=saver,
        context=scope.context if context is None else context, store=scope.store,
        cache=scope.cache, interrupt_before=interrupt_before, interrupt_after=interrupt_after,
        modes=scope.stream_modes)
    _forward(loop.run(run_input), ctx)
    if loop.interrupts:
        raise GraphInterrupt(loop.interrupts)
    return loop.output


def _forward(events: Iterator[tuple[str, Any]], ctx: TaskContext) -> None:
    """Run the child, sending its stream events to the parent's stream under the
    child's namespace (``("child:<task id>",)``; deeper ones pass through as sent)."""
    ns = tuple(ctx.ns.split("|"))
    for mode, payload in events:
        ctx.step.emit(SUBGRAPHS, payload if mode == SUBGRAPHS else (ns, mode, payload))


def _run_config(child: CompiledGraph, ctx: TaskContext, config: Any) -> dict[str, Any]:
    """The task's config (thread, run settings) with ``config`` merged over it, in the
    child's namespace; the parent's checkpoint and task ids are not the child's."""
    own = dict(config or {})
    outer = ctx.config.get("configurable", {})
    parents = {**outer.get(CHECKPOINT_MAP, {}),
               str(outer.get("checkpoint_ns", "")): outer.get("checkpoint_id")}
    conf = {**outer, **(own.get("configurable") or {}), CHECKPOINT_MAP: parents}
    conf = {k: v for k, v in conf.items() if k not in ("checkpoint_id", "task_id")}
    conf["checkpoint_ns"] = child_namespace(child, ctx.ns)
    return {**ctx.config, **own, "configurable": conf}


def _saver(child: CompiledGraph, ctx: TaskContext) -> BaseCheckpointSaver | None:
    """The child's own saver, else the parent's (none with ``checkpointer=False``)."""
    if child.checkpointer is False:
        return None
    return child.saver or ctx.step.saver


def _resume_input(ctx: TaskContext, pending: Any) -> Any:
    """None to resume the subgraph, or a Command carrying the parent's newest answer."""
    waiting = pending_interrupts(pending)
    if len(waiting) != 1:
        return None
    (task_id,) = waiting
    answered = next(
        (len(w.value) for w in pending if w.task_id == task_id and w.channel == RESUME), 0
    )
    if len(ctx.resume) > answered:
        return Command(resume=ctx.resume[-1])
    answer = ctx.step.take_null_resume()
    return None if answer is _MISSING else Command(resume=answer)


def _unfinished(saved: Any) -> bool:
    """Whether a ``checkpointer=True`` child's saved run paused or failed (it resumes)
    rather than ended (a new call starts a new run on its history)."""
    return any(w.channel in (ERROR, INTERRUPT) for w in saved.pending_writes)


# -- the decisions ``run_in_task`` makes, for a SubgraphHost too -------------------------


def child_run_config(child: CompiledGraph, ctx: TaskContext, config: Any) -> dict[str, Any]:
    """The config the child of ``run_in_task`` runs with (its namespace included)."""
    return _run_config(child, ctx, config)


def child_input(
    child: CompiledGraph, value: Any, ctx: TaskContext, run_config: dict[str, Any]
) -> Any:
    """What the child of ``run_in_task`` runs on: ``value`` (a new run), or, when it
    left a run there to resume, None or a Command with the parent's newest answer."""
    saver = _saver(child, ctx)
    saved = saver.get_tuple(run_config) if saver is not None else None
    if saved is not None and (child.checkpointer is not True or _unfinished(saved)):
        return _resume_input(ctx, saved.pending_writes)
    return value
