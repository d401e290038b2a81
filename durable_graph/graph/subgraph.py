"""Running a compiled graph inside a task of another graph.

As a node, or called from a node function (``sub.invoke(...)`` inside a node),
the subgraph runs in the parent task's checkpoint namespace, on the parent's
checkpointer unless it has its own (``checkpointer=True``: one namespace per
node, without task ids, kept across calls; ``False``: no checkpoints). When the
parent task re-runs after an error or an interrupt, the subgraph finds its own
checkpoint there and resumes at its own failed or paused node instead of
starting over.

On Celery workers the parent task's job hands the call to its step runtime (a
``SubgraphHost``), which runs the subgraph's steps as jobs of their own; it decides
the child's namespace, config and input with the same code (``child_run_config``,
``child_input``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from durable_graph.errors import GraphInterrupt
from durable_graph.scheduler.channels import MISSING as _MISSING
from durable_graph.scheduler.commands import pending_interrupts
from durable_graph.scheduler.loop import CHECKPOINT_MAP, SUBGRAPHS
from durable_graph.scheduler.runtime import TaskContext
from durable_graph.store.base import RESUME, BaseCheckpointSaver
from durable_graph.types import Command

if TYPE_CHECKING:
    from durable_graph.graph.compiled import CompiledGraph

__all__ = [
    "SubgraphCall", "SubgraphHost", "called_subgraph", "child_input", "child_namespace",
    "child_run_config", "run_in_task", "stream_in_task", "subgraph_at", "subgraph_runner",
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


def subgraph_at(graph: CompiledGraph, ns: str) -> CompiledGraph | None:
    """The subgraph a checkpoint namespace addresses inside ``graph`` (task ids and
    call numbers dropped: ``"a:<id>|b:<id>|1"`` is node ``b`` of node ``a``'s
    subgraph), as LangGraph's ``get_subgraphs(namespace=...)``; None if it names none."""
    names = [part.split(":")[0] for part in ns.split("|") if part and not part.isdigit()]
    found: CompiledGraph | None = None
    for name in names:
        node = (found or graph).spec.nodes.get(name)
        found = node.subgraph if node is not None else None
        if found is None:
            return None
    return found


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
    events = stream_in_task(
        child, value, ctx, config, interrupt_before=interrupt_before,
        interrupt_after=interrupt_after, context=context, durability=durability,
        invoked=True)
    while True:
        try:
            next(events)
        except StopIteration as stop:
            return stop.value


def stream_in_task(
    child: CompiledGraph, value: Any, ctx: TaskContext, config: Any = None, *,
    modes: frozenset[str] = frozenset(), interrupt_before: Any = None,
    interrupt_after: Any = None, context: Any = None, durability: str | None = None,
    invoked: bool = False,
) -> Generator[tuple[str, Any], None, Any]:
    """``run_in_task`` for a nested ``stream``: yields the child's events of ``modes``
    to the caller and returns the child's output.

    Each run of a subgraph inside one task has its own namespace, as LangGraph
    counts them: the task's for the first, ``<task ns>|<n>`` for the n-th after it,
    so a task calling a subgraph twice resumes each call from its own checkpoint.
    Events the parent's stream wants (``subgraphs=True``) go to it as well, under
    that namespace; an interrupt inside raises ``GraphInterrupt`` once the child
    paused (the parent task pauses). Run by ``invoke`` (``invoked``), its ``values``
    chunks show its output schema's keys, as LangGraph's nested ``invoke`` streams them.
    """
    run_config, ns, _ = child_run_config(child, ctx, config)
    saver = _saver(child, ctx)
    run_input = child_input(child, value, ctx, run_config)
    scope = ctx.step.scope
    loop = child.make_loop(
        run_config, durability=durability or ctx.step.durability, saver=saver,
        context=scope.context if context is None else context, store=scope.store,
        cache=scope.cache, interrupt_before=interrupt_before, interrupt_after=interrupt_after,
        modes=scope.stream_modes | modes, tree=scope.tree, output_values=invoked)
    stream_ns = tuple(ns.split("|"))
    # As LangGraph: a nested stream asking for ``custom`` keeps those chunks to itself.
    forwarded = scope.stream_modes - ({"custom"} & modes)
    for mode, payload in loop.run(run_input):
        if mode in forwarded:  # deeper subgraphs' events pass through as sent
            ctx.step.emit(SUBGRAPHS, payload if mode == SUBGRAPHS else (stream_ns, mode, payload))
        if mode not in modes:
            continue
        if SUBGRAPHS in modes and mode != SUBGRAPHS:  # its own chunks carry its namespace
            yield SUBGRAPHS, (stream_ns, mode, payload)
        else:
            yield mode, payload
    if loop.status == "interrupted":  # an interrupt(), or interrupt_before/after
        raise GraphInterrupt(loop.interrupts)
    return loop.output


