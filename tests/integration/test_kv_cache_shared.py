"""Durable stores and caches shared between processes, as Celery workers share them.

Each test pickles a store or cache (as a graph shipped to workers carries it),
unpickles it in a separate Python process that writes while this process writes
too, and checks both see everything; Redis TTLs are Redis expiry. A forged cache
entry is never unpickled.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from durable_graph import RedisCache, RedisStore, SqliteCache, SqliteStore
from durable_graph.errors import GraphValueError, SerializationError
from durable_graph.store.codec import SignedSerializer, SigningCodec
from durable_graph.store.serde import TypedSerializer
from tests.unit.backend_contract import wait_until

_CHILD = textwrap.dedent("""
    import pickle, sys
    store, cache = pickle.loads(open(sys.argv[1], "rb").read())
    {body}
    print("ok", flush=True)
""")


def run_child(store: Any, cache: Any, body: str, tmp_path: Path) -> subprocess.Popen[str]:
    """Start a Python process that unpickles ``store`` and ``cache`` and runs ``body``."""
    blob = tmp_path / f"objs-{time.monotonic_ns()}.pickle"
    blob.write_bytes(pickle.dumps((store, cache)))
    return subprocess.Popen(
        [sys.executable, "-c", _CHILD.format(body=body.strip()), str(blob)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=Path(__file__).resolve().parents[2],
    )


def finish(child: subprocess.Popen[str]) -> None:
    out, err = child.communicate(timeout=120)
    assert child.returncode == 0 and out.strip() == "ok", err


_WRITER = """
for n in range(40):
    store.put(("shared", "child"), f"c{n}", {"n": n, "by": "child"})
assert store.get(("shared", "parent"), "seed").value == {"by": "parent"}
child = ("node", "child")
cache.set({(child, "k"): ({"by": "child"}, None), (child, "short"): ("s", 1)})
assert cache.get([(("node", "parent"), "k")]) == {(("node", "parent"), "k"): {"by": "parent"}}
"""


def _share(store: Any, cache: Any, tmp_path: Path) -> None:
    """A child process writes while this one does; both see everything."""
    store.put(("shared", "parent"), "seed", {"by": "parent"})
    cache.set({(("node", "parent"), "k"): ({"by": "parent"}, None)})
    child = run_child(store, cache, _WRITER, tmp_path)
    for n in range(40):
        store.put(("shared", "parent"), f"p{n}", {"n": n, "by": "parent"})
    finish(child)
    assert len(store.search(("shared",), limit=1000)) == 81
    assert store.list_namespaces() == [("shared", "child"), ("shared", "parent")]
    assert store.get(("shared", "child"), "c39").value == {"n": 39, "by": "child"}
    assert cache.get([(("node", "child"), "k")]) == {(("node", "child"), "k"): {"by": "child"}}
    wait_until(lambda: cache.get([(("node", "child"), "short")]) == {})
    cache.clear([("node", "child")])
    assert cache.get([(("node", "child"), "k"), (("node", "parent"), "k")]) == {
        (("node", "parent"), "k"): {"by": "parent"},
    }


def test_sqlite_store_and_cache_shared_with_another_process(tmp_path: Path) -> None:
    with SqliteStore(tmp_path / "memory.db") as store, SqliteCache(path=tmp_path / "c.db") as cache:
        _share(store, cache, tmp_path)
    with SqliteStore(tmp_path / "memory.db") as reopened:
        assert len(reopened.search(("shared",), limit=1000)) == 81


@pytest.mark.redis
def test_redis_store_and_cache_shared_with_another_process(
    tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    with RedisStore(redis_url, prefix=redis_prefix) as store, \
            RedisCache(redis_url, prefix=redis_prefix) as cache:
        cache.set({(("node", "x"), "ttl"): ("v", 30)})
        raw = redis.Redis.from_url(redis_url)
        pttl = raw.pttl(cache.keys.entry(("node", "x"), "ttl"))
        assert 25_000 < pttl <= 30_000  # the entry's TTL is Redis expiry
        assert raw.pttl(cache.keys.entry(("node", "x"), "missing")) == -2
        raw.close()
        _share(store, cache, tmp_path)


@pytest.mark.redis
def test_redis_store_from_a_client_pickles_by_url(redis_url: str, redis_prefix: str) -> None:
    client = redis.Redis.from_url(redis_url)
    store = RedisStore(client, prefix=redis_prefix)
    store.put(("c",), "k", {"v": 1})
    copy = pickle.loads(pickle.dumps(store))
    assert copy.get(("c",), "k").value == {"v": 1}
    copy.close()
    client.close()


def test_sqlite_store_on_a_connection_refuses_to_ship(tmp_path: Path) -> None:
    import sqlite3

    conn = sqlite3.connect(tmp_path / "x.db", check_same_thread=False)
    store = SqliteStore(conn)
    store.put(("a",), "k", {"v": 1})
    assert store.get(("a",), "k").value == {"v": 1}  # type: ignore[union-attr]
    with pytest.raises(SerializationError, match="file path"):
        pickle.dumps(store)
    conn.close()


def test_sqlite_store_refuses_non_json_values(tmp_path: Path) -> None:
    with SqliteStore(tmp_path / "m.db") as store, pytest.raises(SerializationError, match="JSON"):
        store.put(("a",), "k", {"when": object()})


class _Tripwire:
    """Unpickling this creates a file: proof that bytes were unpickled."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (open, (self.path, "w"))


