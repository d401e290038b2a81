"""History that costs what changed: whole values vs deltas, and read latency by history length.

Side by side in one run, on SQLite (a temporary file) and Redis (``--redis-url``, a
fresh key prefix deleted afterwards):

* append: one node appends 1 KB to an ``operator.add`` list channel for ``--steps``
  supersteps (one invoke); bytes sent/written and held per step, with
  ``delta=False`` (whole values, the previous format) and with deltas (the default).
* chat: ``--steps`` turns of an ``add_messages`` chat, each adding a 1 KB message,
  every 10th turn also editing an earlier message by id; same figures.
* reads: latency of the latest checkpoint and of a 100-checkpoint history page at
  each ``--sizes`` history length (checkpoints written straight through the saver).
  Target: largest/smallest at most 1.3 (pages: among lengths of at least 100, since
  a history of 10 has no page of 100).

Per step, three figures (each a total divided by the steps):

* sent/written: what a step costs the store. Redis: the RESP bytes of every command
  the saver's client writes to the socket during the workload (counted in the bench's
  own connection class, whatever packer built them; reads' requests, script loads
  and EVALs carrying a script's text count, the replies read back do not). SQLite:
  the rows' payload the workload adds (``dbstat``, after less before). Not page-level
  I/O: SQLite writes whole 4 KB pages and a WAL whatever the row size, so a page count
  measures the page size; the target is what the state costs (issue 13's 104 KB a
  step was an append sending its whole list again each step).
* held: what the store holds after: SQLite the sum of its rows' stored bytes (``dbstat``
  payload of every table and index), Redis the ``MEMORY USAGE`` of every key of the prefix
  (allocator overhead included).
* values: the channel values alone (the rest is checkpoint records, the input
  channel and the pending writes every checkpoint keeps, as LangGraph does).

Then the store's size as the machine sees it ("store KB", and "x appended" from it): the
pages the workload added to the SQLite file (its rows, the free space of their b-tree pages
and any overflow pages: what ``ls`` shows once the WAL is checkpointed), Redis's memory
(held). Target (issue 13): sent/written at most 3 KB per step, the store at most 1.5x the
sum of what was appended.

    python bench/bench_history.py                       # 200 steps; 10, 1,000, 100,000
    python bench/bench_history.py --sizes 10,1000,10000 --steps 200
    python bench/bench_history.py --skip-reads --thread uuid   # UUID thread ids
    python bench/bench_history.py --skip-reads --messages plain   # as without langchain_core
"""

from __future__ import annotations

import argparse
import base64
import json
import operator
import os
import re
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import redis
from typing_extensions import TypedDict

from durable_graph import END, START, StateGraph, add_messages
from durable_graph.store.base import BaseCheckpointSaver, Checkpoint, new_checkpoint_id
from durable_graph.store.redis import RedisSaver
from durable_graph.store.sqlite import SqliteSaver


def kb() -> str:
    """1 KB of fresh random text: as incompressible as base64, never the same object twice."""
    return base64.b64encode(os.urandom(768)).decode()


class AppendState(TypedDict):
    log: Annotated[list[str], operator.add]
    n: int


class ChatState(TypedDict):
    messages: Annotated[list[Any], add_messages]


def _append_graph(steps: int) -> Any:
    g = StateGraph(AppendState)
    g.add_node("step", lambda s: {"log": [kb()], "n": s["n"] + 1})
    g.add_edge(START, "step")
    g.add_conditional_edges("step", lambda s: END if s["n"] >= steps else "step")
    return g


def _chat_graph() -> Any:
    g = StateGraph(ChatState)
    g.add_node("noop", lambda s: {})
    g.add_edge(START, "noop")
    g.add_edge("noop", END)
    return g


def run_append(saver: BaseCheckpointSaver, steps: int, thread: str = "append") -> int:
    """Run the append workload; returns the bytes appended."""
    app = _append_graph(steps).compile(checkpointer=saver)
    config = {"configurable": {"thread_id": thread}, "recursion_limit": steps + 10}
    state = app.invoke({"log": [], "n": 0}, config)
    assert len(state["log"]) == steps
    return steps * 1024


