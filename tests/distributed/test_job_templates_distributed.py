"""Job messages a real ``celery worker`` sends while it runs a job (the next step's, a
node's calls) are filled in from its process's template, not built by Celery one by one:
Celery names the running job as their parent, which the template takes per message.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import start_cluster
from dg_workers import Cluster, DistEnv

pytestmark = [pytest.mark.celery, pytest.mark.redis]

TIMEOUT = 60.0


@pytest.fixture(scope="module")
def counted(dist_env: DistEnv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One worker of ``graphs_counted`` (its job messages counted by how they were built)."""
    log_dir: Path = tmp_path_factory.mktemp("celery-workers-counted")
    yield from start_cluster(dist_env, "graphs_counted", dist_env.queue, log_dir,
                             dist_env.as_env(), workers=1)


def test_jobs_a_worker_sends_from_a_running_job_are_built_from_its_template(
    counted: Cluster,
) -> None:
    gf, client = counted.gf, counted.client
    client.delete(gf.COUNT_KEY)
    config = {"configurable": {"thread_id": f"templ-{uuid.uuid4().hex[:10]}"}}
    out = gf.chain.submit({"value": 1, "log": []}, config).result(timeout=TIMEOUT)
    assert out["log"]
    config = {"configurable": {"thread_id": f"templ-calls-{uuid.uuid4().hex[:10]}"}}
    squares = gf.calls.submit({"n": 10}, config).result(timeout=TIMEOUT)["squares"]
    assert squares == [i * i for i in range(10)]
    counts = {k.decode(): int(v) for k, v in client.hgetall(gf.COUNT_KEY).items()}
    assert counts.get("celery", 0) == 0, counts
    assert counts.get("template", 0) >= 4, counts  # the chain's next steps, the calls
