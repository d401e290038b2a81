"""Schema 7's forms of a checkpoint row's versions and versions seen; pure, no I/O.

At schema 6 a checkpoint row's versions and versions seen (``sqlite_row``) named every
channel and node in full and held every version as a 9-byte integer: about 110 of a
chat step's 200 bytes. Schema 7 keeps them against what the row already has:

- a channel or node by the number of its name (``sqlite_names``: the file's ``names``
  table; ``RowNames.number_of``, ``RowNames.name_of``);
- the row's own version (what its step gave the channels it changed: the step in the
  high bits and a hash of the checkpoint id in the low 32, ``own_version``, as the
  engine's ``next_channel_version``) as nil, once its step is stored;
- the parent's own version at step ``k`` (what the step before changed) as ``-(k+1)``,
  from the row's parent id; any other version as itself.

``channel_versions``: ``\\xc1\\x03`` then a msgpack list [own step or nil, number, version,
...] in the order of the names. ``versions_seen``: ``\\xc1\\x02`` then
``sqlite_row.seen_flat``'s list (a channel of the row's versions by its index, nil when
the row's), each node by number and each integer version as above. ``\\xc1`` is a byte
msgpack never uses: schema 6's readers fail on these columns loudly. A form is used
only when every version is an integer from 0 to 2**64-1 (seen: or text) and every name
UTF-8, so a negative number is never a version as given; else the row keeps schema 6's
form. Each reads back exactly what the JSON form reads back (types included), like
every form of ``sqlite_row``.

Schema 8 adds a third form of ``channel_versions``, ``\\xc1\\x04`` then the same list, where
a channel whose value is None (a branch channel's trigger, ``branch:to:node``) has its
number stored as ``~number`` (negative): it is *marked*, and has no ``blobs`` row (about
35 bytes a step of a graph that branches, to say "None"). ``pack_marked`` uses it only
when there are marks, so a row without any is schema 7's; ``unpack_marked`` gives the
marks back. A schema 7 reader fails on the form loudly (it is neither of its heads).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ormsgpack

from durable_graph.errors import SerializationError
from durable_graph.store import sqlite_row

__all__ = [
    "RowNames",
    "dumps_versions",
    "is_named",
    "own_version",
    "pack_marked",
    "pack_seen",
    "pack_versions",
    "unpack_marked",
    "unpack_seen",
    "unpack_versions",
    "versions_json",
]

_VERSIONS = b"\xc1\x03"
"""Head of named versions; a schema 6 map (msgpack) or text never starts so."""
_MARKED = b"\xc1\x04"
"""Head of named versions with marks (schema 8): a marked channel's number is ``~number``."""
_SEEN = b"\xc1\x02"
"""Head of named versions seen; schema 4's map and schema 6's ``\\x01`` differ."""
_HEAD = 2
"""Bytes before a named form's msgpack: ``\\xc1`` (a byte msgpack never uses, so schema
6's readers, which unpack the column whole, fail on it loudly), then its kind."""
_SALT_BITS = 32
_MAX = 2**64


@dataclass(frozen=True)
class RowNames:
    """What a row's named forms are packed against and read back with."""

    checkpoint_id: str
    """The row's checkpoint id (its own version's hash)."""
    parent_id: str | None
    """The row's parent id (its parent's own version's hash)."""
    name_of: Callable[[int], str]
    """The name a number stands for in the row's file."""
    number_of: Callable[[str], int] | None = None
    """A name's number in the row's file, given one (packing only)."""


