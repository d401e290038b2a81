"""A record's rest spelled as numbers against its refs (``store/redis/numbered.py``):
what it spells reads back exactly, anything else is left to the deflated form."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from durable_graph.errors import CheckpointStoreError
from durable_graph.store.redis.numbered import SOURCES, numbered, unnumbered
from durable_graph.store.redis.records import SPLIT, SPLIT_NUMBERED, pack_record, unpack_record
from tests.unit.test_redis_records import _engine_record

REFS = ["__start__\x00141013688187", ["branch:to:noop\x00144074753223", "null\x00"],
        "messages\x00141013688187"]


def rest(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "t": "246",
        "s": {"__input__": {}, "__start__": {"__start__": 135997288242},
              "noop": {"branch:to:noop": 141013688187}},
        "m": {"source": "loop", "step": 31, "parents": {}}}
    return {**base, **over}


def test_the_engines_rest_is_short_and_reads_back() -> None:
    spelled = numbered(rest(), REFS)
    assert spelled is not None and len(spelled) <= 24
    assert unnumbered(spelled, REFS) == rest()
    signed = rest(g="q" * 42 + "w=")
    got = numbered(signed, REFS)
    assert got is not None and unnumbered(got, REFS)["g"] == signed["g"]


@pytest.mark.parametrize("odd", [
    {"m": {"source": "loop", "step": 1, "parents": {}, "run": "x"}},  # a key of its own
    {"m": {"step": 1, "source": "loop", "parents": {}}},  # another order
    {"m": {"source": "other", "step": 1, "parents": {}}},
    {"m": {"source": "loop", "step": 1, "parents": {"": "x"}}},
    {"s": {"n": {"c": "00000000000000000000000000000002.0.25"}}},  # a text version
    {"s": {"n": {"c": 1 << 48}}},
    {"s": '{"n":{"c":1.5}}'},  # kept as its JSON text
    {"t": "007"},
    {"vs": '{"a":1}'},
    {"g": "not base64!"},
])
def test_other_shapes_are_left_to_the_deflated_form(odd: dict[str, Any]) -> None:
    assert numbered(rest(**odd), REFS) is None


names = st.one_of(st.sampled_from(["__input__", "__start__", "__interrupt__", "messages",
                                   "noop", "branch:to:noop", "é", ""]), st.text(max_size=6))
versions = st.one_of(st.sampled_from([141013688187, 144074753223, 0]),
                     st.integers(0, (1 << 48) - 1))


@given(st.dictionaries(names, st.dictionaries(names, versions, max_size=3), max_size=4),
       st.sampled_from(SOURCES), st.integers(-5, 10**6), st.integers(-10**9, 10**9))
def test_any_seen_of_ints_reads_back_in_its_order(seen: dict[str, dict[str, int]], source: str,
                                                  step: int, t: int) -> None:
    value = rest(s=seen, m={"source": source, "step": step, "parents": {}}, t=str(t))
    spelled = numbered(value, REFS)
    assert spelled is not None
    back = unnumbered(spelled, REFS)
    assert back == value and [list(v) for v in back["s"].values()] == \
        [list(v) for v in value["s"].values()] and list(back["s"]) == list(value["s"])


def test_a_record_spelled_so_unpacks_to_the_fields_signed_and_refuses_garbling() -> None:
    from durable_graph.store.base import new_checkpoint_id
    from durable_graph.store.codec import SignedSerializer, SigningCodec
    from durable_graph.store.serde import TypedSerializer

    parent = new_checkpoint_id()
    cid = new_checkpoint_id(parent)
    serde = SignedSerializer(TypedSerializer(), SigningCodec.from_secret("n" * 32))
    for kind in (None, serde):
        fields, raw = _engine_record(cid, parent, serde=kind)
        assert raw[:1] == SPLIT_NUMBERED
        assert unpack_record(raw, cid) == {k: v.encode() if isinstance(v, str) else v
                                           for k, v in fields.items()}
        assert pack_record(unpack_record(raw, cid), cid) == raw
        size = int.from_bytes(raw[1:3], "big")
        for bad in (raw[:-3], raw + b"\x00", raw[:3 + size] + b"\x00\x09"):
            with pytest.raises(CheckpointStoreError, match="is garbled"):
                unpack_record(bad, cid)
    assert SPLIT != SPLIT_NUMBERED
