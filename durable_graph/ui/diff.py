"""How values are shown on the page, and the diff of the state between two steps (pure)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["DiffRow", "diff_values", "show"]

_MAX = 20_000
"""Characters of one value shown before it is cut (the page stays light)."""


def show(value: Any, limit: int = _MAX) -> str:
    """``value`` as indented JSON (``repr`` for what JSON cannot hold), cut at ``limit``.

    The text is escaped by the templates, never here: this returns plain text.
    """
    try:
        text = json.dumps(value, default=repr, indent=2, sort_keys=True, ensure_ascii=False)
    except (TypeError, ValueError):  # keys JSON cannot sort or hold
        text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"\n... ({len(text) - limit} more)"


@dataclass(frozen=True)
class DiffRow:
    """One key whose value differs between the two states."""

    key: str
    """The state key."""
    change: Literal["added", "removed", "changed"]
    """What happened to it from the older state to the newer one."""
    before: str
    """Its value in the older state, as shown ('' when added)."""
    after: str
    """Its value in the newer state, as shown ('' when removed)."""


def _as_mapping(values: Any) -> Mapping[str, Any]:
    """A state as a mapping; a non-mapping state (an entrypoint's return) is one key."""
    return values if isinstance(values, Mapping) else {"(value)": values}


def diff_values(older: Any, newer: Any) -> list[DiffRow]:
    """Keys added, removed or changed from ``older`` to ``newer``, sorted by key."""
    a, b = _as_mapping(older), _as_mapping(newer)
    rows = []
    for key in sorted(set(a) | set(b), key=str):
        if key not in a:
            rows.append(DiffRow(str(key), "added", "", show(b[key])))
        elif key not in b:
            rows.append(DiffRow(str(key), "removed", show(a[key]), ""))
        elif show(a[key]) != show(b[key]):
            rows.append(DiffRow(str(key), "changed", show(a[key]), show(b[key])))
    return rows