def own_version(step: int, checkpoint_id: str) -> int:
    """The version the step ``step`` gives the channels it changes in the checkpoint
    ``checkpoint_id`` (as ``scheduler.algo.next_channel_version``)."""
    digest = hashlib.blake2b(checkpoint_id.encode(), digest_size=_SALT_BITS // 8).digest()
    return (step << _SALT_BITS) | int.from_bytes(digest, "big")


def is_named(stored: str | bytes) -> bool:
    """Whether a versions or versions-seen column is in a named form (refers to names)."""
    return isinstance(stored, bytes) and stored[:_HEAD] in (_VERSIONS, _MARKED, _SEEN)


def _utf8(name: Any) -> bool:
    """Whether ``name`` is text the ``names`` table (and msgpack) can hold: UTF-8."""
    if type(name) is not str:
        return False
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate
        return False
    return True


def _plain_int(version: Any) -> bool:
    return type(version) is int and 0 <= version < _MAX


def _short(version: Any, row: RowNames) -> Any:
    """A version as stored: the parent's own at step k as ``-(k+1)``, else as given."""
    if row.parent_id is not None and type(version) is int:
        step = version >> _SALT_BITS
        if own_version(step, row.parent_id) == version:
            return -(step + 1)
    return version


def _full(stored: Any, row: RowNames) -> Any:
    """Inverse of ``_short``."""
    if type(stored) is not int or stored >= 0:
        return stored
    if row.parent_id is None:
        raise SerializationError(
            f"checkpoint {row.checkpoint_id} names its parent's version but has no parent: "
            "the row was edited")
    return own_version(-stored - 1, row.parent_id)


def _name(row: RowNames, number: Any) -> str:
    if type(number) is not int or not 0 <= number < 2**63:  # SQLite's INTEGER
        raise SerializationError(
            f"checkpoint {row.checkpoint_id} names a channel or node by {number!r}, not a "
            "name's number: the row was edited")
    return row.name_of(number)


def _number(row: RowNames, name: str) -> int:
    if row.number_of is None:
        raise SerializationError("packing a named row needs the file's names")  # internal
    return row.number_of(name)


def pack_versions(versions: Any, text: str, row: RowNames) -> str | bytes:
    """Versions (as the saver reads them back; ``text``: their JSON) in the named
    form when every version is an integer from 0 to 2**64-1, else ``sqlite_row``'s."""
    return pack_marked(versions, text, row, frozenset())[0]


def pack_marked(versions: Any, text: str, row: RowNames,
                marks: frozenset[str]) -> tuple[str | bytes, frozenset[str]]:
    """``pack_versions``, with the channels of ``marks`` among ``versions`` marked (their
    value is None: no ``blobs`` row) when the named form holds them; and the marks it
    holds (none when it fell back to ``sqlite_row``'s form, or ``marks`` is empty)."""
    if type(versions) is not dict or not all(
            _utf8(k) and _plain_int(v) for k, v in versions.items()):
        return sqlite_row.pack_versions(versions, text), frozenset()
    top = max(versions.values(), default=0)
    step = top >> _SALT_BITS
    own = top if versions and own_version(step, row.checkpoint_id) == top else None
    held = marks.intersection(versions)
    flat: list[Any] = [None if own is None else step]
    for name in sorted(versions):
        version = versions[name]
        number = _number(row, name)
        flat += [~number if name in held else number,
                 None if version == own else _short(version, row)]
    try:
        packed = ormsgpack.packb(flat)
    except (TypeError, ormsgpack.MsgpackEncodeError):  # a name that is not UTF-8
        return sqlite_row.pack_versions(versions, text), frozenset()
    return (_MARKED if held else _VERSIONS) + packed, frozenset(held)


def unpack_versions(stored: str | bytes, row: RowNames) -> Any:
    """Inverse of ``pack_versions`` (every form: ``sqlite_row.unpack_versions``); the
    marks of a marked form are left out (``unpack_marked`` gives them)."""
    return unpack_marked(stored, row)[0]


def unpack_marked(stored: str | bytes, row: RowNames) -> tuple[Any, frozenset[str]]:
    """Inverse of ``pack_marked``: the versions and the channels marked None."""
    if not isinstance(stored, bytes) or stored[:_HEAD] not in (_VERSIONS, _MARKED):
        return sqlite_row.unpack_versions(stored), frozenset()
    step, *flat = ormsgpack.unpackb(stored[_HEAD:])
    own = None if step is None else own_version(step, row.checkpoint_id)
    versions: dict[str, Any] = {}
    marks: set[str] = set()
    marked_form = stored[:_HEAD] == _MARKED
    for number, version in zip(flat[::2], flat[1::2], strict=True):
        marked = marked_form and type(number) is int and number < 0
        name = _name(row, ~number if marked else number)
        versions[name] = own if version is None else _full(version, row)
        if marked:
            marks.add(name)
    return versions, frozenset(marks)


dumps_versions = json.JSONEncoder(separators=(",", ":"), check_circular=False).encode
"""Decoded versions as compact JSON text, as SQL's ``json_each`` reads them."""


def versions_json(stored: str | bytes | None, row: RowNames) -> str | None:
    """A row's versions as JSON text, for SQL's ``json_each`` (``dg_versions``)."""
    if stored is None or isinstance(stored, str):
        return stored
    return dumps_versions(unpack_versions(stored, row))


def pack_seen(seen: Any, versions: Any, row: RowNames) -> str | bytes:
    """Versions seen (as the saver reads them back, against the row's ``versions``) in
    the named form when every node is text and every version text or an integer from
    0 to 2**64-1; else ``sqlite_row.pack_seen_by``'s form."""
    try:
        flat = sqlite_row.seen_flat(seen, versions)
    except (TypeError, AttributeError, ValueError):
        return sqlite_row.pack_seen_by(seen, versions)
    nodes, pairs = flat[::2], flat[1::2]
    # every version, those stored as nil too: the record signs them as msgpack
    if not all(_utf8(n) for n in nodes) or not all(
            type(v) is str or _plain_int(v) for inner in seen.values() for v in inner.values()):
        return sqlite_row.pack_seen_by(seen, versions)
    named: list[Any] = []
    for node, inner in zip(nodes, pairs, strict=True):
        inner[1::2] = [_short(v, row) for v in inner[1::2]]
        named += [_number(row, node), inner]
    try:
        return _SEEN + ormsgpack.packb(named)
    except (TypeError, ormsgpack.MsgpackEncodeError):  # text that is not UTF-8
        return sqlite_row.pack_seen_by(seen, versions)


def unpack_seen(stored: str | bytes, versions: Any, row: RowNames) -> Any:
    """Inverse of ``pack_seen`` (every form: ``sqlite_row.unpack_seen``)."""
    if not isinstance(stored, bytes) or stored[:_HEAD] != _SEEN:
        return sqlite_row.unpack_seen(stored, versions)
    flat = ormsgpack.unpackb(stored[_HEAD:])
    for at in range(1, len(flat), 2):
        flat[at - 1] = _name(row, flat[at - 1])
        flat[at][1::2] = [_full(v, row) for v in flat[at][1::2]]
    return sqlite_row.seen_of(flat, versions)
