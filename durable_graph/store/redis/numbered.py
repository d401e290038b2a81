"""Redis-v13: the rest of a checkpoint record (what the scripts do not read) spelled as
numbers when it has the engine's usual shape; pure, no I/O.

A split record (``records.SPLIT``) keeps its time after its id, versions seen and metadata
(and a signed store's signature) as msgpack deflated with ``deflate.RECORD_FRAMING``: about
40 bytes, mostly the names of nodes and channels and versions that the record's own refs
hold already. ``numbered`` spells them by reference to those refs instead:

* a flag byte (1: a time follows, 2: a signature follows);
* the time after the id (``t``), zigzag varint;
* the metadata's source (its index in ``SOURCES``) and step (zigzag varint);
* the versions seen: a varint count of nodes, and for each its name, a varint count of
  channels and for each its name and version;
* the signature's bytes after their length (a varint), not its base64 text.

A name is a varint: 0 and the name's length and UTF-8 bytes; 1 to 3 one of ``NAMES``; then
two a ref: ``4 + 2i`` the channel of ref ``i``, ``5 + 2i`` that channel's name after
``branch:to:`` (a node's). A version is a varint: 0 and 6 bytes, or ``1 + i`` the version of
ref ``i``. ``numbered`` gives None for any other shape (metadata with other keys, versions
that are not ints, a time kept as text...), and ``records`` keeps that record's rest
deflated as before; what it gives reads back exactly (checked on the way in).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from typing import Any

from durable_graph.store.redis.varint import read_varint, varint

__all__ = ["SOURCES", "numbered", "unnumbered"]

SOURCES = ("input", "loop", "update", "fork")
"""The metadata sources a numbered rest names by index."""
NAMES = ("__input__", "__start__", "__interrupt__")
"""Node and channel names a numbered rest names by number (the engine's own)."""
_BRANCH = "branch:to:"
_COMPACT = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


def _zigzag(n: int) -> bytes:
    return varint(n * 2 if n >= 0 else -n * 2 - 1)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def varint(self) -> int:
        n, self.at = read_varint(self.data, self.at)
        return n

    def zigzag(self) -> int:
        n = self.varint()
        return n // 2 if n % 2 == 0 else -(n + 1) // 2

    def take(self, size: int) -> bytes:
        out = self.data[self.at:self.at + size]
        if len(out) != size:
            raise IndexError(size)  # internal signal: garbled
        self.at += size
        return out


def _refs_of(refs: Sequence[Any]) -> list[tuple[str, int | None]]:
    """(channel, version) of each ref (``name\\0version`` text, or [that, kept value])."""
    out: list[tuple[str, int | None]] = []
    for ref in refs:
        field = ref if isinstance(ref, str) else ref[0]
        channel, _, version = field.partition("\x00")
        out.append((channel, int(version) if version.isdigit() else None))
    return out


def _name(name: str, refs: list[tuple[str, int | None]]) -> bytes:
    if name in NAMES:
        return varint(1 + NAMES.index(name))
    for i, (channel, _) in enumerate(refs):
        if channel == name:
            return varint(4 + 2 * i)
        if channel == _BRANCH + name:
            return varint(5 + 2 * i)
    raw = name.encode()
    return b"\x00" + varint(len(raw)) + raw


def _read_name(r: _Reader, refs: list[tuple[str, int | None]]) -> str:
    code = r.varint()
    if code == 0:
        return r.take(r.varint()).decode()
    if code <= len(NAMES):
        return NAMES[code - 1]
    channel = refs[(code - 4) // 2][0]
    return channel if code % 2 == 0 else channel.removeprefix(_BRANCH)


def _version(version: int, refs: list[tuple[str, int | None]]) -> bytes:
    for i, (_, held) in enumerate(refs):
        if held == version:
            return varint(1 + i)
    return b"\x00" + version.to_bytes(6, "big")


class _OtherShapeError(Exception):
    """Internal signal: a rest ``numbered`` does not spell."""


def _check(ok: bool) -> None:
    if not ok:
        raise _OtherShapeError


def numbered(rest: dict[str, Any], refs: Sequence[Any]) -> bytes | None:
    """``rest`` (``t``, ``s``, ``m`` and ``g`` of a packed record) spelled as numbers
    against the record's ``refs``, or None when it has another shape."""
    try:
        got = _spelled(rest, _refs_of(refs))
    except (_OtherShapeError, ValueError, TypeError, binascii.Error):
        return None
    back = unnumbered(got, refs)
    return got if set(back) == set(rest) and all(
        _COMPACT.encode(back[k]) == _COMPACT.encode(rest[k]) for k in rest) else None


def _spelled(rest: dict[str, Any], held: list[tuple[str, int | None]]) -> bytes:
    _check("s" in rest and "m" in rest and not set(rest) - {"t", "s", "m", "g"})
    out = bytearray([("t" in rest) | ("g" in rest) << 1])
    if "t" in rest:
        _check(type(rest["t"]) is str and str(int(rest["t"])) == rest["t"])
        out += _zigzag(int(rest["t"]))
    meta, seen = rest["m"], rest["s"]
    _check(type(meta) is dict and list(meta) == ["source", "step", "parents"]
           and meta["source"] in SOURCES and type(meta["step"]) is int
           and meta["parents"] == {} and type(seen) is dict)
    out += bytes([SOURCES.index(meta["source"])]) + _zigzag(meta["step"])
    out += varint(len(seen))
    for node, channels in seen.items():
        _check(type(channels) is dict)
        out += _name(node, held) + varint(len(channels))
        for channel, version in channels.items():
            _check(type(version) is int and 0 <= version < 1 << 48)
            out += _name(channel, held) + _version(version, held)
    if "g" in rest:
        sig = base64.b64decode(rest["g"], validate=True)
        _check(base64.b64encode(sig).decode() == rest["g"])
        out += varint(len(sig)) + sig
    return bytes(out)


def unnumbered(data: bytes, refs: Sequence[Any]) -> dict[str, Any]:
    """Inverse of ``numbered``; IndexError, ValueError or UnicodeDecodeError when garbled."""
    r, held = _Reader(data), _refs_of(refs)
    flags = r.varint()
    rest: dict[str, Any] = {}
    if flags & 1:
        rest["t"] = str(r.zigzag())
    source, step = SOURCES[r.take(1)[0]], r.zigzag()
    seen: dict[str, dict[str, int]] = {}
    for _ in range(r.varint()):
        node = _read_name(r, held)
        channels: dict[str, int] = {}
        for _ in range(r.varint()):
            channel = _read_name(r, held)
            code = r.varint()
            version = held[code - 1][1] if code else int.from_bytes(r.take(6), "big")
            if version is None:
                raise ValueError("a version of a ref that holds none")  # internal signal
            channels[channel] = version
        seen[node] = channels
    rest["s"] = seen
    rest["m"] = {"source": source, "step": step, "parents": {}}
    if flags & 2:
        rest["g"] = base64.b64encode(r.take(r.varint())).decode()
    if r.at != len(data):
        raise ValueError("bytes after a numbered rest")  # internal signal
    return rest
