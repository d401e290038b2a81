"""How checkpoints, values and writes are laid out as Redis hash fields.

Pure functions, no I/O: ``saver`` encodes everything here before it touches
Redis (so a value that cannot be encoded writes nothing) and decodes script
replies here. Versions, versions-seen and metadata are JSON, readable with
``redis-cli``; channel values and writes go through the saver's serializer and
are stored as ``tag \\0 bytes``; a checkpoint's ``refs`` field lists the blob
fields it reads, msgpack-encoded so Lua (``cmsgpack``) can fetch them in the same
script that reads the checkpoint. With a signing serializer, a ``sig`` field signs
every other field of the checkpoint hash together with its place, and values and
writes are signed for theirs (``ThreadCodec``, scope = the key prefix).

Record format (redis-v4): a checkpoint's fields are stored packed, one msgpack map in
a string key (``pack_record``), not as a hash: Redis keeps a hash whose values pass
64 bytes (the versions do) as a hash table, about 900 bytes a checkpoint, the packed
string about 500. Every field is msgpack text (Redis's ``cmsgpack`` reads no binary
type): ``refs`` is the list itself, ``sig`` base64. The fields signed are the same as
before, so ``unpack_record`` gives back exactly the hash fields; a checkpoint written
as a hash (redis-v1 to v3) is still read as one.

Redis-v7: a record whose versions are all ints has no ``versions`` field (``refs``
holds them: ``record_versions``); a record with one (v6 and older) reads as before.

Redis-v8: a channel value's serializer bytes are stored deflated when that makes them an
eighth smaller (``encode_value``, tag ``DEFLATED``; leaves: ``leafblobs``; a pending
write's too, ``encode_writes``: an appended item is sent once as a write, once as a
delta, so both count against a step's bytes sent), and a record
keeps ``ts`` as microseconds after its id's time (``_TS_AFTER_ID``) and no ``v`` when it
is "1": about 35 bytes less, which takes a chat's record (~320 bytes) down an allocator
class. Both read back to exactly v7's fields, so signatures are unchanged. A reader older
than v8 fails loudly on such a record, never reading a wrong time: it finds no ``ts``
(a KeyError where it reads it; in a signed store the record's signature fails first, as
it covers ``t`` where the signer signed ``ts``).

Redis-v9 (about 200 bytes a step less held, where Redis's own cost of a hash entry, about
80 bytes, and an allocator class decide): a changed scalar of at most ``INLINE_MAX`` stored
bytes (a counter, a branch's None) is kept in its record's ``refs`` as ``[field, its
stored bytes as Latin-1 text]`` instead of a blob field, signed with the record and for its
place as any value; a child checkpoint that reads it unchanged has it written out as a
field by its commit (``scripts.PUT``, from the parent's record), so it outlives that
record. A delta's link heads its value (``linked``) instead of a chain field beside it.
The record keeps short keys (``_SHORT``), its parent as UUID bytes and its versions seen
and metadata as msgpack when they read back to the same text (``pack_record``), which
takes a step's record (~300 bytes) down an allocator class. ``unpack_record`` gives back
v8's fields exactly, so signatures are unchanged. A reader older than v9 fails loudly on
each: a record without ``refs`` is garbled to it, and a linked value's first byte is a
tag no serializer has.

Redis-v10: a value's or pending write's bytes are deflated with ``deflate.FRAMING`` (the
serializer's framing of LangChain messages) as the preset dictionary, tag ``FRAMED``
(``%%``): a short message's bytes, about half framing, deflate by about 45% where plain
deflate kept them whole. A v8 or v9 reader takes ``%%`` for ``DEFLATED``, cannot inflate
the stream without the dictionary and refuses the value loudly; v8's ``%`` reads as before.

Redis-v13: a split record whose rest has the engine's shape keeps it as numbers against its
own refs (``SPLIT_NUMBERED``, ``numbered``: about 20 bytes where deflating took 40), and a
value that refers to leaves has their digests cut out of its bytes, put back from its link
when read (tag ``lifted.LIFTED``). The scripts keep ids, records' heads, fields and links
compact where Redis stores them and give back these bytes (``compact``).
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import ormsgpack

from durable_graph.errors import CheckpointStoreError, SerializationError, SignatureError
from durable_graph.store.base import (
    WRITES_IDX_MAP,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    PendingWrite,
    checkpoint_config,
)
from durable_graph.store.deflate import (
    DEFLATED,
    FRAMED,
    RECORD_FRAMING,
    deflated,
    inflated,
    squeezed,
    unpack_leaf,
    unsqueezed,
)
from durable_graph.store.delta import ChannelDelta, resolve_values
from durable_graph.store.encoding import ThreadCodec
from durable_graph.store.leaves import join_found
from durable_graph.store.redis.keys import LEAF, blob_field, leaf_digest, write_field
from durable_graph.store.redis.lifted import LIFTED, unlift
from durable_graph.store.redis.numbered import numbered, unnumbered
from durable_graph.store.stamps import id_micros, ts_micros, ts_text

__all__ = [
    "DEFLATED",
    "FRAMED",
    "INLINE_MAX",
    "LINKED",
    "REFERS_LEAVES",
    "SPLIT",
    "SPLIT_NUMBERED",
    "bind_run",
    "checkpoint_fields",
    "decode_blob",
    "decode_metadata",
    "decode_tuple",
    "decode_value",
    "encode_blob",
    "encode_value",
    "encode_writes",
    "inlinable",
    "join_leaves_of",
    "link_of",
    "linked",
    "pack_record",
    "page_metadata",
    "record_map",
    "record_parent",
    "record_refs",
    "record_versions",
    "unbind_run",
    "unlinked",
    "unpack_record",
]


_COMPACT = json.JSONEncoder(separators=(",", ":"), allow_nan=False)
"""``json.dumps(value, separators=(",", ":"), allow_nan=False)``, built once (``dumps``
with options builds an encoder per call)."""


def _json(value: Any, what: str) -> str:
    """JSON text of ``value``; SerializationError names what could not be stored."""
    try:
        return _COMPACT.encode(value)
    except (TypeError, ValueError) as exc:
        raise SerializationError(f"cannot store {what} as JSON: {exc}") from exc


REFERS_LEAVES = "&"
"""Tag prefix of a value that refers to leaves kept apart (redis-v6, ``leafblobs``): no
serializer tag starts with it, so a reader older than v6 refuses such a value ("unknown
serialization format", or an unsigned payload in a signed store) instead of returning
its ``LeafRef`` placeholders as content. The serializer's own tag and bytes follow
unchanged, so a signature still binds them to their place."""


def encode_blob(tagged: tuple[str, bytes], *, refers_leaves: bool = False) -> bytes:
    """``tag \\0 bytes``: a serializer tag never holds a NUL, so the split is unambiguous.

    A value that refers to leaves kept apart is stored with tag ``&tag``
    (``REFERS_LEAVES``)."""
    tag, data = tagged
    if refers_leaves:
        tag = REFERS_LEAVES + tag
    return tag.encode() + b"\x00" + data


def decode_blob(raw: bytes) -> tuple[str, bytes]:
    """Inverse of ``encode_blob`` (the serializer's tag and bytes)."""
    tag, _, data = raw.partition(b"\x00")
    text = tag.decode()
    return text.removeprefix(REFERS_LEAVES), data


def encode_value(tagged: tuple[str, bytes], *, refers_leaves: bool = False) -> bytes:
    """A channel value as its blob field stores it: ``encode_blob``, with the serializer's
    bytes deflated (tag ``DEFLATED``) when that makes them at least an eighth smaller."""
    return encode_blob(squeezed(tagged), refers_leaves=refers_leaves)


LINKED = b"\x03"
"""First byte of a blob-hash value headed by its delta link (redis-v9, ``linked``): no
serializer tag starts with it, so a reader older than v9 refuses such a value loudly
("unknown serialization format", or an unsigned payload in a signed store)."""


def linked(link: bytes, stored: bytes) -> bytes:
    """A value as stored with its link (msgpack ``[base field or '', depth, leaf
    fields...]``) in front: ``LINKED``, the link's length (4 bytes, big-endian), the link,
    then ``stored``. One hash entry where redis-v3 to v8 kept the link in a chain field
    beside the value, about 80 bytes of Redis's own per entry less. The scripts read the
    link from there (``scripts.link_of``); it is not signed (the value's own signature
    covers the delta's base), as the chain field was not."""
    return LINKED + len(link).to_bytes(4, "big") + link + stored


def link_of(raw: bytes) -> bytes | None:
    """The link heading a stored value (``linked``), or None for a value without one."""
    if not raw.startswith(LINKED):
        return None
    return raw[5:5 + int.from_bytes(raw[1:5], "big")]


def unlinked(raw: bytes) -> bytes:
    """A stored value past the link heading it, if any (``linked``): ``encode_value``'s
    bytes."""
    if not raw.startswith(LINKED):
        return raw
    return raw[5 + int.from_bytes(raw[1:5], "big"):]


def decode_value(raw: bytes, channel: str, version: object) -> tuple[str, bytes]:
    """Inverse of ``encode_value`` (the serializer's tag and bytes, checked after this by
    the serializer), past the link heading it if any (``linked``), its leaves' digests put
    back from that link (``lifted``, redis-v13). A deflated value that does not inflate
    within ``MAX_RATIO`` times its size (garbled, or a zlib bomb) is a
    CheckpointStoreError: nothing of it is read."""
    what = f"value of channel {channel!r} version {version}"
    tagged = unsqueezed(decode_blob(unlinked(raw)), what)
    if not tagged[0].startswith(LIFTED):
        return tagged
    link = link_of(raw)
    fields = ormsgpack.unpackb(link)[2:] if link is not None else []
    return unlift(tagged, [leaf_digest(f) for f in fields if f.startswith(LEAF)], what)


def _as_bytes(value: str | bytes) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)


INLINE_MAX = 96
"""Stored bytes up to which a scalar channel value is kept in its checkpoint's record
(``refs``, redis-v9) instead of a blob field of its own (``inlinable``): a small value
plain (an int is about 10 bytes) or signed (about 50 to 80: its signature and place)."""

_INLINE_STR = 32
"""Characters up to which a text value is a candidate to keep in the record."""


def inlinable(value: Any) -> bool:
    """Whether ``value`` is a scalar small enough to be kept in its checkpoint's record
    when its stored bytes are at most ``INLINE_MAX`` (redis-v9): None, a bool, an int, a
    float or a short text. Never a list, so never the base of a delta."""
    kind = type(value)
    return (value is None or kind in (bool, int, float)
            or (kind is str and len(value) <= _INLINE_STR))


def checkpoint_fields(
    tc: ThreadCodec, checkpoint: Checkpoint, metadata: CheckpointMetadata,
    parent_id: str | None, inline: Mapping[str, bytes] | None = None,
) -> dict[str, str | bytes]:
    """The fields of a checkpoint's hash (everything but its values), signed if signing.

    ``inline``: channel -> the stored bytes of a small value kept in ``refs`` itself
    (redis-v9, ``_ref``) instead of a blob field, covered by the record's signature and
    still signed for its place like any value."""
    versions = checkpoint.channel_versions
    kept = inline or {}
    refs = [_ref(blob_field(ch, v), kept.get(ch)) for ch, v in sorted(versions.items())]
    fields: dict[str, str | bytes] = {
        "parent": parent_id or "",
        "ts": checkpoint.ts,
        "v": str(checkpoint.v),
        "seen": _json(checkpoint.versions_seen, "versions seen"),
        "metadata": _json(dict(metadata), "checkpoint metadata"),
        "refs": ormsgpack.packb(refs),
    }
    if not _refs_hold_versions(versions):
        fields["versions"] = _json(versions, "channel versions")
    sig = tc.sign_record(checkpoint.id, {k: _as_bytes(v) for k, v in fields.items()})
    if sig is not None:
        fields["sig"] = sig
    return fields


def _refs_hold_versions(versions: Mapping[str, Any]) -> bool:
    """Whether ``refs`` ("channel\\0version" fields) gives back ``versions`` exactly: every
    version a plain int and no channel name holding a NUL. Then the record stores no
    ``versions`` field (redis-v7: about 80 bytes a checkpoint less); else it keeps one."""
    return all(type(v) is int and "\x00" not in ch for ch, v in versions.items())


def _ref(field: str, inline: bytes | None) -> str | list[str]:
    """One ``refs`` entry: the blob field of a value, or (redis-v9) ``[field, stored]``
    for a value kept in the record, its stored bytes as Latin-1 text (``cmsgpack`` reads
    no binary type). The scripts fetch and walk only the text entries."""
    return field if inline is None else [field, inline.decode("latin-1")]


def record_refs(fields: Mapping[str, bytes]) -> list[tuple[str, bytes | None]]:
    """A record's ``refs``: (blob field, the stored bytes of a value kept in the record or
    None) per channel version; a CheckpointStoreError names garbled refs."""
    out: list[tuple[str, bytes | None]] = []
    try:
        refs = ormsgpack.unpackb(fields["refs"])
        for ref in refs:
            if type(ref) is str:
                out.append((ref, None))
            elif type(ref) is list and len(ref) == 2 and all(type(r) is str for r in ref):
                out.append((ref[0], ref[1].encode("latin-1")))
            else:
                raise _garbled_refs(f"a ref is neither a field nor [field, value]: {ref!r:.60}")
    except (ormsgpack.MsgpackDecodeError, TypeError, UnicodeEncodeError) as exc:
        raise _garbled_refs(str(exc)) from None
    return out


def _garbled_refs(why: str) -> CheckpointStoreError:
    return CheckpointStoreError(
        f"the stored refs of a checkpoint record are garbled ({why}); refused. Restore the "
        "store from a backup or delete the thread.")


def record_versions(
    fields: Mapping[str, bytes], refs: Sequence[tuple[str, bytes | None]] | None = None,
) -> dict[str, Any]:
    """A checkpoint's channel versions from its record's fields: the ``versions`` JSON if
    stored (redis-v6 and older, or versions that are not all ints), else from ``refs``
    (``record_refs(fields)``, read now unless the caller has it already)."""
    if "versions" in fields:
        found: dict[str, Any] = json.loads(fields["versions"])
        return found
    out: dict[str, Any] = {}
    for field, _ in record_refs(fields) if refs is None else refs:
        channel, _, version = field.partition("\x00")
        try:
            out[channel] = int(version)
        except ValueError:
            raise _garbled_refs(f"version {version!r:.40} is not an integer") from None
    return out


_TS_AFTER_ID = "t"
"""Redis-v8 record field kept instead of ``ts``: the decimal text of its microseconds after
the time in the checkpoint id (``stamps``), when that reads back exactly (about 5 bytes
for 36). ``v`` is left out when it is ``"1"``. ``unpack_record`` puts both back, so the
fields a signature covers are the same as before."""


_SHORT = {"parent": "p", "seen": "s", "metadata": "m", "versions": "vs", "refs": "r",
          "sig": "g"}
"""Redis-v9 record keys: the field names of ``checkpoint_fields`` shortened (``r``, the
refs, is the only one a script reads). A record holding ``r`` is of v9."""
_LONG = {short: name for name, short in _SHORT.items()}

_PARENT_UUID = "P"
"""Redis-v9 record key of a parent id kept as its 16 UUID bytes (Latin-1 text) when it is
a canonical UUID text: about 13 bytes less than its 36 characters."""

_JSON_FIELDS = ("seen", "metadata", "versions")
"""Fields whose JSON text a v9 record keeps as the msgpack of the value it encodes, when
that gives back the same text (``_packed_json``): no quotes, colons or decimal digits."""


def _packed_json(text: str) -> Any:
    """What a v9 record keeps of a JSON field: the decoded value when re-encoding it after
    a msgpack round trip gives back exactly ``text`` (so the signed bytes are unchanged),
    else the text itself. A dict always (``checkpoint_fields`` writes objects), so a text
    kept is told apart by its type."""
    try:
        value = json.loads(text)
        if type(value) is dict and _COMPACT.encode(ormsgpack.unpackb(ormsgpack.packb(value))) \
                == text:
            return value
    except (ValueError, TypeError, ormsgpack.MsgpackEncodeError, ormsgpack.MsgpackDecodeError):
        pass
    return text


def _uuid_bytes(text: str) -> str | None:
    """A canonical UUID text's 16 bytes as Latin-1 text, else None."""
    try:
        parsed = uuid.UUID(text)
    except ValueError:
        return None
    return parsed.bytes.decode("latin-1") if str(parsed) == text else None


def pack_record(fields: Mapping[str, str | bytes], checkpoint_id: str) -> bytes:
    """The stored form of ``checkpoint_fields``: one msgpack map (redis-v9: short keys,
    ``_SHORT``), ``ts`` after the id's time (``_TS_AFTER_ID``) and ``v`` left out when that
    reads back, the parent as UUID bytes (``_PARENT_UUID``) and JSON fields as msgpack
    (``_packed_json``) when they read back exactly. Every string is text (Redis's
    ``cmsgpack`` reads no binary type). Since redis-v11 split in two when that pays
    (``_split``): what the scripts read, then the rest deflated."""
    record: dict[str, Any] = {}
    for name, value in fields.items():
        if name in ("refs", "sig"):
            continue
        text = value if isinstance(value, str) else bytes(value).decode()
        if name == "ts":
            micros, after = ts_micros(text), id_micros(checkpoint_id)
            if micros is not None and after is not None:
                record[_TS_AFTER_ID] = str(micros - after)
                continue
        if name == "v" and text == "1":
            continue
        if name == "parent":
            if not text:
                continue
            raw = _uuid_bytes(text)
            if raw is not None:
                record[_PARENT_UUID] = raw
                continue
        record[_SHORT.get(name, name)] = _packed_json(text) if name in _JSON_FIELDS else text
    record["r"] = ormsgpack.unpackb(_as_bytes(fields["refs"]))
    if "sig" in fields:
        record["g"] = base64.b64encode(_as_bytes(fields["sig"])).decode()
    return _split(record) or ormsgpack.packb(record)


SPLIT = b"\xc1"
"""First byte of a redis-v11 record split in two (``_split``): never a msgpack type byte, so
a record of v4 to v10 (a msgpack map) is told apart, and a reader older than v11 refuses it
as garbled."""
SPLIT_NUMBERED = b"\xc3"
"""First byte of a redis-v13 split record whose rest is spelled as numbers (``numbered``):
msgpack ``true``, never a map's first byte, so a reader older than v13 refuses it as
garbled."""
_FOR_SCRIPTS = ("P", "p", "r")
"""The record keys a script reads (the parent, the refs): they stay plain in a split one."""


def _split(record: Mapping[str, Any]) -> bytes | None:
    """A v11 record: ``SPLIT``, the 2-byte length of a msgpack map of what the scripts read
    (``_FOR_SCRIPTS``), that map, then the rest deflated with ``deflate.RECORD_FRAMING`` as
    its dictionary (the time, versions seen and metadata: about 110 bytes to 40); since v13
    ``SPLIT_NUMBERED`` and the rest spelled as numbers against the refs when it has the
    engine's shape and that is shorter (``numbered``: about 20 bytes). None when neither
    pays (the record is kept as one map, as before)."""
    rest = {k: v for k, v in record.items() if k not in _FOR_SCRIPTS}
    head = ormsgpack.packb({k: v for k, v in record.items() if k in _FOR_SCRIPTS})
    if not rest or len(head) > 0xFFFF:
        return None
    numbers = numbered(rest, record["r"])
    stream = deflated(ormsgpack.packb(rest), zdict=RECORD_FRAMING)
    if numbers is not None and (stream is None or len(numbers) < len(stream)):
        return SPLIT_NUMBERED + len(head).to_bytes(2, "big") + head + numbers
    if stream is None:
        return None
    return SPLIT + len(head).to_bytes(2, "big") + head + stream


def record_map(raw: bytes) -> dict[str, Any]:
    """The map a packed record stores (a split one's two parts joined: ``_split``); a
    ValueError or msgpack error when it is garbled."""
    if raw[:1] == SPLIT_NUMBERED:
        size = int.from_bytes(raw[1:3], "big")
        head: dict[str, Any] = ormsgpack.unpackb(raw[3:3 + size])
        try:
            head.update(unnumbered(raw[3 + size:], head["r"]))
        except (IndexError, UnicodeDecodeError) as exc:
            raise ValueError(f"numbered rest: {exc!r}") from None  # internal signal: garbled
        return head
    if raw[:1] != SPLIT:
        stored: dict[str, Any] = ormsgpack.unpackb(raw)
        return stored
    return _joined(raw)


def _joined(raw: bytes) -> dict[str, Any]:
    """Inverse of ``_split``; ValueError when the deflated rest does not inflate cleanly."""
    size = int.from_bytes(raw[1:3], "big")
    rest = inflated(raw[3 + size:], zdict=RECORD_FRAMING) if len(raw) >= 3 + size else None
    if rest is None:
        raise ValueError("deflated part does not inflate")  # internal signal: garbled
    joined: dict[str, Any] = ormsgpack.unpackb(raw[3:3 + size])
    joined.update(ormsgpack.unpackb(rest))
    return joined


def unpack_record(raw: bytes, checkpoint_id: str) -> dict[str, bytes]:
    """The fields ``pack_record`` packed, as bytes (the hash fields a signature covers);
    a record of v4 to v8 (long keys, every value text) too."""
    try:
        record = record_map(raw)
        if "r" in record:
            record = _unshortened(record)
        fields = {name: _as_bytes(value) for name, value in record.items()
                  if name not in ("refs", "sig", _TS_AFTER_ID)}
        fields["refs"] = ormsgpack.packb(record["refs"])
        if "sig" in record:
            fields["sig"] = base64.b64decode(record["sig"], validate=True)
        if _TS_AFTER_ID in record:
            fields["ts"] = _ts_after(record[_TS_AFTER_ID], fields, checkpoint_id).encode()
        fields.setdefault("v", b"1")
    except (ormsgpack.MsgpackDecodeError, AttributeError, KeyError, TypeError,
            ValueError, OverflowError) as exc:
        raise CheckpointStoreError(
            f"the stored record of checkpoint {checkpoint_id!r} is garbled ({exc}); "
            "refused. Restore the store from a backup or delete the thread.") from None
    return fields


def _unshortened(record: Mapping[str, Any]) -> dict[str, Any]:
    """A v9 record's map with v8's names and text values back (``pack_record``)."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        if key == _PARENT_UUID:
            out["parent"] = str(uuid.UUID(bytes=value.encode("latin-1")))
        elif key in ("s", "m", "vs"):
            out[_LONG[key]] = value if type(value) is str else _COMPACT.encode(value)
        else:
            out[_LONG.get(key, key)] = value
    out.setdefault("parent", "")
    return out


def page_metadata(raw: bytes, checkpoint_id: str) -> CheckpointMetadata:
    """A checkpoint's metadata from a ``PAGE`` reply entry: its JSON text, or (redis-v9)
    the packed record holding it (split, redis-v11)."""
    if raw[:1] in (b"", b"{"):
        return decode_metadata(raw)
    return decode_metadata(unpack_record(raw, checkpoint_id)["metadata"])


def _ts_after(offset: str, fields: Mapping[str, bytes], checkpoint_id: str) -> str:
    """A v8 record's ``ts`` from its ``_TS_AFTER_ID`` text; ValueError when the record
    also holds a ``ts``, the offset is not an integer or the id holds no time."""
    after = id_micros(checkpoint_id)
    if "ts" in fields or after is None or type(offset) is not str:
        raise ValueError("t needs a UUID id and no ts")  # internal signal: garbled
    return ts_text(after + int(offset))


def record_parent(raw: bytes, checkpoint_id: str) -> str:
    """The parent id field of a packed checkpoint record ('' for none)."""
    return unpack_record(raw, checkpoint_id)["parent"].decode()


def encode_writes(
    tc: ThreadCodec, checkpoint_id: str, writes: Sequence[tuple[str, Any]], task_id: str
) -> list[tuple[str, bool, bytes]]:
    """(field, replaces, value) per write; special channels replace, others keep the first.

    The value is msgpack ``[channel, tag, bytes]``, the serializer's bytes deflated as a
    channel value's are (``deflate.squeezed``, tag ``DEFLATED``): a reader older than that
    refuses ``%tag`` loudly ("unknown serialization format", or a bad signature)."""
    out: list[tuple[str, bool, bytes]] = []
    for idx, (channel, value) in enumerate(writes):
        slot = WRITES_IDX_MAP.get(channel, idx)
        tag, data = squeezed(tc.write(checkpoint_id, task_id, slot, channel, value))
        field = write_field(task_id, slot)
        out.append((field, channel in WRITES_IDX_MAP, ormsgpack.packb([channel, tag, data])))
    return out


def decode_metadata(raw: bytes | str) -> CheckpointMetadata:
    """Metadata JSON of a checkpoint hash."""
    meta: CheckpointMetadata = json.loads(raw) if raw else {}
    return meta


def _pairs(flat: Sequence[bytes]) -> dict[str, bytes]:
    """A flat HGETALL reply as a dict with text keys."""
    return {flat[i].decode(): flat[i + 1] for i in range(0, len(flat), 2)}


def _writes(tc: ThreadCodec, checkpoint_id: str, flat: Sequence[bytes]) -> list[PendingWrite]:
    """Pending writes ordered by (task id, index), as every saver returns them; a write's
    serializer bytes inflated (``deflate.unsqueezed``) before its signature is checked."""
    slots = []
    for field, raw in _pairs(flat).items():
        task_id, _, idx = field.rpartition(":")
        channel, tag, data = ormsgpack.unpackb(raw)
        blob = unsqueezed((tag, data), f"pending write {field!r} of checkpoint {checkpoint_id!r}")
        slots.append(((task_id, int(idx)), channel, blob))
    slots.sort(key=lambda s: s[0])
    return [
        PendingWrite(task_id, channel, tc.pending(checkpoint_id, task_id, idx, channel, blob))
        for (task_id, idx), channel, blob in slots
    ]


def _chain(
    tc: ThreadCodec, checkpoint_id: str, channel: str, version: int,
    by_field: Mapping[str, bytes], *, signed: bool,
) -> list[Any]:
    """Decoded values from ``version`` back along its delta links to a whole value."""
    out: list[Any] = []
    raw = by_field.get(blob_field(channel, version))
    while raw is not None:
        value = tc.value(checkpoint_id, channel, version, decode_value(raw, channel, version),
                         signed_record=signed)
        out.append(value)
        if not isinstance(value, ChannelDelta):
            break
        version = value.base
        raw = by_field.get(blob_field(channel, version))
    return out


def decode_tuple(
    tc: ThreadCodec, entry: Sequence[Any], depths: dict[tuple[str, int], int] | None = None
) -> CheckpointTuple:
    """A checkpoint tuple from one ``LOAD`` reply entry: id, fields, blobs, writes.

    With a signing serializer the record's signature is checked before any value.
    ``depths``, if given, gets the stored depth of each value read, by (channel,
    version): what a commit on top of this checkpoint needs to plan its deltas.
    """
    raw_id, stored_record, blob_values, write_flat, blob_names = entry
    checkpoint_id = raw_id.decode()
    fields = (unpack_record(stored_record, checkpoint_id) if isinstance(stored_record, bytes)
              else _pairs(stored_record))
    sig = fields.pop("sig", None)
    signed = tc.check_record(checkpoint_id, fields, sig)
    refs = record_refs(fields)
    versions = record_versions(fields, refs)
    by_field = dict(zip([n.decode() for n in blob_names], blob_values, strict=True))
    by_field.update({f: raw for f, raw in refs if raw is not None})
    stored = {
        ch: tc.value(checkpoint_id, ch, v, decode_value(raw, ch, v), signed_record=signed)
        for ch, v in versions.items()
        if (raw := by_field.get(blob_field(ch, v))) is not None
    }
    if depths is not None:
        depths.update({(ch, versions[ch]): v.depth if isinstance(v, ChannelDelta) else 0
                       for ch, v in stored.items()})
    values = resolve_values(
        stored, lambda ch, head: _chain(tc, checkpoint_id, ch, head, by_field, signed=signed))
    join_leaves_of(values, by_field)
    parent = fields["parent"].decode()
    thread_id, ns = tc.thread_id, tc.ns
    return CheckpointTuple(
        config=checkpoint_config(thread_id, ns, checkpoint_id),
        checkpoint=Checkpoint(
            id=checkpoint_id,
            ts=fields["ts"].decode(),
            channel_values=values,
            channel_versions=versions,
            versions_seen=json.loads(fields["seen"]),
            v=int(fields["v"]),
        ),
        metadata=decode_metadata(fields["metadata"]),
        parent_config=checkpoint_config(thread_id, ns, parent) if parent else None,
        pending_writes=_writes(tc, checkpoint_id, write_flat),
    )


def join_leaves_of(values: dict[str, Any], by_field: Mapping[str, bytes | None]) -> None:
    """Put back the leaves of decoded ``values`` (in place; ``leafblobs``) from a ``LOAD``
    reply's blob fields; a leaf listed but gone, or never listed, is a SerializationError.
    Whatever this saver's serializer: another saver's may have kept leaves apart."""
    join_found(values, {leaf_digest(f): unpack_leaf(raw) for f, raw in by_field.items()
                        if raw is not None and f.startswith(LEAF)})


def blob_fields_of(checkpoint: Checkpoint) -> dict[str, str]:
    """Channel -> blob field, for the channels that carry a value in ``checkpoint``."""
    versions: Mapping[str, int] = checkpoint.channel_versions
    return {ch: blob_field(ch, versions[ch]) for ch in checkpoint.channel_values}


_BOUND_RUN = "bound:"
"""Prefix of a run record signed for its thread (older records are the sealed text alone)."""


def bind_run(tc: ThreadCodec, sealed: str) -> str:
    """A run record as stored: signed for its thread when the store signs."""
    blob = tc.run_record(sealed)
    if blob is None:
        return sealed
    return _BOUND_RUN + base64.b64encode(encode_blob(blob)).decode()


def unbind_run(tc: ThreadCodec, stored: str) -> str:
    """The sealed run record ``bind_run`` stored; SignatureError if it is not this thread's."""
    if not stored.startswith(_BOUND_RUN):
        _check_old_run(tc, stored)
        return stored
    try:
        raw = base64.b64decode(stored[len(_BOUND_RUN):], validate=True)
    except ValueError:
        raise SignatureError(
            f"the run record of thread {tc.thread_id!r} is garbled; refused") from None
    return tc.open_run_record(decode_blob(raw))


def _check_old_run(tc: ThreadCodec, stored: str) -> None:
    """A record with no thread binding is only accepted from a release that wrote none.

    Its sealed envelope must then be of the old unbound format: a current one (every
    bound record holds one inside) lifted out and stored bare elsewhere is refused.
    """
    if tc.bound is None:
        return
    try:
        envelope = base64.b64decode(stored, validate=True)
    except ValueError:
        return  # not sealed at all: opening it says so
    if tc.bound.is_bound(("signed", envelope)):
        raise SignatureError(
            f"the run record of thread {tc.thread_id!r} lacks its thread binding: it was "
            "lifted out of another thread's record. Refused; nothing was run.")
