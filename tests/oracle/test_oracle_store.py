"""The long-term memory store and cache vocabulary against real LangGraph 1.2.22.

The same sequence of store calls runs on LangGraph's ``InMemoryStore`` and on
each durable_graph store; every result (items field by field, timestamps aside,
search pages, namespace listings, batch results) must be equal.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

pytest.importorskip("langgraph", reason="real LangGraph is not installed (oracle extra)")

from langgraph.cache.memory import InMemoryCache as LGInMemoryCache  # noqa: E402
from langgraph.store import base as lg_base  # noqa: E402
from langgraph.store.memory import InMemoryStore as LGInMemoryStore  # noqa: E402
from langgraph.types import CachePolicy as LGCachePolicy  # noqa: E402

from durable_graph import CachePolicy, InMemoryCache  # noqa: E402
from durable_graph.store.kv import ops as dg_ops  # noqa: E402
from durable_graph.types import default_cache_key  # noqa: E402
from tests.unit.backend_contract import backend_maker, kind_params  # noqa: E402
from tests.unit.test_kv_contract import FACTORIES  # noqa: E402

pytestmark = pytest.mark.oracle

LG_OPS = SimpleNamespace(**{n: getattr(lg_base, n) for n in (
    "GetOp", "PutOp", "SearchOp", "ListNamespacesOp", "MatchCondition",
)})
DG_OPS = SimpleNamespace(**{n: getattr(dg_ops, n) for n in vars(LG_OPS)})


@pytest.fixture(**kind_params(FACTORIES))
def store_kind(request: pytest.FixtureRequest) -> str:
    """Which durable_graph store is compared with LangGraph's."""
    return str(request.param)


