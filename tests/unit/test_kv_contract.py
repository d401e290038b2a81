"""The long-term memory store contract: every BaseStore backend passes this one suite.

To add a store, add one entry to ``FACTORIES``: a ``pytest.param`` wrapping a
factory ``(tmp_path, **options) -> store`` that passes ``options`` (``ttl=``,
``index=``) to the store's constructor, with marks if it needs a server.
The fixture closes a store that has ``close()`` when the test ends.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest

from durable_graph.errors import DurableGraphError, GraphValueError
from durable_graph.store.kv import (
    BaseStore,
    GetOp,
    InMemoryStore,
    InvalidNamespaceError,
    Item,
    ListNamespacesOp,
    MatchCondition,
    PutOp,
    SearchItem,
    SearchOp,
    TTLConfig,
)
from durable_graph.store.kv.redis import RedisStore
from durable_graph.store.kv.sqlite import SqliteStore
from tests.unit.backend_contract import backend_maker, kind_params, wait_until


def _memory(tmp_path: Path, **options: Any) -> BaseStore:
    return InMemoryStore(**options)


def _sqlite(tmp_path: Path, **options: Any) -> BaseStore:
    return SqliteStore(tmp_path / "store.db", **options)


def _redis(tmp_path: Path, **options: Any) -> BaseStore:
    # The conftest sets both for tests marked redis and deletes the prefix's keys after.
    url = os.environ["DURABLE_GRAPH_TEST_REDIS_URL"]
    prefix = f"{os.environ['DURABLE_GRAPH_TEST_REDIS_PREFIX']}-{tmp_path.name}"
    return RedisStore(url, prefix=prefix, **options)


FACTORIES: dict[str, Any] = {
    "memory": pytest.param(_memory),
    "sqlite": pytest.param(_sqlite),
    "redis": pytest.param(_redis, marks=pytest.mark.redis),
}


@pytest.fixture(**kind_params(FACTORIES))
def store_kind(request: pytest.FixtureRequest) -> str:
    """The FACTORIES key of the store under test."""
    return str(request.param)


@pytest.fixture
def make_store(store_kind: str, tmp_path: Path) -> Iterator[Callable[..., BaseStore]]:
    """Builds stores of the kind under test; closes them after the test."""
    yield from backend_maker(FACTORIES[store_kind].values[0], tmp_path)


@pytest.fixture
def store(make_store: Callable[..., BaseStore]) -> BaseStore:
    """A fresh empty store."""
    return make_store()


def keys(items: list[SearchItem]) -> list[tuple[tuple[str, ...], str]]:
    return [(i.namespace, i.key) for i in items]


# --- put / get / update / delete ------------------------------------------------


def test_put_then_get_returns_the_item_with_timestamps(store: BaseStore) -> None:
    store.put(("users", "u1"), "prefs", {"color": "blue", "n": [1, 2], "deep": {"a": None}})
    item = store.get(("users", "u1"), "prefs")
    assert isinstance(item, Item)
    assert item.namespace == ("users", "u1")
    assert item.key == "prefs"
    assert item.value == {"color": "blue", "n": [1, 2], "deep": {"a": None}}
    assert item.created_at.tzinfo is not None and item.created_at.utcoffset() == UTC.utcoffset(None)
    assert item.created_at == item.updated_at
    assert item.dict()["namespace"] == ["users", "u1"]


def test_get_of_missing_key_or_namespace_is_none(store: BaseStore) -> None:
    store.put(("a",), "k", {"v": 1})
    assert store.get(("a",), "other") is None
    assert store.get(("b",), "k") is None


def test_update_replaces_value_and_keeps_created_at(store: BaseStore) -> None:
    store.put(("a",), "k", {"v": 1, "old": True})
    first = store.get(("a",), "k")
    time.sleep(0.01)
    store.put(("a",), "k", {"v": 2})
    second = store.get(("a",), "k")
    assert first is not None and second is not None
    assert second.value == {"v": 2}
    assert second.created_at == first.created_at
    assert second.updated_at > first.updated_at


def test_delete_removes_item_and_missing_delete_is_fine(store: BaseStore) -> None:
    store.put(("a",), "k", {"v": 1})
    store.delete(("a",), "k")
    assert store.get(("a",), "k") is None
    store.delete(("a",), "k")
    store.delete(("never",), "there")
    assert store.search(("a",)) == []


def test_keys_are_strings_of_any_content(store: BaseStore) -> None:
    odd = ["with:colon", "with.dot", "{brace}", "sp ace", "ünï", "*", "[x]"]
    for key in odd:
        store.put(("ns",), key, {"k": key})
    assert [store.get(("ns",), k).value["k"] for k in odd] == odd  # type: ignore[union-attr]
    assert [i.key for i in store.search(("ns",), limit=100)] == odd


def test_namespaces_with_prefix_labels_do_not_collide(store: BaseStore) -> None:
    store.put(("ab",), "k", {"v": "ab"})
    store.put(("a", "b"), "k", {"v": "a/b"})
    store.put(("a",), "bk", {"v": "a"})
    assert store.get(("ab",), "k").value == {"v": "ab"}  # type: ignore[union-attr]
    assert store.get(("a", "b"), "k").value == {"v": "a/b"}  # type: ignore[union-attr]
    assert keys(store.search(("a",))) == [(("a", "b"), "k"), (("a",), "bk")]


# --- search -----------------------------------------------------------------------


def test_search_by_prefix_in_creation_order_grouped_by_namespace(store: BaseStore) -> None:
    store.put(("docs", "x"), "1", {"i": 1})
    store.put(("docs", "y"), "2", {"i": 2})
    store.put(("docs", "x"), "3", {"i": 3})
    store.put(("other",), "4", {"i": 4})
    store.put(("docs",), "5", {"i": 5})
    assert keys(store.search(("docs",))) == [
        (("docs", "x"), "1"), (("docs", "x"), "3"), (("docs", "y"), "2"), (("docs",), "5"),
    ]
    assert keys(store.search(("docs", "y"))) == [(("docs", "y"), "2")]
    assert len(store.search(())) == 5
    assert store.search(("nothing",)) == []
    found = store.search(("other",))[0]
    assert isinstance(found, SearchItem) and found.score is None and found.value == {"i": 4}


def test_search_order_update_keeps_place_reput_moves_to_end(store: BaseStore) -> None:
    for key in "abc":
        store.put(("n",), key, {"k": key})
    store.put(("n",), "a", {"k": "a2"})
    assert [i.key for i in store.search(("n",))] == ["a", "b", "c"]
    store.delete(("n",), "a")
    store.put(("n",), "a", {"k": "a3"})
    assert [i.key for i in store.search(("n",))] == ["b", "c", "a"]


def _fill_products(store: BaseStore) -> None:
    rows = [
        ("p1", {"color": "red", "price": 5, "tags": ["a", "b"], "meta": {"size": "S"}}),
        ("p2", {"color": "blue", "price": 10.5, "tags": ["a"], "meta": {"size": "M"}}),
        ("p3", {"color": "red", "price": 20, "meta": {"size": "L", "x": 1}}),
        ("p4", {"color": "green", "name": "kiwi"}),
        ("p5", {"color": "red", "price": 10, "name": "apple"}),
        # look-alikes that must not match numeric or text conditions meant for others
        ("p6", {"color": '"red"', "price": "15", "name": True, "meta": '{"size": "L"}'}),
        ("p7", {"color": ["red"], "price": True, "name": {"v": "z"}}),
    ]
    for key, value in rows:
        store.put(("shop",), key, value)


_FILTER_CASES: list[tuple[dict[str, Any], list[str]]] = [
    ({"color": "red"}, ["p1", "p3", "p5"]),
    ({"color": '"red"'}, ["p6"]),
    ({"color": ["red"]}, ["p7"]),
    ({"color": "red", "price": 20}, ["p3"]),
    ({"color": {"$eq": "blue"}}, ["p2"]),
    ({"color": {"$ne": "red"}}, ["p2", "p4", "p6", "p7"]),
    ({"price": {"$gt": 10}}, ["p2", "p3"]),
    ({"price": {"$gte": 10}}, ["p2", "p3", "p5"]),
    ({"price": {"$lt": 10}}, ["p1"]),
    ({"price": {"$lte": 10}}, ["p1", "p5"]),
    ({"price": {"$gt": 5, "$lt": 20}}, ["p2", "p5"]),
    ({"price": "15"}, ["p6"]),
    ({"name": {"$gte": "b"}}, ["p4"]),
    ({"tags": ["a", "b"]}, ["p1"]),
    ({"meta": {"size": "L"}}, ["p3"]),
    ({"meta": '{"size": "L"}'}, ["p6"]),
    ({"missing": None}, ["p1", "p2", "p3", "p4", "p5", "p6", "p7"]),
    ({"color": "purple"}, []),
]


def test_search_filter(store: BaseStore) -> None:
    _fill_products(store)
    for filter, expected in _FILTER_CASES:
        found = [i.key for i in store.search(("shop",), filter=filter)]
        assert found == expected, filter


def test_search_filter_with_unknown_operator_is_a_clear_error(store: BaseStore) -> None:
    _fill_products(store)
    with pytest.raises(GraphValueError, match=r"\$regex.*\$gte"):
        store.search(("shop",), filter={"name": {"$regex": "a.*"}})


def test_search_limit_and_offset_page_through_everything(store: BaseStore) -> None:
    for n in range(23):
        store.put(("p", str(n % 3)), f"k{n:02d}", {"n": n, "even": n % 2 == 0})
    everything = keys(store.search(("p",), limit=100))
    assert len(everything) == 23
    pages = [keys(store.search(("p",), limit=5, offset=o)) for o in range(0, 25, 5)]
    assert [k for page in pages for k in page] == everything
    assert [len(p) for p in pages] == [5, 5, 5, 5, 3]
    assert len(store.search(("p",))) == 10  # default limit
    evens = keys(store.search(("p",), filter={"even": True}, limit=100))
    assert keys(store.search(("p",), filter={"even": True}, limit=4, offset=3)) == evens[3:7]
    assert store.search(("p",), limit=0) == []
    assert store.search(("p",), offset=50) == []


def test_search_across_many_read_pages(store: BaseStore) -> None:
    """More items than several of a backend's read pages: order and paging hold."""
    store.batch([PutOp(("big",), f"k{n:03d}", {"n": n, "odd": n % 2}) for n in range(260)])
    store.batch([PutOp(("big", "sub"), f"s{n:03d}", {"n": n, "odd": n % 2}) for n in range(40)])
    expected = [f"k{n:03d}" for n in range(260)] + [f"s{n:03d}" for n in range(40)]
    assert [i.key for i in store.search(("big",), limit=1000)] == expected
    assert [i.key for i in store.search(("big",), limit=7, offset=250)] == expected[250:257]
    odd = [i.key for i in store.search(("big",), filter={"odd": 1}, limit=1000)]
    assert odd == expected[1::2]
    late = store.search(("big",), filter={"n": {"$gte": 39}}, offset=220, limit=3)
    assert [i.key for i in late] == ["k259", "s039"]


