"""What the thread page shows, read from the store the CLI reads (and the workers, for who
runs what). No user code is needed: the graph is loaded the way workers load it (import
path or signed blob), and when it cannot be, the page shows raw channels instead."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from durable_graph.errors import DurableGraphError
from durable_graph.graph.compiled import CompiledGraph
from durable_graph.scheduler.algo import plan_tasks, read_values
from durable_graph.scheduler.snapshot import build_snapshot
from durable_graph.store.base import CheckpointTuple
from durable_graph.ui.diff import DiffRow, diff_values, show
from durable_graph.ui.graphsvg import END, START, Edge
from durable_graph.ui.store import UiStore, graph_label

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
    """Everything the thread page shows."""

    thread_id: str
    record: dict[str, Any]
    """The thread record: status, updated_at, error fields."""
    graph: str = ""
    """Where workers load the graph from (import path or blob digest)."""
    graph_problem: str = ""
    """Why the graph could not be loaded here ('' when it was)."""
    nodes: list[str] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)
    node_states: dict[str, str] = field(default_factory=dict)
    """Node name -> running / waiting / failed, for the drawing."""
    checkpoint_id: str = ""
    values: str = ""
    """The current state, shown."""
    next: list[str] = field(default_factory=list)
    interrupts: list[tuple[str, str]] = field(default_factory=list)
    """(interrupt id, value shown) of every pending interrupt."""
    history: list[StepView] = field(default_factory=list)
    jobs: list[dict[str, str]] = field(default_factory=list)
    """Jobs of this thread running on workers now: kind, node, task id, worker."""

    @property
    def status(self) -> str:
        """The thread's status ('unknown' for a thread with checkpoints but no record)."""
        return str(self.record.get("status") or "unknown")


def _config(thread_id: str, checkpoint_id: str | None = None) -> dict[str, Any]:
    conf: dict[str, Any] = {"thread_id": thread_id, "checkpoint_ns": ""}
    if checkpoint_id:
        conf["checkpoint_id"] = checkpoint_id
    return {"configurable": conf}


def _load_graph(store: UiStore, thread_id: str, out: ThreadDetail) -> CompiledGraph | None:
    """The thread's graph, loaded as workers load it; None (and why) when it cannot be."""
    run = store.run_record(thread_id)
    if run is None:
        out.graph_problem = "no distributed run recorded for this thread"
        return None
    out.graph = graph_label(run.graph)
    try:
        return store.loader.load(run.graph)
    except (DurableGraphError, ImportError) as exc:
        out.graph_problem = f"cannot load the graph here ({exc}); showing raw channels"
        return None


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
    spec = graph.spec
    out.nodes = [n for n, node in spec.nodes.items() if not node.hidden]
    out.edges = [Edge(s, d, c) for s, d, c in getattr(spec, "edges", ())]
    if not out.edges and len(out.nodes) == 1:
        out.edges = [Edge(START, out.nodes[0]), Edge(out.nodes[0], END)]


def _current(graph: CompiledGraph, saved: CheckpointTuple, out: ThreadDetail) -> None:
    snap = build_snapshot(graph.spec, saved, out.thread_id, "")
    out.values = show(snap.values)
    out.next = list(snap.next)
    out.interrupts = [(i.id, show(i.value)) for i in snap.interrupts]
    running = out.status == "running"
    for t in snap.tasks:
        if t.interrupts:
            out.node_states[t.name] = "waiting"
        elif t.error:
            out.node_states[t.name] = "failed"
        elif t.name in out.next:
            out.node_states[t.name] = "running" if running else "next"


def read_thread(store: UiStore, thread_id: str, history: int = 20) -> ThreadDetail | None:
    """The thread page's content; None when the store knows no such thread."""
    record = store.saver.get_status(thread_id)
    saved = store.saver.get_tuple(_config(thread_id))
    if record is None and saved is None:
        return None
    out = ThreadDetail(thread_id, record or {})
    graph = _load_graph(store, thread_id, out)
    if graph is not None:
        _draw(graph, out)
    if saved is not None:
        out.checkpoint_id = saved.checkpoint.id
        if graph is not None:
            _current(graph, saved, out)
        else:
            out.values = show(_values(None, saved))
    out.history = [_step(graph, t, thread_id)
                   for t in store.saver.list(_config(thread_id), limit=history)]
    if out.status == "running":
        out.jobs = _jobs(store, thread_id, saved, graph)
    return out


def _jobs(store: UiStore, thread_id: str, saved: CheckpointTuple | None,
          graph: CompiledGraph | None) -> list[dict[str, str]]:
    """Jobs of the thread that workers run now, with the node each one is."""
    names = _task_names(graph, saved, thread_id) if saved is not None else {}
    return [
        {**job, "node": names.get(job["task_id"], "")}
        for job in store.active_jobs()
        if job["thread_id"] == thread_id
    ]


def read_diff(store: UiStore, thread_id: str, older: str, newer: str) -> list[DiffRow] | None:
    """The state diff between two checkpoints of the thread; None if one is missing."""
    a = store.saver.get_tuple(_config(thread_id, older))
    b = store.saver.get_tuple(_config(thread_id, newer))
    if a is None or b is None:
        return None
    scratch = ThreadDetail(thread_id, {})
    graph = _load_graph(store, thread_id, scratch)
    return diff_values(_values(graph, a), _values(graph, b))

