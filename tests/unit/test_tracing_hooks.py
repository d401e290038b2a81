"""Span hooks cost nothing until the process configures a tracer provider.

Run in a fresh interpreter: a tracer provider, once set, stays for the process.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("opentelemetry.sdk.trace")

_SCRIPT = textwrap.dedent("""
    from types import SimpleNamespace as NS
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from durable_graph.worker import tracing

    run = NS(thread_id="t", run_id="r",
             trace="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    job = NS(kind="task", run=run, step=1, name="a", task_id="x")

    @tracing.job_span
    def handle(rc, job):
        return trace.get_current_span().get_span_context().is_valid

    print(handle(None, job))
    trace.set_tracer_provider(TracerProvider())  # configured later: spans from now on
    print(handle(None, job))
""")


def test_a_job_span_only_once_a_provider_is_configured() -> None:
    out = subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True,
                         check=True, timeout=60).stdout.split()
    assert out == ["False", "True"]
