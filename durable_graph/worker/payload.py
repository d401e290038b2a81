"""Signed job payloads: what travels in a Celery message, and how a worker opens it.

A message body is JSON with the job's ids in clear (for Celery's tooling and the
logs) and the job itself as one sealed string: the job serialized (msgpack, or
cloudpickle for what msgpack cannot carry, such as a ``@task`` call's function)
inside an HMAC-SHA256 envelope with a key id, base64-encoded. ``open_job``
checks the MAC before it decodes a byte, so a tampered or unsigned payload is
refused with ``SignatureError`` and nothing of it is unpickled or run.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from durable_graph.errors import SignatureError
from durable_graph.store.codec import SigningCodec
from durable_graph.store.redis.records import decode_blob, encode_blob
from durable_graph.store.serde import TypedSerializer

__all__ = ["open_sealed", "seal"]

_SERDE = TypedSerializer()


def seal(codec: SigningCodec, obj: Any) -> str:
    """``obj`` serialized, signed with the codec's active key, as base64 text."""
    return base64.b64encode(codec.encode(encode_blob(_SERDE.dumps_typed(obj)))).decode()


def open_sealed(codec: SigningCodec, text: Any, what: str = "job payload") -> Any:
    """The object ``seal`` made; ``SignatureError`` for anything else, before decoding."""
    if not isinstance(text, (str, bytes)):
        raise SignatureError(
            f"{what} is not a sealed payload (got {type(text).__name__}): it was not sent "
            "by durable-graph or was altered; refused, nothing of it ran."
        )
    try:
        envelope = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError(
            f"{what} is not base64 text: it was not sealed by durable-graph; refused."
        ) from None
    try:
        body = codec.decode(envelope)
    except SignatureError as exc:
        raise SignatureError(f"{what} refused, nothing of it ran: {exc}") from None
    return _SERDE.loads_typed(decode_blob(body))
