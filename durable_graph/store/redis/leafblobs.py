"""Channel values as Redis blob fields, large leaves kept once (redis-v6); pure, no I/O.

A chat's new message comes in through the input channel (``__start__``) and is then
appended to ``messages``: stored whole in both values, it costs twice. With a
serializer that knows ``LeafRef`` (``leaves.dedups_leaves``), ``encode_values``
keeps such a leaf apart, once, as a value field of the namespace (value pages since
redis-v12, its blobs hash before)
(``keys.leaf_field``: its SHA-256), and the values hold its digest. Which leaves go
apart is ``leaves.apart_in``'s rule: those of the input, and those the caller
says the thread already keeps (``kept``: a hint, see ``RedisSaver``), so an
appended log line that nothing repeats stays in its value, where one copy costs least.

Every value that refers to leaves lists their fields in its link
(``[base field or '', depth, leaf field...]``, the delta link of redis-v3 with the
leaves after it; at the head of the value since redis-v9, ``records.linked``, in a
chain field beside it before). A new leaf's bytes are sent with the value in the same commit
(``HSETNX``); a leaf the hint says the thread holds already goes as its field name
only, among the fields the commit script requires (``HEXISTS``): if one is gone (a
prune or ``keep_last`` dropped it since), the script writes nothing and names it, and
the commit is sent again with its bytes. So a value never depends on what a hint said
was stored, and a chat's message is not sent again with each value that keeps it.
A value that refers to leaves has a tag that starts with ``records.REFERS_LEAVES``,
which no reader older than v6 knows: it refuses the value loudly instead of returning
the ``LeafRef`` placeholders as content. The scripts'
``cp_refs`` walks those lists, so a leaf is read with the values that refer to it
(same ``LOAD``; ``records.join_leaves_of`` puts them back) and deleted with the last
of them (prune, ``keep_last``, drops).
A leaf is accepted only if its bytes hash to the digest its (signed) value holds. Since
redis-v13 a value's digests are cut out of its bytes where it is stored and put back from
its link where it is read (``lifted``): about 33 bytes each, which do not deflate.

Redis-v8 stores fewer bytes of both (``store.deflate``, the same code as SQLite's leaf
cells): a leaf field holds its cell (``pack_leaf``: the leaf's bytes, or ``z`` and their
deflate stream, or ``B`` and the bytes of canonical base64 text), and a value field its
serializer bytes deflated when that makes them at least an eighth smaller
(``records.encode_value``, tag ``records.DEFLATED``); a random-base64 message of 1 KB
then takes the 896-byte allocator class instead of 1,280. The hash is checked on the
inflated bytes, and both inflate with a bound. A reader older than v8 fails loudly on
either, never returning their bytes as content: a ``z`` or ``B`` leaf cell does not hash
to its digest ("does not match its content hash", ``leaves.leaf_value``), and a
deflated value's tag is one no serializer knows. The scripts never read a leaf or value
field's bytes (only chain fields and names), so they are unchanged.
"""

from __future__ import annotations

import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import ormsgpack

from durable_graph.store.deflate import pack_leaf
from durable_graph.store.delta import ChannelDelta
from durable_graph.store.encoding import ThreadCodec
from durable_graph.store.leaves import apart_in
from durable_graph.store.redis.keys import blob_field, leaf_field
from durable_graph.store.redis.lifted import lift
from durable_graph.store.redis.records import encode_value, linked

__all__ = ["HINTS_KEPT", "LeafHints", "encode_values"]

HINTS_KEPT = 100_000
"""Kept-apart leaves a saver remembers (``LeafHints``), over all threads (~250 bytes each)."""


def _link(channel: str, value: Any, leaves: Mapping[bytes, bytes]) -> bytes:
    """The chain field's value: delta base and depth ('' and 0 for a whole value), then
    the fields of the leaves it refers to."""
    head = [blob_field(channel, value.base), value.depth] if isinstance(value, ChannelDelta) \
        else ["", 0]
    return ormsgpack.packb([*head, *(leaf_field(d) for d in sorted(leaves))])


