"""The lease scheduler: finds running threads whose lease expired and recovers them.

A distributed run's jobs renew its thread's lease while they run. When every
worker running the thread died (or the worker that committed a step died before
enqueueing the next one), nobody renews it; one lease TTL later a sweep takes the
lease over, which raises the fencing generation so any late job of the old owner
is refused, and enqueues a ``recover`` job. That job, on any worker, reads the
last committed step and re-enqueues its tasks that have no recorded outcome.

Several schedulers may sweep at once: taking a lease over is atomic, so each
expired thread is recovered by exactly one of them. The scheduler runs no user
code and needs no graph: the run's description is stored, sealed, with the thread.
"""

from __future__ import annotations

import logging
import threading
import uuid
from dataclasses import dataclass

from celery import Celery

from durable_graph.errors import SignatureError
from durable_graph.store.redis.saver import RedisSaver
from durable_graph.worker import metrics
from durable_graph.worker.app import CeleryDispatcher, settings_of
from durable_graph.worker.payload import open_sealed
from durable_graph.worker.runs import Job, RunSpec

__all__ = ["LeaseScheduler"]

log = logging.getLogger("durable_graph.scheduler")


@dataclass
class LeaseScheduler:
    """Sweeps one key prefix every ``interval`` seconds for expired leases."""

    app: Celery
    saver: RedisSaver
    interval: float = 1.0

    def __post_init__(self) -> None:
        self.settings = settings_of(self.app)
        self._codec = self.settings.require_codec()
        self._dispatcher = CeleryDispatcher(self.app, self.settings)
        self._name = f"recover:{uuid.uuid4().hex[:12]}"

    def sweep(self) -> list[str]:
        """Recover every running thread whose lease expired; their ids."""
        recovered = []
        for thread_id in self.saver.list_threads("running"):
            sealed = self.saver.get_run(thread_id)
            if sealed is None:
                continue  # never ran on workers: nothing here can resume it
            owner = f"{self._name}:{uuid.uuid4().hex[:8]}"
            lease = self.saver.leases.take_over(thread_id, owner, self.settings.lease_ttl)
            if lease is None:
                continue  # alive (its jobs renew the lease), or ended, or embedded
            metrics.lease_taken_over()
            record = self.saver.get_status(thread_id) or {}
            if record.get("status") != "running":  # it ended since the listing
                self.saver.leases.release(lease)
                continue
            try:
                run = open_sealed(self._codec, sealed, "run record")
            except SignatureError as exc:
                log.error("thread %r: %s", thread_id, exc)
                self.saver.leases.release(lease)
                continue
            if not isinstance(run, RunSpec):
                log.error("thread %r: its run record is not a run description", thread_id)
                self.saver.leases.release(lease)
                continue
            self._dispatcher.send([Job("recover", run, owner, lease.generation)])
            log.info("thread %r: lease expired, recovery enqueued (generation %d)",
                     thread_id, lease.generation)
            recovered.append(thread_id)
        return recovered

    def run_forever(self, stop: threading.Event | None = None) -> None:
        """Sweep until ``stop`` is set; a failed sweep is logged and retried."""
        stop = stop or threading.Event()
        log.info("lease scheduler sweeping prefix %r every %ss", self.saver.prefix, self.interval)
        while not stop.is_set():
            try:
                self.sweep()
            except Exception:
                log.exception("sweep failed; retrying in %ss", self.interval)
            stop.wait(self.interval)
