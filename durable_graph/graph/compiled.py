"""CompiledGraph: run a compiled graph (invoke, stream, async forms) and read its threads."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any

from durable_graph.errors import (
    GraphTypeError,
    GraphValueError,
    InvalidUpdateError,
    NotSupportedError,
    RunTimeoutError,
)
from durable_graph.graph.debug import shape_stream
from durable_graph.graph.drawing import DrawnGraph, GraphDrawing, draw_graph
from durable_graph.graph.subgraph import (
    child_namespace,
    run_in_task,
    stream_in_task,
    subgraph_at,
)
from durable_graph.scheduler.algo import TaskWrites, apply_writes, read_values
from durable_graph.scheduler.executor import (
    Executor,
    LocalExecutor,
    RemoteExecutor,
    RunHandle,
    RunRequest,
)
from durable_graph.scheduler.loop import CHECKPOINT_MAP, SUBGRAPHS, RunOptions, StepLoop
from durable_graph.scheduler.runtime import RunTree, running_task
from durable_graph.scheduler.snapshot import build_snapshot
from durable_graph.scheduler.spec import GraphSpec
from durable_graph.store.base import (
    INTERRUPT,
    BaseCheckpointSaver,
    Checkpoint,
    config_ids,
    empty_checkpoint,
    new_checkpoint_id,
    thread_id_of,
)
from durable_graph.types import START, Command, StateSnapshot

__all__ = ["DEFAULT_RECURSION_LIMIT", "CompiledGraph"]

DEFAULT_RECURSION_LIMIT = 10007
"""LangGraph 1.2's default superstep limit."""
STREAM_MODES = frozenset(
    {"values", "updates", "custom", "debug", "tasks", "checkpoints", "messages"})
DURABILITY = ("sync", "async", "exit")


def _modes(stream_mode: str | Sequence[str]) -> tuple[frozenset[str], bool]:
    single = isinstance(stream_mode, str)
    modes = frozenset([stream_mode] if isinstance(stream_mode, str) else stream_mode)
    unknown = sorted(modes - STREAM_MODES)
    if unknown:
        raise GraphValueError(
            f"Unsupported stream_mode {unknown}; choose from {sorted(STREAM_MODES)}."
        )
    return modes, single


def run_input(input: Any, command: Any) -> Any:
    """The run's input, from ``input`` or ``command=``; refuses what is not supported."""
    if command is None:
        return input
    if not isinstance(command, Command):
        raise GraphTypeError(f"command= takes a Command, got {type(command).__name__}")
    if input is not None:
        raise GraphTypeError(
            "pass the run's input or command=, not both: stream(None, config, "
            "command=Command(resume=...)) resumes, stream(input, config) starts.")
    return command


def _normalize(config: Mapping[str, Any] | None) -> dict[str, Any]:
    config = dict(config or {})
    conf = dict(config.get("configurable") or {})
    if conf.get("thread_id") is not None:
        thread_id_of(conf["thread_id"])  # str, int or UUID; a clear error for the rest
    if isinstance(conf.get("thread_id"), uuid.UUID):
        conf["thread_id"] = str(conf["thread_id"])
    config["configurable"] = conf
    return config