@pytest.mark.redis
@pytest.mark.parametrize("signed", [True, False])
def test_redis_cache_never_unpickles_forged_entries(
    tmp_path: Path, redis_url: str, redis_prefix: str, signed: bool
) -> None:
    serde: Any = TypedSerializer(pickle_fallback=False)
    if signed:
        serde = SignedSerializer(TypedSerializer(), SigningCodec.from_secret("s3cret"))
    tripwire = tmp_path / "unpickled"
    forged = b"pickle\0" + pickle.dumps(_Tripwire(str(tripwire)))
    with RedisCache(redis_url, prefix=redis_prefix, serde=serde) as cache:
        cache.set({(("n",), "good"): ({"ok": 1}, None)})
        raw = redis.Redis.from_url(redis_url)
        raw.set(cache.keys.entry(("n",), "bad"), forged)
        raw.set(cache.keys.entry(("n",), "garbage"), b"no-tag-at-all")
        assert cache.get([(("n",), "good"), (("n",), "bad"), (("n",), "garbage")]) == {
            (("n",), "good"): {"ok": 1},
        }
        assert not tripwire.exists()
        assert raw.exists(cache.keys.entry(("n",), "bad")) == 0  # dropped, not kept
        raw.close()


@pytest.mark.redis
def test_redis_cache_drops_an_entry_whose_tag_is_not_text(
    redis_url: str, redis_prefix: str
) -> None:
    """A corrupt entry (tag bytes not UTF-8) is a miss and is dropped, never a crash."""
    with RedisCache(redis_url, prefix=redis_prefix) as cache:
        raw = redis.Redis.from_url(redis_url)
        name = cache.keys.entry(("n",), "corrupt")
        raw.set(name, b"\xff\xfe\0data")
        assert cache.get([(("n",), "corrupt")]) == {}
        assert raw.exists(name) == 0
        cache.set({(("n",), "corrupt"): ("fresh", None)})
        assert cache.get([(("n",), "corrupt")]) == {(("n",), "corrupt"): "fresh"}
        raw.close()


@pytest.mark.redis
def test_redis_backends_refuse_bad_targets(redis_url: str) -> None:
    text_client = redis.Redis.from_url(redis_url, decode_responses=True)
    with pytest.raises(GraphValueError, match="RedisStore.*decode_responses=False"):
        RedisStore(text_client)
    with pytest.raises(GraphValueError, match="RedisCache.*decode_responses=False"):
        RedisCache(text_client)
    text_client.close()
    with pytest.raises(GraphValueError, match="URL"):
        RedisStore("localhost:6379")
    with pytest.raises(GraphValueError, match="prefix"):
        RedisCache(redis_url, prefix="")
