"""Driving a distributed run from one committed step to the next, with no coordinator.

Whoever holds a run's next move calls ``advance``: the producer after applying
the input, the worker that lands a step's last outcome, a recovery job after a
lease takeover. ``advance`` asks the shared transition what the committed
checkpoint leads to and either enqueues the step's missing tasks or, when all of
them already have outcomes, ends the step itself (``finish``): the next
checkpoint is committed in one script that is fenced by the lease generation and
conditional on the step's checkpoint still being the newest, so two workers that
both saw the last outcome land cannot both commit it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

from durable_graph.errors import (
    CheckpointStoreError,
    CommitConflictError,
    DispatchError,
    FencingError,
    RunCancelledError,
)
from durable_graph.graph.compiled import CompiledGraph
from durable_graph.scheduler.algo import PlannedTask, finished_writes, read_values
from durable_graph.scheduler.channels import MISSING
from durable_graph.scheduler.loop import CHECKPOINT_MAP, SUBGRAPHS, StepLoop
from durable_graph.scheduler.runtime import RunScope, RunTree
from durable_graph.scheduler.spec import Write
from durable_graph.scheduler.transition import (
    Next,
    Outcome,
    StepOptions,
    begin_step,
    checkpoint_event,
    end_step,
    execute_task,
    outcomes_from_pending,
    record_outcome,
    step_started_events,
    task_config,
)
from durable_graph.store.base import (
    Checkpoint,
    PendingWrite,
    new_checkpoint_id,
)
from durable_graph.store.redis.lease import Lease
from durable_graph.store.redis.saver import Prior, RedisSaver
from durable_graph.types import Command
from durable_graph.worker import metrics, tracing
from durable_graph.worker.ending import (
    CloseRide,
    EndRide,
    abort_run,
    end_run,
    error_record,
    report_to_parent,
)
from durable_graph.worker.events import RunEvents
from durable_graph.worker.shipping import GraphRef

if TYPE_CHECKING:
    from durable_graph.worker.held import HeldWrites

__all__ = [
    "AFTER_COMMIT",
    "Continuation",
    "Dispatcher",
    "Job",
    "LastWrites",
    "ParentCall",
    "RunContext",
    "RunSpec",
    "RunStep",
    "abort_run",
    "advance",
    "begin_run",
    "branch_of",
    "end_run",
    "error_record",
    "finish",
    "report_to_parent",
    "writes_of",
]

log = logging.getLogger("durable_graph.worker")


@dataclass(frozen=True)
class RunSpec:
    """What every job of one distributed run needs to know about the run."""

    run_id: str
    thread_id: str
    graph: GraphRef
    config: dict[str, Any]
    """The caller's config (thread id included), without checkpoint id or fence."""
    durability: str
    interrupt_before: tuple[str, ...] | str
    interrupt_after: tuple[str, ...] | str
    recursion_limit: int
    stop_step: int
    modes: tuple[str, ...]
    start_checkpoint: str
    """The checkpoint the run started from ('' for a new thread): ``exit`` keeps it."""
    prefix: str
    """Key prefix of the run's RedisSaver."""
    branch: tuple[str, str] = ("", "")
    """(the checkpoint a run from a past checkpoint continues, the thread's newest then):
    its first commit starts a branch, so it must find that newest one still newest."""
    null_resume: tuple[Any, ...] = ()
    """A resume value no pending interrupt claimed: the first interrupt() takes it."""
    resume_by_id: tuple[tuple[str, Any], ...] = ()
    """The run's answers by interrupt id (``Command(resume={id: value})``), which the
    subgraph runs inside it take theirs from (``RunTree.resume_map``, as embedded)."""
    context: Any = None
    """The run's ``context=`` (``runtime.context``); jobs carry it signed."""
    trace: str = ""
    """The W3C traceparent of the run's span (see ``tracing``), signed like the rest."""
    ns: str = ""
    """The checkpoint namespace its steps commit under ('' for a thread's own run)."""
    parent: ParentCall | None = None
    """For a subgraph's run: the parent call its output is the result of."""
    output_values: bool = False
    """``values``/``updates`` chunks show what ``invoke`` returns (a subgraph's run, or
    ``invoke(stream_mode=...)``), as the embedded loop's ``RunOptions.output_values``."""

    def step_options(self) -> StepOptions:
        """The options the shared transition needs."""
        return StepOptions(self.interrupt_before, self.interrupt_after,
                           stop_step=self.stop_step, recursion_limit=self.recursion_limit)


