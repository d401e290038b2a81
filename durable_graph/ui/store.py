"""The web view's handle on the deployment: the app and signed store of
``durable_graph.ops.connect`` (the CLI's), the status index for the list, and the
workers, asked over the broker what they run."""

from __future__ import annotations

import json
import logging

from durable_graph import ops
from durable_graph.errors import SignatureError
from durable_graph.store.redis.jobbook import JobBook
from durable_graph.store.redis.threads import ThreadPage, ThreadRecords
from durable_graph.worker.payload import open_sealed
from durable_graph.worker.runs import RunSpec
from durable_graph.worker.shipping import GraphRef

__all__ = ["UiStore", "graph_label"]

log = logging.getLogger("durable_graph.ui")

_INSPECT_TIMEOUT = 1.0
"""Seconds the page waits for workers to say what they run (a dead worker is silent)."""


def graph_label(ref: GraphRef) -> str:
    """How a thread's graph is named on the page: its import path, or its blob's digest."""
    return ref.path or f"blob {str(ref.digest)[:12]}"


class UiStore:
    """Reads threads for the pages, and holds what the actions need; one per server."""

    def __init__(self, cluster: ops.Cluster) -> None:
        self.cluster = cluster
        self.app, self.saver, self.settings = cluster.app, cluster.saver, cluster.settings
        self._records = ThreadRecords(self.saver.conn, self.settings.prefix)

    def counts(self) -> dict[str, int]:
        """Threads per status (ZCARD of the status index)."""
        return self._records.count_by_status()

    def page(self, status: str | None, limit: int, after: str | None) -> ThreadPage:
        """One page of threads, newest first (see ``ThreadRecords.page``)."""
        return self._records.page(status, limit=limit, after=after)  # type: ignore[arg-type]

    def graph_of(self, thread_id: str, sealed: str | None) -> str:
        """The graph of a thread's sealed run record, named; '' when none or forged."""
        if sealed is None:
            return ""
        try:
            run = open_sealed(self.settings.require_codec(), sealed, "run record")
        except SignatureError as exc:
            log.error("thread %r: %s", thread_id, exc)
            return ""
        return graph_label(run.graph) if isinstance(run, RunSpec) else ""

    def active_jobs(self, thread_id: str) -> list[dict[str, str]]:
        """The jobs of a thread that workers run now: task id, kind, worker, pid.

        Read from the job book's claims (a job a worker runs inline, by eager
        continuation, has no Celery message of its own), each named by the worker whose
        pool process holds it, as the workers say over the broker (Celery's ``inspect
        active``; a worker that does not answer in time is named by its process id).
        """
        book = JobBook(self.saver.conn, self.settings.prefix)
        claimed = book.claimed_of(thread_id)
        if not claimed:
            return []
        names: dict[str, str] = {}
        try:
            replies = self.app.control.inspect(timeout=_INSPECT_TIMEOUT).active() or {}
        except Exception as exc:  # the page still renders without the worker names
            log.warning("cannot ask the workers what they run: %s", exc)
            replies = {}
        for worker, active in replies.items():
            for request in active or []:
                names[str(request.get("worker_pid") or "")] = str(worker)
        jobs = []
        for holder, message in claimed:
            args = json.loads(message)
            pid = holder.split(":")[1] if holder.count(":") >= 2 else ""
            jobs.append({"thread_id": str(args[0]), "task_id": str(args[1]),
                         "kind": str(args[2]), "worker": names.get(pid, holder), "pid": pid})
        return jobs

    def find(self, query: str, limit: int = 20) -> list[str]:
        """The thread ``query`` names, else the ids starting with it (a SCAN of every record,
        so slower than the list on a large store)."""
        if self.saver.get_status(query) is not None:
            return [query]  # the thread asked for: no need to scan every record
        return self._records.with_prefix(query, limit)

    def close(self) -> None:
        """Release the Redis connections."""
        self.saver.client.close()
