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
from durable_graph.store.redis.records import encode_blob

__all__ = ["encode_values"]


def _link(channel: str, value: Any, leaves: Mapping[bytes, bytes]) -> bytes | None:
    """The chain field's value: delta base and depth, then the leaf fields (None: neither)."""
    if isinstance(value, ChannelDelta):
        head: list[Any] = [blob_field(channel, value.base), value.depth]
    elif leaves:
        head = ["", 0]
    else:
        return None
    return ormsgpack.packb([*head, *(leaf_field(d) for d in sorted(leaves))])


def encode_values(
    tc: ThreadCodec, values: Mapping[str, Any], versions: Mapping[str, Any],
    fields: Mapping[str, str], kept: Callable[[bytes], bool] | None,
) -> tuple[dict[str, bytes], set[bytes]]:
    """Blob field -> stored bytes for ``values`` (channel -> value, stored at
    ``fields[channel]``), with chain fields and, when ``kept`` is given (the
    serializer dedups leaves), the leaves kept apart; and the digests kept apart."""
    items = list(values.items())
    split = (apart_in(items, kept) if kept is not None
             else [(value, {}) for _, value in items])
    encoded = tc.values({ch: v for (ch, _), (v, _) in zip(items, split, strict=True)},
                        versions)
    out: dict[str, bytes] = {}
    apart: set[bytes] = set()
    for (ch, _), (value, leaves) in zip(items, split, strict=True):
        out[fields[ch]] = encode_blob(encoded[ch])
        link = _link(ch, value, leaves)
        if link is not None:
            out[chain_field(fields[ch])] = link
        out.update((leaf_field(d), stored) for d, stored in leaves.items())
        apart.update(leaves)
    return out, apart
