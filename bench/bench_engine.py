"""Per-superstep overhead of durable_graph next to LangGraph, on the same graphs, in one run.

Two graphs with trivial nodes, so what is timed is the engine, not the work:

* ``chain``: ``--steps`` nodes in a line, each adding 1 to an int counter
  (``--steps`` supersteps);
* ``fanout``: a split node ``Send``-ing to ``--steps`` copies of a worker whose
  results meet in an ``Annotated[list, operator.add]`` reducer, then a join node
  (3 supersteps).

Each runs without a checkpointer, with ``InMemorySaver`` under the durability
modes ``sync``, ``async`` and ``exit``, and with ``SqliteSaver`` under ``sync``
(LangGraph's needs ``langgraph-checkpoint-sqlite``; without it that row shows
durable_graph alone). Every invocation uses a fresh thread, so checkpoint history
does not grow during a sample. The figure is wall time per superstep: a sample is
``--invokes`` invocations, its time divided by their supersteps; the median of
``--repeat`` samples is reported, after a warm-up that also checks both libraries
compute the same result. The two libraries' samples alternate so that machine
noise falls on both alike.

    python bench/bench_engine.py                   # table
    python bench/bench_engine.py --json            # machine-readable
    python bench/bench_engine.py --only langgraph  # before durable_graph imports
"""

from __future__ import annotations

import argparse
import gc
import importlib
import importlib.metadata
import json
import operator
import os
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any, TypedDict

LIBRARIES = ("langgraph", "durable_graph")


class ChainState(TypedDict):
    """State of the chain graph: one counter every node bumps."""

    count: int


class FanState(TypedDict):
    """State of the fan-out graph: results appended by every worker."""

    results: Annotated[list[int], operator.add]
    joined: int


@dataclass(frozen=True)
class Library:
    """One engine's graph API, loaded by name so either may be missing."""

    name: str
    version: str
    api: dict[str, Any]
    make_sqlite: Callable[[str], tuple[Any, Callable[[], None]]] | None


@dataclass(frozen=True)
class Setup:
    """One row of the table: a checkpointer kind and a durability mode."""

    checkpointer: str  # "none", "memory" or "sqlite"
    durability: str | None


SETUPS = (
    Setup("none", None),
    Setup("memory", "sync"),
    Setup("memory", "async"),
    Setup("memory", "exit"),
    Setup("sqlite", "sync"),
)


@dataclass
class Row:
    """Results for one graph and setup: microseconds per superstep by library."""

    graph: str
    setup: Setup
    us_per_step: dict[str, float] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def ratio(self) -> float | None:
        """durable_graph / langgraph; below 1 means durable_graph is faster."""
        lg, dg = self.us_per_step.get("langgraph"), self.us_per_step.get("durable_graph")
        return dg / lg if lg and dg else None


# --- loading the two libraries ------------------------------------------------


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _langgraph_sqlite() -> Callable[[str], tuple[Any, Callable[[], None]]] | None:
    """LangGraph's SqliteSaver factory, or None without langgraph-checkpoint-sqlite."""
    try:
        from langgraph.checkpoint.sqlite import SqliteSaver
    except ImportError:
        return None

    def make(path: str) -> tuple[Any, Callable[[], None]]:
        conn = sqlite3.connect(path, check_same_thread=False)
        return SqliteSaver(conn), conn.close

    return make


def load_langgraph() -> Library:
    """LangGraph's API under the names both libraries share."""
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.graph import END, START, StateGraph
    from langgraph.types import Send

    api = {
        "StateGraph": StateGraph,
        "START": START,
        "END": END,
        "Send": Send,
        "InMemorySaver": InMemorySaver,
    }
    return Library("langgraph", _version("langgraph"), api, _langgraph_sqlite())


def load_durable_graph() -> Library:
    """durable_graph's top-level names, which mirror LangGraph's."""
    dg = importlib.import_module("durable_graph")
    names = ("StateGraph", "START", "END", "Send", "InMemorySaver")
    api = {name: getattr(dg, name) for name in names}
    sqlite_saver = dg.SqliteSaver

    def make(path: str) -> tuple[Any, Callable[[], None]]:
        saver = sqlite_saver(path)
        return saver, getattr(saver, "close", lambda: None)

    return Library("durable_graph", _version("durable-graph"), api, make)


def load_libraries(only: str | None) -> tuple[list[Library], list[str]]:
    """The libraries to compare, and a note for each that could not be loaded."""
    loaders = {"langgraph": load_langgraph, "durable_graph": load_durable_graph}
    libs: list[Library] = []
    notes: list[str] = []
    for name in LIBRARIES:
        if only and name != only:
            continue
        try:
            libs.append(loaders[name]())
        except (ImportError, AttributeError) as exc:
            notes.append(f"{name} not benchmarked: {type(exc).__name__}: {exc}")
    return libs, notes


