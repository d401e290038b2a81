"""Prometheus metrics of workers and the lease scheduler.

Served on ``/metrics`` when a port is given: ``durable-graph worker --metrics-port
9808`` (or ``DURABLE_GRAPH_METRICS_PORT=9808 celery -A durable_graph.worker worker``)
and ``durable-graph scheduler --metrics-port 9809``. Nothing is collected otherwise:
every hook below is a no-op until ``enable`` (or the worker's start with the port
set) turns collection on.

A prefork worker's jobs run in pool children, so the counters use
prometheus_client's multiprocess mode: each process writes its values to files
in ``PROMETHEUS_MULTIPROC_DIR`` (a fresh temporary folder unless set), and the
main process, which serves ``/metrics``, adds them up. That is why
``prometheus_client`` is imported only after the folder is chosen.

Labels are bounded: job ``kind`` (task, call, start, recover), ``outcome`` (ok,
stale, failed, refused, retried), run ``status`` (done, failed, interrupted,
cancelled) and the worker's own ``queue``. No thread or run ids.
"""

from __future__ import annotations

import glob
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from celery import signals

__all__ = [
    "METRICS_ADDR_ENV",
    "METRICS_PORT_ENV",
    "commit_refused",
    "enable",
    "job_done",
    "lease_taken_over",
    "recovery_started",
    "run_finished",
    "run_started",
    "serve",
    "step_committed",
]

METRICS_PORT_ENV = "DURABLE_GRAPH_METRICS_PORT"
"""Port of the ``/metrics`` endpoint of a worker started by plain ``celery``."""
METRICS_ADDR_ENV = "DURABLE_GRAPH_METRICS_ADDR"
"""Address it binds (default 0.0.0.0, so Prometheus on another host can scrape it)."""
_MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)

log = logging.getLogger("durable_graph.metrics")
_metrics: dict[str, Any] = {}
"""The metric objects, once ``enable`` made them (empty: collection is off)."""


def enable(multiprocess: bool = False) -> None:
    """Turn collection on in this process (and, with ``multiprocess``, in its children).

    With ``multiprocess`` the values go to files every process of the worker adds to;
    call it before the pool forks.
    """
    if _metrics:
        return
    if multiprocess and not os.environ.get(_MULTIPROC_ENV):
        folder = tempfile.mkdtemp(prefix=f"durable-graph-metrics-{os.getpid()}-")
        os.environ[_MULTIPROC_ENV] = folder
    from prometheus_client import Counter, Histogram

    _metrics.update(
        runs_started=Counter("durable_graph_runs_started_total",
                             "Distributed runs started (a resume is a new run)."),
        runs_finished=Counter("durable_graph_runs_finished_total",
                              "Distributed runs ended, by how they ended.", ["status"]),
        steps=Counter("durable_graph_steps_committed_total",
                      "Supersteps committed by workers."),
        step_seconds=Histogram("durable_graph_step_duration_seconds",
                               "Time from a step's checkpoint to the commit of the next one.",
                               buckets=_LATENCY_BUCKETS),
        jobs=Counter("durable_graph_jobs_total", "Jobs run, by kind and outcome.",
                     ["kind", "outcome"]),
        job_seconds=Histogram("durable_graph_job_duration_seconds",
                              "Time a worker spent on one job, by kind.", ["kind"],
                              buckets=_LATENCY_BUCKETS),
        takeovers=Counter("durable_graph_lease_takeovers_total",
                          "Leases of dead runs taken over by the scheduler."),
        recoveries=Counter("durable_graph_recoveries_total",
                           "Recovery jobs run by workers after a takeover."),
        conflicts=Counter("durable_graph_commit_conflicts_total",
                          "Step commits dropped because another worker committed first."),
        fenced=Counter("durable_graph_fencing_refusals_total",
                       "Writes or jobs refused because their lease was taken over."),
    )


# -- hooks: one call each in the worker and scheduler code; no-ops when off ----------


def run_started() -> None:
    """A distributed run applied its input."""
    if _metrics:
        _metrics["runs_started"].inc()


def run_finished(status: str) -> None:
    """A distributed run ended: done, failed, interrupted or cancelled."""
    if _metrics:
        _metrics["runs_finished"].labels(status=status).inc()


