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
read the same, and a file may hold both.

Schema 6 packs the rest of the row (about 150 of its 270 bytes at schema 5 were the
channel versions and versions seen, mostly channel names and 13-digit numbers):

- ``channel_versions``: msgpack instead of JSON text (SQL reads it through the
  ``dg_versions`` function, which gives JSON back: ``sqlite_named.versions_json``);
- ``versions_seen``: ``\x01`` then a msgpack list of (node, [channel, version, ...]):
  a channel the row's versions name is its index among their sorted names, and a
  version the same as the row's own of that channel (``_same``: type and value) is nil
  (a node usually saw what the checkpoint holds). A schema 4 form is a msgpack map, so
  never ``\x01``;
- ``metadata``: ``\x02`` then [source, step] for a step's usual record ({"parents": {},
  "source": ..., "step": ...}), ``\x00`` then msgpack with ``"parents": {}`` left out,
  or ``\x01`` then msgpack as given. Schema 7: ``\x03\xc1`` then one integer, the step
  shifted left by 2 and or-ed with the code of one of LangGraph's sources (``input``,
  ``loop``, ``update``, ``fork``): 3 to 7 bytes instead of about 11.

Schema 7 stores ``ts`` as microseconds after the time in the checkpoint id (its high
64 bits are nanoseconds since the epoch: ``new_checkpoint_id``), 1 to 7 bytes signed,
when the id is a UUID (8 bytes is schema 4's form); its versions and versions seen
name channels and nodes by number (``sqlite_named``).

Each is kept only when it reads back exactly what the JSON form reads back (else the
row stores that form, as before): the same results, whichever form a row holds.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any, overload

import ormsgpack

from durable_graph.errors import SerializationError
from durable_graph.store.deflate import FRAMED, squeezed, unsqueezed
from durable_graph.store.stamps import id_micros, ts_micros, ts_text

__all__ = [
    "pack_blob",
    "pack_id",
    "pack_metadata",
    "pack_seen",
    "pack_seen_by",
    "pack_ts",
    "pack_versions",
    "plain_form",
    "seen_flat",
    "seen_of",
    "unpack_blob",
    "unpack_id",
    "unpack_metadata",
    "unpack_seen",
    "unpack_ts",
    "unpack_versions",
]

# Part of the stored format: never renumber. A tag stored as text is a str, a code bytes.
# Codes 5 to 8: the same serializers' bytes deflated (``deflate.squeezed``, tag
# ``FRAMED`` + the serializer's), which a release before them refuses as a code it lacks.
_TAG_CODES = {"null": b"\x00", "msgpack": b"\x01", "bytes": b"\x02", "pickle": b"\x03",
              "signed": b"\x04", FRAMED + "msgpack": b"\x05", FRAMED + "bytes": b"\x06",
              FRAMED + "pickle": b"\x07", FRAMED + "signed": b"\x08"}
_CODE_TAGS = {code: tag for tag, code in _TAG_CODES.items()}
_TS_BYTES = 8
_ID_BYTES = 16


def pack_id(checkpoint_id: str | None) -> str | bytes | None:
    """A checkpoint id as its 16 bytes when the text is a canonical UUID, else as given."""
    if checkpoint_id is None or len(checkpoint_id) != 36:
        return checkpoint_id
    try:
        raw = uuid.UUID(checkpoint_id)
    except ValueError:
        return checkpoint_id
    return raw.bytes if str(raw) == checkpoint_id else checkpoint_id


@overload
def unpack_id(stored: str | bytes) -> str: ...


@overload
def unpack_id(stored: str | bytes | None) -> str | None: ...


def unpack_id(stored: str | bytes | None) -> str | None:
    """Inverse of ``pack_id`` (``str(uuid.UUID(bytes=stored))``, without the object)."""
    if isinstance(stored, bytes):
        if len(stored) != _ID_BYTES:
            raise SerializationError(f"a stored id has {len(stored)} bytes, not 16: edited")
        h = stored.hex()
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
    return stored


def pack_ts(ts: str, checkpoint_id: str | None = None) -> str | bytes:
    """A UTC timestamp as microseconds when that gives back ``ts`` exactly
    (``stamps.ts_micros``): after the time in ``checkpoint_id`` (1 to 7 bytes) when it
    has one, else 8 bytes."""
    micros = ts_micros(ts)
    if micros is None:
        return ts
    after = id_micros(checkpoint_id)
    if after is not None:
        offset = micros - after
        size = (offset.bit_length() + 8) // 8  # with the sign bit
        if size < _TS_BYTES:
            return offset.to_bytes(size, "big", signed=True)
    return micros.to_bytes(_TS_BYTES, "big")


def unpack_ts(stored: str | bytes, checkpoint_id: str | None = None) -> str:
    """Inverse of ``pack_ts`` (given the row's checkpoint id)."""
    if not isinstance(stored, bytes):
        return stored
    if len(stored) == _TS_BYTES:
        return ts_text(int.from_bytes(stored, "big"))
    after = id_micros(checkpoint_id)
    if after is None:
        raise SerializationError(
            f"a timestamp stored after its checkpoint id needs a UUID id, not "
            f"{checkpoint_id!r}: the row was edited")
    return ts_text(after + int.from_bytes(stored, "big", signed=True))


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


def unpack_seen(stored: str | bytes, versions: Any = None) -> Any:
    """Inverse of ``pack_seen`` (and of ``pack_seen_by``, given the row's versions);
    JSON text for rows of schema 3 and before."""
    if isinstance(stored, str):
        return json.loads(stored)
    if stored[:1] != _SEEN_BY:
        return ormsgpack.unpackb(stored)
    return seen_of(ormsgpack.unpackb(stored[1:]), versions)


def seen_of(flat: list[Any], versions: Any) -> dict[str, dict[str, Any]]:
    """Inverse of ``seen_flat``."""
    names = sorted(versions) if flat else []
    seen: dict[str, dict[str, Any]] = {}
    for node, pairs in zip(flat[::2], flat[1::2], strict=True):
        seen[node] = inner = {}
        for key, version in zip(pairs[::2], pairs[1::2], strict=True):
            if isinstance(key, int):  # a channel of the row's versions; nil: the same
                channel = names[key]
                inner[channel] = versions[channel] if version is None else version
            else:
                inner[key] = version
    return seen


_SEEN_BY = b"\x01"
"""First byte of versions seen packed against the row's versions (schema 6)."""


def pack_seen_by(seen: Any, versions: Any) -> str | bytes:
    """Versions seen, a channel named by its index among the row's versions and a
    version the same as the row's as nil; ``pack_seen`` when that would not read back.
    Both as the saver reads them back (``plain_form``)."""
    try:  # JSON forms: msgpack gives them back
        return _SEEN_BY + ormsgpack.packb(seen_flat(seen, versions))
    except (TypeError, AttributeError, ValueError, ormsgpack.MsgpackEncodeError):
        pass  # e.g. a version over 64 bits, or names that are not text
    return pack_seen(seen)


def seen_flat(seen: Any, versions: Any) -> list[Any]:
    """[node, [channel, version, ...], ...]: a channel of ``versions`` by its index among
    their sorted names, its version nil when the same as theirs (``_same``); ValueError
    when a nil version would read back as theirs."""
    flat: list[Any] = []
    index: dict[str, int] | None = None
    for node, inner in sorted(seen.items()):
        if index is None and inner:
            index = {name: i for i, name in enumerate(sorted(versions))}
        pairs: list[Any] = []
        for channel, version in sorted(inner.items()):
            at = index.get(channel) if index else None
            if at is None:
                pairs += [channel, version]
            elif version is None:
                raise ValueError("nil reads back as the row's")  # internal signal
            else:
                pairs += [at, None if _same(versions[channel], version) else version]
        flat += [node, pairs]
    return flat


def _same(stored: Any, version: Any) -> bool:
    """Whether a version seen reads back exactly as the row's own (nil): text or an
    integer of the very same type and value (never ``True`` for ``1``, ``1.0`` for
    ``1``, nor ``-0.0`` for ``0.0``)."""
    return type(version) in (int, str) and type(stored) is type(version) and stored == version


def _msgpack_if_same(form: Any) -> bytes | None:
    """A value as JSON reads it back as msgpack, which gives every such value back but
    an integer over 64 bits or text that is not UTF-8 (then None)."""
    try:  # keys sorted, as the JSON form has them
        return ormsgpack.packb(form, option=ormsgpack.OPT_SORT_KEYS)
    except (TypeError, ormsgpack.MsgpackEncodeError):
        return None


def pack_versions(versions: Any, text: str) -> str | bytes:
    """Channel versions (as JSON reads their ``text`` back) as msgpack when that reads
    them back too, else ``text``."""
    packed = _msgpack_if_same(versions)
    return text if packed is None else packed


def unpack_versions(stored: str | bytes) -> Any:
    """Inverse of ``pack_versions``."""
    return json.loads(stored) if isinstance(stored, str) else ormsgpack.unpackb(stored)


_NO_PARENTS, _AS_GIVEN, _STEP = b"\x00", b"\x01", b"\x02"
_CODED_STEP = b"\x03\xc1"
"""Schema 7's step form: ``\\xc1`` after the kind, a byte msgpack never uses, since
schema 6's reader unpacks what follows the first byte (it fails on it loudly)."""
_STEP_KEYS = ["parents", "source", "step"]
"""The keys of a step's metadata (the engine's loop, an input): kept as [source, step]."""
# Part of the stored format (schema 7): never renumber; at most 4 codes (2 bits).
_SOURCE_CODES = {"input": 0, "loop": 1, "update": 2, "fork": 3}
_CODE_SOURCES = {code: source for source, code in _SOURCE_CODES.items()}
_SOURCE_BITS = 2


def pack_metadata(given: Any, text_of: Callable[[], str]) -> str | bytes:
    """Metadata as msgpack, ``"parents": {}`` left out, when that reads back what its
    JSON (``text_of()``, which raises for metadata JSON cannot hold) does; else that
    text. A step's usual record (``parents`` empty, ``source`` text, ``step`` a small
    integer, nothing else) is [source, step], without going through JSON."""
    step = _step_form(given)
    if step is not None:
        return step
    text = text_of()
    metadata = json.loads(text)
    if isinstance(metadata, dict) and metadata.get("parents", None) == {}:
        packed = _msgpack_if_same({k: v for k, v in metadata.items() if k != "parents"})
        return text if packed is None else _NO_PARENTS + packed
    packed = _msgpack_if_same(metadata)
    return text if packed is None else _AS_GIVEN + packed


def _step_form(metadata: Any) -> bytes | None:
    """[source, step] for a step's usual metadata, else None."""
    if type(metadata) is not dict or len(metadata) != len(_STEP_KEYS):
        return None
    parents, source, step = (metadata.get(k) for k in _STEP_KEYS)
    if type(parents) is not dict or parents or type(source) is not str \
            or type(step) is not int or not -(2**31) <= step < 2**31:
        return None
    code = _SOURCE_CODES.get(source)
    if code is not None:  # LangGraph's sources: one integer, 1 to 5 bytes
        return _CODED_STEP + ormsgpack.packb(step << _SOURCE_BITS | code)
    try:
        return _STEP + ormsgpack.packb([source, step])
    except (TypeError, ormsgpack.MsgpackEncodeError):  # text that is not UTF-8
        return None


def plain_form(value: Any, text_of: Callable[[], str]) -> Any:
    """A value as the saver reads it back: through msgpack when it takes the value (for
    a value JSON takes too, both give the same back), else through its JSON text
    (``text_of()``, which raises for a value JSON cannot hold either)."""
    try:
        return ormsgpack.unpackb(ormsgpack.packb(value, option=ormsgpack.OPT_SORT_KEYS))
    except (TypeError, ormsgpack.MsgpackEncodeError):
        return json.loads(text_of())


def unpack_metadata(stored: str | bytes) -> Any:
    """Inverse of ``pack_metadata``."""
    if isinstance(stored, str):
        return json.loads(stored)
    if stored[:len(_CODED_STEP)] == _CODED_STEP:
        return _coded_step(ormsgpack.unpackb(stored[len(_CODED_STEP):]))
    metadata = ormsgpack.unpackb(stored[1:])
    if stored[:1] == _STEP:
        return {"parents": {}, "source": metadata[0], "step": metadata[1]}
    if stored[:1] == _NO_PARENTS:
        metadata = dict(sorted({**metadata, "parents": {}}.items()))
    return metadata


def _coded_step(number: Any) -> dict[str, Any]:
    """Inverse of ``_step_form``'s coded form: (step << 2) | the source's code."""
    if type(number) is not int:
        raise SerializationError(
            f"a step's metadata is stored as {number!r}, not an integer: the row was edited")
    source = _CODE_SOURCES[number & (1 << _SOURCE_BITS) - 1]
    return {"parents": {}, "source": source, "step": number >> _SOURCE_BITS}


def pack_blob(tagged: tuple[str, bytes]) -> tuple[str | bytes, bytes]:
    """A serializer's tag and bytes as a ``blobs`` or ``writes`` row stores them: deflated
    when that makes them at least an eighth smaller (``deflate.squeezed``), the tag as its
    code (``_pack_tag``). Random base64 text deflates to about three quarters, a message's
    framing to about half; rows written before read as they are."""
    tag, data = squeezed(tagged)
    return _pack_tag(tag), data


def unpack_blob(stored_tag: str | bytes, stored: bytes, what: str) -> tuple[str, bytes]:
    """Inverse of ``pack_blob``: the serializer's tag and bytes (checked by the serializer
    after this); SerializationError for a tag code this release lacks, CheckpointStoreError
    for a deflated ``what`` that does not inflate cleanly (``deflate.unsqueezed``)."""
    return unsqueezed((_unpack_tag(stored_tag), bytes(stored)), what)


def _pack_tag(tag: str) -> str | bytes:
    """A serializer tag as its one-byte code when it has one, else the text."""
    return _TAG_CODES.get(tag, tag)


def _unpack_tag(stored: str | bytes) -> str:
    """Inverse of ``_pack_tag``; SerializationError for a code this release lacks."""
    if isinstance(stored, str):
        return stored
    tag = _CODE_TAGS.get(bytes(stored))
    if tag is None:
        raise SerializationError(
            f"a stored value has serializer code {bytes(stored)!r}, unknown to this release: "
            "it was written by a newer durable-graph; upgrade to read it")
    return tag
