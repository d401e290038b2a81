"""Bad input at the worker layer, on real ``celery worker`` subprocesses and real Redis.

One table of things anyone who can write to the broker may push onto the queue
(not JSON, JSON that is no message, a forged job naming a live run); after each,
the workers are still up, nothing was run for it, and the live run finishes as
if nothing happened (its producer hears nothing from a message nobody verified).
Then workers that must not start (no key, a short key, also as plain
``celery -A durable_graph.worker worker``), and a ``unix://`` Redis URL used as
broker and store by a worker that runs a graph shipped to it.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from dg_workers import INC_GRAPH, Cluster, wait_until

from durable_graph.store.codec import SigningCodec
from durable_graph.worker.app import JOB_TASK
from durable_graph.worker.payload import seal
from durable_graph.worker.transport import dead_letter_key

pytestmark = [pytest.mark.celery, pytest.mark.redis]

TIMEOUT = 30.0


def _cfg(name: str) -> dict[str, Any]:
    return {"configurable": {"thread_id": f"{name}-{uuid.uuid4().hex[:8]}"}}


def _push(raw: bytes) -> Callable[[Cluster], None]:
    def push(cluster: Cluster) -> None:
        cluster.client.lpush(cluster.env.queue, raw)

    return push


def _forged(payload: str) -> Callable[[Cluster], None]:
    """A job message naming a live run (its thread, run id and prefix) with a bad payload."""
    def send(cluster: Cluster) -> None:
        live = cluster.live  # type: ignore[attr-defined]
        cluster.gf.app.send_task(
            JOB_TASK, args=[live.thread_id, "task-1", "task", payload],
            kwargs={"run": live.run_id, "prefix": cluster.env.prefix}, queue=cluster.env.queue)

    return send


ROWS: list[tuple[str, Callable[[Cluster], None], str]] = [
    ("not JSON", _push(b"\xff\xfe this is not json"), "not a message"),
    ("JSON that is not a message", _push(b"[1, 2, 3]"), "not a message"),
    ("a message with no properties", _push(b'{"body": "x"}'), "not a message"),
    ("an unsigned job naming a live run", _forged("not a sealed payload"), "refused"),
    ("a job signed with another key naming a live run",
     _forged(seal(SigningCodec.from_secret("another-key-" + "k" * 40), {"job": 1})),
     "refused"),
]


@pytest.mark.parametrize(("name", "inject", "logged"), ROWS, ids=[r[0] for r in ROWS])
def test_hostile_queue_items_are_dropped_and_the_live_run_is_untouched(
    cluster: Cluster, name: str, inject: Callable[[Cluster], None], logged: str
) -> None:
    gf = cluster.gf
    config = _cfg("live")
    before = cluster.pool.logs().count(logged)
    dead_before = cluster.client.llen(dead_letter_key(cluster.env.queue))
    handle = gf.slow_graph.submit({"value": 1}, config)  # runs ~1 s on a worker
    cluster.live = handle  # type: ignore[attr-defined]
    inject(cluster)
    wait_until(lambda: cluster.pool.logs().count(logged) > before, TIMEOUT,
               f"the workers to log {logged!r}")
    # the live run finishes normally: a forged message did not end or fail it
    assert handle.result(timeout=TIMEOUT) == {"value": 2, "done": True}
    assert handle.status() == "done"
    assert all(w.alive() for w in cluster.pool.workers), cluster.pool.log_tails()
    if logged == "not a message":  # kept for an operator to look at
        assert cluster.client.llen(dead_letter_key(cluster.env.queue)) == dead_before + 1
    # and the workers still take work
    assert gf.chain.invoke({"value": 1, "log": []}, _cfg("after"))["value"] > 1


# -- workers that must not start ----------------------------------------------------


def _start_worker(env: dict[str, str], cwd: Path, queue: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "durable_graph.worker", "worker", "-Q", queue,
         "-c", "1", "--pool", "solo", "--without-mingle", "--without-gossip",
         "--without-heartbeat", "--loglevel", "INFO"],
        env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def _base_env(redis_url: str, prefix: str) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("DURABLE_GRAPH_")}
    env.update({"DURABLE_GRAPH_REDIS_URL": redis_url, "DURABLE_GRAPH_PREFIX": prefix})
    return env


@pytest.mark.parametrize(("key", "words"), [
    (None, ("no signing key is set", "secrets.token_hex(32)")),
    ("short-key-31-bytes-long-0123456", ("31 bytes, shorter than 32", "secrets.token_hex(32)")),
], ids=["no key", "a 31-byte key"])
def test_a_worker_without_a_strong_key_refuses_to_start(
    redis_url: str, redis_prefix: str, tmp_path: Path, key: str | None, words: tuple[str, ...]
) -> None:
    env = _base_env(redis_url, redis_prefix)
    if key is not None:
        env["DURABLE_GRAPH_SECRET_KEY"] = key
    proc = _start_worker(env, tmp_path, f"{redis_prefix}-q")
    try:
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode != 0, out
    for word in words:
        assert word in out
    assert "ready." not in out


# -- a unix:// Redis URL -------------------------------------------------------------


def test_a_unix_socket_redis_url_works_as_broker_and_store(
    spawn_redis: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sock = tmp_path / "redis.sock"
    _, tcp_url = spawn_redis.start(str(tmp_path), None, "--unixsocket", str(sock),
                                   "--unixsocketperm", "700")
    url = f"unix://{sock}?db=0"
    secret = "unix-socket-test-secret-" + "0" * 40
    env = _base_env(url, "dg-unix")
    env["DURABLE_GRAPH_SECRET_KEY"] = secret
    proc = _start_worker(env, tmp_path, "dg-unix-q")
    try:
        (tmp_path / "unix_graph.py").write_text(INC_GRAPH)
        monkeypatch.syspath_prepend(str(tmp_path))
        import unix_graph

        from durable_graph.store.redis import RedisSaver
        from durable_graph.worker import CeleryExecutor, create_app

        app = create_app(url, prefix="dg-unix", queue="dg-unix-q", secret_key=secret)
        graph = unix_graph.build().compile(
            checkpointer=RedisSaver.from_url(url, prefix="dg-unix"),
            executor=CeleryExecutor(app, ship="pickle"))
        deadline = time.monotonic() + TIMEOUT
        handle = graph.submit({"n": 1}, {"configurable": {"thread_id": "u1"}})
        assert handle.result(timeout=max(1.0, deadline - time.monotonic())) == {"n": 2}
    finally:
        proc.kill()
        out, _ = proc.communicate(timeout=30)
    assert "Unrecoverable error" not in out, out
    assert "ready." in out


# -- a fresh producer process ---------------------------------------------------------

_FRESH_PRODUCER = '''
import json, os, sys
from typing import TypedDict
from durable_graph import END, START, StateGraph
from durable_graph.store.redis import RedisSaver
from durable_graph.worker import CeleryExecutor, create_app
from durable_graph.worker.shipping import locate

class S(TypedDict, total=False):
    n: int

def double(state):
    return {"n": state["n"] * 2}

app = create_app(os.environ["DG_TEST_REDIS_URL"], prefix=os.environ["DG_TEST_PREFIX"],
                 queue=os.environ["DG_TEST_QUEUE"], secret_key=os.environ["DG_TEST_SECRET"])
saver = RedisSaver.from_url(os.environ["DG_TEST_REDIS_URL"], prefix=os.environ["DG_TEST_PREFIX"])
b = StateGraph(S)
b.add_node("double", double)
b.add_edge(START, "double")
b.add_edge("double", END)
graph = b.compile(checkpointer=saver, executor=CeleryExecutor(app))  # a name in __main__

mode, thread = sys.argv[1], sys.argv[2]
cfg = {"configurable": {"thread_id": thread}}
if mode == "state":  # this process never started a run
    print("RESULT", json.dumps(graph.get_state(cfg).values))
else:
    print("RESULT", json.dumps({"path": locate(graph), "out": graph.invoke({"n": 21}, cfg)}))
'''


def _fresh(cluster: Cluster, tmp_path: Path, *args: str) -> Any:
    import json
    import os

    script = tmp_path / "fresh_producer.py"
    script.write_text(_FRESH_PRODUCER)
    env = {**os.environ, **cluster.env.as_env()}
    proc = subprocess.run([sys.executable, str(script), *args], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=TIMEOUT + 30, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr
    return json.loads(lines[-1].removeprefix("RESULT "))


def test_a_fresh_producer_reads_state_and_ships_a_main_script_graph_by_value(
    cluster: Cluster, tmp_path: Path
) -> None:
    config = _cfg("fresh")
    thread = config["configurable"]["thread_id"]
    ran = _fresh(cluster, tmp_path, "run", thread)
    assert ran == {"path": None, "out": {"n": 42}}  # never "__main__:graph"
    assert _fresh(cluster, tmp_path, "state", thread) == {"n": 42}