@dataclass(frozen=True)
class ParentCall:
    """Where a subgraph's run reports its end: a call of a task of the parent run."""

    run: RunSpec
    """The parent run (itself a subgraph's run at deeper levels)."""
    checkpoint_id: str
    """The parent checkpoint the calling task runs against."""
    caller: str
    """The calling task's id: suspended on the call, replayed when it ends."""
    call_id: str
    """The id the child's output (or error, or interrupts) is recorded under."""
    name: str
    """The subgraph's name, recorded with its output."""
    ns: str = ""
    """The calling task's namespace: it leads the child's stream events, as embedded."""


@dataclass(frozen=True)
class Job:
    """One Celery job: a node task, a ``@task`` call, a run start or a recovery."""

    kind: str
    """``task``, ``call``, ``start`` or ``recover``."""
    run: RunSpec
    owner: str
    """Lease owner of the run's current dispatch (changes at a takeover)."""
    fence: int
    """Lease generation every write of this job is fenced with."""
    checkpoint_id: str = ""
    step: int = 0
    task_id: str = ""
    """The node task's id, or the call's id."""
    caller: str = ""
    """For a call: the task (or call) suspended on it, replayed when its calls finish."""
    call: Any = None
    """For a call: (name, function, retry policy, config)."""
    input: Any = None
    """For a start: the run's input (a Command, None, or new input)."""
    checkpoint: str | None = None
    """For a start: replay from this checkpoint id."""
    attempt: int = 1
    """For a task or call that suspended: the retry attempt its replay continues."""
    name: str = ""
    """The node or ``@task`` it runs, for errors about the job ('' for start and recover)."""
    key: str = ""
    """The message's identity in the job book, given when it is sealed (copies share it)."""
    replay: bool = False
    """A suspended task's wake-up: it replays a body that already started (and said so)."""


class Dispatcher(Protocol):
    """Sends jobs to workers."""

    def send(self, jobs: Sequence[Job]) -> None:
        """Enqueue ``jobs`` (signed)."""
        ...

    def seal(self, job: Job) -> str:
        """The signed payload of ``job`` (to be sent later with ``send_sealed``)."""
        ...

    def send_sealed(self, sealed: str | bytes, *, register: bool = True) -> None:
        """Enqueue a job sealed earlier (``register=False``: it is owed already)."""
        ...

    def seal_value(self, obj: Any) -> str:
        """``obj`` signed as base64 text (a run record)."""
        ...

    def open_value(self, text: str) -> Any:
        """What ``seal_value`` sealed; SignatureError for anything else."""
        ...


@dataclass(frozen=True)
class LastWrites:
    """The writes of a step's last task, stored in the round trip of the step's commit."""

    task_id: str
    checkpoint_id: str
    """The checkpoint whose step the task ran in."""
    writes: list[Write]
    stored: Callable[[], None]
    """Publishes the task's stream events, once its writes are stored."""

    def store(self, rc: RunContext) -> None:
        """Store them on their own (the step ends without a commit)."""
        rc.saver.put_task_writes(rc.config(self.checkpoint_id), self.writes, self.task_id)
        self.stored()


class Continuation(Protocol):
    """Where a worker may keep the next step's only task to run it itself
    (``worker/eager``)."""

    def take(self, job: Job, *, last: bool) -> bool:
        """Adopt ``job``; False when it must be published instead. ``last``: the job
        that adopts it has done its part (the step before is committed)."""
        ...

    def ride(self, job: Job, *, planned: Next | None = None) -> Any:
        """A ``Rider`` adopting ``job`` with the commit of the step before it (None:
        not here); ``take`` of the same job then confirms it. ``planned``: its step as
        planned from the checkpoint that commit makes, which the job then starts from."""
        ...

    def drop(self) -> None:
        """Forget (and end) a job adopted with a commit that will not run after all."""
        ...


