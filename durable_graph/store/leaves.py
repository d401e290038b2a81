"""Leaf dedup: one copy of a large string or bytes leaf per thread; pure, no I/O.

A chat's new message is stored three times over without it: in the input channel
(``__start__``), in the pending write of the task that consumed it, and in the
``messages`` delta. ``split_leaves`` replaces each ``str`` or ``bytes`` leaf of at
least ``LEAF_MIN`` bytes inside plain containers (exact ``dict``, ``list``,
``tuple``, and the new items of a ``ChannelDelta``) with a ``LeafRef``: the
SHA-256 of its stored bytes. Pydantic models (a LangChain message) are walked too:
a copy of the model (``model_copy``, not validated) holds the references, as the
serializer stores a model field by field. The store keeps each leaf once per thread, with a
count of the value and write rows that refer to it, and drops it when the last
one goes (prune, TTL, ``delete_thread``). ``join_leaves`` puts the leaves back.

Integrity: a value's bytes (signed for their place by a signing serializer) hold
the digest, and a leaf is accepted only if its bytes hash to that digest, so a
signature still proves where every byte belongs. Leaves inside other objects
(dataclasses, whose ``__init__`` may check its fields) are stored in place, as before.

Only serializers that know ``LeafRef`` (``TypedSerializer``, or a
``SignedSerializer`` over one) get dedup: ``dedups_leaves`` says which.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from durable_graph.errors import SerializationError
from durable_graph.store.delta import ChannelDelta
from durable_graph.types import START

__all__ = [
    "LEAF_MIN",
    "LeafBank",
    "LeafRef",
    "apart_in",
    "dedups_leaves",
    "digests_of",
    "join_found",
    "join_leaves",
    "leaf_bytes",
    "leaf_value",
    "pack_digests",
    "resolve_leaves",
    "split_leaves",
    "unpack_digests",
]

LEAF_MIN = 256
"""Shortest leaf (bytes, UTF-8 for text) stored apart; a shorter one costs less inline."""
_STR, _BYTES = b"s", b"b"
_DIGEST = 32


@dataclass(frozen=True, slots=True)
class LeafRef:
    """Where a value held a large leaf: the SHA-256 of the leaf's stored bytes."""

    digest: bytes


def leaf_bytes(leaf: str | bytes) -> bytes:
    """A leaf as stored: a kind byte (text or bytes), then its bytes."""
    return _STR + leaf.encode("utf-8") if isinstance(leaf, str) else _BYTES + leaf


def leaf_value(stored: bytes, digest: bytes) -> str | bytes:
    """Inverse of ``leaf_bytes``, checked against ``digest``; SerializationError if it fails."""
    stored = bytes(stored)
    if hashlib.sha256(stored).digest() != digest:
        raise SerializationError(
            f"stored leaf {digest.hex()[:16]}... does not match its content hash: it was "
            "altered or swapped. Refused; nothing was run.")
    if stored[:1] == _STR:
        return stored[1:].decode("utf-8")
    if stored[:1] == _BYTES:
        return stored[1:]
    raise SerializationError(f"stored leaf {digest.hex()[:16]}... has an unknown kind")


