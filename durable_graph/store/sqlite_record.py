"""A SQLite checkpoint row as stored and as signed; pure, no I/O.

``packed_row`` builds the checkpoints-table row of a checkpoint (``sqlite_row``,
``sqlite_named``), and ``record_fields`` what its signature covers. Schema 8 marks the
channels whose value is None in the row's versions (``sqlite_named.pack_marked``)
instead of storing a ``blobs`` row for each: the marks are part of the record, so a
signed row covers them (``record_fields``), and ``with_marks`` puts the None values
back, in the order of the row's versions (where the rows they replace came from).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import ormsgpack

from durable_graph.errors import SerializationError, SignatureError
from durable_graph.store.base import Checkpoint, CheckpointMetadata
from durable_graph.store.sqlite_named import RowNames, is_named, pack_marked, pack_seen
from durable_graph.store.sqlite_row import pack_id, pack_metadata, pack_ts, plain_form
from durable_graph.store.sqlite_threads import ThreadKey

__all__ = ["PackedRow", "dumps_json", "packed_row", "record_fields", "with_marks"]

Row = tuple[Any, ...]


@dataclass(frozen=True)
class PackedRow:
    """A checkpoint's row, unsigned, and what it reads back as."""

    row: Row
    """The checkpoints-table row, its ``sig`` None."""
    versions: Any
    """Its versions as they read back."""
    seen: Any
    """Its versions seen as they read back."""
    marks: frozenset[str]
    """The channels its versions mark None (no ``blobs`` row)."""


def dumps_json(value: Any, what: str) -> str:
    """``value`` as canonical JSON text; SerializationError naming ``what`` if it cannot be."""
    try:
        return json.dumps(value, separators=(",", ":"), sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise SerializationError(f"cannot store {what} as JSON: {exc}") from exc


def packed_row(
    place: tuple[ThreadKey, str],
    checkpoint: Checkpoint,
    metadata: CheckpointMetadata,
    *,
    versions_text: str,
    names: RowNames,
) -> PackedRow:
    """The checkpoints-table row of a checkpoint at (thread key, namespace): everything but
    its values, packed (``sqlite_row``, ``sqlite_named``; ``versions_text``: its
    versions as JSON; ``names``: its ids and its file's names), unsigned, with the
    channels whose value is None marked where the form holds marks."""
    thread, ns = place
    raw_seen = checkpoint.versions_seen
    versions = plain_form(checkpoint.channel_versions, lambda: versions_text)
    seen = plain_form(raw_seen, lambda: dumps_json(raw_seen, "versions seen"))
    nones = frozenset(ch for ch, value in checkpoint.channel_values.items() if value is None)
    packed_versions, marks = pack_marked(versions, versions_text, names, nones)
    row = (
        thread,
        ns,
        pack_id(checkpoint.id),
        pack_id(names.parent_id),
        pack_ts(checkpoint.ts, checkpoint.id),
        packed_versions,
        pack_seen(seen, versions, names),
        pack_metadata(dict(metadata), lambda: dumps_json(dict(metadata), "checkpoint metadata")),
        checkpoint.v,
        None,
    )
    return PackedRow(row, versions, seen, marks)


def record_fields(row: Row, versions: Any, seen: Any,
                  marks: frozenset[str] = frozenset()) -> dict[str, Any]:
    """What a record's signature covers: every column but the place and the signature;
    for a column that names by number (``is_named``), what it reads back (``versions``,
    ``seen``), so the names its numbers stand for are covered too; and the channels
    marked None, when any (a row without marks signs what schema 7 signed)."""
    fields = dict(zip(("parent", "ts", "versions", "seen", "metadata", "v"), row[3:9],
                      strict=True))
    for key, decoded in (("versions", versions), ("seen", seen)):
        if is_named(fields[key]):
            fields[key] = ormsgpack.packb(decoded, option=ormsgpack.OPT_SORT_KEYS)
    if marks:
        fields["marks"] = sorted(marks)
    return fields


def with_marks(values: Mapping[str, Any], versions: Mapping[str, Any],
               marks: frozenset[str], *, unsigned_in_signed_store: bool,
               where: str) -> dict[str, Any]:
    """A checkpoint's values read from its ``blobs`` rows, with its marked channels None,
    in the order of its versions. A signing store refuses marks in a row without a
    signature (they are schema 8's, always signed there: the signature was cut)."""
    if not marks:
        return dict(values)
    if unsigned_in_signed_store:
        raise SignatureError(
            f"{where}: the checkpoint record has no signature but marks channels None, "
            "which only signed records of this store do: its signature was removed. "
            "Refused; nothing was run.")
    return {ch: None if ch in marks else values[ch]
            for ch in versions if ch in marks or ch in values}
