"""What a worker does with each kind of job.

- ``task``: run one node of a step against its checkpoint, store its outcome, and
  if that was the step's last outcome, end the step (``runs.finish``).
- ``call``: run one ``@task`` call, store its result, and if its caller was
  suspended on it and it was the last such call, enqueue the caller's replay.
- ``start``: apply a run's input (the CLI's ``resume`` sends these) and advance.
- ``recover``: after a lease takeover, re-enqueue what the thread's last
  committed step still misses.

A node never blocks on a call: the call's future raises ``Suspended``, the node's
job registers what it waits on and ends, and the call that finishes last
re-enqueues the node, which replays and finds the recorded results. Every job
first renews the thread's lease with its fencing token; a job from a lease that
was taken over is dropped before it runs anything.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, TypeVar

from durable_graph.errors import (
    CheckpointStoreError,
    DurableGraphError,
    FencingError,
    GraphInterrupt,
    LeaseReleasedError,
    NondeterminismError,
    SignatureError,
)
from durable_graph.graph.func import by_value
from durable_graph.graph.subgraph import SubgraphCall
from durable_graph.scheduler.algo import PlannedTask, mark_resumed, plan_tasks, read_values
from durable_graph.scheduler.channels import MISSING
from durable_graph.scheduler.messages import message_events
from durable_graph.scheduler.retry import run_with_retry
from durable_graph.scheduler.runtime import (
    CallError,
    Suspended,
    TaskContext,
    TaskFuture,
    answers_from,
    consumed_answers,
)
from durable_graph.scheduler.transition import (
    Next,
    Outcome,
    error_as_text,
    execute_task,
    outcome_writes,
    outcomes_from_pending,
    paused_after,
    record_outcome,
    task_config,
    task_ended,
    task_started,
    task_updates,
    with_null_writes,
)
from durable_graph.store.base import (
    ERROR,
    RESUME,
    RETURN,
    Checkpoint,
    CheckpointTuple,
    PendingWrite,
)
from durable_graph.store.redis.lease import Lease
from durable_graph.store.redis.saver import RedisSaver
from durable_graph.types import RetryPolicy
from durable_graph.worker import metrics, subruns, tracing
from durable_graph.worker.runs import (
    Job,
    LastWrites,
    RunContext,
    RunStep,
    abort_run,
    advance,
    begin_run,
    end_run,
    finish,
    writes_of,
)

__all__ = ["JobStep", "LeaseKeeper", "handle"]

log = logging.getLogger("durable_graph.worker")
_T = TypeVar("_T")

_ASYNC_WAIT = 10.0
"""Seconds a job waits for an async commit of its checkpoint before dropping itself."""
_WAKE_TTL = 7 * 24 * 3600
"""Seconds a suspended task's wake-up record lives (its calls must finish by then)."""
_CALLS_BATCH_FIRST, _CALLS_BATCH_MAX = 32, 512
"""A node starting many calls sends the first 32 as soon as it started them, then
batches twice as large, up to 512: so other workers run calls while it starts more
(a call that finishes before its caller suspends is found finished by ``suspend``)."""


class LeaseKeeper:
    """Renews the leases of the threads this process is running jobs of.

    A job holds its thread's lease for as long as it runs (``hold``); one daemon
    thread renews every held lease every third of the TTL, so a long node keeps
    its thread alive and a killed worker's thread expires one TTL later.
    """

    def __init__(self, saver_for: Callable[[str], RedisSaver], ttl: float) -> None:
        self._saver_for, self.ttl = saver_for, ttl
        self._held: dict[tuple[str, str, int, str], int] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @contextmanager
    def hold(self, prefix: str, lease: Lease, *, renewed: bool = False) -> Iterator[None]:
        """Renew ``lease`` now, unless ``renewed`` just now (FencingError if it was taken
        over), and while inside."""
        if not renewed:
            self._saver_for(prefix).leases.renew(lease, self.ttl)
        key = (lease.thread_id, lease.owner, lease.generation, prefix)
        with self._lock:
            self._held[key] = self._held.get(key, 0) + 1
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._renew_forever, name="durable-graph-leases", daemon=True)
                self._thread.start()
        try:
            yield
        finally:
            with self._lock:
                self._held[key] -= 1
                if not self._held[key]:
                    del self._held[key]

    def _renew_forever(self) -> None:
        while True:
            time.sleep(self.ttl / 3)
            with self._lock:
                held = list(self._held)
            self.renew(held)

    def renew(self, held: list[tuple[str, str, int, str]]) -> None:
        """Renew the leases ``held`` was a snapshot of. One refused is a takeover only if
        another owner took it (not a lease its run's end released, which a job here may
        still hold while it returns) and a job here still holds it: else its run ended
        (and freed it) meanwhile."""
        for key in held:
            thread_id, owner, gen, prefix = key
            try:
                self._saver_for(prefix).leases.renew(Lease(thread_id, owner, gen, 0), self.ttl)
            except LeaseReleasedError:
                pass  # its run ended (and released it) while a job here was returning
            except FencingError:
                with self._lock:
                    still = key in self._held
                if still:
                    log.warning("lease of thread %s was taken over; its jobs here are stale",
                                thread_id)
            except Exception:  # keep renewing the others; the next round retries
                log.exception("renewing the lease of thread %s failed", thread_id)


