"""Redis-v13: a value's leaf digests lifted out of its serializer bytes; pure, no I/O.

A value that refers to leaves kept apart (``leafblobs``) holds each leaf's 32-byte SHA-256
in its serializer's bytes (the ``LeafRef`` placeholder), and its link lists the same
digests (as leaf fields) for the scripts. Random bytes do not deflate: in a chat, each
turn's input and its ``messages`` delta pay about 33 bytes each for a digest stored twice.
``lift`` cuts every occurrence of a link's digest out of the bytes before they are
deflated, and notes where it stood (which of the link's leaves, after how many bytes);
``unlift`` puts them back from the link before the serializer reads them, so the bytes a
signature covers are exactly those signed: a link altered to name another leaf gives back
other bytes, which the signature refuses (an unsigned store checks the leaf against the
digest it is read for, as before).

Stored: tag ``LIFTED`` + the serializer's tag; bytes: the number of digests cut (a
varint), then for each the bytes kept before it (a varint) and its index in the link (a
byte); then the bytes kept. A reader older than v13 finds a tag no serializer has and
refuses the value loudly.
"""

from __future__ import annotations

from collections.abc import Sequence

from durable_graph.errors import CheckpointStoreError
from durable_graph.store.redis.varint import read_varint, varint

__all__ = ["LIFTED", "lift", "unlift"]

LIFTED = "*"
"""Tag prefix of a value whose leaf digests were lifted out (``lift``); no serializer tag
of this package starts with it."""

_DIGEST = 32


def lift(tagged: tuple[str, bytes], digests: Sequence[bytes]) -> tuple[str, bytes]:
    """``tagged`` (a serializer's tag and bytes) with every occurrence of ``digests`` (the
    link's leaves, in its order) cut out; as it is when none occurs."""
    tag, data = tagged
    found = sorted((at, i) for i, digest in enumerate(digests[:256])
                   for at in _occurrences(data, digest))
    if not found:
        return tagged
    head, body, kept = bytearray(varint(len(found))), bytearray(), 0
    for at, i in found:
        if at < kept:  # overlapping occurrences: not lifted
            return tagged
        head += varint(at - kept) + bytes([i])
        body += data[kept:at]
        kept = at + _DIGEST
    return LIFTED + tag, bytes(head + body + data[kept:])


def _occurrences(data: bytes, digest: bytes) -> list[int]:
    out, at = [], data.find(digest)
    while at >= 0:
        out.append(at)
        at = data.find(digest, at + _DIGEST)
    return out


def unlift(stored: tuple[str, bytes], digests: Sequence[bytes], what: str) -> tuple[str, bytes]:
    """Inverse of ``lift`` (``digests``: those of the link the value was read with); a
    lifted value whose notes do not fit its bytes or its link is a CheckpointStoreError."""
    tag, data = stored
    if not tag.startswith(LIFTED):
        return stored
    try:
        count, at = read_varint(data, 0)
        notes = []
        for _ in range(count):
            gap, at = read_varint(data, at)
            notes.append((gap, digests[data[at]]))
            at += 1
        out, kept = bytearray(), at
        for gap, digest in notes:
            if kept + gap > len(data):
                raise IndexError(gap)  # internal signal: caught below
            out += data[kept:kept + gap] + digest
            kept += gap
    except IndexError:
        raise CheckpointStoreError(
            f"the stored {what} names leaves its link does not hold, or its notes are cut "
            "short: the store is garbled; refused. Restore the store from a backup or "
            "delete the thread.") from None
    return tag.removeprefix(LIFTED), bytes(out + data[kept:])
