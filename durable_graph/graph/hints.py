"""What a node's type hints say, read as LangGraph reads them.

The type of the first parameter, when it is a class with annotated fields, is the
node's input schema (LangGraph's "private state"); a return type of
``Command[Literal["a", "b"]]`` (alone or in a union) names where the node may go,
which the drawn graph shows as its edges.
"""

from __future__ import annotations

import inspect
import types
from dataclasses import dataclass
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from durable_graph.types import Command

__all__ = ["NodeHints", "node_hints"]


@dataclass(frozen=True)
class NodeHints:
    """What a node's annotations declare."""

    input_schema: Any = None
    """The class of its first parameter when that class declares fields, else None."""
    ends: tuple[tuple[str, str | None], ...] = ()
    """The destinations of a ``Command[Literal[...]]`` return type (no labels)."""


def node_hints(action: Any) -> NodeHints:
    """The hints of a node function or callable object (none for anything else)."""
    call = getattr(action, "__call__", None)  # noqa: B004 - LangGraph's test, kept
    if not (inspect.isfunction(action) or inspect.ismethod(action) or inspect.ismethod(call)):
        return NodeHints()
    try:
        hints = get_type_hints(call) or get_type_hints(action)
        if not hints:
            return NodeHints()
        first = next(iter(inspect.signature(action).parameters), None)
    except (NameError, TypeError, ValueError):
        return NodeHints()
    return NodeHints(_schema_of(hints.get(first) if first else None),
                     _command_ends(hints.get("return")))


def _schema_of(hint: Any) -> Any:
    if not isinstance(hint, type):
        return None
    try:
        return hint if get_type_hints(hint) else None
    except (NameError, TypeError):
        return None


def _command_ends(hint: Any) -> tuple[tuple[str, str | None], ...]:
    if get_origin(hint) in (Union, types.UnionType):
        hint = next((a for a in get_args(hint) if get_origin(a) is Command), hint)
    if get_origin(hint) is not Command:
        return ()
    args = get_args(hint)
    if not args or get_origin(args[0]) is not Literal:
        return ()
    return tuple((str(v), None) for v in get_args(args[0]))
