"""The signing codec: nothing unsigned or altered gets past decode, keys rotate."""

from __future__ import annotations

import os
import pickle
import zlib
from pathlib import Path
from typing import Any

import cloudpickle
import pytest
from hypothesis import given
from hypothesis import strategies as st

from durable_graph.errors import (
    GraphValueError,
    SerializationError,
    SignatureError,
)
from durable_graph.store.codec import (
    ENV_KEY,
    ENV_KEY_ID,
    ENV_KEYS,
    SignedSerializer,
    SigningCodec,
)
from durable_graph.store.serde import TypedSerializer

SECRET = b"s3cret-key-material-0123456789abcdef"
OTHER = b"another-secret-entirely-9876543210"


def codec(**kw: Any) -> SigningCodec:
    return SigningCodec({"k1": SECRET}, "k1", **kw)


def flags_of(envelope: bytes) -> int:
    return envelope[2 + envelope[1]]


# --- round trips -----------------------------------------------------------


@pytest.mark.parametrize(
    "data", [b"", b"x", b"hello world", bytes(range(256)) * 64, b"a" * 100_000]
)
def test_round_trip(data: bytes) -> None:
    c = codec()
    assert c.decode(c.encode(data)) == data


@given(st.binary(max_size=10_000), st.sampled_from([None, 0, 16, 4096]))
def test_round_trip_any_bytes(data: bytes, compress_over: int | None) -> None:
    c = codec(compress_over=compress_over)
    assert c.decode(c.encode(data)) == data


def test_accepts_bytearray_and_memoryview() -> None:
    c = codec()
    env = c.encode(b"payload")
    assert c.decode(bytearray(env)) == b"payload"  # type: ignore[arg-type]
    assert c.decode(memoryview(env)) == b"payload"  # type: ignore[arg-type]


def test_envelope_is_self_describing() -> None:
    env = SigningCodec({"rotated-2024": SECRET}, "rotated-2024").encode(b"abc")
    assert env[0] == 0xD2
    assert env[1] == len(b"rotated-2024")
    assert env[2 : 2 + env[1]] == b"rotated-2024"
    assert env.endswith(b"abc")


# --- compression -----------------------------------------------------------


def test_large_compressible_data_is_compressed() -> None:
    data = b"checkpoint " * 2000
    env = codec().encode(data)
    assert flags_of(env) & 1
    assert len(env) < len(data) // 10
    assert codec().decode(env) == data


def test_small_data_is_not_compressed() -> None:
    env = codec().encode(b"a" * 4096)  # at the threshold, not over it
    assert flags_of(env) == 0
    assert env.endswith(b"a" * 4096)


def test_compression_can_be_disabled() -> None:
    env = codec(compress_over=None).encode(b"b" * 100_000)
    assert flags_of(env) == 0
    assert codec().decode(env) == b"b" * 100_000


def test_incompressible_data_is_kept_raw() -> None:
    data = os.urandom(20_000)
    env = codec(compress_over=0).encode(data)
    assert flags_of(env) == 0
    assert env.endswith(data)


def test_unknown_flag_from_newer_writer_is_reported_after_verification() -> None:
    import hashlib
    import hmac

    header = bytes([0xD1, 2]) + b"k1" + bytes([0x80])
    mac = hmac.new(SECRET, header + b"body", hashlib.sha256).digest()
    with pytest.raises(SerializationError, match="unknown flags"):
        codec().decode(header + mac + b"body")


# --- tampering and malformed envelopes -------------------------------------


@pytest.mark.parametrize("data", [b"short payload", b"compress me " * 1000])
def test_any_flipped_bit_is_rejected(data: bytes) -> None:
    c = codec()
    env = c.encode(data)
    for index in range(len(env)):
        for bit in (0x01, 0x80):
            bad = bytearray(env)
            bad[index] ^= bit
            with pytest.raises(SignatureError):
                c.decode(bytes(bad))


def test_every_truncation_is_rejected() -> None:
    c = codec()
    env = c.encode(b"some payload to cut short")
    for size in range(len(env)):
        with pytest.raises(SignatureError):
            c.decode(env[:size])


def test_appended_bytes_are_rejected() -> None:
    c = codec()
    with pytest.raises(SignatureError, match="does not verify"):
        c.decode(c.encode(b"data") + b"!")


