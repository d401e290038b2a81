"""The records and operations of the long-term memory store, as LangGraph names them.

``Item``/``SearchItem`` are what reads return; ``GetOp``, ``PutOp``, ``SearchOp``
and ``ListNamespacesOp`` are what ``BaseStore.batch`` executes. Field names,
defaults and order match ``langgraph.store.base`` so code written against
LangGraph builds the same ops. This module is pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal, NamedTuple, TypeAlias, TypedDict

from durable_graph.errors import GraphValueError

__all__ = [
    "NOT_PROVIDED",
    "GetOp",
    "InvalidNamespaceError",
    "Item",
    "ListNamespacesOp",
    "MatchCondition",
    "Namespace",
    "NamespaceMatchType",
    "NamespacePath",
    "NotProvided",
    "Op",
    "PutOp",
    "Result",
    "SearchItem",
    "SearchOp",
    "TTLConfig",
    "is_positive_number",
    "validate_namespace",
    "validate_namespace_labels",
    "validate_op",
]

Namespace: TypeAlias = tuple[str, ...]
NamespacePath: TypeAlias = tuple[str, ...]
"""A namespace pattern; a ``"*"`` label matches any label."""
NamespaceMatchType = Literal["prefix", "suffix"]


class NotProvided:
    """Sentinel for "argument not given" where None means something (``ttl=None``)."""

    def __bool__(self) -> Literal[False]:
        return False

    def __repr__(self) -> str:
        return "NOT_GIVEN"

    def __reduce__(self) -> str:
        return "NOT_PROVIDED"


NOT_PROVIDED = NotProvided()


class InvalidNamespaceError(GraphValueError):
    """A namespace that is empty, rooted at "langgraph", or has a bad label."""


def is_positive_number(value: object) -> bool:
    """Whether ``value`` is an int or float above zero (bools excluded)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def _as_datetime(value: datetime | str) -> datetime:
    return datetime.fromisoformat(value) if isinstance(value, str) else value


class Item:
    """A stored value with its namespace, key and timestamps."""

    __slots__ = ("created_at", "key", "namespace", "updated_at", "value")

    def __init__(
        self,
        *,
        value: dict[str, Any],
        key: str,
        namespace: tuple[str, ...],
        created_at: datetime | str,
        updated_at: datetime | str,
    ) -> None:
        self.value = value
        self.key = key
        self.namespace = tuple(namespace)
        self.created_at = _as_datetime(created_at)
        self.updated_at = _as_datetime(updated_at)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Item):
            return False
        return (self.value, self.key, self.namespace, self.created_at, self.updated_at) == (
            other.value, other.key, other.namespace, other.created_at, other.updated_at
        )

    def __hash__(self) -> int:
        return hash((self.namespace, self.key))

    def dict(self) -> dict[str, Any]:
        """The item as plain data (LangGraph's shape: namespace as a list, ISO times)."""
        return {
            "namespace": list(self.namespace),
            "key": self.key,
            "value": self.value,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.dict().items())
        return f"{type(self).__name__}({fields})"

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (_rebuild, (type(self), self.dict()))


class SearchItem(Item):
    """An item found by ``search``; ``score`` is None (no semantic ranking here)."""

    __slots__ = ("score",)

    def __init__(  # noqa: PLR0917 - LangGraph's positional signature
        self,
        namespace: tuple[str, ...],
        key: str,
        value: dict[str, Any],
        created_at: datetime | str,
        updated_at: datetime | str,
        score: float | None = None,
    ) -> None:
        super().__init__(
            value=value, key=key, namespace=namespace, created_at=created_at,
            updated_at=updated_at,
        )
        self.score = score

    def dict(self) -> dict[str, Any]:
        """The item as plain data, with its score."""
        return {**super().dict(), "score": self.score}


def _rebuild(cls: type[Item], data: dict[str, Any]) -> Item:
    """Unpickle an Item or SearchItem from ``dict()`` output."""
    fields = {**data, "namespace": tuple(data["namespace"])}
    if cls is Item:
        return Item(**fields)
    return cls(**fields)


class GetOp(NamedTuple):
    """Read one item by namespace and key."""

    namespace: tuple[str, ...]
    """Where the item lives."""
    key: str
    """Its key within the namespace."""
    refresh_ttl: bool = True
    """Restart the item's TTL clock on this read (ignored for items without TTL)."""


class SearchOp(NamedTuple):
    """Find items under a namespace prefix, optionally filtered, one page at a time."""

    namespace_prefix: tuple[str, ...]
    """Namespaces starting with these labels are searched; () searches everything."""
    filter: dict[str, Any] | None = None
    """Field values to match, exactly or with ``$eq $ne $gt $gte $lt $lte``."""
    limit: int = 10
    """Most items returned."""
    offset: int = 0
    """Matching items skipped first."""
    query: str | None = None
    """Natural-language query: needs a vector index, which these stores do not have."""
    refresh_ttl: bool = True
    """Restart the TTL clock of the returned items."""


class MatchCondition(NamedTuple):
    """A namespace pattern matched at the start (prefix) or end (suffix)."""

    match_type: NamespaceMatchType
    """"prefix" or "suffix"."""
    path: NamespacePath
    """Labels to match; "*" matches any one label."""