class _PendingCall(TaskFuture[Any]):
    """A call running on another worker: waiting on it suspends the caller."""

    def result(self, timeout: float | None = None) -> Any:
        raise Suspended()

    def exception(self, timeout: float | None = None) -> BaseException | None:
        raise Suspended()

    def done(self) -> bool:
        return False


class JobStep(RunStep):
    """The StepRuntime of a task or call running in a job: writes go to Redis, calls
    become jobs, stream events go to the run's event stream."""

    def __init__(self, rc: RunContext, job: Job, pending: list[PendingWrite] | None) -> None:
        super().__init__(rc)
        self.job = job
        self._pending = pending
        self._recorded: dict[str, tuple[str, Any]] | None = None
        self._consumed: dict[str, int] = {}
        self.stale: set[str] = set()
        """Calls whose recorded failure belongs to an earlier run of the thread."""
        self.started: list[str] = []
        self.outbox: list[Job] = []
        self._send_at = _CALLS_BATCH_FIRST
        """Calls started that are sent at once, before the caller waits on any."""
        self._deferred: list[Callable[[], None]] = []
        self.attempt = job.attempt
        self._null_resume: Any = rc.run.null_resume[0] if rc.run.null_resume else MISSING

    @property
    def recorded(self) -> dict[str, tuple[str, Any]]:
        """Recorded call results (and this run's call failures), read once per job."""
        if self._recorded is None:
            if self._pending is None:
                saved = self.rc.saver.get_tuple(self.rc.config(self.job.checkpoint_id))
                self._pending = list(saved.pending_writes) if saved else []
            self._recorded = recorded_calls(self._pending, self.rc.run.run_id)
            self._consumed = consumed_answers(self._recorded, self._pending)
            self.stale = {w.task_id for w in self._pending
                          if _call_failure(w) and w.task_id not in self._recorded}
        return self._recorded

    @property
    def consumed(self) -> dict[str, int]:
        """Resume answers each recorded call took from its caller."""
        _ = self.recorded
        return self._consumed

    def record(self, task_id: str, writes: list[tuple[str, Any]]) -> None:
        self.rc.saver.put_writes(self.rc.config(self.job.checkpoint_id), writes, task_id)

    def take_null_resume(self) -> Any:
        value, self._null_resume = self._null_resume, MISSING
        return value

    def start_call(
        self, parent: TaskContext, call_id: str, name: str, fn: Callable[[], Any],
        retry: RetryPolicy | None,
    ) -> TaskFuture[Any]:
        """Enqueue the call as its own job; the caller suspends if it waits on it."""
        if call_id in self.stale:  # failed or paused in an earlier run: runs again
            self.rc.saver.clear_outcomes(self.rc.config(self.job.checkpoint_id), [call_id])
        if self.rc.run.graph.digest is not None:  # may run where the graph came as a blob
            fn = by_value(fn)
        self.outbox.append(self.rc.job(
            "call", checkpoint_id=self.job.checkpoint_id, step=self.job.step,
            task_id=call_id, caller=self.job.task_id, name=name,
            call=(name, fn, retry, parent.config, parent.resume[parent.interrupt_idx:]),
            key=call_key(self.job, call_id),
        ))
        self.started.append(call_id)
        self._send_early()
        return _PendingCall()

    def _send_early(self) -> None:
        """Send the calls started so far once a batch is full, so workers run them while
        the caller starts more. Not when subgraph starts wait to go first (``defer``).
        A failure here, inside the caller's code, must not reach it: the calls stay for
        the next flush (under the keys they have: a copy that did arrive is dropped)."""
        if self._deferred or len(self.outbox) < self._send_at:
            return
        self._send_at = min(2 * self._send_at, _CALLS_BATCH_MAX)
        try:
            self.rc.dispatcher.send(self.outbox)
        except Exception as exc:
            log.warning("sending %d calls of task %s failed (%s); sent with the next batch",
                        len(self.outbox), self.job.task_id, exc)
            return
        self.outbox = []

    def takes_subgraph(self, call: SubgraphCall) -> bool:
        """Whether the subgraph's steps run as jobs (see ``subruns``)."""
        return subruns.child_ref(self, call) is not None

    def run_subgraph(self, call: SubgraphCall) -> Any:
        """The subgraph's recorded result; else start it as jobs and suspend."""
        ref = subruns.child_ref(self, call)
        assert ref is not None
        return subruns.run_subgraph(self, call, ref)

    def defer(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` at the next flush, before the calls are sent (a subgraph's start)."""
        self._deferred.append(fn)

    def begin_attempt(self, number: int) -> None:
        """A retry of the task (not a replay of the attempt it suspended in) runs the
        calls that failed in the attempt before, as an embedded retry does."""
        self.attempt = number
        if number > self.job.attempt:
            failed = [c for c, (_, v) in self.recorded.items() if isinstance(v, CallError)]
            for call_id in failed:
                del self.recorded[call_id]
            self.stale.update(failed)

    def flush(self) -> None:
        """Enqueue the calls started since the last flush, over one broker connection.

        Calls are sent when the caller suspends (or ends), or as a batch fills up while
        it starts more (``_CALLS_BATCH_FIRST``): a node that starts a thousand calls
        publishes them in a handful of batches.
        """
        deferred, self._deferred = self._deferred, []
        for fn in deferred:
            fn()
        outbox, self.outbox = self.outbox, []
        if outbox:
            self.rc.dispatcher.send(outbox)

    def reload(self) -> None:
        """Read recorded results again (after calls finished while suspending)."""
        self._pending, self._recorded, self.started = None, None, []


def call_key(caller: Job, call_id: str) -> str:
    """The job key of call ``call_id`` started by ``caller``: the same in every execution
    of the caller under one lease (run, fence, checkpoint, attempt), so a copy of a
    caller that died after sending some calls sends them again under their keys, and a
    copy of a call finds it registered (held by its runner, or gone) instead of running
    it twice. A new run, a takeover or a retry of the caller starts fresh keys."""
    ident = "|".join((caller.run.run_id, str(caller.fence), caller.checkpoint_id,
                      caller.task_id, call_id, str(caller.attempt)))
    return hashlib.blake2b(ident.encode(), digest_size=16).hexdigest()


def recorded_calls(pending: list[PendingWrite], run_id: str) -> dict[str, tuple[str, Any]]:
    """Call results by call id; a call that failed in this run is recorded as CallError."""
    out: dict[str, tuple[str, Any]] = {}
    for w in pending:
        if w.channel == RETURN:
            out[w.task_id] = w.value
        elif _call_failure(w) and w.value.get("run") == run_id and w.task_id not in out:
            out[w.task_id] = (w.value["call"], CallError(w.value["error"]))
    return out


def _call_failure(w: PendingWrite) -> bool:
    """Whether ``w`` records a failed ``@task`` call (see ``_call_error``)."""
    return w.channel == ERROR and isinstance(w.value, dict) and "call" in w.value


@tracing.job_span
def handle(rc: RunContext, job: Job, keeper: LeaseKeeper, *, renewed: bool = False) -> None:
    """Run one job under its thread's lease; a job of a lost lease is dropped.

    A store error propagates (Celery retries the job); any other durable-graph error
    (a graph that differs from the producer's, say) fails the run, so it cannot be
    recovered into the same error again and again.
    """
    started, outcome = time.monotonic(), "ok"
    try:
        with keeper.hold(rc.saver.prefix, rc.lease(), renewed=renewed):
            _HANDLERS[job.kind](rc, job)
    except FencingError as exc:
        log.info("dropped a stale %s job of thread %s: %s", job.kind, job.run.thread_id, exc)
        outcome = "stale"
    except CheckpointStoreError:
        metrics.job_done(job.kind, "retried", started)
        raise
    except DurableGraphError as exc:
        log.error("%s job of thread %s failed the run: %s", job.kind, job.run.thread_id, exc)
        abort_run(rc.saver, rc.events, job, exc)
        outcome = "failed"
    metrics.job_done(job.kind, outcome, started)


def _load(rc: RunContext, job: Job) -> CheckpointTuple | None:
    """The job's checkpoint. With async durability it may still be landing, so wait
    for it, unless another worker committed that step first (then it never lands)."""
    config = rc.config(job.checkpoint_id)
    deadline = time.monotonic() + _ASYNC_WAIT
    delay = 0.001
    early, rc.early = rc.early, None  # read with the job's claim, if it was
    while True:
        saved = rc.saver.tuple_from(config, early) if early else None
        early = None
        if saved is None:
            saved = rc.saver.get_tuple(config)
        if saved is not None or rc.run.durability != "async":
            return saved
        latest = rc.saver.get_tuple(rc.config())
        if latest is not None and latest.checkpoint.id == job.checkpoint_id:
            return latest  # it landed between the two reads
        lost = (latest is not None and latest.checkpoint.id != rc.run.branch[1]
                and int(latest.metadata.get("step", -1)) >= job.step - 1)
        if lost or time.monotonic() > deadline:
            log.info("checkpoint %s of thread %s will not land (%s); job dropped",
                     job.checkpoint_id, rc.thread_id,
                     "another worker committed that step" if lost else "timed out")
            return None
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def _planned(
    rc: RunContext, job: Job
) -> tuple[Checkpoint, list[PlannedTask], list[PendingWrite]] | None:
    """The job's checkpoint, the tasks of its step and its pending writes. A job adopted
    with the commit of its checkpoint starts from the plan its adopter made of it (the
    commit wrote no pending writes, and its task is this job's); any other reads and
    plans it. None when the checkpoint will not land (see ``_load``)."""
    held, rc.planned = rc.planned, None
    if held is not None and held[0] == job.step and held[1].checkpoint.id == job.checkpoint_id:
        return held[1].checkpoint, held[1].tasks, []
    saved = _load(rc, job)
    if saved is None:
        return None
    checkpoint = with_null_writes(rc.graph.spec, saved.checkpoint, saved.pending_writes)
    tasks = plan_tasks(rc.graph.spec, checkpoint, rc.thread_id, rc.run.ns, step=job.step,
                       stop=rc.run.stop_step)
    return checkpoint, tasks, list(saved.pending_writes)


def _run_task(rc: RunContext, job: Job) -> None:
    planned = _planned(rc, job)
    if planned is None:
        return
    checkpoint, tasks, pending = planned
    task = next((t for t in tasks if t.id == job.task_id), None)
    if task is None:
        raise NondeterminismError(
            f"task {job.task_id} is not planned from checkpoint {job.checkpoint_id} of thread "
            f"{rc.thread_id!r} on this worker: its graph differs from the producer's. Deploy "
            "the same graph code to producers and workers."
        )
    outcomes = outcomes_from_pending(tasks, pending)
    last: LastWrites | None = None
    if task.id not in outcomes:
        if not task.node.hidden and not job.replay:
            rc.emit("tasks", task_started(task))
        outcome = _execute(rc, job, checkpoint, task, pending)
        if outcome is None:
            return
        outcomes[task.id] = outcome
        last = _with_commit(rc, job, task, outcome) if len(tasks) == 1 else None
        if last is None:
            _record(rc, job, task, outcome)
    if len(outcomes) < len(tasks):
        config = rc.config(job.checkpoint_id)
        if len(rc.saver.finished(config, [t.id for t in tasks])) < len(tasks):
            return
        again = rc.saver.get_tuple(config)
        outcomes = outcomes_from_pending(tasks, again.pending_writes if again else [])
        if len(outcomes) < len(tasks):
            return
    committed = finish(rc, checkpoint, job.step, tasks, outcomes, last=last)
    if committed is not None:
        advance(rc, committed, job.step + 1, [])


def _execute(
    rc: RunContext, job: Job, checkpoint: Checkpoint, task: PlannedTask,
    pending: list[PendingWrite],
) -> Outcome | None:
    """Run the node; None when it suspended on calls still running elsewhere."""
    step = JobStep(rc, job, pending)
    values = read_values(rc.graph.spec, checkpoint)
    resume = next((list(w.value) for w in pending
                   if w.task_id == task.id and w.channel == RESUME), [])
    config, ns = task_config(rc.run.config, rc.run.ns, checkpoint.id, task)
    while True:
        try:
            outcome = execute_task(task, step, config, ns, values=values, resume=resume,
                                   first_attempt=job.attempt)
        except Suspended:
            if _suspend(rc, job, step):
                return None
            step.reload()
            continue
        step.flush()
        return outcome


def _suspend(rc: RunContext, job: Job, step: JobStep) -> bool:
    """Send the calls the job started and park it until they finish; False when they
    already have (replay now)."""
    step.flush()
    calls = [c for c in step.started if c not in step.recorded]
    if not calls:
        return False
    # the replay continues this attempt; it is a new message (a key of its own)
    wake = replace(job, attempt=step.attempt, key="", replay=True)
    return rc.saver.suspend(rc.config(job.checkpoint_id), job.task_id, calls,
                            rc.dispatcher.seal(wake).encode(), _WAKE_TTL)


def _with_commit(
    rc: RunContext, job: Job, task: PlannedTask, outcome: Outcome
) -> LastWrites | None:
    """The writes of a step's only task, to store in the round trip of the step's commit;
    None to store them now (an error, which commits nothing, or ``async`` durability,
    whose next jobs are sent before the commit)."""
    if outcome.error is not None or rc.run.durability == "async":
        return None
    return LastWrites(task.id, job.checkpoint_id, outcome_writes(outcome),
                      functools.partial(_emit_outcome, rc, job, task, outcome))


def _record(rc: RunContext, job: Job, task: PlannedTask, outcome: Outcome) -> None:
    record_outcome(writes_of(rc.saver.put_task_writes, rc.config(job.checkpoint_id), task.id),
                   outcome)
    _emit_outcome(rc, job, task, outcome)


def _emit_outcome(rc: RunContext, job: Job, task: PlannedTask, outcome: Outcome) -> None:
    """The stream events of a task's stored outcome."""
    if "messages" in rc.run.modes and outcome.writes:
        for chunk in message_events(task, outcome.writes, job.step, rc.run.config, set()):
            rc.emit("messages", chunk)
    if outcome.writes is not None and not task.node.hidden:
        rc.emit("updates", task_updates(
            task, outcome, rc.graph.spec.updates_kept(rc.run.output_values)))
    if not task.node.hidden and not outcome.cached:
        rc.emit("tasks", task_ended(task, outcome))


def _run_call(rc: RunContext, job: Job) -> None:
    config = rc.config(job.checkpoint_id)
    early, rc.early = rc.early, None  # read with the job's claim, if it was
    done = {raw.decode() for raw in early} if early is not None \
        else rc.saver.finished(config, [job.task_id])
    if done:
        return  # a redelivery: the result is recorded, the call never runs again
    name, fn, retry, call_config, answers = job.call
    step = JobStep(rc, job, None)
    while True:
        given = answers_from(functools.partial(next, iter(answers), MISSING), step, job.task_id)
        ctx = TaskContext(job.task_id, name, f"{name}:{job.task_id}", call_config, step,
                          answers=given)
        try:
            value = ctx.run(lambda: run_with_retry(fn, retry))
            writes: list[tuple[str, Any]] = [(RETURN, (name, value))]
        except Suspended:
            if _suspend(rc, job, step):
                return
            step.reload()
            continue
        except (Exception, GraphInterrupt, asyncio.CancelledError) as exc:
            # recorded: the caller raises it on replay, as embedded. SystemExit and
            # KeyboardInterrupt are the worker stopping, not the call failing.
            writes = [(ERROR, _call_error(rc, name, exc))]
        break
    step.flush()
    held = rc.held
    if held is not None and _or_as_text(functools.partial(held.hold, rc, job), writes):
        return  # it lands with the bundle's next results (``worker/held``)
    wake = _or_as_text(functools.partial(_land_call_writes, rc, job), writes)
    if writes[0][0] == RETURN:
        rc.emit("updates", {name: writes[0][1][1]})
    if wake is not None:
        rc.dispatcher.send_sealed(wake)


def _call_error(rc: RunContext, name: str, error: BaseException) -> dict[str, Any]:
    return {"call": name, "error": error, "run": rc.run.run_id}


def _or_as_text(store: Callable[[list[tuple[str, Any]]], _T],
                writes: list[tuple[str, Any]]) -> _T:
    """``store(writes)``; a call's error that cannot be stored (it does not serialize) is
    stored as its text instead."""
    try:
        return store(writes)
    except Exception:
        if writes[0][0] != ERROR:
            raise
        failure = {**writes[0][1], "error": error_as_text(writes[0][1]["error"])}
        return store([(ERROR, failure)])


def _land_call_writes(rc: RunContext, job: Job, writes: list[tuple[str, Any]]) -> bytes | None:
    """Store the call's result, and end its job in the same round trip (``rc.ending``)."""
    config = rc.config(job.checkpoint_id)
    try:
        wake = rc.saver.put_call_writes(config, writes, job.task_id, job.caller,
                                        ends=rc.ending)
    except FencingError:  # refused after the script ran: the job ended all the same
        rc.ending = None
        raise
    rc.ending = None
    return wake


def _run_start(rc: RunContext, job: Job) -> None:
    sealed = rc.saver.get_run(rc.thread_id)
    if sealed is not None and _run_id(rc, sealed) == rc.run.run_id:
        _run_recover(rc, job)  # a redelivery: the input was applied once already
        return
    config = rc.config(job.checkpoint)
    config["configurable"] = {**rc.run.config.get("configurable", {}), **config["configurable"]}
    loop = rc.graph.make_loop(config, durability=rc.run.durability, saver=rc.saver,
                              interrupt_before=rc.run.interrupt_before,
                              interrupt_after=rc.run.interrupt_after)
    try:
        begin_run(rc, loop, job.input)
    except Exception as exc:  # bad input: the run ends failed, and says why
        if isinstance(exc, CheckpointStoreError):
            raise
        abort_run(rc.saver, rc.events, job, exc)


def _run_id(rc: RunContext, sealed: str) -> str:
    try:
        run = rc.dispatcher.open_value(sealed)
    except SignatureError:
        return ""
    return str(getattr(run, "run_id", ""))


def _run_recover(rc: RunContext, job: Job) -> None:
    saved = rc.saver.get_tuple(rc.config())
    if saved is None:
        log.warning("thread %s has no checkpoint to recover from", rc.thread_id)
        return
    log.info("recovering thread %s from checkpoint %s", rc.thread_id, saved.checkpoint.id)
    metrics.recovery_started()
    checkpoint = with_null_writes(rc.graph.spec, saved.checkpoint, saved.pending_writes)
    if saved.checkpoint.id == rc.run.start_checkpoint:
        # the run resumed from it (new input makes a checkpoint first): its breakpoints
        # are passed, as the resume marked them (embedded and distributed alike)
        checkpoint = mark_resumed(checkpoint)
    elif _paused_after(rc, saved):  # its committer died before ending the run there
        end_run(rc, Next("interrupted", checkpoint))
        return
    advance(rc, checkpoint, int(saved.metadata.get("step", -1)) + 1, list(saved.pending_writes))


def _paused_after(rc: RunContext, saved: CheckpointTuple) -> bool:
    """Whether the run pauses at ``saved``, the thread's newest checkpoint and one a step
    of this run committed, after a node of ``interrupt_after`` (``end_step`` paused
    there)."""
    opts = rc.run.step_options()
    if (not opts.interrupt_after or saved.parent_config is None
            or saved.metadata.get("source") != "loop"):
        return False
    parent = rc.saver.get_tuple(saved.parent_config)
    return parent is not None and paused_after(rc.graph.spec, saved.checkpoint,
                                               parent.checkpoint, opts)


_HANDLERS: dict[str, Callable[[RunContext, Job], None]] = {
    "task": _run_task,
    "call": _run_call,
    "start": _run_start,
    "recover": _run_recover,
}
