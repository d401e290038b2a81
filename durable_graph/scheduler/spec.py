"""What the scheduler runs: a graph compiled down to channels and nodes.

The user-facing builders (``StateGraph``, ``@entrypoint``) compile to a ``GraphSpec``;
the scheduler only ever sees this form, so planning and the step loop know nothing
about state schemas, edges or function signatures.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from durable_graph.scheduler.channels import MISSING, ChannelSpec

if TYPE_CHECKING:
    from durable_graph.scheduler.runtime import TaskContext
    from durable_graph.types import CachePolicy, Command, ManagedValue, RetryPolicy

__all__ = ["TASKS", "GraphSpec", "NodeRun", "NodeSpec", "Write"]

TASKS = "__pregel_tasks"
"""Channel holding the ``Send`` packets of the next superstep."""

Write = tuple[str, Any]
NodeRun = Callable[[Any, Mapping[str, Any], "TaskContext"], list[Write]]
"""(node input, channel values it was planned on, task context) -> its writes."""


@dataclass(frozen=True)
class NodeSpec:
    """One node: when it runs, what it reads, and how it turns its result into writes."""

    name: str
    """Unique node name."""
    triggers: tuple[str, ...]
    """Channels whose new versions make the node run."""
    read: Callable[[Mapping[str, Any]], Any]
    """Channel values -> the node's input."""
    run: NodeRun
    """Runs the node and returns its writes."""
    updates: Callable[[Sequence[Write]], Any]
    """A task's writes -> what the ``updates`` stream shows for it."""
    retry: RetryPolicy | None = None
    """Retry policy for this node's tasks."""
    hidden: bool = False
    """Internal nodes (the input node) stream no updates and are never breakpoints."""
    subgraph: Any = None
    """The compiled graph this node runs, if it is a subgraph."""
    cache_policy: CachePolicy[Any] | None = None
    """Cache this node's writes by its input (when the graph has a cache)."""
    cache_ns: tuple[str, ...] = ()
    """The cache namespace of its entries: (writes marker, function, node name)."""
    cache_input: Callable[[Any], Any] | None = None
    """The part of its input its cache key is made of (None: all of it)."""


@dataclass(frozen=True)
class GraphSpec:
    """A compiled graph: channels, nodes, and how input and output map onto channels."""

    channels: Mapping[str, ChannelSpec]
    """Every channel by name."""
    nodes: Mapping[str, NodeSpec]
    """Every node by name, internal ones included."""
    input_writes: Callable[[Any], list[Write]]
    """Run input -> writes of the input step (raises on input the graph cannot take)."""
    output: Callable[[Mapping[str, Any]], Any]
    """Channel values -> the run's output (and a snapshot's ``values``)."""
    result: Callable[[Mapping[str, Any]], Any] | None = None
    """Channel values -> what ``invoke`` returns, when it differs from ``output`` (a
    graph's output schema); ``output`` stays what snapshots and streams show."""
    output_channels: frozenset[str] = field(default_factory=frozenset)
    """Channels whose update makes the ``values`` stream emit."""
    command_writes: Callable[[Command], list[Write]] | None = None
    """A ``Command`` input's update and goto -> writes (None: the graph takes none)."""
    update_writes: Callable[[str, Any, Mapping[str, Any]], list[Write]] | None = None
    """``update_state(values, as_node)`` -> writes, given the current channel values."""
    managed: Mapping[str, type[ManagedValue]] = field(default_factory=dict)
    """State keys the scheduler computes for each step (``RemainingSteps``, ...)."""
    result_channels: frozenset[str] | None = None
    """The channels ``result`` reads (an output schema's), when it differs from ``output``."""

    def values_chunk(
        self, values: Mapping[str, Any], updated: frozenset[str] | None, *, as_result: bool
    ) -> Any:
        """A ``values`` stream chunk, or MISSING when the step wrote none of its channels
        (``updated`` None: always): the state, or with ``as_result`` what ``invoke``
        returns (LangGraph's nested ``invoke`` streams its output schema's keys)."""
        channels = (self.result_channels or self.output_channels) if as_result \
            else self.output_channels
        if updated is not None and not updated & channels:
            return MISSING
        return self.run_result(values) if as_result else self.output(values)

    def updates_kept(self, as_result: bool) -> frozenset[str] | None:
        """The keys ``updates`` chunks show: with ``as_result`` (a nested ``invoke``, or
        ``invoke(stream_mode=...)``) the output schema's, if it has one; None: all."""
        return self.result_channels if as_result else None

    def run_result(self, values: Mapping[str, Any]) -> Any:
        """What ``invoke`` returns for these channel values."""
        return (self.result or self.output)(values)
