"""Crashes around RedisSaver: a committing process SIGKILLed, a Redis server SIGKILLed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

import pytest

from durable_graph.errors import CheckpointStoreError
from durable_graph.store.base import Checkpoint, CheckpointTuple, new_checkpoint_id
from durable_graph.store.redis import RedisSaver

pytestmark = [pytest.mark.redis, pytest.mark.chaos]

# Commits a chain of checkpoints forever, reporting each one after put() returned.
COMMITTER = r"""
import os, sys
from durable_graph.store.base import Checkpoint, new_checkpoint_id
from durable_graph.store.redis import RedisSaver

saver = RedisSaver.from_url(sys.argv[1], prefix=sys.argv[2])
parent = {"configurable": {"thread_id": "crash", "checkpoint_ns": ""}}
latest = saver.get_tuple(parent)
step = latest.metadata["step"] + 1 if latest else 0
if latest:
    parent = latest.config
while True:
    cp = Checkpoint(
        id=new_checkpoint_id(), ts="t",
        channel_values={"step": step, "payload": os.urandom(32 * 1024).hex(), "static": "S"},
        channel_versions={"step": step + 1, "payload": step + 1, "static": 1},
        versions_seen={},
    )
    new = {"step": step + 1, "payload": step + 1}
    if step == 0:
        new["static"] = 1
    parent = saver.put(parent, cp, {"step": step}, new)
    saver.put_writes(parent, [("step", step)], f"task-{step}")
    print("committed", parent["configurable"]["checkpoint_id"], step, flush=True)
    step += 1
"""


def cfg(thread: str, checkpoint_id: str | None = None) -> dict[str, Any]:
    conf = {"thread_id": thread, "checkpoint_ns": ""}
    if checkpoint_id:
        conf["checkpoint_id"] = checkpoint_id
    return {"configurable": conf}


def assert_whole(item: CheckpointTuple) -> None:
    """A checkpoint with every value its versions name, matching its metadata."""
    values = item.checkpoint.channel_values
    assert set(values) == set(item.checkpoint.channel_versions), values.keys()
    assert values["step"] == item.metadata["step"]
    assert item.checkpoint.channel_versions["step"] == values["step"] + 1


def run_committer(url: str, prefix: str, commits: int) -> list[tuple[str, int]]:
    """Start the committer, SIGKILL it after ``commits`` reported commits; return them."""
    proc = subprocess.Popen(
        [sys.executable, "-c", COMMITTER, url, prefix],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    reported: list[tuple[str, int]] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            _, checkpoint_id, step = line.split()
            reported.append((checkpoint_id, int(step)))
            if len(reported) >= commits:
                os.kill(proc.pid, signal.SIGKILL)
                break
    finally:
        proc.kill()
        proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    return reported


def test_sigkilled_committer_loses_nothing_it_reported(redis_url: str, redis_prefix: str) -> None:
    first = run_committer(redis_url, redis_prefix, 40)
    second = run_committer(redis_url, redis_prefix, 20)  # resumes from the latest checkpoint
    assert second[0][1] > first[-1][1], "the second run resumed after the first one's commits"
    with RedisSaver.from_url(redis_url, prefix=redis_prefix) as saver:
        for checkpoint_id, step in first + second:
            got = saver.get_tuple(cfg("crash", checkpoint_id))
            assert got is not None, f"reported commit {step} is missing"
            assert got.checkpoint.channel_values["step"] == step
            assert [w.value for w in got.pending_writes] == [step]
        history = list(saver.list(cfg("crash")))
        for item in history:
            assert_whole(item)
        steps = [t.metadata["step"] for t in history]
        assert steps == sorted(set(steps), reverse=True), "no step committed twice"
        assert steps[0] >= second[-1][1]


def test_sigkilled_redis_keeps_whole_checkpoints(redis_prefix: str, spawn_redis: Any) -> None:
    with tempfile.TemporaryDirectory(prefix="dg-aof-") as workdir:
        port = spawn_redis.free_port()
        aof = ("--appendonly", "yes", "--appendfsync", "always")
        proc, url = spawn_redis.start(workdir, port, *aof)
        saver = RedisSaver.from_url(url, prefix=redis_prefix, socket_connect_timeout=0.5)
        acked: list[tuple[dict[str, Any], int]] = []
        stopped = threading.Event()

        def commit_loop() -> None:
            parent, step = cfg("t"), 0
            while not stopped.is_set():
                values = {"step": step, "payload": os.urandom(64 * 1024).hex()}
                versions = {"step": step + 1, "payload": step + 1}
                checkpoint = Checkpoint(new_checkpoint_id(), "t", values, versions, {})
                try:
                    parent = saver.put(parent, checkpoint, {"step": step}, versions)
                except CheckpointStoreError:
                    return
                acked.append((parent, step))
                step += 1

        worker = threading.Thread(target=commit_loop)
        worker.start()
        deadline = time.monotonic() + 10
        while len(acked) < 30 and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        worker.join(30)
        stopped.set()
        restarted = None
        try:
            restarted, _ = spawn_redis.start(workdir, port, *aof)
            for config, step in acked:
                got = saver.get_tuple(config)
                assert got is not None, f"acknowledged commit {step} lost"
                assert got.checkpoint.channel_values["step"] == step
            for item in saver.list(cfg("t")):
                assert_whole(item)
        finally:
            saver.close()
            if restarted is not None:
                spawn_redis.stop(restarted)
