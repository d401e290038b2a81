"""The demo behind the README's first command: durable execution you can watch.

1. The tutorial's URL-processing graph fetches pages from a local HTTP server with
   parallel ``@task`` calls, checkpointing to SQLite. The demo SIGKILLs that
   process after some fetches were recorded, resumes the thread in a fresh
   process, and prints the server's hit counts: recorded fetches were not repeated.
2. An approval flow: ``interrupt()`` pauses a run in one process; a second process
   resumes it with ``Command(resume=..., update=...)``.

Run ``python -m durable_graph.demo --help`` for the options.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypedDict

from durable_graph import END, START, Command, SqliteSaver, StateGraph, interrupt, task
from durable_graph.store.base import RETURN

THREAD = {"configurable": {"thread_id": "demo-urls"}}
APPROVAL = {"configurable": {"thread_id": "demo-approval"}}
PAGES = 8


class ProcessingState(TypedDict):
    """The tutorial's state: URLs in, page prefixes out."""

    urls: list[str]
    results: list[str] | None
    processed: bool


@task
def fetch_url_content(url: str) -> str:
    """One durable fetch: recorded once it returns, never repeated on resume."""
    with urllib.request.urlopen(url, timeout=30) as resp:
        return str(resp.read().decode())[:500]


def process_urls(state: ProcessingState) -> dict[str, Any]:
    """Fetch every URL in parallel and collect the results in order."""
    fetch_tasks = [fetch_url_content(url) for url in state["urls"]]
    return {"results": [t.result() for t in fetch_tasks], "processed": True}


def url_graph(db: Path) -> Any:
    """The tutorial's complete example on the embedded SQLite store."""
    builder = StateGraph(ProcessingState)
    builder.add_node("process_urls", process_urls)
    builder.add_edge(START, "process_urls")
    builder.add_edge("process_urls", END)
    return builder.compile(checkpointer=SqliteSaver(db))


class ApprovalState(TypedDict, total=False):
    """A draft waiting for a human decision."""

    draft: str
    decision: str
    reviewer: str
    published: str


def approval_graph(db: Path) -> Any:
    """write -> approve (interrupt) -> publish."""

    def write(state: ApprovalState) -> dict[str, Any]:
        return {"draft": "Release notes for v1.0"}

    def approve(state: ApprovalState) -> dict[str, Any]:
        return {"decision": interrupt({"question": "Publish this draft?", "draft": state["draft"]})}

    def publish(state: ApprovalState) -> dict[str, Any]:
        verdict = "published" if state["decision"] == "approve" else "withdrawn"
        return {"published": f"{state['draft']} ({verdict} by {state.get('reviewer', '?')})"}

    builder = StateGraph(ApprovalState)
    builder.add_sequence([("write", write), ("approve", approve), ("publish", publish)])
    builder.add_edge(START, "write")
    return builder.compile(checkpointer=SqliteSaver(db))


# -- the local web server ------------------------------------------------------


class PageServer:
    """Serves /page/N after N*0.15 s and counts the hits per page."""

    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()
        lock = threading.Lock()
        hits = self.hits

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with lock:
                    hits[self.path] += 1
                number = int(self.path.rsplit("/", 1)[-1])
                time.sleep(0.15 * number)
                body = (f"<html>page {number} " + "lorem ipsum " * 60 + "</html>").encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client was SIGKILLed mid-request: that is the demo

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


# -- the steps, each run in its own process ------------------------------------


def _child(args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "durable_graph.demo", *args],
        stdout=subprocess.PIPE, text=True, start_new_session=True,
    )


def _wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _recorded_fetches(db: Path) -> list[int]:
    """Page numbers whose fetch result is a committed pending write of the thread."""
    saved = SqliteSaver(db).get_tuple(THREAD)
    if saved is None:
        return []
    found = (re.search(r"page (\d+)", str(w.value[1])) for w in saved.pending_writes
             if w.channel == RETURN)
    return sorted(int(m.group(1)) for m in found if m)


