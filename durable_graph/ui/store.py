"""The web view's handle on the deployment: the same signed store, graph loader and
Celery app the CLI and the workers use, built from the same settings."""

from __future__ import annotations

import logging

from celery import Celery

from durable_graph.errors import SignatureError
from durable_graph.store.redis.saver import RedisSaver
from durable_graph.store.redis.threads import ThreadPage, ThreadRecords
from durable_graph.worker.app import WorkerRuntime
from durable_graph.worker.payload import open_sealed
from durable_graph.worker.runs import RunSpec
from durable_graph.worker.shipping import GraphLoader

__all__ = ["UiStore"]

log = logging.getLogger("durable_graph.ui")

_INSPECT_TIMEOUT = 0.5
"""Seconds the page waits for workers to say what they run (a dead worker is silent)."""


class UiStore:
    """Reads threads for the pages; one per server process."""

    def __init__(self, app: Celery) -> None:
        self.app = app
        self.runtime = WorkerRuntime(app)
        self.settings = self.runtime.settings
        self.saver: RedisSaver = self.runtime.saver(self.settings.prefix)
        self.loader: GraphLoader = self.runtime.loader(self.settings.prefix)
        self._records = ThreadRecords(self.saver.conn, self.settings.prefix)

    def counts(self) -> dict[str, int]:
        """Threads per status (ZCARD of the status index)."""
        return self._records.count_by_status()

    def page(self, status: str | None, limit: int, after: str | None) -> ThreadPage:
        """One page of threads, newest first (see ``ThreadRecords.page``)."""
        return self._records.page(status, limit=limit, after=after)  # type: ignore[arg-type]

    def run_record(self, thread_id: str) -> RunSpec | None:
        """The thread's last distributed run, verified; None if it has none or it is forged."""
        sealed = self.saver.get_run(thread_id)
        if sealed is None:
            return None
        try:
            run = open_sealed(self.runtime.codec, sealed, "run record")
        except SignatureError as exc:
            log.error("thread %r: %s", thread_id, exc)
            return None
        return run if isinstance(run, RunSpec) else None

    def graph_names(self, thread_ids: list[str]) -> dict[str, str]:
        """Where each thread's graph comes from (import path, or blob digest), for the list."""
        out = {}
        for thread_id in thread_ids:
            run = self.run_record(thread_id)
            if run is not None:
                out[thread_id] = run.graph.path or f"blob {str(run.graph.digest)[:12]}"
        return out

    def active_jobs(self) -> list[dict[str, str]]:
        """Every durable-graph job the workers run now: thread, task id, kind, worker.

        Asked over the broker (Celery's ``inspect active``), so it shows the worker
        that really holds each job; workers that do not answer in time are left out.
        """
        try:
            replies = self.app.control.inspect(timeout=_INSPECT_TIMEOUT).active() or {}
        except Exception as exc:  # the page still renders without this part
            log.warning("cannot ask the workers what they run: %s", exc)
            return []
        jobs = []
        for worker, active in replies.items():
            for request in active or []:
                args = request.get("args") or []
                if len(args) >= 3 and isinstance(args[0], str):
                    jobs.append({"thread_id": args[0], "task_id": str(args[1]),
                                 "kind": str(args[2]), "worker": str(worker),
                                 "pid": str(request.get("worker_pid") or "")})
        return jobs

    def close(self) -> None:
        """Release the Redis connections."""
        self.saver.client.close()

    def find(self, query: str, limit: int = 20) -> list[str]:
        """Thread ids equal to ``query`` or starting with it (an exact match first)."""
        found = [query] if self.saver.get_status(query) is not None else []
        return found + [t for t in self._records.with_prefix(query, limit) if t != query][
            : limit - len(found)]