@dataclass
class RunContext:
    """One run as seen by whoever advances it: its graph, store, events and lease."""

    run: RunSpec
    graph: CompiledGraph
    saver: RedisSaver
    events: RunEvents
    dispatcher: Dispatcher
    owner: str
    fence: int
    eager: Continuation | None = None
    """A worker's continuation slot (None: publish every job, as a producer does)."""
    early: Any = None
    """The store's reply to the read this job needs first, made with its claim in one
    round trip (``WorkerRuntime``): the LOAD of a task's checkpoint, the FINISHED
    check of a call; None when not read."""
    stop_at_commit: str | None = None
    """The run asked to stop, as read by this context's last commit (None: not read)."""
    prior: Prior | None = None
    """The run's record and input checkpoint, held back to be stored in the round trip
    of the run's first commit (which expects that checkpoint newest); stored on their
    own first when anything else would come first (``store_prior``)."""
    ending: tuple[str, float] | None = None
    """(job-book key, idle TTL) of the job this context runs, while its end is still to
    be recorded: what records it in a round trip of its own clears this (the script
    that stores a call's result, a run's close riding a task's commit: ``CloseRide``);
    the worker records the end after the job, off its path, only while it is set."""
    held: HeldWrites | None = None
    """Where a bundle's call holds its result to land with the next ones' (see
    ``worker/held``); None: a call stores its result at once."""
    planned: tuple[int, Next] | None = None
    """(step, plan) of the step last planned here (``plan``): a job adopted with the
    commit of its checkpoint starts from the plan its adopter made of that checkpoint,
    as committed, instead of reading and planning it again (see ``worker/eager``)."""

    @property
    def thread_id(self) -> str:
        return self.run.thread_id

    def config(self, checkpoint_id: str | None = None) -> dict[str, Any]:
        """A store config of this thread fenced with the run's lease generation."""
        conf: dict[str, Any] = {"thread_id": self.thread_id, "checkpoint_ns": self.run.ns,
                                "fence": self.fence}
        if checkpoint_id:
            conf["checkpoint_id"] = checkpoint_id
        return {"configurable": conf}

    def job(self, kind: str, **fields: Any) -> Job:
        """A job of this run under its current lease."""
        return Job(kind, self.run, self.owner, self.fence, **fields)

    def emit(self, mode: str, payload: Any) -> None:
        """Publish a stream event if the producer asked for its mode; a subgraph's
        (``stream(subgraphs=True)``) is led by its namespace, as embedded."""
        if mode not in self.run.modes:
            return
        if self.run.parent is not None:
            payload = (tuple(self.run.parent.ns.split("|")), mode, payload)
            mode = SUBGRAPHS
        self.events.publish(self.thread_id, self.run.run_id, mode, payload)

    def lease(self) -> Lease:
        """The lease this run's jobs hold (expiry unknown here)."""
        return Lease(self.thread_id, self.owner, self.fence, 0)

    def plan(self, checkpoint: Checkpoint, step: int) -> Next:
        """``begin_step`` of step ``step`` from ``checkpoint``, planned once: it is pure, so
        the plan made for a commit's ride (``_ride``) serves ``advance`` after the commit."""
        held = self.planned
        if held is not None and held[0] == step and held[1].checkpoint is checkpoint:
            return held[1]
        nxt = begin_step(self.graph.spec, checkpoint, step, self.run.step_options(),
                         thread_id=self.thread_id, ns=self.run.ns)
        self.planned = (step, nxt)
        return nxt

    def store_prior(self) -> None:
        """Store the input checkpoint held back (``prior``), if any, now."""
        prior, self.prior = self.prior, None
        if prior is not None:
            prior.store(self.saver)


