"""Recovery sweeps: every worker heals what crashed, reading only what expired.

Each worker's main process runs a sweep about once a second (``RecoveryStep``, a
Celery bootstep, jittered so workers do not sweep in lock-step); ``durable-graph
scheduler`` runs the same sweep for deployments that want one more. A sweep reads
the job book (``store/redis/jobbook``) and does three things, each atomic per job
or thread, so any number of sweepers act exactly once:

1. **Dead processes.** A worker process whose heartbeat expired (or whose parent
   saw it die) loses its claims: each claimed job is sent again at once, unless
   its executions died ``max_deaths`` times (a node that kills its process: OOM,
   segfault, ``os._exit``), which fails the thread with a ``JobCrashedError``.
   After a sweep could not read the store, heartbeats are trusted again only one
   heartbeat TTL later: an outage expires every heartbeat, not every process.
2. **Lost messages.** The broker may lose a message (on Redis a job's message keeps
   no unacked copy, ``transport.QoS``: a worker that pops it and dies before claiming
   it loses it; a queue lost with its Redis loses all of them). When a job has waited
   unclaimed for ``PROBE_AFTER`` seconds, the sweep sends a probe through the queue;
   once a worker receives the probe, every job sent before it has left the queue, so
   one still unclaimed was lost and is sent again. Queue wait alone never resends.
3. **Idle threads.** A running thread that owes no job for a lease TTL (a worker
   died between committing a step and sending the next) is taken over: the lease
   generation goes up, so anything late of the old owner is refused, and a
   ``recover`` job re-enqueues what the last committed step still misses.

Every ``INDEX_SWEEP_EVERY`` sweeps it also checks the next batch of the status index
for threads whose keys expired by their TTL (or were deleted some other way): their
entries live in other slots, so nothing else would ever drop them when nobody lists
threads (``ThreadRecords.sweep_gone``).

Copies are harmless: a job's first claim wins and later copies are dropped; writes
are first-wins per task and fenced by the lease generation.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

from celery import Celery, bootsteps

from durable_graph.errors import CheckpointStoreError, JobCrashedError, SignatureError
from durable_graph.store.redis.jobbook import Expired, JobBook, Reclaimed, View
from durable_graph.store.redis.keys import JobKeys
from durable_graph.store.redis.saver import RedisSaver
from durable_graph.store.redis.threads import ThreadRecords
from durable_graph.worker import metrics
from durable_graph.worker.app import CeleryDispatcher, WorkerRuntime, settings_of
from durable_graph.worker.events import END, RunEvents
from durable_graph.worker.payload import open_sealed
from durable_graph.worker.runs import Job, RunSpec, abort_run

__all__ = ["INDEX_SWEEP_EVERY", "PROBE_AFTER", "LeaseScheduler", "RecoveryStep", "Sweep"]

log = logging.getLogger("durable_graph.scheduler")

PROBE_AFTER = 2.0
"""Seconds a job waits unclaimed before a sweep checks the queue moved (a probe)."""
PROBE_IN_FLIGHT = 15.0
"""Seconds before a probe that never arrived is replaced by another."""
SEND_SKEW = 1.0
"""Seconds between registering a job and publishing it that a sweep tolerates."""
INDEX_SWEEP_EVERY = 60
"""Sweeps between two checks of a batch of the status index for threads that are gone."""


@dataclass
class Sweep:
    """The counts of one sweep."""

    resent: int = 0
    """Jobs of dead processes sent again."""
    failed: list[str] = field(default_factory=list)
    """Threads failed by a crash loop."""
    lost: int = 0
    """Lost messages sent again."""
    recovered: list[str] = field(default_factory=list)
    """Idle threads taken over and recovered."""
    unindexed: int = 0
    """Status-index entries of threads that are gone, dropped."""


@dataclass
class LeaseScheduler:
    """Sweeps one key prefix every ``interval`` seconds (see the module docstring)."""

    app: Celery
    saver: RedisSaver
    interval: float = 1.0
    probe_after: float = PROBE_AFTER
    """Seconds a job waits unclaimed before the sweep checks the queue moved past it."""
    send_skew: float = SEND_SKEW
    """A probe proves lost only the jobs registered this long before it was."""
    index_every: int = INDEX_SWEEP_EVERY
    """Sweeps between two batches of the status-index check (see the module docstring)."""

    def __post_init__(self) -> None:
        self.settings = settings_of(self.app)
        self._codec = self.settings.require_codec()
        self._dispatcher = CeleryDispatcher(self.app, self.settings,
                                            WorkerRuntime.books_of(self.app))
        self.book = JobBook(self.saver.conn, self.saver.prefix)
        self._events = RunEvents(self.saver.conn, self.saver.prefix,
                                 WorkerRuntime.of(self.app).serde)
        self._name = f"recover:{uuid.uuid4().hex[:12]}"
        self._head = 0
        """The probe head the last sweep saw: jobs sent a skew before it were lost."""
        self._blind = False
        """Whether the last sweep could not read the store (an outage, a restart)."""
        self._trust_beats_at = 0.0
        """Server time (ms) from which expired heartbeats mean dead processes: after an
        outage every worker's heartbeat expired, so wait one heartbeat TTL for them to
        beat again instead of resending every running job."""
        self._records = ThreadRecords(self.saver.conn, self.saver.prefix)
        self._index_ranks: dict[str, int] = {}
        """Where the next status-index batch starts, per shard."""
        self._until_index = random.randint(1, self.index_every)
        """Sweeps until the next status-index batch (workers start at random points)."""

    def sweep(self) -> list[str]:
        """Sweep once; the threads taken over and recovered (see ``sweep_all``)."""
        return self.sweep_all().recovered

    def sweep_all(self) -> Sweep:
        """Dead processes, lost messages, idle threads: heal what expired.

        One round trip reads everything that expired; only what it finds costs more.
        """
        out = Sweep()
        try:
            view = self.book.view(self.settings.queue, self._head - self.send_skew * 1000)
        except CheckpointStoreError:
            self._blind = True
            raise
        if self._blind:  # heartbeats that expired while we could not read say nothing yet
            self._blind = False
            self._trust_beats_at = view.now + self.settings.heartbeat_ttl * 1000
        self._head = view.head
        if view.dead and view.now >= self._trust_beats_at:
            self._dead_processes(view.dead, out)
        self._lost_messages(view, out)
        self._idle_threads(view.idle, out)
        self._until_index -= 1
        if self._until_index <= 0:
            self._until_index = self.index_every
            out.unindexed = self._records.sweep_gone(self._index_ranks)
        return out

    def _dead_processes(self, dead: list[str], out: Sweep) -> None:
        gone = set(dead)
        for bucket, key, holder in self.book.claims():
            if holder not in gone:
                continue
            taken = self.book.reclaim(bucket, key, holder, self.settings.max_deaths)
            if taken is None:
                continue
            if taken.action == "fail":
                self._fail(taken, (bucket, key, holder), out)
            else:
                log.info("job %s: its process %s died; sent again (death %d)", key, holder,
                         taken.deaths)
                self._dispatcher.send_sealed(taken.message, register=False)
                out.resent += 1
        self.book.forget_workers(dead)

    def _fail(self, taken: Reclaimed, claim: tuple[JobKeys, str, str], out: Sweep) -> None:
        """End the thread of a job whose process died ``taken.deaths`` times; ``claim``
        (bucket, job key, dead holder): the claim the dead process keeps until then."""
        bucket, key, holder = claim
        job = self._job_of(taken.message)
        if job is None:
            self.book.drop_claim(bucket, key, holder)
            return
        what = f"{job.kind} {job.name!r}" if job.name else f"{job.kind} job"
        how = f" (last: {taken.why})" if taken.why else ""
        error = JobCrashedError(
            f"the process running {what} of thread {job.run.thread_id!r} died {taken.deaths} "
            f"times{how}; the thread is failed instead of being retried again. Fix what "
            "kills it (memory, native code, os._exit), then resume the thread.")
        log.error("%s", error)
        abort_run(self.saver, self._events, job, error)
        self.book.end(key, job.run.thread_id, self.settings.lease_ttl)
        out.failed.append(job.run.thread_id)

    def _job_of(self, message: str) -> Job | None:
        try:
            job = open_sealed(self._codec, json.loads(message)[3])
        except (SignatureError, ValueError, IndexError) as exc:
            log.error("a resent job's message does not open: %s", exc)
            return None
        return job if isinstance(job, Job) else None

    def _lost_messages(self, view: View, out: Sweep) -> None:
        for found in view.lost:
            message = self.book.requeue_lost(found)
            if message is not None:
                log.warning("job %s was lost by the broker; sent again", found.member)
                self._dispatcher.send_sealed(message, register=False)
                out.lost += 1
        oldest = view.oldest
        if oldest is None or view.now - oldest < max(self.probe_after, self.send_skew) * 1000:
            return
        if view.probe_sent and view.now - view.probe_sent < PROBE_IN_FLIGHT * 1000:
            return  # one in flight already
        sent = self.book.probe_send(self.settings.queue, PROBE_IN_FLIGHT)
        if sent:
            self._dispatcher.send_probe(self.saver.prefix, sent)

    def _idle_threads(self, idle: list[Expired], out: Sweep) -> None:
        running, unreleased = self.book.sort_idle(idle) if idle else ([], [])
        for found in unreleased:
            self._retell_end(found)
        for found in running:
            thread_id = found.member
            if self.book.owes(thread_id):
                self.book.arm_idle(thread_id, self.settings.lease_ttl, only_if_idle=True)
                continue
            if self._recover(thread_id, found):
                out.recovered.append(thread_id)

    def _recover(self, thread_id: str, found: Expired) -> bool:
        """Take an idle running thread over and send its recovery job."""
        assert found.bucket is not None
        record = self.saver.get_status(thread_id) or {}
        sealed = self.saver.get_run(thread_id)
        if record.get("status") != "running" or sealed is None:
            self.book.disarm_idle(found.bucket, thread_id)  # ended, or never on workers
            return False
        owner = f"{self._name}:{uuid.uuid4().hex[:8]}"
        lease = self.saver.leases.take_over(thread_id, owner, self.settings.lease_ttl)
        if lease is None:  # its lease is live (a producer or job holds it): look later
            self.book.arm_idle(thread_id, self.settings.lease_ttl, only_if_idle=True)
            return False
        metrics.lease_taken_over()
        run = self._run_of(thread_id, sealed)
        if run is None:
            self.saver.leases.release(lease)
            self.book.disarm_idle(found.bucket, thread_id)
            return False
        self._dispatcher.send([Job("recover", run, owner, lease.generation)])
        log.info("thread %r: idle with no job owed, recovery enqueued (generation %d)",
                 thread_id, lease.generation)
        return True

    def _retell_end(self, found: Expired) -> None:
        """A run that ended without releasing its lease: its ender died after recording
        the status, maybe before telling the producer. Tell it (once: the lease is taken)."""
        assert found.bucket is not None
        thread_id = found.member
        owner = f"{self._name}:{uuid.uuid4().hex[:8]}"
        lease = self.saver.leases.take_over(thread_id, owner, self.settings.lease_ttl)
        sealed = self.saver.get_run(thread_id)
        run = self._run_of(thread_id, sealed) if lease and sealed else None
        if lease is None or run is None:  # live (still ending), or not a distributed run
            if lease is not None:
                self.saver.leases.release(lease)
            self.book.disarm_idle(found.bucket, thread_id)
            return
        record = self.saver.get_status(thread_id) or {}
        if record.get("status") == "failed":  # its error is recorded as text: say it
            self._events.publish(thread_id, run.run_id, END, {
                "status": "failed", "output": None, "interrupts": [], "error": {
                    "error": None, "type": record.get("error_type") or "",
                    "message": record.get("error_message") or "",
                    "traceback": record.get("error_traceback") or ""}})
            self.saver.leases.release(lease)
        else:  # done or interrupted: a recovery job ends it again, with its output
            self._dispatcher.send([Job("recover", run, owner, lease.generation)])
        log.warning("thread %r ended %s but its producer may not have been told; told again",
                    thread_id, record.get("status"))
        self.book.disarm_idle(found.bucket, thread_id)

    def _run_of(self, thread_id: str, sealed: str) -> RunSpec | None:
        try:
            run = open_sealed(self._codec, sealed, "run record")
        except SignatureError as exc:
            log.error("thread %r: %s", thread_id, exc)
            return None
        if not isinstance(run, RunSpec):
            log.error("thread %r: its run record is not a run description", thread_id)
            return None
        return run

    def run_forever(self, stop: threading.Event | None = None, *, jitter: float = 0.0) -> None:
        """Sweep until ``stop`` is set; a failed sweep is logged and retried.

        ``jitter`` (a fraction) spreads the sweeps of many workers over the interval.
        """
        stop = stop or threading.Event()
        log.info("sweeping prefix %r every %ss", self.saver.prefix, self.interval)
        while not stop.is_set():
            try:
                self.sweep_all()
            except Exception:
                log.exception("sweep failed; retrying in %ss", self.interval)
            stop.wait(self.interval * (1 + random.uniform(-jitter, jitter)))


class RecoveryStep(bootsteps.StartStopStep):  # type: ignore[misc]
    """Runs the recovery sweep in a daemon thread of every worker's main process."""

    requires = ("celery.worker.components:Pool",)

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, worker: Any) -> None:
        app = worker.app
        runtime = WorkerRuntime.of(app)
        scheduler = LeaseScheduler(app, runtime.saver(runtime.settings.prefix))
        self._thread = threading.Thread(
            target=scheduler.run_forever, args=(self._stop,), kwargs={"jitter": 0.3},
            name="durable-graph-recovery", daemon=True)
        self._thread.start()

    def stop(self, worker: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def shutdown(self, worker: Any) -> None:
        self.stop(worker)
