"""Helpers every saver shares: encoding channel values, matching metadata filters."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from durable_graph.errors import SerializationError
from durable_graph.store.serde import Serializer

__all__ = ["encode_values", "encode_write", "metadata_matches"]


def encode_values(serde: Serializer, values: Mapping[str, Any]) -> dict[str, tuple[str, bytes]]:
    """Encode each channel's value; the error names the channel and type that failed.

    Everything is encoded before the caller stores anything, so a value the store
    cannot take leaves the previous checkpoint as it was.
    """
    out: dict[str, tuple[str, bytes]] = {}
    for channel, value in values.items():
        try:
            out[channel] = serde.dumps_typed(value)
        except SerializationError as exc:
            raise SerializationError(
                f"cannot store channel {channel!r}: a value of type "
                f"{type(value).__qualname__} is not serializable ({exc}); "
                "the previous checkpoint was kept"
            ) from exc
    return out


def encode_write(serde: Serializer, channel: str, value: Any) -> tuple[str, bytes]:
    """Encode one pending write; the error names the channel that failed."""
    try:
        return serde.dumps_typed(value)
    except SerializationError as exc:
        raise SerializationError(
            f"cannot store a write to channel {channel!r}: a value of type "
            f"{type(value).__qualname__} is not serializable ({exc}); nothing was written"
        ) from exc


def metadata_matches(metadata: Mapping[str, Any], filter: Mapping[str, Any]) -> bool:
    """Whether ``metadata`` has every key/value of ``filter``."""
    return all(metadata.get(k) == v for k, v in filter.items())
