"""What the thread page shows: ``durable_graph.ops.describe_thread`` (what the CLI's
``show`` prints), plus the graph's drawing, each step's writes, and the jobs workers run
now. No user code is needed: the graph is loaded the way workers load it (import path or
signed blob), and when it cannot be, the page shows the stored channels instead."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from durable_graph import ops
from durable_graph.errors import SignatureError, ThreadNotFoundError
from durable_graph.graph.compiled import CompiledGraph
from durable_graph.ops import ThreadView
from durable_graph.scheduler.algo import plan_tasks, read_values
from durable_graph.store.base import CheckpointTuple
from durable_graph.ui.diff import DiffRow, diff_values, show
from durable_graph.ui.graphsvg import END, START, Edge
from durable_graph.ui.store import UiStore

__all__ = ["StepView", "ThreadDetail", "read_diff", "read_thread"]

log = logging.getLogger("durable_graph.ui")


@dataclass(frozen=True)
class StepView:
    """One checkpoint of the history and the writes its step's tasks made."""

    checkpoint_id: str
    """The checkpoint the step ran from."""
    step: int
    """Superstep number (-1 for the input)."""
    source: str
    """What wrote the checkpoint: input, loop, update or fork."""
    ts: str
    """When it was written (ISO-8601)."""
    writes: list[tuple[str, str, str]]
    """(task, channel, value shown) of every write recorded for the step's tasks."""


@dataclass
class ThreadDetail:
    """Everything the thread page shows: ``durable-graph show``'s view, and more."""

    view: ThreadView
    """What ``durable_graph.ops.describe_thread`` reads (the same as the CLI's ``show``)."""
    graph_problem: str = ""
    """Why the graph could not be loaded here ('' when it was)."""
    nodes: list[str] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)
    node_states: dict[str, str] = field(default_factory=dict)
    """Node name -> running / waiting / failed / next, for the drawing."""
    values: str = ""
    """The current state, shown."""
    interrupts: list[tuple[str, str]] = field(default_factory=list)
    """(interrupt id, value shown) of every pending interrupt."""
    history: list[StepView] = field(default_factory=list)
    jobs: list[dict[str, str]] = field(default_factory=list)
    """Jobs of this thread running on workers now: kind, node, task id, worker."""

    @property
    def thread_id(self) -> str:
        return self.view.thread_id

    @property
    def status(self) -> str:
        """The thread's status ('unknown' for a thread with checkpoints but no record)."""
        return str(self.view.status or "unknown")


_NODE_STATE = {"running": "running", "interrupted": "waiting", "failed": "failed"}


def _config(thread_id: str, checkpoint_id: str | None = None) -> dict[str, Any]:
    conf: dict[str, Any] = {"thread_id": thread_id, "checkpoint_ns": ""}
    if checkpoint_id:
        conf["checkpoint_id"] = checkpoint_id
    return {"configurable": conf}


def _load_graph(store: UiStore, thread_id: str) -> tuple[CompiledGraph | None, str]:
    """The thread's graph, loaded as workers load it, or None and why not."""
    try:
        graph = ops.load_graph(store.saver, thread_id)
    except SignatureError as exc:
        return None, str(exc)
    if graph is None:
        return None, "the graph cannot be loaded here; showing the stored channels"
    return graph, ""


def _values(graph: CompiledGraph | None, saved: CheckpointTuple) -> Any:
    """The state at a checkpoint: the graph's output channels, or raw public channels."""
    if graph is not None:
        return graph.spec.output(read_values(graph.spec, saved.checkpoint))
    return {k: v for k, v in saved.checkpoint.channel_values.items()
            if not k.startswith(("__", "branch:", "join:"))}


def _task_names(graph: CompiledGraph | None, saved: CheckpointTuple, thread_id: str
                ) -> dict[str, str]:
    if graph is None:
        return {}
    return {t.id: t.name for t in plan_tasks(graph.spec, saved.checkpoint, thread_id, "")}


def _step(graph: CompiledGraph | None, saved: CheckpointTuple, thread_id: str) -> StepView:
    names = _task_names(graph, saved, thread_id)
    writes = [
        (names.get(w.task_id, w.task_id[:12]), w.channel, show(w.value, 2_000))
        for w in saved.pending_writes
        if not w.channel.startswith(("branch:", "join:", "__pregel"))
    ]
    meta = saved.metadata
    return StepView(saved.checkpoint.id, int(meta.get("step", 0)), str(meta.get("source", "")),
                    saved.checkpoint.ts, writes)


def _draw(graph: CompiledGraph, out: ThreadDetail) -> None:
    """Nodes and edges as ``graph.get_graph()`` draws them, the waiting ones marked."""
    drawn = graph.get_graph()
    out.nodes = [n for n in drawn.nodes if n not in (START, END)]
    out.edges = [Edge(e.source, e.target, e.conditional) for e in drawn.edges]
    state = _NODE_STATE.get(out.status, "next")
    out.node_states = {n: state for n in out.view.next or ()}


def read_thread(store: UiStore, thread_id: str, history: int = 20) -> ThreadDetail | None:
    """The thread page's content; None when the store knows no such thread."""
    graph, problem = _load_graph(store, thread_id)
    try:
        view = ops.describe_thread(store.saver, thread_id, history=0, graph=graph)
    except ThreadNotFoundError:
        return None
    out = ThreadDetail(view, graph_problem=problem, values=show(view.values),
                       interrupts=[(i.id, show(i.value)) for i in view.interrupts])
    if graph is not None:
        _draw(graph, out)
    out.history = [_step(graph, t, thread_id)
                   for t in store.saver.list(_config(thread_id), limit=history)]
    if out.status == "running":
        out.jobs = _jobs(store, thread_id, graph)
    return out


def _jobs(store: UiStore, thread_id: str, graph: CompiledGraph | None) -> list[dict[str, str]]:
    """Jobs of the thread that workers run now, with the node each one is."""
    saved = store.saver.get_tuple(_config(thread_id))
    names = _task_names(graph, saved, thread_id) if saved is not None else {}
    return [
        {**job, "node": names.get(job["task_id"], "")}
        for job in store.active_jobs(thread_id)
    ]


def read_diff(store: UiStore, thread_id: str, older: str, newer: str) -> list[DiffRow] | None:
    """The state diff between two checkpoints of the thread; None if one is missing."""
    a = store.saver.get_tuple(_config(thread_id, older))
    b = store.saver.get_tuple(_config(thread_id, newer))
    if a is None or b is None:
        return None
    graph, _ = _load_graph(store, thread_id)
    return diff_values(_values(graph, a), _values(graph, b))
