"""Delta storage for list channels: store what a step changed, not the whole list.

A channel whose reducer appends (``operator.add`` on lists, ``add_messages``, or
any reducer that builds the new list from the old one's items) is stored as a
``ChannelDelta`` against the version stored before it: ranges copied from that
base plus the items that are new (an ``add_messages`` edit is a copy, one new
item, a copy; a removal is two copies). Every ``snapshot_every`` deltas the whole
list is stored again, so a read replays at most that many deltas.

Items are matched by identity, never by equality: a reducer that returns the old
items plus new ones hands the same objects back, and an item that is merely equal
(``1`` and ``True``) is stored as new, so a read gives exactly what whole-value
storage would. The plan is pure; stores only keep each delta as the value of its
(channel, version), signed for that place like any value, and its ``chain`` (the
versions it needs) so pruning keeps them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from durable_graph.errors import GraphValueError, SerializationError

__all__ = [
    "DEFAULT_SNAPSHOT_EVERY",
    "ChannelDelta",
    "apply_delta",
    "chain_versions",
    "diff_lists",
    "plan_value",
    "resolve",
    "resolve_values",
    "snapshot_every_of",
]

DEFAULT_SNAPSHOT_EVERY = 50
"""Deltas between two whole snapshots of a channel when the saver is not told."""

Op = tuple[str, Any]
"""``("c", (start, stop))``: copy the base's items ``[start:stop]``; ``("n", items)``: new items."""


@dataclass(frozen=True)
class ChannelDelta:
    """A list channel's value stored as a change to the version stored before it."""

    chain: tuple[int, ...]
    """Versions this delta needs, oldest first: a whole snapshot, then deltas up to the base."""
    ops: tuple[Op, ...]
    """How to build the value from the base's value (see ``Op``)."""


def diff_lists(old: Sequence[Any], new: Sequence[Any]) -> tuple[Op, ...]:
    """Ops that rebuild ``new`` from ``old``, copying every item ``new`` shares by identity."""
    where = {id(item): i for i, item in enumerate(old)}
    ops: list[Op] = []
    start = stop = -1
    fresh: list[Any] = []
    for item in new:
        i = where.get(id(item), -1)
        if i >= 0 and i == stop:
            stop += 1
            continue
        if start >= 0:
            ops.append(("c", (start, stop)))
            start = stop = -1
        if i >= 0:
            if fresh:
                ops.append(("n", tuple(fresh)))
                fresh = []
            start, stop = i, i + 1
        else:
            fresh.append(item)
    if start >= 0:
        ops.append(("c", (start, stop)))
    if fresh:
        ops.append(("n", tuple(fresh)))
    return tuple(ops)


def apply_delta(base: Sequence[Any], ops: Sequence[Op]) -> list[Any]:
    """The list ``ops`` describe, built from ``base``."""
    out: list[Any] = []
    for kind, arg in ops:
        if kind == "c":
            out.extend(base[arg[0]:arg[1]])
        elif kind == "n":
            out.extend(arg)
        else:
            raise SerializationError(f"a stored channel delta has an unknown op {kind!r}")
    return out


def _new_items(ops: Sequence[Op]) -> int:
    return sum(len(arg) for kind, arg in ops if kind == "n")


def plan_value(
    old: Any, new: Any, base_chain: tuple[int, ...] | None, base_version: int, every: int
) -> tuple[Any, tuple[int, ...]]:
    """What to store for a channel's new value, and the chain of what is stored.

    ``old`` is the value stored at ``base_version`` and ``base_chain`` its chain
    (``()`` for a whole value, ``None`` when unknown). A delta is stored when both
    are lists, the base's chain is known and shorter than ``every``, and it copies at
    least one item from the base; otherwise the whole value (chain ``()``).
    """
    if (
        every < 1 or base_chain is None or len(base_chain) >= every
        or type(old) is not list or type(new) is not list or not new
    ):
        return new, ()
    ops = diff_lists(old, new)
    if _new_items(ops) >= len(new):  # nothing copied: the whole value is no bigger
        return new, ()
    chain = (*base_chain, base_version)
    return ChannelDelta(chain, ops), chain


def chain_versions(values: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """The chain of each delta among a checkpoint's values to store."""
    return {ch: v.chain for ch, v in values.items() if isinstance(v, ChannelDelta)}


def resolve(
    channel: str, head: ChannelDelta, load: Callable[[Sequence[int]], Mapping[int, Any]]
) -> Any:
    """The whole value of a delta: load its chain (one call) and replay it.

    Raises SerializationError naming the channel when a needed version is missing
    or the chain does not start with a whole value.
    """
    loaded = load(head.chain)
    missing = [v for v in head.chain if v not in loaded]
    if missing:
        raise SerializationError(
            f"channel {channel!r}: the stored delta needs versions {missing} that are gone "
            "from the store (deleted outside prune?); the value cannot be rebuilt"
        )
    value = loaded[head.chain[0]]
    if isinstance(value, ChannelDelta):
        raise SerializationError(
            f"channel {channel!r}: a delta chain does not start with a whole value")
    for version in head.chain[1:]:
        step = loaded[version]
        if not isinstance(step, ChannelDelta):
            raise SerializationError(
                f"channel {channel!r}: version {version} in a delta chain is not a delta")
        value = apply_delta(value, step.ops)
    return apply_delta(value, head.ops)


def snapshot_every_of(delta: bool, snapshot_every: int) -> int:
    """A saver's ``snapshot_every`` from its ``delta=`` and ``snapshot_every=`` arguments."""
    if not isinstance(delta, bool):
        raise GraphValueError(f"delta must be True or False, got {delta!r}")
    if isinstance(snapshot_every, bool) or not isinstance(snapshot_every, int) \
            or snapshot_every < 1:
        raise GraphValueError(
            f"snapshot_every must be an int of at least 1 (deltas between whole values), "
            f"got {snapshot_every!r}"
        )
    return snapshot_every if delta else 0


def resolve_values(
    values: dict[str, Any], load: Callable[[str, Sequence[int]], Mapping[int, Any]]
) -> dict[str, Any]:
    """``values`` with each delta replaced by its whole value; ``load(channel, versions)``."""
    for channel, head in values.items():
        if isinstance(head, ChannelDelta):
            values[channel] = resolve(channel, head, functools.partial(load, channel))
    return values
