"""RespPacker writes exactly the bytes of redis-py's own packer, for every argument kind."""

from __future__ import annotations

from typing import Any

import pytest
from redis._parsers.encoders import Encoder
from redis.connection import PythonRespSerializer
from redis.exceptions import DataError
from redis.utils import HIREDIS_AVAILABLE

from durable_graph.store.redis.connection import client_from_url
from durable_graph.store.redis.resp import RespPacker

_ENCODER = Encoder("utf-8", "strict", False)
_REDIS_PY = PythonRespSerializer(6000, _ENCODER.encode)

COMMANDS: list[tuple[Any, ...]] = [
    ("GET", "k"),
    ("EVALSHA", "a" * 40, 2, "{p:t}:lease", b"\x00\xffraw", 7, -3, 2.5, 1e20, "héllo"),
    ("SCRIPT LOAD", "return 1"),
    (b"CONFIG GET", b"maxmemory"),
    ("SET", "big", b"x" * 7000, "PX", 100),
    ("SET", "small", bytearray(b"abc")),
    ("HSET", "h", "f", b"y" * 5999, "g", "z" * 6001),
    ("ZADD", "z", 10**30, "m", 0, ""),
]


def _wire(chunks: list[Any]) -> bytes:
    return b"".join(bytes(c) for c in chunks)


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: str(a[0]))
def test_same_bytes_as_redis_py(args: tuple[Any, ...]) -> None:
    assert _wire(RespPacker().pack(*args)) == _wire(_REDIS_PY.pack(*args))


def test_large_arguments_are_chunks_of_their_own() -> None:
    big = b"x" * 7000
    chunks = RespPacker().pack("SET", "k", big)
    assert any(c is big for c in chunks)
    view = memoryview(b"abc")
    assert any(c is view for c in RespPacker().pack("SET", "k", view))


@pytest.mark.parametrize("bad", [True, None, object(), [1]])
def test_refuses_what_redis_py_refuses(bad: Any) -> None:
    with pytest.raises(DataError, match="Invalid input of type"):
        RespPacker().pack("SET", "k", bad)
    with pytest.raises(DataError):
        _REDIS_PY.pack("SET", "k", bad)


def test_other_encoding() -> None:
    assert _wire(RespPacker("latin-1").pack("SET", "é")) == b"*2\r\n$3\r\nSET\r\n$1\r\n\xe9\r\n"


def test_clients_from_a_url_use_it_unless_given_one() -> None:
    pool: Any = client_from_url("redis://127.0.0.1:6379/0").connection_pool
    packer = pool.connection_kwargs.get("command_packer")
    assert packer is None if HIREDIS_AVAILABLE else isinstance(packer, RespPacker)
    own = PythonRespSerializer(6000, _ENCODER.encode)
    pool = client_from_url("redis://127.0.0.1:6379/0", command_packer=own).connection_pool
    assert pool.connection_kwargs["command_packer"] is own