def test_search_with_query_is_a_clear_error(store: BaseStore) -> None:
    store.put(("a",), "k", {"text": "hello"})
    with pytest.raises(DurableGraphError, match="semantic"):
        store.search(("a",), query="greeting")


# --- list_namespaces ----------------------------------------------------------------

_TREE = [
    ("a", "b", "c"), ("a", "b", "d", "e"), ("a", "b", "d", "i"), ("a", "b", "f"),
    ("a", "c", "f"), ("b", "a", "f"), ("users", "123"), ("users", "456", "v1"),
]


def _fill_tree(store: BaseStore) -> None:
    for ns in _TREE:
        store.put(ns, "k", {"ns": list(ns)})


def test_list_namespaces_all_sorted(store: BaseStore) -> None:
    _fill_tree(store)
    assert store.list_namespaces() == sorted(_TREE)


def test_list_namespaces_prefix_suffix_wildcards(store: BaseStore) -> None:
    _fill_tree(store)
    assert store.list_namespaces(prefix=("a", "b")) == [
        ("a", "b", "c"), ("a", "b", "d", "e"), ("a", "b", "d", "i"), ("a", "b", "f"),
    ]
    assert store.list_namespaces(suffix=("f",)) == [
        ("a", "b", "f"), ("a", "c", "f"), ("b", "a", "f"),
    ]
    assert store.list_namespaces(prefix=("a", "*", "f")) == [("a", "b", "f"), ("a", "c", "f")]
    assert store.list_namespaces(prefix=("a",), suffix=("*", "f")) == [
        ("a", "b", "f"), ("a", "c", "f"),
    ]
    assert store.list_namespaces(prefix=("zzz",)) == []