def step_committed(parent_ts: str) -> None:
    """A worker committed a step whose checkpoint was written at ``parent_ts``."""
    if not _metrics:
        return
    _metrics["steps"].inc()
    try:
        started = datetime.fromisoformat(parent_ts).timestamp()
    except ValueError:
        return
    _metrics["step_seconds"].observe(max(0.0, time.time() - started))


def commit_refused(error: BaseException) -> None:
    """A commit lost: to another worker's commit, or to a lease takeover (fencing)."""
    if _metrics:
        from durable_graph.errors import FencingError

        _metrics["fenced" if isinstance(error, FencingError) else "conflicts"].inc()


def job_done(kind: str, outcome: str, started: float | None = None) -> None:
    """A job ended with ``outcome``; ``started`` is its ``time.monotonic()`` start."""
    if not _metrics:
        return
    _metrics["jobs"].labels(kind=kind, outcome=outcome).inc()
    if outcome == "stale":
        _metrics["fenced"].inc()
    if started is not None:
        _metrics["job_seconds"].labels(kind=kind).observe(time.monotonic() - started)


def lease_taken_over() -> None:
    """The scheduler took over the lease of a run whose workers died."""
    if _metrics:
        _metrics["takeovers"].inc()


def recovery_started() -> None:
    """A worker runs a recovery job."""
    if _metrics:
        _metrics["recoveries"].inc()


# -- serving ------------------------------------------------------------------------


class _QueueDepth:
    """Collects the number of jobs waiting in the worker's queue at scrape time."""

    def __init__(self, app: Any, queue: str) -> None:
        self.app, self.queue = app, queue

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        family = GaugeMetricFamily("durable_graph_queue_depth",
                                   "Jobs waiting in the broker queue.", labels=["queue"])
        family.add_metric([self.queue], float(_depth(self.app, self.queue)))
        yield family


def _depth(app: Any, queue: str) -> int:
    """Messages ready in ``queue`` (0 when the broker has none, or cannot say)."""
    try:
        with app.connection_for_read() as conn:
            return int(conn.default_channel.queue_declare(queue=queue, passive=True)
                       .message_count)
    except Exception:  # an empty Redis queue does not exist: nothing waits
        return 0


def serve(port: int, addr: str | None = None, *, app: Any = None, queue: str = "") -> None:
    """Serve ``/metrics`` on ``addr:port`` from a daemon thread of this process.

    In multiprocess mode it adds up the values of every process of the worker;
    given a Celery ``app`` it also reports the depth of ``queue``.
    """
    enable()
    from prometheus_client import REGISTRY, CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = REGISTRY
    if os.environ.get(_MULTIPROC_ENV):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    if app is not None and queue:
        registry.register(_QueueDepth(app, queue))
    addr = addr or os.environ.get(METRICS_ADDR_ENV) or "0.0.0.0"
    start_http_server(port, addr=addr, registry=registry)
    log.info("metrics on http://%s:%d/metrics", addr, port)


def port_from_env() -> int | None:
    """``DURABLE_GRAPH_METRICS_PORT`` as a port number, None when unset."""
    text = os.environ.get(METRICS_PORT_ENV, "").strip()
    if not text:
        return None
    if not text.isdigit() or not 0 < int(text) < 65536:
        from durable_graph.errors import GraphValueError

        raise GraphValueError(f"{METRICS_PORT_ENV}={text!r} is not a port number (1-65535)")
    return int(text)


def _on_worker_init(sender: Any = None, **_: Any) -> None:
    """Celery's main worker process, before the pool forks: serve when a port is set."""
    port = port_from_env()
    if port is None:
        return
    folder = os.environ.get(_MULTIPROC_ENV)
    if folder:  # values of an earlier worker that used this folder are not ours
        for stale in glob.glob(os.path.join(folder, "*.db")):
            os.unlink(stale)
    enable(multiprocess=True)
    app = getattr(sender, "app", None)
    settings = app.conf.get("durable_graph_settings") if app is not None else None
    serve(port, app=app, queue=getattr(settings, "queue", ""))


def _on_child_exit(sender: Any = None, pid: int | None = None, **_: Any) -> None:
    """A pool process exits: its live gauges stop counting (its counters stay)."""
    if _metrics and pid and os.environ.get(_MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


# a worker started by plain `celery -A durable_graph.worker worker` serves metrics too
signals.worker_init.connect(_on_worker_init, weak=False)
signals.worker_process_shutdown.connect(_on_child_exit, weak=False)
