"""The commit path's JSON (signed places, checkpoint record fields) is written without
``json.dumps``'s per-call cost, and must stay byte for byte what it wrote: a signature
binds a value to the bytes of its place, and stored records are compared and read back."""

from __future__ import annotations

import enum
import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from durable_graph.errors import SerializationError
from durable_graph.store.encoding import place_of
from durable_graph.store.redis.records import _json


class Kind(enum.IntEnum):
    ONE = 1


class Text(str):
    pass


def dumps_place(*parts: object) -> bytes:
    """``place_of`` as it was written: ``json.dumps`` of the parts."""
    return json.dumps([p if isinstance(p, int | str) else str(p) for p in parts]).encode()


part = (st.text() | st.integers() | st.booleans() | st.none() | st.floats()
        | st.sampled_from([Kind.ONE, Text("t\u00e9\"x"), b"raw", 1.5]))


@settings(max_examples=400, deadline=None)
@given(st.lists(part, max_size=8))
def test_a_place_is_written_as_json_dumps_wrote_it(parts: list[Any]) -> None:
    assert place_of(*parts) == dumps_place(*parts)


def test_places_of_text_with_escapes_and_big_ints() -> None:
    parts = ("value", 'q"uo\\te', "tab\tnl\n\x00", "\u00e9\U0001f600", -(2**70), 0, "")
    assert place_of(*parts) == dumps_place(*parts)
    assert place_of() == b"[]"
    assert place_of(True, 1) == b"[true, 1]"


json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text()
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner,
                                                                max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(json_value)
def test_record_json_is_compact_json_dumps(value: Any) -> None:
    assert _json(value, "x") == json.dumps(value, separators=(",", ":"), allow_nan=False)


@pytest.mark.parametrize("bad", [math.nan, {"v": math.inf}, {"v": object()}])
def test_record_json_refuses_what_json_cannot_hold_naming_it(bad: Any) -> None:
    with pytest.raises(SerializationError, match="cannot store checkpoint metadata as JSON"):
        _json(bad, "checkpoint metadata")
