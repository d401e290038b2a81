"""Start, watch and stop real ``celery worker`` subprocesses for the distributed tests.

Each worker runs ``celery -A <module> worker -Q <queue> -c 1 --pool prefork`` in its
own process group (so its pool process dies with it), writes its log to a file,
and is ready once its log says ``ready.`` and its pool process registered itself
in Redis (``graphs_fixture`` pushes ``"<pid>:<parent pid>"`` to the pool key).
``stop`` sends SIGTERM to every group, then SIGKILL to those still alive.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import redis

START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0

INC_GRAPH = '''
from typing import TypedDict
from durable_graph import END, START, StateGraph

class S(TypedDict, total=False):
    n: int

def inc(state):
    return {"n": state["n"] + 1}

def build():
    g = StateGraph(S)
    g.add_node("inc", inc)
    g.add_edge(START, "inc")
    g.add_edge("inc", END)
    return g
'''
"""A module with ``build()``, a one-node graph (``n + 1``), to write where a worker of
``celery -A durable_graph.worker`` imports it (its directory) for a graph shipped to it."""


def wait_until(
    condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.05
) -> None:
    """Poll ``condition`` until it holds; TimeoutError naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


@dataclass
class Worker:
    """One ``celery worker`` subprocess."""

    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    pool_pids: set[int] = field(default_factory=set)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.proc.poll() is None


@dataclass
class WorkerPool:
    """N workers of one app module on one queue."""

    module: str
    module_dir: Path
    queue: str
    log_dir: Path
    env: Mapping[str, str]
    redis_url: str
    pool_key: str
    workers: list[Worker] = field(default_factory=list)
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    """In each worker's node name: two test runs sharing one RabbitMQ must not share a
    node name (its pidbox queue is exclusive, the second worker fails RESOURCE_LOCKED)."""

    def command(self, name: str) -> list[str]:
        return [
            sys.executable, "-m", "celery", "-A", self.module, "worker",
            "-Q", self.queue, "-c", "1", "--pool", "prefork", "-n", f"{name}-{self.tag}@%h",
            "--without-mingle", "--without-gossip", "--without-heartbeat",
            "--loglevel", "INFO",
        ]

    def start(self, count: int, timeout: float = START_TIMEOUT) -> None:
        """Start ``count`` workers and wait until every one is ready."""
        env = dict(os.environ)
        env.update(self.env)
        paths = [str(self.module_dir), env.get("PYTHONPATH", "")]
        env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            name = f"w{i}"
            log_path = self.log_dir / f"{name}.log"
            with open(log_path, "wb") as log:
                proc = subprocess.Popen(
                    self.command(name), stdout=log, stderr=subprocess.STDOUT, env=env,
                    cwd=self.log_dir, start_new_session=True,
                )
            self.workers.append(Worker(name, proc, log_path))
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            print(self.log_tails())
            raise

    def wait_ready(self, timeout: float) -> None:
        """Each worker logged ``ready.`` and its pool process registered in Redis."""
        client = redis.Redis.from_url(self.redis_url, socket_timeout=10)
        try:
            def ready() -> bool:
                for w in self.workers:
                    if not w.alive():
                        raise RuntimeError(f"worker {w.name} exited with {w.proc.returncode}")
                self._read_pool(client)
                return all("ready." in w.log() and w.pool_pids for w in self.workers)

            wait_until(ready, timeout, f"{len(self.workers)} celery workers to be ready")
        finally:
            client.close()

    def _read_pool(self, client: redis.Redis) -> None:
        by_parent = {w.proc.pid: w for w in self.workers}
        for raw in client.lrange(self.pool_key, 0, -1):
            pid, parent = (int(x) for x in raw.decode().split(":"))
            if parent in by_parent:
                by_parent[parent].pool_pids.add(pid)

    def worker_of_pid(self, pid: int) -> str | None:
        """The name of the worker whose pool process has ``pid``."""
        return next((w.name for w in self.workers if pid in w.pool_pids), None)

    def logs(self) -> str:
        return "\n".join(w.log() for w in self.workers)

    def log_tails(self, lines: int = 25) -> str:
        out = []
        for w in self.workers:
            tail = "\n".join(w.log().splitlines()[-lines:])
            out.append(f"----- {w.name} (pid {w.proc.pid}, rc {w.proc.poll()}) -----\n{tail}")
        return "\n".join(out)

    def stop(self) -> None:
        """SIGTERM every worker's process group, then SIGKILL what is left."""
        for w in self.workers:
            _signal_group(w.proc, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for w in self.workers:
            try:
                w.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for w in self.workers:
            _signal_group(w.proc, signal.SIGKILL)  # the group: pool processes too
            if w.proc.poll() is None:
                w.proc.wait(timeout=STOP_TIMEOUT)


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


@dataclass(frozen=True)
class DistEnv:
    """Where the distributed tests' producer and workers meet (exported as env)."""

    redis_url: str
    prefix: str
    queue: str
    secret: str
    amqp_url: str = ""
    """RabbitMQ of ``graphs_amqp``'s app ("" where the cluster runs on Redis only)."""
    amqp_queue: str = ""

    def as_env(self) -> dict[str, str]:
        env = {
            "DG_TEST_REDIS_URL": self.redis_url,
            "DG_TEST_PREFIX": self.prefix,
            "DG_TEST_QUEUE": self.queue,
            "DG_TEST_SECRET": self.secret,
        }
        if self.amqp_url:
            env.update(DG_TEST_AMQP_URL=self.amqp_url, DG_TEST_AMQP_QUEUE=self.amqp_queue)
        return env


@dataclass
class Cluster:
    """The running workers and the graph module as the test process sees it."""

    env: DistEnv
    pool: WorkerPool
    gf: ModuleType
    client: redis.Redis
