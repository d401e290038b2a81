"""Signed job payloads: what travels in a Celery message, and how a worker opens it.

A message body is JSON with the job's ids in clear (for Celery's tooling and the
logs) and the job itself as one sealed string: the job serialized (msgpack, or
cloudpickle for what msgpack cannot carry, such as a ``@task`` call's function)
inside an HMAC-SHA256 envelope with a key id, base64-encoded. ``open_job``
checks the MAC before it decodes a byte, so a tampered or unsigned payload is
refused with ``SignatureError`` and nothing of it is unpickled or run.

Workers publish a fingerprint of each signing key they hold (an HMAC of a
constant, which reveals nothing of the key); a producer checks its own against
it before it enqueues anything, so a producer with the wrong secret fails at once
(workers log and drop what they cannot verify and tell no one).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from durable_graph.errors import SignatureError
from durable_graph.store.codec import SigningCodec
from durable_graph.store.redis.connection import RedisConn
from durable_graph.store.redis.keys import key_check_key
from durable_graph.store.redis.records import decode_blob, encode_blob
from durable_graph.store.serde import TypedSerializer

__all__ = ["check_key", "open_sealed", "publish_keys", "seal"]

_SERDE = TypedSerializer()


def seal(codec: SigningCodec, obj: Any, *, pickled: bool = False) -> str:
    """``obj`` serialized, signed with the codec's active key, as base64 text.

    ``pickled``: ``obj`` holds a function (a ``@task`` call's job), so msgpack, tried
    first otherwise, would fail on it: pickle it at once.
    """
    typed = _SERDE.dumps_pickled(obj) if pickled else _SERDE.dumps_typed(obj)
    return base64.b64encode(codec.encode(encode_blob(typed))).decode()


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


def publish_keys(conn: RedisConn, prefix: str, codec: SigningCodec) -> None:
    """Publish the fingerprint of every key this worker verifies with."""
    def write(client: Any) -> None:
        pipe = client.pipeline(transaction=False)
        for kid in sorted(codec.key_ids):
            pipe.set(key_check_key(prefix, kid), codec.fingerprint(kid))
        pipe.execute()

    conn.call("publish key fingerprints", write)


def check_key(conn: RedisConn, prefix: str, codec: SigningCodec) -> None:
    """SignatureError when workers published another secret under this key id."""
    kid = codec.active_key_id
    theirs = conn.call("read key fingerprint", lambda c: c.get(key_check_key(prefix, kid)))
    if theirs is not None and theirs.decode() != codec.fingerprint():
        raise SignatureError(
            f"this producer's signing key {kid!r} is not the workers' key of that id: they "
            "would refuse every job. Set DURABLE_GRAPH_SECRET_KEY (or secret_key=) to the "
            "secret the workers use. Nothing was enqueued."
        )
