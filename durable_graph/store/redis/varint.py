"""Unsigned varints (7 bits a byte, low first, the high bit set on all but the last), as
redis-v13's compact parts write them (``lifted``, ``numbered``); pure, no I/O."""

from __future__ import annotations

__all__ = ["read_varint", "varint"]


def varint(n: int) -> bytes:
    """``n`` (at least 0) as a varint."""
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def read_varint(data: bytes, at: int) -> tuple[int, int]:
    """The varint at ``at`` in ``data`` and where the next thing starts; IndexError when
    ``data`` ends within it."""
    n = shift = 0
    while True:
        byte = data[at]
        n |= (byte & 0x7F) << shift
        at += 1
        if not byte & 0x80:
            return n, at
        shift += 7
