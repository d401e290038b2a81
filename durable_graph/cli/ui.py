"""``durable-graph ui``: serve the web view of threads over the store the CLI reads."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

from durable_graph.cli._output import Formatter, log_level, port

__all__ = ["add_metrics_port", "register", "run", "serve_metrics"]

TOKEN_ENV = "DURABLE_GRAPH_UI_TOKEN"


def register(sub: Any) -> None:
    """Add ``ui`` to the command line."""
    ui = sub.add_parser(
        "ui", help="serve the web view of threads (http://127.0.0.1:8080)",
        description="Serve the web view: threads, graphs, history, and the resume, retry, "
        f"cancel and fork actions. Off 127.0.0.1 it needs ${TOKEN_ENV}.",
        formatter_class=Formatter,
    )
    ui.add_argument("--host", default="127.0.0.1",
                    help=f"address to bind; any non-loopback address requires ${TOKEN_ENV}")
    ui.add_argument("--port", type=port, default=8080, help="port to listen on")
    ui.add_argument("--read-only", action="store_true",
                    help="show threads but refuse every action")
    ui.add_argument("--loglevel", "-l", type=log_level, default="INFO", help="log level")
    ui.set_defaults(handler=run)


def add_metrics_port(parser: argparse.ArgumentParser) -> None:
    """``--metrics-port`` of ``worker`` and ``scheduler``."""
    parser.add_argument(
        "--metrics-port", type=port, metavar="PORT",
        help="serve Prometheus metrics on http://0.0.0.0:PORT/metrics "
        "(default: $DURABLE_GRAPH_METRICS_PORT, else none)")


def serve_metrics(port: int | None, app: Any, queue: str) -> None:
    """The scheduler's ``/metrics`` (``--metrics-port``, else the environment's port)."""
    from durable_graph.worker import metrics

    port = port or metrics.port_from_env()
    if port:
        metrics.serve(port, app=app, queue=queue)


def run(args: argparse.Namespace) -> int:
    """Serve until interrupted; exit status 2 with a message for a refused setting."""
    import uvicorn

    from durable_graph.errors import DurableGraphError
    from durable_graph.ops import connect
    from durable_graph.ui.app import create_ui
    from durable_graph.ui.security import check_bind
    from durable_graph.ui.store import UiStore

    token = os.environ.get(TOKEN_ENV) or None
    try:
        check_bind(args.host, token)
    except DurableGraphError as exc:
        print(f"durable-graph ui: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=args.loglevel.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    store = UiStore(connect())
    app = create_ui(store, token=token, read_only=args.read_only)
    print(f"durable-graph ui on http://{args.host}:{args.port}/threads "
          f"(prefix {store.settings.prefix!r}{', read-only' if args.read_only else ''})",
          file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.loglevel.lower(),
                access_log=False)
    store.close()
    return 0