def test_list_namespaces_max_depth_limit_offset(store: BaseStore) -> None:
    _fill_tree(store)
    assert store.list_namespaces(prefix=("a", "b"), max_depth=3) == [
        ("a", "b", "c"), ("a", "b", "d"), ("a", "b", "f"),
    ]
    assert store.list_namespaces(max_depth=1) == [("a",), ("b",), ("users",)]
    everything = store.list_namespaces()
    assert store.list_namespaces(limit=3) == everything[:3]
    assert store.list_namespaces(limit=3, offset=6) == everything[6:]


def test_list_namespaces_forgets_emptied_namespaces(store: BaseStore) -> None:
    store.put(("x", "y"), "k", {})
    store.put(("x", "z"), "k", {})
    store.delete(("x", "y"), "k")
    assert store.list_namespaces() == [("x", "z")]


# --- batch and async ----------------------------------------------------------------


def test_batch_runs_mixed_ops_in_order_reads_before_writes(store: BaseStore) -> None:
    store.put(("b",), "old", {"v": 0})
    results = store.batch([
        PutOp(("b",), "new", {"v": 1}),
        GetOp(("b",), "old"),
        GetOp(("b",), "new"),
        SearchOp(("b",)),
        ListNamespacesOp(),
        PutOp(("b",), "old", None),
        PutOp(("b",), "twice", {"v": "first"}),
        PutOp(("b",), "twice", {"v": "second"}),
    ])
    assert len(results) == 8
    assert results[0] is None and results[5] is None
    assert isinstance(results[1], Item) and results[1].value == {"v": 0}
    assert results[2] is None  # the batch's own put is applied after its reads
    assert keys(results[3]) == [(("b",), "old")]  # type: ignore[arg-type]
    assert results[4] == [("b",)]
    assert store.get(("b",), "old") is None
    assert store.get(("b",), "new").value == {"v": 1}  # type: ignore[union-attr]
    assert store.get(("b",), "twice").value == {"v": "second"}  # type: ignore[union-attr]


