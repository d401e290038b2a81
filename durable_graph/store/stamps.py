"""A checkpoint's timestamp as microseconds after the time in its id; pure, no I/O.

A checkpoint's ``ts`` is 32 characters of ISO-8601 text, and its id (``new_checkpoint_id``)
already holds the time it was made: its high 64 bits are nanoseconds since the epoch.
The timestamp is taken a few microseconds from the id's time, so a store can keep the
difference instead (a few bytes: SQLite's schema 7, ``sqlite_row.pack_ts``; Redis's
record field ``t``, redis-v8, ``redis.records.pack_record``). Only a timestamp that reads
back exactly, character for character, is kept so (``ts_micros``); any other is kept as
its text.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta

__all__ = ["id_micros", "ts_micros", "ts_text"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CANONICAL = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
"""A UUID's text as ``str(uuid.UUID(...))`` gives it (any case): its high 64 bits read
straight from the text."""


def ts_micros(ts: str) -> int | None:
    """Microseconds since the epoch of an ISO-8601 UTC timestamp that ``ts_text`` gives
    back exactly (``datetime.isoformat``'s form), else None."""
    try:
        when = datetime.fromisoformat(ts)
    except (TypeError, ValueError):
        return None
    if when.utcoffset() != timedelta(0) or when.tzinfo is None:
        return None
    micros = (when - _EPOCH) // timedelta(microseconds=1)
    return micros if micros >= 0 and ts_text(micros) == ts else None


def ts_text(micros: int) -> str:
    """Inverse of ``ts_micros``."""
    return (_EPOCH + timedelta(microseconds=micros)).isoformat()


def id_micros(checkpoint_id: str | None) -> int | None:
    """Microseconds since the epoch in a checkpoint id's high 64 bits (nanoseconds,
    ``new_checkpoint_id``), or None when the id is not a UUID."""
    if checkpoint_id is None:
        return None
    if _CANONICAL.fullmatch(checkpoint_id):  # the usual id: no UUID object
        return int(checkpoint_id[:8] + checkpoint_id[9:13] + checkpoint_id[14:18], 16) // 1000
    try:
        return (uuid.UUID(checkpoint_id).int >> 64) // 1000
    except (ValueError, AttributeError, TypeError):
        return None
