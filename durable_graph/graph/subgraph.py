"""Running a compiled graph as a node of another graph.

The subgraph runs in its own checkpoint namespace (the parent task's), on the
parent's checkpointer unless it has its own. When the parent task re-runs after
an error or an interrupt, the subgraph finds its own checkpoint there and resumes
at its own failed or paused node instead of starting over.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from durable_graph.errors import GraphInterrupt
from durable_graph.scheduler.channels import MISSING as _MISSING
from durable_graph.scheduler.commands import pending_interrupts
from durable_graph.scheduler.runtime import TaskContext
from durable_graph.store.base import RESUME
from durable_graph.types import Command

if TYPE_CHECKING:
    from durable_graph.graph.compiled import CompiledGraph

__all__ = ["subgraph_runner"]


def subgraph_runner(child: CompiledGraph) -> Callable[[Any, TaskContext], Any]:
    """A node body that runs ``child`` durably inside the parent task."""

    def run(value: Any, ctx: TaskContext) -> Any:
        saver = child.saver or (ctx.step.saver if child.checkpointer is not False else None)
        conf = {
            k: v for k, v in ctx.config.get("configurable", {}).items()
            if k not in ("checkpoint_id", "task_id")
        }
        config = {**ctx.config, "configurable": {**conf, "checkpoint_ns": ctx.ns}}
        run_input = value
        saved = saver.get_tuple(config) if saver is not None else None
        if saved is not None:
            run_input = _resume_input(ctx, saved.pending_writes)
        scope = ctx.step.scope
        loop = child.make_loop(config, durability=ctx.step.durability, saver=saver,
                               context=scope.context, store=scope.store, cache=scope.cache)
        for _ in loop.run(run_input):
            pass
        if loop.interrupts:
            raise GraphInterrupt(loop.interrupts)
        return loop.output

    return run


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

