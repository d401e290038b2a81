"""Channel values as Redis blob fields, large leaves kept once (redis-v6); pure, no I/O.

A chat's new message comes in through the input channel (``__start__``) and is then
appended to ``messages``: stored whole in both values, it costs twice. With a
serializer that knows ``LeafRef`` (``leaves.dedups_leaves``), ``encode_values``
keeps such a leaf apart, once, in a field of the namespace's blobs hash
(``keys.leaf_field``: its SHA-256), and the values hold its digest. Which leaves go
apart is ``leaves.apart_in``'s rule: those of the input, and those the caller
says the thread already keeps (``kept``: a hint, see ``RedisSaver``), so an
appended log line that nothing repeats stays in its value, where one copy costs least.

Every value that refers to leaves lists their fields in its chain field
(``[base field or '', depth, leaf field...]``, the delta link of redis-v3 with the
leaves after it), and the leaf bytes are sent with the value in the same commit
(``HSETNX``): a value never depends on what a hint said was stored. The scripts'
``cp_refs`` walks those lists, so a leaf is read with the values that refer to it
(same ``LOAD``; ``records.join_leaves_of`` puts them back) and deleted with the last
of them (prune, ``keep_last``, drops).
A leaf is accepted only if its bytes hash to the digest its (signed) value holds.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import ormsgpack

from durable_graph.store.delta import ChannelDelta
from durable_graph.store.encoding import ThreadCodec
from durable_graph.store.leaves import apart_in
from durable_graph.store.redis.keys import blob_field, chain_field, leaf_field
from durable_graph.store.redis.records import encode_blob, pack_leaf

__all__ = ["encode_values"]


def _link(channel: str, value: Any, leaves: Mapping[bytes, bytes]) -> bytes:
    """The chain field's value: delta base and depth ('' and 0 for a whole value), then
    the fields of the leaves it refers to."""
    head = [blob_field(channel, value.base), value.depth] if isinstance(value, ChannelDelta) \
        else ["", 0]
    return ormsgpack.packb([*head, *(leaf_field(d) for d in sorted(leaves))])


def encode_values(
    tc: ThreadCodec, values: Mapping[str, Any], versions: Mapping[str, Any],
    fields: Mapping[str, str], kept: Callable[[bytes], bool] | None, *, compress_min: int = 0,
) -> tuple[dict[str, bytes], set[bytes]]:
    """Blob field -> stored bytes for ``values`` (channel -> value, stored at
    ``fields[channel]``), with chain fields and, when ``kept`` is given, the leaves
    kept apart (``leaves.apart_in``); and the digests kept apart. Values and leaves of
    at least ``compress_min`` bytes are stored compressed (``records.encode_blob``)."""
    leaves_of: dict[str, dict[bytes, bytes]] = {}
    if kept is not None:
        items = list(values.items())
        split = apart_in(items, kept)
        values = {ch: value for (ch, _), (value, _) in zip(items, split, strict=True)}
        leaves_of = {ch: own for (ch, _), (_, own) in zip(items, split, strict=True) if own}
    out = {fields[ch]: encode_blob(t, compress_min)
           for ch, t in tc.values(values, versions).items()}
    for ch, value in values.items():
        leaves = leaves_of.get(ch)
        if leaves is not None or isinstance(value, ChannelDelta):
            out[chain_field(fields[ch])] = _link(ch, value, leaves or {})
    apart: set[bytes] = set()
    for leaves in leaves_of.values():
        out.update((leaf_field(d), pack_leaf(stored, compress_min))
                   for d, stored in leaves.items())
        apart.update(leaves)
    return out, apart