@pytest.mark.parametrize(
    ("envelope", "message"),
    [
        (None, "missing payload"),
        ("text", "as bytes"),
        (b"", "truncated"),
        (b"\xd1\x02k1", "truncated"),
        (b"\x80\x04K\x95" + b"\x00" * 60, "not a signed envelope"),
        (b"\xd1\xff" + b"\x00" * 60, "key id length 255"),
        (b"\xd1\x00" + b"\x00" * 60, "key id length 0"),
    ],
)
def test_garbled_envelopes_are_rejected(envelope: Any, message: str) -> None:
    with pytest.raises(SignatureError, match=message):
        codec().decode(envelope)


def test_wrong_secret_is_rejected_naming_the_key_id_not_the_key() -> None:
    env = SigningCodec({"k1": OTHER}, "k1").encode(b"forged")
    with pytest.raises(SignatureError, match="'k1'") as info:
        codec().decode(env)
    assert SECRET.decode() not in str(info.value)
    assert OTHER.decode() not in str(info.value)


def test_unknown_key_id_is_rejected() -> None:
    env = SigningCodec({"k9": SECRET}, "k9").encode(b"data")
    with pytest.raises(SignatureError, match="unknown key id 'k9'"):
        codec().decode(env)


def test_repr_hides_secrets() -> None:
    text = repr(SigningCodec({"k1": SECRET, "k2": OTHER}, "k2"))
    assert "k1" in text and "k2" in text
    assert SECRET.decode() not in text and OTHER.decode() not in text


# --- rotation ----------------------------------------------------------------


def test_rotation_old_key_decodes_new_key_encodes() -> None:
    old = SigningCodec({"k1": SECRET}, "k1")
    new = SigningCodec({"k1": SECRET, "k2": OTHER}, "k2")
    old_env = old.encode(b"written before rotation")
    assert new.decode(old_env) == b"written before rotation"
    new_env = new.encode(b"written after")
    assert new_env[2 : 2 + new_env[1]] == b"k2"
    assert new.decode(new_env) == b"written after"
    with pytest.raises(SignatureError, match="unknown key id 'k2'"):
        old.decode(new_env)
    assert new.key_ids == {"k1", "k2"}


def test_key_id_in_envelope_cannot_be_swapped() -> None:
    # Same secret under two ids: the MAC covers the id, so relabelling fails.
    c = SigningCodec({"k1": SECRET, "k2": SECRET}, "k1")
    env = c.encode(b"data")
    relabelled = env[:2] + b"k2" + env[4:]
    with pytest.raises(SignatureError, match="does not verify"):
        c.decode(relabelled)


# --- constructor validation --------------------------------------------------


@pytest.mark.parametrize(
    ("keys", "active", "kw", "message"),
    [
        ({}, "k1", {}, "at least one key"),
        ({"k1": SECRET}, "k2", {}, "not among the keys"),
        ({"": SECRET}, "", {}, "non-empty string"),
        ({"x" * 256: SECRET}, "x" * 256, {}, "over 255 bytes"),
        ({"k1": b""}, "k1", {}, "non-empty"),
        ({"k1": SECRET}, "k1", {"compress_over": -1}, "compress_over"),
    ],
)
def test_bad_configuration_raises(
    keys: dict[str, bytes], active: str, kw: dict[str, Any], message: str
) -> None:
    with pytest.raises(GraphValueError, match=message):
        SigningCodec(keys, active, **kw)


def test_from_secret_accepts_str_and_bytes() -> None:
    a = SigningCodec.from_secret("passphrase")
    b = SigningCodec.from_secret(b"passphrase", key_id="k1")
    assert a.active_key_id == "k1"
    assert b.decode(a.encode(b"x")) == b"x"
    assert SigningCodec.from_secret("p", key_id="prod").active_key_id == "prod"


# --- environment ----------------------------------------------------------


def test_from_env_single_key_defaults_to_k1() -> None:
    c = SigningCodec.from_env({ENV_KEY: "abc"})
    assert c.active_key_id == "k1"
    assert SigningCodec.from_secret("abc").decode(c.encode(b"x")) == b"x"


def test_from_env_single_key_with_id() -> None:
    c = SigningCodec.from_env({ENV_KEY: "abc", ENV_KEY_ID: "prod-2"})
    assert c.active_key_id == "prod-2"


def test_from_env_key_list_first_is_active() -> None:
    c = SigningCodec.from_env({ENV_KEYS: "new:s2, old:s1:with:colons"})
    assert c.active_key_id == "new"
    old = SigningCodec.from_secret("s1:with:colons", key_id="old")
    assert c.decode(old.encode(b"x")) == b"x"


