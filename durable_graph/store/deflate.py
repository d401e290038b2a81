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

from durable_graph.errors import CheckpointStoreError

__all__ = ["DEFLATED", "FRAMED", "FRAMING", "MAX_RATIO", "RECORD_FRAMING", "deflated",
           "inflated", "pack_leaf", "squeezed", "unpack_leaf", "unsqueezed"]

FRAMING = (
    b'\xc7^\x0b\x93\xbclangchain_core.messages.tool\xabToolMessage\x85\xa7content\xa0\xa4name'
    b'\xa0\xa2id\xa0\xactool_call_id\xa5call_\xa6status\xa5error\xc7<\x0b\x93\xbelangchain_core'
    b'.messages.system\xadSystemMessage\x82\xa7content\xa0\xa2id\xa0\xc7\xf8\x0b\x93\xbalangchain'
    b'_core.messages.ai\xa9AIMessage\x87\xa7content\xa0\xb1additional_kwargs\x81\xa7refusal\xc0'
    b'\xb1response_metadata\x82\xaamodel_name\xa0\xadfinish_reason\xa4stop\xa4name\xa0\xa2id'
    b'\xa4run-\xaatool_calls\x91\x84\xa4name\xa0\xa4args\x80\xa2id\xa5call_\xa4type\xa9tool_call'
    b'\xaeusage_metadata\x83\xacinput_tokens\x01\xadoutput_tokens\x02\xactotal_tokens\x03\x81'
    b'\xa8messages\x93\x83\xa2id\xa0\xa4role\xa9assistant\xa7content\xa0\x83\xa2id\xa0\xa4role'
    b'\xa6system\xa7content\xa0\x83\xa2id\xa0\xa4role\xa4tool\xa7content\xa0\x81\xa8messages\x91'
    b'\x83\xa2id\xa1m\xa4role\xa4user\xa7content\xa0\x91\xc7A\x0b\x93\xbdlangchain_core.messages'
    b'.human\xacHumanMessage\x83\xa7content\xa0\xa4name\xa0\xa2id\xa1m\xa7content\xc7"\x0e\xc4 '
)
"""The preset dictionary of a deflate stream ``deflated(..., zdict=FRAMING)`` gives: the
serializer's msgpack framing of LangChain messages (their classes' paths and common
fields, the dict form of an input, a leaf's reference), which a short value (one new
message: about 130 bytes, half of it framing) cannot otherwise deflate. Never changed:
streams stored with it read only with it (a new dictionary needs a new stored tag)."""

RECORD_FRAMING = (
    b'\x81\xa1m\x83\xa6source\xa4fork\xa4step\x01\xa7parents\x80\x82\xa1m\x84\xa6source'
    b'\xa6update\xa4step\x01\xa7parents\x80\xa6writes\xc0\xa1v\xa12\x83\xa1t\xa11\xa1s\x82'
    b'\xa9__input__\x80\xa9__start__\x81\xa9__start__\xcf\x00\x00\x01\x00\x00\x00\x00\x00'
    b'\xa1m\x83\xa6source\xa5input\xa4step\xff\xa7parents\x80\x83\xa1t\xa212\xa1s\x83'
    b'\xa9__input__\x80\xa9__start__\x81\xa9__start__\xcf\x00\x00\x01\x00\x00\x00\x00\x00'
    b'\xaabranch:to:\x81\xaabranch:to:\xcf\x00\x00\x01\x00\x00\x00\x00\x00\xa1m\x83\xa6source'
    b'\xa4loop\xa4step\x01\xa7parents\x80'
)
"""The preset dictionary of a checkpoint record's deflated part (Redis, ``redis-v11``):
the msgpack of what every record of the engine holds beside its refs (the time after its
id, versions seen of the engine's own channels, metadata), which about 110 bytes cannot
otherwise deflate. Never changed, as ``FRAMING``."""

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


