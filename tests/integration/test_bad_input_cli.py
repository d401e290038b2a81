"""Bad input to the ``durable-graph`` command line: a clear message, a non-zero exit,
no secret printed, nothing changed.

Each row runs the real console script as a separate process, against the real
Redis; a row may first leave a thread in the store (a finished distributed run), which
the bad command must leave as it was.
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

def _done_thread(redis_url: str, prefix: str) -> str:
    """A thread whose distributed run finished: its run record, status ``done``."""
    from durable_graph.store.codec import SignedSerializer, SigningCodec
    from durable_graph.store.redis import RedisSaver
    from durable_graph.store.serde import TypedSerializer
    from durable_graph.worker.payload import seal
    from durable_graph.worker.runs import RunSpec
    from durable_graph.worker.shipping import GraphRef

    codec = SigningCodec.from_secret(GOOD_KEY)
    saver = RedisSaver.from_url(redis_url, prefix=prefix,
                                serde=SignedSerializer(TypedSerializer(), codec))
    run = RunSpec("run-1", "finished", GraphRef("nowhere:graph"), {}, "sync", (), (), 25, 0,
                  (), "", prefix)
    saver.set_run("finished", seal(codec, run))
    saver.set_status("finished", "done")
    return "finished"


ROWS: list[tuple[str, list[str], str | None, tuple[str, ...]]] = [
    ("resume a finished thread", ["resume", "finished", "--value", '"yes"'], GOOD_KEY,
     ("is done: nothing to resume",)),
    ("resume --update with a list", ["resume", "finished", "--update", "[1, 2]"], GOOD_KEY,
     ("must be an object", "list")),
    ("resume --update with a string", ["resume", "finished", "--update", '"x"'], GOOD_KEY,
     ("must be an object", "str")),
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
    key: str | None, words: tuple[str, ...], monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    env = {"DURABLE_GRAPH_REDIS_URL": redis_url, "DURABLE_GRAPH_PREFIX": redis_prefix,
           "DURABLE_GRAPH_QUEUE": f"{redis_prefix}-q"}
    if key is not None:
        env["DURABLE_GRAPH_SECRET_KEY"] = key
    thread = _done_thread(redis_url, redis_prefix)
    before = _record(redis_url, redis_prefix, thread)
    status, out = _run_cli(argv, env, tmp_path, monkeypatch, capfd)
    assert status != 0, out
    for word in words:
        assert word in out, out
    assert "hunter2" not in out
    assert "Traceback" not in out and "ready." not in out
    assert _record(redis_url, redis_prefix, thread) == before  # nothing changed


def _run_cli(argv: list[str], env: dict[str, str], cwd: Path, monkeypatch: pytest.MonkeyPatch,
             capfd: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """(exit status, output): ``worker`` as its own process (it starts Celery), the rest
    in this process (the console script's ``main``, as test_cli does)."""
    for name in [k for k in os.environ if k.startswith("DURABLE_GRAPH_")]:
        monkeypatch.delenv(name)
    if argv[0] == "worker":
        done = subprocess.run([*CLI, *argv], env={**os.environ, **env}, cwd=cwd,
                              capture_output=True, text=True, timeout=90, check=False)
        return done.returncode, done.stdout + done.stderr
    from durable_graph.cli import main

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    try:
        status = main(argv)
    except SystemExit as exc:  # argparse's own errors
        status = exc.code if isinstance(exc.code, int) else 2
    captured = capfd.readouterr()
    return status, captured.out + captured.err


def _record(redis_url: str, prefix: str, thread: str) -> dict[bytes, bytes]:
    import redis

    from durable_graph.store.redis.keys import ThreadKeys

    client = redis.Redis.from_url(redis_url)
    try:
        return {k: v for k, v in client.hgetall(ThreadKeys(prefix, thread).record).items()
                if k != b"updated_at"}
    finally:
        client.close()