def test_from_env_key_list_with_chosen_active() -> None:
    c = SigningCodec.from_env({ENV_KEYS: "a:1,b:2", ENV_KEY_ID: "b"})
    assert c.active_key_id == "b"


def test_from_env_single_key_plus_old_keys_rotates() -> None:
    c = SigningCodec.from_env({ENV_KEY: "new", ENV_KEY_ID: "k2", ENV_KEYS: "k1:old"})
    assert c.active_key_id == "k2"
    assert c.key_ids == {"k1", "k2"}
    assert c.decode(SigningCodec.from_secret("old").encode(b"x")) == b"x"


def test_from_env_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_KEY, "from-os")
    monkeypatch.delenv(ENV_KEYS, raising=False)
    monkeypatch.delenv(ENV_KEY_ID, raising=False)
    assert SigningCodec.from_env().key_ids == {"k1"}


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({}, f"no signing key is configured: set {ENV_KEY}"),
        ({ENV_KEY: ""}, "no signing key is configured"),
        ({ENV_KEYS: " , "}, "no signing key is configured"),
        ({ENV_KEYS: "k1:hunter2,justasecret"}, "entry #2 is not 'key_id:secret'"),
        ({ENV_KEYS: ":hunter2"}, "entry #1"),
        ({ENV_KEYS: "k1:"}, "entry #1"),
        ({ENV_KEYS: "k1:hunter2,k1:hunter3"}, "key id 'k1' twice"),
        ({ENV_KEYS: "k1:hunter2", ENV_KEY_ID: "k7"}, "'k7' is not among"),
        ({ENV_KEY: "hunter2", ENV_KEYS: "k1:hunter3"}, "one secret in"),
    ],
)
def test_from_env_errors_say_what_to_set(environ: dict[str, str], message: str) -> None:
    with pytest.raises(GraphValueError, match=message) as info:
        SigningCodec.from_env(environ)
    assert "hunter" not in str(info.value)
    assert isinstance(info.value, ValueError)


# --- SignedSerializer ----------------------------------------------------------


def signed(key: bytes = SECRET) -> SignedSerializer:
    return SignedSerializer(TypedSerializer(), SigningCodec({"k1": key}, "k1"))


class Opaque:
    """A value msgpack cannot carry, so the inner serializer pickles it."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Opaque) and other.n == self.n

    def __hash__(self) -> int:
        return hash(self.n)


@pytest.mark.parametrize(
    "value", [None, b"raw", 42, "text", {"a": [1, 2, (3, 4)]}, {1, 2}, Opaque(7)]
)
def test_signed_serializer_round_trip(value: Any) -> None:
    s = signed()
    tag, data = s.dumps_typed(value)
    assert tag == "signed"
    assert s.loads_typed((tag, data)) == value


def test_signed_serializer_refuses_unsigned_payloads() -> None:
    inner = TypedSerializer().dumps_typed({"a": 1})
    with pytest.raises(SignatureError, match="unsigned payload"):
        signed().loads_typed(inner)


def test_signed_serializer_rejects_another_secret() -> None:
    data = signed(OTHER).dumps_typed({"a": 1})
    with pytest.raises(SignatureError):
        signed().loads_typed(data)


def test_signed_serializer_signs_the_inner_tag() -> None:
    # Relabel the inner tag from msgpack to pickle: the MAC must catch it.
    c = SigningCodec({"k1": SECRET}, "k1")
    tag, env = SignedSerializer(TypedSerializer(), c).dumps_typed({"a": 1})
    inner = c.decode(env)
    assert inner.startswith(b"\x07msgpack")
    body_at = len(env) - len(inner)
    forged = env[:body_at] + b"\x06pickle" + inner[8:]
    with pytest.raises(SignatureError):
        signed().loads_typed((tag, forged))


# --- a forged pickle is never unpickled --------------------------------------

TRIPPED: list[str] = []


def _trip(marker: str) -> None:
    """Runs only if a pickle is loaded: leaves a file and flips a global."""
    Path(marker).write_text("unpickled")
    TRIPPED.append(marker)


class Armed:
    """Unpickling this calls ``_trip``, standing in for an attacker's payload."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (_trip, (self.marker,))


def _armed_payload(tmp_path: Path, name: str) -> tuple[Path, bytes]:
    marker = tmp_path / name
    return marker, cloudpickle.dumps(Armed(marker))


