"""Test key prefixes: deleted after their tests, and checked at the end of the session.

``delete_prefix`` ends the heartbeats of the worker runtimes this process ran jobs in
under that prefix (a heartbeat thread would write its entry again; a runtime of another
prefix, still running a job, goes on), deletes a prefix's keys and records
the prefix; ``left_behind`` finds the recorded prefixes some key came back under (a
thread of the test process, or a worker, wrote after the test's end). Import it as
``tests.keys_left`` only: the record must be one per process.
"""

from __future__ import annotations

import sys
import time

DELETED: dict[str, set[str]] = {}
"""The prefixes deleted this session, per Redis URL."""
LATE_WRITES_WAIT = 2.5
"""Seconds a session waits before ``left_behind`` looks: two beats at the default
heartbeat TTL (3 s, a beat every second) of a heartbeat that outlived its test."""


def stop_heartbeats(prefix: str) -> None:
    """Stop the heartbeats of this process's worker runtimes of ``prefix`` (or beating
    for a prefix starting with it), if it made any."""
    app = sys.modules.get("durable_graph.worker.app")
    if app is not None:
        app.WorkerRuntime.stop_here(prefix=prefix)


def delete_prefix(url: str, prefix: str) -> None:
    """Delete the keys of ``prefix`` (bare, inside a ``{...}`` hash tag, or kombu's
    bindings of a queue named after it) with SCAN+UNLINK, after this process's
    heartbeats ended; ``left_behind`` checks it at the end."""
    import redis

    stop_heartbeats(prefix)
    client = redis.Redis.from_url(url, socket_timeout=10)
    patterns = (f"{prefix}*", f"{{{prefix}*", f"_kombu.binding.{prefix}*",
                f"_kombu.binding_permanent.{prefix}*")
    try:
        for pattern in patterns:
            batch = []
            for key in client.scan_iter(match=pattern, count=1000):
                batch.append(key)
                if len(batch) >= 500:
                    client.unlink(*batch)
                    batch.clear()
            if batch:
                client.unlink(*batch)
    finally:
        client.close()
    DELETED.setdefault(url, set()).add(prefix)


def left_behind(url: str) -> dict[str, list[str]]:
    """Keys found now under the prefixes deleted on ``url`` (a few per prefix), after
    ``LATE_WRITES_WAIT``; one SCAN of the server (test prefixes all have ``t-``)."""
    import redis

    prefixes = tuple(DELETED.get(url, ()))
    if not prefixes:
        return {}
    time.sleep(LATE_WRITES_WAIT)
    client = redis.Redis.from_url(url, socket_timeout=10)
    found: dict[str, list[str]] = {}
    try:
        for raw in client.scan_iter(match="*t-*", count=1000):
            key = raw.decode(errors="replace")
            bare = key.removeprefix("{").removeprefix("_kombu.binding.").removeprefix(
                "_kombu.binding_permanent.")
            if bare.startswith(prefixes):
                owner = next(p for p in prefixes if bare.startswith(p))
                found.setdefault(owner, []).append(key)
    finally:
        client.close()
    return {p: sorted(keys)[:5] for p, keys in found.items()}
