"""Issue 15's instrument: durable-graph on Celery against the bare canvas it replaces.

For each broker (``--broker redis``, ``--broker amqp`` = RabbitMQ, or ``both``, one
after the other, one table each), the benchmark starts ``--concurrency`` prefork
worker processes (``celery -A bench.celery_graphs worker``) on a fresh queue and
key prefix; those same processes serve durable-graph's jobs and the bare Celery
tasks. Checkpoints and Celery results are always on the Redis of ``--url``. Each
pair below is timed in interleaved rounds (every round runs both cases, in a
rotating order) after a warm-up:

a) one 3-step durable run end to end (``chain_graph``, ``durability="sync"``) vs three
   sequential bare round trips that each run one Redis commit script
   (``commit.delay(i).get()`` x 3). Ratio = durable p50 / bare p50; target <= 1.0x.
b) ``--runs`` (200) concurrent 3-step durable runs (all submitted, then each
   ``.result()``) vs as many bare Celery ``chain``s of 3 commit tasks (the inner
   links store no result, the last one does; all applied, then each ``.get()``).
   Ratio = durable runs/s / bare runs/s; target >= 1.2x.
c) one node making ``--fanout`` (1,000) ``@task`` calls (futures first, then
   ``.result()``) vs a bare Celery ``group`` of as many no-op tasks. Ratio = durable
   jobs/s / bare jobs/s; target >= 1.2x.

The baselines are fair: the bare tasks live on durable-graph's own Celery app
(``create_app``: JSON serializer, ``acks_late``, ``reject_on_worker_lost``,
prefetch 1, the same transport options), their results go to a Redis result
backend on the checkpoint Redis, and every ``.get()`` passes ``interval=0.005``
(Celery's default 0.5 s lets a join idle whenever its pub/sub drain times out,
which would flatter durable-graph; a chain's ``.get()`` does not poll its inner links'
results either). Before each case the benchmark waits (untimed) for the durable runs
started so far to end and for the queue to be empty, so no case pays for what the
one before left behind. A case still going after its timeout is stuck: it counts as
its timeout (a lower bound) in the figures, and its comparison misses its target. Under each
table: how many jobs the workers' recovery sweeps sent again (duplicate work that
slows durable-graph down).

With ``--trips``, after each table the workers are stopped and one 3-step run and
one fan-out run with every job executed in this process (``bench_celery.InProcess``;
messages still really published, to a queue no worker reads) count, per job kind,
the Redis round trips by store action or script and the broker publishes.

    python bench/bench_speed.py                  # both brokers (~10 min; more when loaded)
    python bench/bench_speed.py --quick          # smoke run (~1 min a broker)
    python bench/bench_speed.py --broker amqp    # one broker only
    python bench/bench_speed.py --quick --trips  # and round trips per job kind

Exit status: 0 when every target is met, 2 when one is missed.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_celery import PUBLISH, Cases, InProcess, Phases, Samples, interleaved, started

BROKERS = ("redis", "amqp")
DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"


@dataclass(frozen=True)
class Target:
    """One row of the table: a durable case, its bare baseline and the goal."""

    label: str
    """What is compared, with the unit of the figures."""
    durable: str
    """Name of the durable-graph case."""
    bare: str
    """Name of the bare Celery case."""
    units: int
    """Runs or jobs per sample for a rate (runs/s, jobs/s); 0 for a latency in ms."""
    goal: float
    """At most this ratio for a latency, at least this for a rate."""
    limit: float
    """Seconds after which a sample is stuck; it then counts as this long (a lower bound)."""

    def _times(self, s: Samples) -> list[float]:
        return s.values + [self.limit] * len(s.stuck)

    def figures(self, samples: dict[str, Samples]) -> tuple[float, float, float, float]:
        """(durable, bare, ratio) from the p50s: ms for a latency, per second for a rate;
        then the ratio of the best samples (the least disturbed by the machine's load)."""
        durable, bare = self._times(samples[self.durable]), self._times(samples[self.bare])
        d, b = statistics.median(durable), statistics.median(bare)
        best_d, best_b = min(durable), min(bare)
        if self.units:
            return self.units / d, self.units / b, b / d, best_b / best_d
        return d * 1e3, b * 1e3, d / b, best_d / best_b

    def met(self, ratio: float, samples: dict[str, Samples]) -> bool:
        """Whether the ratio reaches the goal and no sample of either case was stuck."""
        stuck = samples[self.durable].stuck or samples[self.bare].stuck
        ok = ratio >= self.goal if self.units else ratio <= self.goal
        return ok and not stuck

    @property
    def goal_text(self) -> str:
        return f"{'>=' if self.units else '<='} {self.goal:.1f}x"


class SpeedCases(Cases):
    """``bench_celery``'s cases plus many concurrent 3-step runs and chains."""

    def chains(self, n: int) -> None:
        """``n`` bare Celery chains of 3 commit tasks applied at once, then each joined."""
        deadline = time.monotonic() + self.timeout * 6
        results = [self.chain3_flow().apply_async() for _ in range(n)]
        for res in results:
            # follow_parents=False: with it, every 5 ms poll would also read the inner
            # links' (never stored) results from Redis, slowing the baseline down
            assert res.get(timeout=_left(deadline), interval=0.005, follow_parents=False) == 2

    def dg_runs(self, n: int) -> None:
        """``n`` 3-step durable runs submitted at once, then each waited on."""
        deadline = time.monotonic() + self.timeout * 6
        runs = [
            self.cg.chain_graph.submit(
                {"items": []}, {"configurable": {"thread_id": uuid.uuid4().hex}},
                durability="sync")
            for _ in range(n)
        ]
        self.runs += runs
        for run in runs:
            out = run.result(timeout=_left(deadline))
            assert out == {"items": ["a", "b", "c"]}, out


    def settle(self, queue: str, timeout: float = 120.0) -> float:
        """Wait until the durable runs started so far ended and ``queue`` is empty
        (seconds waited): what a case left behind (a stuck run still going, a job the
        sweep resent) must not slow the next case down."""
        started = time.monotonic()
        for run in self.runs:
            with contextlib.suppress(Exception):  # ended, failed or still stuck: go on
                run.result(timeout=_left(started + timeout))
        self.runs.clear()
        while self.backlog(queue) and time.monotonic() - started < timeout:
            time.sleep(0.02)
        return time.monotonic() - started

    def backlog(self, queue: str) -> int:
        """Messages waiting in ``queue`` on the broker."""
        if self.cg.settings.broker_kind == "amqp":
            with self.cg.app.connection_for_write() as conn:
                return int(conn.default_channel.queue_declare(queue, passive=True)
                           .message_count)
        # kombu's Redis transport: a list under the run's key prefix (priority 0)
        return int(self.cg.app.backend.client.llen(self.cg.CELERY_KEYS + queue))


def _left(deadline: float) -> float:
    return max(0.001, deadline - time.monotonic())


def sections(c: SpeedCases, args: argparse.Namespace
             ) -> list[tuple[Target, dict[str, Callable[[], Any]], int]]:
    """Each comparison, its two cases and its number of interleaved rounds."""
    runs, n = args.runs, args.fanout
    one = Target("a) one 3-step run end to end (ms, p50)", "durable-graph 3-step run, sync",
                 "bare: 3 sequential commit round trips", 0, 1.0, args.timeout)
    many = Target(f"b) {runs:,} concurrent 3-step runs (runs/s)",
                  f"durable-graph {runs:,} concurrent 3-step runs, sync",
                  f"bare: {runs:,} Celery chains of 3 commit tasks", runs, 1.2, args.timeout * 6)
    fan = Target(f"c) {n:,} @task calls from one node (jobs/s)",
                 f"durable-graph {n:,} @task calls, sync", f"bare: Celery group of {n:,} noops",
                 n, 1.2, args.timeout * 6)
    return [
        (one, {one.durable: functools.partial(c.dg_chain, "sync"), one.bare: c.seq3},
         args.reps),
        (many, {many.durable: functools.partial(c.dg_runs, runs),
                many.bare: functools.partial(c.chains, runs)}, args.many_reps),
        (fan, {fan.durable: functools.partial(c.dg_fan, n, "sync"),
               fan.bare: functools.partial(c.group, n)}, args.fan_reps),
    ]


def uptime() -> str:
    """``uptime``'s line (the machine's load), or the load averages when it is missing."""
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "load average: " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def table(broker: str, rows: list[tuple[Target, dict[str, Samples]]]) -> tuple[list[str], bool]:
    """The broker's result table, each case's spread under it; whether every target was met."""
    width = max(len(t.label) for t, _ in rows) + 2
    lines = [f"Broker {broker}: durable-graph vs bare Celery on the same workers "
             "(p50 of interleaved samples, a stuck one counted as its timeout; the verdict "
             "is on the p50 ratio)",
             f"  {'comparison':<{width}}{'durable':>10}{'bare':>10}{'ratio':>9}{'target':>10}"
             f"{'':6}{'best/best':>11}"]
    ok_all = True
    for target, samples in rows:
        durable, bare, ratio, best = target.figures(samples)
        ok = target.met(ratio, samples)
        ok_all &= ok
        stuck = len(samples[target.durable].stuck) + len(samples[target.bare].stuck)
        lines.append(f"  {target.label:<{width}}{durable:10.1f}{bare:10.1f}{ratio:8.2f}x"
                     f"{target.goal_text:>10}  {'PASS' if ok else 'MISS'}{best:10.2f}x"
                     + (f"  ({stuck} stuck)" if stuck else ""))
    lines.append("  samples (wall s): n, p10, p50, p90, stuck")
    for _, samples in rows:
        for s in samples.values():
            if s.values:
                lines.append(f"    {s.name:<{width + 18}}{len(s.values):4d}{s.pct(0.1):9.4f}"
                             f"{s.p50:9.4f}{s.pct(0.9):9.4f}{len(s.stuck):4d}")
            else:
                lines.append(f"    {s.name:<{width + 18}}   0  (every sample stuck: "
                             f"{len(s.stuck)})")
    return lines, ok_all


def worker_notes(log: Path) -> str:
    """What the workers' log says about duplicate work: resends and lease takeovers."""
    text = log.read_text(errors="replace")
    lost, taken = text.count("was lost by the broker; sent again"), text.count("was taken over")
    died = text.count("died; sent again")
    unconfirmed = text.count("published job(s) not confirmed")
    return (f"  workers' log: {lost} jobs resent as lost by the broker, {died} resent after a "
            f"process died, {taken} stale jobs of leases taken over, {unconfirmed} "
            f"unconfirmed RabbitMQ publish windows sent again")


def trips(cg: Any, sink: str, runs: int, n: int) -> list[str]:
    """Redis round trips and broker publishes per job kind, every job run in this process.

    The workers must be stopped first (their sweeps would take the runs over). Each
    round trip is counted under the outermost phase (a job kind, the producer's start
    or its wait for the end, or a background thread) and the innermost one (the store
    action, script or job publish that made it).
    """
    ph = Phases()
    lines: list[str] = []
    with InProcess(cg, sink, ph) as here:
        for label, graph, value, count in (
            ("one 3-step run, sync", cg.chain_graph, {"items": []}, runs),
            (f"{n:,} @task calls from one node, sync", cg.fan_graph, {"n": n, "total": 0}, 1),
        ):
            here.drive(graph, value, "sync")  # warm-up
            ph.reset()
            here.kinds.clear()
            for _ in range(count):
                here.drive(graph, value, "sync")
            lines += trip_table(label, count, here.kinds, ph)
    return lines


def trip_table(label: str, runs: int, kinds: dict[str, list[float]], ph: Phases) -> list[str]:
    """Per run and per job of each kind: round trips by what made them, and publishes."""
    lines = [f"Redis round trips (RTT) and broker publishes, {label}, x{runs} (in-process):",
             f"    {'where / what':<58}{'per run':>9}{'per job':>9}"]
    for outer in sorted({o for o, _ in ph.paths} | {o for o, i in ph.calls_in if i == PUBLISH}):
        jobs = len(kinds.get(outer.removeprefix("job "), [])) if outer.startswith("job ") else 0
        total = sum(c for (o, _), c in ph.paths.items() if o == outer)
        sent = ph.calls_in.get((outer, PUBLISH), 0)
        head = f"{outer}" + (f" ({jobs / runs:g} per run)" if jobs else "")
        lines.append(f"    {head:<58}{total / runs:9.1f}{_per(total, jobs)}  RTT total")
        for (o, inner), c in sorted(ph.paths.items(), key=lambda kv: -kv[1]):
            if o == outer and inner != outer:
                lines.append(f"      {inner:<56}{c / runs:9.1f}{_per(c, jobs)}")
        if sent:
            lines.append(f"      {'broker publishes':<56}{sent / runs:9.1f}{_per(sent, jobs)}")
    lines.append("")
    return lines


def _per(count: int, jobs: int) -> str:
    return f"{count / jobs:9.2f}" if jobs else f"{'':9}"


def run_broker(args: argparse.Namespace) -> int:
    """One broker's table: fresh workers, warm-up, interleaved rounds, cleanup."""
    prefix = queue = f"{args.prefix}-{args.broker}"
    broker_url = args.amqp_url if args.broker == "amqp" else None
    logdir = Path(tempfile.mkdtemp(prefix="bench-speed-"))
    with started(args.url, prefix, queue, args.concurrency, logdir, broker_url) as (cg, workers):
        shown = broker_url or args.url
        print(f"bench_speed [{args.broker}]: {args.concurrency} prefork worker processes on "
              f"queue {queue} of {shown}, checkpoints and results on {args.url}, key prefix "
              f"{prefix}; worker log {workers.log}", flush=True)
        c = SpeedCases(cg, args.timeout)
        ready = workers.wait_ready(lambda: cg.noop.delay(0).get(timeout=2))
        print(f"workers ready after {ready:.1f} s; {uptime()}", flush=True)
        rows = []
        settle = functools.partial(c.settle, queue)
        for target, cases, rounds in sections(c, args):
            if args.warmup:
                interleaved(cases, max(1, rounds * args.warmup // 100), settle)
            print(f"  {target.label}: {rounds} rounds", flush=True)
            rows.append((target, interleaved(cases, rounds, settle)))
        lines, ok = table(args.broker, rows)
        print("\n" + "\n".join(lines))
        print(f"  {uptime()}\n{worker_notes(workers.log)}\n", flush=True)
        if args.trips:
            workers.stop()
            print("\n".join(trips(cg, f"{queue}-sink", max(3, args.reps // 10), args.fanout)),
                  flush=True)
    return 0 if ok else 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Exit status: 0 when every target is met, 2 when one is missed.",
    )
    parser.add_argument("--broker", choices=(*BROKERS, "both"), default="both",
                        help="Celery broker: the checkpoint Redis, RabbitMQ, or each in turn "
                             "(default: %(default)s)")
    parser.add_argument(
        "--url", default=os.environ.get("DURABLE_GRAPH_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
        help="Redis for checkpoints, results and the redis broker (default: %(default)s)")
    parser.add_argument(
        "--amqp-url", default=os.environ.get("DURABLE_GRAPH_TEST_AMQP_URL", DEFAULT_AMQP_URL),
        help="RabbitMQ for --broker amqp (default: %(default)s)")
    parser.add_argument("--prefix", default=f"benchspeed-{uuid.uuid4().hex[:8]}",
                        help="key prefix and queue name, followed by -<broker> (default: a "
                             "fresh benchspeed-<id>); everything under it is deleted at the end")
    parser.add_argument("--concurrency", type=int, default=2,
                        help="prefork worker processes (default: %(default)s)")
    parser.add_argument("--reps", type=int, default=100,
                        help="rounds of a) (default: %(default)s)")
    parser.add_argument("--runs", type=int, default=200,
                        help="concurrent runs and chains in b) (default: %(default)s)")
    parser.add_argument("--many-reps", type=int, default=5,
                        help="rounds of b) (default: %(default)s)")
    parser.add_argument("--fanout", type=int, default=1000,
                        help="@task calls and group size in c) (default: %(default)s)")
    parser.add_argument("--fan-reps", type=int, default=5,
                        help="rounds of c) (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=20,
                        help="warm-up rounds, in percent of each section's rounds (at least "
                             "one; 0: no warm-up) (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="seconds a case of a) may take, 6x that for b) and c); a case "
                             "still going is reported as stuck (default: %(default)s)")
    parser.add_argument("--trips", action="store_true",
                        help="after each table, stop the workers and count Redis round trips "
                             "and broker publishes per job kind, every job run in this process")
    parser.add_argument("--quick", action="store_true",
                        help="smoke mode: 15 rounds of a), 50 runs and 200 calls, 3 rounds each")
    args = parser.parse_args(argv)
    if args.quick:
        args.reps, args.runs, args.many_reps, args.fanout, args.fan_reps = 15, 50, 3, 200, 3
    for name in ("concurrency", "reps", "runs", "many_reps", "fanout", "fan_reps", "warmup"):
        least = 0 if name == "warmup" else 1
        if getattr(args, name) < least:
            parser.error(f"--{name.replace('_', '-')} must be at least {least}")
    if args.broker != "both":
        return run_broker(args)
    # each broker in a process of its own: bench.celery_graphs binds its app at import
    given = sys.argv[1:] if argv is None else argv
    codes = [subprocess.run([sys.executable, __file__, *given, "--broker", broker],
                            check=False).returncode for broker in BROKERS]
    return max(codes)


if __name__ == "__main__":
    sys.exit(main())
