"""Typed serialization of checkpoint values: (format tag, bytes).

Plain data (msgpack types, bytes, tuples, sets, datetimes, UUIDs, decimals, enums,
dataclasses and pydantic models of importable classes) is written as msgpack with
extension types, which decodes without running arbitrary code. Anything else falls
back to cloudpickle, tagged ``pickle`` so readers know. A signing codec
(``durable_graph.store.codec``) goes under this layer wherever bytes leave the process.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import functools
import importlib
import threading
import uuid
import weakref
from collections.abc import Callable
from typing import Any, Protocol

import cloudpickle
import ormsgpack

from durable_graph.errors import SerializationError
from durable_graph.store.delta import ChannelDelta, delta_from_packed, pack_delta
from durable_graph.store.leaves import LeafRef

__all__ = [
    "Serializer",
    "TypedSerializer",
    "import_attr",
]

_PACK_OPTS = (
    ormsgpack.OPT_NON_STR_KEYS
    | ormsgpack.OPT_PASSTHROUGH_DATACLASS
    | ormsgpack.OPT_PASSTHROUGH_DATETIME
    | ormsgpack.OPT_PASSTHROUGH_ENUM
    | ormsgpack.OPT_PASSTHROUGH_SUBCLASS
    | ormsgpack.OPT_PASSTHROUGH_TUPLE
    | ormsgpack.OPT_PASSTHROUGH_UUID
)

# Extension type codes: part of the stored format, never renumber.
_TUPLE, _SET, _FROZENSET, _DATETIME, _DATE, _TIME, _TIMEDELTA = 1, 2, 3, 4, 5, 6, 7
_UUID, _ENUM, _DATACLASS, _PYDANTIC, _DECIMAL = 8, 9, 10, 11, 12
_DELTA = 13  # a ChannelDelta, flat (``pack_delta``); older stores hold them as _DATACLASS
_LEAF = 14  # a LeafRef: the digest of a leaf the store keeps apart (``leaves``)


class Serializer(Protocol):
    """Turns values into tagged bytes and back."""

    def dumps_typed(self, obj: Any) -> tuple[str, bytes]:
        """Encode ``obj`` as (format tag, bytes)."""
        ...

    def loads_typed(self, data: tuple[str, bytes]) -> Any:
        """Decode what ``dumps_typed`` produced."""
        ...


def _class_path(cls: type) -> tuple[str, str]:
    """(module, qualname) of a class that can be imported back, else TypeError."""
    if "<locals>" in cls.__qualname__ or cls.__module__ == "__main__":
        raise TypeError(f"{cls.__qualname__} cannot be imported by name")  # internal signal
    return cls.__module__, cls.__qualname__


def import_attr(module: str, qualname: str) -> Any:
    """The object ``qualname`` (dotted) of ``module``, importing the module."""
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _import_class(module: str, qualname: str) -> Any:
    obj = import_attr(module, qualname)
    if not isinstance(obj, type):
        raise SerializationError(f"{module}.{qualname} is not a class")
    return obj


def _pack(obj: Any) -> bytes:
    return ormsgpack.packb(obj, default=_default, option=_PACK_OPTS)


def _ext(code: int, payload: Any) -> ormsgpack.Ext:
    return ormsgpack.Ext(code, _pack(payload))


_SIMPLE_EXT: tuple[tuple[type, int, Callable[[Any], Any]], ...] = (
    (frozenset, _FROZENSET, list),
    (set, _SET, list),
    (dt.datetime, _DATETIME, lambda o: o.isoformat()),  # before date: a subclass of it
    (dt.date, _DATE, lambda o: o.isoformat()),
    (dt.time, _TIME, lambda o: o.isoformat()),
    (dt.timedelta, _TIMEDELTA, lambda o: [o.days, o.seconds, o.microseconds]),
    (decimal.Decimal, _DECIMAL, str),
    (ChannelDelta, _DELTA, pack_delta),  # before the generic dataclass record
    (LeafRef, _LEAF, lambda o: o.digest),
)


def _default(obj: Any) -> Any:
    """Encode the types msgpack lacks as extension records; TypeError for the rest.

    The encoder a type's instances take is looked up once per type (``_BY_TYPE``):
    a commit and a job message encode the same few types again and again."""
    found = _BY_TYPE.get(id(type(obj)))
    if found is not None:
        return found(obj)
    encode = _encoder_of(obj)
    if _same_for_every_instance(obj):
        _keep(type(obj), encode)
    return encode(obj)


_BY_TYPE: dict[int, Callable[[Any], Any]] = {}
"""Encoder of each type seen (``_default``), of plain classes only (see
``_same_for_every_instance``), by the type's ``id``. Held weakly: a class made at run time
(a reloaded module, one per call) goes when nothing else holds it, and its entry with it
(``_keep``)."""


def _keep(kind: type, encode: Callable[[Any], Any]) -> None:
    """Enter ``kind``'s encoder in ``_BY_TYPE`` until ``kind`` goes. Its ``id`` is not
    reused before: CPython calls a dying type's weak callbacks before freeing it."""
    key = id(kind)
    if key not in _BY_TYPE:
        weakref.finalize(kind, _BY_TYPE.pop, key, None).atexit = False
    _BY_TYPE[key] = encode


