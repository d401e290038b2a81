"""RedisStore and RedisCache on a real three-node Redis Cluster (the saver's cluster fixture)."""

from __future__ import annotations

import pickle

import pytest

from durable_graph import RedisCache, RedisStore
from tests.integration.test_redis_cluster import cluster_url  # noqa: F401  (module fixture)

pytestmark = [pytest.mark.redis, pytest.mark.chaos]


def test_store_runs_on_cluster(cluster_url: str) -> None:  # noqa: F811
    ttl = {"default_ttl": 5.0}
    with RedisStore(cluster_url, prefix="kv-cluster", cluster=True, ttl=ttl) as store:  # type: ignore[arg-type]
        for n in range(30):
            store.put(("users", f"u{n % 3}"), f"k{n}", {"n": n})
        store.put(("users", "u0"), "k0", {"n": "updated"})
        store.delete(("users", "u1"), "k1")
        assert store.get(("users", "u0"), "k0").value == {"n": "updated"}  # type: ignore[union-attr]
        assert len(store.search(("users",), limit=100)) == 29
        assert [i.key for i in store.search(("users", "u2"), filter={"n": {"$gte": 20}})] == [
            "k20", "k23", "k26", "k29",
        ]
        assert store.list_namespaces() == [("users", "u0"), ("users", "u1"), ("users", "u2")]
        copy = pickle.loads(pickle.dumps(store))
        assert copy.get(("users", "u2"), "k2").value == {"n": 2}  # type: ignore[union-attr]
        copy.close()


def test_cache_runs_on_cluster(cluster_url: str) -> None:  # noqa: F811
    with RedisCache(cluster_url, prefix="cache-cluster", cluster=True) as cache:
        cache.set({(("n", "a"), "k"): ({"v": 1}, 60), (("n", "b"), "k"): ([2], None)})
        assert cache.get([(("n", "a"), "k"), (("n", "b"), "k")]) == {
            (("n", "a"), "k"): {"v": 1}, (("n", "b"), "k"): [2],
        }
        cache.clear([("n", "a")])
        assert cache.get([(("n", "a"), "k"), (("n", "b"), "k")]) == {(("n", "b"), "k"): [2]}
        cache.clear()
        assert cache.get([(("n", "b"), "k")]) == {}