class ListNamespacesOp(NamedTuple):
    """List namespaces that hold items, filtered and paged."""

    match_conditions: tuple[MatchCondition, ...] | None = None
    """Conditions every listed namespace meets."""
    max_depth: int | None = None
    """Truncate namespaces to this many labels (deduplicated)."""
    limit: int = 100
    """Most namespaces returned."""
    offset: int = 0
    """Namespaces skipped first."""


class PutOp(NamedTuple):
    """Store (or, with ``value=None``, delete) one item."""

    namespace: tuple[str, ...]
    """Where the item lives."""
    key: str
    """Its key within the namespace."""
    value: Mapping[str, Any] | None
    """The item's data, or None to delete it."""
    index: Literal[False] | list[str] | None = None  # type: ignore[assignment]
    """Fields to embed for semantic search: only None or False here (no vector index)."""
    ttl: float | None = None
    """Minutes the item lives after its last write (or read, if reads refresh)."""


Op: TypeAlias = GetOp | SearchOp | PutOp | ListNamespacesOp
Result: TypeAlias = Item | list[Item] | list[SearchItem] | list[tuple[str, ...]] | None


class TTLConfig(TypedDict, total=False):
    """How a store expires items (LangGraph's ``TTLConfig``)."""

    refresh_on_read: bool
    """Reads restart an item's TTL unless told otherwise (default True)."""
    omit_expired: bool
    """Accepted as LangGraph has it; these stores always omit expired items from reads."""
    default_ttl: float | None
    """Minutes new items live when ``put`` gives no ``ttl`` (default: forever)."""
    sweep_interval_minutes: int | None
    """Minutes between sweeps once ``start_ttl_sweeper()`` runs (default 5)."""


def validate_namespace_labels(namespace: tuple[str, ...]) -> None:
    """Raise InvalidNamespaceError unless every label is a non-empty string without . or NUL."""
    if not isinstance(namespace, tuple):
        raise InvalidNamespaceError(
            f"a namespace must be a tuple of strings, got {type(namespace).__name__}: "
            f"{namespace!r}"
        )
    for label in namespace:
        if not isinstance(label, str):
            raise InvalidNamespaceError(
                f"Invalid namespace label {label!r} found in {namespace}. Namespace labels "
                f"must be strings, but got {type(label).__name__}."
            )
        if not label:
            raise InvalidNamespaceError(
                f"Namespace labels cannot be empty strings. Got {label!r} in {namespace}"
            )
        for bad, name in ((".", "periods ('.')"), ("\x00", "NUL bytes ('\\x00')")):
            if bad in label:
                raise InvalidNamespaceError(
                    f"Invalid namespace label {label!r} found in {namespace}. "
                    f"Namespace labels cannot contain {name}."
                )


def validate_namespace(namespace: tuple[str, ...]) -> None:
    """Validate a namespace items are written to: non-empty, not rooted at "langgraph"."""
    if not namespace:
        raise InvalidNamespaceError("Namespace cannot be empty.")
    validate_namespace_labels(namespace)
    if namespace[0] == "langgraph":
        raise InvalidNamespaceError(
            f'Root label for namespace cannot be "langgraph". Got: {namespace}'
        )


def _check_page(op: SearchOp | ListNamespacesOp) -> None:
    for name in ("limit", "offset"):
        value = getattr(op, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise GraphValueError(f"{name} must be a non-negative int, got {value!r}")


def _check_put(op: PutOp) -> None:
    validate_namespace(op.namespace)
    if op.value is not None and not isinstance(op.value, Mapping):
        raise GraphValueError(
            f"a stored value must be a dict (mapping), got {type(op.value).__name__}; "
            "wrap it, e.g. {'data': value}"
        )
    if op.index not in (None, False):
        raise GraphValueError(
            f"index={op.index!r}: durable_graph stores have no vector index, so fields "
            "cannot be embedded for semantic search; pass index=None or index=False"
        )
    if op.ttl is not None and not is_positive_number(op.ttl):
        raise GraphValueError(f"ttl must be a positive number of minutes or None, got {op.ttl!r}")


def validate_op(op: object) -> None:
    """Raise a clear error for an op no store here can execute."""
    if isinstance(op, GetOp):
        validate_namespace_labels(op.namespace)
    elif isinstance(op, PutOp):
        _check_put(op)
    elif isinstance(op, SearchOp):
        validate_namespace_labels(op.namespace_prefix)
        _check_page(op)
        if op.query is not None:
            raise GraphValueError(
                "search(query=...) is semantic (vector) search, which durable_graph stores "
                "do not support; search with filter= instead, or drop query="
            )
        if op.filter is not None and not isinstance(op.filter, Mapping):
            raise GraphValueError(f"filter must be a dict, got {type(op.filter).__name__}")
    elif isinstance(op, ListNamespacesOp):
        _check_page(op)
        for condition in op.match_conditions or ():
            if condition.match_type not in ("prefix", "suffix"):
                raise GraphValueError(
                    f"match_type must be 'prefix' or 'suffix', got {condition.match_type!r}"
                )
            validate_namespace_labels(tuple(condition.path))
        depth = op.max_depth
        if depth is not None and (not isinstance(depth, int) or not is_positive_number(depth)):
            raise GraphValueError(f"max_depth must be a positive int or None, got {depth!r}")
    else:
        raise GraphValueError(
            f"unknown store operation {type(op).__name__}: expected GetOp, PutOp, SearchOp "
            "or ListNamespacesOp"
        )