def crash_and_resume(workdir: Path, server: PageServer) -> None:
    """Run the URL graph, SIGKILL it mid-run, resume it in a new process."""
    db = workdir / "urls.sqlite"
    urls = [f"{server.url}/page/{i}" for i in range(1, PAGES + 1)]
    print(f"1) Fetching {PAGES} pages with parallel @task calls (checkpoints: {db})")
    proc = _child(["run-urls", "--db", str(db), "--urls", json.dumps(urls)])
    _wait_for(lambda: len(_recorded_fetches(db)) >= 3, 60, "three recorded fetches")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    recorded = _recorded_fetches(db)
    print(f"   SIGKILLed the run after {len(recorded)} fetches were recorded: pages {recorded}")
    before = Counter(server.hits)
    out = subprocess.run(
        [sys.executable, "-m", "durable_graph.demo", "resume-urls", "--db", str(db)],
        capture_output=True, text=True, check=True,
    )
    print(f"   Resumed in a fresh process: {out.stdout.strip()}")
    print("   Server hits per page (before the kill + after the resume):")
    for i in range(1, PAGES + 1):
        path = f"/page/{i}"
        again = server.hits[path] - before[path]
        note = "recorded before the kill: not fetched again" if i in recorded else (
            "in flight at the kill: fetched again")
        print(f"     {path}: {before[path]} + {again}   {note}")
    repeated = [p for p in recorded if server.hits[f"/page/{p}"] != 1]
    if repeated:
        raise SystemExit(f"recorded fetches were repeated: {repeated}")


def approval_flow(workdir: Path) -> None:
    """Pause at interrupt() in one process, resume from another."""
    db = workdir / "approval.sqlite"
    print("2) Approval flow: the run pauses at interrupt() ...")
    first = subprocess.run(
        [sys.executable, "-m", "durable_graph.demo", "start-approval", "--db", str(db)],
        capture_output=True, text=True, check=True,
    )
    print(f"   process A: {first.stdout.strip()}")
    second = subprocess.run(
        [sys.executable, "-m", "durable_graph.demo", "approve", "--db", str(db)],
        capture_output=True, text=True, check=True,
    )
    print(f"   process B resumed with Command(resume='approve', update=...): "
          f"{second.stdout.strip()}")


def _run_subcommand(ns: argparse.Namespace) -> None:
    db = Path(ns.db)
    if ns.command == "run-urls":
        url_graph(db).invoke(
            {"urls": json.loads(ns.urls), "results": None, "processed": False},
            THREAD, durability="sync",
        )
    elif ns.command == "resume-urls":
        out = url_graph(db).invoke(None, THREAD, durability="sync")
        print(f"processed={out['processed']}, {len(out['results'])} results, "
              f"first starts {out['results'][0][:20]!r}")
    elif ns.command == "start-approval":
        out = approval_graph(db).invoke({}, APPROVAL)
        print(f"paused with {out['__interrupt__'][0].value}")
    elif ns.command == "approve":
        graph = approval_graph(db)
        out = graph.invoke(Command(resume="approve", update={"reviewer": "ops"}), APPROVAL)
        print(out["published"])


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m durable_graph.demo``."""
    parser = argparse.ArgumentParser(
        prog="python -m durable_graph.demo",
        description="Show durable execution: a SIGKILLed run resumes without redoing "
        "finished @task calls, and an interrupted run resumes from another process.",
    )
    parser.add_argument("--dir", help="where to keep the SQLite files (default: a temp dir)")
    sub = parser.add_subparsers(dest="command")
    for name in ("run-urls", "resume-urls", "start-approval", "approve"):
        p = sub.add_parser(name, help=argparse.SUPPRESS)
        p.add_argument("--db", required=True)
        p.add_argument("--urls", default="[]")
    ns = parser.parse_args(argv)
    if ns.command:
        _run_subcommand(ns)
        return
    workdir = Path(ns.dir or tempfile.mkdtemp(prefix="durable-graph-demo-"))
    workdir.mkdir(parents=True, exist_ok=True)
    server = PageServer()
    try:
        crash_and_resume(workdir, server)
        approval_flow(workdir)
    finally:
        server.close()
    print("Done: finished work was never done twice.")


if __name__ == "__main__":
    main()
