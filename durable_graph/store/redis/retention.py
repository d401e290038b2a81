"""Retention: deleting a thread, pruning its history, expiring it with a TTL.

Each operation is one Lua script per namespace (or per thread), so a concurrent
commit sees the thread either before or after it. Pruning keeps everything that
resuming needs: the newest N checkpoints of each namespace, their pending writes,
and every channel value they reference, however old the version.

TTL semantics: ``set_ttl`` applies an expiry to every key of the thread now and
stores it in the thread record; every later commit re-applies it to the keys it
touches (checkpoint, values, index, record, lease, writes). So a thread expires
``ttl`` seconds after its last activity; during a long-running thread, an older
checkpoint can expire before the newer ones (history trims itself by age), but
the latest checkpoint and the values it reads never do while the thread runs.
``RedisSaver(ttl=...)`` is the default for threads without their own TTL.

The policy (``RedisSaver(ttl=, keep_last=)``) is applied inside the commit script
and recorded on the thread record (``policy_ttl``, ``keep_last``); a worker's
saver passes no policy of its own, so its commits apply the recorded one.
"""

from __future__ import annotations

from durable_graph.errors import GraphValueError
from durable_graph.store.redis.connection import RedisConn
from durable_graph.store.redis.keys import ThreadKeys

__all__ = ["delete_checkpoints", "delete_thread", "ids_of", "namespaces", "prune", "set_ttl"]


def namespaces(conn: RedisConn, prefix: str, thread_id: str) -> list[str]:
    """Namespaces the thread has checkpoints in (sorted)."""
    key = ThreadKeys(prefix, thread_id).namespaces
    raw = conn.call("list namespaces", lambda c: c.hkeys(key))
    return sorted(name.decode() for name in raw)


def ids_of(conn: RedisConn, prefix: str, thread_id: str, ns: str) -> list[tuple[str, str | None]]:
    """(checkpoint id, parent id) of every checkpoint of one namespace, oldest first: one
    script, whatever the history (a record that expired while its id was indexed is left
    out)."""
    nsk = ThreadKeys(prefix, thread_id).ns(ns)
    flat = conn.run("IDS", [nsk.index], [nsk.base], "list checkpoint ids")
    return [(flat[i].decode(), flat[i + 1].decode() or None)
            for i in range(0, len(flat), 2) if flat[i + 1] is not None]


def delete_thread(conn: RedisConn, prefix: str, thread_id: str) -> None:
    """Delete every checkpoint, value, write and the record of a thread, atomically.

    The lease keeps its generation, so an owner fenced before the delete stays fenced.
    """
    keys = ThreadKeys(prefix, thread_id)
    conn.run("DELETE_THREAD", [keys.record, keys.namespaces, keys.lease], [], "delete thread")


def prune(conn: RedisConn, prefix: str, thread_id: str, keep_last: int) -> int:
    """Keep the newest ``keep_last`` checkpoints of each namespace; returns how many went."""
    if keep_last < 1:
        raise GraphValueError(f"keep_last must be at least 1, got {keep_last!r}")
    keys = ThreadKeys(prefix, thread_id)
    removed = 0
    for ns in namespaces(conn, prefix, thread_id):
        nsk = keys.ns(ns)
        removed += int(
            conn.run("PRUNE", [nsk.index, nsk.blobs], [nsk.base, keep_last], "prune thread")
        )
    return removed


def delete_checkpoints(
    conn: RedisConn, prefix: str, thread_id: str, ns: str, ids: list[str]
) -> int:
    """Delete these checkpoints of one namespace, their writes and unread values, atomically."""
    if not ids:
        return 0
    nsk = ThreadKeys(prefix, thread_id).ns(ns)
    return int(conn.run("DROP", [nsk.index, nsk.blobs], [nsk.base, *ids], "delete checkpoints"))


def set_ttl(conn: RedisConn, prefix: str, thread_id: str, seconds: int | None) -> None:
    """Expire the thread ``seconds`` after its last commit; None keeps it forever."""
    if seconds is not None and seconds < 1:
        raise GraphValueError(f"a thread TTL must be at least 1 second, got {seconds!r}")
    keys = ThreadKeys(prefix, thread_id)
    conn.run(
        "SET_TTL",
        [keys.record, keys.namespaces, keys.lease],
        [seconds or 0],
        "set thread TTL",
    )