def advance(
    rc: RunContext, checkpoint: Checkpoint, step: int, pending: Sequence[PendingWrite], *,
    started: bool = False,
) -> None:
    """Start step ``step`` from the committed ``checkpoint``: enqueue its missing tasks,
    end the run, or end the step here when every task already has an outcome.

    ``started``: the run starts (or resumes) here, so the tasks of its step that
    finished before stream as the embedded loop streams them (the others' jobs do).
    """
    spec = rc.graph.spec
    while True:
        nxt = rc.plan(checkpoint, step)
        if nxt.status != "running":
            end_run(rc, nxt)
            return
        outcomes = outcomes_from_pending(nxt.tasks, pending)
        done = finished_writes(nxt.tasks, pending)
        if started and done:
            for mode, payload in step_started_events(
                    [t for t in nxt.tasks if t.id in done], done, frozenset(rc.run.modes),
                    spec.updates_kept(rc.run.output_values)):
                rc.emit(mode, payload)
        started = False
        missing = [t for t in nxt.tasks if t.id not in done]
        if not (missing and all(t.node.hidden for t in missing)):
            rc.store_prior()  # only the commit of the input's writer step carries it
        if any(t.node.hidden for t in missing):
            _run_hidden(rc, checkpoint, [t for t in missing if t.node.hidden], outcomes,
                        last=len(missing) == sum(t.node.hidden for t in missing))
            missing = [t for t in missing if not t.node.hidden]
        if missing:
            if _stop_requested(rc):
                if rc.eager is not None:
                    rc.eager.drop()
                end_run(rc, Next("cancelled", checkpoint, error=RunCancelledError(
                    f"run {rc.run.run_id} of thread {rc.thread_id!r} stopped at a step "
                    "boundary: new input arrived with multitask='interrupt'")))
                return
            # a failed or paused task runs again: its old outcome must not count as new
            stale = [t.id for t in missing if t.id in outcomes]
            if stale:
                rc.saver.clear_outcomes(rc.config(checkpoint.id), stale)
            _send_tasks(rc, checkpoint, step, missing, last=True)
            return
        committed = finish(rc, checkpoint, step, nxt.tasks, outcomes)
        if committed is None:
            return
        checkpoint, step, pending = committed, step + 1, []


def _send_tasks(
    rc: RunContext, checkpoint: Checkpoint, step: int, tasks: Sequence[PlannedTask], *,
    last: bool,
) -> None:
    """Enqueue the jobs of ``tasks``; a lone task may be kept to run here (eager).
    ``last``: nothing is left to do after this (``advance`` sends last of all)."""
    jobs = _task_jobs(rc, checkpoint, step, tasks)
    if len(jobs) == 1 and rc.eager is not None and rc.eager.take(jobs[0], last=last):
        return
    rc.dispatcher.send(jobs)


def _task_jobs(
    rc: RunContext, checkpoint: Checkpoint, step: int, tasks: Sequence[PlannedTask]
) -> list[Job]:
    """The jobs of ``tasks`` of step ``step``, which run against ``checkpoint``."""
    return [rc.job("task", checkpoint_id=checkpoint.id, step=step, task_id=t.id, name=t.name)
            for t in tasks]


AFTER_COMMIT = frozenset({"values", "checkpoints", "updates", "tasks", "messages", "debug"})
"""Stream modes with events of a step published once its commit returned (the step's
checkpoint, its last task's writes): a run streaming one ends after them, not with it,
and a producer publishes its first job after them (``worker/firstjob``)."""


_STEP_EVENTS = frozenset({"values", "checkpoints"})
"""Stream modes with events of a step published by the worker that committed it, once
its commit returned (whoever committed it: a refused commit publishes none): with
``async`` durability such a run sends the next step's jobs only after them, as with
``sync``, so nothing of that step, nor the run's end, can reach the stream first."""


