"""RecordStore: ``batch`` written once over five small storage primitives.

A backend (memory, SQLite, Redis) only stores records: fetch by key, scan a
namespace prefix in order, list its live namespaces, write or delete, and restart
TTL clocks. Validation, filters, paging, the reads-before-writes rule of a batch
and TTL defaults live here, so every backend answers the same way.

Order of ``search`` results (all backends, as LangGraph's InMemoryStore): grouped by
namespace in the order each namespace first received an item, then items in the
order they were created; updating an item keeps its place, deleting and putting it
again (or letting it expire) moves it to the end.
"""

from __future__ import annotations

import concurrent.futures
import json
from abc import abstractmethod
from collections.abc import Generator, Iterable, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from durable_graph.errors import GraphValueError, SerializationError
from durable_graph.store.kv.base import BaseStore
from durable_graph.store.kv.match import check_filter, matches_filter, select_namespaces
from durable_graph.store.kv.ops import (
    GetOp,
    Item,
    ListNamespacesOp,
    Namespace,
    Op,
    Result,
    SearchItem,
    SearchOp,
    is_positive_number,
    validate_op,
)
from durable_graph.store.kv.sweeper import TTLSweeper

__all__ = ["Record", "RecordStore", "Write", "dump_value", "minutes_to_seconds", "now_utc"]


def now_utc() -> datetime:
    """The current time, timezone-aware (UTC), as item timestamps are."""
    return datetime.now(UTC)


def minutes_to_seconds(ttl: float | None) -> float | None:
    """A TTL in minutes (LangGraph's unit) as seconds."""
    return None if ttl is None else ttl * 60.0


def dump_value(value: dict[str, Any], namespace: Namespace, key: str) -> str:
    """An item's value as JSON text; SerializationError naming the item if it is not JSON."""
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise SerializationError(
            f"the value of item {key!r} in namespace {namespace} is not JSON-serializable "
            f"({exc}); durable stores keep JSON (dicts, lists, str, numbers, bools, None)"
        ) from exc


@dataclass(frozen=True, slots=True)
class Record:
    """One stored item as a backend keeps it."""

    namespace: Namespace
    """Where the item lives."""
    key: str
    """Its key in the namespace."""
    value: dict[str, Any]
    """The stored dict."""
    created_at: datetime
    """When the item was first written (kept across updates)."""
    updated_at: datetime
    """When the item was last written."""
    ttl: float | None = None
    """Minutes the item lives after its last write or refreshing read; None: forever."""

    def item(self) -> Item:
        """The record as the ``Item`` reads return."""
        return Item(
            value=self.value, key=self.key, namespace=self.namespace,
            created_at=self.created_at, updated_at=self.updated_at,
        )

    def search_item(self) -> SearchItem:
        """The record as a ``SearchItem`` (no score: no semantic search)."""
        return SearchItem(self.namespace, self.key, self.value, self.created_at, self.updated_at)


@dataclass(frozen=True, slots=True)
class Write:
    """One write of a batch: store ``value`` (or delete when None)."""

    namespace: Namespace
    """Where the item lives."""
    key: str
    """Its key in the namespace."""
    value: dict[str, Any] | None
    """The new dict, or None to delete."""
    ttl: float | None
    """Minutes the item lives (None: forever)."""


