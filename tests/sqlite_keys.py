"""A SQLite store's rows with their thread ids: schema 12 keeps a thread's key in the row
tables (``sqlite_threads``), so rows read straight from a file name it by that."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from durable_graph.store.sqlite_threads import thread_names


def named_rows(conn: sqlite3.Connection, rows: Sequence[Sequence[Any]]) -> list[tuple[Any, ...]]:
    """``rows`` (their first column a thread key) with the thread's id there instead, in
    order (a key orders threads by when they were numbered, an id by its text)."""
    names = thread_names(conn, {row[0] for row in rows})
    return sorted((names[row[0]], *row[1:]) for row in rows)
