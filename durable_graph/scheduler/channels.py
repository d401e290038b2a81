"""Channel semantics as pure functions over stored values.

A channel is a named slot in the checkpoint. Its kind decides how a superstep's
writes combine into its next value and when it counts as available (present).

- ``last``: holds the one value written last; two writes in one step are an error.
- ``reducer``: folds every write into the current value with a binary function.
- ``ephemeral``: holds a value for exactly one step (edges, the graph input).
- ``barrier``: available once every named writer has written (fan-in edges).
- ``topic``: the list of packets written in the last step (``Send`` fan-out).
- ``deferred`` and ``deferred_barrier``: an edge (or fan-in edge) to a node added with
  ``defer=True``: kept, but available only once the run would otherwise end (``finish``),
  stored as (value, finished).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from durable_graph.errors import InvalidUpdateError

__all__ = [
    "MISSING",
    "ChannelKind",
    "ChannelSpec",
    "consume",
    "finish",
    "initial",
    "is_available",
    "update",
]


class _Missing:
    """Marks a channel with no value; distinct from a stored ``None``."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final[Any] = _Missing()

ChannelKind = Literal[
    "last", "reducer", "ephemeral", "barrier", "topic", "deferred", "deferred_barrier"
]


@dataclass(frozen=True)
class ChannelSpec:
    """How one channel combines writes."""

    kind: ChannelKind
    """Which combination rule applies."""
    reducer: Callable[[Any, Any], Any] | None = None
    """For ``reducer`` channels: (current, written) -> next."""
    default: Callable[[], Any] | None = None
    """For ``reducer`` channels: the empty value it starts from (e.g. ``list``)."""
    names: frozenset[str] = frozenset()
    """For ``barrier`` channels: the writers it waits for."""


def initial(spec: ChannelSpec) -> Any:
    """The value a channel has before any write: its type's empty value, or MISSING."""
    if spec.kind == "reducer" and spec.default is not None:
        try:
            return spec.default()
        except Exception:
            return MISSING
    if spec.kind == "barrier":
        return frozenset()
    if spec.kind == "deferred_barrier":
        return (frozenset(), False)
    return MISSING


def is_available(spec: ChannelSpec, value: Any) -> bool:
    """Whether a node triggered by this channel may run on it."""
    if spec.kind == "barrier":
        return value is not MISSING and spec.names <= set(value)
    if spec.kind == "topic":
        return bool(value) and value is not MISSING
    if spec.kind == "deferred":
        return value is not MISSING and bool(value[1])
    if spec.kind == "deferred_barrier":
        return value is not MISSING and bool(value[1]) and spec.names <= set(value[0])
    return value is not MISSING


def update(spec: ChannelSpec, key: str, current: Any, values: Sequence[Any]) -> tuple[Any, bool]:
    """Combine one step's writes into the channel; returns (next value, changed)."""
    return _UPDATES[spec.kind](spec, key, current, values)


def _update_last(spec: ChannelSpec, key: str, current: Any, values: Sequence[Any]) -> Any:
    if not values:
        return current, False
    if len(values) > 1:
        raise InvalidUpdateError(
            f"At key {key!r}: can receive only one value per step. Give it a reducer "
            f"(Annotated[type, reducer]) to combine parallel writes."
        )
    return values[-1], True


def _update_reducer(spec: ChannelSpec, key: str, current: Any, values: Sequence[Any]) -> Any:
    if not values:
        return current, False
    assert spec.reducer is not None
    if current is MISSING:  # start from the type's empty value, as LangGraph does
        current = initial(spec)
    acc = values[0] if current is MISSING else spec.reducer(current, values[0])
    for v in values[1:]:
        acc = spec.reducer(acc, v)
    return acc, True


def _update_barrier(spec: ChannelSpec, key: str, current: Any, values: Sequence[Any]) -> Any:
    unknown = [v for v in values if v not in spec.names]
    if unknown:
        raise InvalidUpdateError(f"At key {key!r}: unexpected writers {unknown}")
    seen = frozenset(current if current is not MISSING else ()) | frozenset(values)
    return seen, seen != current


def _update_ephemeral(spec: ChannelSpec, key: str, current: Any, values: Sequence[Any]) -> Any:
    """The last step's write; cleared by a step that writes none."""
    if values:
        return values[-1], True
    return MISSING, current is not MISSING


def _update_topic(spec: ChannelSpec, key: str, current: Any, values: Sequence[Any]) -> Any:
    """The last step's writes, all of them; cleared by a step that writes none."""
    if values:
        return list(values), True
    return MISSING, current is not MISSING


def _update_deferred(spec: ChannelSpec, key: str, current: Any, values: Sequence[Any]) -> Any:
    """Keeps the last write, not available until the run finishes."""
    if not values:
        return current, False
    return (values[-1], False), True


def _update_deferred_barrier(
    spec: ChannelSpec, key: str, current: Any, values: Sequence[Any]
) -> Any:
    seen, finished = current if current is not MISSING else (frozenset(), False)
    new, changed = _update_barrier(spec, key, seen, values)
    return ((new, finished), True) if changed else (current, False)


_UPDATES: dict[str, Callable[[ChannelSpec, str, Any, Sequence[Any]], tuple[Any, bool]]] = {
    "last": _update_last,
    "reducer": _update_reducer,
    "barrier": _update_barrier,
    "ephemeral": _update_ephemeral,
    "topic": _update_topic,
    "deferred": _update_deferred,
    "deferred_barrier": _update_deferred_barrier,
}


def consume(spec: ChannelSpec, current: Any) -> tuple[Any, bool]:
    """Reset a channel a node just ran on, if its kind resets (barriers do)."""
    if spec.kind == "barrier" and current:
        return frozenset(), True
    if spec.kind in ("deferred", "deferred_barrier") and is_available(spec, current):
        return initial(spec), True
    return current, False


def finish(spec: ChannelSpec, current: Any) -> tuple[Any, bool]:
    """The run is about to end: a deferred channel holding a value becomes available."""
    if spec.kind == "deferred" and current is not MISSING and not current[1]:
        return (current[0], True), True
    if spec.kind == "deferred_barrier" and current is not MISSING and not current[1] \
            and spec.names <= set(current[0]):
        return (current[0], True), True
    return current, False