def _is_big(obj: Any) -> bool:
    kind = type(obj)
    return (kind is str and len(obj) >= LEAF_MIN // 4 and len(obj.encode("utf-8")) >= LEAF_MIN) \
        or (kind is bytes and len(obj) >= LEAF_MIN)


_SCALARS = frozenset({int, float, bool, str, bytes, type(None)})


def _is_model(obj: Any) -> bool:
    """A pydantic model, which the serializer stores field by field (as ``serde`` tells)."""
    return type(obj) not in _SCALARS and hasattr(obj, "model_dump") \
        and hasattr(type(obj), "model_validate") \
        and isinstance(getattr(obj, "__dict__", None), dict)


def _model_fields(obj: Any) -> dict[str, Any]:
    return {k: obj.__dict__[k] for k in type(obj).model_fields if k in obj.__dict__}


def _split_container(
    value: Any, leaves: dict[bytes, bytes], allow: Callable[[bytes], bool] | None
) -> Any:
    """A list, tuple or dict with its leaves split; itself when it holds none."""
    if type(value) is dict:
        out = {k: split_leaves(v, leaves, allow) for k, v in value.items()}
        return value if all(out[k] is v for k, v in value.items()) else out
    items = [split_leaves(v, leaves, allow) for v in value]
    if all(a is b for a, b in zip(items, value, strict=True)):
        return value
    return items if type(value) is list else tuple(items)


def split_leaves(
    value: Any, leaves: dict[bytes, bytes], allow: Callable[[bytes], bool] | None = None
) -> Any:
    """``value`` with its large leaves as ``LeafRef``; each leaf added to ``leaves``
    (digest to stored bytes). Containers holding none are returned as they are.

    ``allow(digest)``, when given, says which leaves go apart; the others stay in
    place (see ``apart_in``).
    """
    if _is_big(value):
        stored = leaf_bytes(value)
        digest = hashlib.sha256(stored).digest()
        if allow is not None and not allow(digest):
            return value
        leaves[digest] = stored
        return LeafRef(digest)
    kind = type(value)
    if kind is list or kind is tuple or kind is dict:
        return _split_container(value, leaves, allow)
    if kind is ChannelDelta:
        ops = tuple((op, split_leaves(arg, leaves, allow) if op == "n" else arg)
                    for op, arg in value.ops)
        return ChannelDelta(value.base, value.depth, ops)
    if _is_model(value):
        fields = _model_fields(value)
        changed = {k: new for k, v in fields.items()
                   if (new := split_leaves(v, leaves, allow)) is not v}
        return value.model_copy(update=changed) if changed else value
    return value


def apart_in(
    items: Sequence[tuple[str, Any]], kept: Callable[[bytes], bool]
) -> list[tuple[Any, dict[bytes, bytes]]]:
    """Each (channel, value) of a checkpoint's values or a task's writes as its value
    with the leaves worth keeping apart as references, and those leaves.

    A leaf goes apart when it comes in through the input channel (``__start__``: a
    node will write it again and a channel keep it) or the thread already keeps it
    apart (``kept(digest)``, or earlier in ``values``); any other leaf stays in its
    value, where one copy costs least (an appended log line is stored once anyway).
    """
    held: dict[bytes, bytes] = {}
    out: list[tuple[Any, dict[bytes, bytes]]] = [(v, {}) for _, v in items]
    for i in sorted(range(len(items)), key=lambda i: items[i][0] != START):  # input first
        own: dict[bytes, bytes] = {}
        allow = None if items[i][0] == START else (lambda d: d in held or kept(d))
        out[i] = (split_leaves(items[i][1], own, allow), own)
        held.update(own)
    return out


def digests_of(value: Any, out: set[bytes] | None = None) -> set[bytes]:
    """Every ``LeafRef`` digest inside a decoded ``value``."""
    found: set[bytes] = set() if out is None else out
    kind = type(value)
    if kind is LeafRef:
        found.add(value.digest)
    elif kind is list or kind is tuple:
        for v in value:
            digests_of(v, found)
    elif kind is dict:
        for v in value.values():
            digests_of(v, found)
    elif kind is ChannelDelta:
        for op, arg in value.ops:
            if op == "n":
                digests_of(arg, found)
    elif _is_model(value):
        for v in _model_fields(value).values():
            digests_of(v, found)
    return found


def join_leaves(value: Any, leaf: Callable[[bytes], str | bytes]) -> Any:
    """``value`` with each ``LeafRef`` replaced by ``leaf(digest)``."""
    kind = type(value)
    if kind is LeafRef:
        return leaf(value.digest)
    if kind is list:
        for i, v in enumerate(value):
            value[i] = join_leaves(v, leaf)
        return value
    if kind is tuple:
        return tuple(join_leaves(v, leaf) for v in value)
    if kind is dict:
        for k, v in value.items():
            value[k] = join_leaves(v, leaf)
        return value
    if _is_model(value):  # a decoded model: its own copy, changed in place
        for k, v in _model_fields(value).items():
            value.__dict__[k] = join_leaves(v, leaf)
    return value


def pack_digests(digests: Iterable[bytes]) -> bytes | None:
    """The digests a stored row refers to, as one column (None for none)."""
    joined = b"".join(sorted(set(digests)))
    return joined or None


def unpack_digests(stored: bytes | None) -> list[bytes]:
    """Inverse of ``pack_digests``."""
    if not stored:
        return []
    raw = bytes(stored)
    return [raw[i:i + _DIGEST] for i in range(0, len(raw), _DIGEST)]


def dedups_leaves(serde: Any) -> bool:
    """Whether ``serde`` stores a ``LeafRef`` (the built-in serializers, signed or not)."""
    from durable_graph.store.codec import SignedSerializer
    from durable_graph.store.serde import TypedSerializer

    while type(serde) is SignedSerializer:
        serde = serde.serde
    return type(serde) is TypedSerializer


def resolve_leaves(
    values: dict[Any, Any], fetch: Callable[[set[bytes]], Mapping[bytes, bytes]]
) -> None:
    """Join the leaves of every value in ``values`` (a dict, changed in place).

    ``fetch(digests)`` gives the stored bytes of those leaves (all at once, one
    query); a leaf missing from the store is a SerializationError naming it.
    """
    wanted: set[bytes] = set()
    for v in values.values():
        digests_of(v, wanted)
    if wanted:
        join_found(values, fetch(wanted))


def join_found(values: dict[Any, Any], found: Mapping[bytes, bytes]) -> None:
    """Join the leaves of every value in ``values`` (in place) from ``found`` (digest to
    stored bytes: every leaf they may refer to); a leaf missing is a SerializationError."""

    def leaf(digest: bytes) -> str | bytes:
        stored = found.get(digest)
        if stored is None:
            raise SerializationError(
                f"a stored value refers to leaf {digest.hex()[:16]}..., which is gone "
                "(deleted outside prune?); the value cannot be rebuilt")
        return leaf_value(stored, digest)

    for k, v in values.items():
        values[k] = join_leaves(v, leaf)


class LeafBank:
    """Leaves kept in memory once per thread, counted by the rows that refer to them.

    A row is any hashable key whose first item is its thread (the in-memory saver's
    value and write-slot keys); storing a row again first gives back what it held.
    """

    def __init__(self) -> None:
        self._data: dict[tuple[str, bytes], bytes] = {}
        self._refs: dict[tuple[str, bytes], int] = {}
        self._rows: dict[tuple[Any, ...], tuple[bytes, ...]] = {}

    def __len__(self) -> int:
        return len(self._data)

    def hold(self, row: tuple[Any, ...], leaves: Mapping[bytes, bytes]) -> None:
        """Store ``row``'s leaves (new ones) and count its references to them."""
        self.release([row])
        if not leaves:
            return
        self._rows[row] = tuple(leaves)
        for digest, data in leaves.items():
            key = (row[0], digest)
            self._data.setdefault(key, data)
            self._refs[key] = self._refs.get(key, 0) + 1

    def release(self, rows: Iterable[tuple[Any, ...]]) -> None:
        """Give back the references of deleted rows; drop leaves nothing holds."""
        for row in rows:
            for digest in self._rows.pop(row, ()):
                key = (row[0], digest)
                left = self._refs[key] - 1
                if left > 0:
                    self._refs[key] = left
                else:
                    del self._refs[key], self._data[key]

    def drop_thread(self, thread_id: str) -> None:
        """Forget every row and leaf of a thread."""
        for row in [r for r in self._rows if r[0] == thread_id]:
            del self._rows[row]
        for key in [k for k in self._data if k[0] == thread_id]:
            del self._data[key], self._refs[key]

    def has(self, thread_id: str, digest: bytes) -> bool:
        """Whether the thread keeps this leaf."""
        return (thread_id, digest) in self._data

    def fetch(self, thread_id: str, digests: Iterable[bytes]) -> dict[bytes, bytes]:
        """The stored bytes of these leaves of a thread (those found)."""
        return {d: data for d in digests if (data := self._data.get((thread_id, d))) is not None}