class CompiledGraph:
    """A runnable graph; the same object runs embedded or on Celery workers."""

    def __init__(
        self,
        spec: GraphSpec,
        *,
        checkpointer: BaseCheckpointSaver | bool | None = None,
        interrupt_before: Sequence[str] | str = (),
        interrupt_after: Sequence[str] | str = (),
        executor: Executor | None = None,
        name: str = "LangGraph",
        drawing: GraphDrawing | None = None,
        store: Any = None,
        cache: Any = None,
        context_schema: Any = None,
    ) -> None:
        self.spec = spec
        self.drawing = drawing or GraphDrawing(
            tuple(n for n, s in spec.nodes.items() if not s.hidden))
        self.checkpointer = checkpointer
        self.interrupt_before = interrupt_before
        self.interrupt_after = interrupt_after
        self.executor: Executor = executor or LocalExecutor()
        self.name = name
        self.store = store
        """The long-term store nodes receive as ``store`` / ``runtime.store``."""
        self.cache = cache
        """Where ``cache_policy`` nodes and tasks keep their results."""
        self.context_schema = context_schema
        """The type of ``context=`` (a dict given for a dataclass or model is coerced)."""
        adopt = getattr(self.executor, "adopt", None)  # a remote executor signs the store
        if adopt is not None and isinstance(checkpointer, BaseCheckpointSaver):
            adopt(checkpointer)  # now, so get_state works before any run in this process

    @property
    def saver(self) -> BaseCheckpointSaver | None:
        """The checkpointer, when this graph has one of its own."""
        cp = self.checkpointer
        return cp if isinstance(cp, BaseCheckpointSaver) else None

    @property
    def nodes(self) -> dict[str, Any]:
        """Node specs by name (the input node included)."""
        return dict(self.spec.nodes)

    def make_loop(
        self,
        config: Mapping[str, Any] | None,
        *,
        durability: str | None = None,
        interrupt_before: Sequence[str] | str | None = None,
        interrupt_after: Sequence[str] | str | None = None,
        modes: frozenset[str] = frozenset(),
        saver: BaseCheckpointSaver | None = None,
        context: Any = None,
        store: Any = None,
        cache: Any = None,
        tree: RunTree | None = None,
        output_values: bool = False,
    ) -> StepLoop:
        """A StepLoop for one run with this graph's settings and the call's overrides.

        ``store`` and ``cache`` stand in for the graph's own when it has none (a
        subgraph uses its parent's, and shares its parent's ``tree``). ``output_values``:
        ``values`` chunks show the output schema's keys (a subgraph run by ``invoke``).
        """
        durability = durability or "async"
        if durability not in DURABILITY:
            raise GraphValueError(f"durability must be one of {DURABILITY}, got {durability!r}")
        config = _normalize(config)
        opts = RunOptions(
            durability=durability,
            interrupt_before=interrupt_before if interrupt_before is not None
            else self.interrupt_before,
            interrupt_after=interrupt_after if interrupt_after is not None
            else self.interrupt_after,
            recursion_limit=int(config.get("recursion_limit", DEFAULT_RECURSION_LIMIT)),
            modes=modes,
            context=coerce_context(self.context_schema, context),
            store=self.store if self.store is not None else store,
            cache=self.cache if self.cache is not None else cache,
            tree=tree,
            output_values=output_values,
        )
        return StepLoop(self.spec, saver or self.saver, self.executor, config, opts)

    def get_graph(self, config: Mapping[str, Any] | None = None, *,
                  xray: bool | int = False) -> DrawnGraph:
        """The graph's nodes and edges; ``.draw_mermaid()`` / ``.draw_ascii()`` draw it."""
        if xray:
            raise NotSupportedError(
                "get_graph(xray=...) (drawing subgraphs' insides) is not supported; "
                "call get_graph() on the subgraph itself.")
        return draw_graph(self.drawing, self.interrupt_before, self.interrupt_after)

    # -- running ---------------------------------------------------------------

    def stream(
        self,
        input: Any = None,
        config: Mapping[str, Any] | None = None,
        *,
        stream_mode: str | Sequence[str] = "updates",
        durability: str | None = None,
        interrupt_before: Sequence[str] | str | None = None,
        interrupt_after: Sequence[str] | str | None = None,
        subgraphs: bool = False,
        command: Command | None = None,
        context: Any = None,
        multitask: str = "reject",
    ) -> Iterator[Any]:
        """Run lazily, yielding chunks of ``stream_mode`` ((mode, chunk) for a list).

        ``command=`` is the same as passing that ``Command`` as ``input`` (LangGraph
        ignores it; the durable-execution tutorial uses it to resume). ``multitask``
        (distributed runs): what to do when the thread is running already:
        ``reject``, ``enqueue``, ``interrupt`` or ``rollback``.
        """
        return self._stream(
            input, config, stream_mode=stream_mode, durability=durability,
            interrupt_before=interrupt_before, interrupt_after=interrupt_after,
            subgraphs=subgraphs, command=command, context=context, multitask=multitask)

    def _stream(
        self, input: Any, config: Mapping[str, Any] | None, *, stream_mode: str | Sequence[str],
        durability: str | None, interrupt_before: Sequence[str] | str | None,
        interrupt_after: Sequence[str] | str | None, subgraphs: bool, command: Command | None,
        context: Any, multitask: str, as_invoke: bool = False,
    ) -> Iterator[Any]:
        """``stream``; ``as_invoke``: ``invoke(stream_mode=...)``'s chunks, whose
        ``values`` and ``updates`` show the output schema's keys (embedded runs)."""
        input = run_input(input, command)
        modes, single = _modes(stream_mode)
        wanted = modes | ({"checkpoints", "tasks"} if "debug" in modes else frozenset())
        remote = self._remote(multitask)
        if remote is not None:
            handle = remote.start_run(self, input, _normalize(config), RunRequest(
                durability, interrupt_before, interrupt_after,
                _remote_modes(wanted) | ({SUBGRAPHS} if subgraphs else frozenset()),
                context=coerce_context(self.context_schema, context), multitask=multitask,
                output_values=as_invoke))
            yield from shape_stream(handle.events(), modes, single=single, subgraphs=subgraphs)
            handle.result()  # raise the run's error, as an embedded stream does
            return
        wanted |= {SUBGRAPHS} if subgraphs else frozenset()
        parent = running_task()
        if parent is not None:  # called from a node: a subgraph run of that task
            events = stream_in_task(
                self, input, parent, config, modes=wanted, interrupt_before=interrupt_before,
                interrupt_after=interrupt_after, context=context, durability=durability,
                invoked=as_invoke)
            yield from shape_stream(events, modes, single=single, subgraphs=subgraphs)
            return
        loop = self.make_loop(
            self._root_config(config), durability=durability,
            interrupt_before=interrupt_before, interrupt_after=interrupt_after,
            context=context, modes=wanted, output_values=as_invoke,
        )
        yield from shape_stream(loop.run(input), modes, single=single, subgraphs=subgraphs)

    def invoke(
        self,
        input: Any = None,
        config: Mapping[str, Any] | None = None,
        *,
        stream_mode: str | Sequence[str] = "values",
        durability: str | None = None,
        interrupt_before: Sequence[str] | str | None = None,
        interrupt_after: Sequence[str] | str | None = None,
        subgraphs: bool = False,
        command: Command | None = None,
        context: Any = None,
        multitask: str = "reject",
    ) -> Any:
        """Run to the end and return the output (with ``__interrupt__`` if paused).

        ``command=`` is the same as passing that ``Command`` as ``input``.
        """
        input = run_input(input, command)
        if stream_mode != "values":
            return list(self._stream(
                input, config, stream_mode=stream_mode, durability=durability,
                interrupt_before=interrupt_before, interrupt_after=interrupt_after,
                context=context, multitask=multitask, subgraphs=subgraphs, command=None,
                as_invoke=True,
            ))
        remote = self._remote(multitask)
        if remote is not None:
            request = RunRequest(durability, interrupt_before, interrupt_after,
                                 context=coerce_context(self.context_schema, context),
                                 multitask=multitask)
            return remote.start_run(self, input, _normalize(config), request).result()
        parent = running_task()
        if parent is not None:
            return run_in_task(self, input, parent, config, interrupt_before=interrupt_before,
                               interrupt_after=interrupt_after, context=context,
                               durability=durability)
        loop = self.make_loop(
            self._root_config(config), durability=durability,
            interrupt_before=interrupt_before, interrupt_after=interrupt_after,
            context=context,
        )
        for _ in loop.run(input):
            pass
        if loop.interrupts:
            base = loop.output if isinstance(loop.output, dict) else {}
            return {**base, INTERRUPT: list(loop.interrupts)}
        return loop.output

    def _root_config(self, config: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
        """A run started with a subgraph's config (``get_state(..., subgraphs=True)``)
        runs this graph, as in LangGraph: from the checkpoint of this graph the named
        subgraph checkpoint was written under (a replay there), else from the latest."""
        conf = dict((config or {}).get("configurable") or {})
        if config is None or not conf.get("checkpoint_ns") or self.saver is None:
            return config
        named = self.saver.get_tuple(config) if conf.get("checkpoint_id") else None
        root = (named.metadata.get("parents") or {}).get("") if named is not None else None
        conf.pop("checkpoint_ns")
        conf.pop("checkpoint_id", None)
        conf.pop(CHECKPOINT_MAP, None)
        if root:
            conf["checkpoint_id"] = root
        return {**config, "configurable": conf}

    def submit(
        self,
        input: Any,
        config: Mapping[str, Any] | None = None,
        *,
        durability: str | None = None,
        interrupt_before: Sequence[str] | str | None = None,
        interrupt_after: Sequence[str] | str | None = None,
        context: Any = None,
        multitask: str = "reject",
    ) -> RunHandle:
        """Start a run and return its handle at once (``status()``, ``result(timeout=)``).

        On Celery workers the run goes on without this process; embedded, it runs on
        a background thread of this process. With ``multitask="enqueue"`` on a running
        thread, it returns once the current run ended and this one started.
        """
        remote = self._remote(multitask)
        if remote is not None:
            request = RunRequest(durability, interrupt_before, interrupt_after,
                                 context=coerce_context(self.context_schema, context),
                                 multitask=multitask)
            return remote.start_run(self, input, _normalize(config), request)
        return LocalRunHandle(lambda: self.invoke(
            input, config, durability=durability, interrupt_before=interrupt_before,
            interrupt_after=interrupt_after, context=context))

    def _remote(self, multitask: str = "reject") -> RemoteExecutor | None:
        """The remote executor, if any; an embedded run takes no lease, so it has no
        running thread to reject, enqueue after, interrupt or roll back."""
        if isinstance(self.executor, RemoteExecutor):
            return self.executor
        if multitask != "reject":
            raise GraphValueError(
                f"multitask={multitask!r} applies to distributed runs (compile with "
                "executor=CeleryExecutor(app)); an embedded run takes no lease on its "
                "thread, so only the default 'reject' is accepted here.")
        return None

    def cancel(self, config: Mapping[str, Any]) -> None:
        """Stop the thread's current distributed run (``durable-graph cancel``): its jobs
        are fenced out, its status becomes ``cancelled``; resume it later with
        ``invoke(None, config)``."""
        remote = self._remote()
        if remote is None:
            raise GraphValueError(
                "cancel stops distributed runs (compile with executor=CeleryExecutor(app)); "
                "an embedded run stops when its caller stops iterating its stream.")
        remote.cancel(self, _normalize(config))

    async def ainvoke(self, input: Any = None, config: Mapping[str, Any] | None = None,
                      **kwargs: Any) -> Any:
        """``invoke`` on a worker thread, so the event loop stays free."""
        return await asyncio.to_thread(self.invoke, input, config, **kwargs)

    async def astream(self, input: Any = None, config: Mapping[str, Any] | None = None,
                      **kwargs: Any) -> AsyncIterator[Any]:
        """``stream`` with each chunk produced on a worker thread."""
        chunks = self.stream(input, config, **kwargs)
        done = object()
        while (chunk := await asyncio.to_thread(next, chunks, done)) is not done:
            yield chunk

    # -- reading and changing threads ------------------------------------------

    def _require_saver(self) -> BaseCheckpointSaver:
        if self.saver is None:
            raise GraphValueError(
                "This graph has no checkpointer: compile(checkpointer=InMemorySaver()) "
                "or another saver to keep and read thread state."
            )
        return self.saver

    def get_state(self, config: Mapping[str, Any], *, subgraphs: bool = False) -> StateSnapshot:
        """The thread's latest snapshot (or the one ``checkpoint_id`` names).

        A config in a subgraph's namespace (a task's ``state`` config) reads that
        subgraph's state, as in LangGraph; so do ``get_state_history`` and
        ``update_state``.
        """
        reader, config = self._addressed(config)
        return reader._state(config, subgraphs)

    def _addressed(
        self, config: Mapping[str, Any], *, for_update: bool = False
    ) -> tuple[CompiledGraph, dict[str, Any]]:
        """The graph whose state ``config`` addresses (this one, or the subgraph its
        namespace names, reading through this graph's checkpointer), and the config
        in the namespace that graph keeps its checkpoints in."""
        self._require_saver()
        config = _normalize(config)
        ns = str(config["configurable"].get("checkpoint_ns") or "")
        child = subgraph_at(self, ns) if ns else None
        if child is None:
            if for_update and ns:
                raise InvalidUpdateError(
                    f"update_state: namespace {ns!r} names no subgraph of this graph, so "
                    "its nodes cannot write there; pass the config of a subgraph's state "
                    "(get_state(config, subgraphs=True).tasks[i].state.config).")
            return self, config
        return self._reading(child, config)

    def _reading(
        self, child: CompiledGraph, config: dict[str, Any]
    ) -> tuple[CompiledGraph, dict[str, Any]]:
        """``child`` reading through this graph's checkpointer unless it has its own,
        with ``config``'s namespace as ``child`` keeps it (no task ids for
        ``checkpointer=True``)."""
        reader = child if child.saver else _borrow(child, self)
        ns = child_namespace(child, str(config["configurable"].get("checkpoint_ns") or ""))
        return reader, {**config, "configurable": {**config["configurable"], "checkpoint_ns": ns}}

    def _state(self, config: dict[str, Any], subgraphs: bool) -> StateSnapshot:
        saver = self._require_saver()
        thread_id, ns, checkpoint_id = config_ids(config)
        saved = saver.get_tuple(config)
        if saved is None:
            return StateSnapshot({}, (), config, None, None, None, (), ())
        snap = build_snapshot(self.spec, saved, thread_id, ns, live=checkpoint_id is None)
        return self._with_subgraph_states(snap, thread_id, subgraphs)

    def _with_subgraph_states(
        self, snap: StateSnapshot, thread_id: str, recurse: bool
    ) -> StateSnapshot:
        """Point each subgraph task at its namespace (its snapshot with ``subgraphs``)."""
        tasks = []
        for t in snap.tasks:
            child = self.spec.nodes[t.name].subgraph if t.name in self.spec.nodes else None
            if child is None:
                tasks.append(t)
                continue
            ns = f"{snap.config['configurable'].get('checkpoint_ns') or ''}"
            ns = f"{ns}|{t.name}:{t.id}" if ns else f"{t.name}:{t.id}"
            conf = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns}}
            state: Any = conf
            if recurse:
                reader, conf = self._reading(child, conf)
                state = reader._state(conf, True)
            tasks.append(dataclasses.replace(t, state=state))
        return dataclasses.replace(snap, tasks=tuple(tasks))

    def get_state_history(
        self,
        config: Mapping[str, Any],
        *,
        filter: Mapping[str, Any] | None = None,
        before: Mapping[str, Any] | None = None,
        limit: int | None = None,
    ) -> Iterator[StateSnapshot]:
        """Snapshots of the thread, newest first (only the one ``checkpoint_id``
        names, if the config names one, as LangGraph's savers list)."""
        reader, config = self._addressed(config)
        saver = reader._require_saver()
        thread_id, ns, checkpoint_id = config_ids(config)
        conf = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns}}
        listed = saver.list(conf, filter=filter, before=before,
                            limit=limit if checkpoint_id is None else None)
        for saved in listed:
            if checkpoint_id is None or saved.checkpoint.id == checkpoint_id:
                yield build_snapshot(reader.spec, saved, thread_id, ns, live=False)
                if checkpoint_id is not None:
                    return

    def update_state(
        self, config: Mapping[str, Any], values: Any, as_node: str | None = None
    ) -> dict[str, Any]:
        """Write ``values`` as if node ``as_node`` returned them; returns the new config.

        The new checkpoint is a child of the one ``config`` names, so updating a past
        checkpoint forks the thread there.
        """
        reader, config = self._addressed(config, for_update=True)
        return reader._update(config, values, as_node)

    def _update(self, config: dict[str, Any], values: Any, as_node: str | None) -> dict[str, Any]:
        saver = self._require_saver()
        thread_id, ns, checkpoint_id = config_ids(config)
        saved = saver.get_tuple(config)
        if saved is None and checkpoint_id is not None:
            raise GraphValueError(
                f"update_state: thread {thread_id!r} has no checkpoint {checkpoint_id!r}; "
                "nothing was written. Pass a checkpoint_id from get_state_history, or "
                "none to update the latest state."
            )
        cp = saved.checkpoint if saved else empty_checkpoint()
        node_name = as_node or self._infer_as_node(cp)
        if node_name not in self.spec.nodes or self.spec.update_writes is None:
            raise InvalidUpdateError(
                f"update_state as_node={node_name!r}: no such node in this graph "
                f"(nodes: {sorted(n for n in self.spec.nodes if n != START)})."
            )
        node = self.spec.nodes[node_name]
        writes = self.spec.update_writes(node_name, values, read_values(self.spec, cp))
        new_cp, _ = apply_writes(
            self.spec, cp, [TaskWrites(node_name, ("pull", node_name), node.triggers, writes)],
            new_checkpoint_id(after=cp.id),
        )
        parent = saved.config if saved else {
            "configurable": {"thread_id": thread_id, "checkpoint_ns": ns}
        }
        new_versions = {
            ch: v for ch, v in new_cp.channel_versions.items() if cp.channel_versions.get(ch) != v
        }
        step = int(saved.metadata.get("step", -1)) + 1 if saved else 0
        parents = dict(saved.metadata.get("parents") or {}) if saved else {}  # a subgraph's
        return saver.put(parent, new_cp, {"source": "update", "step": step, "parents": parents},
                         new_versions)

    def _infer_as_node(self, cp: Checkpoint) -> str:
        user_nodes = [n for n in self.spec.nodes if n != START]
        if len(user_nodes) == 1:
            return user_nodes[0]
        last = sorted(
            (v, n) for n, seen in cp.versions_seen.items() if n in self.spec.nodes
            for v in seen.values()
        )
        if not last:
            return START
        if len(last) == 1 or last[-1][0] != last[-2][0]:
            return last[-1][1]
        raise InvalidUpdateError("Ambiguous update: pass as_node= to name the node it comes from.")

    async def aget_state(self, config: Mapping[str, Any], **kw: Any) -> StateSnapshot:
        """Async ``get_state``."""
        return await asyncio.to_thread(self.get_state, config, **kw)

    async def aget_state_history(
        self,
        config: Mapping[str, Any],
        *,
        filter: Mapping[str, Any] | None = None,
        before: Mapping[str, Any] | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[StateSnapshot]:
        """Async ``get_state_history`` (read on a worker thread, then yielded)."""
        snapshots = await asyncio.to_thread(lambda: list(self.get_state_history(
            config, filter=filter, before=before, limit=limit)))
        for snapshot in snapshots:
            yield snapshot

    async def aupdate_state(self, config: Mapping[str, Any], values: Any,
                            as_node: str | None = None) -> dict[str, Any]:
        """Async ``update_state``."""
        return await asyncio.to_thread(self.update_state, config, values, as_node)


def coerce_context(schema: Any, context: Any) -> Any:
    """``context=`` as the graph's ``context_schema``: a dict given for a dataclass or
    pydantic model is built into one, as LangGraph does; anything else is kept."""
    if context is None or schema is None or not isinstance(context, dict):
        return context
    if dataclasses.is_dataclass(schema) or hasattr(schema, "model_validate"):
        return schema(**context)
    return context


def _borrow(child: CompiledGraph, parent: CompiledGraph) -> CompiledGraph:
    """The subgraph reading through its parent's checkpointer."""
    return CompiledGraph(child.spec, checkpointer=parent.saver, executor=child.executor)


REMOTE_MODES = frozenset(
    {"values", "updates", "custom", "tasks", "checkpoints", "debug", "messages"})


def _remote_modes(modes: frozenset[str]) -> frozenset[str]:
    """The stream modes workers can send; others are refused with a clear error."""
    unsupported = sorted(modes - REMOTE_MODES)
    if unsupported:
        raise GraphValueError(
            f"stream_mode {unsupported} is not available when the graph runs on Celery "
            f"workers; use {sorted(REMOTE_MODES)}."
        )
    return modes


class LocalRunHandle:
    """An embedded run on a background thread, with the remote handle's interface."""

    def __init__(self, run: Any) -> None:
        self._done = threading.Event()
        self._value: Any = None
        self._error: BaseException | None = None
        threading.Thread(target=self._run, args=(run,), daemon=True,
                         name="durable-graph-run").start()

    def _run(self, run: Any) -> None:
        try:
            self._value = run()
        except BaseException as exc:
            self._error = exc
        finally:
            self._done.set()

    def status(self) -> str:
        """``running``, ``done``, ``interrupted`` or ``failed``."""
        if not self._done.is_set():
            return "running"
        if self._error is not None:
            return "failed"
        return "interrupted" if isinstance(self._value, dict) and INTERRUPT in self._value \
            else "done"

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the run; its output, or its error raised."""
        if not self._done.wait(timeout):
            raise RunTimeoutError(f"the run is still running after {timeout} s")
        if self._error is not None:
            raise self._error
        return self._value

    def events(self, timeout: float | None = None) -> Iterator[tuple[str, Any]]:
        """An embedded background run streams nothing; waits for its end."""
        self.result(timeout)
        return iter(())
