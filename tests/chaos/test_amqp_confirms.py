"""RabbitMQ publishes through the confirm window (``worker/confirms``), under crashes and load.

- A worker SIGKILLed while its node publishes a wide fan-out: the run completes on the
  other worker (RabbitMQ redelivers the node's job), and no call is run again after its
  result was committed.
- Many concurrent runs: every one completes, and no worker sent a job again as lost
  (the warning ``ConfirmWindow`` logs when it resends).
- A producer's submit does not wait for RabbitMQ's confirms: a producer killed right
  after its submits returned (no confirm read, no exit handler) loses no run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import celery_graphs as cg  # noqa: E402
from test_brokers import BrokerEnv, finish, until  # noqa: E402

pytestmark = [pytest.mark.chaos, pytest.mark.celery, pytest.mark.redis]

RESENT = "not confirmed"
"""What a worker logs when its confirm window sends jobs again."""


@pytest.fixture
def env(redis_url: str, redis_prefix: str, tmp_path: Path, rabbitmq: Any) -> Iterator[BrokerEnv]:
    """Checkpoints on the session's Redis, jobs on RabbitMQ in a queue of this test."""
    broker_env = BrokerEnv(redis_url, rabbitmq.url, redis_prefix, tmp_path)
    try:
        yield broker_env
    finally:
        broker_env.close()
        rabbitmq.delete_queues(broker_env.queue)


def _violations(env: BrokerEnv) -> list[bytes]:
    return list(env.redis.lrange(f"{env.prefix}:violations", 0, -1))


def _worker_logs(env: BrokerEnv) -> str:
    return "\n".join(p.read_text(errors="replace") for p in env.tmp.rglob("*.log"))


def test_amqp_sigkill_mid_fanout_publish_completes_with_nothing_committed_twice(
    env: BrokerEnv,
) -> None:
    pool = env.workers(2, "workers")
    graph = env.compile(cg.build_wide())
    thread = f"wide-{uuid.uuid4().hex[:8]}"
    handle = graph.submit({"id": thread, "value": 0}, {"configurable": {"thread_id": thread}})
    until(lambda: env.n("wide_call") >= 1, "the first fan-out call to run", env)
    raw = env.redis.lindex(f"{env.prefix}:wide_pids", 0)
    parent = int(raw.decode().split(":")[1])
    owner = next(w for w in pool.workers if w.proc.pid == parent)
    os.killpg(owner.proc.pid, signal.SIGKILL)  # the worker and its pool processes
    out = finish(handle, env, timeout=90.0)
    assert out["value"] == sum(range(cg.WIDE))
    assert out["log"] == ["wide"]
    assert _violations(env) == [], "a call ran again after its result was committed"
    assert env.redis.llen(f"{env.prefix}:wide_pids") >= 2, "the node's job came back"


def test_amqp_many_runs_under_load_resend_nothing_as_lost(env: BrokerEnv) -> None:
    env.workers(2, "workers")
    graph = env.compile(cg.build_small())
    threads = [f"small-{uuid.uuid4().hex[:8]}" for _ in range(150)]
    handles = [graph.submit({"id": t, "value": i}, {"configurable": {"thread_id": t}})
               for i, t in enumerate(threads)]
    for i, handle in enumerate(handles):
        assert finish(handle, env, timeout=120.0)["value"] == cg.small_value(i)
    assert _violations(env) == []
    logs = _worker_logs(env)
    assert RESENT not in logs, "a worker sent jobs again as lost under load"
    assert "ready" in logs, "the workers' logs were read"


_PRODUCER = """
import os, sys
from pathlib import Path
sys.path.insert(0, {here!r})
import celery_graphs as cg
from test_brokers import BrokerEnv
env = BrokerEnv({store!r}, {broker!r}, {prefix!r}, Path({tmp!r}))
graph = env.compile(cg.build_small())
for i, thread in enumerate({threads!r}):
    graph.submit({{"id": thread, "value": i}}, {{"configurable": {{"thread_id": thread}}}})
print("submitted", flush=True)
os._exit(0)
"""


def test_amqp_producer_killed_right_after_submitting_loses_no_run(env: BrokerEnv) -> None:
    threads = [f"gone-{uuid.uuid4().hex[:8]}" for _ in range(40)]
    code = _PRODUCER.format(here=str(HERE), store=env.store, broker=env.broker,
                            prefix=env.prefix, tmp=str(env.tmp), threads=threads)
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True,
                         text=True,
                         timeout=120, env={**os.environ, "PYTHONPATH": os.pathsep.join(
                             [str(HERE.parent.parent), os.environ.get("PYTHONPATH", "")])})
    assert out.stdout.strip() == "submitted", out.stderr
    env.workers(2, "workers")  # only now: every job waited in the broker, or was lost
    graph = env.compile(cg.build_small())
    for i, thread in enumerate(threads):
        config = {"configurable": {"thread_id": thread}}
        want = cg.small_value(i)
        until(lambda c=config, w=want: graph.get_state(c).values.get("value") == w
              and not graph.get_state(c).next, f"run {i} of the dead producer to end", env,
              timeout=60.0)
    assert _violations(env) == []
