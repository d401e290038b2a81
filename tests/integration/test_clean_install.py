"""A plain ``pip install .`` (no extras) runs a worker, a producer, the scheduler and the CLI.

The venv is built once per ``pyproject.toml`` (under ``.cache/`` of the checkout,
keyed by its hash; the package itself is reinstalled, without dependencies, when
its code changed), so a rerun costs seconds. Everything here runs with that venv's
interpreter and console scripts and without the test tree on the path: a
dependency only the test extras bring would fail it.

It also pins that ``celery -A durable_graph.worker worker`` and ``durable-graph
worker`` are the same worker: both import graphs from the current directory (the
graph ships by import path only), log at the same level and print the same
readiness line.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.celery, pytest.mark.redis]

SECRET = "clean-install-secret-0123456789abcdef"
PIP_TIMEOUT = 600
RUN_TIMEOUT = 60.0

GRAPH = '''
import os
from typing import TypedDict

from durable_graph import END, START, RedisSaver, StateGraph
from durable_graph.worker import CeleryExecutor, app


class S(TypedDict):
    n: int


def double(state: S) -> dict:
    return {"n": state["n"] * 2}


builder = StateGraph(S)
builder.add_node("double", double)
builder.add_edge(START, "double")
builder.add_edge("double", END)
saver = RedisSaver.from_url(os.environ["DURABLE_GRAPH_REDIS_URL"],
                            prefix=os.environ["DURABLE_GRAPH_PREFIX"])
graph = builder.compile(checkpointer=saver, executor=CeleryExecutor(app, ship="import"))
'''

PRODUCER = '''
import json, sys
import clean_graph
config = {"configurable": {"thread_id": sys.argv[1]}}
out = clean_graph.graph.invoke({"n": int(sys.argv[2])}, config)
print("RESULT " + json.dumps(out))
'''


def _digest(*paths: Path) -> str:
    h = hashlib.sha256()
    for path in paths:
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for f in files:
            h.update(str(f.relative_to(ROOT)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def _clean_venv() -> Path:
    """A venv holding ``pip install .`` of this checkout and nothing else."""
    pyproject = ROOT / "pyproject.toml"
    venv = ROOT / ".cache" / f"clean-venv-{_digest(pyproject)}"
    python = venv / "bin" / "python"
    stamp = venv / ".code"
    code = _digest(pyproject, ROOT / "durable_graph")
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True,
                       timeout=PIP_TIMEOUT)
        _quiet([*pip, str(ROOT)])
    elif not stamp.exists() or stamp.read_text() != code:
        _quiet([*pip, "--no-deps", "--force-reinstall", str(ROOT)])
    stamp.write_text(code)
    return venv


def _quiet(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=PIP_TIMEOUT,
                          check=False)
    assert done.returncode == 0, f"{' '.join(argv)} failed:\n{done.stdout}\n{done.stderr}"


@pytest.fixture(scope="module")
def venv() -> Path:
    return _clean_venv()


@pytest.fixture
def site(redis_server: str, redis_prefix: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    """A directory with the graph and producer, and the environment every process gets."""
    (tmp_path / "clean_graph.py").write_text(GRAPH)
    (tmp_path / "producer.py").write_text(PRODUCER)
    queue = f"{redis_prefix}.q"
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path),
           "DURABLE_GRAPH_REDIS_URL": redis_server, "DURABLE_GRAPH_PREFIX": redis_prefix,
           "DURABLE_GRAPH_QUEUE": queue, "DURABLE_GRAPH_SECRET_KEY": SECRET,
           "DIR": str(tmp_path)}
    yield env
    import redis

    client = redis.Redis.from_url(redis_server, socket_timeout=10)
    client.delete(f"_kombu.binding.{queue}", queue)
    client.close()


def _start(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(argv, cwd=env["DIR"], env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


def _ready(proc: subprocess.Popen[bytes], log: Path) -> str:
    deadline = time.monotonic() + RUN_TIMEOUT
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        line = next((ln for ln in text.splitlines() if "durable-graph worker" in ln
                     and " ready: " in ln), None)
        if line is not None:
            return line
        assert proc.poll() is None, f"the worker exited:\n{text}"
        time.sleep(0.2)
    raise AssertionError(f"no readiness line:\n{log.read_text(errors='replace')}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)


def _run(venv: Path, env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(venv / "bin" / argv[0]), *argv[1:]], cwd=env["DIR"], env=env,
                          capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False)


@pytest.mark.parametrize("how", ["celery", "durable-graph"])
def test_a_plain_install_runs_worker_producer_scheduler_and_cli(
    venv: Path, site: dict[str, str], tmp_path: Path, how: str
) -> None:
    name = f"clean-{uuid.uuid4().hex[:6]}@%h"
    argv = ([str(venv / "bin" / "celery"), "-A", "durable_graph.worker", "worker"]
            if how == "celery" else [str(venv / "bin" / "durable-graph"), "worker"])
    worker = _start([*argv, "-c", "1", "-n", name], site, tmp_path / "worker.log")
    try:
        line = _ready(worker, tmp_path / "worker.log")
        assert f"ready: queue {site['DURABLE_GRAPH_QUEUE']!r}" in line
        assert f"prefix {site['DURABLE_GRAPH_PREFIX']!r}" in line

        thread_id = f"clean-{uuid.uuid4().hex[:8]}"
        done = _run(venv, site, "python", "producer.py", thread_id, "21")
        assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{_log(tmp_path)}"
        assert json.loads(done.stdout.split("RESULT ", 1)[1]) == {"n": 42}

        page = _run(venv, site, "durable-graph", "threads", "--json")
        assert page.returncode == 0, page.stderr
        assert [(t["thread_id"], t["status"]) for t in json.loads(page.stdout)["threads"]] == [
            (thread_id, "done")]
        host = name.replace("%h", os.uname().nodename)
        ping = _run(venv, site, "durable-graph", "ping", "-d", host, "--timeout", "10")
        assert ping.returncode == 0, f"{ping.stdout}\n{ping.stderr}"
        assert f"{host}: pong" in ping.stdout
        sweep = _run(venv, site, "durable-graph", "scheduler", "--once")
        assert sweep.returncode == 0, sweep.stderr
    finally:
        _stop(worker)
    log = _log(tmp_path)
    assert "INFO/MainProcess" not in log  # both at Celery's default level (WARNING)
    assert "Traceback" not in log, log


def _log(tmp_path: Path) -> str:
    return (tmp_path / "worker.log").read_text(errors="replace")
