"""Recovery with nothing but workers: how fast it heals, what a sweep costs, what it adds.

Three measurements, each on a fresh key prefix and queue of the Redis at ``--redis``:

* **recovery**: three real ``celery worker``s (prefork, ``-c 1``) and no scheduler;
  ``--kills`` times, a run's node is started, the whole worker running it is
  SIGKILLed, and the time from the kill to the node starting again on another
  worker is measured (Redis server clock), p50 and p99. A new worker replaces the
  killed one each time.
* **sweep**: the cost of one recovery sweep (``LeaseScheduler.sweep_all``) with 100,
  10,000 and 100,000 running threads in Redis, each owing one job (half of them
  claimed by live worker processes, half waiting in the queue), p50 and p99 of
  ``--sweeps`` sweeps. Target: at most 10 ms each. Shown beside it, a PING timed
  right after each sweep (the floor: a quiet sweep is one script call), and the
  first step of the sweep it replaced (listing every running thread), at the same sizes.
* **overhead**: the job-liveness machinery's cost, before vs after: the same
  3-step chain (``bench/celery_graphs.py``) on 2 real worker processes, once with
  the code of ``--base`` (default: where this branch left ``main``) and once with the
  code of ``--after`` (default: ``HEAD``), each checked out in a temporary git
  worktree, both at the same time (each with
  its own workers, queue and prefix, so the machine's load hits both alike), over
  ``--rounds`` rounds: p50 latency of one run (``sync``) and the throughput of 200
  concurrent runs. Target: at most 10% worse.

    python bench/bench_recovery.py                 # everything (about 10 minutes)
    python bench/bench_recovery.py --quick         # fewer kills, sizes and rounds
    python bench/bench_recovery.py --only sweep
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SWEEP_TARGET_MS = 10.0
OVERHEAD_TARGET = 0.10


def pct(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def delete_prefix(url: str, prefix: str) -> None:
    """UNLINK every key under ``prefix`` (bare or inside a hash tag)."""
    import redis

    client = redis.Redis.from_url(url)
    for pattern in (f"{prefix}*", f"{{{prefix}*"):
        batch: list[bytes] = []
        for key in client.scan_iter(match=pattern, count=5000):
            batch.append(key)
            if len(batch) >= 2000:
                client.unlink(*batch)
                batch = []
        if batch:
            client.unlink(*batch)
    client.close()


def bench_env(url: str, prefix: str, queue: str) -> dict[str, str]:
    return {
        "DURABLE_GRAPH_REDIS_URL": url, "DURABLE_GRAPH_PREFIX": prefix,
        "DURABLE_GRAPH_QUEUE": queue, "DURABLE_GRAPH_SECRET_KEY": secrets.token_hex(32),
    }


def start_worker(module: str, tree: Path, env: dict[str, str], queue: str, concurrency: int,
                 log: Path) -> subprocess.Popen[bytes]:
    """A ``celery worker`` of ``module`` from ``tree``, in its own process group."""
    full = {**os.environ, **env, "PYTHONPATH": str(tree)}
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", module, "worker", "-Q", queue,
             "-c", str(concurrency), "--pool", "prefork", "--without-mingle",
             "--without-gossip", "--loglevel", "INFO", "-n", f"{uuid.uuid4().hex[:6]}@%h"],
            cwd=tree, env=full, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def wait_for(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


# -- recovery time after a kill ---------------------------------------------------------


@contextlib.contextmanager
def kill_world(url: str) -> Iterator[tuple[Any, dict[str, str], str, Path]]:
    """Env for ``bench.recovery_graphs`` (imported with it), then cleanup."""
    prefix, queue = f"bench-recovery-{uuid.uuid4().hex[:8]}", ""
    queue = f"{prefix}.q"
    env = bench_env(url, prefix, queue)
    os.environ.update(env)
    sys.path.insert(0, str(ROOT))
    import bench.recovery_graphs as rg

    logs = Path(tempfile.mkdtemp(prefix="bench-recovery-"))
    try:
        yield rg, env, queue, logs
    finally:
        delete_prefix(url, prefix)
        rg.client().delete(queue, f"_kombu.binding.{queue}")


def one_kill(rg: Any, workers: dict[int, subprocess.Popen[bytes]]) -> float:
    """Start a held run, kill its worker, return seconds until its node starts again."""
    thread = uuid.uuid4().hex
    handle = rg.hold_graph.submit({"thread": thread}, {"configurable": {"thread_id": thread}})
    key = rg.starts_key(thread)
    wait_for(lambda: rg.client().llen(key) == 1, 30, "the node to start")
    parent = int(rg.client().lindex(key, 0).decode().split(":")[2])
    victim = workers.pop(parent)
    os.killpg(victim.pid, signal.SIGKILL)
    seconds, micros = rg.client().time()
    killed_at = seconds + micros / 1e6
    victim.wait(10)
    wait_for(lambda: rg.client().llen(key) == 2, 60, "the node to start again")
    handle.result(timeout=30)
    return float(rg.client().lindex(key, 1).decode().split(":")[0]) - killed_at


def bench_kills(url: str, kills: int) -> list[str]:
    with kill_world(url) as (rg, env, queue, logs):
        workers: dict[int, subprocess.Popen[bytes]] = {}

        def add() -> None:
            proc = start_worker("bench.recovery_graphs", ROOT, env, queue, 1,
                                logs / f"w{len(workers)}-{time.time():.0f}.log")
            workers[proc.pid] = proc

        for _ in range(3):
            add()
        time.sleep(6)  # let them boot
        times = []
        try:
            for i in range(kills):
                times.append(one_kill(rg, workers))
                add()
                print(f"  kill {i + 1}/{kills}: node started again after {times[-1]:.2f} s",
                      file=sys.stderr)
                time.sleep(4)
        finally:
            for proc in workers.values():
                stop(proc)
    return [
        f"recovery after a whole worker is SIGKILLed mid-node ({kills} kills, 3 workers, "
        "no scheduler):",
        f"  kill -> node running again elsewhere: p50 {pct(times, 0.5):.2f} s, "
        f"p99 {pct(times, 0.99):.2f} s, max {max(times):.2f} s",
    ]


# -- sweep cost -------------------------------------------------------------------------


def populate(saver: Any, book: Any, n: int, workers: list[str]) -> None:
    """``n`` running threads with a lease, each owing one job; every other one claimed."""
    from durable_graph.store.redis import job_scripts
    from durable_graph.store.redis.keys import ThreadKeys, jobs_of, status_key

    client = saver.client
    register = client.register_script(job_scripts.REGISTER_JOBS)
    claim = client.register_script(job_scripts.CLAIM_JOB)
    expires = int(time.time() * 1000) + 3_600_000
    for start in range(0, n, 2000):
        pipe = client.pipeline(transaction=False)
        for i in range(start, min(n, start + 2000)):
            thread, key = f"t{i}", f"job{i}"
            keys = ThreadKeys(saver.prefix, thread)
            pipe.hset(keys.record, mapping={"status": "running", "run": "x"})
            pipe.zadd(status_key(saver.prefix, thread, "running"), {thread: i})
            pipe.hset(keys.lease, mapping={"owner": "run:x", "gen": 1, "expires": expires})
            bucket = jobs_of(saver.prefix, thread).ordered()
            register(keys=bucket, args=[key, thread, "{}"], client=pipe)
            if i % 2:
                claim(keys=bucket, args=[key, workers[i % len(workers)]], client=pipe)
        pipe.execute()
    for worker in workers:
        book.heartbeat(worker, 3600)


def time_sweeps(scheduler: Any, sweeps: int) -> tuple[list[float], list[float]]:
    """Milliseconds of each sweep, and of a PING right after it (the machine's noise)."""
    out, pings = [], []
    for _ in range(sweeps):
        started = time.perf_counter()
        done = scheduler.sweep_all()
        out.append((time.perf_counter() - started) * 1000)
        assert not (done.resent or done.lost or done.recovered or done.failed), done
        started = time.perf_counter()
        scheduler.saver.client.ping()
        pings.append((time.perf_counter() - started) * 1000)
    return out, pings


def bench_sweep(url: str, sizes: list[int], sweeps: int) -> list[str]:
    from durable_graph.worker import create_app
    from durable_graph.worker.app import WorkerRuntime
    from durable_graph.worker.recovery import LeaseScheduler

    lines = [f"one recovery sweep ({sweeps} sweeps each; target <= {SWEEP_TARGET_MS:.0f} ms):",
             "  (one sweep with nothing expired is one Lua script call: a PING is its floor)",
             f"  {'running threads':>15} | {'sweep p50':>9} | {'sweep p99':>9} | "
             f"{'PING p50':>8} | {'PING p99':>8} | {'old first step: list running':>28}"]
    ok = True
    for n in sizes:
        prefix = f"bench-sweep-{uuid.uuid4().hex[:8]}"
        app = create_app(url, prefix=prefix, queue=f"{prefix}.q", secret_key=secrets.token_hex(16))
        scheduler = LeaseScheduler(app, WorkerRuntime.of(app).saver(prefix))
        try:
            populate(scheduler.saver, scheduler.book, n, [f"host:{p}:w" for p in range(50)])
            scheduler.sweep_all()  # the first one connects to the broker (its probe)
            ms, pings = time_sweeps(scheduler, sweeps)
            started = time.perf_counter()
            listed = scheduler.saver.list_threads("running")
            old = (time.perf_counter() - started) * 1000
            assert len(listed) == n
        finally:
            delete_prefix(url, prefix)
            scheduler.saver.client.delete(f"{prefix}.q")
        ok = ok and pct(ms, 0.99) <= SWEEP_TARGET_MS
        lines.append(f"  {n:>15,} | {pct(ms, 0.5):>6.2f} ms | {pct(ms, 0.99):>6.2f} ms | "
                     f"{pct(pings, 0.5):>5.2f} ms | {pct(pings, 0.99):>5.2f} ms | "
                     f"{old:>25.1f} ms")
    lines.append(f"  sweep target: {'MET' if ok else 'MISSED'}")
    return lines


# -- liveness overhead, before vs after ------------------------------------------------


def child_overhead(url: str, reps: int, concurrent: int) -> dict[str, Any]:
    """Run in a subprocess whose PYTHONPATH is the tree under test."""
    prefix = f"bench-ovh-{uuid.uuid4().hex[:8]}"
    queue = f"{prefix}.q"
    env = bench_env(url, prefix, queue)
    os.environ.update(env)
    tree = Path(os.environ["PYTHONPATH"])
    import bench.celery_graphs as cg
    import durable_graph

    logs = Path(tempfile.mkdtemp(prefix="bench-ovh-"))
    worker = start_worker("bench.celery_graphs", tree, env, queue, 2, logs / "w.log")
    try:
        return {"code": durable_graph.__file__, **measure(cg, reps, concurrent)}
    finally:
        stop(worker)
        delete_prefix(url, prefix)


def measure(cg: Any, reps: int, concurrent: int) -> dict[str, Any]:
    def one(durability: str = "sync") -> float:
        started = time.perf_counter()
        t = uuid.uuid4().hex
        out = cg.chain_graph.submit({"items": []}, {"configurable": {"thread_id": t}},
                                    durability=durability).result(timeout=60)
        assert out == {"items": ["a", "b", "c"]}, out
        return time.perf_counter() - started

    deadline = time.monotonic() + 60
    while True:  # until the workers answer
        try:
            one()
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
    for _ in range(10):
        one()
    latency = [one() for _ in range(reps)]
    started = time.perf_counter()
    handles = [cg.chain_graph.submit({"items": []},
                                     {"configurable": {"thread_id": uuid.uuid4().hex}},
                                     durability="sync") for _ in range(concurrent)]
    for h in handles:
        assert h.result(timeout=120) == {"items": ["a", "b", "c"]}
    elapsed = time.perf_counter() - started
    return {"p50_ms": statistics.median(latency) * 1000, "runs_per_s": concurrent / elapsed}


@contextlib.contextmanager
def base_tree(base: str) -> Iterator[Path]:
    """A temporary git worktree of revision ``base`` (removed after)."""
    path = Path(tempfile.mkdtemp(prefix="bench-base-"))
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), base],
                   check=True, capture_output=True)
    try:
        yield path
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(path)],
                       check=False, capture_output=True)