def test_batch_list_namespaces_match_conditions(store: BaseStore) -> None:
    _fill_tree(store)
    op = ListNamespacesOp(
        match_conditions=(MatchCondition("prefix", ("users",)), MatchCondition("suffix", ("v1",))),
    )
    assert store.batch([op]) == [[("users", "456", "v1")]]


def test_async_twins(store: BaseStore) -> None:
    async def scenario() -> list[Any]:
        await store.aput(("as",), "k1", {"v": 1})
        await store.aput(("as", "sub"), "k2", {"v": 2})
        got = await store.aget(("as",), "k1")
        found = await store.asearch(("as",), filter={"v": 2})
        spaces = await store.alist_namespaces(prefix=("as",))
        batch = await store.abatch([GetOp(("as", "sub"), "k2"), SearchOp(("as",), limit=1)])
        await store.adelete(("as",), "k1")
        gone = await store.aget(("as",), "k1")
        return [got, found, spaces, batch, gone]

    got, found, spaces, batch, gone = asyncio.run(scenario())
    assert got.value == {"v": 1}
    assert keys(found) == [(("as", "sub"), "k2")]
    assert spaces == [("as",), ("as", "sub")]
    assert batch[0].value == {"v": 2} and keys(batch[1]) == [(("as",), "k1")]
    assert gone is None


