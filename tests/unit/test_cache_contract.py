"""The node-cache contract: every BaseCache backend passes this one suite.

To add a cache, add one entry to ``FACTORIES``: a ``pytest.param`` wrapping a
factory ``(tmp_path, **options) -> cache`` (options go to the constructor, e.g.
``serde=``), with marks if it needs a server. Caches with ``close()`` are closed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import pickle
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from durable_graph.errors import GraphValueError, SerializationError
from durable_graph.store.cache import BaseCache, InMemoryCache
from durable_graph.store.cache.redis import RedisCache
from durable_graph.store.cache.sqlite import SqliteCache
from durable_graph.store.serde import TypedSerializer
from durable_graph.types import CachePolicy, default_cache_key
from tests.unit.backend_contract import backend_maker, kind_params, wait_until


def _memory(tmp_path: Path, **options: Any) -> BaseCache[Any]:
    return InMemoryCache(**options)


def _sqlite(tmp_path: Path, **options: Any) -> BaseCache[Any]:
    return SqliteCache(path=tmp_path / "cache.db", **options)


def _redis(tmp_path: Path, **options: Any) -> BaseCache[Any]:
    # The conftest sets both for tests marked redis and deletes the prefix's keys after.
    url = os.environ["DURABLE_GRAPH_TEST_REDIS_URL"]
    prefix = f"{os.environ['DURABLE_GRAPH_TEST_REDIS_PREFIX']}-{tmp_path.name}"
    return RedisCache(url, prefix=prefix, **options)


FACTORIES: dict[str, Any] = {
    "memory": pytest.param(_memory),
    "sqlite": pytest.param(_sqlite),
    "redis": pytest.param(_redis, marks=pytest.mark.redis),
}


@pytest.fixture(**kind_params(FACTORIES))
def cache_kind(request: pytest.FixtureRequest) -> str:
    """The FACTORIES key of the cache under test."""
    return str(request.param)


@pytest.fixture
def make_cache(cache_kind: str, tmp_path: Path) -> Iterator[Callable[..., BaseCache[Any]]]:
    """Builds caches of the kind under test; closes them after the test."""
    yield from backend_maker(FACTORIES[cache_kind].values[0], tmp_path)


@pytest.fixture
def cache(make_cache: Callable[..., BaseCache[Any]]) -> BaseCache[Any]:
    """A fresh empty cache."""
    return make_cache()


NODE = ("node", "summarize")
OTHER = ("node", "other")


def test_hit_and_miss(cache: BaseCache[Any]) -> None:
    value = {"messages": ["hi", "there"], "n": 3, "when": dt.datetime(2024, 1, 2, tzinfo=dt.UTC)}
    cache.set({(NODE, "k1"): (value, None), (NODE, "k2"): ([1, (2, 3)], None)})
    got = cache.get([(NODE, "k1"), (NODE, "k2"), (NODE, "absent"), (OTHER, "k1")])
    assert got == {(NODE, "k1"): value, (NODE, "k2"): [1, (2, 3)]}
    assert cache.get([]) == {}


def test_a_hit_is_a_fresh_copy(cache: BaseCache[Any]) -> None:
    cache.set({(NODE, "k"): ({"list": [1]}, None)})
    first = cache.get([(NODE, "k")])[(NODE, "k")]
    first["list"].append(2)
    assert cache.get([(NODE, "k")])[(NODE, "k")] == {"list": [1]}


def test_set_overwrites_and_namespaces_are_separate(cache: BaseCache[Any]) -> None:
    cache.set({(NODE, "k"): ("one", None), (OTHER, "k"): ("other", None)})
    cache.set({(NODE, "k"): ("two", None)})
    assert cache.get([(NODE, "k"), (OTHER, "k")]) == {(NODE, "k"): "two", (OTHER, "k"): "other"}
    cache.set({((), "root"): ("r", None), (("a", "b:c"), "x:y"): ("odd", None)})
    assert cache.get([((), "root"), (("a", "b:c"), "x:y")]) == {
        ((), "root"): "r", (("a", "b:c"), "x:y"): "odd",
    }


def test_ttl_expiry(cache: BaseCache[Any]) -> None:
    cache.set({
        (NODE, "short"): ("s", 1), (NODE, "long"): ("l", 60), (NODE, "forever"): ("f", None),
        (NODE, "reset"): ("v1", 1),
    })
    cache.set({(NODE, "reset"): ("v2", None)})  # setting again without TTL removes it
    assert cache.get([(NODE, "short")]) == {(NODE, "short"): "s"}
    wait_until(lambda: cache.get([(NODE, "short")]) == {})
    time.sleep(0.2)
    assert cache.get([(NODE, "long"), (NODE, "forever"), (NODE, "reset")]) == {
        (NODE, "long"): "l", (NODE, "forever"): "f", (NODE, "reset"): "v2",
    }


def test_clear_by_namespace_is_exact(cache: BaseCache[Any]) -> None:
    nested = ("node", "summarize", "inner")
    cache.set({(NODE, "a"): (1, None), (OTHER, "a"): (2, None), (nested, "a"): (3, None)})
    cache.clear([NODE])
    assert cache.get([(NODE, "a"), (OTHER, "a"), (nested, "a")]) == {
        (OTHER, "a"): 2, (nested, "a"): 3,
    }
    cache.clear([("never", "set")])
    cache.clear([])
    assert len(cache.get([(OTHER, "a"), (nested, "a")])) == 2


def test_clear_all(cache: BaseCache[Any]) -> None:
    cache.set({(NODE, "a"): (1, None), (OTHER, "b"): (2, 5)})
    cache.clear()
    assert cache.get([(NODE, "a"), (OTHER, "b")]) == {}


def test_async_twins(cache: BaseCache[Any]) -> None:
    async def scenario() -> tuple[Any, Any, Any]:
        await cache.aset({(NODE, "k"): ({"v": 1}, None), (OTHER, "k"): ({"v": 2}, None)})
        hit = await cache.aget([(NODE, "k"), (OTHER, "k")])
        await cache.aclear([NODE])
        after = await cache.aget([(NODE, "k"), (OTHER, "k")])
        await cache.aclear()
        return hit, after, await cache.aget([(OTHER, "k")])

    hit, after, empty = asyncio.run(scenario())
    assert hit == {(NODE, "k"): {"v": 1}, (OTHER, "k"): {"v": 2}}
    assert after == {(OTHER, "k"): {"v": 2}}
    assert empty == {}


def test_bad_input_is_a_clear_error(cache: BaseCache[Any]) -> None:
    with pytest.raises(GraphValueError, match="TTL"):
        cache.set({(NODE, "k"): ("v", -5)})
    with pytest.raises(GraphValueError, match="cache key"):
        cache.get([("node", "k")])  # type: ignore[list-item]
    with pytest.raises(GraphValueError, match="namespace"):
        cache.clear(["node"])  # type: ignore[list-item]
    with pytest.raises(SerializationError):
        cache.set({(NODE, "k"): (object(), None)})  # the default serde never pickles
    assert cache.get([(NODE, "k")]) == {}


def test_custom_serde_is_used(make_cache: Callable[..., BaseCache[Any]]) -> None:
    cache = make_cache(serde=TypedSerializer(pickle_fallback=True))
    cache.set({(NODE, "k"): (Path("/tmp/x"), None)})
    assert cache.get([(NODE, "k")]) == {(NODE, "k"): Path("/tmp/x")}


def test_pickled_cache_keeps_working(cache: BaseCache[Any]) -> None:
    cache.set({(NODE, "k"): ("v", None)})
    copy = pickle.loads(pickle.dumps(cache))
    assert type(copy) is type(cache)
    assert copy.get([(NODE, "k")]) == {(NODE, "k"): "v"}
    copy.set({(NODE, "k2"): ("v2", None)})
    assert copy.get([(NODE, "k2")]) == {(NODE, "k2"): "v2"}
    close = getattr(copy, "close", None)
    if close is not None:
        close()


# --- CachePolicy (vocabulary in durable_graph.types) ---------------------------------


def test_cache_policy_defaults_and_validation() -> None:
    policy: CachePolicy[Any] = CachePolicy()
    assert policy.ttl is None and policy.key_func is default_cache_key
    assert CachePolicy(ttl=30, key_func=str).ttl == 30
    with pytest.raises(TypeError):
        CachePolicy(5)  # type: ignore[misc]  # keyword-only, as in LangGraph
    with pytest.raises(GraphValueError, match="ttl"):
        CachePolicy(ttl=0)
    with pytest.raises(TypeError, match="callable"):
        CachePolicy(key_func="nope")  # type: ignore[type-var]
    with pytest.raises(AttributeError):
        policy.ttl = 3  # type: ignore[misc]  # frozen


def test_default_cache_key_is_stable_and_tells_inputs_apart() -> None:
    assert default_cache_key({"a": 1, "b": [1, 2]}) == default_cache_key({"a": 1, "b": [1, 2]})
    assert default_cache_key(x={"a": 1, "b": 2}) == default_cache_key(x={"b": 2, "a": 1})
    assert default_cache_key({"a": 1}) != default_cache_key({"a": 2})
    assert isinstance(default_cache_key({"a": {"nested": [1]}}), bytes)
