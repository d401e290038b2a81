"""The broker-neutral distributed tests again, with RabbitMQ as the broker.

The test functions are ``test_distributed``'s own (imported, not copied); here the
``cluster`` they get is ``amqp_cluster``: three ``celery worker`` subprocesses of
``graphs_amqp``, whose app sends and consumes every job (the producer's first step,
workers' next steps, batched ``@task`` calls) through RabbitMQ, while checkpoints
stay in Redis. The Redis-broker run of the same tests is ``test_distributed``.
"""

from __future__ import annotations

import pytest
from dg_workers import Cluster
from test_distributed import (
    test_checkpoints_per_durability_mode_match_embedded as test_amqp_checkpoints_match_embedded,
)
from test_distributed import (
    test_fanout_step_runs_its_nodes_in_three_worker_processes as test_amqp_fanout_spreads,
)
from test_distributed import (
    test_hundred_task_calls_run_once_each_across_workers as test_amqp_hundred_calls_once_each,
)
from test_distributed import (
    test_hundred_task_calls_travel_in_bundles_each_run_once as test_amqp_calls_in_bundles,
)
from test_distributed import (
    test_node_error_is_raised_like_embedded_and_recorded as test_amqp_node_error_like_embedded,
)
from test_distributed import test_stream_of_a_chain_equals_embedded as test_amqp_stream_of_a_chain
from test_distributed import test_submit_returns_before_the_run_ends as test_amqp_submit

pytestmark = [pytest.mark.celery, pytest.mark.redis]

__all__ = [
    "test_amqp_calls_in_bundles", "test_amqp_checkpoints_match_embedded",
    "test_amqp_fanout_spreads", "test_amqp_hundred_calls_once_each",
    "test_amqp_node_error_like_embedded", "test_amqp_stream_of_a_chain", "test_amqp_submit",
]


@pytest.fixture(scope="module")
def cluster(amqp_cluster: Cluster) -> Cluster:
    """The workers these tests run on: the RabbitMQ-broker cluster."""
    return amqp_cluster


def test_the_cluster_really_uses_rabbitmq(cluster: Cluster) -> None:
    """Guard: the jobs above went through RabbitMQ, not the Redis of the checkpoints."""
    app = cluster.gf.app
    assert app.conf.broker_url.startswith("amqp://")
    assert "visibility_timeout" not in app.conf.broker_transport_options
    with app.connection_for_write() as conn:
        # declared by the first send, consumed by the three workers
        _, messages, consumers = conn.default_channel.queue_declare(
            cluster.env.amqp_queue, passive=True)
    assert consumers == 3
    assert messages == 0
    assert cluster.client.llen(cluster.env.amqp_queue) == 0  # nothing went to Redis
    assert "amqp://" in cluster.pool.logs()  # each worker says which broker it uses
