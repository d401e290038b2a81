"""Redis checkpoint records: ``versions`` derived from ``refs`` when that is exact (redis-v7),
``ts`` after the id's time and ``v`` left out when it is "1" (redis-v8)."""

from __future__ import annotations

from datetime import UTC, datetime

import ormsgpack
import pytest

from durable_graph.errors import CheckpointStoreError
from durable_graph.store.base import Checkpoint, new_checkpoint_id
from durable_graph.store.encoding import ThreadCodec
from durable_graph.store.redis.records import (
    checkpoint_fields,
    pack_record,
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
    stored = ormsgpack.unpackb(raw)
    assert "ts" not in stored and "v" not in stored and int(stored["t"]) < 10**6
    assert unpack_record(raw, cid) == {k: v.encode() if isinstance(v, str) else v
                                       for k, v in fields.items()}
    assert len(raw) + 30 < len(ormsgpack.packb({**stored, "ts": ts, "v": "1"}))
    for odd_ts in ("2026-01-01T00:00:00Z", "2026-01-01 00:00:00+00:00", "yesterday"):
        _, raw = _record(cid, odd_ts, v=2)  # not isoformat's own text: kept as it is
        assert ormsgpack.unpackb(raw)["ts"] == odd_ts and ormsgpack.unpackb(raw)["v"] == "2"
        assert unpack_record(raw, cid)["ts"] == odd_ts.encode()
    _, raw = _record("not-a-uuid", ts)  # no time in the id: ts kept
    assert ormsgpack.unpackb(raw)["ts"] == ts


@pytest.mark.parametrize("edit", [{"t": "soon"}, {"t": 5}, {"ts": "x"}, {"t": "9" * 30}],
                         ids=["not-a-number", "not-text", "both", "out-of-range"])
def test_a_garbled_ts_after_the_id_is_refused(edit: dict[str, object]) -> None:
    cid = new_checkpoint_id()
    _, raw = _record(cid, datetime.now(UTC).isoformat())
    record = {**ormsgpack.unpackb(raw), **edit}
    with pytest.raises(CheckpointStoreError, match="is garbled"):
        unpack_record(ormsgpack.packb(record), cid)
