"""TypedSerializer: every supported kind round-trips with its type, under the documented tag."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import functools
import threading
import uuid
import zoneinfo
from typing import Any

import ormsgpack
import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from durable_graph.errors import SerializationError
from durable_graph.store.serde import TypedSerializer

SERDE = TypedSerializer()
STRICT = TypedSerializer(pickle_fallback=False)


def same(a: Any, b: Any) -> bool:
    """Equal and of the same type all the way down (``1 == 1.0 == True`` hides changes)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return len(a) == len(b) and all(
            any(same(k, k2) and same(v, b[k2]) for k2 in b if k2 == k) for k, v in a.items()
        )
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, set | frozenset):
        return a == b and {type(x) for x in a} == {type(x) for x in b}
    if isinstance(a, dt.datetime | dt.time):
        return a == b and a.utcoffset() == b.utcoffset()
    return bool(a == b)


def round_trip(value: Any, serde: TypedSerializer = SERDE) -> tuple[str, Any]:
    tag, data = serde.dumps_typed(value)
    assert isinstance(data, bytes)
    return tag, serde.loads_typed((tag, data))


# --- importable classes (stored by module path, without pickle) ---------------


class Color(enum.Enum):
    RED = "red"
    BLUE = (0, 0, 255)


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


@dataclasses.dataclass
class Leaf:
    name: str
    when: dt.date


@dataclasses.dataclass(frozen=True)
class Tree:
    leaves: list[Leaf]
    meta: dict[str, Any]
    computed: int = dataclasses.field(default=0, init=False)


class Address(pydantic.BaseModel):
    city: str
    zip: tuple[int, ...] = ()


class Person(pydantic.BaseModel):
    name: str
    address: Address
    tags: set[str] = set()
    born: dt.date | None = None


class Aliased(pydantic.BaseModel):
    value: int = pydantic.Field(alias="Value")


# --- tags --------------------------------------------------------------------


def test_documented_tags() -> None:
    class Local:
        pass

    assert SERDE.dumps_typed(None) == ("null", b"")
    assert SERDE.dumps_typed(b"raw") == ("bytes", b"raw")
    assert SERDE.dumps_typed({"a": 1})[0] == "msgpack"
    assert SERDE.dumps_typed(Leaf("x", dt.date(2020, 1, 1)))[0] == "msgpack"
    assert SERDE.dumps_typed(Local())[0] == "pickle"


# --- round trips of every supported kind -------------------------------------


KINDS: dict[str, Any] = {
    "int": 7,
    "uint64_max": 2**64 - 1,
    "int64_min": -(2**63),
    "float": -2.5,
    "bool": False,
    "str": "日本語 text",
    "empty_str": "",
    "list": [1, "a", None],
    "dict": {"k": {"nested": [1, 2]}},
    "int_keys": {1: "one", 2: "two"},
    "tuple_keys": {(1, "a"): "x"},
    "tuple": (1, (2, (3,)), []),
    "empty_tuple": (),
    "set": {1, "a", (2, 3)},
    "frozenset": frozenset({1, 2}),
    "set_of_frozensets": {frozenset({1}), frozenset()},
    "datetime_utc": dt.datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=dt.UTC),
    "datetime_offset": dt.datetime(2024, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=-5))),
    "datetime_naive": dt.datetime(1999, 12, 31, 12, 0),
    "date": dt.date(2000, 1, 1),
    "time": dt.time(13, 14, 15, 16),
    "time_tz": dt.time(1, 2, tzinfo=dt.timezone(dt.timedelta(hours=2))),
    "timedelta": dt.timedelta(days=-3, seconds=5, microseconds=7),
    "uuid": uuid.UUID("00000000-0000-4000-8000-000000000001"),
    "decimal": decimal.Decimal("-12.3400"),
    "decimal_inf": decimal.Decimal("Infinity"),
    "enum": Color.RED,
    "enum_tuple_value": Color.BLUE,
    "int_enum": Level.HIGH,
    "dataclass_in_dict": {"tree": Tree([Leaf("a", dt.date(2021, 5, 1))], {"k": (1,)})},
    "pydantic_nested": Person(
        name="ada",
        address=Address(city="London", zip=(1, 2)),
        tags={"x"},
        born=dt.date(1815, 12, 10),
    ),
    "list_of_models": [Address(city="a"), Address(city="b")],
    "bytes_in_list": [b"\x00", b""],
}


