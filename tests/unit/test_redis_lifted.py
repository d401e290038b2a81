"""Leaf digests lifted out of a value's serializer bytes (``store/redis/lifted.py``): what
is cut is put back exactly, and notes that do not fit are refused by name."""

from __future__ import annotations

import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from durable_graph.errors import CheckpointStoreError
from durable_graph.store.redis.lifted import LIFTED, lift, unlift

D1, D2, D3 = (os.urandom(32) for _ in range(3))


def test_every_occurrence_is_cut_and_put_back() -> None:
    data = b"head" + D2 + b"mid" + D1 + D2 + b"tail"
    tag, stored = lift(("msgpack", data), [D1, D2])
    assert tag == LIFTED + "msgpack"
    assert D1 not in stored and D2 not in stored and len(stored) == len(data) - 96 + 7
    assert unlift((tag, stored), [D1, D2], "value") == ("msgpack", data)


def test_a_value_without_its_digests_is_kept_as_it_is() -> None:
    assert lift(("msgpack", b"no digest here"), [D1]) == ("msgpack", b"no digest here")
    assert unlift(("msgpack", b"x"), [], "value") == ("msgpack", b"x")


@given(st.lists(st.sampled_from([b"", b"a", b"\x00", b"\xff" * 3, D1, D2, D3]), max_size=12))
def test_any_mix_round_trips(parts: list[bytes]) -> None:
    data = b"".join(parts)
    assert unlift(lift(("t", data), [D1, D2]), [D1, D2], "value") == ("t", data)


def test_notes_that_do_not_fit_are_refused() -> None:
    tag, stored = lift(("msgpack", b"a" + D2 + b"b"), [D1, D2])
    with pytest.raises(CheckpointStoreError, match="names leaves its link does not hold"):
        unlift((tag, stored), [D1], "value of channel 'm' version 3")  # a link cut short
    with pytest.raises(CheckpointStoreError, match="garbled"):
        unlift((tag, b"\x05\x01"), [D1, D2], "value")
