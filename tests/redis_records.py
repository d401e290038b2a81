"""Where a RedisSaver keeps checkpoint records and values, read and rewritten in place (tests
only).

Since redis-v11 a namespace's records sit in its id pages' record strings (a page member is
the id, NUL, ``offset,length``; ``store/redis/history.py``); before, and for a record too
large for a page, in a key of its own (``cp:<id>``). Since redis-v12 its values sit the same
way in value pages (a member is the field, NUL, ``offset,length``, or NUL, ``-`` for a value
in a key of its own, ``v:<field>``); before, in one hash (``blobs``). Tests that tamper with
a stored record or value, or check what is stored, go through here rather than know either
layout.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

import redis

from durable_graph.store.redis.keys import (
    ID_DIR_V13,
    ID_PAGE,
    ID_PAGES_MARK_V13,
    PAGE_RECORDS,
    VALUE,
    VALUE_DIR_V13,
    VALUE_HEAP,
    VALUE_PAGE,
    VALUES_MARK_V13,
    NamespaceKeys,
)
from durable_graph.store.redis.scripts import AS_SENT

__all__ = [
    "delete_value",
    "id_dir",
    "id_of",
    "namespaces",
    "prefix_values",
    "read_record",
    "read_value",
    "read_values",
    "split_member",
    "record_ids",
    "stored_record",
    "stored_values",
    "value_dir",
    "value_fields",
    "write_record",
    "write_value",
]

_AT = re.compile(rb"^(.*)\x00(\d+),(\d+)$", re.S)


def split_member(member: bytes) -> tuple[bytes, tuple[int, int] | None]:
    """A page member's key and where its bytes sit in the page's string (None: a key of
    their own): since redis-v13 NUL, offset and length in 2 bytes each, byte 255; before,
    NUL and ``offset,length``."""
    if member[-1:] == b"\xff" and member[-6:-5] == b"\x00":
        return member[:-6], (int.from_bytes(member[-5:-3], "big"),
                             int.from_bytes(member[-3:-1], "big"))
    if member.endswith(b"\x00-"):
        return member[:-2], None
    found = _AT.match(member)
    if found:
        return found.group(1), (int(found.group(2)), int(found.group(3)))
    return member, None


def _paged(client: redis.Redis, directory: str,
           page: Callable[[bytes], str | bytes]) -> dict[bytes, tuple[bytes, bytes]]:
    """Key -> (page name, member) of every member of a paged set (``page``: a page's key
    from its name)."""
    out = {}
    for name in (bytes(n) for n in client.zrange(directory, 0, -1)):
        for member in client.zrange(page(name), 0, -1):
            out[split_member(member)[0]] = (name, member)
    return out


def id_dir(client: redis.Redis, nsk: NamespaceKeys) -> str:
    """The namespace's id-page directory: ``idir`` where it keeps ids compact (redis-v13,
    whose ``pages`` key then holds a text older releases fail on), else ``pages``."""
    compact = client.get(nsk.index) == ID_PAGES_MARK_V13.encode()
    return nsk.base + ID_DIR_V13 if compact else nsk.pages


def value_dir(client: redis.Redis, nsk: NamespaceKeys) -> str:
    """The namespace's value-page directory (``vdir`` where it keeps fields compact)."""
    compact = client.get(nsk.blobs) == VALUES_MARK_V13.encode() if client.type(
        nsk.blobs) == b"string" else False
    return nsk.base + VALUE_DIR_V13 if compact else nsk.value_pages


def id_of(client: redis.Redis, nsk: NamespaceKeys) -> Callable[[bytes], str]:
    """A page key's checkpoint id: its 16 bytes' UUID where the namespace keeps ids compact
    (redis-v13), else its text."""
    if client.get(nsk.index) == ID_PAGES_MARK_V13.encode():
        return lambda k: str(uuid.UUID(bytes=k))
    return lambda k: k.decode()


