"""Redis checkpoint records (redis-v7): ``versions`` is derived from ``refs`` when that is exact."""

from __future__ import annotations

import ormsgpack
import pytest

from durable_graph.errors import CheckpointStoreError
from durable_graph.store.base import Checkpoint
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
    return unpack_record(pack_record(checkpoint_fields(tc, cp, {}, None)), cp.id)


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
