"""Compact stored forms (SQLite schema 4): exact round trips, and the old forms still read.

A delta is one flat msgpack extension record (``pack_delta``) instead of the generic
dataclass record; a SQLite checkpoint row keeps its parent id, timestamp and versions
seen as BLOBs when they round-trip exactly (``sqlite_row``). Each is checked against
the old form too, since stores written before hold it.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import ormsgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from durable_graph.errors import SerializationError
from durable_graph.store import sqlite_row as row
from durable_graph.store.base import Checkpoint, new_checkpoint_id
from durable_graph.store.delta import ChannelDelta, delta_from_packed, pack_delta
from durable_graph.store.serde import TypedSerializer, _ext
from durable_graph.store.sqlite import SqliteSaver

_ITEMS = st.lists(st.one_of(st.integers(), st.text(max_size=5), st.tuples(st.integers()),
                            st.lists(st.integers(), max_size=2)), min_size=1, max_size=3)
_OPS = st.lists(st.one_of(
    st.tuples(st.just("c"), st.tuples(st.integers(0, 500), st.integers(0, 500))),
    st.tuples(st.just("n"), _ITEMS.map(tuple))), max_size=6)


@given(base=st.integers(0, 2**63), depth=st.integers(1, 500), ops=_OPS)
def test_a_delta_round_trips_through_the_serializer(
    base: int, depth: int, ops: list[Any]
) -> None:
    delta = ChannelDelta(base, depth, tuple(ops))
    serde = TypedSerializer()
    assert serde.loads_typed(serde.dumps_typed(delta)) == delta


def test_a_delta_costs_a_few_bytes_of_framing() -> None:
    item = "x" * 1024
    tag, data = TypedSerializer().dumps_typed(ChannelDelta(2**40, 7, (("c", (0, 198)),
                                                                      ("n", (item,)))))
    assert tag == "msgpack" and len(data) - len(item) < 30, len(data)


def test_a_delta_stored_as_a_dataclass_record_still_reads() -> None:
    delta = ChannelDelta(12, 3, (("c", (0, 2)), ("n", ("a", 1))))
    old = ormsgpack.packb(_ext(10, ["durable_graph.store.delta", "ChannelDelta",
                                    {"base": 12, "depth": 3, "ops": delta.ops}]))
    assert TypedSerializer().loads_typed(("msgpack", old)) == delta


@pytest.mark.parametrize("packed", [[], [1], ["1", 2], [1, 2, 3], [1, 2, 3, "4"], {"a": 1},
                                    [1, 2, 3.5, 4]])
def test_a_malformed_delta_is_refused(packed: Any) -> None:
    with pytest.raises(SerializationError, match="delta"):
        delta_from_packed(packed)


def test_pack_delta_is_flat() -> None:
    delta = ChannelDelta(5, 2, (("c", (0, 3)), ("n", ("a",)), ("c", (4, 5))))
    assert pack_delta(delta) == [5, 2, 0, 3, ["a"], 4, 5]


def test_checkpoint_ids_pack_to_16_bytes_only_when_canonical() -> None:
    cid = new_checkpoint_id()
    assert row.pack_id(cid) == uuid.UUID(cid).bytes and row.unpack_id(row.pack_id(cid)) == cid
    for other in (None, "1", cid.upper(), cid.replace("-", ""), "{" + cid[1:-1] + "}",
                  "not-a-uuid-but-36-characters-long!!!"):
        assert row.pack_id(other) == other and row.unpack_id(row.pack_id(other)) == other


@given(st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(9999, 1, 1)))
def test_utc_timestamps_pack_to_8_bytes_and_round_trip(when: datetime) -> None:
    ts = when.replace(tzinfo=UTC).isoformat()
    packed = row.pack_ts(ts)
    assert isinstance(packed, bytes) and len(packed) == 8
    assert row.unpack_ts(packed) == ts


@pytest.mark.parametrize("ts", [
    "2026-01-01T00:00:00+01:00",          # another zone: the offset would be lost
    datetime(2026, 1, 1, tzinfo=timezone(timedelta(0), "Z")).isoformat().replace("+00:00", "Z"),
    "2026-01-01T00:00:00",                # naive
    "2026-01-01 00:00:00+00:00",          # not what isoformat gives back
    "1969-12-31T23:59:59+00:00",          # before the epoch
    "yesterday",
])
def test_other_timestamps_stay_text(ts: str) -> None:
    assert row.pack_ts(ts) == ts and row.unpack_ts(ts) == ts


def test_versions_seen_pack_as_msgpack_sorted_and_json_when_msgpack_cannot() -> None:
    seen = {"b": {"y": 2, "x": 1}, "a": {}, "__input__": {}}
    packed = row.pack_seen(seen)
    assert isinstance(packed, bytes)
    assert json.dumps(row.unpack_seen(packed)) == json.dumps(seen, sort_keys=True)
    big = {"a": {"x": 2**70}}
    assert row.pack_seen(big) == '{"a":{"x":1180591620717411303424}}'
    assert row.unpack_seen(row.pack_seen(big)) == big
    assert row.unpack_seen('{"a":{"x":1}}') == {"a": {"x": 1}}  # a schema 3 row
    with pytest.raises(SerializationError, match="versions seen"):
        row.pack_seen({"a": {"x": object()}})


def _put_mixed(saver: SqliteSaver, thread: str, count: int) -> list[tuple[str, str]]:
    """``count`` checkpoints spread over three namespaces; (id, ns) of each."""
    made = []
    for i in range(count):
        ns = ("", "sub:1", "other:2")[i * 7 % 3]
        cp = Checkpoint(id=new_checkpoint_id(), ts="2026-01-01T00:00:00+00:00",
                        channel_values={"n": i}, channel_versions={"n": i + 1},
                        versions_seen={})
        saver.put({"configurable": {"thread_id": thread, "checkpoint_ns": ns}}, cp,
                  {"source": "loop", "step": i}, {"n": i + 1})
        made.append((cp.id, ns))
    return made


def test_a_thread_lists_every_namespace_newest_first_across_pages(tmp_path: Path) -> None:
    """The thread-wide listing merges the root (primary key) and the subgraphs (partial index)."""
    with SqliteSaver(tmp_path / "c.db") as saver:
        made = _put_mixed(saver, "t", 250)
        _put_mixed(saver, "u", 20)  # another thread never shows
        newest_first = sorted(made, key=lambda m: (m[0], m[1]), reverse=True)
        listed = [(c.config["configurable"]["checkpoint_id"], c.config["configurable"]
                   ["checkpoint_ns"]) for c in saver.list({"configurable": {"thread_id": "t"}})]
        assert listed == newest_first
        before = {"configurable": {"checkpoint_id": newest_first[120][0]}}
        page = [c.checkpoint.id for c in saver.list(
            {"configurable": {"thread_id": "t"}}, before=before, limit=5)]
        assert page == [m[0] for m in newest_first[121:126]]


def test_a_thread_wide_page_sorts_nothing(tmp_path: Path) -> None:
    """Flat pages: both halves of the merge come from an index in order (no temp sort)."""
    with SqliteSaver(tmp_path / "c.db") as saver:
        _put_mixed(saver, "t", 5)
        plans: list[str] = []
        original = saver._conn

        class Spy:
            def execute(self, sql: str, params: Any = ()) -> Any:
                if "UNION ALL" in sql:
                    plans.extend(r[3] for r in original.execute("EXPLAIN QUERY PLAN " + sql,
                                                                params))
                return original.execute(sql, params)

            def __getattr__(self, name: str) -> Any:
                return getattr(original, name)

        saver._conn = Spy()  # type: ignore[assignment]
        try:
            assert len(list(saver.list({"configurable": {"thread_id": "t"}}))) == 5
        finally:
            saver._conn = original
        assert any("MERGE" in p for p in plans) and not any("TEMP B-TREE" in p for p in plans)
