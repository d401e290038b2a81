"""OpenTelemetry spans of a run crossing real Celery workers, and the no-op without it.

Two ``celery worker`` subprocesses run ``tracing_graphs`` and write their spans to
files; the test process keeps its own in memory. One trace must hold the producer's
``durable_graph.run`` span and every worker's ``durable_graph.job`` span under it
(parented through the traceparent signed into the job payload), with the supersteps'
``durable_graph.step`` spans in it too.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from dg_workers import DistEnv, WorkerPool, wait_until
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

HERE = Path(__file__).resolve().parent
MODULE = "tracing_graphs"


@pytest.fixture(scope="module")
def producer_spans() -> InMemorySpanExporter:
    """The test process's spans, kept in memory (on the SDK provider, installed if none is)."""
    exporter = InMemorySpanExporter()
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        trace.set_tracer_provider(TracerProvider())
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


@pytest.fixture(scope="module")
def tg(dist_env: DistEnv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """``tracing_graphs`` with two workers exporting their spans under ``module.SPANS``."""
    import importlib

    module = importlib.import_module(MODULE)
    spans = tmp_path_factory.mktemp("otel-spans")
    pool = WorkerPool(module=MODULE, module_dir=HERE, queue=module.QUEUE,
                      log_dir=tmp_path_factory.mktemp("otel-workers"),
                      env={**dist_env.as_env(), "DG_TEST_OTEL_DIR": str(spans)},
                      redis_url=dist_env.redis_url, pool_key=module.POOL_KEY)
    pool.start(2)
    module.SPANS = spans
    try:
        yield module
    finally:
        pool.stop()
        print(pool.log_tails())
        client = redis.Redis.from_url(dist_env.redis_url, socket_timeout=10)
        client.unlink(module.QUEUE, f"_kombu.binding.{module.QUEUE}")
        client.close()


def _worker_spans(folder: Path, thread_id: str) -> list[dict[str, Any]]:
    """The spans of ``thread_id`` the workers wrote, each with the pid that wrote it."""
    found = []
    for path in folder.glob("spans-*.jsonl"):
        pid = int(path.stem.split("-")[1])
        for line in path.read_text().splitlines():
            span = json.loads(line)
            if span["attributes"].get("durable_graph.thread_id") == thread_id:
                found.append({**span, "pid": pid})
    return found


def _ancestors(span_id: str, parents: dict[str, str | None]) -> list[str]:
    chain = []
    while (parent := parents.get(span_id)) is not None:
        chain.append(parent)
        span_id = parent
    return chain


def test_one_trace_follows_a_run_across_workers(
    tg: Any, producer_spans: InMemorySpanExporter,
) -> None:
    thread_id = f"otel-{uuid.uuid4().hex[:10]}"
    out = tg.traced_graph.invoke({"n": 1}, {"configurable": {"thread_id": thread_id}})
    assert out["total"] == sum(i * 10 for i in range(tg.FANOUT))

    runs = [s for s in producer_spans.get_finished_spans() if s.name == "durable_graph.run"
            and (s.attributes or {}).get("durable_graph.thread_id") == thread_id]
    assert len(runs) == 1, runs
    run = runs[0].get_span_context()
    trace_id, run_span = f"0x{run.trace_id:032x}", f"0x{run.span_id:016x}"

    def jobs() -> list[dict[str, Any]]:
        return [s for s in _worker_spans(tg.SPANS, thread_id) if s["name"] == "durable_graph.job"]

    def steps_seen() -> set[int]:
        return {s["attributes"]["durable_graph.step"] for s in _worker_spans(tg.SPANS, thread_id)
                if s["name"] == "durable_graph.step"}

    def all_landed() -> bool:
        nodes = [s["attributes"]["durable_graph.node"] for s in jobs()]
        return (nodes.count("part") >= tg.FANOUT and "total" in nodes and "plan" in nodes
                and steps_seen() >= {1, 2, 3})

    # a step's span is written when its commit call returns: the run's end (published
    # by that commit's worker) can reach this process first
    wait_until(all_landed, 15.0, "the workers' job and step spans of the run")
    spans = _worker_spans(tg.SPANS, thread_id)
    parents: dict[str, str | None] = {s["context"]["span_id"]: s["parent_id"] for s in spans}
    job_spans = [s for s in spans if s["name"] == "durable_graph.job"]
    assert len({s["pid"] for s in job_spans}) >= 2, "the run did not cross two workers"
    for span in job_spans:
        assert span["context"]["trace_id"] == trace_id, span
        assert span["parent_id"] == run_span, span  # the traceparent from the signed payload
        assert span["kind"] == "SpanKind.CONSUMER"
    steps = [s for s in spans if s["name"] == "durable_graph.step"]
    assert {s["attributes"]["durable_graph.step"] for s in steps} >= {1, 2, 3}, steps
    for span in steps:
        assert span["context"]["trace_id"] == trace_id
        assert run_span in _ancestors(span["context"]["span_id"], parents), span


def test_without_opentelemetry_the_hooks_are_the_plain_functions() -> None:
    code = (
        "import sys; sys.modules['opentelemetry'] = None\n"
        "from durable_graph.worker import jobs, runs, tracing, executor\n"
        "assert tracing.carry('r', 't') == ''\n"
        "assert not hasattr(jobs.handle, '__wrapped__'), 'handle is wrapped'\n"
        "assert not hasattr(runs.finish, '__wrapped__'), 'finish is wrapped'\n"
        "assert not hasattr(executor.CeleryExecutor.start_run, '__wrapped__')\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