def test_concurrent_writers_from_threads(store: BaseStore) -> None:
    def writer(t: int) -> None:
        for n in range(20):
            store.put(("conc", str(t)), str(n), {"t": t, "n": n})

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(store.search(("conc",), limit=1000)) == 80
    assert store.list_namespaces(prefix=("conc",)) == [("conc", str(t)) for t in range(4)]


# --- TTL ----------------------------------------------------------------------------

_SECOND = 1 / 60  # TTLs are in minutes


def test_ttl_expiry_and_refresh_on_read(store: BaseStore) -> None:
    """One timeline: reads refresh unless told not to; expired items leave every read."""
    for key in ("got", "found", "unread"):
        store.put(("r",), key, {"key": key}, ttl=2 * _SECOND)
    store.put(("gone",), "x", {"v": 0}, ttl=1 * _SECOND)
    store.put(("c",), "k", {"v": 1}, ttl=1 * _SECOND)
    store.put(("c",), "k", {"v": 2})  # a put without ttl clears the earlier one
    started = time.monotonic()
    time.sleep(1.0)
    assert store.get(("r",), "got") is not None  # refreshes: lives until ~3 s
    assert [i.key for i in store.search(("r",), filter={"key": "found"})] == ["found"]
    assert store.get(("r",), "unread", refresh_ttl=False) is not None
    assert store.search(("r",), filter={"key": "unread"}, refresh_ttl=False) != []
    wait_until(lambda: store.get(("r",), "unread", refresh_ttl=False) is None)
    assert time.monotonic() - started < 2.9, "machine too slow for this timing test"
    assert [i.key for i in store.search(("r",), refresh_ttl=False)] == ["got", "found"]
    assert store.get(("gone",), "x") is None
    assert store.list_namespaces() == [("c",), ("r",)]
    assert store.get(("c",), "k").value == {"v": 2}  # type: ignore[union-attr]
    wait_until(lambda: store.search(("r",), refresh_ttl=False) == [])


def test_close_stops_the_ttl_sweeper(make_store: Callable[..., Any]) -> None:
    """A closed store leaves no sweeper thread behind to reopen its connection."""
    store = make_store(ttl={"default_ttl": 1.0, "sweep_interval_minutes": 0.2 * _SECOND})
    future = store.start_ttl_sweeper()
    close = getattr(store, "close", None)
    if close is None:
        assert store.stop_ttl_sweeper(timeout=10)  # a store without a connection
    else:
        close()
    assert future.result(timeout=10) is None


