"""StateGraph: the builder users write graphs with, compiled to a GraphSpec."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from durable_graph.errors import GraphTypeError, GraphValueError, InvalidUpdateError, ParentCommand
from durable_graph.graph.call import bind
from durable_graph.graph.compiled import CompiledGraph
from durable_graph.graph.drawing import Ends, GraphDrawing
from durable_graph.graph.hints import node_hints
from durable_graph.graph.schema import ROOT, StateSchema, merge_channels
from durable_graph.graph.subgraph import called_subgraph, subgraph_runner
from durable_graph.graph.writers import Branch, NodeWriter, branch_channel
from durable_graph.scheduler.caching import CACHE_NS_WRITES, identifier
from durable_graph.scheduler.channels import MISSING, ChannelKind, ChannelSpec
from durable_graph.scheduler.executor import Executor
from durable_graph.scheduler.runtime import TaskContext
from durable_graph.scheduler.spec import TASKS, GraphSpec, NodeSpec, Write
from durable_graph.store.base import BaseCheckpointSaver
from durable_graph.types import END, START, CachePolicy, Command, RetryPolicy

__all__ = ["CompiledStateGraph", "StateGraph"]

CompiledStateGraph = CompiledGraph


@dataclass(frozen=True)
class _NodeDef:
    action: Any
    retry: RetryPolicy | None
    defer: bool = False
    """Run only once every other branch has finished (the run would otherwise end)."""
    cache_policy: CachePolicy[Any] | None = None
    input: StateSchema | None = None
    """The node's own input schema (private state), else the graph's state."""
    ends: Ends = ()
    """Where it may route with a Command (drawn edges, labelled): annotation or
    ``destinations``."""


class StateGraph:
    """A graph whose nodes read and update a shared, typed state."""

    def __init__(
        self,
        state_schema: Any,
        context_schema: Any = None,
        *,
        input_schema: Any = None,
        output_schema: Any = None,
    ) -> None:
        self.schema = StateSchema(state_schema)
        self.context_schema = context_schema
        self.input_schema = StateSchema(input_schema) if input_schema else self.schema
        self.output_schema = StateSchema(output_schema) if output_schema else self.schema
        self.schemas: dict[Any, StateSchema] = {}
        for schema in (self.schema, self.input_schema, self.output_schema):
            self.schemas.setdefault(schema.schema, schema)
        self.nodes: dict[str, _NodeDef] = {}
        self.edges: set[tuple[str, str]] = set()
        self.waiting_edges: set[tuple[tuple[str, ...], str]] = set()
        self.branches: dict[str, list[Branch]] = {}

    def add_node(
        self,
        node: str | Callable[..., Any],
        action: Any = None,
        *,
        retry_policy: RetryPolicy | None = None,
        input_schema: Any = None,
        destinations: Mapping[str, str] | Sequence[str] | None = None,
        defer: bool = False,
        cache_policy: CachePolicy[Any] | None = None,
    ) -> StateGraph:
        """Add a node: a function of the state returning an update, or a compiled graph.

        Its input schema is ``input_schema``, else the type of its first parameter when
        that is a schema (a TypedDict of private keys), else the graph's state.
        ``defer=True`` holds the node back until every other branch of the run has
        finished (map-reduce's final step); ``cache_policy`` caches its writes by its
        input in the graph's cache (``compile(cache=...)``).
        """
        if action is None:
            action, node = node, str(getattr(node, "__name__", getattr(node, "name", "")))
        if not isinstance(node, str) or not node:
            raise GraphValueError(f"Node name must be a non-empty string, got {node!r}")
        if node in (START, END) or ":" in node or "|" in node:
            raise GraphValueError(f"Node name {node!r} is reserved or contains ':' or '|'")
        if node in self.nodes:
            raise GraphValueError(f"Node {node!r} already exists; node names must be unique")
        if not callable(action) and not isinstance(action, CompiledGraph):
            action = _runnable(node, action)
        if cache_policy is not None and not isinstance(cache_policy, CachePolicy):
            raise GraphTypeError(
                f"Node {node!r}: cache_policy must be a CachePolicy(key_func=, ttl=), got "
                f"{type(cache_policy).__name__}."
            )
        hints = node_hints(action)
        own = input_schema if input_schema is not None else hints.input_schema
        schema = self.schemas.setdefault(own, StateSchema(own)) if own is not None else None
        ends = hints.ends if destinations is None else tuple(
            destinations.items() if isinstance(destinations, Mapping)
            else ((d, None) for d in destinations))
        self.nodes[node] = _NodeDef(action, retry_policy, defer=bool(defer),
                                    cache_policy=cache_policy, input=schema, ends=ends)
        return self

    def add_edge(self, start_key: str | Sequence[str], end_key: str) -> StateGraph:
        """Run ``end_key`` after ``start_key`` (after all of them, given a list)."""
        if end_key == START:
            raise GraphValueError("START cannot be the end of an edge")
        if isinstance(start_key, str):
            if start_key == END:
                raise GraphValueError("END cannot be the start of an edge")
            self.edges.add((start_key, end_key))
        else:
            self.waiting_edges.add((tuple(start_key), end_key))
        return self

    def add_conditional_edges(
        self,
        source: str,
        path: Callable[..., Any],
        path_map: Mapping[Hashable, str] | Sequence[str] | None = None,
    ) -> StateGraph:
        """After ``source``, go where ``path(state)`` says (node names, Sends or END)."""
        mapping: dict[Any, str] | None = None
        if isinstance(path_map, Mapping):
            mapping = dict(path_map)
        elif path_map is not None:
            mapping = {name: name for name in path_map}
        self.branches.setdefault(source, []).append(Branch(path, mapping))
        return self

    def add_sequence(self, nodes: Sequence[Callable[..., Any] | tuple[str, Any]]) -> StateGraph:
        """Add nodes that run one after another."""
        names = []
        for item in nodes:
            name, action = item if isinstance(item, tuple) else (item.__name__, item)
            self.add_node(name, action)
            names.append(name)
        for a, b in itertools.pairwise(names):
            self.add_edge(a, b)
        return self

    def set_entry_point(self, key: str) -> StateGraph:
        """Same as ``add_edge(START, key)``."""
        return self.add_edge(START, key)

    def set_finish_point(self, key: str) -> StateGraph:
        """Same as ``add_edge(key, END)``."""
        return self.add_edge(key, END)

    def set_conditional_entry_point(
        self, path: Callable[..., Any], path_map: Any = None
    ) -> StateGraph:
        """Same as ``add_conditional_edges(START, path, path_map)``."""
        return self.add_conditional_edges(START, path, path_map)

    def compile(
        self,
        checkpointer: BaseCheckpointSaver | bool | None = None,
        *,
        interrupt_before: Sequence[str] | str | None = None,
        interrupt_after: Sequence[str] | str | None = None,
        executor: Executor | None = None,
        name: str | None = None,
        strict_updates: bool = False,
        store: Any = None,
        cache: Any = None,
    ) -> CompiledGraph:
        """Validate the graph and return a runnable ``CompiledGraph``.

        ``strict_updates=True`` makes an update to a key no schema declares raise
        ``InvalidUpdateError``; by default it is ignored with a logged warning, as
        LangGraph ignores it. ``store`` is the long-term store nodes receive (``store``
        / ``runtime.store`` / ``get_store()``); ``cache`` keeps the results of
        ``cache_policy`` nodes.
        """
        self._validate(interrupt_before, interrupt_after)
        return CompiledGraph(
            self._spec(strict_updates),
            checkpointer=checkpointer,
            interrupt_before=interrupt_before or (),
            interrupt_after=interrupt_after or (),
            executor=executor,
            name=name or "LangGraph",
            drawing=self._drawing(),
            store=store,
            cache=cache,
            context_schema=self.context_schema,
        )

    # -- compiling -------------------------------------------------------------

    def _validate(self, before: Any, after: Any) -> None:
        known = set(self.nodes)
        if not any(s == START for s, _ in self.edges) and START not in self.branches and not any(
            START in srcs for srcs, _ in self.waiting_edges
        ):
            raise GraphValueError(
                "Graph must have an entrypoint: add at least one edge from START to a node."
            )
        sources = {s for s, _ in self.edges} | set(self.branches)
        sources |= {s for srcs, _ in self.waiting_edges for s in srcs}
        for src in sources - {START}:
            if src not in known:
                raise GraphValueError(f"Edge starts at unknown node {src!r}; add_node it first")
        targets = {d for _, d in self.edges} | {d for _, d in self.waiting_edges}
        for branch in (b for bs in self.branches.values() for b in bs):
            targets |= set((branch.path_map or {}).values())
        for dest in targets - {END}:
            if dest not in known:
                raise GraphValueError(f"Edge points to unknown node {dest!r}; add_node it first")
        for nodes in (before, after):
            if nodes and nodes != "*":
                for n in [x for x in nodes if x not in known]:
                    raise GraphValueError(f"Breakpoint on unknown node {n!r}")

    def _spec(self, strict: bool) -> GraphSpec:
        names = frozenset(self.nodes)
        state = merge_channels(self.schemas.values())
        channels: dict[str, ChannelSpec] = dict(state)
        channels[START] = ChannelSpec("ephemeral")
        channels[TASKS] = ChannelSpec("topic")
        triggers: dict[str, list[str]] = {n: [branch_channel(n)] for n in self.nodes}
        static: dict[str, list[Write]] = {n: [] for n in [START, *self.nodes]}
        for src, dest in sorted(self.edges):
            if dest != END:
                static[src].append((branch_channel(dest), None))
        for srcs, dest in sorted(self.waiting_edges):
            join = f"join:{'+'.join(srcs)}:{dest}"
            kind: ChannelKind = "deferred_barrier" if self._deferred(dest) else "barrier"
            channels[join] = ChannelSpec(kind, names=frozenset(srcs))
            triggers[dest].append(join)
            for src in srcs:
                static[src].append((join, src))
        for n, d in self.nodes.items():
            channels[branch_channel(n)] = ChannelSpec("deferred" if d.defer else "ephemeral")
        writers = {
            n: NodeWriter(n, self.schema, names, tuple(static[n]),
                          tuple(self.branches.get(n, ())), state, strict)
            for n in [START, *self.nodes]
        }
        nodes = {START: self._start_node(writers[START])}
        for n, d in self.nodes.items():
            nodes[n] = self._node(n, d, tuple(triggers[n]), writers[n])
        return GraphSpec(
            channels=channels,
            nodes=nodes,
            input_writes=lambda value: [(START, self.input_schema.input_dict(value))],
            output=lambda values: self._values(state, values),
            result=self._output,
            output_channels=frozenset(state),
            command_writes=lambda cmd: _command_writes(writers[START], cmd),
            update_writes=lambda as_node, value, values: writers[as_node](value, values),
            managed=self.schema.managed,
            result_channels=None if self.output_schema.root
            else frozenset(self.output_schema.channels),
        )

    def _drawing(self) -> GraphDrawing:
        return GraphDrawing(
            nodes=tuple(self.nodes),
            edges=tuple(sorted(self.edges)),
            waiting_edges=tuple(sorted(self.waiting_edges)),
            branches=tuple((src, b.destinations()) for src, bs in self.branches.items()
                           for b in bs),
            ends=tuple((n, d.ends) for n, d in self.nodes.items() if d.ends),
        )

    def _deferred(self, node: str) -> bool:
        return node in self.nodes and self.nodes[node].defer

    def _output(self, values: Mapping[str, Any]) -> Any:
        if self.output_schema.root:
            return values.get(ROOT)
        return {k: values[k] for k in self.output_schema.channels if k in values}

    def _values(self, state: Mapping[str, ChannelSpec], values: Mapping[str, Any]) -> Any:
        """What snapshots and streams show: every state key, private ones included."""
        if self.schema.root:
            return values.get(ROOT)
        return {k: values[k] for k in state if k in values}

    def _start_node(self, writer: NodeWriter) -> NodeSpec:
        return NodeSpec(
            name=START,
            triggers=(START,),
            read=lambda values: values.get(START),
            run=lambda value, values, ctx: writer(value, values),
            updates=writer.updates,
            hidden=True,
        )

    def _node(
        self, name: str, d: _NodeDef, triggers: tuple[str, ...], writer: NodeWriter
    ) -> NodeSpec:
        is_graph = isinstance(d.action, CompiledGraph)
        call = _declared_only(subgraph_runner(d.action), writer) if is_graph else bind(d.action)
        return NodeSpec(
            name=name,
            triggers=triggers,
            read=(d.input or self.schema).read,
            run=lambda value, values, ctx: _writes(
                writer, _result(call, value, ctx), self._with_managed(value, values), ctx),
            updates=writer.updates,
            retry=d.retry,
            subgraph=d.action if is_graph else called_subgraph(d.action, CompiledGraph),
            cache_policy=d.cache_policy,
            cache_ns=(CACHE_NS_WRITES, identifier(d.action), name),
        )


    def _with_managed(self, value: Any, values: Mapping[str, Any]) -> Mapping[str, Any]:
        """Channel values plus the managed values the task got, for its branches."""
        if not self.schema.managed:
            return values
        extra = {}
        for key in self.schema.managed:
            found = value.get(key, MISSING) if isinstance(value, Mapping) \
                else getattr(value, key, MISSING)
            if found is not MISSING:
                extra[key] = found
        return {**values, **extra}


def _declared_only(
    call: Callable[[Any, TaskContext], Any], writer: NodeWriter
) -> Callable[[Any, TaskContext], Any]:
    """A subgraph node's body whose output keeps only the keys this graph declares: the
    subgraph's private keys stay in its own state, silently, as in LangGraph."""
    if writer.schema.root:
        return call

    def run(value: Any, ctx: TaskContext) -> Any:
        out = call(value, ctx)
        return {k: v for k, v in out.items() if k in writer.channels} \
            if isinstance(out, dict) else out

    return run


def _result(call: Callable[[Any, TaskContext], Any], value: Any, ctx: TaskContext) -> Any:
    """A node's result: what it returned, or the ``Command.PARENT`` a subgraph it ran
    sent up (it addresses this graph)."""
    try:
        return call(value, ctx)
    except ParentCommand as sent:
        return sent.command


def _writes(writer: NodeWriter, result: Any, values: Mapping[str, Any], ctx: TaskContext) -> Any:
    """The node's writes; a ``Command.PARENT`` from a root graph's node is refused."""
    try:
        return writer(result, values)
    except ParentCommand:
        if ctx.config.get("configurable", {}).get("checkpoint_ns"):
            raise
        raise InvalidUpdateError(
            f"Node {ctx.name!r} returned Command(graph=Command.PARENT), but its graph runs "
            "as the root graph: there is no parent graph to address; drop graph= to "
            "update this graph.") from None


def _runnable(node: str, action: Any) -> Callable[..., Any]:
    """A LangChain Runnable (anything with ``invoke``) as a node function."""
    invoke = getattr(action, "invoke", None)
    if not callable(invoke):
        raise GraphValueError(
            f"Node {node!r} must be a function, a Runnable or a compiled graph, got "
            f"{type(action).__name__}")

    def run(state: Any, config: Any) -> Any:
        return invoke(state, config)

    return run


def _command_writes(writer: NodeWriter, cmd: Command) -> list[Write]:
    return writer.state_writes(cmd.update) + writer.goto_writes(cmd.goto)
