"""SqliteFile: one SQLite database file opened lazily, shared by threads, reopened by path.

Used by ``SqliteStore`` and ``SqliteCache``. The connection is opened on first
use (so an object unpickled on a Celery worker opens its own), runs in WAL mode,
waits up to 30 s for another process's write lock, and serializes this process's
threads with a lock. ``transaction()`` turns sqlite errors into
``CheckpointStoreError`` naming the file.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from durable_graph.errors import CheckpointStoreError, GraphValueError, SerializationError

__all__ = ["SqliteFile"]

_BUSY_TIMEOUT = 30.0
"""Seconds to wait for another connection's write lock before failing."""


class SqliteFile:
    """A lazily opened, lock-guarded SQLite connection with a schema applied once.

    Args:
        target: a file path, or an open ``sqlite3.Connection`` (then not picklable).
        schema: ``CREATE ... IF NOT EXISTS`` statements run when the file is opened.
        what: name of the owner, for error messages ("SqliteStore").
    """

    def __init__(
        self, target: str | os.PathLike[str] | sqlite3.Connection, *, schema: str, what: str
    ) -> None:
        if isinstance(target, sqlite3.Connection):
            self.path: str | None = None
            self._conn: sqlite3.Connection | None = target
        elif isinstance(target, str | os.PathLike):
            self.path = os.fspath(target)
            self._conn = None
        else:
            raise GraphValueError(
                f"{what} needs a file path or a sqlite3.Connection, got {type(target).__name__}"
            )
        self.schema = schema
        self.what = what
        self._owns_conn = self._conn is None
        self._lock = threading.RLock()
        self._ready = False

    def picklable_path(self) -> str:
        """The path that reopens this file elsewhere; SerializationError if there is none."""
        if self.path is None or self.path == ":memory:" or self.path.startswith("file::memory:"):
            raise SerializationError(
                f"a {self.what} on an open connection or ':memory:' cannot be shipped to "
                f"another process; build it from a file path to share it"
            )
        return self.path

    def _open(self) -> sqlite3.Connection:
        if self._conn is None:
            assert self.path is not None
            self._conn = sqlite3.connect(
                self.path, timeout=_BUSY_TIMEOUT, check_same_thread=False, isolation_level=None
            )
        if not self._ready:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.executescript(self.schema)
            self._ready = True
        return self._conn

    @contextmanager
    def transaction(self, *, write: bool = True) -> Iterator[sqlite3.Connection]:
        """One transaction under the lock; BEGIN IMMEDIATE for writes so two writers queue."""
        with self._lock:
            try:
                conn = self._open()
                began = not conn.in_transaction
                if began:
                    conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                try:
                    yield conn
                except BaseException:
                    if began:
                        conn.execute("ROLLBACK")
                    raise
                if began:
                    conn.execute("COMMIT")
            except sqlite3.Error as exc:
                where = self.path or "a given connection"
                raise CheckpointStoreError(f"{self.what} on {where} failed: {exc}") from exc

    def close(self) -> None:
        """Close the connection if this object opened it (it reopens on next use)."""
        with self._lock:
            if self._owns_conn and self._conn is not None:
                self._conn.close()
                self._conn = None
                self._ready = False

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.picklable_path(), "schema": self.schema, "what": self.what}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"], schema=state["schema"], what=state["what"])  # type: ignore[misc]

