"""Where graph code ran: Redis records the distributed tests read back.

Kept apart from the graph modules on purpose: ``CeleryExecutor`` pickles a graph's
own module by value, and a module-level Redis client (it holds locks) cannot be
pickled, so the per-process client lives here and is pickled by reference.

- ``trace(prefix, tag, name)``: ``RPUSH {prefix}:trace:{tag} "<host>:<pid>:<name>"``.
- ``count(prefix, tag, i)``: ``INCR {prefix}:count:{tag}:{i}`` (executions of a call).
"""

from __future__ import annotations

import os
import socket

import redis

_clients: dict[tuple[int, str], redis.Redis] = {}


def client(url: str) -> redis.Redis:
    """A Redis client of this process (a forked pool process makes its own)."""
    key = (os.getpid(), url)
    found = _clients.get(key)
    if found is None:
        found = _clients[key] = redis.Redis.from_url(url, socket_timeout=10)
    return found


def trace_key(prefix: str, tag: str) -> str:
    return f"{prefix}:trace:{tag}"


def count_key(prefix: str, tag: str, i: int) -> str:
    return f"{prefix}:count:{tag}:{i}"


def where() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def trace(url: str, prefix: str, tag: str, name: str) -> None:
    """Record that ``name`` ran in this process for run ``tag``."""
    client(url).rpush(trace_key(prefix, tag), f"{where()}:{name}")


def count(url: str, prefix: str, tag: str, i: int) -> None:
    """Count one execution of call ``i`` of run ``tag``."""
    client(url).incr(count_key(prefix, tag, i))


def traced(url: str, prefix: str, tag: str) -> list[tuple[int, str]]:
    """(pid, name) of everything recorded for ``tag``, in order."""
    out = []
    for raw in client(url).lrange(trace_key(prefix, tag), 0, -1):
        _host, pid, name = raw.decode().split(":", 2)
        out.append((int(pid), name))
    return out
