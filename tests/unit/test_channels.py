"""Channel semantics (scheduler/channels.py): how each kind combines writes."""

from __future__ import annotations

import operator

import pytest

from durable_graph.errors import InvalidUpdateError
from durable_graph.scheduler.channels import (
    MISSING,
    ChannelSpec,
    consume,
    initial,
    is_available,
    update,
)

LAST = ChannelSpec("last")
ADD = ChannelSpec("reducer", reducer=operator.add, default=list)
EPHEMERAL = ChannelSpec("ephemeral")
TOPIC = ChannelSpec("topic")
JOIN = ChannelSpec("barrier", names=frozenset({"a", "b"}))


# -- initial -------------------------------------------------------------------


def test_initial_values_per_kind() -> None:
    assert initial(LAST) is MISSING
    assert initial(EPHEMERAL) is MISSING
    assert initial(TOPIC) is MISSING
    assert initial(ADD) == []
    assert initial(JOIN) == frozenset()


def test_initial_reducer_without_default_is_missing() -> None:
    assert initial(ChannelSpec("reducer", reducer=operator.add)) is MISSING


def test_initial_reducer_whose_default_cannot_be_built_is_missing() -> None:
    def needs_args(x: int) -> int:
        return x

    assert initial(ChannelSpec("reducer", reducer=operator.add, default=needs_args)) is MISSING


def test_initial_reducer_default_is_fresh_each_time() -> None:
    first = initial(ADD)
    first.append(1)
    assert initial(ADD) == []


def test_missing_is_distinct_from_none() -> None:
    assert MISSING is not None
    assert repr(MISSING) == "MISSING"
    assert is_available(LAST, None)
    assert not is_available(LAST, MISSING)


# -- last ----------------------------------------------------------------------


def test_last_takes_the_one_write() -> None:
    assert update(LAST, "x", 1, [2]) == (2, True)
    assert update(LAST, "x", MISSING, [None]) == (None, True)


def test_last_without_writes_is_unchanged() -> None:
    assert update(LAST, "x", 5, []) == (5, False)
    value, changed = update(LAST, "x", MISSING, [])
    assert value is MISSING and not changed


def test_last_rejects_two_writes_naming_the_key() -> None:
    with pytest.raises(InvalidUpdateError, match=r"'x'.*one value per step") as info:
        update(LAST, "x", 0, [1, 2])
    assert "reducer" in str(info.value)


# -- reducer -------------------------------------------------------------------


def test_reducer_folds_writes_in_order_onto_current() -> None:
    assert update(ADD, "log", ["a"], [["b"], ["c", "d"]]) == (["a", "b", "c", "d"], True)


def test_reducer_from_missing_starts_at_first_write() -> None:
    calls: list[tuple[object, object]] = []

    def reducer(a: object, b: object) -> object:
        calls.append((a, b))
        return f"{a}+{b}"

    spec = ChannelSpec("reducer", reducer=reducer)
    assert update(spec, "k", MISSING, ["x", "y"]) == ("x+y", True)
    assert calls == [("x", "y")]


def test_reducer_without_writes_is_unchanged() -> None:
    assert update(ADD, "log", [1], []) == ([1], False)


def test_reducer_does_not_mutate_current() -> None:
    current = [1]
    update(ADD, "log", current, [[2]])
    assert current == [1]


# -- ephemeral and topic -------------------------------------------------------


def test_ephemeral_holds_last_write_and_clears_without_writes() -> None:
    assert update(EPHEMERAL, "e", MISSING, ["a", "b"]) == ("b", True)
    value, changed = update(EPHEMERAL, "e", "b", [])
    assert value is MISSING and changed
    value, changed = update(EPHEMERAL, "e", MISSING, [])
    assert value is MISSING and not changed


def test_topic_collects_the_step_writes() -> None:
    assert update(TOPIC, "t", ["old"], [1, 2, 3]) == ([1, 2, 3], True)
    value, changed = update(TOPIC, "t", [1], [])
    assert value is MISSING and changed


def test_topic_available_only_when_non_empty() -> None:
    assert is_available(TOPIC, [1])
    assert not is_available(TOPIC, [])
    assert not is_available(TOPIC, MISSING)


# -- barrier -------------------------------------------------------------------


def test_barrier_waits_for_every_writer() -> None:
    value, changed = update(JOIN, "j", frozenset(), ["a"])
    assert value == frozenset({"a"}) and changed
    assert not is_available(JOIN, value)
    value, changed = update(JOIN, "j", value, ["b"])
    assert value == frozenset({"a", "b"}) and changed
    assert is_available(JOIN, value)


def test_barrier_from_missing() -> None:
    value, _ = update(JOIN, "j", MISSING, ["a", "b"])
    assert value == frozenset({"a", "b"})
    assert not is_available(JOIN, MISSING)


def test_barrier_repeat_write_is_not_a_change() -> None:
    value, changed = update(JOIN, "j", frozenset({"a"}), ["a"])
    assert value == frozenset({"a"}) and not changed


def test_barrier_rejects_unknown_writers() -> None:
    with pytest.raises(InvalidUpdateError, match=r"'j'.*unexpected writers \['z'\]"):
        update(JOIN, "j", frozenset(), ["a", "z"])


def test_consume_resets_only_a_filled_barrier() -> None:
    assert consume(JOIN, frozenset({"a", "b"})) == (frozenset(), True)
    assert consume(JOIN, frozenset()) == (frozenset(), False)
    for spec, value in ((LAST, 1), (ADD, [1]), (EPHEMERAL, "x"), (TOPIC, [1])):
        assert consume(spec, value) == (value, False)
