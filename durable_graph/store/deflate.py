"""Stored bytes made smaller: deflate with a bounded inflate, and leaf cells; pure, no I/O.

Chat text is prose or base64 (64 letters, 6 bits a byte), and random base64 deflates
to about three quarters: a 1 KB message then moves down an allocator size class in
Redis (1,280 to 896 bytes) and takes a quarter less of a SQLite page. One
implementation for every store: SQLite's leaf cells (schema 6, ``sqlite_leaves``) and
Redis's leaf and value fields (redis-v8, ``redis.leafblobs``, ``redis.records``).

What is deflated is checked only after it is inflated (a leaf's SHA-256, a value's
signature), so inflating must not trust the stream: ``deflated`` keeps a stream only
when it inflates at most ``MAX_RATIO`` times its size, and ``inflated`` stops there,
so a zlib bomb written into a store is refused without inflating the rest, and a
garbled stream gives nothing back (None), never part of its bytes.

A leaf cell (``pack_leaf``) is the smallest of: the leaf's stored bytes as they are
(``leaves.leaf_bytes``: a kind byte, ``s`` or ``b``, then the text or bytes); ``z`` and
their raw deflate stream; ``B`` and the bytes a text leaf in canonical base64 stands for
(an image or a file sent as a data URL: a quarter smaller than the text, where deflate
takes a few percent off random base64). The first byte tells them apart, so cells
written before either form read as they are; a reader that knows neither hashes the
cell as the leaf's bytes and refuses it as altered (``leaves.leaf_value``), loudly.
"""

from __future__ import annotations

import base64
import binascii
import zlib

__all__ = ["MAX_RATIO", "deflated", "inflated", "pack_leaf", "unpack_leaf"]

MAX_RATIO = 16
"""Most a kept stream inflates, times its size (plus ``_SLACK`` bytes)."""
_SLACK = 64
_WBITS = -15  # raw deflate: no zlib header or checksum (a hash or signature checks the bytes)
_LEVEL, _MEM_LEVEL = 6, 6  # memLevel 6: zlib's default 8 costs a 64 KB table per call
_FAST_OVER, _FAST_LEVEL = 16 << 10, 1
"""Longer bytes (a whole snapshot, a value stored whole) are deflated at level 1: two to
four times faster (about 25 µs a KB instead of 50 to 100), its stream 2 to 18% larger."""
_SMALLEST = 64
"""Shorter bytes are not deflated: an eighth of them is not worth a compressor."""
_DEFLATED = b"z"
"""First byte of a deflated leaf cell (``leaf_bytes`` starts with ``s`` or ``b``)."""
_BASE64 = b"B"
"""First byte of a text leaf kept as the bytes its canonical base64 stands for."""
_TEXT = b"s"
"""``leaves.leaf_bytes``'s kind byte of a text leaf."""


def deflated(data: bytes) -> bytes | None:
    """The raw deflate stream of ``data`` when, with a one-byte marker, it is at least an
    eighth smaller and inflates at most ``MAX_RATIO`` times; else None (keep ``data``)."""
    if len(data) < _SMALLEST:
        return None
    window = -min(15, max(9, len(data).bit_length()))  # no larger than the data: same stream
    level = _LEVEL if len(data) <= _FAST_OVER else _FAST_LEVEL
    squeezer = zlib.compressobj(level, zlib.DEFLATED, window, _MEM_LEVEL)
    stream = squeezer.compress(data) + squeezer.flush()
    pays = (len(stream) + 1) * 8 <= len(data) * 7
    return stream if pays and len(data) <= MAX_RATIO * len(stream) else None


def inflated(stream: bytes) -> bytes | None:
    """The bytes ``deflated`` gave ``stream`` for, or None when it does not end cleanly
    within ``MAX_RATIO`` times its size (garbled, or a zlib bomb): nothing of it."""
    inflater = zlib.decompressobj(_WBITS)
    try:
        out = inflater.decompress(stream, MAX_RATIO * len(stream) + _SLACK)
    except zlib.error:
        return None
    return out if inflater.eof and not inflater.unused_data else None


def pack_leaf(stored: bytes) -> bytes:
    """A leaf's cell, the smallest of: its bytes as they are; ``z`` and their raw deflate
    stream (``deflated``); ``B`` and the bytes of a text leaf in canonical base64."""
    stream = deflated(stored)
    cell = stored if stream is None else _DEFLATED + stream
    decoded = _decoded(stored)
    return _BASE64 + decoded if decoded is not None and len(decoded) < len(cell) - 1 else cell


def _decoded(stored: bytes) -> bytes | None:
    """The bytes a text leaf's canonical base64 stands for, else None."""
    if stored[:1] != _TEXT or len(stored) % 4 != 1:
        return None
    try:
        raw = base64.b64decode(stored[1:], validate=True)
    except binascii.Error:
        return None
    return raw if base64.b64encode(raw) == stored[1:] else None


def unpack_leaf(cell: bytes) -> bytes:
    """Inverse of ``pack_leaf``. A ``z`` cell that does not inflate (``inflated``) is
    returned as it is: its hash check then refuses it as altered, nothing of it used."""
    if cell[:1] == _BASE64:
        return _TEXT + base64.b64encode(cell[1:])
    if cell[:1] != _DEFLATED:
        return cell
    out = inflated(cell[1:])
    return cell if out is None else out