@pytest.mark.parametrize("name", list(KINDS))
def test_round_trip_keeps_value_and_type(name: str) -> None:
    value = KINDS[name]
    tag, back = round_trip(value, STRICT)
    assert tag == "msgpack"
    assert same(back, value), (value, back)


def test_enum_round_trips_to_the_same_member() -> None:
    assert round_trip(Color.BLUE)[1] is Color.BLUE
    assert round_trip(Level.LOW)[1] is Level.LOW


def test_dataclass_round_trip_rebuilds_the_class() -> None:
    tree = Tree([Leaf("a", dt.date(2021, 5, 1))], {"k": (1,)})
    back = round_trip({"tree": tree})[1]["tree"]
    assert type(back) is Tree
    assert type(back.leaves[0]) is Leaf
    assert back.meta["k"] == (1,)


def test_pydantic_nested_model_rebuilds_each_class() -> None:
    person = KINDS["pydantic_nested"]
    back = round_trip(person)[1]
    assert type(back) is Person
    assert type(back.address) is Address
    assert back.address.zip == (1, 2)
    assert back == person


def test_zoneinfo_datetime_keeps_instant_and_offset() -> None:
    value = dt.datetime(2024, 7, 1, 12, tzinfo=zoneinfo.ZoneInfo("Europe/Paris"))
    back = round_trip(value)[1]
    assert back == value
    assert back.utcoffset() == dt.timedelta(hours=2)


def test_bytes_and_none_are_stored_raw() -> None:
    assert round_trip(b"\x00\x01") == ("bytes", b"\x00\x01")
    assert round_trip(None) == ("null", None)


# --- pickle fallback ---------------------------------------------------------


def test_local_class_falls_back_to_pickle() -> None:
    @dataclasses.dataclass
    class LocalPoint:
        x: int

    tag, back = round_trip({"p": LocalPoint(3)})
    assert tag == "pickle"
    assert back["p"].x == 3


def test_lambda_falls_back_to_pickle() -> None:
    tag, back = round_trip(lambda x: x + 1)
    assert tag == "pickle"
    assert back(1) == 2


@pytest.mark.parametrize("value", [threading.Lock(), lambda: None, {"nested": object()}])
def test_without_pickle_fallback_unencodable_values_are_refused(value: Any) -> None:
    with pytest.raises(SerializationError, match="without pickle"):
        STRICT.dumps_typed(value)


def test_without_pickle_fallback_pickled_payloads_are_not_loaded() -> None:
    payload = SERDE.dumps_typed(lambda: None)
    assert payload[0] == "pickle"
    with pytest.raises(SerializationError, match="refuses pickled"):
        STRICT.loads_typed(payload)


def test_unpicklable_value_raises_serialization_error() -> None:
    with pytest.raises(SerializationError, match="cannot serialize"):
        SERDE.dumps_typed(threading.Lock())


def test_a_value_known_to_hold_a_function_is_pickled_at_once() -> None:
    value = {"call": functools.partial(max, 1), "n": 2}
    tag, data = SERDE.dumps_pickled(value)
    assert tag == "pickle"
    back = SERDE.loads_typed((tag, data))
    assert back["call"](5) == 5 and back["n"] == 2
    assert SERDE.dumps_pickled({"plain": 1})[0] == "pickle"  # as asked, though msgpack could
    with pytest.raises(SerializationError, match="refuses to pickle"):
        STRICT.dumps_pickled(value)
    with pytest.raises(SerializationError, match="cannot serialize"):
        SERDE.dumps_pickled(threading.Lock())


def test_serialization_error_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        STRICT.dumps_typed(object())


# --- malformed input ---------------------------------------------------------


def test_unknown_tag_is_refused() -> None:
    with pytest.raises(SerializationError, match="unknown serialization format 'json'"):
        SERDE.loads_typed(("json", b"{}"))


def test_unknown_extension_type_raises_serialization_error() -> None:
    data = ormsgpack.packb(ormsgpack.Ext(99, b"\x00"))
    with pytest.raises(SerializationError, match="extension type 99"):
        SERDE.loads_typed(("msgpack", data))