def _run_config(
    child: CompiledGraph, ctx: TaskContext, config: Any, ns: str
) -> dict[str, Any]:
    """The task's config (thread, run settings) with ``config`` merged over it, in the
    child's namespace; the parent's checkpoint and task ids are not the child's."""
    own = dict(config or {})
    outer = ctx.config.get("configurable", {})
    parents = {**outer.get(CHECKPOINT_MAP, {}),
               str(outer.get("checkpoint_ns", "")): outer.get("checkpoint_id")}
    conf = {**outer, **(own.get("configurable") or {}), CHECKPOINT_MAP: parents}
    conf = {k: v for k, v in conf.items() if k not in ("checkpoint_id", "task_id")}
    conf["checkpoint_ns"] = child_namespace(child, ns)
    return {**ctx.config, **own, "configurable": conf}


def _saver(child: CompiledGraph, ctx: TaskContext) -> BaseCheckpointSaver | None:
    """The child's own saver, else the parent's (none with ``checkpointer=False``)."""
    if child.checkpointer is False:
        return None
    return child.saver or ctx.step.saver


def _resume_input(ctx: TaskContext, saved: Any) -> Any:
    """None to resume the subgraph, or a Command carrying its answers: those the run
    got by interrupt id, else the parent's newest answer.

    The newest answer goes to the child's one paused task, or, when its state was
    edited (``update_state``) while it paused, to the next interrupt it runs, as in
    LangGraph.
    """
    pending = saved.pending_writes
    waiting = pending_interrupts(pending)
    answers = ctx.step.scope.tree.resume_map
    by_id = {i.id: answers[i.id] for ints in waiting.values() for i in ints if i.id in answers}
    if by_id:  # the run's answers by interrupt id: each paused task gets its own
        return Command(resume=by_id)
    if len(waiting) > 1 or (not waiting and saved.metadata.get("source") != "update"):
        return None
    answered = next((len(w.value) for w in pending
                     if w.task_id in waiting and w.channel == RESUME), 0)
    if len(ctx.resume) > answered:
        return Command(resume=ctx.resume[-1])
    answer = _newest(ctx.answers) if ctx.answers is not None else _MISSING
    if answer is _MISSING:
        answer = ctx.step.take_null_resume()
    return None if answer is _MISSING else Command(resume=answer)


def _newest(take: Callable[[], Any]) -> Any:
    """The newest of the answers a ``@task`` call can still take from its caller (all
    are taken: those before it were the subgraph's earlier answers); MISSING if none."""
    newest = answer = take()
    while answer is not _MISSING:
        newest, answer = answer, take()
    return newest


def _same_step(saved: Any, run_config: dict[str, Any]) -> bool:
    """Whether a ``checkpointer=True`` child's latest checkpoint was written in the
    enclosing graphs' current steps (the parent task runs again after an error or
    an interrupt: the child resumes, finished or not), rather than in an earlier
    step or run (a new call starts a new run on its history)."""
    parents = run_config["configurable"].get(CHECKPOINT_MAP)
    return bool(parents) and saved.metadata.get("parents") == parents


# -- the decisions ``stream_in_task`` makes, for a SubgraphHost too ----------------------


def child_run_config(
    child: CompiledGraph, ctx: TaskContext, config: Any
) -> tuple[dict[str, Any], str, int]:
    """The config the task's next subgraph run runs with, that run's namespace (which
    leads its stream events) and its index among the task's subgraph runs. Call it
    exactly once per run: it counts them."""
    index = next(ctx.subgraph_calls)
    ns = f"{ctx.ns}|{index}" if index else ctx.ns  # LangGraph's subgraph counter
    return _run_config(child, ctx, config, ns), ns, index


def child_input(
    child: CompiledGraph, value: Any, ctx: TaskContext, run_config: dict[str, Any]
) -> Any:
    """What the child runs on: ``value`` (a new run), or, when it left a run there to
    resume, None or a Command with its answers."""
    saver = _saver(child, ctx)
    saved = saver.get_tuple(run_config) if saver is not None else None
    if saved is not None and (child.checkpointer is not True or _same_step(saved, run_config)):
        return _resume_input(ctx, saved)
    return value
