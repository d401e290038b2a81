"""Fixtures of the distributed tests: real Celery workers on a real Redis.

``dist_env`` (session) picks a key prefix, a Celery queue and a signing secret unique
to this session and exports them as ``DG_TEST_*`` for ``graphs_fixture`` and the
workers; at the end it deletes every key under the prefix and the queue's keys.
``cluster`` (module) starts three ``celery worker`` subprocesses running
``graphs_fixture`` and stops them after the module; the report of a failed test
that used them ends with the workers' log tails.
"""

from __future__ import annotations

import importlib
import os
import secrets
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import redis

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from dg_workers import Cluster, DistEnv, WorkerPool  # noqa: E402

WORKERS = 3
GRAPH_MODULE = "graphs_fixture"


def _delete_keys(client: redis.Redis, prefix: str, queue: str) -> None:
    for pattern in (f"{prefix}*", f"{{{prefix}*"):
        batch = list(client.scan_iter(match=pattern, count=1000))
        for start in range(0, len(batch), 500):
            client.unlink(*batch[start:start + 500])
    client.unlink(queue, f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}")


@pytest.fixture(scope="session")
def dist_env(redis_server: str) -> Iterator[DistEnv]:
    """Prefix, queue and secret of this session's distributed tests, exported as env."""
    token = uuid.uuid4().hex[:12]
    env = DistEnv(redis_server, f"t-dist-{token}", f"t-dist-q-{token}", secrets.token_hex(32))
    saved = {k: os.environ.get(k) for k in env.as_env()}
    os.environ.update(env.as_env())
    client = redis.Redis.from_url(redis_server, socket_timeout=10)
    try:
        yield env
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        _delete_keys(client, env.prefix, env.queue)
        client.close()


def graph_module(env: DistEnv) -> ModuleType:
    """``graphs_fixture``, imported now that the environment names this session's Redis."""
    module = importlib.import_module(GRAPH_MODULE)
    if (module.REDIS_URL, module.PREFIX, module.QUEUE) != (env.redis_url, env.prefix, env.queue):
        pytest.fail(f"{GRAPH_MODULE} was imported before dist_env configured it")
    return module


@pytest.fixture(scope="module")
def cluster(dist_env: DistEnv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Three ready ``celery worker`` subprocesses (prefork, one pool process each)."""
    gf = graph_module(dist_env)
    log_dir = tmp_path_factory.mktemp("celery-workers")
    pool = WorkerPool(
        module=GRAPH_MODULE, module_dir=HERE, queue=dist_env.queue, log_dir=log_dir,
        env=dist_env.as_env(), redis_url=dist_env.redis_url, pool_key=gf.POOL_KEY,
    )
    pool.start(WORKERS)
    client = redis.Redis.from_url(dist_env.redis_url, socket_timeout=10)
    try:
        yield Cluster(dist_env, pool, gf, client)
    finally:
        pool.stop()
        client.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Any:
    """A failed test that used the workers shows their log tails in its report."""
    report = yield
    found = getattr(item, "funcargs", {}).get("cluster")
    if report.failed and isinstance(found, Cluster):
        report.sections.append((
            f"celery worker logs ({found.pool.log_dir})", found.pool.log_tails()))
    return report