def _ride(rc: RunContext, nxt: Next, step: int) -> Any:
    """What to send in the round trip of the commit of ``new`` (``nxt.checkpoint``, which
    ends a step) as a ``Rider``, or None: the adoption of the next step's only task,
    when this worker would run it itself anyway (a chain, see ``worker/eager``); the
    run's end, when it ends at ``new`` done (not paused after the step), streams no
    event published after the commit (``AFTER_COMMIT``: the end would overtake them)
    and no commit wait applies (a ride is not waited for) (``CloseRide``)."""
    if rc.run.durability == "async" or nxt.status != "running":
        return None  # a run paused after this step adopts nothing: it stops here
    new = nxt.checkpoint
    follow = rc.plan(new, step)
    if follow.status == "done" and rc.run.parent is None \
            and not (AFTER_COMMIT & set(rc.run.modes)) and rc.saver.conn.commit_wait is None:
        return CloseRide(rc, follow)
    if rc.eager is None or follow.status != "running" or len(follow.tasks) != 1 \
            or follow.tasks[0].node.hidden:
        return None
    return rc.eager.ride(_task_jobs(rc, new, step, follow.tasks)[0], planned=follow)


class RunStep:
    """What every task runtime of a distributed run shares: its store, its durability
    mode and its event stream. Subgraphs run inline with their own local executor."""

    def __init__(self, rc: RunContext) -> None:
        self.rc, self.config = rc, rc.run.config

    @property
    def saver(self) -> RedisSaver:
        return self.rc.saver

    @property
    def scope(self) -> RunScope:
        """The run's context (from the run record) and the shipped graph's store and cache."""
        run_id = self.config.get("run_id")
        return RunScope(self.rc.run.context, self.rc.graph.store, self.rc.graph.cache,
                        self.rc.thread_id, str(run_id) if run_id is not None else None,
                        tree=RunTree(resume_map=dict(self.rc.run.resume_by_id)))

    @property
    def durability(self) -> str:
        return self.rc.run.durability

    def submit(self, fn: Any) -> None:
        fn()

    def emit(self, mode: str, payload: Any) -> None:
        self.rc.emit(mode, payload)

    def begin_attempt(self, number: int) -> None:
        """Nothing of an earlier attempt is kept here."""


class _WriterStep(RunStep):
    """The runtime of a hidden node (the input writer): it calls no tasks and pauses never."""

    def __init__(self, rc: RunContext) -> None:
        super().__init__(rc)
        self.recorded: dict[str, tuple[str, Any]] = {}
        self.consumed: dict[str, int] = {}

    def record(self, task_id: str, writes: list[tuple[str, Any]]) -> None:
        raise DispatchError("a hidden writer node cannot record writes of its own")

    def take_null_resume(self) -> Any:
        return MISSING

    def start_call(self, parent: Any, call_id: str, name: str, fn: Any, retry: Any) -> Any:
        raise DispatchError("a hidden writer node cannot call tasks")


def _run_hidden(
    rc: RunContext, checkpoint: Checkpoint, tasks: Sequence[PlannedTask],
    outcomes: dict[str, Outcome], *, last: bool,
) -> None:
    """Run the graph's own writer nodes here instead of as jobs: they only map values.

    Their writes are stored unless this step is about to be committed right here.
    """
    values = read_values(rc.graph.spec, checkpoint)
    step = _WriterStep(rc)
    for task in tasks:
        config, ns = task_config(rc.run.config, rc.run.ns, checkpoint.id, task)
        outcome = execute_task(task, step, config, ns, values=values, resume=[])
        outcomes[task.id] = outcome
        if not last or outcome.writes is None:
            rc.store_prior()
            record_outcome(writes_of(rc.saver.put_writes, rc.config(checkpoint.id), task.id),
                           outcome)


def writes_of(
    put: Callable[[Any, list[Write], str], object], config: dict[str, Any], task_id: str
) -> Callable[[list[Write]], object]:
    """``put`` (a saver's put_writes) bound to one task of one checkpoint."""
    return lambda writes: put(config, writes, task_id)