def deflated(data: bytes, *, zdict: bytes | None = None) -> bytes | None:
    """The raw deflate stream of ``data`` when, with a one-byte marker, it is at least an
    eighth smaller and inflates at most ``MAX_RATIO`` times; else None (keep ``data``).
    ``zdict``: its preset dictionary, ``FRAMING`` or ``RECORD_FRAMING`` (``inflated``
    needs the same)."""
    if len(data) < _SMALLEST:
        return None
    level = _LEVEL if len(data) <= _FAST_OVER else _FAST_LEVEL
    if zdict is not None:
        squeezer = zlib.compressobj(level, zlib.DEFLATED, _WBITS, _MEM_LEVEL, zdict=zdict)
    else:  # a window no larger than the data: the same stream
        window = -min(15, max(9, len(data).bit_length()))
        squeezer = zlib.compressobj(level, zlib.DEFLATED, window, _MEM_LEVEL)
    stream = squeezer.compress(data) + squeezer.flush()
    pays = (len(stream) + 1) * 8 <= len(data) * 7
    return stream if pays and len(data) <= MAX_RATIO * len(stream) else None


def inflated(stream: bytes, *, zdict: bytes | None = None) -> bytes | None:
    """The bytes ``deflated`` gave ``stream`` for (``zdict`` as it was given), or None
    when it does not end cleanly within ``MAX_RATIO`` times its size (garbled, a zlib
    bomb, or deflated with another dictionary): nothing of it."""
    inflater = zlib.decompressobj(_WBITS, zdict=zdict) if zdict is not None \
        else zlib.decompressobj(_WBITS)
    try:
        out = inflater.decompress(stream, MAX_RATIO * len(stream) + _SLACK)
    except zlib.error:
        return None
    return out if inflater.eof and not inflater.unused_data else None


DEFLATED = "%"
"""Prefix of a serializer tag whose bytes are stored deflated without a dictionary (Redis
since redis-v8): no serializer tag starts with it, so a reader that knows no deflate
refuses the value loudly ("unknown serialization format", or an unsigned payload in a
signed store) instead of decoding a deflate stream as content."""

FRAMED = DEFLATED * 2
"""Prefix of a serializer tag whose bytes are deflated with ``FRAMING`` as the preset
dictionary (``squeezed``: Redis since redis-v10, SQLite rows since this release, as a tag
code of its own, ``sqlite_row``). A reader that knows only ``DEFLATED`` finds the stream
does not inflate without the dictionary and refuses the value loudly."""


def squeezed(tagged: tuple[str, bytes]) -> tuple[str, bytes]:
    """A serializer's tag and bytes as stored: ``FRAMED`` + tag and the deflate stream,
    with the LangChain framing as its dictionary (a message's value deflates to about half,
    random base64 text to three quarters), when that makes the bytes at least an eighth
    smaller (``deflated``), else as they are. Channel values and pending writes alike."""
    tag, data = tagged
    stream = deflated(data, zdict=FRAMING)
    return (tag, data) if stream is None else (FRAMED + tag, stream)


def unsqueezed(stored: tuple[str, bytes], what: str) -> tuple[str, bytes]:
    """Inverse of ``squeezed`` (and of redis-v8's ``DEFLATED``, no dictionary); a
    deflated ``what`` that does not inflate cleanly within ``MAX_RATIO`` times its size
    (garbled, or a zlib bomb) is a CheckpointStoreError. The serializer checks the bytes
    (and a signature) after this."""
    tag, data = stored
    if not tag.startswith(DEFLATED):
        return tag, data
    framing = tag.startswith(FRAMED)
    out = inflated(data, zdict=FRAMING if framing else None)
    if out is None:
        raise CheckpointStoreError(
            f"the stored {what} is deflated but does not inflate cleanly within "
            f"{MAX_RATIO}x its size (garbled, or a zlib bomb); refused, nothing of it was "
            "read. Restore the store from a backup or delete the thread.")
    return tag.removeprefix(FRAMED if framing else DEFLATED), out


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
