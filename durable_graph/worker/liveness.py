"""Job liveness in a worker process: register jobs as owed, claim them, beat, end them.

- ``Books`` gives each process (producer, worker, scheduler) the job book of a prefix
  on the settings' Redis; the dispatcher registers every job there before sending it.
- ``Liveness`` (one per worker process) claims a job before running it, so a
  redelivered or resent copy of a job that a live process runs is dropped without
  running, and ends it afterwards (unless the job's last write ended it, ``ended``: a
  ``@task`` call's result and its end are one script). The first claim starts the
  process's heartbeat, a daemon thread that renews ``{P:live:w}`` every third of the
  heartbeat TTL, until ``stop`` (a clean shutdown: ``worker/app`` calls it from Celery's
  shutdown signals) takes the process's entry out.
- ``note_lost`` runs in a prefork worker's main process when a pool process died
  under a job: it records how (signal or exit code) and declares the process dead,
  so a sweep sends the job again at once instead of a heartbeat TTL later.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import socket
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeAlias

from durable_graph.errors import CheckpointStoreError
from durable_graph.store.redis.connection import RedisConn, client_from_url
from durable_graph.store.redis.jobbook import Also, Finished, JobBook
from durable_graph.worker.bundles import bundle_keys
from durable_graph.worker.config import Settings
from durable_graph.worker.outage import ride_out
from durable_graph.worker.runs import Job

__all__ = ["Books", "Claim", "Liveness", "note_lost", "worker_id"]

log = logging.getLogger("durable_graph.worker")

Claim: TypeAlias = tuple[str, str, bool, Any]
"""A job's claim: (outcome, holder, lease renewed, reply of the read made with it), see
``JobBook.claim_renewing``."""

_ids: dict[int, str] = {}
_END_BATCH = 200
"""Job ends recorded in one round trip at most (those that queued up meanwhile)."""


def worker_id() -> str:
    """This process's id in heartbeats and claims: ``host:pid:nonce`` (unique per boot)."""
    pid = os.getpid()
    found = _ids.get(pid)
    if found is None:
        found = _ids[pid] = f"{socket.gethostname()}:{pid}:{uuid.uuid4().hex[:8]}"
    return found


class Books:
    """The job books of one Redis, per prefix, made lazily in each process."""

    def __init__(self, redis_url: str) -> None:
        self._url = redis_url
        self._conn: tuple[int, RedisConn] | None = None
        self._books: dict[tuple[int, str], JobBook] = {}
        self._lock = threading.Lock()

    def __call__(self, prefix: str) -> JobBook:
        pid = os.getpid()
        with self._lock:
            found = self._books.get((pid, prefix))
            if found is None:
                if self._conn is None or self._conn[0] != pid:
                    self._conn = (pid, RedisConn(client_from_url(self._url)))
                found = self._books[(pid, prefix)] = JobBook(self._conn[1], prefix)
        return found


