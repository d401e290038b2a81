"""OpenTelemetry spans of distributed runs (``pip install durable-graph[otel]``).

A ``durable_graph.run`` span covers a producer starting a run (``invoke``, ``stream``
or ``submit`` on a ``CeleryExecutor``); its W3C ``traceparent`` rides inside the
signed ``RunSpec`` every job of the run carries, and a worker handles each job in a
``durable_graph.job`` span that is its child, so one trace shows a run crossing
workers. Committing a superstep is a ``durable_graph.step`` span (a child of the job
span that lands it, or of the run span when the producer commits it).

The spans go to whatever ``TracerProvider`` the process configured (the SDK's, in
the producer and in each worker process, e.g. in a ``worker_process_init`` handler).
Without opentelemetry installed every hook here is the function it wraps, unchanged,
and ``carry`` returns ''. Installed but with no provider configured (yet), a hook
calls the function without a span: a span nobody records cost ~11 us per job.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

try:
    from opentelemetry import trace
    from opentelemetry.context import Context
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError:  # the extra is not installed: no spans, no cost
    trace = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from durable_graph.store.base import Checkpoint
    from durable_graph.worker.runs import Job, RunContext

__all__ = ["carry", "job_span", "run_span", "step_span"]

P = ParamSpec("P")
R = TypeVar("R")
RUN, STEP, JOB = "durable_graph.run", "durable_graph.step", "durable_graph.job"


def carry(run_id: str, thread_id: str) -> str:
    """Name the current run span's run and thread; its ``traceparent`` for the jobs."""
    if trace is None:
        return ""
    span = trace.get_current_span()
    span.set_attributes({"durable_graph.run_id": run_id, "durable_graph.thread_id": thread_id})
    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    return carrier.get("traceparent", "")


def _recording() -> bool:
    """Whether this process configured a tracer provider (checked each time: it may
    configure one after the hooks were made)."""
    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


def _parent(traceparent: str) -> Context | None:
    """The context a job's span continues: the run's, carried in its signed payload."""
    if not traceparent or trace is None:
        return None
    return TraceContextTextMapPropagator().extract({"traceparent": traceparent})


def run_span(fn: Callable[P, R]) -> Callable[P, R]:
    """Run ``fn`` (a producer starting a run) in a ``durable_graph.run`` span."""
    if trace is None:
        return fn

    @functools.wraps(fn)
    def spanned(*args: P.args, **kwargs: P.kwargs) -> R:
        if not _recording():
            return fn(*args, **kwargs)
        with trace.get_tracer(__name__).start_as_current_span(
                RUN, kind=trace.SpanKind.PRODUCER):
            return fn(*args, **kwargs)
    return spanned


def job_span(
    fn: Callable[Concatenate[RunContext, Job, P], R],
) -> Callable[Concatenate[RunContext, Job, P], R]:
    """Handle a job in a ``durable_graph.job`` span, a child of its run's span."""
    if trace is None:
        return fn

    @functools.wraps(fn)
    def spanned(rc: RunContext, job: Job, /, *args: P.args, **kwargs: P.kwargs) -> R:
        if not _recording():
            return fn(rc, job, *args, **kwargs)
        attributes: dict[str, Any] = {
            "durable_graph.job.kind": job.kind, "durable_graph.thread_id": job.run.thread_id,
            "durable_graph.run_id": job.run.run_id, "durable_graph.step": job.step,
            "durable_graph.node": job.name, "durable_graph.task_id": job.task_id}
        with trace.get_tracer(__name__).start_as_current_span(
                JOB, context=_parent(job.run.trace), kind=trace.SpanKind.CONSUMER,
                attributes=attributes):
            return fn(rc, job, *args, **kwargs)
    return spanned


def step_span(
    fn: Callable[Concatenate[RunContext, Checkpoint, int, P], R],
) -> Callable[Concatenate[RunContext, Checkpoint, int, P], R]:
    """Commit a superstep in a ``durable_graph.step`` span (in the current job's or run's)."""
    if trace is None:
        return fn

    @functools.wraps(fn)
    def spanned(rc: RunContext, checkpoint: Checkpoint, step: int, /,
                *args: P.args, **kwargs: P.kwargs) -> R:
        if not _recording():
            return fn(rc, checkpoint, step, *args, **kwargs)
        current = trace.get_current_span().get_span_context().is_valid
        attributes: dict[str, Any] = {
            "durable_graph.thread_id": rc.thread_id, "durable_graph.run_id": rc.run.run_id,
            "durable_graph.step": step, "durable_graph.checkpoint_id": checkpoint.id}
        with trace.get_tracer(__name__).start_as_current_span(
                STEP, context=None if current else _parent(rc.run.trace),
                attributes=attributes):
            return fn(rc, checkpoint, step, *args, **kwargs)
    return spanned
