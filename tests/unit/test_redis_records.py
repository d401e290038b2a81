"""Redis checkpoint records: ``versions`` derived from ``refs`` when that is exact (redis-v7),
``ts`` after the id's time and ``v`` left out when it is "1" (redis-v8), split in what the
scripts read and the rest deflated (redis-v11)."""

from __future__ import annotations

import zlib
from datetime import UTC, datetime
from typing import Any

import ormsgpack
import pytest

from durable_graph.errors import CheckpointStoreError
from durable_graph.store.base import Checkpoint, new_checkpoint_id
from durable_graph.store.encoding import ThreadCodec
from durable_graph.store.redis.records import (
    SPLIT,
    checkpoint_fields,
    pack_record,
    record_map,
    record_versions,
    unpack_record,
)
from durable_graph.store.serde import TypedSerializer


def _fields(versions: dict[str, object]) -> dict[str, bytes]:
    tc = ThreadCodec(TypedSerializer(), "p", "t", "")
    cp = Checkpoint(id="1ef-0001", ts="2026-01-01T00:00:00+00:00", channel_values={},
                    channel_versions=versions, versions_seen={})  # type: ignore[arg-type]
    return unpack_record(pack_record(checkpoint_fields(tc, cp, {}, None), cp.id), cp.id)


def test_int_versions_are_stored_once_in_refs_and_read_back() -> None:
    versions = {"messages": 154126581547, "branch:to:noop": 3, "__start__": 1}
    fields = _fields(versions)
    assert "versions" not in fields
    assert record_versions(fields) == versions


def test_versions_refs_cannot_give_back_are_kept() -> None:
    versions = {"a": "00000000000000000000000000000002.0.123", "b": 2}
    fields = _fields(versions)
    assert "versions" in fields
    assert record_versions(fields) == versions


def test_a_record_with_a_versions_field_reads_it() -> None:
    fields = _fields({"a": 5})
    fields["versions"] = b'{"a":7}'
    assert record_versions(fields) == {"a": 7}


def test_garbled_refs_are_refused_by_name() -> None:
    fields = _fields({"a": 5})
    fields["refs"] = ormsgpack.packb(["a\x00not-a-version"])
    with pytest.raises(CheckpointStoreError, match="refs of a checkpoint record are garbled"):
        record_versions(fields)


def _record(checkpoint_id: str, ts: str, v: int = 1) -> tuple[dict[str, str | bytes], bytes]:
    """(fields a signature covers, stored record) of a checkpoint."""
    tc = ThreadCodec(TypedSerializer(), "p", "t", "")
    cp = Checkpoint(id=checkpoint_id, ts=ts, channel_values={}, channel_versions={"a": 1},
                    versions_seen={}, v=v)
    fields = checkpoint_fields(tc, cp, {"source": "loop", "step": 3}, None)
    return fields, pack_record(fields, checkpoint_id)


def test_a_v8_record_keeps_ts_after_the_ids_time_and_no_v() -> None:
    """Redis-v8: ``ts`` as microseconds after the id's time (``t``), ``v`` "1" left out;
    unpacked, the fields are exactly those signed, so signatures are unchanged."""
    cid = new_checkpoint_id()
    ts = datetime.now(UTC).isoformat()
    fields, raw = _record(cid, ts)
    stored = record_map(raw)
    assert "ts" not in stored and "v" not in stored and int(stored["t"]) < 10**6
    assert unpack_record(raw, cid) == {k: v.encode() if isinstance(v, str) else v
                                       for k, v in fields.items()}
    assert len(raw) + 30 < len(ormsgpack.packb({**stored, "ts": ts, "v": "1"}))
    for odd_ts in ("2026-01-01T00:00:00Z", "2026-01-01 00:00:00+00:00", "yesterday"):
        _, raw = _record(cid, odd_ts, v=2)  # not isoformat's own text: kept as it is
        assert record_map(raw)["ts"] == odd_ts and record_map(raw)["v"] == "2"
        assert unpack_record(raw, cid)["ts"] == odd_ts.encode()
    _, raw = _record("not-a-uuid", ts)  # no time in the id: ts kept
    assert record_map(raw)["ts"] == ts


