"""RedisTarget: a Redis connection opened lazily from a URL, so its owner pickles by URL.

Used by ``RedisStore`` and ``RedisCache``: they ship to Celery workers inside a
graph, and each worker opens its own client on first use. A target built from a
live client works in this process; pickling it derives a URL from a plain
``redis.Redis`` client's connection options (a cluster client must be given as a URL).
Errors go through ``RedisConn``, so callers see ``CheckpointStoreError`` naming the server.
"""

from __future__ import annotations

import threading
from typing import Any
from urllib.parse import quote

import redis
from redis.cluster import RedisCluster
from redis.commands.core import Script

from durable_graph.errors import GraphValueError, SerializationError
from durable_graph.store.redis.connection import Client, RedisConn, client_from_url, redact

__all__ = ["RedisTarget", "url_of"]


def url_of(client: Client) -> str | None:
    """A URL reopening ``client``'s server and database, or None if it cannot be built."""
    if isinstance(client, RedisCluster):
        return None
    kwargs: dict[str, Any] = dict(client.get_connection_kwargs())  # type: ignore[no-untyped-call]
    user, password = kwargs.get("username") or "", kwargs.get("password") or ""
    auth = f"{quote(user, safe='')}:{quote(password, safe='')}@" if user or password else ""
    if "path" in kwargs:
        return f"unix://{auth}{kwargs['path']}?db={kwargs.get('db', 0)}"
    scheme = "rediss" if kwargs.get("ssl") else "redis"
    host, port, db = kwargs.get("host", "localhost"), kwargs.get("port", 6379), kwargs.get("db", 0)
    return f"{scheme}://{auth}{host}:{port}/{db}"


class RedisTarget:
    """Where an object's Redis data lives: a URL (opened on first use) or a given client.

    Args:
        target: a ``redis://`` URL or a ``redis.Redis``/``RedisCluster`` client
            built with ``decode_responses=False``.
        what: name of the owner, for error messages ("RedisStore").
        cluster: open the URL with ``RedisCluster``.
    """

    def __init__(self, target: str | Client, *, what: str, cluster: bool = False) -> None:
        self.what = what
        self.cluster = cluster
        self._lock = threading.Lock()
        self._conn: RedisConn | None = None
        self._owns_client = isinstance(target, str)
        self._scripts: dict[str, Script] = {}
        if isinstance(target, str):
            if not target.startswith(("redis://", "rediss://", "unix://")):
                raise GraphValueError(
                    f"{what} needs a redis://, rediss:// or unix:// URL or a redis client, "
                    f"got {redact(target)!r}"
                )
            self.url: str | None = target
        elif isinstance(target, redis.Redis | RedisCluster):
            kwargs: Any = target.get_connection_kwargs()
            if kwargs.get("decode_responses"):
                raise GraphValueError(
                    f"{what} stores binary values: build the client with decode_responses=False"
                )
            self.url = url_of(target)
            self._conn = RedisConn(target)
        else:
            raise GraphValueError(
                f"{what} needs a Redis URL or a redis client, got {type(target).__name__}"
            )

    @property
    def conn(self) -> RedisConn:
        """The connection (opened now if this target was built from a URL)."""
        with self._lock:
            if self._conn is None:
                assert self.url is not None
                client = client_from_url(self.url, cluster=self.cluster)
                self._conn = RedisConn(client, f"Redis at {redact(self.url)}")
            return self._conn

    def script(self, source: str) -> Script:
        """``source`` registered on this client once, run by SHA afterwards."""
        found = self._scripts.get(source)
        if found is None:
            client: Any = self.conn.client  # RedisCluster has it too; the stubs lack it
            found = self._scripts[source] = client.register_script(source)
        return found

    def close(self) -> None:
        """Close the client if this target opened it (it reopens on next use)."""
        with self._lock:
            if self._owns_client and self._conn is not None:
                self._conn.client.close()
                self._conn = None
                self._scripts.clear()

    def __getstate__(self) -> dict[str, Any]:
        if self.url is None:
            raise SerializationError(
                f"a {self.what} built on a Redis Cluster client cannot be shipped to another "
                "process; build it from a URL (with cluster=True) instead"
            )
        return {"url": self.url, "what": self.what, "cluster": self.cluster}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["url"], what=state["what"], cluster=state["cluster"])  # type: ignore[misc]