def encode_values(
    tc: ThreadCodec, values: Mapping[str, Any], versions: Mapping[str, Any],
    fields: Mapping[str, str], kept: Callable[[bytes], bool] | None,
) -> tuple[dict[str, bytes], dict[str, bytes], set[bytes]]:
    """Blob field -> stored bytes for ``values`` (channel -> value, stored at
    ``fields[channel]``), with chain fields and, when ``kept`` is given, the new leaves
    kept apart (``leaves.apart_in``); the same for the leaves ``kept`` says the thread
    holds already (to require, sent only if found missing); and the digests kept apart.
    A value that refers to leaves is tagged so (``records.REFERS_LEAVES``): a reader
    older than v6 refuses it."""
    leaves_of: dict[str, dict[bytes, bytes]] = {}
    if kept is not None:
        items = list(values.items())
        split = apart_in(items, kept)
        values = {ch: value for (ch, _), (value, _) in zip(items, split, strict=True)}
        leaves_of = {ch: own for (ch, _), (_, own) in zip(items, split, strict=True) if own}
    out = {fields[ch]: encode_value(lift(t, sorted(leaves_of[ch])) if ch in leaves_of else t,
                                    refers_leaves=ch in leaves_of)
           for ch, t in tc.values(values, versions).items()}
    for ch, value in values.items():
        leaves = leaves_of.get(ch)
        if leaves is not None or isinstance(value, ChannelDelta):
            out[fields[ch]] = linked(_link(ch, value, leaves or {}), out[fields[ch]])
    apart: set[bytes] = set()
    held: dict[str, bytes] = {}
    for leaves in leaves_of.values():
        for digest, stored in leaves.items():
            (held if kept is not None and kept(digest) else out)[leaf_field(digest)] = \
                pack_leaf(stored)
        apart.update(leaves)
    return out, held, apart


class LeafHints:
    """The leaves a saver kept apart lately, as (thread, ns, digest): the newest
    ``limit`` of them, least recently kept forgotten first. Only a hint of which
    leaves to refer to and which the store holds (``encode_values``'s ``kept``): the
    commit checks a held leaf is there, and its bytes are sent when it is not."""

    def __init__(self, limit: int = HINTS_KEPT) -> None:
        self._limit = limit
        self._lru: OrderedDict[tuple[str, str, bytes], None] = OrderedDict()
        self._per_thread: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()  # a saver may commit from several threads

    def knows(self, thread_id: str, ns: str) -> bool:
        """Whether any leaf of (thread, ns) is remembered."""
        return self._per_thread[(thread_id, ns)] > 0

    def kept(self, thread_id: str, ns: str) -> Callable[[bytes], bool]:
        """digest -> whether (thread, ns) kept it apart lately."""
        return lambda digest: (thread_id, ns, digest) in self._lru

    def add(self, thread_id: str, ns: str, digests: Iterable[bytes]) -> None:
        """Remember ``digests`` as kept apart by (thread, ns), the newest."""
        with self._lock:
            self._add(thread_id, ns, digests)

    def _add(self, thread_id: str, ns: str, digests: Iterable[bytes]) -> None:
        for digest in digests:
            entry = (thread_id, ns, digest)
            if entry in self._lru:
                self._lru.move_to_end(entry)
                continue
            self._lru[entry] = None
            self._per_thread[(thread_id, ns)] += 1
            if len(self._lru) > self._limit:
                self._forget_oldest()

    def _forget_oldest(self) -> None:
        old_thread, old_ns, _ = self._lru.popitem(last=False)[0]
        self._per_thread[(old_thread, old_ns)] -= 1
        if not self._per_thread[(old_thread, old_ns)]:
            del self._per_thread[(old_thread, old_ns)]

    def __len__(self) -> int:
        return len(self._lru)
