"""The graphs of ``graphs_fixture`` with RabbitMQ as the broker (``celery -A graphs_amqp``).

Same builders, same checkpoint Redis, prefix and secret; only the Celery app differs:
its broker is ``DG_TEST_AMQP_URL`` and its queue ``DG_TEST_AMQP_QUEUE`` (set by the
``amqp_env`` fixture for the test process and the workers). The graphs are
module-level names here, so they ship by import path like ``graphs_fixture``'s.
"""

from __future__ import annotations

import os
from typing import Any

import dg_trace
from graphs_fixture import (
    BOOM_MESSAGE,
    CALLS,
    CHAIN,
    LEASE_TTL,
    POOL_KEY,
    PREFIX,
    REDIS_URL,
    SECRET,
    SLOW_SLEEP,
    build_approval,
    build_boom,
    build_calls,
    build_chain,
    build_fanout,
    build_slow,
    saver,
)

from durable_graph import StateGraph
from durable_graph.worker import CeleryExecutor, create_app

__all__ = [
    "BOOM_MESSAGE", "CALLS", "CHAIN", "POOL_KEY", "PREFIX", "REDIS_URL", "SLOW_SLEEP",
    "approval", "boom_graph", "build_approval", "build_boom", "build_calls", "build_chain",
    "build_fanout", "build_slow", "calls", "chain", "dg_trace", "fanout", "saver", "slow_graph",
]

AMQP_URL = os.environ.get("DG_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
QUEUE = os.environ.get("DG_TEST_AMQP_QUEUE", "dg-dist-test-amqp")

app = create_app(REDIS_URL, broker_url=AMQP_URL, prefix=PREFIX, queue=QUEUE, secret_key=SECRET,
                 lease_ttl=LEASE_TTL)
executor = CeleryExecutor(app)


def distributed(builder: StateGraph) -> Any:
    return builder.compile(checkpointer=saver, executor=executor)


fanout, calls, chain, approval, slow_graph, boom_graph = (
    distributed(build()) for build in (
        build_fanout, build_calls, build_chain, build_approval, build_slow, build_boom))
