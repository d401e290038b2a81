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
(channel, version), signed for that place like any value, and a link to its base
(version and depth) beside it, so a read walks the chain in one query or script
and pruning keeps every link a kept value needs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from durable_graph.errors import GraphValueError, SerializationError

__all__ = [
    "DEFAULT_SNAPSHOT_EVERY",
    "ChannelDelta",
    "apply_delta",
    "delta_from_packed",
    "delta_links",
    "diff_lists",
    "follow_links",
    "pack_delta",
    "plan_value",
    "plan_values",
    "resolve",
    "resolve_chains",
    "resolve_values",
    "snapshot_every_of",
]

DEFAULT_SNAPSHOT_EVERY = 200
"""Deltas between two whole snapshots of a channel when the saver is not told."""

Op = tuple[str, Any]
"""``("c", (start, stop))``: copy the base's items ``[start:stop]``; ``("n", items)``: new items."""


@dataclass(frozen=True)
class ChannelDelta:
    """A list channel's value stored as a change to the version stored before it."""

    base: int
    """The version this delta applies to (a whole value or another delta)."""
    depth: int
    """How many deltas a read replays to build this value (this one included)."""
    ops: tuple[Op, ...]
    """How to build the value from the base's value (see ``Op``)."""


def diff_lists(old: Sequence[Any], new: Sequence[Any]) -> tuple[Op, ...]:
    """Ops that rebuild ``new`` from ``old``, copying every item ``new`` shares by identity."""
    where: dict[int, int] = {}
    for i, item in enumerate(old):
        where.setdefault(id(item), i)  # an item the list repeats: its first place
    ops: list[Op] = []
    start = stop = -1
    fresh: list[Any] = []
    for item in new:
        if 0 <= stop < len(old) and old[stop] is item:  # the run goes on (also for repeats)
            stop += 1
            continue
        i = where.get(id(item), -1)
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


def pack_delta(delta: ChannelDelta) -> list[Any]:
    """A delta as one flat msgpack list: ``[base, depth, op, op, ...]``.

    A copy is its two bounds (``start, stop``), new items are one list: ints and
    lists never mix up, so no op needs a name or a tuple around it. (About 20 bytes
    of framing a delta, where the generic dataclass record took about 100.)
    """
    out: list[Any] = [delta.base, delta.depth]
    for kind, arg in delta.ops:
        out.extend(arg if kind == "c" else [list(arg)])
    return out


def delta_from_packed(packed: Any) -> ChannelDelta:
    """The delta ``pack_delta`` flattened; SerializationError if it is not one."""
    if not isinstance(packed, list) or len(packed) < 2 or not all(
        type(x) is int for x in packed[:2]
    ):
        raise SerializationError("a stored channel delta is malformed (no base and depth)")
    ops: list[Op] = []
    rest = iter(packed[2:])
    for item in rest:
        if type(item) is list:
            ops.append(("n", tuple(item)))
            continue
        stop = next(rest, None)
        if type(item) is not int or type(stop) is not int:
            raise SerializationError("a stored channel delta has a malformed copy op")
        ops.append(("c", (item, stop)))
    return ChannelDelta(packed[0], packed[1], tuple(ops))


def _new_items(ops: Sequence[Op]) -> int:
    return sum(len(arg) for kind, arg in ops if kind == "n")


def plan_value(
    old: Any, new: Any, base_depth: int | None, base_version: int, every: int
) -> tuple[Any, int]:
    """What to store for a channel's new value, and its depth (0: a whole value).

    ``old`` is the value stored at ``base_version`` and ``base_depth`` its depth
    (``None`` when unknown). A delta is stored when both are lists, the base's
    depth is known and below ``every``, and it copies at least one item from the
    base; otherwise the whole value.
    """
    if (
        every < 1 or base_depth is None or base_depth >= every
        or type(old) is not list or type(new) is not list or not new
    ):
        return new, 0
    ops = diff_lists(old, new)
    if _new_items(ops) >= len(new):  # nothing copied: the whole value is no bigger
        return new, 0
    return ChannelDelta(base_version, base_depth + 1, ops), base_depth + 1