def _same_for_every_instance(obj: Any) -> bool:
    """Whether every instance of ``type(obj)`` takes the encoder ``obj`` took: not so
    for a class (whose metaclass's instances differ), a proxy (``__getattr__``, or a
    ``__class__`` of another type: it is what it wraps) or a subclass of tuple (a named
    tuple is told by its ``_fields``)."""
    kind = type(obj)
    return not (isinstance(obj, type) or hasattr(kind, "__getattr__")
                or obj.__class__ is not kind or (isinstance(obj, tuple) and kind is not tuple))


def _encoder_of(obj: Any) -> Callable[[Any], Any]:
    """How ``_default`` encodes ``obj``; TypeError when it cannot."""
    if isinstance(obj, tuple) and not hasattr(obj, "_fields"):
        return _tuple_ext
    for cls, code, encode in _SIMPLE_EXT:
        if isinstance(obj, cls):
            return functools.partial(_simple_ext, code, encode)
    if isinstance(obj, uuid.UUID):
        return _uuid_ext
    if isinstance(obj, enum.Enum):
        path = _class_path(type(obj))
        return lambda o: _ext(_ENUM, [*path, o.value])
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _dataclass_encoder(type(obj))
    if hasattr(obj, "model_dump") and hasattr(type(obj), "model_validate"):
        path = _class_path(type(obj))
        return lambda o: _ext(_PYDANTIC, [*path, _model_data(o)])
    raise TypeError(f"{type(obj).__qualname__} has no msgpack encoding")  # internal signal


def _dataclass_encoder(kind: type) -> Callable[[Any], Any]:
    """The encoder of ``kind``'s instances, while its fields are the ones it has now: a
    class given new fields since (decorated again) has its encoder made anew."""
    path, fields = _class_path(kind), getattr(kind, "__dataclass_fields__", None)
    names = tuple(f.name for f in dataclasses.fields(kind) if f.init)

    def encode(o: Any) -> Any:
        if getattr(type(o), "__dataclass_fields__", None) is not fields:
            _BY_TYPE.pop(id(type(o)), None)
            return _default(o)
        return _ext(_DATACLASS, [*path, {n: getattr(o, n) for n in names}])
    return encode


def _simple_ext(code: int, encode: Callable[[Any], Any], obj: Any) -> ormsgpack.Ext:
    return _ext(code, encode(obj))


def _tuple_ext(obj: Any) -> ormsgpack.Ext:
    return _ext(_TUPLE, list(obj))


def _uuid_ext(obj: Any) -> ormsgpack.Ext:
    return ormsgpack.Ext(_UUID, obj.bytes)


_PLAIN_DEFAULTS = (type(None), bool, int, float, str, bytes, dict, list, tuple)
_NO_DEFAULT = object()
_EMPTY_FACTORIES: dict[Any, Callable[[], Any]] = {list: list, dict: dict, tuple: tuple}
"""Default factories whose every call gives the same (empty) value."""


def _constant_default(field: Any) -> Any:
    """A model field's default when it is the same at every decode: a constant
    ``default``, or the empty value of ``list``/``dict``/``tuple``; else ``_NO_DEFAULT``
    (a factory may read a clock, a counter or the environment: the value is kept)."""
    if field.is_required():
        return _NO_DEFAULT
    if field.default_factory is None:
        return field.default
    empty = _EMPTY_FACTORIES.get(field.default_factory)
    return _NO_DEFAULT if empty is None else empty()


def _model_data(obj: Any) -> dict[str, Any]:
    """A pydantic model's fields by name, leaving out each one still at a constant plain
    default (``None``, ``False``, ``{}``, a ``Literal`` tag...): ``model_construct`` puts
    those back, and a chat message is about 80 bytes smaller. Older records, with every
    field, decode the same."""
    data = {}
    for name, field in type(obj).model_fields.items():
        value = getattr(obj, name)
        default = _constant_default(field)
        if type(value) is type(default) and type(value) in _PLAIN_DEFAULTS \
                and value == default:
            continue
        data[name] = value
    return data


def _unpack(data: bytes) -> Any:
    return ormsgpack.unpackb(data, ext_hook=_ext_hook, option=ormsgpack.OPT_NON_STR_KEYS)


def _unpack_checked(data: bytes) -> Any:
    """Decode msgpack; every failure (bad bytes, a class gone) is a SerializationError."""
    _hook_error.exc = None
    try:
        return _unpack(data)
    except Exception as exc:
        cause = getattr(_hook_error, "exc", None) or exc
        _hook_error.exc = None
        if isinstance(cause, SerializationError):
            raise cause from None
        raise SerializationError(f"cannot decode a stored msgpack value: {cause!r}") from cause