class RecordStore(BaseStore):
    """A BaseStore whose ``batch`` runs over the primitives below."""

    @abstractmethod
    def _fetch(self, keys: Sequence[tuple[Namespace, str]], now: datetime) -> dict[
        tuple[Namespace, str], Record
    ]:
        """The live records among ``keys`` (absent and expired ones left out)."""

    @abstractmethod
    def _scan(
        self, prefix: Namespace, now: datetime, filter: Mapping[str, Any] | None
    ) -> Generator[Record, None, None]:
        """Live records under ``prefix``, in search order, read lazily.

        A backend may use ``filter`` to skip records early (a pre-filter that never
        drops a match); the engine applies the exact filter to what comes back.
        """

    @abstractmethod
    def _namespaces(self, now: datetime) -> Iterable[Namespace]:
        """Every namespace that holds at least one live record."""

    @abstractmethod
    def _write(self, writes: Sequence[Write], now: datetime) -> None:
        """Apply ``writes`` (keeping created_at and order of updated items)."""

    @abstractmethod
    def _touch(self, records: Sequence[Record], now: datetime) -> None:
        """Restart the TTL clock of ``records`` (all have a ttl)."""

    @abstractmethod
    def _sweep(self, now: datetime) -> int:
        """Delete what expired; returns how many items (or index entries) went."""

    def sweep_ttl(self) -> int:
        """Delete expired items now (reads already hide them); returns how many went."""
        return self._sweep(now_utc())

    def start_ttl_sweeper(
        self, sweep_interval_minutes: float | None = None
    ) -> concurrent.futures.Future[None]:
        """Sweep every ``sweep_interval_minutes`` (else the TTLConfig's, else 5) on a thread.

        As in LangGraph, a store without a ``ttl`` config has nothing to sweep: the
        returned Future is already done.
        """
        if not self.ttl_config:
            done: concurrent.futures.Future[None] = concurrent.futures.Future()
            done.set_result(None)
            return done
        interval = sweep_interval_minutes or self.ttl_config.get("sweep_interval_minutes") or 5
        if not is_positive_number(interval):
            raise GraphValueError(f"sweep_interval_minutes must be positive, got {interval!r}")
        return self._sweeper().start(float(interval))

    def stop_ttl_sweeper(self, timeout: float | None = None) -> bool:
        """Stop the sweeper thread; True once it has ended (or was not running)."""
        return self._sweeper().stop(timeout)

    def _sweeper(self) -> TTLSweeper:
        sweeper: TTLSweeper | None = self.__dict__.get("_ttl_sweeper")
        if sweeper is None:
            sweeper = self.__dict__["_ttl_sweeper"] = TTLSweeper(self.sweep_ttl)
        return sweeper

    def __getstate__(self) -> dict[str, Any]:
        """Pickle the configuration, never the sweeper thread."""
        return {k: v for k, v in self.__dict__.items() if k != "_ttl_sweeper"}

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        """Execute ``ops``: reads in order against the state before the batch's writes."""
        ops = list(ops)
        for op in ops:
            validate_op(op)
            if isinstance(op, SearchOp):
                check_filter(op.filter)
        now = now_utc()
        wanted = [(op.namespace, op.key) for op in ops if isinstance(op, GetOp)]
        fetched = self._fetch(wanted, now) if wanted else {}
        results: list[Result] = []
        touched: dict[tuple[Namespace, str], Record] = {}
        writes: dict[tuple[Namespace, str], Write] = {}
        for op in ops:
            if isinstance(op, GetOp):
                found = fetched.get((op.namespace, op.key))
                results.append(found.item() if found else None)
                _note_touch(touched, [found] if found else [], op.refresh_ttl)
            elif isinstance(op, SearchOp):
                page = self._search(op, now)
                results.append([r.search_item() for r in page])
                _note_touch(touched, page, op.refresh_ttl)
            elif isinstance(op, ListNamespacesOp):
                results.append(select_namespaces(self._namespaces(now), op))
            else:
                results.append(None)
                value = None if op.value is None else dict(op.value)
                writes[(op.namespace, op.key)] = Write(op.namespace, op.key, value, op.ttl)
        if touched:
            self._touch(list(touched.values()), now)
        if writes:
            self._write(list(writes.values()), now)
        return results

    def _search(self, op: SearchOp, now: datetime) -> list[Record]:
        """One page of matching records, reading no further than the page's end."""
        page: list[Record] = []
        skip = op.offset
        if op.limit == 0:
            return page
        with closing(self._scan(op.namespace_prefix, now, op.filter)) as records:
            for record in records:
                if not matches_filter(record.value, op.filter):
                    continue
                if skip:
                    skip -= 1
                    continue
                page.append(record)
                if len(page) == op.limit:
                    break
        return page


def _note_touch(
    touched: dict[tuple[Namespace, str], Record], records: Iterable[Record], refresh: bool
) -> None:
    if refresh:
        touched.update(((r.namespace, r.key), r) for r in records if r.ttl is not None)
