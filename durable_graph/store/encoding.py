"""Helpers every saver shares: values bound to their place, metadata filters.

Every saver encodes and decodes channel values, pending writes and checkpoint
records through ``ThreadCodec``, so the rule is written once: with a signing
serializer (``SignedSerializer``), each value's signature covers where it belongs
(store scope, thread, namespace, channel, version), each write's covers its slot
(checkpoint, task id, write index, channel) and each checkpoint record is signed
as a whole (versions, versions seen, parent, metadata, ...). A value moved to
another thread, swapped with another channel's, or a record edited to point at an
older version then fails verification at read time with a ``SignatureError``
naming the thread, channel and checkpoint. With a plain serializer nothing is
signed and nothing is checked: an unsigned embedded store trusts its file.

Records written before signatures were bound (no record signature) still load
while the codec accepts unbound envelopes, but only with unbound values, so a
bound record whose signature was stripped is refused rather than rolled back.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from json.encoder import encode_basestring_ascii
from typing import Any, Protocol, runtime_checkable

import ormsgpack

from durable_graph.errors import SerializationError, SignatureError
from durable_graph.store.serde import Serializer

__all__ = [
    "BoundSerializer",
    "ThreadCodec",
    "bound_serializer",
    "metadata_matches",
    "place_of",
]

Blob = tuple[str, bytes]


@runtime_checkable
class BoundSerializer(Protocol):
    """A serializer whose signatures cover a place (``SignedSerializer``)."""

    def dumps_bound(self, obj: Any, place: bytes) -> Blob:
        """Encode ``obj`` signed for ``place``."""
        ...

    def loads_bound(self, data: Blob, place: bytes) -> Any:
        """Decode ``data`` if it verifies for ``place``."""
        ...

    def is_bound(self, data: Blob) -> bool:
        """Whether ``data`` was signed for a place at all."""
        ...

    def sign(self, place: bytes) -> bytes:
        """A signature of ``place`` (a record's canonical bytes)."""
        ...

    def verify(self, signature: bytes, place: bytes) -> None:
        """Check a signature ``sign`` made."""
        ...


_BOUND_CLASSES: dict[type, bool] = {}


def bound_serializer(serde: Any) -> BoundSerializer | None:
    """``serde`` if it is a ``BoundSerializer``, else None; the check (a protocol
    ``isinstance``, slow: it runs on every value encoded) is made once per class,
    except for a class that makes attributes up (``__getattr__``: a proxy is what it
    wraps), checked every time."""
    kind = type(serde)
    bound = _BOUND_CLASSES.get(kind)
    if bound is None:
        bound = isinstance(serde, BoundSerializer)
        if not hasattr(kind, "__getattr__"):
            _BOUND_CLASSES[kind] = bound
    return serde if bound else None


def place_of(*parts: object) -> bytes:
    """Unambiguous bytes of a place (a JSON array: no two tuples give the same bytes).

    Places of text and plain ints (every place signed on a commit's path) are written
    here as ``json.dumps`` writes them, with its own string escaper: the same bytes
    for a fraction of its CPU."""
    out = []
    for p in parts:
        if type(p) is str:
            out.append(encode_basestring_ascii(p))  # as json.dumps writes it
        elif type(p) is int:
            out.append(int.__repr__(p))
        else:
            return json.dumps([p if isinstance(p, int | str) else str(p) for p in parts]).encode()
    return ("[" + ", ".join(out) + "]").encode()



def _record_bytes(fields: Mapping[str, Any]) -> bytes:
    """Canonical bytes of a checkpoint record's fields (sorted, typed)."""
    return ormsgpack.packb(sorted((k, v) for k, v in fields.items()))


class ThreadCodec:
    """Encode and check the values, writes and records of one thread namespace.

    Args:
        serde: the saver's serializer; binding applies when it is a BoundSerializer.
        scope: what separates stores sharing a server (the Redis key prefix).
        thread_id: the thread.
        ns: the checkpoint namespace.
    """

    def __init__(self, serde: Serializer, scope: str, thread_id: str, ns: str) -> None:
        self.serde = serde
        self.bound = bound_serializer(serde)
        self.scope, self.thread_id, self.ns = scope, thread_id, ns

    def _where(self, checkpoint_id: str | None, channel: str | None = None) -> str:
        ns = f" (namespace {self.ns!r})" if self.ns else ""
        what = f"channel {channel!r} of " if channel is not None else ""
        cp = f"checkpoint {checkpoint_id}" if checkpoint_id else "a checkpoint"
        return f"{what}{cp} of thread {self.thread_id!r}{ns}"

    def _value_place(self, channel: str, version: Any) -> bytes:
        return place_of("value", self.scope, self.thread_id, self.ns, channel, version)

    def _write_place(self, checkpoint_id: str, task_id: str, slot: int, channel: str) -> bytes:
        return place_of("write", self.scope, self.thread_id, self.ns, checkpoint_id, task_id,
                        slot, channel)

    def _record_place(self, checkpoint_id: str, fields: Mapping[str, Any]) -> bytes:
        head = place_of("checkpoint", self.scope, self.thread_id, self.ns, checkpoint_id)
        return head + _record_bytes(fields)

    # -- writing -------------------------------------------------------------

    def values(self, values: Mapping[str, Any], versions: Mapping[str, Any]) -> dict[str, Blob]:
        """Encode each channel's value for its version; the error names the channel.

        Everything is encoded before the caller stores anything, so a value the
        store cannot take leaves the store as it was (what is there, if anything).
        """
        out: dict[str, Blob] = {}
        for channel, value in values.items():
            try:
                out[channel] = self._dumps(value, self._value_place(channel, versions[channel]))
            except SerializationError as exc:
                raise SerializationError(
                    f"cannot store channel {channel!r}: a value of type "
                    f"{type(value).__qualname__} is not serializable ({exc}); "
                    "nothing of this checkpoint was written"
                ) from exc
        return out

    def write(self, checkpoint_id: str, task_id: str, slot: int, channel: str, value: Any) -> Blob:
        """Encode one pending write for its slot; the error names the channel."""
        try:
            return self._dumps(value, self._write_place(checkpoint_id, task_id, slot, channel))
        except SerializationError as exc:
            raise SerializationError(
                f"cannot store a write to channel {channel!r}: a value of type "
                f"{type(value).__qualname__} is not serializable ({exc}); nothing was written"
            ) from exc

    def sign_record(self, checkpoint_id: str, fields: Mapping[str, Any]) -> bytes | None:
        """The signature of a checkpoint record, or None when the store is unsigned."""
        if self.bound is None:
            return None
        return self.bound.sign(self._record_place(checkpoint_id, fields))

    def run_record(self, sealed: str) -> Blob | None:
        """A run record signed for this thread, or None when the store is unsigned."""
        if self.bound is None:
            return None
        return self.bound.dumps_bound(sealed, place_of("run", self.scope, self.thread_id))

    def open_run_record(self, blob: Blob) -> str:
        """The run record ``run_record`` signed; SignatureError naming the thread if not."""
        if self.bound is None:
            raise SignatureError(
                f"the run record of thread {self.thread_id!r} is signed and this store has "
                "no signing key: build it with the workers' key to read it")
        try:
            sealed = self.bound.loads_bound(blob, place_of("run", self.scope, self.thread_id))
        except SignatureError as exc:
            raise SignatureError(
                f"the run record of thread {self.thread_id!r} does not verify: it was moved "
                f"from another thread or altered ({exc}). Refused; nothing was run."
            ) from None
        return str(sealed)

    def _dumps(self, value: Any, place: bytes) -> Blob:
        if self.bound is None:
            return self.serde.dumps_typed(value)
        return self.bound.dumps_bound(value, place)

    # -- reading -------------------------------------------------------------

    def check_record(
        self, checkpoint_id: str, fields: Mapping[str, Any], signature: bytes | None
    ) -> bool:
        """Verify a record; True when it is signed, False for an old unsigned one.

        Raises SignatureError naming the checkpoint when the signature does not
        match (an edited version, parent or metadata) or the store refuses
        unsigned records.
        """
        if self.bound is None:
            return False
        if not signature:
            return False
        try:
            self.bound.verify(bytes(signature), self._record_place(checkpoint_id, fields))
        except SignatureError as exc:
            raise SignatureError(
                f"{self._where(checkpoint_id)} does not verify: its versions, parent or "
                f"metadata were altered or it was moved from elsewhere ({exc}). "
                "Refused; nothing was run."
            ) from None
        return True

    def value(
        self, checkpoint_id: str, channel: str, version: Any, blob: Blob, *, signed_record: bool
    ) -> Any:
        """Decode a channel value found at (channel, version) for ``checkpoint_id``."""
        if self.bound is None:
            return self.serde.loads_typed(blob)
        self._refuse_unbound_mix(checkpoint_id, channel, blob, signed_record)
        try:
            return self.bound.loads_bound(blob, self._value_place(channel, version))
        except SignatureError as exc:
            raise SignatureError(
                f"{self._where(checkpoint_id, channel)} does not verify at version "
                f"{version}: the value was moved from another thread or channel, rolled "
                f"back, or altered ({exc}). Refused; nothing was run."
            ) from None

    def pending(self, checkpoint_id: str, task_id: str, slot: int, channel: str, blob: Blob) -> Any:
        """Decode a pending write found in slot (task id, index) of ``checkpoint_id``.

        Writes name their checkpoint in their place, so an old unsigned record may
        carry new bound writes (a thread written by an older release, resumed).
        """
        if self.bound is None:
            return self.serde.loads_typed(blob)
        try:
            return self.bound.loads_bound(
                blob, self._write_place(checkpoint_id, task_id, slot, channel))
        except SignatureError as exc:
            raise SignatureError(
                f"pending write of task {task_id} to {self._where(checkpoint_id, channel)} "
                f"does not verify in slot {slot}: it was moved or altered ({exc}). "
                "Refused; nothing was run."
            ) from None

    def _refuse_unbound_mix(
        self, checkpoint_id: str, channel: str, blob: Blob, signed_record: bool
    ) -> None:
        """An unsigned (old) record may only carry old values: else its signature was cut."""
        assert self.bound is not None
        if not signed_record and self.bound.is_bound(blob):
            raise SignatureError(
                f"{self._where(checkpoint_id, channel)}: the checkpoint record has no "
                "signature but its values are signed for their place, so the record's "
                "signature was removed (its versions may point at older values). "
                "Refused; nothing was run."
            )


def metadata_matches(metadata: Mapping[str, Any], filter: Mapping[str, Any]) -> bool:
    """Whether ``metadata`` has every key/value of ``filter``."""
    return all(metadata.get(k) == v for k, v in filter.items())