def start_child(tree: Path, args: argparse.Namespace) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--child", "--redis", args.redis,
         "--reps", str(args.reps), "--concurrent", str(args.concurrent)],
        env={**os.environ, "PYTHONPATH": str(tree)}, cwd=tree, stdout=subprocess.PIPE,
        text=True)


def result_of(child: subprocess.Popen[str]) -> dict[str, Any]:
    out, _ = child.communicate(timeout=900)
    if child.returncode:
        raise RuntimeError(f"an overhead child failed ({child.returncode})")
    return dict(json.loads(out.strip().splitlines()[-1]))


def bench_overhead(args: argparse.Namespace) -> list[str]:
    base = args.base or subprocess.run(
        ["git", "-C", str(ROOT), "merge-base", "HEAD", "main"], check=True,
        capture_output=True, text=True).stdout.strip()
    results: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
    with base_tree(base) as before, base_tree(args.after) as after:
        trees = {"before": before, "after": after}
        for r in range(args.rounds):
            # both at once, each on its own workers: the machine's load hits both alike
            children = {name: start_child(tree, args) for name, tree in trees.items()}
            for name, child in children.items():
                results[name].append(result_of(child))
                print(f"  round {r + 1} {name}: {results[name][-1]}", file=sys.stderr)
    med = {name: {k: statistics.median(x[k] for x in rs) for k in ("p50_ms", "runs_per_s")}
           for name, rs in results.items()}
    lat = med["after"]["p50_ms"] / med["before"]["p50_ms"] - 1
    thr = 1 - med["after"]["runs_per_s"] / med["before"]["runs_per_s"]
    ok = lat <= OVERHEAD_TARGET and thr <= OVERHEAD_TARGET
    return [
        f"job liveness overhead (before = {base[:10]}, after = {args.after}; 2 worker processes, "
        f"median of {args.rounds} rounds run side by side; target <= {OVERHEAD_TARGET:.0%} worse):",
        f"  {'':32} | {'before':>10} | {'after':>10} | change",
        f"  {'3-step run latency p50 (sync)':32} | {med['before']['p50_ms']:>7.1f} ms | "
        f"{med['after']['p50_ms']:>7.1f} ms | {lat:+.1%}",
        f"  {f'{args.concurrent} concurrent 3-step runs':32} | "
        f"{med['before']['runs_per_s']:>6.1f} /s | {med['after']['runs_per_s']:>6.1f} /s | "
        f"{-thr:+.1%}",
        f"  overhead target: {'MET' if ok else 'MISSED'}",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis", default=os.environ.get("DURABLE_GRAPH_REDIS_URL",
                                                          "redis://127.0.0.1:6379/0"))
    parser.add_argument("--only", default="recovery,sweep,overhead",
                        help="comma-separated sections to run")
    parser.add_argument("--kills", type=int, default=20, help="kills timed for recovery")
    parser.add_argument("--sweeps", type=int, default=50, help="sweeps timed per size")
    parser.add_argument("--sizes", default="100,10000,100000", help="running threads per case")
    parser.add_argument("--rounds", type=int, default=3, help="before/after rounds")
    parser.add_argument("--reps", type=int, default=60, help="timed runs for latency")
    parser.add_argument("--concurrent", type=int, default=200, help="runs for throughput")
    parser.add_argument("--base", help="git revision of 'before' (default: merge-base with main)")
    parser.add_argument("--after", default="HEAD", help="git revision of 'after' (default: HEAD)")
    parser.add_argument("--quick", action="store_true", help="5 kills, 100 and 10,000 threads, "
                        "1 round of 20 runs")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child_overhead(args.redis, args.reps, args.concurrent)))
        return 0
    if args.quick:
        args.kills, args.sizes, args.rounds, args.reps = 5, "100,10000", 1, 20
    lines = [f"(load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs at the start)"]
    sections = set(args.only.split(","))
    if "recovery" in sections:
        lines += bench_kills(args.redis, args.kills)
    if "sweep" in sections:
        lines += bench_sweep(args.redis, [int(s) for s in args.sizes.split(",")], args.sweeps)
    if "overhead" in sections:
        lines += bench_overhead(args)
    lines.append(f"(load average {os.getloadavg()[0]:.2f} at the end)")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