def plan_values(
    values: Mapping[str, Any],
    new_versions: Mapping[str, int],
    base: tuple[Mapping[str, Any], Mapping[str, int]],
    *,
    depth_of: Callable[[str, int], int | None],
    every: int,
    depths: dict[str, int | None],
) -> dict[str, Any]:
    """A checkpoint's values to store: each changed list channel as a delta where it pays.

    The one plan of the embedded loop and the workers' commits. ``base`` is the
    (values, versions) stored before (the parent's, whole); ``depth_of(channel,
    version)`` the stored depth of a base value (None if not stored: then the whole
    value). ``depths`` caches depths by channel across calls and is updated.
    """
    base_values, base_versions = base
    out = dict(values)
    for ch in new_versions:
        version = base_versions.get(ch)
        if ch not in out or version is None or ch not in base_values:
            depths[ch] = 0
            continue
        if ch not in depths:
            depths[ch] = depth_of(ch, version)
        out[ch], depths[ch] = plan_value(base_values[ch], out[ch], depths[ch], version, every)
    return out


def delta_links(values: Mapping[str, Any]) -> dict[str, tuple[int, int]]:
    """(base version, depth) of each delta among a checkpoint's values to store."""
    return {ch: (v.base, v.depth) for ch, v in values.items() if isinstance(v, ChannelDelta)}


def resolve(channel: str, head: ChannelDelta, links: Sequence[Any]) -> Any:
    """The whole value of a delta from its chain ``links``: its base, the base's base, ...

    Raises SerializationError naming the channel when a link is missing (the chain
    ends before a whole value) or is not what the delta before it names.
    """
    deltas = [head]
    for link in links:
        if not isinstance(link, ChannelDelta):
            break
        deltas.append(link)
    else:
        raise SerializationError(
            f"channel {channel!r}: a stored delta's chain has no whole value at its start "
            "(versions deleted outside prune?); the value cannot be rebuilt"
        )
    if len(deltas) != head.depth:
        raise SerializationError(
            f"channel {channel!r}: a stored delta chain has {len(deltas)} deltas where "
            f"{head.depth} were written; the value cannot be rebuilt"
        )
    value = links[len(deltas) - 1]
    for step in reversed(deltas):
        value = apply_delta(value, step.ops)
    return value


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
    values: dict[str, Any], load: Callable[[str, int], Sequence[Any]]
) -> dict[str, Any]:
    """``values`` with each delta replaced by its whole value.

    ``load(channel, version)`` gives the decoded values of the chain from
    ``version`` back (newest first), up to and including a whole value.
    """
    return _resolve_each(values, lambda channel, head: load(channel, head.base))


def resolve_chains(
    values: dict[str, Any], load: Callable[[str, int], Iterable[tuple[Any, Any]]]
) -> dict[str, Any]:
    """``resolve_values`` for a store that reads each link with its version:
    ``load(channel, version)`` gives (version, decoded value) pairs, newest first,
    checked by ``follow_links`` (read as far as it needs)."""
    return _resolve_each(
        values, lambda channel, head: follow_links(channel, head, load(channel, head.base)))


def _resolve_each(
    values: dict[str, Any], links_of: Callable[[str, ChannelDelta], Sequence[Any]]
) -> dict[str, Any]:
    for channel, head in values.items():
        if isinstance(head, ChannelDelta):
            values[channel] = resolve(channel, head, links_of(channel, head))
    return values


def follow_links(
    channel: str, head: ChannelDelta, found: Iterable[tuple[Any, Any]]
) -> list[Any]:
    """The values of ``head``'s chain from ``found`` ((version, value) pairs read from a
    store, newest first), up to the first whole value or ``head.depth`` of them, each
    checked to be at the version the delta before it names as its base: a store's link
    (unsigned) edited to point elsewhere is refused, never read as the chain.
    """
    out: list[Any] = []
    expected: Any = head.base
    for version, value in found:
        if version != expected or type(version) is not type(expected):
            raise SerializationError(
                f"channel {channel!r}: a stored delta's chain leads to version {version!r} "
                f"where the delta before it names {expected!r} as its base (a link was "
                "edited); the value cannot be rebuilt")
        out.append(value)
        if not isinstance(value, ChannelDelta) or len(out) >= head.depth:
            break
        expected = value.base
    return out