def test_pydantic_model_with_aliased_field_round_trips() -> None:
    value = Aliased(Value=3)
    assert round_trip(value)[1] == value


# --- property: nested plain data ---------------------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary()
    | st.datetimes(timezones=st.none() | st.just(dt.UTC))
    | st.dates()
    | st.times()
    | st.timedeltas()
    | st.uuids()
    | st.decimals(allow_nan=False)
    | st.sampled_from(Color)
)
hashables = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text() | st.uuids(),
    lambda inner: st.tuples(inner, inner) | st.frozensets(inner, max_size=3),
    max_leaves=6,
)
plain_data = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.lists(inner, max_size=4).map(tuple)
        | st.dictionaries(st.text(max_size=5), inner, max_size=4)
        | st.dictionaries(st.integers(-100, 100), inner, max_size=3)
        | st.sets(hashables, max_size=3)
        | st.frozensets(hashables, max_size=3)
    ),
    max_leaves=15,
)


@settings(max_examples=300, deadline=None)
@given(plain_data)
def test_nested_plain_data_round_trips_without_pickle(value: Any) -> None:
    tag, back = round_trip(value, STRICT)
    assert tag in {"msgpack", "null", "bytes"}
    assert same(back, value), (value, back)


# --- the encoder found once per type -------------------------------------------


def test_a_type_encodes_to_the_same_bytes_every_time_in_the_stored_format() -> None:
    leaf = Leaf("x", dt.date(2024, 1, 2))
    date = ormsgpack.Ext(5, ormsgpack.packb("2024-01-02"))
    expected = ormsgpack.packb(ormsgpack.Ext(10, ormsgpack.packb(
        [__name__, "Leaf", {"name": "x", "when": date}])))
    first, again = SERDE.dumps_typed(leaf), SERDE.dumps_typed(leaf)
    assert first == again == ("msgpack", expected)
    other = SERDE.dumps_typed(Leaf("y", dt.date(2025, 3, 4)))[1]
    assert SERDE.loads_typed(("msgpack", other)) == Leaf("y", dt.date(2025, 3, 4))


def test_a_named_tuple_is_not_taken_for_a_tuple_once_tuples_were_seen() -> None:
    import collections

    pair = collections.namedtuple("pair", "a b")  # local: pickled, never msgpack
    assert round_trip((1, 2)) == ("msgpack", (1, 2))
    tag, back = round_trip(pair(1, 2))
    assert tag == "pickle" and type(back).__name__ == "pair" and back == (1, 2)
    assert round_trip((3, 4)) == ("msgpack", (3, 4))


class _Proxy:
    """Stands for the object it wraps, as wrapt's proxies do (its ``__class__`` too)."""

    def __init__(self, wrapped: Any) -> None:
        object.__setattr__(self, "_wrapped", wrapped)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._wrapped, name)

    @property  # type: ignore[misc]
    def __class__(self) -> type:
        return type(self._wrapped)


class _Forwarding:
    """A proxy that forwards every attribute (``__getattribute__``), ``__class__`` too."""

    def __init__(self, wrapped: Any) -> None:
        object.__setattr__(self, "_wrapped", wrapped)

    def __getattribute__(self, name: str) -> Any:
        return getattr(object.__getattribute__(self, "_wrapped"), name)


@pytest.mark.parametrize("proxy", [_Proxy, _Forwarding])
def test_each_proxy_encodes_as_what_it_wraps(proxy: type) -> None:
    day, uid = dt.date(2024, 5, 6), uuid.UUID(int=7)
    assert round_trip(proxy(day)) == ("msgpack", day)
    assert round_trip(proxy(uid)) == ("msgpack", uid)


def test_a_dataclass_class_itself_is_not_encoded_as_its_instances() -> None:
    assert round_trip(Leaf("a", dt.date(2024, 1, 1)))[0] == "msgpack"
    tag, back = round_trip(Leaf)
    assert tag == "pickle" and back is Leaf


@dataclasses.dataclass
class _Grows:
    """Given a field once encoded (``test_a_dataclass_given_a_new_field_...``)."""

    a: int


