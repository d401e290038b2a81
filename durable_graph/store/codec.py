"""The bytes layer under the serializer: HMAC-signed, optionally compressed envelopes.

Checkpoints and task results cross process boundaries (Redis, Celery) and may be
unpickled on the way back, so every byte string that leaves the process is signed
and checked before anything looks inside it. The layout, all integers big-endian::

    offset  size  field
    0       1     version byte (0xD2; 0xD1 before places were bound), a magic number
    1       1     n = length of the key id in bytes (1..255)
    2       n     key id, UTF-8
    2+n     1     flags (bit 0: body is zlib-compressed)
    3+n     32    HMAC-SHA256(key, bytes 0 .. 3+n) || len(place) || place || body)
    35+n    ...   body

The MAC covers the version, key id and flags as well as the body, so none of them
can be swapped without detection. It also covers a *place* (associated data, not
stored in the envelope): the store passes where the bytes belong (thread,
namespace, channel and version of a value; the checkpoint and slot of a write), so
bytes copied to another place do not verify there. Version 0xD1 envelopes (written
before places were bound; their MAC covers no place) still verify while
``accept_unbound`` is true, so old threads resume; set it false (or
``DURABLE_GRAPH_REFUSE_UNBOUND=1``) once no old thread is left. ``decode`` compares MACs with
``hmac.compare_digest`` before it decompresses or returns a byte. Several keys may
be known at once so that keys rotate: new envelopes use the active key, older ones
still verify under the key id they name. (Temporal's ``PayloadCodec`` is the model.)

A signature proves that a holder of the key wrote the bytes *for that place*;
which place to ask for is the store's job (``durable_graph.store.encoding``).
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
    "ENV_REFUSE_UNBOUND",
    "HOW_TO_GENERATE",
    "MIN_SECRET_BYTES",
    "Codec",
    "SignedSerializer",
    "SigningCodec",
]

ENV_KEY: Final = "DURABLE_GRAPH_SECRET_KEY"
ENV_KEYS: Final = "DURABLE_GRAPH_SECRET_KEYS"
ENV_KEY_ID: Final = "DURABLE_GRAPH_SECRET_KEY_ID"
ENV_REFUSE_UNBOUND: Final = "DURABLE_GRAPH_REFUSE_UNBOUND"
MIN_SECRET_BYTES: Final = 32
"""Shortest secret a worker accepts (HMAC-SHA256 keys should carry 256 bits)."""

_VERSION: Final = 0xD2
_VERSION_UNBOUND: Final = 0xD1
_PLACE_LEN: Final = 4
_FLAG_ZLIB: Final = 0x01
_KNOWN_FLAGS: Final = _FLAG_ZLIB
_MAC_SIZE: Final = hashlib.sha256().digest_size
# version + key id length + (at least one key id byte) + flags + MAC
_MIN_SIZE: Final = 1 + 1 + 1 + 1 + _MAC_SIZE
_SIGNED_TAG: Final = "signed"
_DEFAULT_KEY_ID: Final = "k1"
HOW_TO_GENERATE: Final = "python -c 'import secrets; print(secrets.token_hex(32))'"
_HOW_TO_SET = (
    f"set {ENV_KEY} to a long random secret, e.g. the output of "
    f"`{HOW_TO_GENERATE}` "
    f"(optionally with {ENV_KEY_ID}), or {ENV_KEYS}='id1:secret1,id2:secret2' "
    "to keep older keys readable while rotating"
)


class Codec(Protocol):
    """Turns bytes into bytes and back; ``decode`` refuses what ``encode`` did not make."""

    def encode(self, data: bytes, place: bytes = b"") -> bytes:
        """Wrap ``data`` for storage or transport at ``place``."""
        ...

    def decode(self, envelope: bytes, place: bytes = b"") -> bytes:
        """Unwrap what ``encode`` produced for ``place``; ``SignatureError`` otherwise."""
        ...

    def is_bound(self, envelope: bytes) -> bool:
        """Whether ``envelope`` was signed for a place (not an old, unbound one)."""
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
        accept_unbound: also verify envelopes written before places were bound
            (version 0xD1), so threads stored by older releases resume.
    """

    def __init__(
        self,
        keys: Mapping[str, bytes],
        active_key_id: str,
        *,
        compress_over: int | None = 4096,
        accept_unbound: bool = True,
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
        self.accept_unbound = accept_unbound
        self.shortest_secret = min(len(_secret_bytes(s, k)) for k, s in keys.items())
        """Length in bytes of the shortest known secret (workers refuse short ones)."""
        self._header_prefix = bytes([_VERSION]) + _length_prefixed(_key_id_bytes(active_key_id))

    @property
    def key_ids(self) -> frozenset[str]:
        """The key ids ``decode`` accepts."""
        return frozenset(self._macs)

    def fingerprint(self, key_id: str | None = None) -> str:
        """A public check value of a key (an HMAC of a constant; reveals nothing of it).

        Producers compare theirs with the one workers publish, so a producer with
        another secret under the same key id fails at once instead of waiting.
        """
        mac = self._macs[key_id or self.active_key_id].copy()
        mac.update(b"durable-graph key fingerprint")
        return mac.hexdigest()[:32]

    def __repr__(self) -> str:
        # Never print secrets: the repr ends up in logs and tracebacks.
        return (
            f"SigningCodec(key_ids={sorted(self._macs)}, active_key_id={self.active_key_id!r}, "
            f"compress_over={self.compress_over}, accept_unbound={self.accept_unbound})"
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
        refuse = env.get(ENV_REFUSE_UNBOUND, "").strip().lower() in ("1", "true", "yes")
        return cls(keys, active, accept_unbound=not refuse)

    def encode(self, data: bytes, place: bytes = b"") -> bytes:
        """Sign (and maybe compress) ``data`` for ``place`` under the active key."""
        body, flags = bytes(data), 0
        if self.compress_over is not None and len(body) > self.compress_over:
            packed = zlib.compress(body)
            if len(packed) < len(body):
                body, flags = packed, _FLAG_ZLIB
        header = self._header_prefix + bytes([flags])
        return header + self._mac(self._macs[self.active_key_id], header, place, body) + body

    def decode(self, envelope: bytes, place: bytes = b"") -> bytes:
        """Verify ``envelope`` for ``place`` and return its data; SignatureError if not.

        Nothing is decompressed or returned until the MAC has matched, so a
        forged body never reaches zlib, let alone a deserializer.
        """
        key_id, header, mac, body = _split(envelope)
        if header[0] == _VERSION_UNBOUND and not self.accept_unbound:
            raise SignatureError(
                "payload was signed before signatures were bound to their place "
                f"(format 0x{_VERSION_UNBOUND:02x}) and this codec refuses those "
                f"({ENV_REFUSE_UNBOUND} is set)"
            )
        proto = self._macs.get(key_id)
        if proto is None:
            raise SignatureError(
                f"payload is signed with unknown key id {key_id!r}; this codec knows "
                f"{sorted(self._macs)} (add the old key to {ENV_KEYS} while rotating)"
            )
        expected = self._mac(proto, header, place, body)
        if not hmac.compare_digest(expected, mac):
            raise SignatureError(
                f"payload signature does not verify under key id {key_id!r}: the data "
                "was altered, signed with a different secret, or written for another place"
            )
        return _unwrap_body(header[-1], body)

    def is_bound(self, envelope: bytes) -> bool:
        """Whether ``envelope`` has the bound format (its MAC covers a place)."""
        return bool(envelope) and bytes(envelope[:1]) == bytes([_VERSION])

    @staticmethod
    def _mac(proto: hmac.HMAC, header: bytes, place: bytes, body: bytes) -> bytes:
        """The MAC of an envelope; unbound (0xD1) envelopes cover no place."""
        mac = proto.copy()
        mac.update(header)
        if header[0] != _VERSION_UNBOUND:
            mac.update(len(place).to_bytes(_PLACE_LEN, "big"))
            mac.update(place)
        mac.update(body)
        return mac.digest()


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
    if data[0] not in (_VERSION, _VERSION_UNBOUND):
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
        return self.dumps_bound(obj, b"")

    def loads_typed(self, data: tuple[str, bytes]) -> Any:
        """Verify, then decode with the inner serializer; SignatureError if unsigned."""
        return self.loads_bound(data, b"")

    def dumps_bound(self, obj: Any, place: bytes) -> tuple[str, bytes]:
        """``dumps_typed`` whose signature holds only at ``place`` (see the module doc)."""
        tag, payload = self.serde.dumps_typed(obj)
        raw_tag = tag.encode("utf-8")
        if len(raw_tag) > 255:
            raise SerializationError(f"serializer tag {tag[:32]!r}... is over 255 bytes")
        return _SIGNED_TAG, self.codec.encode(_length_prefixed(raw_tag) + payload, place)

    def is_bound(self, data: tuple[str, bytes]) -> bool:
        """Whether ``data`` was signed for a place (an old unbound value is not)."""
        return data[0] == _SIGNED_TAG and self.codec.is_bound(data[1])

    def sign(self, place: bytes) -> bytes:
        """A signature of ``place`` alone: a record whose every byte is the place."""
        return self.codec.encode(b"", place)

    def verify(self, signature: bytes, place: bytes) -> None:
        """Check what ``sign`` made; SignatureError if it does not verify."""
        self.codec.decode(signature, place)

    def loads_bound(self, data: tuple[str, bytes], place: bytes) -> Any:
        """Verify ``data`` for ``place``, then decode it; SignatureError if it fails."""
        tag, envelope = data
        if tag != _SIGNED_TAG:
            raise SignatureError(
                f"refusing an unsigned payload (format {tag!r}): this store requires "
                f"format {_SIGNED_TAG!r}"
            )
        inner = self.codec.decode(envelope, place)
        if not inner or len(inner) < 1 + inner[0]:
            raise SerializationError("signed payload has no inner format tag")
        inner_tag = inner[1 : 1 + inner[0]].decode("utf-8", errors="backslashreplace")
        return self.serde.loads_typed((inner_tag, inner[1 + inner[0] :]))
