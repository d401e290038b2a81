"""Where a RedisSaver keeps checkpoint records, read and rewritten in place (tests only).

Since redis-v11 a namespace's records sit in its id pages' record strings (a page member is
the id, NUL, ``offset,length``; ``store/redis/history.py``); before, and for a record too
large for a page, in a key of its own (``cp:<id>``). Tests that tamper with a stored record,
or check what is stored, go through here rather than know either layout.
"""

from __future__ import annotations

import redis

from durable_graph.store.redis.keys import NamespaceKeys

__all__ = ["read_record", "record_ids", "write_record"]


def _members(client: redis.Redis, nsk: NamespaceKeys) -> dict[str, tuple[str, str]]:
    """Checkpoint id -> (page name, member) of a paged namespace."""
    out = {}
    for name in (n.decode() for n in client.zrange(nsk.pages, 0, -1)):
        for member in (m.decode("latin-1") for m in client.zrange(nsk.page(name), 0, -1)):
            out[member.partition("\0")[0]] = (name, member)
    return out


def record_ids(client: redis.Redis, nsk: NamespaceKeys) -> list[str]:
    """Every checkpoint id of the namespace, oldest first, in either layout."""
    if client.type(nsk.index) == b"zset":
        return [i.decode() for i in client.zrange(nsk.index, 0, -1)]
    return sorted(_members(client, nsk))


def read_record(client: redis.Redis, nsk: NamespaceKeys, cid: str) -> bytes | None:
    """The stored (packed) record of checkpoint ``cid``, None if there is none."""
    found = _members(client, nsk).get(cid)
    if found and "\0" in found[1]:
        off, length = map(int, found[1].partition("\0")[2].split(","))
        raw = client.getrange(nsk.page_records(found[0]), off, off + length - 1)
        return bytes(raw)
    stored = client.get(nsk.checkpoint(cid))
    return None if stored is None else bytes(stored)


def write_record(client: redis.Redis, nsk: NamespaceKeys, cid: str, data: bytes) -> None:
    """Replace checkpoint ``cid``'s stored record with ``data`` where it is kept."""
    found = _members(client, nsk).get(cid)
    if not (found and "\0" in found[1]):
        client.set(nsk.checkpoint(cid), data)
        return
    name, member = found
    off = int(client.append(nsk.page_records(name), data)) - len(data)
    client.zrem(nsk.page(name), member.encode("latin-1"))
    client.zadd(nsk.page(name), {f"{cid}\0{off},{len(data)}": 0})
