"""Distributed mode on real Celery workers next to bare Celery on the same workers, in one run.

The benchmark starts its own Celery workers (``--concurrency`` prefork processes,
``celery -A bench.celery_graphs worker``) on a fresh queue and key prefix, and
those same processes serve durable-graph's jobs and the bare Celery baseline
tasks (see ``bench/celery_graphs.py``). Measured, samples of all cases
interleaved (each round runs every case once, in a rotating order) after a
warm-up:

* latency: a bare round trip (``noop.delay().get()``), a round trip plus one
  Redis commit (``commit.delay().get()``, a Lua HSET+ZADD), a bare 3-step chain
  as 3 sequential commit round trips and as a Celery ``chain`` of 3 commit
  tasks, and durable-graph's 3-node StateGraph ``invoke`` end to end under
  ``sync`` and ``async`` durability. Per superstep is end to end / 3. Target:
  durable-graph per superstep <= 1.5x a round trip plus one commit (the
  baseline is ``commit.delay().get()``, literally "a round trip plus one
  commit" per step; the 3-step figures compare the same thing end to end, and
  the Celery ``chain`` row is shown as the stricter reference);
* throughput: one node fanning out ``--fanout`` ``@task`` calls (futures first,
  then ``.result()``) against ``group(noop.s(i) for i in range(n)).apply_async()
  .get(interval=0.005)`` (Celery's default 0.5 s interval idles the join, which
  would flatter durable-graph). Target: durable-graph >= 0.8x the bare group's jobs/s.

A run that does not finish within ``--timeout`` is counted as stuck (not timed)
and fails its target. With ``--profile`` (or ``auto`` when a target is missed)
the benchmark then shows where durable-graph's time goes: cProfile of the
producer during real runs, then the workers are stopped and every job runs in
this process (the ``durable_graph.job`` Celery task's body) with its phases
timed (exclusive time) and its Redis round trips counted; job messages are still
really published, to a queue no worker reads, so the publish cost is included.

    python bench/bench_celery.py             # full run, table at the end
    python bench/bench_celery.py --quick     # smoke run (~1 minute)
    python bench/bench_celery.py --profile always
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import copy
import cProfile
import functools
import io
import os
import pstats
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CHAIN_TARGET = 1.5
"""durable-graph per superstep / (round trip + one commit): at most this."""
FAN_TARGET = 0.8
"""durable-graph @task throughput / bare Celery group throughput: at least this."""


# -- statistics ---------------------------------------------------------------------


@dataclass
class Samples:
    """Wall times of one case, in seconds."""

    name: str
    values: list[float] = field(default_factory=list)
    stuck: list[str] = field(default_factory=list)
    """Runs that did not finish within ``--timeout`` (not in ``values``)."""

    @property
    def p50(self) -> float:
        return statistics.median(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    def pct(self, q: float) -> float:
        ordered = sorted(self.values)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def interleaved(cases: dict[str, Callable[[], Any]], rounds: int,
                settle: Callable[[], Any] | None = None) -> dict[str, Samples]:
    """Run every case once per round, rotating the order; time each call.

    A run that times out is kept aside as stuck (and reported), not timed. ``settle``,
    when given, runs (untimed) before each case: so no case pays for what the one
    before it left behind.
    """
    from celery.exceptions import TimeoutError as CeleryTimeout

    out = {name: Samples(name) for name in cases}
    names = list(cases)
    for r in range(rounds):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            if settle is not None:
                settle()
            started = time.perf_counter()
            try:
                cases[name]()
            except (TimeoutError, CeleryTimeout) as exc:
                print(f"  stuck: {name}: {exc}", flush=True)
                out[name].stuck.append(str(exc))
                continue
            out[name].values.append(time.perf_counter() - started)
    return out


# -- workers ------------------------------------------------------------------------


class Workers:
    """Celery worker processes started by the benchmark, in their own process group."""

    def __init__(self, env: dict[str, str], queue: str, concurrency: int, log: Path) -> None:
        self.log = log
        cmd = [
            sys.executable, "-m", "celery", "-A", "bench.celery_graphs", "worker",
            "-Q", queue, "-c", str(concurrency), "--pool", "prefork",
            "--without-mingle", "--without-gossip", "--loglevel", "WARNING",
            "-n", f"{queue}@%h",
        ]
        self._out = log.open("wb")
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=self._out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, ping: Callable[[], Any], timeout: float = 60.0) -> float:
        """Seconds until a real round trip through the workers succeeds."""
        started = time.monotonic()
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"workers exited ({self.proc.returncode}); see {self.log}:\n"
                                   + self.log.read_text()[-3000:])
            try:
                ping()
                return time.monotonic() - started
            except Exception:
                if time.monotonic() - started > timeout:
                    raise RuntimeError(f"workers not ready after {timeout} s; see {self.log}")

    def stop(self) -> None:
        """SIGTERM the group, SIGKILL it if it lingers."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._out.close()


