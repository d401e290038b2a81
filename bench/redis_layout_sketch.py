"""What a more compact Redis layout would hold: a design estimate, measured by Redis itself.

Runs the chat of ``bench_history.py`` (``--steps`` turns of 1 KB messages, a UUID thread)
on the current ``RedisSaver``, then writes a transformed copy of what it stored under a
scratch prefix and sums ``MEMORY USAGE`` of both (every key of both prefixes is deleted
after). The copy keeps every key and structure (the same pages, records and values) and
changes only how these are spelled:

* checkpoint ids as their 16 bytes, not 36 characters (id-page members and names);
* a record's head (what the scripts read): the parent as 16 raw bytes, each ref as a
  channel's number in a per-namespace table plus its version in 6 bytes (and a value kept
  in the record as its raw bytes), not ``channel\\0version`` text;
* value-page fields likewise, and a leaf's as ``\\2`` and its 32-byte digest;
* a value's link: its base as a version only, the digests of its leaves raw;
* with ``--drop-body-digest``, a value that refers to a leaf no longer names its digest in
  its own bytes too (it would name the link's leaf by position): 33 bytes less each;
* with ``--compact-records``, a record's parent left out when it is the checkpoint before
  it in its page (a flag instead of 16 bytes), and the rest of the record (the time after
  its id, versions seen, metadata) spelled as numbers: the time as a varint, each node and
  channel by its number, a version seen as the index of the ref that holds it when one
  does, the metadata's source by its number and its step as a varint (a record whose rest
  is anything else keeps it as it was).

What it does not sketch is the scripts and upgrades such a layout needs. The figures are
Redis's own, so a design can be judged before it is built::

    python bench/redis_layout_sketch.py --redis-url redis://127.0.0.1:6379/13
"""

from __future__ import annotations

import argparse
import base64
import collections
import struct
import sys
import uuid
from pathlib import Path
from typing import Any

import ormsgpack
import redis

from durable_graph.store.deflate import RECORD_FRAMING, inflated

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_history import run_chat

from durable_graph.store.redis import RedisSaver
from durable_graph.store.redis.keys import CHANNEL_NAMES
from durable_graph.store.redis.scripts import WHOLE_RECORD

_LEAF = b"\x02leaf\x00"
_DIGEST = 33
"""What a leaf's digest takes in a value's deflated bytes (32 random bytes do not deflate)."""
_SOURCES = ("input", "loop", "update", "fork")


def _varint(n: int) -> bytes:
    """``n`` zigzagged, 7 bits a byte."""
    n = n * 2 if n >= 0 else -n * 2 - 1
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


class Sketch:
    """The transformed spelling of one namespace's keys (channel numbers kept here)."""

    def __init__(self, drop_body_digest: bool, compact_records: bool) -> None:
        self.channels: dict[bytes, int] = {}
        self.drop_body_digest = drop_body_digest
        self.compact_records = compact_records

    def number(self, name: str) -> int:
        return self.channels.setdefault(name.encode(), len(self.channels))

    def rest(self, rest: dict[str, Any], versions: list[int]) -> bytes | None:
        """A record's rest as numbers (``--compact-records``), None when it holds more."""
        meta, seen = rest.get("m"), rest.get("s")
        if set(rest) - {"t", "s", "m"} or not isinstance(meta, dict) or not isinstance(
                seen, dict) or set(meta) - {"source", "step", "parents"} or meta.get(
                "parents") or meta.get("source") not in _SOURCES:
            return None
        out = _varint(int(rest.get("t", 0))) + bytes([_SOURCES.index(meta["source"])])
        out += _varint(int(meta.get("step", 0))) + bytes([len(seen)])
        for node, channels in seen.items():
            out += bytes([self.number(node), len(channels)])
            for channel, version in channels.items():
                at = versions.index(version) if version in versions else -1
                out += bytes([self.number(channel)]) + (
                    bytes([0x80 | at]) if at >= 0 else b"\0" + int(version).to_bytes(6, "big"))
        return out

    def field(self, field: bytes) -> bytes:
        if field.startswith(_LEAF):
            return b"\x02" + base64.urlsafe_b64decode(field[len(_LEAF):] + b"=")
        channel, _, version = field.partition(b"\x00")
        number = self.number(channel.decode())
        return bytes([number]) + int(version).to_bytes(6, "big")

    def record(self, raw: bytes, before: bytes | None = None) -> bytes:
        """A record respelled; ``before``: the id of the checkpoint before it in its page."""
        if raw[:1] == b"\xc1":  # split (redis-v11): the scripts' head, then the rest deflated
            size = struct.unpack(">H", raw[1:3])[0]
            head, rest = ormsgpack.unpackb(raw[3:3 + size]), raw[3 + size:]
            unpacked = inflated(rest, zdict=RECORD_FRAMING)
            fields = ormsgpack.unpackb(unpacked) if unpacked is not None else None
        else:
            whole = ormsgpack.unpackb(raw)
            head = {k: v for k, v in whole.items() if k in ("P", "r")}
            fields = {k: v for k, v in whole.items() if k not in ("P", "r")}
            rest = ormsgpack.packb(fields)
        parent = head["P"].encode("latin-1") if "P" in head else b""
        if self.compact_records:
            versions = [int(str(r if isinstance(r, str) else r[0]).partition("\0")[2])
                        for r in head["r"]]
            compact = self.rest(fields, versions) if isinstance(fields, dict) else None
            rest = compact if compact is not None else b"\xff" + rest
            parent = b"" if parent == before else parent  # a flag bit says which
        out = parent
        for ref in head["r"]:
            if isinstance(ref, str):
                out += self.field(ref.encode())
            else:
                kept = ref[1].encode("latin-1")
                out += self.field(ref[0].encode()) + bytes([len(kept)]) + kept
        return bytes([len(out)]) + out + rest

    def value(self, raw: bytes) -> bytes:
        if raw[:1] != b"\x03":
            return raw
        size = struct.unpack(">I", raw[1:5])[0]
        base, depth, *leaves = ormsgpack.unpackb(raw[5:5 + size])
        body = raw[5 + size:]
        link = (self.field(base.encode())[1:] if base else b"") + bytes([depth]) + b"".join(
            self.field(leaf.encode())[1:] for leaf in leaves)
        if self.drop_body_digest and leaves:
            body = body[:-_DIGEST]
        return b"\x03" + bytes([len(link)]) + link + body