def _members(client: redis.Redis, nsk: NamespaceKeys) -> dict[str, tuple[bytes, bytes]]:
    """Checkpoint id -> (page name, member) of a paged namespace."""
    base = nsk.base.encode()
    return {id_of(client, nsk)(k): v for k, v in
            _paged(client, id_dir(client, nsk), lambda n: base + ID_PAGE.encode() + n).items()}


def record_ids(client: redis.Redis, nsk: NamespaceKeys) -> list[str]:
    """Every checkpoint id of the namespace, oldest first, in either layout."""
    if client.type(nsk.index) == b"zset":
        return [i.decode() for i in client.zrange(nsk.index, 0, -1)]
    return sorted(_members(client, nsk))


def _bytes_at(client: redis.Redis, heap: str | bytes, at: tuple[int, int]) -> bytes:
    off, length = at
    return bytes(client.getrange(heap, off, off + length - 1))


def stored_record(client: redis.Redis, nsk: NamespaceKeys, cid: str) -> bytes | None:
    """The record of checkpoint ``cid`` as Redis holds it (since redis-v13 its head
    compact: ``compact``), None if there is none."""
    found = _members(client, nsk).get(cid)
    at = found and split_member(found[1])[1]
    if found and at:
        return _bytes_at(client, _heap(nsk, found[0]), at)
    stored = client.get(_own(client, nsk, cid))
    return None if stored is None else bytes(stored)


def _own(client: redis.Redis, nsk: NamespaceKeys, cid: str) -> bytes:
    """The key of checkpoint ``cid``'s record kept apart (its id's 16 bytes name it where
    the namespace keeps ids compact)."""
    compact = client.get(nsk.index) == ID_PAGES_MARK_V13.encode()
    return nsk.checkpoint("").encode() + (uuid.UUID(cid).bytes if compact else cid.encode())


def _as_sent(client: redis.Redis, nsk: NamespaceKeys, what: str, *args: bytes) -> Any:
    """The scripts' own reading of stored parts as the saver sent them (``AS_SENT``)."""
    return client.eval(AS_SENT, 1, nsk.channel_names, nsk.base, what, *args)


def read_record(client: redis.Redis, nsk: NamespaceKeys, cid: str) -> bytes | None:
    """The record of checkpoint ``cid`` as the saver packed it (``records.pack_record``),
    None if there is none. ``write_record`` stores such a record as it is."""
    found = _as_sent(client, nsk, "record", cid.encode())
    return bytes(found) if found else None


def _replace(client: redis.Redis, page: str | bytes, heap: str | bytes, key: bytes, member: bytes,
             data: bytes) -> None:
    """Member ``member`` of ``page`` rewritten to point at ``data`` appended to ``heap``."""
    off = int(client.append(heap, data)) - len(data)
    client.zrem(page, member)
    client.zadd(page, {key + b"\x00" + f"{off},{len(data)}".encode(): 0})


def write_record(client: redis.Redis, nsk: NamespaceKeys, cid: str, data: bytes) -> None:
    """Replace checkpoint ``cid``'s stored record with ``data`` where it is kept."""
    found = _members(client, nsk).get(cid)
    if not (found and split_member(found[1])[1]):
        client.set(_own(client, nsk, cid), data)
        return
    name, member = found
    base = nsk.base.encode()
    _replace(client, base + ID_PAGE.encode() + name, _heap(nsk, name),
             split_member(member)[0], member, data)


def _heap(nsk: NamespaceKeys, name: bytes) -> bytes:
    """An id page's record string."""
    return nsk.base.encode() + PAGE_RECORDS.encode() + name


def _vpage(nsk: NamespaceKeys) -> Callable[[bytes], bytes]:
    """A value page's key from its name (bytes: a compact key names it, redis-v13)."""
    return lambda name: nsk.base.encode() + VALUE_PAGE.encode() + name


def _vheap(nsk: NamespaceKeys) -> Callable[[bytes], bytes]:
    return lambda name: nsk.base.encode() + VALUE_HEAP.encode() + name


def _in_hash(client: redis.Redis, nsk: NamespaceKeys) -> bool:
    return client.type(nsk.blobs) == b"hash"