# -- the cases ----------------------------------------------------------------------


class Cases:
    """Every timed operation, on the graphs and tasks of ``bench.celery_graphs``."""

    def __init__(self, cg: Any, timeout: float) -> None:
        self.cg, self.timeout = cg, timeout
        self.runs: list[Any] = []
        """Handles of the durable runs started (a stuck one may still be going)."""
        from celery import chain, group

        self._chain, self._group = chain, group

    def rt(self) -> None:
        assert self.cg.noop.delay(7).get(timeout=self.timeout) == 7

    def rt_commit(self) -> None:
        assert self.cg.commit.delay(7).get(timeout=self.timeout) == 7

    def seq3(self) -> None:
        for i in range(3):
            assert self.cg.commit.delay(i).get(timeout=self.timeout) == i

    def chain3_flow(self) -> Any:
        """A Celery ``chain`` of 3 commit tasks; only the last one stores a result."""
        cg = self.cg
        return self._chain(cg.commit_quiet.si(0), cg.commit_quiet.si(1), cg.commit.si(2))

    def chain3(self) -> None:
        assert self.chain3_flow().apply_async().get(timeout=self.timeout) == 2

    def dg_chain(self, durability: str) -> None:
        config = {"configurable": {"thread_id": uuid.uuid4().hex}}
        # invoke() is submit().result() with no timeout: a stuck run would hang the bench
        run = self.cg.chain_graph.submit({"items": []}, config, durability=durability)
        self.runs.append(run)
        out = run.result(timeout=self.timeout)
        assert out == {"items": ["a", "b", "c"]}, out

    def group(self, n: int) -> None:
        res = self._group(self.cg.noop.s(i) for i in range(n)).apply_async()
        # Celery's default interval=0.5 makes the join idle up to 0.5 s whenever its
        # pub/sub drain times out: a short one keeps the baseline at the workers' pace
        assert sum(res.get(timeout=self.timeout * 6, interval=0.005)) == n * (n - 1) // 2

    def dg_fan(self, n: int, durability: str) -> None:
        config = {"configurable": {"thread_id": uuid.uuid4().hex}}
        run = self.cg.fan_graph.submit({"n": n, "total": 0}, config, durability=durability)
        self.runs.append(run)
        out = run.result(timeout=self.timeout * 6)
        assert out == {"n": n, "total": n * (n - 1) // 2}, out


def latency_cases(c: Cases) -> dict[str, Callable[[], Any]]:
    return {
        "bare round trip (noop.delay().get())": c.rt,
        "bare round trip + 1 commit (commit.delay().get())": c.rt_commit,
        "bare 3-step: 3 sequential commit round trips": c.seq3,
        "bare 3-step: Celery chain of 3 commit tasks": c.chain3,
        "durable-graph 3-step chain, sync": functools.partial(c.dg_chain, "sync"),
        "durable-graph 3-step chain, async": functools.partial(c.dg_chain, "async"),
    }


def fan_cases(c: Cases, n: int) -> dict[str, Callable[[], Any]]:
    return {
        f"bare group of {n:,} noop tasks": functools.partial(c.group, n),
        f"durable-graph {n:,} @task calls, sync": functools.partial(c.dg_fan, n, "sync"),
        f"durable-graph {n:,} @task calls, async": functools.partial(c.dg_fan, n, "async"),
    }


# -- report -------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "MET" if ok else "MISSED"


def report(lat: dict[str, Samples], fan: dict[str, Samples], n: int) -> tuple[list[str], bool]:
    """The result tables' lines, and whether every target was met (and no run stuck)."""
    lines: list[str] = []
    names, fan_names = list(lat), list(fan)
    width = max(len(s) for s in [*names, *fan]) + 2
    lines.append(f"Latency (ms; {len(lat[names[0]].values)} interleaved samples per case)")
    lines.append(f"  {'case':<{width}}{'p50':>9}{'mean':>9}{'p90':>9}{'p50/step':>10}"
                 f"{'stuck':>7}")
    for name, s in lat.items():
        steps = 3 if "3-step" in name else 1
        lines.append(f"  {name:<{width}}{s.p50 * 1e3:9.2f}{s.mean * 1e3:9.2f}"
                     f"{s.pct(0.9) * 1e3:9.2f}{s.p50 / steps * 1e3:10.2f}{len(s.stuck):7d}")
    base = lat[names[1]].p50
    seq = lat[names[2]].p50 / 3
    chain = lat[names[3]].p50 / 3
    ok_all = True
    lines.append("")
    lines.append(f"Per superstep (p50 / 3) vs a round trip + 1 commit (p50 of "
                 f"commit.delay().get()); target <= {CHAIN_TARGET}x")
    lines.append(f"  {'durable-graph run':<{width}}{'ms/step':>9}{'ratio':>9}"
                 f"{'vs 3 seq':>10}{'vs chain':>10}  target")
    for durability, name in (("sync", names[4]), ("async", names[5])):
        step = lat[name].p50 / 3
        ratio = step / base
        ok = ratio <= CHAIN_TARGET and not lat[name].stuck
        ok_all &= ok
        note = f" ({len(lat[name].stuck)} runs stuck)" if lat[name].stuck else ""
        lines.append(f"  {'3-step chain, ' + durability:<{width}}{step * 1e3:9.2f}{ratio:8.2f}x"
                     f"{step / seq:9.2f}x{step / chain:9.2f}x  {verdict(ok)}{note}")
    lines.append("")
    lines.append(f"Fan-out throughput ({len(fan[fan_names[0]].values)} interleaved samples per "
                 f"case; jobs/s = {n:,} / p50 wall); target >= {FAN_TARGET}x the bare group")
    lines.append(f"  {'case':<{width}}{'p50 s':>9}{'jobs/s':>10}{'best/s':>10}{'ratio':>9}"
                 f"{'stuck':>7}  target")
    bare = n / fan[fan_names[0]].p50
    for i, (name, s) in enumerate(fan.items()):
        rate, best = n / s.p50, n / min(s.values)
        row = f"  {name:<{width}}{s.p50:9.3f}{rate:10.0f}{best:10.0f}"
        if i == 0:
            lines.append(f"{row}{'':9}{len(s.stuck):7d}")
            continue
        ok = rate / bare >= FAN_TARGET and not s.stuck
        ok_all &= ok
        lines.append(f"{row}{rate / bare:8.2f}x{len(s.stuck):7d}  {verdict(ok)}")
    return lines, ok_all


# -- profile ------------------------------------------------------------------------


class Phases:
    """Inclusive and exclusive time and Redis round trips of named phases, nested.

    Each thread nests its own phases. A round trip counts for the innermost phase of
    its thread (``rtts``) and for the pair (outermost phase, innermost phase) in
    ``paths``, as does every phase's call in ``calls_in``: so a job kind's own round
    trips and publishes can be told apart. Those of a thread other than the main one
    count under ``(thread <name>)`` instead (background renewals, heartbeats, ends).
    """

    def __init__(self) -> None:
        self.incl: dict[str, float] = collections.defaultdict(float)
        self.excl: dict[str, float] = collections.defaultdict(float)
        self.calls: dict[str, int] = collections.defaultdict(int)
        self.rtts: dict[str, int] = collections.defaultdict(int)
        self.paths: dict[tuple[str, str], int] = collections.defaultdict(int)
        self.calls_in: dict[tuple[str, str], int] = collections.defaultdict(int)
        self._local = threading.local()
        self._patched: list[tuple[Any, str, Any]] = []

    @property
    def _stack(self) -> list[list[Any]]:
        """This thread's open phases: [name, start, child time] each."""
        found: list[list[Any]] | None = getattr(self._local, "stack", None)
        if found is None:
            found = self._local.stack = []
        return found

    def reset(self) -> None:
        for d in (self.incl, self.excl, self.calls, self.rtts, self.paths, self.calls_in):
            d.clear()

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        frame: list[Any] = [name, time.perf_counter(), 0.0]
        stack = self._stack
        self.calls_in[(self._outer(stack, name), name)] += 1
        stack.append(frame)
        try:
            yield
        finally:
            stack.pop()
            spent = time.perf_counter() - frame[1]
            self.incl[name] += spent
            self.excl[name] += spent - frame[2]
            self.calls[name] += 1
            if stack:
                stack[-1][2] += spent

    def rtt(self) -> None:
        stack = self._stack
        inner = stack[-1][0] if stack else "(outside)"
        self.rtts[inner] += 1
        self.paths[(self._outer(stack, inner), inner)] += 1

    @staticmethod
    def _outer(stack: list[list[Any]], inner: str) -> str:
        """The outermost phase, or the thread when it is not the main one."""
        thread = threading.current_thread()
        if thread is not threading.main_thread():
            return f"(thread {thread.name})"
        return stack[0][0] if stack else inner

    def wrap(self, owner: Any, attr: str, name: str | Callable[..., str]) -> None:
        """Time every call of ``owner.attr`` as phase ``name`` (or ``name(*args)``)."""
        inner = getattr(owner, attr)
        phases = self

        @functools.wraps(inner)
        def timed(*args: Any, **kw: Any) -> Any:
            with phases.phase(name(*args, **kw) if callable(name) else name):
                return inner(*args, **kw)

        self.patch(owner, attr, timed)

    def patch(self, owner: Any, attr: str, value: Any) -> None:
        """Set ``owner.attr`` until ``restore``."""
        self._patched.append((owner, attr, owner.__dict__[attr]))
        setattr(owner, attr, value)

    def restore(self) -> None:
        for owner, attr, inner in reversed(self._patched):
            setattr(owner, attr, inner)
        self._patched.clear()


def producer_profile(c: Cases, n: int, reps: int, top: int) -> list[str]:
    """cProfile of the producer process during real chain and fan-out runs."""
    lines = []
    for label, fn, count in (
        ("3-step chain, sync", functools.partial(c.dg_chain, "sync"), reps),
        (f"{n:,} @task calls, sync", functools.partial(c.dg_fan, n, "sync"), 1),
    ):
        prof = cProfile.Profile()
        cpu0, wall0 = time.process_time(), time.perf_counter()
        prof.enable()
        for _ in range(count):
            fn()
        prof.disable()
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        lines.append(f"Producer cProfile, {label} x{count}: wall {wall / count * 1e3:.2f} ms, "
                     f"producer CPU {cpu / count * 1e3:.2f} ms per run; top by own time:")
        lines += top_stats(prof, top)
        lines.append("")
    return lines


PUBLISH = "job publish (send_task or LPUSH)"
"""The phase of one job message's publish (``InProcess``)."""


class InProcess:
    """durable-graph's jobs run in this process instead of on workers, phases timed.

    Messages the producer and the handlers send are captured and run here in FIFO
    order (the ``durable_graph.job`` Celery task's body); each is also published for
    real to ``sink`` (a queue no worker reads), so the publish cost is counted.
    Inside ``with``: the app's ``send_task`` (a RabbitMQ broker), the job messages
    built for a Redis broker (``worker/messages``) and the instrumented functions (see
    ``instrument``) are patched.
    """

    def __init__(self, cg: Any, sink: str, ph: Phases) -> None:
        from durable_graph.worker.app import JOB_TASK
        from durable_graph.worker.messages import JobMessages, PublishTemplate

        self.app, self.sink, self.ph, self._name = cg.app, sink, ph, JOB_TASK
        self.inbox: collections.deque[tuple[tuple[Any, ...], dict[str, Any]]] = (
            collections.deque())
        self.kinds: dict[str, list[float]] = collections.defaultdict(list)
        self._real_send = cg.app.send_task
        self._job_task = cg.app.tasks[JOB_TASK]
        self._messages, self._real_push = JobMessages, JobMessages.push
        self._publishes, self._real_publish = PublishTemplate, PublishTemplate.publish

    def __enter__(self) -> InProcess:
        self.app.send_task = self._send  # the dispatchers call app.send_task

        def push(messages: Any, args: list[str], *lineage: Any) -> tuple[str, str]:
            return self._push(messages, args, *lineage)

        def publish(template: Any, producer: Any, args: list[str], *lineage: Any) -> None:
            self._publish(template, producer, args, *lineage)

        self._messages.push = push  # or build the message themselves (a Redis broker)
        self._publishes.publish = publish  # or repeat Celery's publish (RabbitMQ)
        instrument(self.ph)
        return self

    def __exit__(self, *exc: object) -> None:
        self.ph.restore()
        del self.app.send_task
        self._messages.push = self._real_push
        self._publishes.publish = self._real_publish

    def _send(self, name: str, args: Any = (), kwargs: Any = None, **options: Any) -> Any:
        assert name == self._name, name
        if not args[2]:  # the template of the job messages (never sent)
            return self._real_send(name, args=args, kwargs=kwargs, **options)
        self.inbox.append((tuple(args or ()), dict(kwargs or {})))
        with self.ph.phase(PUBLISH):
            return self._real_send(name, args=args, kwargs=kwargs,
                                   **{**options, "queue": self.sink})

    def _publish(self, template: Any, producer: Any, args: list[str], *lineage: Any) -> None:
        self.inbox.append((tuple(args[:4]), {"run": args[4], "prefix": args[5],
                                             "key": args[6]}))
        sink = copy.copy(template)
        sink._options = {**template._options, "routing_key": self.sink}
        with self.ph.phase(PUBLISH):
            self._real_publish(sink, producer, args, *lineage)

    def _push(self, messages: Any, args: list[str], *lineage: Any) -> tuple[str, str]:
        self.inbox.append((tuple(args[:4]), {"run": args[4], "prefix": args[5],
                                             "key": args[6]}))
        with self.ph.phase(PUBLISH):
            key, payload = self._real_push(messages, args, *lineage)
        return key.removesuffix(self.app.conf.durable_graph_settings.queue) + self.sink, payload

    def drive(self, graph: Any, value: Any, durability: str) -> None:
        """One run: the producer's start, then every job it leads to, then the end."""
        ph = self.ph
        config = {"configurable": {"thread_id": uuid.uuid4().hex}}
        with ph.phase("producer start_run"):
            handle = graph.submit(value, config, durability=durability)
        while self.inbox:
            args, kwargs = self.inbox.popleft()
            started = time.perf_counter()
            with ph.phase(f"job {args[2]}"):
                self._job_task(*args, **kwargs)  # the Celery task's body, here
            self.kinds[args[2]].append(time.perf_counter() - started)
        with ph.phase("producer read end event"):
            handle.result(timeout=30)


def instrument(ph: Phases) -> None:
    """Time durable-graph's phases and count its Redis round trips (until ``ph.restore``)."""
    import redis as redis_mod

    import durable_graph.worker.jobs as jobs_mod
    import durable_graph.worker.runs as runs_mod
    from durable_graph.store.redis.connection import RedisConn
    from durable_graph.store.redis.jobbook import JobBook
    from durable_graph.store.redis.lease import RedisLeases
    from durable_graph.store.redis.saver import RedisSaver
    from durable_graph.worker.app import CeleryDispatcher
    from durable_graph.worker.events import RunEvents
    from durable_graph.worker.shipping import GraphLoader

    app_mod = sys.modules["durable_graph.worker.app"]  # the package's `app` shadows it

    def count(inner: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*a: Any, **k: Any) -> Any:
            ph.rtt()
            return inner(*a, **k)
        return counted

    timed: list[tuple[Any, str, str | Callable[..., str]]] = [
        (CeleryDispatcher, "seal", "seal job (serialize+sign)"),
        (CeleryDispatcher, "seal_value", "seal run record"),
        (app_mod, "open_sealed", "open sealed job (verify+decode)"),
        (GraphLoader, "load", "graph loader"),
        (RedisConn, "run", lambda self, name, *a, **k: f"redis script {name}"),
        (JobBook, "_run", lambda self, name, *a, **k: f"redis script {name}"),
        (RedisConn, "call", lambda self, action, *a, **k: f"redis: {action}"),
        (RedisLeases, "renew", "lease renew"),
        (RedisSaver, "get_tuple", "saver.get_tuple (decode)"),
        (RedisSaver, "put", "saver.put (encode)"),
        (RedisSaver, "put_writes", "saver.put_writes (encode)"),
        (RedisSaver, "put_call_writes", "saver.put_call_writes (encode)"),
        (RunEvents, "publish", "events.publish (encode)"),
        (jobs_mod, "execute_task", lambda task, *a, **k: f"execute node {task.name}"),
        (jobs_mod, "plan_tasks", "plan_tasks"),
        (jobs_mod, "with_null_writes", "with_null_writes"),
        (runs_mod, "begin_step", "begin_step"),
        (runs_mod, "end_step", "end_step"),
        (jobs_mod, "outcomes_from_pending", "outcomes_from_pending"),
        (runs_mod, "outcomes_from_pending", "outcomes_from_pending"),
    ]
    for owner, attr, name in timed:
        ph.wrap(owner, attr, name)
    real_register = JobBook.register_sent

    def register(book: JobBook, jobs: Any) -> Any:
        # one EVAL per thread, sent on a raw connection (not counted below) before the
        # publish and its reply read after it: a round trip all the same
        jobs = list(jobs)
        with ph.phase("redis script REGISTER_JOBS (reply read after the publish)"):
            for _ in {thread_id for _, thread_id, _ in jobs}:
                ph.rtt()
            return real_register(book, jobs)

    ph.patch(JobBook, "register_sent", register)
    ph.patch(redis_mod.Redis, "execute_command", count(redis_mod.Redis.execute_command))
    ph.patch(redis_mod.client.Pipeline, "execute", count(redis_mod.client.Pipeline.execute))
    # a pipeline's own round trips before it executes (redis-py's SCRIPT EXISTS)
    ph.patch(redis_mod.client.Pipeline, "immediate_execute_command",
             count(redis_mod.client.Pipeline.immediate_execute_command))


def handler_profile(cg: Any, n: int, reps: int, sink: str, top: int) -> list[str]:
    """Run every durable-graph job in this process (see ``InProcess``), phases timed,
    then one fan-out run under cProfile."""
    ph = Phases()
    lines: list[str] = []
    with InProcess(cg, sink, ph) as here:
        for label, graph, value, runs in (
            ("3-step chain, sync", cg.chain_graph, {"items": []}, reps),
            ("3-step chain, async", cg.chain_graph, {"items": []}, reps),
            (f"{n:,} @task calls, sync", cg.fan_graph, {"n": n, "total": 0}, 1),
        ):
            durability = label.rsplit(", ", 1)[1]
            here.drive(graph, value, durability)  # warm-up
            ph.reset()
            here.kinds.clear()
            wall0 = time.perf_counter()
            for _ in range(runs):
                here.drive(graph, value, durability)
            lines += format_phases(label, runs, time.perf_counter() - wall0, here.kinds, ph)
        ph.restore()
        prof = cProfile.Profile()
        prof.enable()
        here.drive(cg.fan_graph, {"n": n, "total": 0}, "sync")
        prof.disable()
    lines.append(f"In-process cProfile, {n:,} @task calls, sync (producer + every job), "
                 "top by own time:")
    lines += top_stats(prof, top)
    lines.append("  durable_graph functions by cumulative time:")
    lines += top_stats(prof, 2 * top, "cumulative", "durable_graph/")
    return lines


def top_stats(prof: cProfile.Profile, top: int, sort: str = "tottime",
              only: str | None = None) -> list[str]:
    """The ``top`` rows of a profile (of files matching ``only``) by ``sort``, indented."""
    buf = io.StringIO()
    stats = pstats.Stats(prof, stream=buf).sort_stats(sort)
    stats.print_stats(*([only] if only else []), top)
    body = buf.getvalue().splitlines()
    start = next(i for i, ln in enumerate(body) if ln.strip().startswith("ncalls"))
    short = {str(Path(statistics.__file__).parent): "<stdlib>", str(ROOT) + "/": ""}
    short.update({p: "<site>" for p in sys.path if p.endswith("site-packages")})
    out = []
    for raw in body[start:]:
        line = raw
        for long, abbrev in short.items():
            line = line.replace(long, abbrev)
        if line.strip():
            out.append("    " + line[:150])
    return out


def format_phases(label: str, runs: int, wall: float, kinds: dict[str, list[float]],
                  ph: Phases) -> list[str]:
    """A run's job counts and latencies, then its phases by exclusive time."""
    jobs = sum(len(v) for v in kinds.values())
    lines = [f"In-process handlers, {label} x{runs}: {wall / runs * 1e3:.2f} ms per run, "
             f"{jobs / runs:.0f} jobs per run (no broker hop, no worker wake-up)"]
    for kind, times in sorted(kinds.items()):
        lines.append(f"    job {kind}: {len(times) / runs:.0f} per run, p50 "
                     f"{statistics.median(times) * 1e3:.3f} ms, mean "
                     f"{statistics.fmean(times) * 1e3:.3f} ms")
    lines.append(f"    Redis round trips per run: {sum(ph.rtts.values()) / runs:.1f}")
    lines.append(f"    {'phase (exclusive time, per run)':<46}{'calls':>8}{'ms':>10}{'RTT':>8}")
    for name, spent in sorted(ph.excl.items(), key=lambda kv: -kv[1]):
        if spent / runs >= 0.005e-3:
            lines.append(f"    {name:<46}{ph.calls[name] / runs:8.1f}"
                         f"{spent / runs * 1e3:10.3f}{ph.rtts.get(name, 0) / runs:8.1f}")
    lines.append("")
    return lines


# -- main ---------------------------------------------------------------------------


def cleanup(url: str, prefix: str) -> int:
    """Delete every key of this run (durable-graph's and Celery's); how many."""
    import redis

    client = redis.Redis.from_url(url)
    gone = 0
    try:
        for pattern in ("{" + prefix + ":*", prefix + ":*"):
            batch = []
            for key in client.scan_iter(match=pattern, count=1000):
                batch.append(key)
                if len(batch) >= 500:
                    gone += client.unlink(*batch)
                    batch.clear()
            if batch:
                gone += client.unlink(*batch)
    finally:
        client.close()
    return gone


def bench_env(url: str, prefix: str, queue: str, broker_url: str | None = None) -> dict[str, str]:
    """The environment of ``bench.celery_graphs`` (producer and workers) for one run."""
    env = {
        **os.environ,
        "DURABLE_GRAPH_REDIS_URL": url,
        "DURABLE_GRAPH_PREFIX": prefix,
        "DURABLE_GRAPH_QUEUE": queue,
        "DURABLE_GRAPH_SECRET_KEY": secrets.token_hex(32),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    env.pop("DURABLE_GRAPH_BROKER_URL", None)  # the checkpoint Redis unless told otherwise
    if broker_url:
        env["DURABLE_GRAPH_BROKER_URL"] = broker_url
    return env


@contextlib.contextmanager
def started(url: str, prefix: str, queue: str, concurrency: int, logdir: Path,
            broker_url: str | None = None) -> Iterator[tuple[Any, Workers]]:
    """``bench.celery_graphs`` imported here and served by fresh workers; cleaned up after.

    On exit the workers are stopped, every key of ``prefix`` is deleted and, on a
    RabbitMQ broker, the run's queue and its profiles' ``<queue>-sink`` (see
    ``InProcess``) with their exchanges too.
    """
    env = bench_env(url, prefix, queue, broker_url)
    os.environ.pop("DURABLE_GRAPH_BROKER_URL", None)
    os.environ.update({k: v for k, v in env.items() if k.startswith("DURABLE_GRAPH_")})
    sys.path.insert(0, str(ROOT))
    import bench.celery_graphs as cg

    workers = Workers(env, queue, concurrency, logdir / "workers.log")
    try:
        yield cg, workers
    finally:
        workers.stop()
        gone = cleanup(url, prefix)
        if cg.settings.broker_kind == "amqp":
            delete_queues(cg.settings.broker, queue, f"{queue}-sink")
        print(f"(stopped workers, deleted {gone} keys under {prefix})", flush=True)


def delete_queues(broker_url: str, *queues: str) -> None:
    """Delete ``queues`` and their same-named exchanges on RabbitMQ (missing ones too)."""
    from kombu import Connection

    with Connection(broker_url, connect_timeout=10) as conn:
        for queue in queues:
            conn.default_channel.queue_delete(queue)
            conn.default_channel.exchange_delete(queue)


def run(args: argparse.Namespace) -> int:
    tag = uuid.uuid4().hex[:8]
    prefix = args.prefix or f"bench-celery-{tag}"
    queue = f"bench-celery-{tag}"
    n = args.fanout
    logdir = Path(tempfile.mkdtemp(prefix="bench-celery-"))
    code = 1
    with started(args.url, prefix, queue, args.concurrency, logdir) as (cg, workers):
        print(f"bench_celery: {args.concurrency} prefork worker processes on queue {queue}, "
              f"Redis {args.url}, key prefix {prefix}, {os.cpu_count()} CPUs, load average "
              f"{os.getloadavg()[0]:.2f}; worker log {workers.log}", flush=True)
        c = Cases(cg, args.timeout)
        ready = workers.wait_ready(lambda: cg.noop.delay(0).get(timeout=2))
        print(f"workers ready after {ready:.1f} s; warming up", flush=True)
        lat_cases, fan = latency_cases(c), fan_cases(c, n)
        interleaved(lat_cases, args.warmup)
        interleaved(fan, max(1, args.warmup // 5))
        print(f"latency: {args.reps} rounds of {len(lat_cases)} cases", flush=True)
        lat = interleaved(lat_cases, args.reps)
        print(f"fan-out: {args.fan_reps} rounds of {len(fan)} cases", flush=True)
        fans = interleaved(fan, args.fan_reps)
        lines, ok = report(lat, fans, n)
        print(f"\n(load average now {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs: "
              "other processes on this machine add noise to every figure)")
        print("\n".join(lines), flush=True)
        code = 0 if ok else 2
        if args.profile == "always" or (args.profile == "auto" and not ok):
            print("\nProfile: producer cProfile on the real workers, then every job handler "
                  "in this process\n", flush=True)
            print("\n".join(producer_profile(c, n, max(5, args.reps // 4), args.top)),
                  flush=True)
            workers.stop()
            sink = f"{queue}-sink"
            print("\n".join(handler_profile(cg, n, max(5, args.reps // 4), sink, args.top)))
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Exit status: 0 when every target is met, 2 when one is missed.",
    )
    parser.add_argument(
        "--url", default=os.environ.get("DURABLE_GRAPH_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
        help="Redis for checkpoints, broker and results (default: %(default)s)")
    parser.add_argument("--prefix", help="key prefix (default: a fresh bench-celery-<id>)")
    parser.add_argument("--concurrency", type=int, default=2,
                        help="prefork worker processes (default: %(default)s)")
    parser.add_argument("--reps", type=int, default=200,
                        help="interleaved rounds of the latency cases (default: %(default)s)")
    parser.add_argument("--fanout", type=int, default=1000,
                        help="@task calls / group size (default: %(default)s)")
    parser.add_argument("--fan-reps", type=int, default=9,
                        help="interleaved rounds of the fan-out cases (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=20,
                        help="warm-up rounds of the latency cases; a fifth as many of the "
                             "fan-out cases (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="seconds a latency case may take (a fan-out case: 6x); a run "
                             "still going then is reported as stuck (default: %(default)s)")
    parser.add_argument("--profile", choices=("auto", "always", "never"), default="auto",
                        help="profile durable-graph after the bench: auto = when a target "
                             "is missed (default: %(default)s)")
    parser.add_argument("--top", type=int, default=15, help="cProfile rows per producer profile")
    parser.add_argument("--quick", action="store_true",
                        help="smoke mode: 15 rounds, 200-call fan-out, 3 fan rounds")
    args = parser.parse_args(argv)
    if args.quick:
        args.reps, args.fanout, args.fan_reps, args.warmup = 15, 200, 3, 5
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
