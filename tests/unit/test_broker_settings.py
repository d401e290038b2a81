"""Broker and durability settings: what each URL and commit-wait spec configures, and the
errors for the ones that cannot work (no servers needed)."""

from __future__ import annotations

import pytest

from durable_graph.errors import CheckpointStoreError, GraphValueError
from durable_graph.store.redis.commit_wait import CommitWait
from durable_graph.worker import create_app
from durable_graph.worker.config import Settings

KEY = "k" * 32


def test_a_rabbitmq_broker_gets_publisher_confirms_and_no_visibility_timeout() -> None:
    app = create_app("redis://127.0.0.1:1/0", broker_url="amqp://guest:guest@127.0.0.1:1//",
                     secret_key=KEY, visibility_timeout=42)
    assert app.conf.broker_url.startswith("amqp://")
    assert app.conf.broker_transport_options == {"confirm_publish": True}
    assert app.conf.task_acks_late and app.conf.task_reject_on_worker_lost


def test_a_redis_broker_keeps_its_visibility_timeout() -> None:
    app = create_app("redis://127.0.0.1:1/0", secret_key=KEY, visibility_timeout=42)
    assert app.conf.broker_transport_options["visibility_timeout"] == 42


@pytest.mark.parametrize("url", ["sqs://queue", "kafka://h:9092", "127.0.0.1:5672"])
def test_an_unsupported_broker_url_is_named_at_once(url: str) -> None:
    with pytest.raises(GraphValueError, match="broker URL scheme .* is not supported"):
        Settings.from_env({"DURABLE_GRAPH_BROKER_URL": url})


def test_commit_wait_and_store_retry_come_from_the_environment() -> None:
    s = Settings.from_env({"DURABLE_GRAPH_COMMIT_WAIT": "replicas:2",
                           "DURABLE_GRAPH_STORE_RETRY": "7.5"})
    assert s.commit_waiter == CommitWait(0, 2)
    assert s.store_retry == 7.5
    assert Settings.from_env({}).commit_waiter is None
    assert Settings.from_env({}).store_retry == 30.0
    assert Settings.from_env({}, store_retry=0).store_retry == 0


@pytest.mark.parametrize(("spec", "command"), [
    ("aof", ("WAITAOF", 1, 0, 5000)),
    ("replicas:1", ("WAIT", 1, 5000)),
    ("AOF+replicas:2", ("WAITAOF", 1, 2, 5000)),
])
def test_each_commit_wait_spec_sends_its_command(spec: str, command: tuple[object, ...]) -> None:
    wait = CommitWait.parse(spec)
    assert wait is not None and wait.command() == command


@pytest.mark.parametrize("spec", ["fsync", "replicas", "replicas:x", "aof+", "replicas:0"])
def test_a_bad_commit_wait_is_named(spec: str) -> None:
    with pytest.raises(GraphValueError, match="commit wait"):
        Settings.from_env({"DURABLE_GRAPH_COMMIT_WAIT": spec})


def test_none_means_no_commit_wait() -> None:
    assert CommitWait.parse("none") is None and CommitWait.parse("") is None


def test_a_wait_that_did_not_hold_is_a_store_error() -> None:
    with pytest.raises(CheckpointStoreError, match=r"not made durable within 5.0 s"):
        CommitWait.parse("aof+replicas:1").check([1, 0], "redis://x")  # type: ignore[union-attr]
    with pytest.raises(CheckpointStoreError, match="needs Redis >= 7.2"):
        CommitWait(1, 0).check(Exception("ERR unknown command 'WAITAOF'"), "redis://x")
    CommitWait(0, 1).check(1, "redis://x")  # held: no error


def test_the_compose_checkpoint_redis_fsyncs_every_commit_by_default() -> None:
    import re
    from pathlib import Path

    import yaml

    compose = yaml.safe_load((Path(__file__).parents[2] / "docker-compose.yml").read_text())
    words = compose["services"]["redis"]["command"]
    value = words[words.index("--appendfsync") + 1]
    default = re.fullmatch(r"\$\{DG_REDIS_APPENDFSYNC:-(\w+)\}", value)
    assert default is not None and default.group(1) == "always", value
    # the broker the workers, Flower and the optional RabbitMQ agree on comes from one variable
    env = compose["x-durable-graph-env"]
    assert env["DURABLE_GRAPH_BROKER_URL"] == "${DG_BROKER_URL:-}"
    assert "--broker=${DG_BROKER_URL:-redis://redis:6379/0}" in compose["services"]["flower"][
        "command"]
    assert compose["services"]["rabbitmq"]["profiles"] == ["rabbitmq"]


@pytest.mark.parametrize("window", [1.0, 30.0, 120.0])
def test_sends_retry_a_lost_broker_for_the_whole_outage_window(window: float) -> None:
    policy = create_app("redis://127.0.0.1:1/0", secret_key=KEY,
                        store_retry=window).conf.task_publish_retry_policy
    waits = [min(policy["interval_max"], policy["interval_start"] + policy["interval_step"] * i)
             for i in range(policy["max_retries"])]
    assert window <= sum(waits) <= window + policy["interval_max"]


def test_a_confirm_window_of_no_messages_is_refused_by_name() -> None:
    from durable_graph.errors import GraphValueError
    from durable_graph.worker.confirms import ConfirmWindow

    with pytest.raises(GraphValueError, match="max_messages=0"):
        ConfirmWindow(lambda: None, lambda _p, _m: None, lambda _m: None, max_messages=0)