def _field(field: str | bytes) -> bytes:
    return field.encode() if isinstance(field, str) else field


def stored_values(client: redis.Redis, nsk: NamespaceKeys) -> dict[bytes, bytes]:
    """Every value of the namespace as Redis holds it: key -> bytes (since redis-v13 a
    new namespace's keys and links are compact: ``compact``), in either layout."""
    if _in_hash(client, nsk):
        return {bytes(k): bytes(v) for k, v in client.hgetall(nsk.blobs).items()}
    out = {}
    for key, (name, member) in _paged(client, value_dir(client, nsk), _vpage(nsk)).items():
        at = split_member(member)[1]
        if at:
            out[key] = _bytes_at(client, _vheap(nsk)(name), at)
        else:
            out[key] = bytes(client.get(nsk.base.encode() + VALUE.encode() + key) or b"")
    return out


def read_values(client: redis.Redis, nsk: NamespaceKeys) -> dict[bytes, bytes]:
    """Every stored value field of the namespace and its bytes as the saver sent them,
    in either layout."""
    stored = stored_values(client, nsk)
    if _in_hash(client, nsk) or not stored:
        return stored
    flat = _as_sent(client, nsk, "values", *(b for kv in stored.items() for b in kv))
    return {bytes(flat[i]): bytes(flat[i + 1]) for i in range(0, len(flat), 2)}


def _key(client: redis.Redis, nsk: NamespaceKeys, field: str | bytes) -> bytes:
    """The key value ``field`` is stored at in the namespace's pages."""
    return bytes(_as_sent(client, nsk, "keys", _field(field))[0])


def value_fields(client: redis.Redis, nsk: NamespaceKeys) -> list[bytes]:
    """Every stored value field of the namespace, sorted, in either layout."""
    return sorted(read_values(client, nsk))


def read_value(client: redis.Redis, nsk: NamespaceKeys, field: str | bytes) -> bytes | None:
    """The stored bytes of value ``field``, None if there is none."""
    return read_values(client, nsk).get(_field(field))


def write_value(client: redis.Redis, nsk: NamespaceKeys, field: str | bytes,
                data: bytes) -> None:
    """Replace the stored value ``field`` (stored already) with ``data`` where it is kept
    (read back as it is unless it starts with byte 4 or 5: ``compact.val_whole``)."""
    if _in_hash(client, nsk):
        client.hset(nsk.blobs, _field(field), data)
        return
    key = _key(client, nsk, field)
    name, member = _paged(client, value_dir(client, nsk), _vpage(nsk))[key]
    _replace(client, _vpage(nsk)(name), _vheap(nsk)(name), key, member, data)


def delete_value(client: redis.Redis, nsk: NamespaceKeys, field: str | bytes) -> None:
    """Delete the stored value ``field`` (as if pruned), in either layout."""
    if _in_hash(client, nsk):
        client.hdel(nsk.blobs, _field(field))
        return
    key = _key(client, nsk, field)
    name, member = _paged(client, value_dir(client, nsk), _vpage(nsk))[key]
    client.zrem(_vpage(nsk)(name), member)
    if not client.exists(_vpage(nsk)(name)):  # as the store does: no empty page
        client.delete(_vheap(nsk)(name))
        client.zrem(value_dir(client, nsk), name)


def namespaces(client: redis.Redis, prefix: str) -> list[NamespaceKeys]:
    """The keys of every namespace of every thread of saver prefix ``prefix``."""
    out = []
    for key in client.scan_iter(match=f"{{{prefix}:*}}:ns", count=1000):
        out += [NamespaceKeys(base.decode()) for base in client.hvals(key)]
    return out


def prefix_values(client: redis.Redis, prefix: str) -> list[tuple[NamespaceKeys, bytes]]:
    """(namespace, field) of every value stored under saver prefix ``prefix``."""
    return [(nsk, field) for nsk in namespaces(client, prefix)
            for field in value_fields(client, nsk)]