def run_chat(saver: BaseCheckpointSaver, steps: int, thread: str = "chat") -> int:
    """Run the chat workload (an edit every 10th turn); returns the bytes appended."""
    app = _chat_graph().compile(checkpointer=saver)
    config = {"configurable": {"thread_id": thread}}
    for turn in range(steps):
        new = [{"id": f"m{turn}", "role": "user", "content": kb()}]
        if turn % 10 == 9:
            new.append({"id": f"m{turn - 5}", "role": "user", "content": kb()})
        app.invoke({"messages": new}, config)
    assert len(app.get_state(config).values["messages"]) == steps
    return steps * 1024  # the edits replace: not counted as appended (the stricter ratio)


class SentCounting(redis.Connection):
    """A TCP connection that counts every byte it writes to the socket.

    ``send_packed_command`` is where every command goes out (plain, pipelined, or the
    package's own one-write pipelines), whichever packer packed it; a subclass made
    per saver (``counting_class``) keeps that saver's count apart.
    """

    sent = 0
    """Bytes written by every connection of this class."""

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        """Count, then send as redis-py does."""
        chunks = [command] if isinstance(command, (str, bytes)) else command
        type(self).sent += sum(len(c.encode() if isinstance(c, str) else c) for c in chunks)
        super().send_packed_command(command, check_health)


def counting_class() -> type[SentCounting]:
    """A fresh ``SentCounting`` subclass, its count at zero."""
    return type("SentCounter", (SentCounting,), {"sent": 0})


def redis_sent(saver: RedisSaver) -> int | None:
    """Bytes the saver's client sent so far, or None when its connections are not
    counted (a checkout whose ``from_url`` ignores ``connection_class``)."""
    kind = getattr(saver.client, "connection_pool", None)
    kind = getattr(kind, "connection_class", None)
    if isinstance(kind, type) and issubclass(kind, SentCounting):
        return kind.sent
    return None


def sqlite_size(saver: SqliteSaver) -> int:
    """Bytes the SQLite tables hold (dbstat payload, all tables and indexes)."""
    conn = saver._conn
    try:
        return int(conn.execute("SELECT SUM(payload) FROM dbstat").fetchone()[0] or 0)
    except Exception:  # dbstat not compiled in: page count instead
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        return int(pages) * int(conn.execute("PRAGMA page_size").fetchone()[0])


def redis_size(saver: RedisSaver) -> int:
    """Bytes Redis uses for every key of the saver's prefix."""
    client = saver.client
    return sum(int(client.memory_usage(k, samples=0) or 0)
               for k in client.scan_iter(match=f"*{saver.prefix}*", count=1000))


def sqlite_file(saver: SqliteSaver) -> int:
    """Bytes of the database file (its pages, the WAL's committed frames counted in: what
    the file holds after a checkpoint)."""
    conn = saver._conn
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    return int(pages) * int(conn.execute("PRAGMA page_size").fetchone()[0])


def sqlite_values(saver: SqliteSaver) -> int:
    """Bytes of the channel values alone (the blobs table, and the leaves they refer to)."""
    conn = saver._conn
    blobs = conn.execute("SELECT COALESCE(SUM(length(blob)), 0) FROM blobs").fetchone()[0]
    try:
        leaves = conn.execute("SELECT COALESCE(SUM(length(data)), 0) FROM leaves").fetchone()[0]
    except sqlite3.OperationalError:  # a checkout from before leaf dedup (--baseline)
        leaves = 0
    return int(blobs) + int(leaves)


_VALUE_KEYS = re.compile(rb":(?:blobs|vpages)$|:(?:vpg|vh|v):")
"""The keys of channel values: a namespace's hash (before redis-v12), or its value pages,
their strings and the values in keys of their own."""


def redis_values(saver: RedisSaver) -> int:
    """Bytes Redis uses for the channel values alone."""
    client = saver.client
    return sum(int(client.memory_usage(k, samples=0) or 0)
               for k in client.scan_iter(match=f"*{saver.prefix}*", count=1000)
               if _VALUE_KEYS.search(k.split(b"}", 1)[-1]))


def redis_drop(saver: RedisSaver) -> None:
    """Delete the bench's own keys (never FLUSHDB a shared server)."""
    client = saver.client
    for key in list(client.scan_iter(match=f"*{saver.prefix}*", count=1000)):
        client.unlink(key)
    saver.close()


def _written(store: str, saver: Any, before: int) -> int | None:
    """What the workload cost the store: Redis bytes sent (the count starts at the
    saver's open), SQLite the rows' payload it added (``before``: the payload at open)."""
    return redis_sent(saver) if store == "redis" else sqlite_size(saver) - before


