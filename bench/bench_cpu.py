"""CPU per run of issue 15's b): who spends it, durable-graph against bare Celery.

With producer, workers and redis-server sharing two cores, b)'s throughput is about
one over the total CPU a run costs; wall-clock figures on a loaded machine are noise,
CPU time per process much less so. This starts a private ``redis-server`` (a random
port in 20000-40000: checkpoints, broker and results, so its CPU is the runs' alone)
and ``--concurrency`` prefork workers (``bench.celery_graphs``), then runs, in
alternating order, ``--rounds`` rounds of ``--runs`` concurrent 3-step durable runs
(``durability="sync"``) and as many bare Celery chains of 3 commit tasks (the cases of
``bench_speed`` b)), and prints the CPU per run (user + system, from ``/proc``) of:
this process (the producer), the workers' main process (the consumer), the workers'
pool processes and the redis-server.

    python bench/bench_cpu.py                    # 4 rounds of 200
    python bench/bench_cpu.py --runs 100 --rounds 8
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_celery import started
from bench.bench_speed import SpeedCases

_TICK = os.sysconf("SC_CLK_TCK")
_PARTS = ("producer", "workers' main", "pool processes", "redis-server")


def cpu_of(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used; 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def children_of(pid: int) -> list[int]:
    """The processes started by ``pid``, and theirs."""
    try:
        kids = [int(k) for k in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []
    return kids + [g for k in kids for g in children_of(k)]


def sample(main: int, server: int) -> list[float]:
    """CPU seconds so far of each of ``_PARTS``."""
    return [time.process_time(), cpu_of(main), sum(map(cpu_of, children_of(main))),
            cpu_of(server)]


def measure(cases: Mapping[str, Callable[[int], None]], runs: int, rounds: int, main: int,
            server: int) -> dict[str, list[float]]:
    """CPU seconds of each part per case (summed over rounds) and the wall time, last."""
    spent = {name: [0.0] * (len(_PARTS) + 1) for name in cases}
    order = list(cases)
    for r in range(rounds):
        for name in order if r % 2 == 0 else order[::-1]:
            before, wall = sample(main, server), time.perf_counter()
            cases[name](runs)
            wall = time.perf_counter() - wall
            after = sample(main, server)
            for i, (a, b) in enumerate(zip(after, before, strict=True)):
                spent[name][i] += a - b
            spent[name][-1] += wall
    return spent


def table(spent: dict[str, list[float]], runs: int) -> list[str]:
    lines = [f"  {'case (ms of CPU per run)':<34}" + "".join(f"{p:>16}" for p in _PARTS)
             + f"{'total':>10}{'runs/s':>9}"]
    for name, parts in spent.items():
        cpu = [s / runs * 1e3 for s in parts[:-1]]
        lines.append(f"  {name:<34}" + "".join(f"{c:16.3f}" for c in cpu)
                     + f"{sum(cpu):10.3f}{runs / parts[-1]:9.1f}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200,
                        help="concurrent runs (and chains) a round (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=4,
                        help="rounds of each case, alternating (default: %(default)s)")
    parser.add_argument("--concurrency", type=int, default=2,
                        help="prefork worker processes (default: %(default)s)")
    args = parser.parse_args(argv)
    port = random.randint(20000, 40000)
    server = subprocess.Popen(["redis-server", "--port", str(port), "--save", "",
                               "--appendonly", "no"], stdout=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        tag = uuid.uuid4().hex[:8]
        with started(f"redis://127.0.0.1:{port}/0", f"benchcpu-{tag}", f"benchcpu-{tag}",
                     args.concurrency, Path(tempfile.mkdtemp(prefix="bench-cpu-"))) as (
                cg, workers):
            c = SpeedCases(cg, 30.0)
            workers.wait_ready(lambda: cg.noop.delay(0).get(timeout=2))
            c.dg_runs(args.runs // 4)  # warm-up of both
            c.chains(args.runs // 4)
            cases = {"durable-graph 3-step runs, sync": c.dg_runs,
                     "bare Celery chains of 3 commits": c.chains}
            spent = measure(cases, args.runs, args.rounds,
                            workers.proc.pid, server.pid)
            total = {name: [s / args.rounds for s in parts] for name, parts in spent.items()}
            print(f"CPU per run, {args.rounds} rounds of {args.runs} concurrent runs "
                  f"(load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs):")
            print("\n".join(table(total, args.runs)))
    finally:
        server.terminate()
        server.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
