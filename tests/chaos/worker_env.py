"""One chaos test's world: its prefix, queue, Redis, app and real ``celery worker``s.

``Env`` starts workers of ``celery_graphs`` (``tests/distributed/dg_workers.WorkerPool``)
with the test's settings in their environment, compiles graphs for them, reads the
execution counters the graph bodies keep in Redis, and stops everything at the end.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "distributed"))

import celery_graphs as cg  # noqa: E402
from dg_workers import WorkerPool, wait_until  # noqa: E402

from durable_graph import RedisSaver  # noqa: E402
from durable_graph.worker import CeleryExecutor, create_app  # noqa: E402

SECRET = "chaos-test-secret-not-for-production"
RUN_TIMEOUT = 25.0
_SCRIPT = Path(sys.executable).with_name("durable-graph")
DURABLE_GRAPH = [str(_SCRIPT)] if _SCRIPT.exists() else [
    sys.executable, "-c", "from durable_graph.cli import main; raise SystemExit(main())"]
"""The console script of this environment, or its entry point when it is not installed."""


class Env:
    """One test's prefix, queue, Redis, app and workers."""

    def __init__(self, url: str, prefix: str, tmp: Path, **settings: str) -> None:
        self.url, self.prefix, self.tmp = url, prefix, tmp
        self.queue = f"{prefix}.q"
        self.settings = {f"DURABLE_GRAPH_{k.upper()}": v for k, v in settings.items()}
        self.redis = redis.Redis.from_url(url, socket_timeout=10)
        self.app = cg.tune(create_app(url, prefix=prefix, queue=self.queue, secret_key=SECRET,
                                      **{k: float(v) for k, v in settings.items()}))
        self.saver = RedisSaver.from_url(url, prefix=prefix)
        self.pools: list[WorkerPool] = []
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def environ(self) -> dict[str, str]:
        return {
            "DURABLE_GRAPH_REDIS_URL": self.url,
            "DURABLE_GRAPH_PREFIX": self.prefix,
            "DURABLE_GRAPH_QUEUE": self.queue,
            "DURABLE_GRAPH_SECRET_KEY": SECRET,
            **self.settings,
        }

    def workers(self, count: int, name: str) -> WorkerPool:
        """Start ``count`` workers of ``celery_graphs`` and wait until they are ready."""
        pool = WorkerPool(
            module="celery_graphs", module_dir=HERE, queue=self.queue,
            log_dir=self.tmp / name, env=self.environ, redis_url=self.url,
            pool_key=f"{self.prefix}:pool",
        )
        self.pools.append(pool)
        pool.start(count)
        return pool

    def compile(self, builder: Any) -> Any:
        return builder.compile(checkpointer=self.saver, executor=CeleryExecutor(self.app))

    def n(self, name: str) -> int:
        """Executions of ``name`` so far."""
        raw = self.redis.get(f"{self.prefix}:n:{name}")
        return int(raw) if raw else 0

    def logs(self) -> str:
        parts = [pool.log_tails(60) for pool in self.pools]
        for path in sorted(self.tmp.glob("*.log")):
            parts.append(f"----- {path.name} -----\n{path.read_text(errors='replace')[-4000:]}")
        return "\n".join(parts)

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        for pool in self.pools:
            pool.stop()
        # kombu's binding set of the queue is the one broker key outside the prefix
        self.redis.delete(f"_kombu.binding.{self.queue}",
                          f"_kombu.binding_permanent.{self.queue}")
        self.redis.close()


def until(condition: Callable[[], bool], what: str, env: Env, timeout: float = 20.0) -> None:
    """``wait_until`` that shows the workers' logs when it times out."""
    try:
        wait_until(condition, timeout, what, interval=0.01)
    except TimeoutError as exc:
        pytest.fail(f"{exc}\n{env.logs()}")


def finish(handle: Any, env: Env, timeout: float = RUN_TIMEOUT) -> Any:
    try:
        return handle.result(timeout=timeout)
    except TimeoutError as exc:
        pytest.fail(f"{exc}\n{env.logs()}")


