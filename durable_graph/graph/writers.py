"""What a StateGraph node's result becomes: state writes, edge triggers, branches, Sends."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from durable_graph.errors import InvalidUpdateError, ParentCommand
from durable_graph.graph.drawing import Ends, path_ends
from durable_graph.graph.schema import ROOT, StateSchema
from durable_graph.scheduler.channels import MISSING, ChannelSpec, update
from durable_graph.scheduler.spec import TASKS, Write
from durable_graph.types import END, Command, Send

__all__ = ["Branch", "NodeWriter", "branch_channel"]

logger = logging.getLogger(__name__)


def branch_channel(node: str) -> str:
    """The channel whose write makes ``node`` run in the next superstep."""
    return f"branch:to:{node}"


@dataclass(frozen=True)
class Branch:
    """A conditional edge: ``path(state)`` names where to go, through ``path_map``."""

    path: Callable[..., Any]
    path_map: Mapping[Any, str] | None

    def destinations(self) -> Ends | None:
        """Where it may go, with labels, for the drawn graph (None: unknown)."""
        if self.path_map is not None:
            return tuple((dest, str(key)) for key, dest in self.path_map.items())
        return path_ends(self.path)

    def writes(self, source: str, state: Any, nodes: frozenset[str]) -> list[Write]:
        """Writes that trigger the destinations ``path`` chose."""
        result = self.path(state)
        items = result if isinstance(result, (list, tuple)) else [result]
        out: list[Write] = []
        for item in items:
            if isinstance(item, Send):
                out.append(_send_write(item, nodes))
                continue
            dest = item
            if self.path_map is not None:
                if item not in self.path_map:
                    raise InvalidUpdateError(
                        f"Conditional edge from {source!r} returned {item!r}, which its path "
                        f"map {dict(self.path_map)} does not list."
                    )
                dest = self.path_map[item]
            out.extend(_goto_write(source, dest, nodes))
        return out


def _send_write(send: Send, nodes: frozenset[str]) -> Write:
    if send.node not in nodes:
        raise InvalidUpdateError(f"Send to unknown node {send.node!r}; known: {sorted(nodes)}")
    return (TASKS, send)


def _goto_write(source: str, dest: Any, nodes: frozenset[str]) -> list[Write]:
    if isinstance(dest, Send):
        return [_send_write(dest, nodes)]
    if dest == END:
        return []
    if dest not in nodes:
        raise InvalidUpdateError(
            f"{source!r} routed to unknown node {dest!r}; known nodes: {sorted(nodes)}"
        )
    return [(branch_channel(dest), None)]


@dataclass(frozen=True)
class NodeWriter:
    """Turns one node's return value into its writes."""

    name: str
    schema: StateSchema
    """The graph's state schema: what its conditional edges read."""
    nodes: frozenset[str]
    static: tuple[Write, ...]
    """Writes of its plain edges, made on every run."""
    branches: tuple[Branch, ...]
    channels: Mapping[str, ChannelSpec] = field(default_factory=dict)
    """Every state key any schema of the graph declares (private and I/O keys too)."""
    strict: bool = False
    """Raise ``InvalidUpdateError`` on an undeclared key instead of ignoring it."""

    def __call__(self, result: Any, values: Mapping[str, Any]) -> list[Write]:
        """Writes for ``result`` (dict, state object, Command, list of Commands, None)."""
        writes: list[Write] = []
        gotos: list[Write] = []
        parts = result if _is_command_list(result) else [result]
        for part in parts:
            if isinstance(part, Command):
                if part.graph is not None:
                    raise _to_parent(self.name, part)
                writes += self.state_writes(part.update)
                gotos += self.goto_writes(part.goto)
            else:
                writes += self.state_writes(part)
        writes += gotos
        writes += self.static
        if self.branches:
            state = self.schema.read(fresh_values(self.channels, values, writes))
            for branch in self.branches:
                writes += branch.writes(self.name, state, self.nodes)
        return writes

    def state_writes(self, update_: Any) -> list[Write]:
        """A state update (dict, state object, list of pairs) as writes of declared keys."""
        if update_ is None:
            return []
        if self.schema.root:
            return list(self.schema.to_dict(self.name, update_).items())
        if isinstance(update_, (list, tuple)) and all(
            isinstance(p, tuple) and len(p) == 2 for p in update_
        ):
            pairs = [(k, v) for k, v in update_]
        else:
            pairs = list(self.schema.to_dict(self.name, update_).items())
        unknown = sorted({str(k) for k, _ in pairs if k not in self.channels})
        if not unknown:
            return pairs
        if self.strict:
            raise InvalidUpdateError(
                f"Node {self.name!r} wrote unknown state key(s) {unknown}; the graph's "
                f"schemas declare {sorted(self.channels)}."
            )
        logger.warning(
            "Node %r wrote key(s) %s that no state schema declares; ignored, as LangGraph "
            "does (compile(strict_updates=True) raises instead).", self.name, unknown)
        return [(k, v) for k, v in pairs if k in self.channels]

    def goto_writes(self, goto: Any) -> list[Write]:
        """A Command's goto as writes."""
        targets = goto if isinstance(goto, (list, tuple)) else [goto]
        out: list[Write] = []
        for dest in targets:
            out.extend(_goto_write(self.name, dest, self.nodes))
        return out

    def updates(self, writes: Sequence[Write]) -> Any:
        """The ``updates`` stream payload: state keys this node wrote, or None (the value
        itself for a one-value state)."""
        if self.schema.root:
            return next((v for k, v in writes if k == ROOT), None)
        shown = {k: v for k, v in writes if k in self.channels}
        return shown or None


def _to_parent(node: str, cmd: Command[Any]) -> ParentCommand:
    """The signal carrying ``cmd`` to the parent graph (``graph=Command.PARENT`` only)."""
    if cmd.graph != Command.PARENT:
        raise InvalidUpdateError(
            f"Node {node!r} returned Command(graph={cmd.graph!r}); the only graph a "
            "Command can address besides its own is Command.PARENT.")
    return ParentCommand(dataclasses.replace(cmd, graph=None))


def _is_command_list(result: Any) -> bool:
    return isinstance(result, list) and bool(result) and all(isinstance(r, Command) for r in result)


def fresh_values(
    channels: Mapping[str, ChannelSpec], values: Mapping[str, Any], writes: Sequence[Write]
) -> dict[str, Any]:
    """Channel values with one node's own state writes applied (for its branches)."""
    fresh = dict(values)
    grouped: dict[str, list[Any]] = {}
    for key, value in writes:
        if key in channels:
            grouped.setdefault(key, []).append(value)
    for key, vals in grouped.items():
        new, _ = update(channels[key], key, fresh.get(key, MISSING), vals)
        if new is not MISSING:
            fresh[key] = new
    return fresh