def test_armed_payload_is_really_armed(tmp_path: Path) -> None:
    """Control: a correctly signed armed payload does trip, so the tests below mean something."""
    marker, payload = _armed_payload(tmp_path, "control")
    c = SigningCodec({"k1": SECRET}, "k1")
    env = c.encode(b"\x06pickle" + payload)
    SignedSerializer(TypedSerializer(), c).loads_typed(("signed", env))
    assert marker.exists()
    TRIPPED.clear()


def test_pickle_signed_with_wrong_key_is_never_unpickled(tmp_path: Path) -> None:
    marker, payload = _armed_payload(tmp_path, "wrong-key")
    forged = SigningCodec({"k1": OTHER}, "k1").encode(b"\x06pickle" + payload)
    with pytest.raises(SignatureError):
        signed().loads_typed(("signed", forged))
    assert not marker.exists()
    assert TRIPPED == []


def test_pickle_spliced_into_valid_envelope_is_never_unpickled(tmp_path: Path) -> None:
    marker, payload = _armed_payload(tmp_path, "spliced")
    c = SigningCodec({"k1": SECRET}, "k1", compress_over=None)
    _, env = SignedSerializer(TypedSerializer(), c).dumps_typed(Opaque(1))
    body_at = len(env) - len(c.decode(env))
    forged = env[:body_at] + b"\x06pickle" + payload  # keeps the genuine MAC
    with pytest.raises(SignatureError):
        SignedSerializer(TypedSerializer(), c).loads_typed(("signed", forged))
    assert not marker.exists()
    assert TRIPPED == []


def test_compressed_forgery_never_reaches_zlib_or_pickle(tmp_path: Path) -> None:
    marker, payload = _armed_payload(tmp_path, "zlib")
    good = codec(compress_over=0).encode(b"x" * 1000)
    assert flags_of(good) & 1
    body_at = len(good) - len(zlib.compress(b"x" * 1000))
    forged = good[:body_at] + zlib.compress(b"\x06pickle" + payload)
    with pytest.raises(SignatureError):
        signed().loads_typed(("signed", forged))
    assert not marker.exists()
    assert TRIPPED == []


def test_raw_pickle_under_signed_tag_is_never_unpickled(tmp_path: Path) -> None:
    marker, payload = _armed_payload(tmp_path, "raw")
    for data in (payload, pickle.dumps(Armed(marker))):
        with pytest.raises(SignatureError):
            signed().loads_typed(("signed", data))
    assert not marker.exists()
    assert TRIPPED == []


# --- places (associated data) and the unbound format -----------------------


def test_a_signature_holds_only_at_its_place() -> None:
    c = codec()
    env = c.encode(b"value", b"thread-a/channel-x/v3")
    assert c.decode(env, b"thread-a/channel-x/v3") == b"value"
    for other in (b"thread-b/channel-x/v3", b"thread-a/channel-y/v3", b"thread-a/channel-x/v2",
                  b""):
        with pytest.raises(SignatureError, match="written for another place"):
            c.decode(env, other)


def test_unbound_envelopes_of_older_releases_verify_until_refused() -> None:
    import hashlib
    import hmac

    header = bytes([0xD1, 2]) + b"k1" + bytes([0])
    old = header + hmac.new(SECRET, header + b"old", hashlib.sha256).digest() + b"old"
    assert codec().decode(old, b"any place") == b"old"
    assert not codec().is_bound(old) and codec().is_bound(codec().encode(b"x"))
    strict = codec(accept_unbound=False)
    with pytest.raises(SignatureError, match="before signatures were bound"):
        strict.decode(old)
    env = {ENV_KEY: SECRET.decode(), "DURABLE_GRAPH_REFUSE_UNBOUND": "1"}
    assert not SigningCodec.from_env(env).accept_unbound


def test_fingerprints_tell_keys_apart_without_revealing_them() -> None:
    a, b = codec(), SigningCodec({"k1": OTHER}, "k1")
    assert a.fingerprint() == codec().fingerprint() != b.fingerprint()
    assert SECRET.hex() not in a.fingerprint() and len(a.fingerprint()) == 32


def test_signed_serializer_binds_values_to_their_place() -> None:
    s = SignedSerializer(TypedSerializer(), codec())
    data = s.dumps_bound({"x": 1}, b"here")
    assert s.loads_bound(data, b"here") == {"x": 1}
    with pytest.raises(SignatureError):
        s.loads_bound(data, b"there")
    with pytest.raises(SignatureError):
        s.loads_typed(data)  # no place is not its place either
    s.verify(s.sign(b"record"), b"record")
    with pytest.raises(SignatureError):
        s.verify(s.sign(b"record"), b"edited record")
