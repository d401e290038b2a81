"""Subgraphs on workers: the steps of a subgraph a task runs are jobs of their own.

A task running a subgraph (a compiled graph as its node, or ``sub.invoke(...)`` in its
function) treats the subgraph's run like a ``@task`` call. The call has an id derived
from the task's, and its result is a pending write of the parent's checkpoint under
that id. The task's job finds the result recorded and uses it; otherwise it starts
the child's run, or resumes the one left in the child's namespace (the input, new
or a resume, is decided by the embedded code), and suspends as a task waiting on its
calls does. Starting applies the input with the embedded loop's code and hands the
child's first step to ``runs.advance``, so its tasks are enqueued as jobs; from then
on the child's steps are planned and committed under its namespace by the one shared
transition (``runs.advance`` / ``runs.finish``), fenced by the thread's lease. The
worker that ends the child's run records its output, its error or its interrupts as
the call's result and wakes the task (``runs.report_to_parent``), which replays and
finds it. No job waits on another.

Subgraphs that keep no checkpoints (``checkpointer=False``), have a saver of their
own, or are run from inside a ``@task`` call still run inside the calling job.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from durable_graph.graph.subgraph import (
    SubgraphCall,
    child_input,
    child_run_config,
)
from durable_graph.scheduler.algo import task_id
from durable_graph.scheduler.channels import MISSING
from durable_graph.scheduler.loop import SUBGRAPHS
from durable_graph.scheduler.runtime import CallError, Suspended
from durable_graph.worker.runs import ParentCall, RunContext, advance
from durable_graph.worker.shipping import GraphRef

if TYPE_CHECKING:
    from durable_graph.worker.jobs import JobStep

__all__ = ["child_ref", "run_subgraph", "subgraph_call_id"]


def subgraph_call_id(caller: str, index: int) -> str:
    """The id the ``index``-th subgraph run of a task is recorded under."""
    return task_id(caller, "subgraph", str(index))


def child_ref(step: JobStep, call: SubgraphCall) -> GraphRef | None:
    """How workers find the subgraph of ``call`` (through the node running it), or
    None when it runs inside the calling job."""
    child, ctx, rc = call.child, call.ctx, step.rc
    if child.checkpointer not in (None, True):
        return None
    if step.job.kind != "task" or ctx.task_id != step.job.task_id:
        return None
    node = rc.graph.spec.nodes.get(ctx.name)
    if node is None or node.subgraph is not child:
        return None
    return replace(rc.run.graph, inner=(*rc.run.graph.inner, ctx.name))


def run_subgraph(step: JobStep, call: SubgraphCall, ref: GraphRef) -> Any:
    """The child's recorded output (or its recorded error raised); otherwise start or
    resume its run, as jobs, and suspend the calling task until it ends."""
    rc, ctx = step.rc, call.ctx
    config, ns, index = child_run_config(call.child, ctx, call.config)  # every call: it counts
    call_id = subgraph_call_id(ctx.task_id, index)
    recorded = step.recorded.get(call_id)
    if recorded is not None:
        if isinstance(recorded[1], CallError):
            raise recorded[1].error
        return recorded[1]
    if call_id in step.stale:  # it failed or paused in an earlier run: it resumes
        rc.saver.clear_outcomes(rc.config(step.job.checkpoint_id), [call_id])
        step.stale.discard(call_id)
    run_input = child_input(call.child, call.value, ctx, config)
    step.defer(_starter(step, call, ref, call_id=call_id, config=config, ns=ns,
                        run_input=run_input))
    step.started.append(call_id)
    raise Suspended()


def _starter(
    step: JobStep, call: SubgraphCall, ref: GraphRef, *, call_id: str,
    config: dict[str, Any], ns: str, run_input: Any,
) -> Callable[[], None]:
    """Apply the child's input under its namespace and enqueue its first step's jobs
    (run when the calling job suspends, outside the task's body)."""
    rc, child = step.rc, call.child

    def start() -> None:
        fenced = {**config, "configurable": {**config["configurable"], "fence": rc.fence}}
        scope = call.ctx.step.scope
        modes = frozenset(rc.run.modes) if SUBGRAPHS in rc.run.modes else frozenset()
        loop = child.make_loop(
            fenced, durability=call.durability or rc.run.durability, saver=rc.saver,
            context=scope.context if call.context is None else call.context,
            store=scope.store, cache=scope.cache, interrupt_before=call.interrupt_before,
            interrupt_after=call.interrupt_after, modes=modes, output_values=True)
        first = loop.begin(run_input)
        loop.persister.flush()
        opts = loop.opts
        spec = replace(
            rc.run, graph=ref, config=config, durability=opts.durability,
            interrupt_before=_names(opts.interrupt_before),
            interrupt_after=_names(opts.interrupt_after),
            recursion_limit=opts.recursion_limit,
            stop_step=int(loop.step_opts.stop_step or 0), modes=tuple(sorted(modes)),
            start_checkpoint=loop.loaded_id, branch=("", ""),
            null_resume=() if loop.null_resume is MISSING else (loop.null_resume,),
            context=opts.context, ns=loop.ns, output_values=True,
            parent=ParentCall(rc.run, step.job.checkpoint_id, step.job.task_id, call_id,
                              child.name, ns))
        child_rc = RunContext(spec, child, rc.saver, rc.events, rc.dispatcher, rc.owner,
                              rc.fence)
        for mode, payload in loop.first_events:
            child_rc.emit(mode, payload)
        advance(child_rc, loop.checkpoint, first, loop.pending, started=True)

    return start


def _names(nodes: Any) -> tuple[str, ...] | str:
    """A breakpoint list as a run record keeps it."""
    return nodes if isinstance(nodes, str) else tuple(nodes or ())
