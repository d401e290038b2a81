"""State schemas (TypedDict, dataclass, pydantic) -> channels, and back to node input."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Iterable, Mapping
from typing import Annotated, Any, get_args, get_origin, get_type_hints

from durable_graph.errors import GraphTypeError, GraphValueError, InvalidUpdateError
from durable_graph.scheduler.channels import ChannelSpec
from durable_graph.types import ManagedValue

__all__ = ["ROOT", "StateSchema", "merge_channels"]

ROOT = "__root__"
"""The one channel of a state that is a single value (``StateGraph(Annotated[list, add])``)."""


def _managed(hint: Any) -> type[ManagedValue] | None:
    """The manager of a ``RemainingSteps``-style key, or None for a stored key."""
    if get_origin(hint) is Annotated:
        for m in get_args(hint)[1:]:
            if isinstance(m, type) and issubclass(m, ManagedValue):
                return m
    return None


def _is_reducer(obj: Any) -> bool:
    if not callable(obj):
        return False
    try:
        params = [
            p for p in inspect.signature(obj).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
    except (TypeError, ValueError):  # builtins such as operator.add
        return True
    return len(params) == 2


def _empty_value(base: Any) -> Callable[[], Any] | None:
    origin = get_origin(base) or base
    return origin if isinstance(origin, type) else None


def _channel(hint: Any) -> ChannelSpec:
    if get_origin(hint) is Annotated:
        base, *meta = get_args(hint)
        for m in reversed(meta):
            if _is_reducer(m):
                return ChannelSpec("reducer", reducer=m, default=_empty_value(base))
    return ChannelSpec("last")


class StateSchema:
    """A state type's keys, their channels, and how node input is built from values."""

    def __init__(self, schema: Any) -> None:
        self.schema = schema
        self.managed: dict[str, type[ManagedValue]] = {}
        """Keys the scheduler computes each step; never stored or written."""
        self.root = not hasattr(schema, "__annotations__")
        """The state is one value (a reducer-typed list, say), not a record of keys."""
        self.channels: dict[str, ChannelSpec]
        if self.root:
            self.channels = {ROOT: _channel(schema)}
            self.keys = frozenset(self.channels)
            self._is_model = False
            return
        try:
            hints = get_type_hints(schema, include_extras=True)
        except Exception as exc:
            raise GraphTypeError(
                f"cannot read the fields of state schema {schema!r}: {exc}") from exc
        if hasattr(schema, "model_fields"):
            hints = {k: v for k, v in hints.items() if k in schema.model_fields}
        if not hints:
            raise GraphTypeError(
                f"state schema {schema!r} declares no fields: use a TypedDict, dataclass "
                "or pydantic model with annotated keys"
            )
        self.managed = {k: m for k, h in hints.items() if (m := _managed(h)) is not None}
        self.channels = {
            k: _channel(h) for k, h in hints.items() if k not in self.managed
        }
        self.keys = frozenset(self.channels)
        self._is_model = hasattr(schema, "model_validate") or dataclasses.is_dataclass(schema)

    def read(self, values: Mapping[str, Any]) -> Any:
        """The state a node receives: a dict, or an instance of a model schema (or the
        value itself for a one-value state)."""
        if self.root:
            return values.get(ROOT)
        state = {k: values[k] for k in [*self.channels, *self.managed] if k in values}
        return self.schema(**state) if self._is_model else state

    def to_dict(self, node: str, update: Any) -> dict[str, Any]:
        """A node's update as a dict; the error names the node and what was wrong."""
        if self.root:
            return {ROOT: update}
        if isinstance(update, Mapping):
            data = dict(update)
        elif self._is_model and isinstance(update, self.schema):
            data = _fields_of(update)
        else:
            raise InvalidUpdateError(
                f"Node {node!r} returned {type(update).__name__} ({update!r:.80}); a node "
                "must return a dict of state updates, a Command, or None."
            )
        data = {k: v for k, v in data.items() if k not in self.managed}
        return data

    def input_dict(self, value: Any) -> dict[str, Any]:
        """Graph input as a dict of known keys (other keys are ignored, as in LangGraph);
        a one-value state takes the input as it is."""
        if self.root:
            return value  # type: ignore[no-any-return]
        if isinstance(value, Mapping):
            data = dict(value)
        elif dataclasses.is_dataclass(value) or hasattr(value, "model_dump"):
            data = _fields_of(value)
        else:
            raise InvalidUpdateError(
                f"Graph input must be a dict of state keys, got {type(value).__name__}."
            )
        return {k: v for k, v in data.items() if k in self.keys}


def merge_channels(schemas: Iterable[StateSchema]) -> dict[str, ChannelSpec]:
    """The channels of all a graph's schemas (state, input, output, node inputs), in order.

    A key declared twice keeps its first channel; a second declaration may only be a
    plain key or the same reducer (as in LangGraph).
    """
    channels: dict[str, ChannelSpec] = {}
    for schema in schemas:
        for key, channel in schema.channels.items():
            known = channels.setdefault(key, channel)
            if known != channel and channel.kind != "last":
                raise GraphValueError(
                    f"Channel {key!r} already exists with a different type: declare the same "
                    f"reducer for it in {getattr(schema.schema, '__name__', schema.schema)}."
                )
    return channels


def _fields_of(obj: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    fields = getattr(type(obj), "model_fields", {})
    return {k: getattr(obj, k) for k in fields}
