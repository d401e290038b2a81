"""``/metrics`` of a real prefork ``celery worker`` (started with
``DURABLE_GRAPH_METRICS_PORT``): the counters of jobs run in its pool process show up
in what its main process serves, and move by what the runs did."""

from __future__ import annotations

import uuid
from typing import Any

import cli_graphs
import pytest
import ui_graphs
from dg_workers import wait_until
from prometheus_client.parser import text_string_to_metric_families
from test_ui_browser import RUN_TIMEOUT, compile_on, config_of
from ui_env import Deployment, http

pytestmark = [pytest.mark.celery, pytest.mark.redis]


def scrape(deployment: Deployment) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, body = http(f"http://127.0.0.1:{deployment.metrics_port}/metrics")
    assert status == 200, f"the worker's /metrics answered {status}"
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }


def moved(before: dict[Any, float], after: dict[Any, float], name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


def test_worker_metrics_count_runs_steps_and_jobs(deployment: Deployment) -> None:
    before = scrape(deployment)
    note = compile_on(deployment, ui_graphs.build_note())
    for _ in range(2):
        note.submit({"note": "n"}, config_of(f"m-{uuid.uuid4().hex[:8]}")).result(
            timeout=RUN_TIMEOUT)
    with pytest.raises(ValueError):
        compile_on(deployment, cli_graphs.build_boom()).submit(
            {"value": 1}, config_of(f"m-{uuid.uuid4().hex[:8]}")).result(timeout=RUN_TIMEOUT)
    review = compile_on(deployment, ui_graphs.build_review())
    paused = f"m-{uuid.uuid4().hex[:8]}"
    review.submit({"topic": "t"}, config_of(paused)).result(timeout=RUN_TIMEOUT)
    # a resume sent by the CLI is a run the worker starts (producers start their own runs)
    resumed = deployment.cli("resume", paused, "--value", '"ok"', "--timeout", str(RUN_TIMEOUT))
    assert resumed.returncode == 0, resumed.stderr

    # a job's counters move just after the run's end reaches the producer: wait for them
    def settled() -> bool:
        nonlocal after
        after = scrape(deployment)
        return moved(before, after, "durable_graph_jobs_total", kind="task", outcome="ok") >= 8
    after: dict[Any, float] = {}
    wait_until(settled, 10, "the last job's counters")

    assert moved(before, after, "durable_graph_runs_started_total") == 1
    assert moved(before, after, "durable_graph_jobs_total", kind="start", outcome="ok") == 1
    assert moved(before, after, "durable_graph_runs_finished_total", status="done") == 3
    assert moved(before, after, "durable_graph_runs_finished_total", status="failed") == 1
    assert moved(before, after, "durable_graph_runs_finished_total", status="interrupted") == 1
    # keep x2; prepare (explode fails); write (review pauses); review and publish on resume
    assert moved(before, after, "durable_graph_steps_committed_total") == 6
    assert moved(before, after, "durable_graph_step_duration_seconds_count") == 6
    # one task job per node run: keep x2, prepare + explode, write + review, review + publish
    assert moved(before, after, "durable_graph_jobs_total", kind="task", outcome="ok") == 8
    assert moved(before, after, "durable_graph_job_duration_seconds_count", kind="task") == 8
    assert ("durable_graph_queue_depth", (("queue", deployment.queue),)) in after
    assert not any("thread" in dict(labels) for _, labels in after)  # no unbounded labels