@pytest.fixture
def make_store(store_kind: str, tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Builds durable_graph stores of the kind under test."""
    yield from backend_maker(FACTORIES[store_kind].values[0], tmp_path)


def observe(result: Any) -> Any:
    """A result with items reduced to their fields, timestamps left out."""
    if isinstance(result, list | tuple) and not (result and isinstance(result[0], str)):
        return [observe(r) for r in result]
    if hasattr(result, "created_at") and hasattr(result, "key"):
        fields = {k: v for k, v in result.dict().items() if k not in ("created_at", "updated_at")}
        return {"type": type(result).__name__, **fields}
    return result


def both(make_store: Callable[..., Any], scenario: Callable[[Any, Any], list[Any]]) -> None:
    """Run ``scenario(store, ops)`` on LangGraph's and our store; results must be equal."""
    expected = observe(scenario(LGInMemoryStore(), LG_OPS))
    actual = observe(scenario(make_store(), DG_OPS))
    assert actual == expected


def _memories(store: Any) -> None:
    store.put(("users", "alice", "memories"), "m1", {"text": "likes tea", "score": 3})
    store.put(("users", "alice", "memories"), "m2", {"text": "has a cat", "score": 9})
    store.put(("users", "bob", "memories"), "m1", {"text": "likes coffee", "score": 5})
    store.put(("users", "alice", "prefs"), "theme", {"dark": True, "tags": ["a", "b"]})
    store.put(("docs",), "readme", {"title": "Hello", "meta": {"lang": "en", "pages": 2}})
    store.put(("users", "alice", "memories"), "m3", {"text": "plays go", "score": 7})


def test_put_get_search_delete_sequence(make_store: Callable[..., Any]) -> None:
    def scenario(store: Any, ops: Any) -> list[Any]:
        _memories(store)
        out: list[Any] = [store.get(("users", "alice", "memories"), "m2")]
        store.put(("users", "alice", "memories"), "m2", {"text": "has two cats", "score": 10})
        out.append(store.get(("users", "alice", "memories"), "m2"))
        out.append(store.get(("users", "alice", "memories"), "nope"))
        out.append(store.search(("users",)))
        out.append(store.search(("users", "alice")))
        out.append(store.search(("users",), limit=2, offset=1))
        out.append(store.search((), limit=100))
        store.delete(("users", "alice", "memories"), "m1")
        out.append(store.search(("users", "alice", "memories")))
        store.put(("users", "alice", "memories"), "m1", {"text": "likes green tea", "score": 4})
        out.append(store.search(("users", "alice", "memories")))
        return out

    both(make_store, scenario)


_FILTERS: list[dict[str, Any]] = [
    {"score": 5},
    {"score": {"$gt": 4}},
    {"score": {"$gte": 5, "$lt": 9}},
    {"score": {"$lte": 7}},
    {"score": {"$ne": 9}},
    {"score": {"$eq": 3}},
    {"text": "plays go"},
    {"text": {"$ne": "likes tea"}},
]


def test_search_filters(make_store: Callable[..., Any]) -> None:
    def scenario(store: Any, ops: Any) -> list[Any]:
        for n, ns in enumerate([("a", "x"), ("a", "y")]):
            for key, text, score in (("k1", "likes tea", 3 + n), ("k2", "plays go", 7 + 2 * n)):
                store.put(ns, key, {"text": text, "score": score})
        store.put(("a", "x"), "k3", {"text": "has a cat", "score": 9})
        return [
            [store.search(("a",), filter=f, limit=50), store.search(("a",), filter=f, offset=1)]
            for f in _FILTERS
        ]

    both(make_store, scenario)


def test_nested_filters(make_store: Callable[..., Any]) -> None:
    def scenario(store: Any, ops: Any) -> list[Any]:
        _memories(store)
        return [
            store.search(("docs",), filter={"meta": {"lang": "en"}}),
            store.search(("docs",), filter={"meta": {"lang": "fr"}}),
            store.search(("users",), filter={"tags": ["a", "b"]}),
            store.search(("users",), filter={"dark": True, "tags": ["a"]}),
        ]

    both(make_store, scenario)


def test_list_namespaces(make_store: Callable[..., Any]) -> None:
    def scenario(store: Any, ops: Any) -> list[Any]:
        _memories(store)
        for ns in [("a", "b", "c"), ("a", "b", "d", "e"), ("a", "b", "d", "i"), ("a", "c", "f")]:
            store.put(ns, "k", {"v": 1})
        return [
            store.list_namespaces(),
            store.list_namespaces(prefix=("users",)),
            store.list_namespaces(prefix=("users", "*", "memories")),
            store.list_namespaces(suffix=("memories",)),
            store.list_namespaces(prefix=("a", "b"), max_depth=3),
            store.list_namespaces(max_depth=2),
            store.list_namespaces(limit=2, offset=1),
            store.list_namespaces(prefix=("users",), suffix=("prefs",)),
        ]

    both(make_store, scenario)


def test_batch_forms(make_store: Callable[..., Any]) -> None:
    def scenario(store: Any, ops: Any) -> list[Any]:
        _memories(store)
        return [
            store.batch([
                ops.GetOp(("docs",), "readme"),
                ops.PutOp(("docs",), "new", {"title": "New"}),
                # (LangGraph raises TypeError when a $gt field is missing: keep it present)
                ops.SearchOp(("users", "alice", "memories"), filter={"score": {"$gt": 5}}),
                ops.ListNamespacesOp(
                    match_conditions=(ops.MatchCondition("prefix", ("users",)),), max_depth=2,
                ),
                ops.GetOp(("docs",), "new"),
                ops.PutOp(("docs",), "readme", None),
            ]),
            store.get(("docs",), "new"),
            store.get(("docs",), "readme"),
            store.search(("docs",)),
        ]

    both(make_store, scenario)


def test_async_twins(make_store: Callable[..., Any]) -> None:
    def scenario(store: Any, ops: Any) -> list[Any]:
        async def run() -> list[Any]:
            await store.aput(("x", "y"), "k", {"v": 1})
            await store.aput(("x", "z"), "k", {"v": 2})
            out = [await store.aget(("x", "y"), "k"), await store.asearch(("x",), filter={"v": 2})]
            out.append(await store.alist_namespaces(prefix=("x",)))
            out.append(await store.abatch([ops.GetOp(("x", "z"), "k"), ops.SearchOp(("x",))]))
            await store.adelete(("x", "y"), "k")
            out.append(await store.asearch(("x",)))
            return out

        return asyncio.run(run())

    both(make_store, scenario)


def test_bad_namespaces_raise_value_error_on_both(make_store: Callable[..., Any]) -> None:
    for namespace in [(), ("langgraph", "x"), ("a.b",), ("",), ("a", 1)]:
        for store in (LGInMemoryStore(), make_store()):
            with pytest.raises(ValueError):
                store.put(namespace, "k", {"v": 1})


def test_item_shapes_match() -> None:
    lg_store, dg_store = LGInMemoryStore(), make_memory()
    for store in (lg_store, dg_store):
        store.put(("a",), "k", {"v": 1})
    lg_item, dg_item = lg_store.get(("a",), "k"), dg_store.get(("a",), "k")
    assert list(dg_item.dict()) == list(lg_item.dict())
    lg_hit, dg_hit = lg_store.search(("a",))[0], dg_store.search(("a",))[0]
    assert list(dg_hit.dict()) == list(lg_hit.dict())
    assert dg_hit.score == lg_hit.score is None
    assert type(dg_item.created_at) is type(lg_item.created_at)
    assert dg_item.created_at.tzinfo is not None and lg_item.created_at.tzinfo is not None


def make_memory() -> Any:
    from durable_graph import InMemoryStore

    return InMemoryStore()


# --- cache vocabulary -------------------------------------------------------------


def test_cache_policy_and_default_key_match_langgraph() -> None:
    from langgraph._internal._cache import default_cache_key as lg_default_cache_key

    assert CachePolicy().ttl == LGCachePolicy().ttl is None
    assert [f for f in CachePolicy.__dataclass_fields__] == list(LGCachePolicy.__dataclass_fields__)
    calls = [(({"a": 1, "b": [1, {"c": 2}]},), {}), ((1, "x"), {"k": {"z": 1, "y": 2}})]
    for args, kwargs in calls:
        assert default_cache_key(*args, **kwargs) == lg_default_cache_key(*args, **kwargs)


def test_in_memory_cache_matches_langgraph() -> None:
    def scenario(cache: Any) -> list[Any]:
        ns, other = ("node", "a"), ("node", "b")
        cache.set({(ns, "k1"): ({"out": [1, 2]}, None), (other, "k1"): ("x", 60)})
        out = [cache.get([(ns, "k1"), (ns, "missing"), (other, "k1")])]
        cache.clear([ns])
        out.append(cache.get([(ns, "k1"), (other, "k1")]))
        cache.clear()
        out.append(cache.get([(other, "k1")]))
        return out

    assert scenario(InMemoryCache()) == scenario(LGInMemoryCache())