# --- the graphs -------------------------------------------------------------------


def build_chain(lib: Library, steps: int) -> Any:
    """``steps`` nodes in a line; each adds one to the counter."""
    api = lib.api
    graph = api["StateGraph"](ChainState)

    def bump(state: ChainState) -> dict[str, int]:
        return {"count": state["count"] + 1}

    names = [f"n{i}" for i in range(steps)]
    for name in names:
        graph.add_node(name, bump)
    for src, dst in zip([api["START"], *names], [*names, api["END"]], strict=True):
        graph.add_edge(src, dst)
    return graph


def build_fanout(lib: Library, width: int) -> Any:
    """split -> ``width`` Send-ed workers -> join: three supersteps."""
    api = lib.api
    send = api["Send"]
    graph = api["StateGraph"](FanState)

    def split(state: FanState) -> dict[str, Any]:
        return {}

    def work(item: int) -> dict[str, list[int]]:
        return {"results": [item]}

    def join(state: FanState) -> dict[str, int]:
        return {"joined": len(state["results"])}

    def fan_out(state: FanState) -> list[Any]:
        return [send("work", i) for i in range(width)]

    graph.add_node("split", split)
    graph.add_node("work", work)
    graph.add_node("join", join)
    graph.add_edge(api["START"], "split")
    graph.add_conditional_edges("split", fan_out, ["work"])
    graph.add_edge("work", "join")
    graph.add_edge("join", api["END"])
    return graph


@dataclass(frozen=True)
class GraphCase:
    """A graph to time: how to build it, its input, supersteps, and a result check."""

    name: str
    build: Callable[[Library, int], Any]
    initial: Callable[[], dict[str, Any]]
    supersteps: Callable[[int], int]
    check: Callable[[dict[str, Any], int], bool]


GRAPHS = (
    GraphCase(
        "chain",
        build_chain,
        lambda: {"count": 0},
        lambda n: n,
        lambda out, n: out["count"] == n,
    ),
    GraphCase(
        "fanout",
        build_fanout,
        lambda: {"results": [], "joined": 0},
        lambda n: 3,
        lambda out, n: sorted(out["results"]) == list(range(n)) and out["joined"] == n,
    ),
)


# --- timing ---------------------------------------------------------------------


@contextmanager
def checkpointer(lib: Library, kind: str, tmpdir: str) -> Iterator[Any]:
    """A fresh saver of ``kind`` for ``lib`` (None for "none"), closed afterwards."""
    if kind == "none":
        yield None
        return
    if kind == "memory":
        yield lib.api["InMemorySaver"]()
        return
    if lib.make_sqlite is None:
        raise LookupError("no SqliteSaver (pip install langgraph-checkpoint-sqlite)")
    saver, close = lib.make_sqlite(os.path.join(tmpdir, f"{lib.name}-{uuid.uuid4().hex}.db"))
    try:
        yield saver
    finally:
        close()


def make_invoker(app: Any, case: GraphCase, setup: Setup) -> Callable[[], dict[str, Any]]:
    """One invocation of ``app`` on a fresh thread, as ``setup`` says."""
    kwargs: dict[str, Any] = {}
    if setup.durability is not None:
        kwargs["durability"] = setup.durability

    def invoke() -> dict[str, Any]:
        config = {"configurable": {"thread_id": uuid.uuid4().hex}}
        if setup.checkpointer == "none":
            return app.invoke(case.initial())  # type: ignore[no-any-return]
        return app.invoke(case.initial(), config, **kwargs)  # type: ignore[no-any-return]

    return invoke


def sample(invoke: Callable[[], dict[str, Any]], invokes: int) -> float:
    """Seconds for ``invokes`` invocations, garbage collected beforehand."""
    gc.collect()
    start = time.perf_counter()
    for _ in range(invokes):
        invoke()
    return time.perf_counter() - start


def prepare(
    lib: Library, case: GraphCase, setup: Setup, saver: Any, args: argparse.Namespace
) -> Callable[[], dict[str, Any]]:
    """Compile, warm up, and check the result before anything is timed."""
    app = case.build(lib, args.steps).compile(checkpointer=saver)
    invoke = make_invoker(app, case, setup)
    for _ in range(args.warmup):
        out = invoke()
    if args.warmup and not case.check(out, args.steps):
        raise AssertionError(f"wrong result {out!r}")
    return invoke


