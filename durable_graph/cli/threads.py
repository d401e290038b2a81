"""``threads`` and ``show``: read threads from the store, no graph code needed."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from durable_graph.cli._output import (
    WIDTH,
    Formatter,
    add_output_flags,
    age,
    cell,
    emit_json,
    print_table,
)
from durable_graph.ops import ThreadView, connect, describe_thread, list_threads, load_graph

__all__ = ["register"]

STATUSES = ["running", "interrupted", "failed", "done", "cancelled"]


def register(sub: Any) -> None:
    """Add ``threads`` and ``show`` to the command line."""
    threads = sub.add_parser(
        "threads", help="list threads, most recently updated first", formatter_class=Formatter,
        description="List threads, most recently updated first, one page at a time.")
    threads.add_argument("--status", choices=STATUSES, default=None,
                         help="only threads with this status (default: any)")
    threads.add_argument("--older-than", type=age, metavar="AGE", default=None,
                         help="only threads last updated at least AGE ago, e.g. 2h, 3d "
                              "(default: no limit)")
    threads.add_argument("--newer-than", type=age, metavar="AGE", default=None,
                         help="only threads updated within AGE, e.g. 15m (default: no limit)")
    threads.add_argument("--graph", metavar="TEXT", default=None,
                         help="only threads whose graph name contains TEXT (default: any)")
    threads.add_argument("--limit", type=int, default=50, metavar="N",
                         help="threads per page")
    threads.add_argument("--offset", type=int, default=0, metavar="N",
                         help="threads to skip (the next page's offset is printed)")
    add_output_flags(threads)
    threads.set_defaults(handler=_threads)

    show = sub.add_parser(
        "show", help="a thread's state, next nodes, interrupts, last error and history",
        formatter_class=Formatter,
        description="Everything the store holds about a thread; needs no graph code.")
    show.add_argument("thread", help="the thread id")
    show.add_argument("--history", type=int, default=10, metavar="N",
                      help="checkpoints of history to list")
    show.add_argument("--no-code", action="store_true",
                      help="never load the graph: show only what the store holds "
                           "(what happens anyway when the graph's code is not here)")
    add_output_flags(show)
    show.set_defaults(handler=_show)


def _threads(args: argparse.Namespace) -> int:
    cluster = connect()
    page = list_threads(cluster.saver, status=args.status, older_than=args.older_than,
                        newer_than=args.newer_than, graph=args.graph, limit=args.limit,
                        offset=args.offset)
    if args.json:
        emit_json({"threads": [t.to_dict() for t in page.threads], "total": page.total,
                   "next_offset": page.next_offset})
        return 0
    rows = [[t.thread_id, t.status or "-", cell(t.updated_at, True), cell(t.graph, args.full),
             cell(t.checkpoint_id, True), cell(t.error, args.full)] for t in page.threads]
    print_table(["THREAD", "STATUS", "UPDATED", "GRAPH", "CHECKPOINT", "ERROR"], rows)
    first = args.offset + 1 if page.threads else args.offset
    more = f"; next page: --offset {page.next_offset}" if page.next_offset is not None else ""
    print(f"{first}-{args.offset + len(page.threads)} of {page.total} threads{more}",
          file=sys.stderr)
    return 0


def _show(args: argparse.Namespace) -> int:
    cluster = connect()
    graph = None if args.no_code else load_graph(cluster.saver, args.thread)
    view = describe_thread(cluster.saver, args.thread, history=args.history, graph=graph)
    if args.json:
        emit_json(view.to_dict())
    else:
        _print_view(view, args.full)
    return 0


def _print_view(view: ThreadView, full: bool) -> None:
    nxt = "unknown (ask again when the run ends)" if view.next is None else (
        ", ".join(view.next) or "nothing (the thread is done)")
    step = f" (step {view.step})" if view.step is not None else ""
    print_table(["THREAD", view.thread_id], [
        ["status", view.status or "-"], ["graph", view.graph or "-"],
        ["updated", view.updated_at or "-"], ["checkpoint", f"{view.checkpoint_id or '-'}{step}"],
        ["next", nxt],
    ])
    _section("VALUES", ["KEY", "VALUE"],
             [[k, cell(v, full)] for k, v in sorted(view.values.items())])
    _section("PENDING UPDATE (applied when the thread resumes)", ["KEY", "VALUE"],
             [[k, cell(v, full)] for k, v in sorted(view.pending_updates.items())])
    _section("INTERRUPTS", ["ID", "TASK", "VALUE"],
             [[i.id, i.task_id, cell(i.value, full)] for i in view.interrupts])
    if view.error is not None:
        print(f"\nERROR\n{view.error.type}: {cell(view.error.message, full)}")
        lines = view.error.traceback.rstrip().splitlines()
        shown = lines if full else lines[-12:]
        if len(shown) < len(lines):
            print(f"  ... {len(lines) - len(shown)} more lines of traceback (--full)")
        print("\n".join(f"  {line}" for line in shown))
    _section("HISTORY", ["CHECKPOINT", "STEP", "SOURCE", "CREATED"],
             [[h.checkpoint_id, cell(h.step, full), h.source or "-", h.created_at]
              for h in view.history])
    if not full and any(len(cell(v, True)) > WIDTH for v in view.values.values()):
        print("\n(long values cut; --full shows them whole, --json for scripts)")


def _section(title: str, headers: list[str], rows: list[list[str]]) -> None:
    if rows:
        print(f"\n{title}")
        print_table(headers, rows)