@pytest.mark.parametrize("edit", [{"t": "soon"}, {"t": 5}, {"ts": "x"}, {"t": "9" * 30}],
                         ids=["not-a-number", "not-text", "both", "out-of-range"])
def test_a_garbled_ts_after_the_id_is_refused(edit: dict[str, object]) -> None:
    cid = new_checkpoint_id()
    _, raw = _record(cid, datetime.now(UTC).isoformat())
    record = {**record_map(raw), **edit}
    with pytest.raises(CheckpointStoreError, match="is garbled"):
        unpack_record(ormsgpack.packb(record), cid)


def _engine_record(cid: str, parent: str, metadata: dict[str, Any] | None = None,
                   serde: Any = None) -> tuple[dict[str, str | bytes], bytes]:
    """The fields and stored record of a step as the engine writes them (a chat's node);
    ``metadata``: other metadata (one with a key of its own keeps v11's deflated rest)."""
    tc = ThreadCodec(serde or TypedSerializer(), "p", "t", "")
    cp = Checkpoint(id=cid, ts=datetime.now(UTC).isoformat(), channel_values={},
                    channel_versions={"__start__": 141013688187, "messages": 141013688187,
                                      "branch:to:noop": 144074753223},
                    versions_seen={"__input__": {}, "__start__": {"__start__": 135997288242},
                                   "noop": {"branch:to:noop": 141013688187}})
    meta = metadata or {"source": "loop", "step": 31, "parents": {}}
    fields = checkpoint_fields(tc, cp, meta, parent)  # type: ignore[arg-type]
    return fields, pack_record(fields, cid)


_OWN_KEY = {"source": "loop", "step": 31, "parents": {}, "run": "r-1"}
"""Metadata with a key of its own: not the engine's shape, so v11's deflated rest."""


def test_a_v11_record_keeps_what_scripts_read_plain_and_deflates_the_rest() -> None:
    """Redis-v11: ``SPLIT``, the length of a map of the parent and refs (all a script reads),
    that map, then the time, versions seen and metadata deflated with the record framing;
    unpacked, the fields are exactly those signed."""
    parent = new_checkpoint_id()
    cid = new_checkpoint_id(parent)
    fields, raw = _engine_record(cid, parent, _OWN_KEY)
    assert raw[:1] == SPLIT
    size = int.from_bytes(raw[1:3], "big")
    assert set(ormsgpack.unpackb(raw[3:3 + size])) == {"P", "r"}
    assert unpack_record(raw, cid) == {k: v.encode() if isinstance(v, str) else v
                                       for k, v in fields.items()}
    whole = ormsgpack.packb(record_map(raw))  # the one map of redis-v10
    assert len(raw) + 50 < len(whole), (len(raw), len(whole))


def test_a_garbled_or_bombed_deflated_part_is_refused() -> None:
    parent = new_checkpoint_id()
    cid = new_checkpoint_id(parent)
    _, raw = _engine_record(cid, parent, _OWN_KEY)
    size = int.from_bytes(raw[1:3], "big")
    garbled = raw[:3 + size] + bytes(b ^ 0x5A for b in raw[3 + size:])
    squeezer = zlib.compressobj(9, zlib.DEFLATED, -15)
    bomb = raw[:3 + size] + squeezer.compress(b"\0" * 10**6) + squeezer.flush()
    for bad in (garbled, bomb, raw[:3 + size], raw[:2]):
        with pytest.raises(CheckpointStoreError, match="is garbled"):
            unpack_record(bad, cid)


def test_a_record_whose_rest_does_not_deflate_is_kept_whole() -> None:
    tc = ThreadCodec(TypedSerializer(), "p", "t", "")
    cp = Checkpoint(id="not-a-uuid", ts="x", channel_values={}, channel_versions={"a": 1},
                    versions_seen={})
    fields = checkpoint_fields(tc, cp, {}, None)
    raw = pack_record(fields, cp.id)
    assert raw[:1] != SPLIT and ormsgpack.unpackb(raw)["ts"] == "x"
    assert unpack_record(raw, cp.id)["ts"] == b"x"
