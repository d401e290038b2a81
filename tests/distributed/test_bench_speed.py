"""``bench/bench_speed.py`` (issue 15's instrument) runs end to end, tiny, on each broker.

The figures of so small a run mean nothing and are not checked (timing targets are the
benchmark's business, never a test's); what is checked is that the instrument works:
real workers on the broker serve every case, the broker's table gives all three
comparisons a verdict, no case is stuck, and nothing is left behind.
"""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis

pytestmark = [pytest.mark.celery, pytest.mark.redis]

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_speed.py"
TINY = ["--reps", "2", "--runs", "3", "--many-reps", "1", "--fanout", "10", "--fan-reps", "1",
        "--warmup", "0"]


@pytest.mark.parametrize("broker", ["redis", "amqp"])
def test_bench_speed_gives_every_comparison_a_verdict_and_cleans_up(
    broker: str, redis_server: str, rabbitmq: Any
) -> None:
    prefix = f"t-bench-{uuid.uuid4().hex[:8]}"
    done = subprocess.run(
        [sys.executable, str(BENCH), "--broker", broker, "--url", redis_server,
         "--amqp-url", rabbitmq.url, "--prefix", prefix, *TINY],
        capture_output=True, text=True, timeout=120, check=False)
    out = done.stdout + done.stderr
    assert done.returncode in (0, 2), out  # 2: a target missed, which a tiny run may
    assert "  stuck: " not in out, out  # a case that outlived its timeout
    table = out.split(f"Broker {broker}:", 1)[1].split("samples (wall s)", 1)[0]
    verdicts = re.findall(r"^  ([abc])\) .*[<>]= 1\.[02]x  (PASS|MISS)\b", table, re.M)
    assert [row for row, _ in verdicts] == ["a", "b", "c"], table
    client = redis.Redis.from_url(redis_server)
    try:
        assert list(client.scan_iter(match=f"{prefix}*", count=1000)) == []
        assert list(client.scan_iter(match=f"{{{prefix}*", count=1000)) == []
    finally:
        client.close()
    if broker == "amqp":
        from amqp.exceptions import NotFound
        from kombu import Connection

        with Connection(rabbitmq.url, connect_timeout=10) as conn, pytest.raises(NotFound):
            conn.default_channel.queue_declare(f"{prefix}-amqp", passive=True)
