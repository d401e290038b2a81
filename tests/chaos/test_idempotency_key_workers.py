"""On Celery workers, a ``@task`` whose pool process is SIGKILLed mid-body is run again by
another process (Celery redelivers the job) and sees the same idempotency key."""

from __future__ import annotations

import os
import signal
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "distributed"))

import idem_graphs  # noqa: E402
from celery_graphs import tune  # noqa: E402
from dg_workers import WorkerPool, wait_until  # noqa: E402

from durable_graph import RedisSaver  # noqa: E402
from durable_graph.worker import CeleryExecutor, create_app  # noqa: E402

pytestmark = [pytest.mark.chaos, pytest.mark.celery, pytest.mark.redis]

SECRET = "chaos-test-secret-not-for-production"


@pytest.fixture
def pool(redis_url: str, redis_prefix: str, tmp_path: Path) -> Iterator[WorkerPool]:
    env = {"DURABLE_GRAPH_REDIS_URL": redis_url, "DURABLE_GRAPH_PREFIX": redis_prefix,
           "DURABLE_GRAPH_QUEUE": f"{redis_prefix}.q", "DURABLE_GRAPH_SECRET_KEY": SECRET}
    workers = WorkerPool(module="idem_graphs", module_dir=HERE, queue=env["DURABLE_GRAPH_QUEUE"],
                         log_dir=tmp_path, env=env, redis_url=redis_url,
                         pool_key=f"{redis_prefix}:pool")
    workers.start(2)
    try:
        yield workers
    finally:
        workers.stop()
        client = redis.Redis.from_url(redis_url)
        client.delete(*(f"_kombu.binding{s}.{env['DURABLE_GRAPH_QUEUE']}"
                        for s in ("", "_permanent")))
        client.close()


def test_killed_task_reruns_on_a_worker_with_the_same_key(
    pool: WorkerPool, redis_url: str, redis_prefix: str
) -> None:
    app = tune(create_app(redis_url, prefix=redis_prefix, queue=f"{redis_prefix}.q",
                          secret_key=SECRET))
    graph = idem_graphs.build_payment().compile(
        checkpointer=RedisSaver.from_url(redis_url, prefix=redis_prefix),
        executor=CeleryExecutor(app))
    r = redis.Redis.from_url(redis_url, socket_timeout=10)
    handle = graph.submit({"amount": 5}, {"configurable": {"thread_id": uuid.uuid4().hex}})
    wait_until(lambda: r.llen(f"{redis_prefix}:pay_pids") == 1, 20, "pay to start")
    pid = int(r.lindex(f"{redis_prefix}:pay_pids", 0).split(b":")[0])
    os.kill(pid, signal.SIGKILL)  # mid-payment
    out = handle.result(timeout=30)
    keys = [k.decode() for k in r.lrange(f"{redis_prefix}:pay_keys", 0, -1)]
    pids = [int(p.split(b":")[0]) for p in r.lrange(f"{redis_prefix}:pay_pids", 0, -1)]
    r.close()
    assert len(keys) == 2 and keys[0] == keys[1], pool.log_tails()
    assert pids[1] != pid  # another process ran it again
    assert out == {"amount": 5, "receipt": f"paid 5 under {keys[0]}"}
