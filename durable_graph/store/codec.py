"""The bytes layer under the serializer: HMAC-signed, optionally compressed envelopes.

Checkpoints and task results cross process boundaries (Redis, Celery) and may be
unpickled on the way back, so every byte string that leaves the process is signed
and checked before anything looks inside it. The layout, all integers big-endian::

    offset  size  field
    0       1     version byte (0xD1), doubles as a magic number
    1       1     n = length of the key id in bytes (1..255)
    2       n     key id, UTF-8
    2+n     1     flags (bit 0: body is zlib-compressed)
    3+n     32    HMAC-SHA256(key, bytes 0 .. 3+n) || body)
    35+n    ...   body

The MAC covers the version, key id and flags as well as the body, so none of them
can be swapped without detection. ``decode`` compares MACs with
``hmac.compare_digest`` before it decompresses or returns a byte. Several keys may
be known at once so that keys rotate: new envelopes use the active key, older ones
still verify under the key id they name. (Temporal's ``PayloadCodec`` is the model.)

A signature proves that a holder of the key wrote the bytes, not which slot they
were written for; binding an envelope to a thread or checkpoint is the store's job.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import zlib
from collections.abc import Mapping
from typing import Any, Final, Protocol

from durable_graph.errors import GraphValueError, SerializationError, SignatureError
from durable_graph.store.serde import Serializer

__all__ = [
    "ENV_KEY",
    "ENV_KEYS",
    "ENV_KEY_ID",
    "Codec",
    "SignedSerializer",
    "SigningCodec",
]

ENV_KEY: Final = "DURABLE_GRAPH_SECRET_KEY"
ENV_KEYS: Final = "DURABLE_GRAPH_SECRET_KEYS"
ENV_KEY_ID: Final = "DURABLE_GRAPH_SECRET_KEY_ID"

_VERSION: Final = 0xD1
_FLAG_ZLIB: Final = 0x01
_KNOWN_FLAGS: Final = _FLAG_ZLIB
_MAC_SIZE: Final = hashlib.sha256().digest_size
# version + key id length + (at least one key id byte) + flags + MAC
_MIN_SIZE: Final = 1 + 1 + 1 + 1 + _MAC_SIZE
_SIGNED_TAG: Final = "signed"
_DEFAULT_KEY_ID: Final = "k1"
_HOW_TO_SET = (
    f"set {ENV_KEY} to a long random secret, e.g. the output of "
    "`python -c 'import secrets; print(secrets.token_hex(32))'` "
    f"(optionally with {ENV_KEY_ID}), or {ENV_KEYS}='id1:secret1,id2:secret2' "
    "to keep older keys readable while rotating"
)


class Codec(Protocol):
    """Turns bytes into bytes and back; ``decode`` refuses what ``encode`` did not make."""

    def encode(self, data: bytes) -> bytes:
        """Wrap ``data`` for storage or transport."""
        ...

    def decode(self, envelope: bytes) -> bytes:
        """Unwrap what ``encode`` produced; raises ``SignatureError`` otherwise."""
        ...


def _key_id_bytes(key_id: str) -> bytes:
    """The key id as stored in envelopes; GraphValueError if it cannot be."""
    if not isinstance(key_id, str) or not key_id:
        raise GraphValueError(f"a signing key id must be a non-empty string, got {key_id!r}")
    raw = key_id.encode("utf-8")
    if len(raw) > 255:
        raise GraphValueError(f"signing key id {key_id[:32]!r}... is over 255 bytes")
    return raw


def _secret_bytes(secret: str | bytes, key_id: str) -> bytes:
    """A secret as HMAC key bytes; the error names the key id, never the secret."""
    if isinstance(secret, str):
        secret = secret.encode("utf-8")
    if not isinstance(secret, bytes | bytearray) or not secret:
        raise GraphValueError(f"signing key {key_id!r} must be non-empty str or bytes")
    return bytes(secret)


class SigningCodec:
    """Signs bytes with HMAC-SHA256 under a named key, compressing large ones.

    Args:
        keys: every key id this codec accepts, mapped to its secret bytes.
        active_key_id: the key ``encode`` signs with; must be in ``keys``.
        compress_over: zlib-compress bodies longer than this many bytes
            (kept only when smaller); ``None`` never compresses.
    """

    def __init__(
        self,
        keys: Mapping[str, bytes],
        active_key_id: str,
        *,
        compress_over: int | None = 4096,
    ) -> None:
        if not keys:
            raise GraphValueError(f"SigningCodec needs at least one key; {_HOW_TO_SET}")
        if compress_over is not None and compress_over < 0:
            raise GraphValueError(f"compress_over must be >= 0 or None, got {compress_over}")
        # A keyed HMAC object per id, copied per message, so the key schedule runs once.
        self._macs: dict[str, hmac.HMAC] = {}
        for kid, secret in keys.items():
            _key_id_bytes(kid)  # validates: every id must fit in an envelope
            self._macs[kid] = hmac.new(_secret_bytes(secret, kid), digestmod=hashlib.sha256)
        if active_key_id not in self._macs:
            raise GraphValueError(
                f"active signing key id {active_key_id!r} is not among the keys "
                f"{sorted(self._macs)}"
            )
        self.active_key_id = active_key_id
        self.compress_over = compress_over
        self._header_prefix = bytes([_VERSION]) + _length_prefixed(_key_id_bytes(active_key_id))

    @property
    def key_ids(self) -> frozenset[str]:
        """The key ids ``decode`` accepts."""
        return frozenset(self._macs)

    def __repr__(self) -> str:
        # Never print secrets: the repr ends up in logs and tracebacks.
        return (
            f"SigningCodec(key_ids={sorted(self._macs)}, active_key_id={self.active_key_id!r}, "
            f"compress_over={self.compress_over})"
        )

    @classmethod
    def from_secret(cls, secret: str | bytes, key_id: str = _DEFAULT_KEY_ID) -> SigningCodec:
        """A codec with one key, for the common case of a single shared secret."""
        return cls({key_id: _secret_bytes(secret, key_id)}, key_id)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SigningCodec:
        """A codec from ``DURABLE_GRAPH_SECRET_KEY(S)``; GraphValueError saying what to set.

        ``DURABLE_GRAPH_SECRET_KEY`` is the active secret, under the id in
        ``DURABLE_GRAPH_SECRET_KEY_ID`` (default ``k1``). ``DURABLE_GRAPH_SECRET_KEYS``
        (``id1:secret1,id2:secret2``) adds keys that still verify; without a
        single key, the active one is ``DURABLE_GRAPH_SECRET_KEY_ID`` or the first listed.
        """
        env = os.environ if environ is None else environ
        keys, active = _keys_from_env(env)
        return cls(keys, active)

    def encode(self, data: bytes) -> bytes:
        """Sign (and maybe compress) ``data`` under the active key."""
        body, flags = bytes(data), 0
        if self.compress_over is not None and len(body) > self.compress_over:
            packed = zlib.compress(body)
            if len(packed) < len(body):
                body, flags = packed, _FLAG_ZLIB
        header = self._header_prefix + bytes([flags])
        mac = self._macs[self.active_key_id].copy()
        mac.update(header)
        mac.update(body)
        return header + mac.digest() + body

    def decode(self, envelope: bytes) -> bytes:
        """Verify ``envelope`` and return its data; SignatureError if it does not verify.

        Nothing is decompressed or returned until the MAC has matched, so a
        forged body never reaches zlib, let alone a deserializer.
        """
        key_id, header, mac, body = _split(envelope)
        proto = self._macs.get(key_id)
        if proto is None:
            raise SignatureError(
                f"payload is signed with unknown key id {key_id!r}; this codec knows "
                f"{sorted(self._macs)} (add the old key to {ENV_KEYS} while rotating)"
            )
        expected = proto.copy()
        expected.update(header)
        expected.update(body)
        if not hmac.compare_digest(expected.digest(), mac):
            raise SignatureError(
                f"payload signature does not verify under key id {key_id!r}: "
                "the data was altered or signed with a different secret"
            )
        return _unwrap_body(header[-1], body)


def _length_prefixed(raw: bytes) -> bytes:
    return bytes([len(raw)]) + raw


def _split(envelope: Any) -> tuple[str, bytes, bytes, bytes]:
    """(key id, signed header, MAC, body) of an envelope; SignatureError if malformed."""
    if envelope is None:
        raise SignatureError("missing payload: expected a signed envelope, got None")
    if not isinstance(envelope, bytes | bytearray | memoryview):
        raise SignatureError(f"expected a signed envelope as bytes, got {type(envelope).__name__}")
    data = bytes(envelope)
    if len(data) < _MIN_SIZE:
        raise SignatureError(
            f"truncated signed envelope: {len(data)} bytes, at least {_MIN_SIZE} needed"
        )
    if data[0] != _VERSION:
        raise SignatureError(
            f"not a signed envelope: version byte is 0x{data[0]:02x}, expected 0x{_VERSION:02x}"
        )
    id_len = data[1]
    mac_at = 2 + id_len + 1
    if id_len == 0 or len(data) < mac_at + _MAC_SIZE:
        raise SignatureError(
            f"truncated or garbled signed envelope: key id length {id_len} "
            f"does not fit in {len(data)} bytes"
        )
    raw_id = data[2 : 2 + id_len]
    key_id = raw_id.decode("utf-8", errors="backslashreplace")
    return key_id, data[:mac_at], data[mac_at : mac_at + _MAC_SIZE], data[mac_at + _MAC_SIZE :]


def _unwrap_body(flags: int, body: bytes) -> bytes:
    """The data of a verified body; an error here means a newer or broken writer."""
    if flags & ~_KNOWN_FLAGS:
        raise SerializationError(
            f"signed envelope has unknown flags 0x{flags:02x}; "
            "it was written by a newer durable_graph"
        )
    if not flags & _FLAG_ZLIB:
        return body
    try:
        return zlib.decompress(body)
    except zlib.error as exc:
        raise SerializationError(f"signed envelope body does not decompress: {exc}") from exc


def _parse_key_list(text: str) -> dict[str, bytes]:
    """``id1:secret1,id2:secret2`` as a dict; errors name entries, never secrets."""
    keys: dict[str, bytes] = {}
    for index, raw_entry in enumerate(text.split(","), start=1):
        entry = raw_entry.strip()
        if not entry:
            continue
        kid, sep, secret = entry.partition(":")
        kid = kid.strip()
        if not sep or not kid or not secret:
            raise GraphValueError(
                f"{ENV_KEYS} entry #{index} is not 'key_id:secret' "
                f"(key ids may not contain ':' or ',' and secrets may not be empty)"
            )
        if kid in keys:
            raise GraphValueError(f"{ENV_KEYS} lists key id {kid!r} twice")
        keys[kid] = _secret_bytes(secret, kid)
    return keys


def _keys_from_env(env: Mapping[str, str]) -> tuple[dict[str, bytes], str]:
    """(keys, active key id) from the environment; GraphValueError saying what to set."""
    secret = env.get(ENV_KEY, "")
    chosen_id = env.get(ENV_KEY_ID, "").strip()
    keys = _parse_key_list(env.get(ENV_KEYS, ""))
    if secret:
        active = chosen_id or _DEFAULT_KEY_ID
        if active in keys and keys[active] != secret.encode("utf-8"):
            raise GraphValueError(
                f"key id {active!r} has one secret in {ENV_KEY} and another in {ENV_KEYS}"
            )
        keys[active] = _secret_bytes(secret, active)
        return keys, active
    if not keys:
        raise GraphValueError(f"no signing key is configured: {_HOW_TO_SET}")
    active = chosen_id or next(iter(keys))
    if active not in keys:
        raise GraphValueError(
            f"{ENV_KEY_ID}={active!r} is not among the key ids in {ENV_KEYS}: {sorted(keys)}"
        )
    return keys, active


class SignedSerializer:
    """A Serializer that signs another serializer's output, so readers verify first.

    ``dumps_typed`` wraps the inner (tag, bytes) pair, tag included, in one
    envelope under the tag ``"signed"``. ``loads_typed`` refuses anything else and
    hands bytes to the inner serializer only after the MAC verified: a forged
    ``pickle`` payload is never unpickled.
    """

    def __init__(self, serde: Serializer, codec: Codec) -> None:
        self.serde = serde
        self.codec = codec

    def dumps_typed(self, obj: Any) -> tuple[str, bytes]:
        """Encode ``obj`` with the inner serializer, then sign tag and bytes together."""
        tag, payload = self.serde.dumps_typed(obj)
        raw_tag = tag.encode("utf-8")
        if len(raw_tag) > 255:
            raise SerializationError(f"serializer tag {tag[:32]!r}... is over 255 bytes")
        return _SIGNED_TAG, self.codec.encode(_length_prefixed(raw_tag) + payload)

    def loads_typed(self, data: tuple[str, bytes]) -> Any:
        """Verify, then decode with the inner serializer; SignatureError if unsigned."""
        tag, envelope = data
        if tag != _SIGNED_TAG:
            raise SignatureError(
                f"refusing an unsigned payload (format {tag!r}): this store requires "
                f"format {_SIGNED_TAG!r}"
            )
        inner = self.codec.decode(envelope)
        if not inner or len(inner) < 1 + inner[0]:
            raise SerializationError("signed payload has no inner format tag")
        inner_tag = inner[1 : 1 + inner[0]].decode("utf-8", errors="backslashreplace")
        return self.serde.loads_typed((inner_tag, inner[1 + inner[0] :]))
