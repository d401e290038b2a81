"""Compact columns of a SQLite checkpoint row (schema version 4); pure, no I/O.

A checkpoint row is written for every step, so its fixed cost counts as much as the
values: at schema 3 it was about 350 bytes, mostly text (a 36-character parent id,
a 32-character timestamp, versions seen as JSON). Schema 4 stores three of its
columns as BLOBs when they round-trip exactly, and as before otherwise:

- ``parent_id``: the 16 bytes of a canonical UUID (the ids ``new_checkpoint_id``
  makes), else the text;
- ``ts``: microseconds since the epoch, 8 bytes big-endian, for an ISO-8601 UTC
  timestamp that ``datetime.isoformat`` gives back unchanged, else the text;
- a value's or write's serializer tag (``type``): one byte for the tags of the
  built-in serializers (``msgpack``, ``null``, ``signed``, ...), else the text;
- ``versions_seen``: msgpack (versions are integers: 9 bytes where JSON took 13
  digits), else JSON text.

A reader tells them apart by type (``bytes`` or ``str``), so rows of both schemas
read the same, and a file may hold both. ``channel_versions`` and ``metadata`` stay
JSON: SQL walks the versions (``json_each``) and the metadata is what an operator
reads in the ``sqlite3`` shell.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import ormsgpack

from durable_graph.errors import SerializationError

__all__ = [
    "pack_id",
    "pack_seen",
    "pack_tag",
    "pack_ts",
    "unpack_id",
    "unpack_seen",
    "unpack_tag",
    "unpack_ts",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Part of the stored format: never renumber. A tag stored as text is a str, a code bytes.
_TAG_CODES = {"null": b"\x00", "msgpack": b"\x01", "bytes": b"\x02", "pickle": b"\x03",
              "signed": b"\x04"}
_CODE_TAGS = {code: tag for tag, code in _TAG_CODES.items()}
_TS_BYTES = 8


def pack_id(checkpoint_id: str | None) -> str | bytes | None:
    """A checkpoint id as its 16 bytes when the text is a canonical UUID, else as given."""
    if checkpoint_id is None or len(checkpoint_id) != 36:
        return checkpoint_id
    try:
        raw = uuid.UUID(checkpoint_id)
    except ValueError:
        return checkpoint_id
    return raw.bytes if str(raw) == checkpoint_id else checkpoint_id


def unpack_id(stored: str | bytes | None) -> str | None:
    """Inverse of ``pack_id``."""
    if isinstance(stored, bytes):
        return str(uuid.UUID(bytes=stored))
    return stored


def pack_ts(ts: str) -> str | bytes:
    """A UTC timestamp as 8 bytes of microseconds when that gives back ``ts`` exactly."""
    try:
        when = datetime.fromisoformat(ts)
    except (TypeError, ValueError):
        return ts
    if when.utcoffset() != timedelta(0) or when.tzinfo is None:
        return ts
    micros = (when - _EPOCH) // timedelta(microseconds=1)
    if micros < 0 or unpack_ts(micros.to_bytes(_TS_BYTES, "big")) != ts:
        return ts
    return micros.to_bytes(_TS_BYTES, "big")


def unpack_ts(stored: str | bytes) -> str:
    """Inverse of ``pack_ts``."""
    if isinstance(stored, bytes):
        micros = int.from_bytes(stored, "big")
        return (_EPOCH + timedelta(microseconds=micros)).isoformat()
    return stored


def pack_seen(seen: Any) -> str | bytes:
    """Versions seen as msgpack, keys sorted (as schema 3's JSON had them); else JSON."""
    try:
        return ormsgpack.packb(
            {node: dict(sorted(versions.items())) for node, versions in sorted(seen.items())})
    except (TypeError, AttributeError, ormsgpack.MsgpackEncodeError):
        pass  # e.g. an integer over 64 bits: JSON takes it, or names what it cannot
    try:
        return json.dumps(seen, separators=(",", ":"), sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise SerializationError(f"cannot store versions seen as JSON: {exc}") from exc


def unpack_seen(stored: str | bytes) -> Any:
    """Inverse of ``pack_seen``; JSON text for rows of schema 3 and before."""
    if isinstance(stored, bytes):
        return ormsgpack.unpackb(stored)
    return json.loads(stored)


def pack_tag(tag: str) -> str | bytes:
    """A serializer tag as its one-byte code when it has one, else the text."""
    return _TAG_CODES.get(tag, tag)


def unpack_tag(stored: str | bytes) -> str:
    """Inverse of ``pack_tag``; SerializationError for a code this release lacks."""
    if isinstance(stored, str):
        return stored
    tag = _CODE_TAGS.get(bytes(stored))
    if tag is None:
        raise SerializationError(
            f"a stored value has serializer code {bytes(stored)!r}, unknown to this release: "
            "it was written by a newer durable-graph; upgrade to read it")
    return tag
