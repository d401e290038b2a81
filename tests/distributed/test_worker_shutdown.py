"""A ``celery worker`` that shuts down cleanly takes its heartbeat out of ``{P:live:w}``.

A real worker (prefork: the job runs in its pool process; solo: in the worker itself)
runs a graph, so its process beats for the prefix; on SIGTERM (a warm shutdown) Celery's
shutdown signals stop that heartbeat and remove its entry, so nothing is left for a
sweep to find dead (and no key for the prefix is left behind).
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
from dg_workers import INC_GRAPH

from durable_graph.store.redis import RedisSaver
from durable_graph.store.redis.keys import live_key
from durable_graph.worker import CeleryExecutor, create_app

pytestmark = [pytest.mark.celery, pytest.mark.redis]

SECRET = "worker-shutdown-test-secret-0123456789"
TIMEOUT = 30.0


def _worker(redis_url: str, prefix: str, queue: str, pool: str, cwd: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DURABLE_GRAPH_")}
    env.update({"DURABLE_GRAPH_REDIS_URL": redis_url, "DURABLE_GRAPH_PREFIX": prefix,
                "DURABLE_GRAPH_QUEUE": queue, "DURABLE_GRAPH_SECRET_KEY": SECRET})
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "durable_graph.worker", "worker", "-Q", queue,
         "-c", "1", "--pool", pool, "-n", f"shutdown-{uuid.uuid4().hex[:6]}@%h",
         "--without-mingle", "--without-gossip", "--without-heartbeat", "--loglevel", "INFO"],
        env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


@pytest.mark.parametrize("pool", ["prefork", "solo"])
def test_a_worker_stopped_cleanly_leaves_no_heartbeat(
    redis_url: str, redis_prefix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    pool: str,
) -> None:
    queue = f"{redis_prefix}-q"
    client = redis.Redis.from_url(redis_url, socket_timeout=10)
    module = f"shutdown_graph_{pool}"
    (tmp_path / f"{module}.py").write_text(INC_GRAPH)
    monkeypatch.syspath_prepend(str(tmp_path))
    built: Any = __import__(module)
    proc = _worker(redis_url, redis_prefix, queue, pool, tmp_path)
    try:
        app = create_app(redis_url, prefix=redis_prefix, queue=queue, secret_key=SECRET)
        graph = built.build().compile(
            checkpointer=RedisSaver.from_url(redis_url, prefix=redis_prefix),
            executor=CeleryExecutor(app, ship="pickle"))
        handle = graph.submit({"n": 1}, {"configurable": {"thread_id": "s1"}})
        assert handle.result(timeout=TIMEOUT) == {"n": 2}
        beating = client.zrange(live_key(redis_prefix), 0, -1)
        assert len(beating) == 1  # the process that ran the job
    finally:
        proc.terminate()  # SIGTERM: Celery's warm shutdown
        try:
            out, _ = proc.communicate(timeout=TIMEOUT)
        finally:
            proc.kill()
    try:
        assert proc.returncode == 0, out
        assert client.zrange(live_key(redis_prefix), 0, -1) == [], out
    finally:
        client.close()
