"""``durable-graph``: run workers and the lease scheduler, inspect and resume threads.

Every command reads the same settings as the workers (``DURABLE_GRAPH_REDIS_URL``,
``DURABLE_GRAPH_PREFIX``, ``DURABLE_GRAPH_SECRET_KEY``, ...); ``--redis-url`` and
``--prefix`` override them. ``show`` and ``resume`` need no graph code here:
workers run the resumed thread, and ``show`` loads the graph the way workers do
(import path or signed blob) to name the next nodes.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import uuid
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from durable_graph.cli import ui as ui_cli
from durable_graph.errors import DurableGraphError
from durable_graph.types import Command

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The command line's parser (also used by the deploy tests)."""
    parser = argparse.ArgumentParser(
        prog="durable-graph",
        description="Operate durable-graph threads on Celery workers and Redis.",
    )
    parser.add_argument("--redis-url", help="checkpoint Redis (default: $DURABLE_GRAPH_REDIS_URL)")
    parser.add_argument("--prefix", help="key prefix (default: $DURABLE_GRAPH_PREFIX or 'dg')")
    parser.add_argument("--queue", help="Celery queue (default: $DURABLE_GRAPH_QUEUE)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    threads = sub.add_parser("threads", help="list threads, newest first")
    threads.add_argument("--status", choices=["running", "interrupted", "failed", "done"])
    threads.add_argument("--json", action="store_true", help="one JSON object per line")

    show = sub.add_parser("show", help="a thread's state, next nodes, history and last error")
    show.add_argument("thread")
    show.add_argument("--history", type=int, default=10, metavar="N",
                      help="checkpoints of history to list (default 10)")

    resume = sub.add_parser("resume", help="resume a thread on the workers and wait for it")
    resume.add_argument("thread")
    resume.add_argument("--value", metavar="JSON", help="answer to the pending interrupt")
    resume.add_argument("--update", metavar="JSON", help="state update applied on resume")
    resume.add_argument("--checkpoint", metavar="ID", help="resume (replay) from this checkpoint")
    resume.add_argument("--timeout", type=float, default=None, metavar="S",
                        help="give up waiting after S seconds (the run goes on)")
    resume.add_argument("--no-wait", action="store_true", help="enqueue and return at once")

    worker = sub.add_parser("worker", help="start a Celery worker for durable-graph jobs")
    worker.add_argument("--concurrency", "-c", type=int, help="worker processes")
    worker.add_argument("--loglevel", "-l", default="INFO")
    worker.add_argument("--pool", "-P", default="prefork")
    worker.add_argument("--hostname", "-n", help="node name (default: celery@HOST)")
    ui_cli.add_metrics_port(worker)
    worker.add_argument("celery_args", nargs=argparse.REMAINDER,
                        help="more `celery worker` options, after --")

    scheduler = sub.add_parser("scheduler", help="recover threads whose workers died")
    scheduler.add_argument("--interval", type=float, default=1.0, metavar="S",
                           help="seconds between sweeps (default 1)")
    scheduler.add_argument("--once", action="store_true", help="sweep once and exit")
    scheduler.add_argument("--loglevel", "-l", default="INFO")
    ui_cli.add_metrics_port(scheduler)
    ui_cli.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``durable-graph``; returns the exit status."""
    args = build_parser().parse_args(argv)
    _apply_overrides(args)
    try:
        handler = {"threads": _threads, "show": _show, "resume": _resume,
                   "worker": _worker, "scheduler": _scheduler, "ui": ui_cli.run}[args.command]
        return handler(args)
    except DurableGraphError as exc:
        print(f"durable-graph {args.command}: {exc}", file=sys.stderr)
        return 2


def _apply_overrides(args: argparse.Namespace) -> None:
    """Command-line settings win over the environment, for this process and workers."""
    for flag, env in (("redis_url", "DURABLE_GRAPH_REDIS_URL"), ("prefix", "DURABLE_GRAPH_PREFIX"),
                      ("queue", "DURABLE_GRAPH_QUEUE")):
        value = getattr(args, flag)
        if value:
            os.environ[env] = value


class _Ops:
    """What the operator commands share: the app, a signed saver, the run records."""

    def __init__(self) -> None:
        from durable_graph.worker.app import WorkerRuntime, create_app

        self.app = create_app()
        self.runtime = WorkerRuntime(self.app)
        self.settings = self.runtime.settings
        self.saver = self.runtime.saver(self.settings.prefix)

    def run_record(self, thread_id: str) -> Any:
        from durable_graph.worker.payload import open_sealed
        from durable_graph.worker.runs import RunSpec

        sealed = self.saver.get_run(thread_id)
        if sealed is None:
            return None
        run = open_sealed(self.runtime.codec, sealed, "run record")
        return run if isinstance(run, RunSpec) else None


def _dump(value: Any) -> str:
    return json.dumps(value, default=repr, indent=2, sort_keys=True)


def _threads(args: argparse.Namespace) -> int:
    ops = _Ops()
    for thread_id in ops.saver.list_threads(args.status):
        record = ops.saver.get_status(thread_id) or {}
        if args.json:
            print(json.dumps({k: v for k, v in record.items() if k != "error_traceback"}))
        else:
            print(f"{thread_id}\t{record.get('status')}\t{record.get('updated_at')}\t"
                  f"{record.get('last_checkpoint_id') or '-'}")
    return 0


def _show(args: argparse.Namespace) -> int:
    from durable_graph.scheduler.snapshot import build_snapshot

    ops = _Ops()
    record = ops.saver.get_status(args.thread)
    config = {"configurable": {"thread_id": args.thread, "checkpoint_ns": ""}}
    saved = ops.saver.get_tuple(config)
    if record is None and saved is None:
        print(f"durable-graph show: no thread {args.thread!r} under prefix "
              f"{ops.settings.prefix!r}", file=sys.stderr)
        return 1
    out: dict[str, Any] = {"thread_id": args.thread, "status": (record or {}).get("status")}
    run = ops.run_record(args.thread)
    graph = None
    if run is not None:
        try:
            graph = ops.runtime.loader(ops.settings.prefix).load(run.graph)
        except (DurableGraphError, ImportError) as exc:
            out["graph"] = f"cannot load ({exc}); showing raw channels"
    if saved is not None:
        if graph is not None:
            snap = build_snapshot(graph.spec, saved, args.thread, "")
            out.update(values=snap.values, next=list(snap.next),
                       interrupts=[{"id": i.id, "value": i.value} for i in snap.interrupts])
        else:
            out["channels"] = dict(saved.checkpoint.channel_values)
        out["checkpoint_id"] = saved.checkpoint.id
    out["history"] = [
        {"checkpoint_id": t.checkpoint.id, "step": t.metadata.get("step"),
         "source": t.metadata.get("source"), "ts": t.checkpoint.ts}
        for t in ops.saver.list(config, limit=args.history)
    ]
    if record and record.get("error_type"):
        out["error"] = {k: record[f"error_{k}"] for k in ("type", "message", "traceback")}
    print(_dump(out))
    return 0


def _resume(args: argparse.Namespace) -> int:
    from durable_graph.worker.events import RunEvents
    from durable_graph.worker.executor import RunHandle
    from durable_graph.worker.runs import Job

    ops = _Ops()
    run = ops.run_record(args.thread)
    if run is None:
        print(f"durable-graph resume: thread {args.thread!r} has no distributed run to resume "
              "(start it with CeleryExecutor first)", file=sys.stderr)
        return 1
    value = _json_arg(args.value, "--value")
    update = _json_arg(args.update, "--update")
    given = args.value is not None or args.update is not None
    command = Command(resume=value, update=update) if given else None
    run = replace(run, run_id=uuid.uuid4().hex)
    owner = f"run:{run.run_id}"
    lease = ops.saver.leases.acquire(args.thread, owner, ops.settings.lease_ttl)
    if lease is None:
        print(f"durable-graph resume: thread {args.thread!r} is running; wait for it",
              file=sys.stderr)
        return 1
    job = Job("start", run, owner, lease.generation, input=command, checkpoint=args.checkpoint)
    ops.runtime.dispatcher.send([job])
    print(f"resuming thread {args.thread} (run {run.run_id})", file=sys.stderr)
    if args.no_wait:
        return 0
    events = RunEvents(ops.saver.conn, ops.settings.prefix, ops.runtime.serde)
    handle = RunHandle(ops.saver, events, run)
    try:
        result = handle.result(timeout=args.timeout)
    except TimeoutError as exc:
        print(f"durable-graph resume: {exc}", file=sys.stderr)
        return 3
    except Exception as exc:
        print(f"durable-graph resume: the run failed: {type(exc).__name__}: {exc}",
              file=sys.stderr)
        return 1
    print(_dump({"status": handle.status(), "output": result}))
    return 0


def _json_arg(text: str | None, flag: str) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise SystemExit(f"durable-graph resume: {flag} is not valid JSON: {exc}") from None


def _worker(args: argparse.Namespace) -> int:
    from durable_graph.worker.config import Settings

    settings = Settings.from_env()
    settings.require_codec()
    argv = [sys.executable, "-m", "celery", "-A", "durable_graph.worker", "worker",
            "-Q", settings.queue, "--loglevel", args.loglevel, "--pool", args.pool]
    if args.concurrency:
        argv += ["--concurrency", str(args.concurrency)]
    if args.hostname:
        argv += ["--hostname", args.hostname]
    if args.metrics_port:  # the worker's main process serves it (worker.metrics)
        os.environ["DURABLE_GRAPH_METRICS_PORT"] = str(args.metrics_port)
    extra = [a for a in args.celery_args if a != "--"]
    os.execvp(argv[0], argv + extra)
    return 0  # not reached


def _scheduler(args: argparse.Namespace) -> int:
    from durable_graph.worker.recovery import LeaseScheduler

    logging.basicConfig(level=args.loglevel.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ops = _Ops()
    scheduler = LeaseScheduler(ops.app, ops.saver, interval=args.interval)
    _serve_metrics(args.metrics_port, ops)
    if args.once:
        for thread_id in scheduler.sweep():
            print(thread_id)
        return 0
    with contextlib.suppress(KeyboardInterrupt):
        scheduler.run_forever()
    return 0


def _serve_metrics(port: int | None, ops: _Ops) -> None:
    """The scheduler's ``/metrics`` (``--metrics-port``, else the environment's port)."""
    from durable_graph.worker import metrics

    port = port or metrics.port_from_env()
    if port:
        metrics.serve(port, app=ops.app, queue=ops.settings.queue)