def _from_class(payload: list[Any], build: Callable[[Any, Any], Any]) -> Any:
    module, qualname, value = payload
    return build(_import_class(module, qualname), value)


_DECODERS: dict[int, Callable[[Any], Any]] = {
    _TUPLE: tuple,
    _SET: set,
    _FROZENSET: frozenset,
    _DATETIME: dt.datetime.fromisoformat,
    _DATE: dt.date.fromisoformat,
    _TIME: dt.time.fromisoformat,
    _TIMEDELTA: lambda p: dt.timedelta(days=p[0], seconds=p[1], microseconds=p[2]),
    _DECIMAL: decimal.Decimal,
    _DELTA: delta_from_packed,
    _LEAF: lambda d: LeafRef(bytes(d)),
    _ENUM: lambda p: _from_class(p, lambda cls, v: cls(v)),
    _DATACLASS: lambda p: _from_class(p, lambda cls, v: cls(**v)),
    # by field name, as encoded; nested models come back through their own records
    _PYDANTIC: lambda p: _from_class(p, _constructed),
}


@functools.lru_cache(maxsize=512)
def _factories(cls: Any) -> tuple[tuple[str, Callable[[], Any]], ...] | None:
    """(name, factory) of a pydantic model class's fields filled by a default factory of
    no argument, or None when one takes the validated data or has an alias (pydantic
    makes an alias a validation alias: ``model_construct`` then fills them itself). Asked
    once a class: pydantic asks ``inspect.signature`` of each factory on every
    ``model_construct`` (about 10 µs of a LangChain message's 14)."""
    out = []
    for name, field in cls.model_fields.items():
        if field.default_factory is None:
            continue
        if field.validation_alias is not None \
                or getattr(field, "default_factory_takes_validated_data", False):
            return None
        out.append((name, field.default_factory))
    return tuple(out)


def _constructed(cls: Any, values: dict[str, Any]) -> Any:
    """``cls.model_construct(**values)``, with the fields a default factory fills (and
    ``values`` lacks) filled here: the same object, the same ``model_fields_set``."""
    filled = {name: factory() for name, factory in _factories(cls) or () if name not in values}
    if not filled:
        return cls.model_construct(**values)
    built = cls.model_construct(**values, **filled)
    object.__setattr__(built, "__pydantic_fields_set__",
                       built.__pydantic_fields_set__ - filled.keys())
    return built


_hook_error = threading.local()


def _ext_hook(code: int, data: bytes) -> Any:
    # ormsgpack replaces a hook's exception with a bare ValueError; keep the real one.
    try:
        return _decode_ext(code, data)
    except Exception as exc:
        _hook_error.exc = exc
        raise


def _decode_ext(code: int, data: bytes) -> Any:
    if code == _UUID:
        return uuid.UUID(bytes=data)
    decoder = _DECODERS.get(code)
    if decoder is None:
        raise SerializationError(f"unknown msgpack extension type {code}")
    return decoder(_unpack(data))


class TypedSerializer:
    """The default serializer: msgpack for plain data, cloudpickle for the rest.

    ``pickle_fallback=False`` refuses values msgpack cannot carry instead of
    pickling them, for stores whose readers must never unpickle.
    """

    def __init__(self, *, pickle_fallback: bool = True) -> None:
        self.pickle_fallback = pickle_fallback

    def dumps_typed(self, obj: Any) -> tuple[str, bytes]:
        """Encode ``obj``; raises ``SerializationError`` naming the type it could not."""
        if obj is None:
            return "null", b""
        if type(obj) is bytes:
            return "bytes", obj
        try:
            return "msgpack", _pack(obj)
        except (TypeError, ormsgpack.MsgpackEncodeError) as exc:
            if not self.pickle_fallback:
                raise SerializationError(
                    f"cannot encode {type(obj).__qualname__} without pickle: {exc}"
                ) from exc
        return self.dumps_pickled(obj)

    def dumps_pickled(self, obj: Any) -> tuple[str, bytes]:
        """``obj`` pickled, without trying msgpack first: for a value known to hold what
        msgpack cannot carry (a function). A serializer without ``pickle_fallback``
        refuses."""
        if not self.pickle_fallback:
            raise SerializationError(
                f"cannot encode {type(obj).__qualname__}: this serializer refuses to pickle")
        try:
            return "pickle", cloudpickle.dumps(obj)
        except Exception as exc:
            raise SerializationError(
                f"cannot serialize a value of type {type(obj).__qualname__}: {exc}"
            ) from exc

    def loads_typed(self, data: tuple[str, bytes]) -> Any:
        """Decode (format tag, bytes); raises ``SerializationError`` on unknown tags."""
        tag, payload = data
        if tag == "msgpack":
            return _unpack_checked(payload)
        if tag == "null":
            return None
        if tag == "bytes":
            return payload
        if tag == "pickle":
            if not self.pickle_fallback:
                raise SerializationError("this serializer refuses pickled values")
            return cloudpickle.loads(payload)
        raise SerializationError(f"unknown serialization format {tag!r}")