@tracing.step_span
def finish(
    rc: RunContext,
    checkpoint: Checkpoint,
    step: int,
    tasks: Sequence[PlannedTask],
    outcomes: dict[str, Outcome],
    *,
    last: LastWrites | None = None,
) -> Checkpoint | None:
    """End step ``step``: commit its next checkpoint and return it, or end the run.

    None when the run stopped here, or another worker (or a newer lease) won.
    With ``async`` durability the next step's jobs are enqueued before the commit
    (they wait for it to land), unless the run streams the step's own events
    (``_STEP_EVENTS``); with ``sync`` and ``exit`` after it. ``last``: the
    writes of the task that just ended the step, not stored yet.
    """
    nxt = end_step(rc.graph.spec, checkpoint, tasks, outcomes, step=step,
                   opts=rc.run.step_options(),
                   new_id=new_checkpoint_id(after=max(checkpoint.id, rc.run.branch[1])))
    if nxt.metadata is None:
        rc.store_prior()
        if last is not None:
            last.store(rc)
        end_run(rc, nxt)
        return None
    metadata = nxt.metadata
    parents = rc.run.config.get("configurable", {}).get(CHECKPOINT_MAP)
    if parents:  # a subgraph's step: the checkpoints of its enclosing graphs, as embedded
        metadata = {**metadata, "parents": dict(parents)}
        nxt = replace(nxt, metadata=metadata)
    new = nxt.checkpoint
    # A producer (no continuation slot) commits its step before sending the next, so
    # the run's first events reach the stream in order: the input's values first. So
    # does a run streaming the step's own events (``_STEP_EVENTS``): else the next
    # step's jobs, run elsewhere, could publish theirs, or end the run, first.
    overlap = (rc.run.durability == "async" and nxt.status == "running"
               and rc.eager is not None
               and not (_STEP_EVENTS & set(rc.run.modes))
               and not _stop_requested(rc))  # a stopping run starts no next step
    follow = rc.plan(new, step + 1) if overlap else None
    if follow is not None and follow.status == "running":
        _send_tasks(rc, new, step + 1, follow.tasks, last=False)
    ride = _ride(rc, nxt, step + 1) if follow is None and not overlap else (
        EndRide(rc) if follow is not None and follow.status == "running" else None)
    if not _commit(rc, checkpoint, nxt, last, ride):
        return None
    if "values" in rc.run.modes and (chunk := rc.graph.spec.values_chunk(
            read_values(rc.graph.spec, new), nxt.updated,
            as_result=rc.run.output_values)) is not MISSING:
        rc.emit("values", chunk)
    if "checkpoints" in rc.run.modes:  # after its values, as in LangGraph
        rc.emit("checkpoints", checkpoint_event(rc.graph.spec, new, metadata,
                                                rc.thread_id, rc.run.ns,
                                                parent_id=checkpoint.id))
    if nxt.status == "interrupted":
        if rc.eager is not None:
            rc.eager.drop()
        end_run(rc, Next("interrupted", new))
        return None
    if follow is not None:
        if follow.status != "running":
            end_run(rc, follow)
        return None
    return new


def _stop_requested(rc: RunContext) -> bool:
    """Whether new input asked this run to stop at this step boundary (``multitask``):
    as the commit that made this boundary read it, else read now. A subgraph's run
    ends; its parent stops at its own next boundary."""
    stop, rc.stop_at_commit = rc.stop_at_commit, None
    if rc.run.parent is not None:
        return False
    if stop is None:
        stop = rc.saver.stop_requested(rc.thread_id) or ""
    return stop == rc.run.run_id