class _Gate:
    """Claims pass it together; ``Liveness.stop`` passes it alone (waiting for the
    claims under way, holding back new ones), so no claim of this process falls
    between ``stop``'s look at its claims and its entry's removal."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._passing = 0
        self._alone = False

    @contextmanager
    def together(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._alone)
            self._passing += 1
        try:
            yield
        finally:
            with self._cond:
                self._passing -= 1
                self._cond.notify_all()

    @contextmanager
    def alone(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._alone)
            self._alone = True  # new claims wait from here on
            self._cond.wait_for(lambda: not self._passing)
        try:
            yield
        finally:
            with self._cond:
                self._alone = False
                self._cond.notify_all()


class Liveness:
    """Claims, heartbeats and ends the jobs of one worker process."""

    def __init__(self, settings: Settings, books: Callable[[str], JobBook]) -> None:
        self.settings, self.books = settings, books
        self.worker = worker_id()
        self._prefixes: set[str] = set()
        self._lock = threading.Lock()
        self._gate = _Gate()
        """Claims (with their beat) against ``stop``."""
        self._beating: tuple[threading.Thread, threading.Event] | None = None
        """The heartbeat thread and what stops it."""
        self._ended: queue.SimpleQueue[tuple[str, str, str] | threading.Event] = (
            queue.SimpleQueue())
        """Ends to record (prefix, job key, thread id), and marks ``stop`` waits for."""
        self._ender: threading.Thread | None = None
        self._active: set[str] = set()
        """Keys of the jobs this process is running now."""
        self._ended_by_job: set[str] = set()
        """Keys of running jobs that recorded their own end (``ended``)."""

    @contextmanager
    def running(
        self, job: Job, *, adopted: bool = False, also: Also | None = None,
        claimed: Claim | None = None,
    ) -> Iterator[tuple[str, Any]]:
        """Claim ``job`` and renew its lease in one round trip; yield what to do with it:

        ``run`` (claimed, lease renewed), ``untracked`` (a message without a key, from an
        older producer: run it, lease not renewed yet) or ``drop`` (another process runs
        it, it ended, or its lease was taken over), with the reply to ``also(p)``, a read
        the job needs first, made in the same round trip (None if not made). The end is
        recorded afterwards off the job's path (unless the job recorded it, ``ended``); an
        exception gives the job back (Celery
        retries its message). An ``adopted`` job (``worker/eager``) was claimed by this
        process when it was taken: it runs at once. ``claimed``: the job's claim, made
        already with those of its bundle (``claim_calls``).
        """
        if not job.key:
            yield "untracked", None
            return
        book = self.books(job.run.prefix)
        if adopted:
            with self._gate.together():
                self._beat(job.run.prefix)
            with self._holding(job, book):
                yield "run", None
            return
        with self._gate.together():
            self._beat(job.run.prefix)
            outcome, holder, renewed, early = claimed or self._claim(job, book, also)
        if outcome != "ok" or not renewed:
            why = {"ok": "its lease was taken over", "held": f"process {holder} runs it",
                   "died": "a process died running it: its own message runs it"}.get(
                       outcome, "it ended")
            log.info("dropped a copy of %s job %s of thread %s: %s", job.kind, job.key,
                     job.run.thread_id, why)
            if outcome == "ok":
                self.end_later(job)
            yield "drop", None
            return
        with self._holding(job, book):
            yield "run", early

    def _claim(self, job: Job, book: JobBook, also: Also | None) -> Claim:
        """Claim ``job`` and renew its lease (``running``)."""
        lease = (job.owner, job.fence, self.settings.lease_ttl)
        thread_id = job.run.thread_id
        claim = book.claim_renewing(job.key, thread_id, self.worker, lease, also)
        if claim[0] != "ok" and claim[1] == self.worker and job.key not in self._active:
            # Our own claim on a job we no longer run: its execution here failed while the
            # store was down (so the claim could not be given back) and Celery retried it.
            book.release(job.key, thread_id, self.worker)
            claim = book.claim_renewing(job.key, thread_id, self.worker, lease, also)
        return claim

    def claim_calls(self, jobs: Sequence[Job], finished: Finished, *,
                    again: bool = False) -> list[Claim] | None:
        """The claims of a bundle's calls (``bundles.together``), each with its own
        ``finished`` reply, in one round trip; None where that cannot be (Redis Cluster).
        A call that a dead process held before is left to its own message (``died``);
        ``again``: the bundle checks the claims it made (its own stand) before it goes on
        (``JobBook.claim_calls``)."""
        first = jobs[0]
        with self._gate.together():
            self._beat(first.run.prefix)
            return self.books(first.run.prefix).claim_calls(
                [job.key for job in jobs], first.run.thread_id, self.worker,
                (first.owner, first.fence, self.settings.lease_ttl), finished,
                mode="again" if again else "bundle",
                heartbeat_ttl=self.settings.heartbeat_ttl)

    def give_back(self, jobs: Sequence[Job]) -> None:
        """Release the claims of jobs claimed here that will not run here (the rest of a
        bundle that stopped), as ``_give_back`` does one job's."""
        if not jobs:
            return
        book = self.books(jobs[0].run.prefix)
        try:
            ride_out(lambda: book.release_many([(j.key, j.run.thread_id) for j in jobs],
                                               self.worker),
                     self.settings.store_retry, f"giving back the claims of {len(jobs)} jobs")
        except CheckpointStoreError as exc:
            log.error("%s", exc)

    @contextmanager
    def _holding(self, job: Job, book: JobBook) -> Iterator[None]:
        """Run ``job``, claimed here: end it after, or give it back on an exception."""
        self._active.add(job.key)
        try:
            yield
        except Exception:
            self._give_back(book, job)
            raise
        except BaseException:
            with contextlib.suppress(CheckpointStoreError):  # a retry of ours re-takes it
                book.release(job.key, job.run.thread_id, self.worker)
            raise
        finally:
            self._active.discard(job.key)
            ended = job.key in self._ended_by_job
            self._ended_by_job.discard(job.key)
        if not ended:
            self.end_later(job)

    def ended(self, job: Job) -> None:
        """``job``, running here, recorded its end itself (with its last write): there is
        none to record after it."""
        if job.key in self._active:
            self._ended_by_job.add(job.key)

    def _give_back(self, book: JobBook, job: Job) -> None:
        """Release the claim of a job whose run here failed, before Celery retries it.

        The retry may land on another process, which drops its copy while our claim
        stands (we are alive, so no sweep takes it back): so when the store is down
        (the usual reason a job fails and is retried), wait for it, up to the store
        retry window, before letting the error out. Past the window the job's own
        error goes on; a retry that comes back here re-takes the claim.
        """
        try:
            ride_out(lambda: book.release(job.key, job.run.thread_id, self.worker),
                     self.settings.store_retry, f"giving back the claim of job {job.key}")
        except CheckpointStoreError as exc:
            log.error("%s", exc)

    def end_later(self, job: Job) -> None:
        """Record the job's end from a daemon thread, batched, riding out a store outage
        (a lost end only means a finished job is resent once more, and its copy finds it
        done)."""
        self._ended.put((job.run.prefix, job.key, job.run.thread_id))
        with self._lock:
            if self._ender is None:
                self._ender = threading.Thread(target=self._end_forever,
                                               name="durable-graph-ends", daemon=True)
                self._ender.start()

    def _end_forever(self) -> None:
        while True:
            batch = [self._ended.get()]
            while len(batch) < _END_BATCH:
                try:
                    batch.append(self._ended.get_nowait())
                except queue.Empty:
                    break
            by_prefix: dict[str, list[tuple[str, str]]] = {}
            marks = []
            for item in batch:
                if isinstance(item, threading.Event):
                    marks.append(item)
                else:
                    by_prefix.setdefault(item[0], []).append(item[1:])
            for prefix, jobs in by_prefix.items():
                self._end_many(prefix, jobs)
            for mark in marks:  # every end queued before it is recorded
                mark.set()

    def _end_many(self, prefix: str, jobs: list[tuple[str, str]]) -> None:
        """Record ends, riding out a store outage for the store retry window (an end
        lost for good leaves the job owed by a live process: never resent, but its
        thread never looks idle either)."""
        try:
            ride_out(lambda: self.books(prefix).end_many(jobs, self.settings.lease_ttl),
                     self.settings.store_retry, f"recording the end of {len(jobs)} job(s)")
        except Exception:
            log.exception("recording the end of %d job(s) failed", len(jobs))

    def _beat(self, prefix: str) -> None:
        """Beat for ``prefix`` now if it is new here; keep beating from a daemon thread."""
        with self._lock:
            if prefix in self._prefixes:
                return
            self._prefixes.add(prefix)
        self.books(prefix).heartbeat(self.worker, self.settings.heartbeat_ttl)
        with self._lock:
            if self._beating is None:
                stop = threading.Event()
                thread = threading.Thread(target=self._beat_until, args=(stop,),
                                          name="durable-graph-heartbeat", daemon=True)
                self._beating = (thread, stop)
                thread.start()

    def _beat_until(self, stop: threading.Event) -> None:
        ttl = self.settings.heartbeat_ttl
        while not stop.wait(ttl / 3):
            with self._lock:
                prefixes = list(self._prefixes)
            for prefix in prefixes:
                if stop.is_set():
                    return
                try:
                    self.books(prefix).heartbeat(self.worker, ttl)
                except Exception:  # the next beat retries; a long outage reads as death
                    log.exception("heartbeat of %s failed", self.worker)

    def stop(self, timeout: float = 5.0) -> None:
        """End this process's heartbeats (a clean shutdown, a test's end): stop the
        heartbeat thread, record the ends still queued, and take this process's entry out
        of the heartbeats of each prefix it beat for.

        Where the process still holds a claim (a job that will not finish here) its entry
        is declared dead instead, so the next sweep sends the job again: sweeps find dead
        processes by their entries, so an entry gone would leave the claim held for good.
        Call it when no job runs here (a job that runs after it beats again); ``timeout``
        bounds each wait (the thread's last beat, the queued ends). Claims wait while it
        runs (and it for those under way), so none is made between its look at this
        process's claims and its entry's removal.
        """
        with self._gate.alone():
            with self._lock:
                beating, self._beating = self._beating, None
                prefixes, self._prefixes = self._prefixes, set()
            if beating is not None:
                beating[1].set()
                beating[0].join(timeout)
            self._flush_ends(timeout)
            for prefix in prefixes:
                self._retire(prefix)

    def prefixes(self) -> frozenset[str]:
        """The prefixes this process beats for now."""
        with self._lock:
            return frozenset(self._prefixes)

    def _flush_ends(self, timeout: float) -> None:
        """Wait (up to ``timeout``) for the ends queued so far to be recorded."""
        with self._lock:
            ending = self._ender is not None
        if ending:
            done = threading.Event()
            self._ended.put(done)
            done.wait(timeout)

    def _retire(self, prefix: str) -> None:
        """Take this process's heartbeat entry out of ``prefix`` (see ``stop``)."""
        book = self.books(prefix)
        try:
            if any(holder == self.worker for _, _, holder in book.claims()):
                book.declare_dead(self.worker)
            else:
                book.forget_workers([self.worker])
        except CheckpointStoreError as exc:  # its heartbeat TTL still ends it
            log.warning("could not end the heartbeat of %s: %s", self.worker, exc)


def note_lost(books: Books, request: Any, exc: BaseException) -> None:
    """A pool process died running ``request``: say how, and declare it dead now."""
    args, kwargs = list(request.args or ()), dict(request.kwargs or {})
    key, prefix = kwargs.get("key"), kwargs.get("prefix")
    keys = [key] if key else bundle_keys(args)  # a bundle: those not ended hold its claims
    pid = getattr(request, "worker_pid", None)
    if not (keys and prefix and pid and args and isinstance(args[0], str)):
        return
    try:
        book = books(prefix)
        # the cause goes with every job the process held (each fails alone at max deaths)
        holders = book.note_deaths(keys, args[0], f"{socket.gethostname()}:{pid}:", str(exc))
        for holder in dict.fromkeys(h for h in holders if h):
            book.declare_dead(holder)
    except Exception:  # the heartbeat TTL still finds it
        log.exception("could not record the death of pool process %s", pid)
