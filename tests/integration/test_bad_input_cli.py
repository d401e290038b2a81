"""Bad input to the ``durable-graph`` command line: a clear message, a non-zero exit,
no secret printed, nothing changed.

Each row runs the real console script as a separate process. (A ``resume`` of a
finished thread and ``resume --update`` with a non-object are the CLI rows of the
``operate`` branch, which rewrites the CLI; they are tested there.)
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.redis]

_SCRIPT = Path(sys.executable).with_name("durable-graph")
CLI = [str(_SCRIPT)] if _SCRIPT.exists() else [
    sys.executable, "-c", "from durable_graph.cli import main; raise SystemExit(main())"]
GOOD_KEY = "cli-bad-input-secret-" + "0" * 40
DEAD = "127.0.0.1:1/0"  # nothing listens on port 1

ROWS: list[tuple[str, list[str], str | None, tuple[str, ...]]] = [
    ("a ?password= URL of an unreachable Redis",
     ["--redis-url", f"redis://{DEAD}?password=hunter2", "threads"], GOOD_KEY,
     ("password=***", "Connection refused")),
    ("a user:password@ URL of an unreachable Redis",
     ["--redis-url", f"redis://admin:hunter2@{DEAD}", "show", "t1"], GOOD_KEY,
     ("admin:***@", "Connection refused")),
    ("a unix socket URL with a password that does not exist",
     ["--redis-url", "unix:///nonexistent/redis.sock?password=hunter2", "threads"], GOOD_KEY,
     ("password=***",)),
    ("a worker with no signing key", ["worker", "--pool", "solo"], None,
     ("no signing key is set", "secrets.token_hex(32)")),
    ("a worker with a short signing key", ["worker", "--pool", "solo"], "too-short-0123456789",
     ("20 bytes, shorter than 32", "secrets.token_hex(32)")),
]


@pytest.mark.parametrize(("name", "argv", "key", "words"), ROWS, ids=[r[0] for r in ROWS])
def test_bad_cli_input_says_what_is_wrong_and_prints_no_secret(
    redis_url: str, redis_prefix: str, tmp_path: Path, name: str, argv: list[str],
    key: str | None, words: tuple[str, ...],
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DURABLE_GRAPH_")}
    env.update({"DURABLE_GRAPH_REDIS_URL": redis_url, "DURABLE_GRAPH_PREFIX": redis_prefix,
                "DURABLE_GRAPH_QUEUE": f"{redis_prefix}-q"})
    if key is not None:
        env["DURABLE_GRAPH_SECRET_KEY"] = key
    done = subprocess.run([*CLI, *argv], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=90, check=False)
    out = done.stdout + done.stderr
    assert done.returncode != 0, out
    for word in words:
        assert word in out, out
    assert "hunter2" not in out
    assert "Traceback" not in out and "ready." not in out
