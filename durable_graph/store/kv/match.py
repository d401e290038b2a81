"""Pure matching rules shared by every store: filters, namespace patterns, listing.

Filters follow LangGraph's ``InMemoryStore``: a plain value matches by equality
(dicts recursively, lists element-wise); a dict whose keys start with ``$`` is a
set of operators (``$eq $ne $gt $gte $lt $lte``), all of which must hold. The
ordering operators compare numbers as numbers and strings as strings; a missing
field or a value of another kind simply does not match (LangGraph raises a
``TypeError`` from ``float(None)`` there).
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

from durable_graph.errors import GraphValueError
from durable_graph.store.kv.ops import ListNamespacesOp, MatchCondition, Namespace

__all__ = [
    "OPERATORS",
    "PushedCondition",
    "check_filter",
    "matches_filter",
    "namespace_matches",
    "pushable_conditions",
    "select_namespaces",
    "under_prefix",
]

_ORDERING: dict[str, Callable[[Any, Any], bool]] = {
    "$gt": operator.gt,
    "$gte": operator.ge,
    "$lt": operator.lt,
    "$lte": operator.le,
}
OPERATORS = frozenset({"$eq", "$ne", *_ORDERING})
"""Filter operators every store supports."""


def check_filter(filter: Mapping[str, Any] | None) -> None:
    """Raise GraphValueError for an operator no store supports, before any item is read."""
    for value in (filter or {}).values():
        if not isinstance(value, Mapping):
            continue
        unknown = sorted(k for k in value if isinstance(k, str) and k.startswith("$"))
        unknown = [k for k in unknown if k not in OPERATORS]
        if unknown:
            raise GraphValueError(
                f"unsupported filter operator {unknown[0]!r}: use one of {sorted(OPERATORS)}"
            )
        check_filter(value)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _ordered(value: Any, op: str, bound: Any) -> bool:
    if _number(value) and _number(bound):
        return _ORDERING[op](float(value), float(bound))
    if isinstance(value, str) and isinstance(bound, str):
        return _ORDERING[op](value, bound)
    return False


def _apply(value: Any, op: str, bound: Any) -> bool:
    if op == "$eq":
        return bool(value == bound)
    if op == "$ne":
        return bool(value != bound)
    return _ordered(value, op, bound)


def _compare(value: Any, wanted: Any) -> bool:
    if isinstance(wanted, Mapping):
        if any(isinstance(k, str) and k.startswith("$") for k in wanted):
            return all(_apply(value, op, bound) for op, bound in wanted.items())
        if not isinstance(value, Mapping):
            return False
        return all(_compare(value.get(k), v) for k, v in wanted.items())
    if isinstance(wanted, list | tuple):
        return (
            isinstance(value, list | tuple)
            and len(value) == len(wanted)
            and all(_compare(v, w) for v, w in zip(value, wanted, strict=True))
        )
    return bool(value == wanted)


def matches_filter(value: Mapping[str, Any], filter: Mapping[str, Any] | None) -> bool:
    """Whether an item's value meets every condition of ``filter`` (None matches all)."""
    return all(_compare(value.get(key), wanted) for key, wanted in (filter or {}).items())


class PushedCondition(NamedTuple):
    """One filter condition a SQL backend can test on ``json_extract(value, '$.field')``."""

    field: str
    """Top-level field name (an identifier, so it is safe inside a JSON path)."""
    op: str
    """SQL comparison: ``=`` on text, or ``> >= < <=`` on the value cast to REAL."""
    bound: str | float
    """Text to equal, or the number to compare with."""


_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SQL_ORDERING = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}


def _pushable(field: str, wanted: Any) -> list[PushedCondition]:
    if isinstance(wanted, str):
        return [PushedCondition(field, "=", wanted)]
    if not isinstance(wanted, Mapping) or not all(
        isinstance(k, str) and k.startswith("$") for k in wanted
    ):
        return []
    out = []
    for op, bound in wanted.items():
        if op == "$eq" and isinstance(bound, str):
            out.append(PushedCondition(field, "=", bound))
        elif op in _SQL_ORDERING and _number(bound):
            out.append(PushedCondition(field, _SQL_ORDERING[op], float(bound)))
    return out


def pushable_conditions(filter: Mapping[str, Any] | None) -> list[PushedCondition]:
    """Conditions of ``filter`` that SQL can pre-test without ever dropping a match.

    Text equality holds in SQL for every value Python's ``==`` accepts (JSON strings
    extract as text); ordering compares the value cast to REAL, which equals
    Python's ``float()`` for numbers, and Python rejects every non-number anyway.
    """
    return [
        condition
        for field, wanted in (filter or {}).items()
        if isinstance(field, str) and _FIELD.fullmatch(field)
        for condition in _pushable(field, wanted)
    ]


def under_prefix(namespace: Namespace, prefix: Namespace) -> bool:
    """Whether ``namespace`` starts with the labels of ``prefix``."""
    return namespace[: len(prefix)] == prefix


def namespace_matches(condition: MatchCondition, namespace: Namespace) -> bool:
    """Whether ``namespace`` meets a prefix or suffix condition ("*" matches any label)."""
    path = tuple(condition.path)
    if len(namespace) < len(path):
        return False
    if condition.match_type == "prefix":
        pairs = zip(namespace, path, strict=False)
    else:
        pairs = zip(reversed(namespace), reversed(path), strict=False)
    return all(want in ("*", have) for have, want in pairs)


def select_namespaces(namespaces: Iterable[Namespace], op: ListNamespacesOp) -> list[Namespace]:
    """The page of ``namespaces`` that ``op`` asks for: matched, truncated, sorted, sliced."""
    conditions = op.match_conditions or ()
    found = {ns for ns in namespaces if all(namespace_matches(c, ns) for c in conditions)}
    if op.max_depth is not None:
        found = {ns[: op.max_depth] for ns in found}
    return sorted(found)[op.offset : op.offset + op.limit]