def test_ttl_config_sweep_and_sweeper_thread(make_store: Callable[..., Any]) -> None:
    """Default TTL and no refresh from the config; sweep_ttl(); the sweeper thread."""
    assert make_store().start_ttl_sweeper().done()  # no TTL config: nothing to sweep
    store = make_store(ttl={
        "omit_expired": False,  # LangGraph's key; expired items are omitted regardless
        "default_ttl": 1 * _SECOND,
        "refresh_on_read": False,
        "sweep_interval_minutes": 0.5 * _SECOND,
    })
    for key in ("a", "b", "k"):
        store.put(("sw",), key, {"k": key})
    store.put(("sw",), "kept", {"k": "kept"}, ttl=None)
    started = time.monotonic()
    time.sleep(0.5)
    assert store.get(("sw",), "k") is not None  # does not refresh, by config
    time.sleep(max(0.0, 1.3 - (time.monotonic() - started)))
    assert store.sweep_ttl() == 3  # a, b and k: refreshed, k would live until ~1.5 s
    assert store.sweep_ttl() == 0
    assert [i.key for i in store.search(("sw",))] == ["kept"]
    future = store.start_ttl_sweeper()
    pickle.dumps(store)  # the running sweeper is not part of the configuration
    store.put(("th",), "a", {"k": "a"})
    time.sleep(2.0)
    assert store.stop_ttl_sweeper(timeout=10)
    assert future.result(timeout=10) is None
    assert store.sweep_ttl() == 0  # the thread already swept it
    assert store.list_namespaces() == [("sw",)]


# --- bad input ------------------------------------------------------------------------


_BAD_NAMESPACES: list[tuple[Any, str]] = [
    ((), "empty"),
    (("langgraph", "x"), "langgraph"),
    (("a.b",), "periods"),
    (("",), "empty"),
    (("a", 1), "strings"),
    (("nul\x00",), "NUL"),
]


def test_put_rejects_bad_namespaces(store: BaseStore) -> None:
    for namespace, match in _BAD_NAMESPACES:
        with pytest.raises(InvalidNamespaceError, match=match):
            store.put(namespace, "k", {"v": 1})
    assert isinstance(InvalidNamespaceError("x"), ValueError)


def test_bad_arguments_are_clear_errors(store: BaseStore) -> None:
    with pytest.raises(GraphValueError, match="dict"):
        store.put(("a",), "k", ["not", "a", "dict"])  # type: ignore[arg-type]
    with pytest.raises(GraphValueError, match="vector index"):
        store.put(("a",), "k", {"v": 1}, index=["text"])
    with pytest.raises(GraphValueError, match="ttl"):
        store.put(("a",), "k", {"v": 1}, ttl=-1)
    with pytest.raises(GraphValueError, match="limit"):
        store.search(("a",), limit=-1)
    with pytest.raises(GraphValueError, match="max_depth"):
        store.list_namespaces(max_depth=0)
    with pytest.raises(GraphValueError, match="unknown store operation"):
        store.batch([("not", "an", "op")])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        store.put(("a",), "k", {"v": 1}, tll=5)  # type: ignore[call-arg]
    store.put(("a",), "k", {"v": 1}, index=False)  # no index to skip: accepted
    assert store.get(("a",), "k").value == {"v": 1}  # type: ignore[union-attr]


def test_index_config_is_refused(make_store: Callable[..., BaseStore]) -> None:
    with pytest.raises(DurableGraphError, match="not support"):
        make_store(index={"dims": 3, "embed": lambda texts: [[0.0] * 3 for _ in texts]})


def test_ttl_config_with_unknown_key_is_refused(make_store: Callable[..., BaseStore]) -> None:
    with pytest.raises(GraphValueError, match="refresh_on_reed"):
        make_store(ttl=TTLConfig(refresh_on_reed=True))  # type: ignore[typeddict-unknown-key]


# --- pickling -------------------------------------------------------------------------


def test_pickled_store_sees_the_same_items(store: BaseStore) -> None:
    store.put(("p",), "k", {"v": [1, 2]})
    copy = pickle.loads(pickle.dumps(store))
    assert type(copy) is type(store)
    assert copy.get(("p",), "k").value == {"v": [1, 2]}
    item = store.get(("p",), "k")
    assert pickle.loads(pickle.dumps(item)) == item
    hits = store.search(("p",))
    assert pickle.loads(pickle.dumps(hits))[0].dict() == hits[0].dict()
    close = getattr(copy, "close", None)
    if close is not None:
        close()