def storage_rows(args: argparse.Namespace, tmp: Path) -> list[tuple[str, ...]]:
    """(store, workload, format, sent/written KB/step, held KB/step, values KB/step,
    store KB, x appended) per run; store KB is what the workload added to the store as the
    machine sees it: SQLite the file's pages (payload, b-tree free space and overflow
    pages), Redis the memory of its keys (held, as it is)."""
    rows: list[tuple[str, ...]] = []
    for store in ("sqlite", "redis"):
        for name, workload in (("append", run_append), ("chat", run_chat)):
            for delta in (False, True):
                saver, size, drop = _open(store, args, tmp, delta=delta)
                try:
                    before = sqlite_size(saver) if store == "sqlite" else 0
                    file_before = sqlite_file(saver) if store == "sqlite" else 0
                    thread = str(uuid.uuid4()) if args.thread == "uuid" else name
                    appended = workload(saver, args.steps, thread)
                    written = _written(store, saver, before)  # before size() sends its own
                    total = size(saver)
                    occupied = sqlite_file(saver) - file_before if store == "sqlite" else total
                    values = (sqlite_values if store == "sqlite" else redis_values)(saver)
                finally:
                    drop(saver)
                form = "deltas" if delta else "whole values"
                rows.append((store, name, form,
                             "-" if written is None else f"{written / args.steps / 1024:.2f}",
                             f"{total / args.steps / 1024:.2f}",
                             f"{values / args.steps / 1024:.2f}",
                             f"{occupied / 1024:.0f}", f"{occupied / appended:.2f}"))
    return rows


def verdict(per_step: str, ratio: float) -> str:
    """PASS when both targets hold (KB sent/written per step, store over appended),
    else what missed; a row whose bytes sent were not counted ("-") cannot pass."""
    missed = ["sent/written not counted" if per_step == "-" else
              f"{per_step} KB/step sent/written > 3" if float(per_step) > 3 else "",
              f"store {ratio:.2f}x > 1.5x appended" if ratio > 1.5 else ""]
    return "MISS (" + ", ".join(m for m in missed if m) + ")" if any(missed) else "PASS"


def baseline_rows(args: argparse.Namespace) -> list[tuple[str, ...]]:
    """The storage rows of another checkout (``--baseline``), run in a child process."""
    env = {**os.environ, "PYTHONPATH": str(Path(args.baseline).resolve())}
    out = subprocess.run(
        [sys.executable, __file__, "--storage-json", "--steps", str(args.steps),
         "--redis-url", args.redis_url, "--thread", args.thread, "--messages", args.messages],
        env=env, check=True, capture_output=True, text=True)
    return [tuple(r) for r in json.loads(out.stdout.splitlines()[-1])]


def _open(store: str, args: argparse.Namespace, tmp: Path, *, delta: bool) -> tuple[Any, Any, Any]:
    if store == "sqlite":
        return (SqliteSaver(tmp / f"{uuid.uuid4().hex}.db", delta=delta), sqlite_size,
                lambda s: s.close())
    prefix = f"bench-history-{uuid.uuid4().hex[:8]}"
    # counted over TCP only: a unix:// or rediss:// URL keeps its own class (sent "-")
    counted: dict[str, Any] = {"connection_class": counting_class()} if args.redis_url.startswith(
        "redis://") else {}
    return (RedisSaver.from_url(args.redis_url, prefix=prefix, delta=delta, **counted),
            redis_size, redis_drop)


def _fill(saver: BaseCheckpointSaver, thread: str, count: int) -> None:
    """``count`` checkpoints of a small state, parent-linked, through ``put``."""
    parent: str | None = None
    for i in range(count):
        cp = Checkpoint(id=new_checkpoint_id(parent), ts="2026-01-01T00:00:00+00:00",
                        channel_values={"n": i}, channel_versions={"n": i + 1},
                        versions_seen={})
        conf: dict[str, Any] = {"thread_id": thread, "checkpoint_ns": ""}
        if parent:
            conf["checkpoint_id"] = parent
        saver.put({"configurable": conf}, cp, {"source": "loop", "step": i}, {"n": i + 1})
        parent = cp.id