def _paged(client: Any, key: bytes, heap_of: tuple[bytes, bytes], convert: Any, name: bytes,
           member: Any) -> list[bytes]:
    """A page (sorted set) and its heap (string) respelled (``convert(bytes, the member
    before)``): returns the new keys."""
    heap = client.get(key.replace(heap_of[0], heap_of[1]))
    members, blob = [], b""
    before = None
    for m in client.zrange(key, 0, -1):
        head, _, where = m.rpartition(b"\x00")
        offset, length = map(int, where.split(b","))
        stored = convert(heap[offset:offset + length], before)
        before = member(head)
        members.append(member(head) + b"\x00" + f"{len(blob)},{len(stored)}".encode())
        blob += stored
    client.zadd(name, dict.fromkeys(members, 0))
    client.set(name.replace(heap_of[0], heap_of[1]), blob)
    return [name, name.replace(heap_of[0], heap_of[1])]


def sketch(client: Any, prefix: str, scratch: str, *, drop_body_digest: bool,
           compact_records: bool) -> list[bytes]:
    """Write the respelled copy of ``prefix``'s keys under ``scratch``; its keys."""
    s = Sketch(drop_body_digest, compact_records)
    made: list[bytes] = []
    for key in client.scan_iter(match=f"*{prefix}*", count=1000):
        tail = key.split(b"}", 1)[-1]
        moved = key.replace(prefix.encode(), scratch.encode())
        if b":pg:" in tail:
            base, name = moved.split(b":pg:")
            stored_base = key.split(b":pg:")[0]

            def record(raw: bytes, before: bytes | None, at: bytes = stored_base) -> bytes:
                return s.record(bytes(client.eval(WHOLE_RECORD, 1, at + CHANNEL_NAMES.encode(),
                                                  at, raw)), before)

            made += _paged(client, key, (b":pg:", b":rc:"), record,
                           base + b":pg:" + uuid.UUID(name.decode()).bytes,
                           lambda i: uuid.UUID(i.decode()).bytes)
        elif b":vpg:" in tail:
            base, name = moved.split(b":vpg:")
            made += _paged(client, key, (b":vpg:", b":vh:"), lambda v, _: s.value(v),
                           base + b":vpg:" + s.field(name), s.field)
        elif tail.endswith(b":pages"):
            client.zadd(moved, {uuid.UUID(m.decode()).bytes: 0 for m in client.zrange(key, 0, -1)})
            made.append(moved)
        elif tail.endswith(b":vpages"):
            client.zadd(moved, {s.field(m): 0 for m in client.zrange(key, 0, -1)})
            made.append(moved)
        elif b":rc:" not in tail and b":vh:" not in tail:  # with their pages, above
            client.restore(moved, 0, client.dump(key))
            made.append(moved)
    table = f"{{{scratch}}}:channels".encode()  # the namespace's channel numbers
    client.set(table, b"\x00".join(s.channels))
    return [*made, table]


def _held(client: Any, keys: list[bytes]) -> collections.Counter[str]:
    by: collections.Counter[str] = collections.Counter()
    for key in keys:
        tail = key.split(b"}", 1)[-1]
        kind = next((k for k in ("pg", "rc", "vpg", "vh") if f":{k}:".encode() in tail), "other")
        by[kind] += int(client.memory_usage(key, samples=0) or 0)
    return by


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=200, help="chat turns")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--drop-body-digest", action="store_true",
                        help="also leave a leaf's digest out of the value that names it")
    parser.add_argument("--compact-records", action="store_true",
                        help="also mark a parent that is the checkpoint before, and spell a "
                        "record's time, versions seen and metadata as numbers")
    args = parser.parse_args()
    client = redis.Redis.from_url(args.redis_url)
    prefix, scratch = (f"bench-sketch-{uuid.uuid4().hex[:8]}" for _ in range(2))
    made: list[bytes] = []
    try:
        run_chat(RedisSaver(client, prefix=prefix), args.steps, str(uuid.uuid4()))
        stored = list(client.scan_iter(match=f"*{prefix}*", count=1000))
        made = sketch(client, prefix, scratch, drop_body_digest=args.drop_body_digest,
                      compact_records=args.compact_records)
        appended = args.steps * 1024
        for name, keys in (("now", stored), ("sketch", made)):
            by = _held(client, keys)
            total = sum(by.values())
            kinds = ", ".join(f"{k} {v / 1024:.0f}" for k, v in sorted(by.items()))
            print(f"{name:>6}: {total / 1024:.0f} KB, {total / appended:.2f}x appended "
                  f"(KB by kind: {kinds})")
    finally:
        for key in [*client.scan_iter(match=f"*{prefix}*", count=1000), *made]:
            client.unlink(key)


if __name__ == "__main__":
    main()
