"""``worker``, ``scheduler`` and ``ping``: run and check the distributed mode's processes."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from typing import Any

from kombu.exceptions import OperationalError
from redis.exceptions import RedisError

from durable_graph.cli._output import (
    Formatter,
    emit_json,
    log_level,
    positive_int,
    positive_seconds,
)
from durable_graph.cli.ui import add_metrics_port, serve_metrics

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add ``worker``, ``scheduler`` and ``ping`` to the command line."""
    worker = sub.add_parser(
        "worker", help="start a Celery worker for durable-graph jobs", formatter_class=Formatter,
        description="The same worker as `python -m celery -A durable_graph.worker worker` "
                    "(same import path, log level and readiness line), on the "
                    "DURABLE_GRAPH_QUEUE queue.")
    worker.add_argument("--concurrency", "-c", type=positive_int, default=None,
                        help="worker processes (default: Celery's, the number of CPUs)")
    worker.add_argument("--loglevel", "-l", type=log_level, default="WARNING",
                        help="log level (Celery's default; INFO logs every job)")
    worker.add_argument("--pool", "-P", default="prefork", help="Celery pool")
    worker.add_argument("--hostname", "-n", default=None,
                        help="node name (default: celery@HOST)")
    add_metrics_port(worker)
    worker.add_argument("celery_args", nargs=argparse.REMAINDER,
                        help="more `celery worker` options, after --")
    worker.set_defaults(handler=_worker)

    scheduler = sub.add_parser(
        "scheduler", help="the recovery sweep in a process of its own (optional)",
        formatter_class=Formatter,
        description="Every worker already runs this sweep: resend the jobs of dead worker "
                    "processes and the messages the broker lost, recover running threads "
                    "that owe no job, fail crash-looping ones. Run it where workers can "
                    "scale to zero; several are safe.")
    scheduler.add_argument("--interval", type=positive_seconds, default=1.0, metavar="S",
                           help="seconds between sweeps")
    scheduler.add_argument("--once", action="store_true", help="sweep once and exit")
    scheduler.add_argument("--loglevel", "-l", type=log_level, default="INFO",
                           help="log level")
    add_metrics_port(scheduler)
    scheduler.set_defaults(handler=_scheduler)

    ping = sub.add_parser(
        "ping", help="check that Redis and a worker answer (for healthchecks)",
        formatter_class=Formatter,
        description="Exit 0 when Redis answers and at least one worker (or the one named "
                    "with --destination) replies to a ping within the timeout, else 1.")
    ping.add_argument("--timeout", type=positive_seconds, default=5.0, metavar="S",
                      help="seconds to wait for replies")
    ping.add_argument("--destination", "-d", metavar="NODE", default=None,
                      help="only this worker, e.g. celery@$HOSTNAME (default: any worker)")
    ping.add_argument("--no-workers", action="store_true",
                      help="only check that Redis answers (a scheduler's liveness)")
    ping.add_argument("--json", action="store_true", help="print the replies as JSON")
    ping.set_defaults(handler=_ping)


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
    if args.metrics_port:  # served by the worker's main process (worker.metrics)
        os.environ["DURABLE_GRAPH_METRICS_PORT"] = str(args.metrics_port)
    extra = [a for a in args.celery_args if a != "--"]
    os.execvp(argv[0], argv + extra)
    return 0  # not reached


def _scheduler(args: argparse.Namespace) -> int:
    from durable_graph.ops import connect
    from durable_graph.worker.recovery import LeaseScheduler

    logging.basicConfig(level=args.loglevel,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cluster = connect()
    scheduler = LeaseScheduler(cluster.app, cluster.saver, interval=args.interval)
    serve_metrics(args.metrics_port, cluster.app, cluster.settings.queue)
    if args.once:
        done = scheduler.sweep_all()
        for thread_id in done.recovered:
            print(thread_id)
        print(f"resent {done.resent} job(s) of dead processes and {done.lost} lost one(s); "
              f"recovered {len(done.recovered)} idle thread(s); failed "
              f"{len(done.failed)} crash-looping thread(s)", file=sys.stderr)
        return 0
    with contextlib.suppress(KeyboardInterrupt):
        scheduler.run_forever()
    return 0


def _ping(args: argparse.Namespace) -> int:
    from durable_graph.ops import connect

    cluster = connect()
    try:
        cluster.saver.client.ping()
    except RedisError as exc:
        print(f"durable-graph ping: Redis does not answer: {exc}", file=sys.stderr)
        return 1
    if args.no_workers:
        print("redis: pong")
        return 0
    destination = [args.destination] if args.destination else None
    try:
        replies = cluster.app.control.ping(timeout=args.timeout, destination=destination) or []
    except OperationalError as exc:
        print(f"durable-graph ping: the Celery broker does not answer: {exc}", file=sys.stderr)
        return 1
    nodes = sorted(name for reply in replies for name in reply)
    if args.json:
        emit_json({"redis": "ok", "workers": nodes})
    else:
        for node in nodes:
            print(f"{node}: pong")
    if not nodes:
        wanted = args.destination or "any worker"
        print(f"durable-graph ping: no reply from {wanted} on {cluster.settings.queue!r}'s "
              f"broker within {args.timeout} s", file=sys.stderr)
        return 1
    return 0