def _interleaved(calls: list[Callable[[], Any]], rounds: int) -> list[float]:
    """Median ms of each call, timed in turns (a, b, c, a, b, c, ...) so load drifts hit all."""
    samples: list[list[float]] = [[] for _ in calls]
    for _ in range(rounds):
        for call, out in zip(calls, samples, strict=True):
            start = time.perf_counter()
            call()
            out.append(time.perf_counter() - start)
    return [statistics.median(s) * 1000 for s in samples]


def read_rows(args: argparse.Namespace, tmp: Path) -> list[tuple[str, ...]]:
    """Latency by history length: every thread written first, then all timed in turns.

    So each length is read from the same store (same file or server, same size), and
    only the thread's own history length differs between the figures.
    """
    rows = []
    for store in ("sqlite", "redis"):
        saver, _, drop = _open(store, args, tmp, delta=True)
        try:
            configs = []
            for size in args.sizes:
                _fill(saver, f"h{size}", size)
                configs.append({"configurable": {"thread_id": f"h{size}", "checkpoint_ns": ""}})
            latest = _interleaved([lambda c=c, s=saver: s.get_tuple(c) for c in configs], 200)
            page = _interleaved(
                [lambda c=c, s=saver: list(s.list(c, limit=100)) for c in configs], 40)
            for size, one, hundred in zip(args.sizes, latest, page, strict=True):
                rows.append((store, f"{size:,}", f"{one:.3f}", f"{hundred:.2f}", ""))
            full = [p for p, size in zip(page, args.sizes, strict=True) if size >= 100]
            ratios = [max(latest) / min(latest), *([max(full) / min(full)] if full else [])]
            rows.append((store, "largest/smallest", f"{ratios[0]:.2f}",
                         f"{ratios[1]:.2f}" if full else "-",
                         "PASS" if max(ratios) <= 1.3 else "MISS"))
        finally:
            drop(saver)
    return rows


def _table(title: str, head: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    print(f"\n{title}")
    for row in [head, *rows]:
        print("  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)))


def _storage_table(args: argparse.Namespace, tmp: Path) -> None:
    rows = [("this", *r) for r in storage_rows(args, tmp)]
    if args.baseline:
        rows = [("baseline", *r) for r in baseline_rows(args)] + rows
    rows = [(*r, verdict(r[4], float(r[8])) if r[3].startswith("deltas") else "")
            for r in rows]
    _table(f"Store after {args.steps} steps of 1 KB (target: <= 3 KB/step sent/written, "
           "store <= 1.5x appended)",
           ("code", "store", "workload", "format", "sent/written KB/step", "held KB/step",
            "values KB/step", "store KB", "x appended", "target"),
           rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=200, help="steps / chat turns")
    parser.add_argument("--sizes", default="10,1000,100000",
                        help="history lengths for the read latency table (comma separated)")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--baseline", help="another checkout (e.g. main's worktree): its "
                        "storage figures are measured in the same run, side by side")
    parser.add_argument("--thread", choices=("name", "uuid"), default="name",
                        help="the storage workloads' thread id: the workload's name "
                        "(append, chat) or a fresh UUID, as users' thread ids usually are "
                        "(every row and key holds it)")
    parser.add_argument("--messages", choices=("installed", "plain"), default="installed",
                        help="the chat's messages: LangChain's message objects when "
                        "langchain_core is installed, or plain dicts, as an install without "
                        "it keeps them (importing langchain_core fails in this process)")
    parser.add_argument("--skip-reads", action="store_true", help="storage table only")
    parser.add_argument("--skip-storage", action="store_true", help="read latency table only")
    parser.add_argument("--storage-json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.sizes = [int(s) for s in args.sizes.split(",")]
    if args.messages == "plain":
        if "langchain_core" in sys.modules:
            parser.error("--messages plain: langchain_core is imported already")
        sys.modules["langchain_core"] = None  # type: ignore[assignment]  # import fails
    with tempfile.TemporaryDirectory() as tmp:
        if args.storage_json:  # the child of --baseline
            print(json.dumps(storage_rows(args, Path(tmp))))
            return
        if not args.skip_storage:
            _storage_table(args, Path(tmp))
        if not args.skip_reads:
            _table("Read latency (median ms) by history length (target: largest/smallest "
                   "<= 1.3)", ("store", "checkpoints", "latest", "page of 100", "target"),
                   read_rows(args, Path(tmp)))


if __name__ == "__main__":
    main()