def run_row(
    libs: list[Library], case: GraphCase, setup: Setup, args: argparse.Namespace, tmpdir: str
) -> Row:
    """Time every library on one graph and setup, alternating their samples."""
    row = Row(case.name, setup)
    invokers: dict[str, Callable[[], dict[str, Any]]] = {}
    samples: dict[str, list[float]] = {}
    with ExitStack() as stack:
        for lib in libs:
            try:
                saver = stack.enter_context(checkpointer(lib, setup.checkpointer, tmpdir))
                invokers[lib.name] = prepare(lib, case, setup, saver, args)
                samples[lib.name] = []
            except Exception as exc:  # a missing backend or a half-built engine
                row.errors[lib.name] = f"{type(exc).__name__}: {exc}"
        for _ in range(args.repeat):
            for name, invoke in invokers.items():
                samples[name].append(sample(invoke, args.invokes))
    steps = args.invokes * case.supersteps(args.steps)
    for name, times in samples.items():
        row.us_per_step[name] = statistics.median(times) / steps * 1e6
    return row


# --- output -----------------------------------------------------------------------


def _cell(row: Row, name: str) -> str:
    if name in row.us_per_step:
        return f"{row.us_per_step[name]:.1f}"
    return "n/a" if name not in row.errors else "error"


def format_table(rows: list[Row], libs: list[Library]) -> str:
    """A fixed-width table, one line per graph and setup, then any errors."""
    names = [lib.name for lib in libs]
    head = ["graph", "checkpointer", "durability", *[f"{n} us/step" for n in names]]
    if len(names) == 2:
        head.append("ratio dg/lg")
    lines = [head]
    for row in rows:
        line = [row.graph, row.setup.checkpointer, row.setup.durability or "-"]
        line += [_cell(row, n) for n in names]
        if len(names) == 2:
            ratio = row.ratio()
            line.append(f"{ratio:.2f}" if ratio is not None else "-")
        lines.append(line)
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    text = [
        "  ".join(
            c.rjust(w) if i > 2 else c.ljust(w)
            for i, (c, w) in enumerate(zip(line, widths, strict=True))
        )
        for line in lines
    ]
    errors = [
        f"  {r.graph}/{r.setup.checkpointer}/{r.setup.durability or '-'} {n}: {e}"
        for r in rows
        for n, e in r.errors.items()
    ]
    return "\n".join(text + (["", "not timed:", *errors] if errors else []))


def to_json(rows: list[Row], libs: list[Library], args: argparse.Namespace) -> str:
    """Everything the table shows, plus versions and parameters."""
    meta = {
        "python": platform.python_version(),
        "versions": {lib.name: lib.version for lib in libs},
        "steps": args.steps,
        "repeat": args.repeat,
        "invokes": args.invokes,
        "warmup": args.warmup,
        "unit": "microseconds per superstep (median)",
    }
    out = [
        {
            "graph": r.graph,
            "checkpointer": r.setup.checkpointer,
            "durability": r.setup.durability,
            "us_per_step": r.us_per_step,
            "ratio_durable_graph_to_langgraph": r.ratio(),
            "errors": r.errors,
        }
        for r in rows
    ]
    return json.dumps({"meta": meta, "rows": out}, indent=2)


# --- command line -----------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; see the module docstring for what is measured."""
    parser = argparse.ArgumentParser(
        description="Time per superstep of durable_graph vs langgraph on the same graphs.",
    )
    parser.add_argument(
        "--steps", type=int, default=10, help="chain length and fan-out width (default 10)"
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=5,
        help="timed samples per library and row; the median is shown (default 5)",
    )
    parser.add_argument(
        "--invokes", type=int, default=30, help="graph invocations per sample (default 30)"
    )
    parser.add_argument(
        "--warmup", type=int, default=3, help="untimed invocations before sampling (default 3)"
    )
    parser.add_argument("--only", choices=LIBRARIES, help="benchmark one library alone")
    parser.add_argument(
        "--graph",
        choices=[g.name for g in GRAPHS],
        action="append",
        help="graphs to run (repeatable; default all)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    for name in ("steps", "repeat", "invokes"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.warmup < 0:
        parser.error("--warmup must be at least 0")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run every row and print the results; non-zero when nothing could be timed."""
    args = parse_args(argv)
    libs, notes = load_libraries(args.only)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    if not libs:
        return 1
    cases = [g for g in GRAPHS if not args.graph or g.name in args.graph]
    with tempfile.TemporaryDirectory(prefix="dg-bench-") as tmpdir:
        rows = [run_row(libs, case, setup, args, tmpdir) for case in cases for setup in SETUPS]
    print(to_json(rows, libs, args) if args.json else format_table(rows, libs))
    return 0 if any(r.us_per_step for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