def _commit(
    rc: RunContext, parent: Checkpoint, nxt: Next, last: LastWrites | None, ride: Any = None,
) -> bool:
    """Commit ``nxt.checkpoint`` if ``parent`` is still the newest and the lease ours,
    with the ``last`` task's writes stored just before and ``ride`` (the next task's
    adoption, or the run's end) just after, in the same round trip. False when it was
    not committed here, or the run ended with it."""
    new, run = nxt.checkpoint, rc.run
    exit_mode = run.durability == "exit"
    parent_id = run.start_checkpoint if exit_mode else parent.id
    new_versions = {ch: v for ch, v in new.channel_versions.items()
                    if parent.channel_versions.get(ch) != v}
    assert nxt.metadata is not None
    expect = run.branch[1] if run.branch[1] and parent.id == run.branch[0] else parent.id
    prior = _take_prior(rc)
    try:
        _, rc.stop_at_commit = rc.saver.commit_step(
            rc.config(parent_id or None), new, nxt.metadata, new_versions,
            task_writes=(rc.config(last.checkpoint_id), last.task_id, last.writes)
            if last else None,
            expect_latest=expect,
            replaces=parent.id if exit_mode and parent.id != run.start_checkpoint else None,
            keep=run.start_checkpoint or None,
            parent=parent,  # list channels stored as deltas against it
            ride=ride,
            prior=prior,
        )
    except (CommitConflictError, FencingError) as exc:  # store errors too: caught first
        if rc.eager is not None:
            rc.eager.drop()
        if last is not None and isinstance(exc, CommitConflictError):
            last.stored()  # its writes were stored; another worker committed the step
        log.info("step of thread %s not committed here: %s", rc.thread_id, exc)
        metrics.commit_refused(exc)
        if prior is not None:  # the run's record and input went with it: a producer's
            raise  # submit that started nothing says so (nobody else will run it)
        return False
    except CheckpointStoreError as exc:
        if ride is not None and not isinstance(ride, CloseRide):
            ride.failed(exc)
        raise
    if last is not None:
        last.stored()
    metrics.step_committed(parent.ts)
    return not (isinstance(ride, CloseRide) and ride.ended())


def _take_prior(rc: RunContext) -> Prior | None:
    prior, rc.prior = rc.prior, None
    return prior


def branch_of(saver: RedisSaver, thread_id: str, first: Checkpoint) -> tuple[str, str]:
    """``RunSpec.branch`` of a run whose first step starts from ``first``."""
    newest = saver.get_tuple({"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}})
    if newest is None or newest.checkpoint.id == first.id:
        return ("", "")
    return (first.id, newest.checkpoint.id)


def begin_run(rc: RunContext, loop: StepLoop, input: Any, saved: Any = MISSING) -> None:
    """Apply a run's input with the embedded loop's code, record the run, advance it.

    The run's record is stored before the input changes anything (with the thread's
    ``running`` status, in one round trip), so a crash at any point leaves a thread
    that a recovery can resume under this run (and a redelivered start job can see
    that its input was already applied). ``saved``: the thread's checkpoint as read
    already (see ``StepLoop.begin``). New input only makes a checkpoint: record and
    checkpoint are held back (``RunContext.prior``) and sent, in this order, in the
    round trip of the first commit.
    """
    hold = not loop.checkpoint_id and input is not None and not isinstance(input, Command)
    record: list[tuple[str, str, str]] = []

    def on_load() -> None:
        rc.run = replace(rc.run, stop_step=int(loop.step_opts.stop_step or 0),
                         start_checkpoint=loop.loaded_id)
        run = (rc.thread_id, rc.dispatcher.seal_value(rc.run),
               rc.run.graph.path or rc.graph.name)
        if hold:  # nothing is written before the input's checkpoint: both wait for it
            record.append(run)
            loop.persister.hold()
        else:
            rc.saver.set_run(*run, status="running")

    metrics.run_started()
    step = loop.begin(input, on_load=on_load, saved=saved)
    held = loop.persister.take_held()
    rc.prior = Prior(held, record[0] if record else None) if held else None
    if record and held is None:
        rc.saver.set_run(*record[0], status="running")
    loop.persister.flush()
    branch = branch_of(rc.saver, rc.thread_id, loop.checkpoint) if loop.checkpoint_id \
        else ("", "")
    null = () if loop.null_resume is MISSING else (loop.null_resume,)
    by_id = tuple(loop.tree.resume_map.items())
    if branch != rc.run.branch or null or by_id:
        rc.store_prior()
        rc.run = replace(rc.run, branch=branch, null_resume=null, resume_by_id=by_id)
        rc.saver.set_run(rc.thread_id, rc.dispatcher.seal_value(rc.run))
    advance(rc, loop.checkpoint, step, loop.pending, started=True)