def test_a_dataclass_given_a_new_field_after_an_encode_stores_that_field() -> None:
    assert round_trip(_Grows(1)) == ("msgpack", _Grows(1))
    _Grows.__annotations__["b"] = int
    _Grows.b = 7  # type: ignore[attr-defined]
    del _Grows.__init__
    dataclasses.dataclass(_Grows)  # decorated again, as plugins and reloaders do
    grown = _Grows(1, b=9)  # type: ignore[call-arg]
    tag, back = round_trip(grown)
    assert tag == "msgpack" and back.b == 9


def test_classes_made_at_run_time_are_not_kept_alive_and_the_cache_keeps_working() -> None:
    import gc
    import weakref

    from durable_graph.store import serde

    made: list[weakref.ref[type]] = []
    for _ in range(1100):
        kind = dataclasses.make_dataclass("Made", [("a", int)])
        kind.__module__ = __name__  # importable by its path, as after a reload
        assert SERDE.dumps_typed(kind(1))[0] == "msgpack"
        made.append(weakref.ref(kind))
        del kind
    gc.collect()
    assert [r for r in made if r() is not None] == []
    later = dataclasses.make_dataclass("Later", [("a", int)])
    later.__module__ = __name__
    SERDE.dumps_typed(later(1))
    assert id(later) in serde._BY_TYPE


# --- pydantic models decoded without pydantic's per-call factory check -------


class Factories(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(populate_by_name=True, extra="allow")
    name: str
    notes: dict[str, Any] = pydantic.Field(default_factory=dict)
    tags: list[str] = pydantic.Field(default_factory=list, alias="Tags")
    seen: list[int] = []


class TakesData(pydantic.BaseModel):
    name: str
    label: str = pydantic.Field(default_factory=lambda data: data["name"].upper())


class ValidationAliased(pydantic.BaseModel):
    items: list[int] = pydantic.Field(default_factory=list, validation_alias="Items")


def _construct_cases() -> list[tuple[type[pydantic.BaseModel], dict[str, Any]]]:
    from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

    return [
        (HumanMessage, {"content": "hi", "id": "m1"}),
        (HumanMessage, {"content": "hi", "additional_kwargs": {"k": 1}}),
        (AIMessage, {"content": "", "tool_calls": [
            {"name": "f", "args": {}, "id": "c1", "type": "tool_call"}]}),
        (ToolMessage, {"content": "out", "tool_call_id": "c1"}),
        (Factories, {"name": "a"}),
        (Factories, {"name": "a", "Tags": ["x"], "extra": 1}),
        (Factories, {"name": "a", "tags": ["y"], "notes": {"n": 2}}),
        (TakesData, {"name": "a"}),
        (ValidationAliased, {"Items": [1]}),
        (ValidationAliased, {}),
    ]


def test_a_decoded_model_is_what_model_construct_builds() -> None:
    """Fields a default factory fills are filled before ``model_construct`` (pydantic
    asks each factory's signature on every call): the same fields, values, extra and
    ``model_fields_set`` as ``model_construct`` alone gives, and fresh objects each time."""
    from durable_graph.store.serde import _constructed

    for cls, values in _construct_cases():
        want, got = cls.model_construct(**values), _constructed(cls, dict(values))
        assert type(got) is cls and got == want, (cls, values)
        assert got.__dict__ == want.__dict__ and got.model_fields_set == want.model_fields_set
        assert got.model_extra == want.model_extra
        again = _constructed(cls, dict(values))
        for name, value in got.__dict__.items():
            if isinstance(value, dict | list) and not value:
                assert again.__dict__[name] is not value  # a factory's object is never shared


def test_messages_round_trip_with_the_fields_they_were_given() -> None:
    from langchain_core.messages import AIMessage, HumanMessage

    for message in (HumanMessage(content="hi", id="m1"),
                    AIMessage(content="x", response_metadata={"model": "m"})):
        back = SERDE.loads_typed(SERDE.dumps_typed(message))
        assert back == message and type(back) is type(message)
        assert back.additional_kwargs == {} and back.additional_kwargs is not \
            SERDE.loads_typed(SERDE.dumps_typed(message)).additional_kwargs
