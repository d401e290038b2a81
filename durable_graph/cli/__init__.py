"""``durable-graph``: operate threads, and run workers and the lease scheduler.

One module per command group, as Celery's ``celery/bin/``: ``threads`` (``threads``,
``show``), ``runs`` (``resume``, ``retry``, ``cancel``, ``fork``) and ``worker``
(``worker``, ``scheduler``, ``ping``), and ``ui`` (the web view). Each command is a thin layer over
``durable_graph.ops`` (the same functions the web UI calls).

Every command reads the same settings as the workers (``DURABLE_GRAPH_REDIS_URL``,
``DURABLE_GRAPH_PREFIX``, ``DURABLE_GRAPH_SECRET_KEY``, ...); ``--redis-url``,
``--prefix`` and ``--queue`` override them. No command needs the graph's code:
``show`` reads the store, and runs started here run on the workers.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from durable_graph.cli import runs, threads, ui, worker
from durable_graph.cli._output import Formatter, exit_status, non_empty, quiet_broken_pipe
from durable_graph.errors import DurableGraphError

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The command line's parser (also used by the deploy tests)."""
    parser = argparse.ArgumentParser(
        prog="durable-graph", formatter_class=Formatter,
        description="Operate durable-graph threads on Celery workers and Redis.",
    )
    parser.add_argument("--redis-url", type=non_empty, default=None,
                        help="checkpoint Redis (default: $DURABLE_GRAPH_REDIS_URL, else "
                             "redis://127.0.0.1:6379/0)")
    parser.add_argument("--prefix", type=non_empty, default=None,
                        help="key prefix (default: $DURABLE_GRAPH_PREFIX, else 'dg')")
    parser.add_argument("--queue", type=non_empty, default=None,
                        help="Celery queue (default: $DURABLE_GRAPH_QUEUE, else 'durable_graph')")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in (threads, runs, worker, ui):
        group.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``durable-graph``; returns the exit status."""
    args = build_parser().parse_args(argv)
    _apply_overrides(args)
    try:
        status: int = args.handler(args)
        sys.stdout.flush()
        return status
    except BrokenPipeError:
        return quiet_broken_pipe()
    except (DurableGraphError, argparse.ArgumentTypeError) as exc:
        return exit_status(args.command, exc)


def _apply_overrides(args: argparse.Namespace) -> None:
    """Command-line settings win over the environment, for this process and workers."""
    for flag, env in (("redis_url", "DURABLE_GRAPH_REDIS_URL"), ("prefix", "DURABLE_GRAPH_PREFIX"),
                      ("queue", "DURABLE_GRAPH_QUEUE")):
        value = getattr(args, flag)
        if value:
            os.environ[env] = value
