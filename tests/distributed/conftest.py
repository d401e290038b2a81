"""Fixtures of the distributed tests: real Celery workers on a real Redis.

``dist_env`` (session) picks a key prefix, a Celery queue and a signing secret unique
to this session and exports them as ``DG_TEST_*`` for ``graphs_fixture`` and the
workers; at the end it deletes every key under the prefix and the queue's keys.
``cluster`` (module) starts three ``celery worker`` subprocesses running
``graphs_fixture`` and stops them after the module; the report of a failed test
that used them ends with the workers' log tails. ``amqp_cluster`` is the same on
RabbitMQ as the broker (``graphs_amqp``, a queue of its own, deleted at the end).
"""

from __future__ import annotations

import importlib
import os
import secrets
import sys
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import redis

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from dg_workers import Cluster, DistEnv, WorkerPool  # noqa: E402

from tests.keys_left import delete_prefix  # noqa: E402

WORKERS = 3
GRAPH_MODULE = "graphs_fixture"
AMQP_GRAPH_MODULE = "graphs_amqp"


@pytest.fixture(scope="session")
def dist_env(redis_server: str) -> Iterator[DistEnv]:
    """Prefix, queue and secret of this session's distributed tests, exported as env."""
    token = uuid.uuid4().hex[:12]
    env = DistEnv(redis_server, f"t-dist-{token}", f"t-dist-q-{token}", secrets.token_hex(32))
    saved = {k: os.environ.get(k) for k in env.as_env()}
    os.environ.update(env.as_env())
    try:
        yield env
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        delete_prefix(redis_server, env.prefix)
        delete_prefix(redis_server, env.queue)  # the queue and kombu's bindings of it


@pytest.fixture(scope="session")
def amqp_env(dist_env: DistEnv, rabbitmq: Any) -> Iterator[DistEnv]:
    """``dist_env`` plus a RabbitMQ broker and a queue on it (deleted at the end)."""
    env = replace(dist_env, amqp_url=rabbitmq.url, amqp_queue=f"{dist_env.queue}-amqp")
    extra = {k: v for k, v in env.as_env().items() if k not in dist_env.as_env()}
    os.environ.update(extra)
    try:
        yield env
    finally:
        for key in extra:
            os.environ.pop(key, None)
        rabbitmq.delete_queues(env.amqp_queue)


def graph_module(env: DistEnv, name: str = GRAPH_MODULE) -> ModuleType:
    """The graph module, imported now that the environment names this session's Redis."""
    module = importlib.import_module(name)
    if (module.REDIS_URL, module.PREFIX) != (env.redis_url, env.prefix) or module.QUEUE not in (
            env.queue, env.amqp_queue):
        pytest.fail(f"{name} was imported before dist_env configured it")
    return module


def start_cluster(
    env: DistEnv, module: str, queue: str, log_dir: Path, worker_env: dict[str, str],
    workers: int = WORKERS,
) -> Iterator[Cluster]:
    """``workers`` ready workers of ``module`` on ``queue``, stopped when the generator
    closes."""
    gf = graph_module(env, module)
    pool = WorkerPool(
        module=module, module_dir=HERE, queue=queue, log_dir=log_dir, env=worker_env,
        redis_url=env.redis_url, pool_key=gf.POOL_KEY,
    )
    pool.start(workers)
    client = redis.Redis.from_url(env.redis_url, socket_timeout=10)
    try:
        yield Cluster(env, pool, gf, client)
    finally:
        pool.stop()
        client.close()


@pytest.fixture(scope="module")
def cluster(dist_env: DistEnv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Three ready ``celery worker`` subprocesses (prefork, one pool process each)."""
    log_dir = tmp_path_factory.mktemp("celery-workers")
    yield from start_cluster(dist_env, GRAPH_MODULE, dist_env.queue, log_dir, dist_env.as_env())


@pytest.fixture(scope="module")
def amqp_cluster(amqp_env: DistEnv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """``cluster`` with RabbitMQ as the broker: three workers of ``graphs_amqp``."""
    log_dir = tmp_path_factory.mktemp("celery-workers-amqp")
    yield from start_cluster(amqp_env, AMQP_GRAPH_MODULE, amqp_env.amqp_queue, log_dir,
                             amqp_env.as_env())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Any:
    """A failed test that used the workers shows their log tails in its report."""
    report = yield
    found = getattr(item, "funcargs", {}).get("cluster")
    if report.failed and isinstance(found, Cluster):
        report.sections.append((
            f"celery worker logs ({found.pool.log_dir})", found.pool.log_tails()))
    return report
