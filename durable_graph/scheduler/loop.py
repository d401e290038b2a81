"""The step loop: load a thread, run supersteps until done, failed or interrupted.

Written once over a small executor interface; ``invoke``, ``stream`` and their
async forms are thin adapters over ``StepLoop.run``. Each superstep is: plan the
checkpoint's tasks (pure), run those without recorded writes, store each task's
writes as it finishes, apply all writes (pure), store the next checkpoint.
"""

from __future__ import annotations

import functools
import queue
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from durable_graph.errors import EmptyInputError, GraphInterrupt, GraphValueError
from durable_graph.scheduler.algo import (
    PlannedTask,
    TaskWrites,
    apply_writes,
    finished_writes,
    mark_resumed,
    plan_tasks,
    read_values,
)
from durable_graph.scheduler.channels import MISSING
from durable_graph.scheduler.commands import command_writes, pending_interrupts
from durable_graph.scheduler.executor import Executor
from durable_graph.scheduler.messages import message_events
from durable_graph.scheduler.persist import Persister
from durable_graph.scheduler.runtime import (
    RunScope,
    RunTree,
    TaskFuture,
    consumed_answers,
    local_call,
)
from durable_graph.scheduler.spec import GraphSpec, Write
from durable_graph.scheduler.transition import (
    Next,
    Outcome,
    StepOptions,
    begin_step,
    checkpoint_event,
    end_step,
    execute_task,
    pause_events,
    record_outcome,
    step_started_events,
    task_config,
    task_ended,
    task_updates,
    with_null_writes,
)
from durable_graph.store.base import (
    NULL_TASK_ID,
    RESUME,
    RETURN,
    BaseCheckpointSaver,
    Checkpoint,
    PendingWrite,
    config_ids,
    empty_checkpoint,
    new_checkpoint_id,
)
from durable_graph.types import START, Command, Interrupt

__all__ = ["CHECKPOINT_MAP", "SUBGRAPHS", "Event", "RunOptions", "StepLoop"]

Event = tuple[str, Any]
"""A stream event: (mode, payload)."""
CHECKPOINT_MAP = "checkpoint_map"
"""Config key of a subgraph run: its enclosing graphs' checkpoint ids, by namespace."""
SUBGRAPHS = "subgraphs"
"""The pseudo stream mode of a subgraph's events: payload (namespace, mode, chunk)."""


@dataclass(frozen=True)
class RunOptions:
    """Per-run settings of the loop."""

    durability: str = "async"
    interrupt_before: Sequence[str] | str = ()
    interrupt_after: Sequence[str] | str = ()
    recursion_limit: int = 10007
    modes: frozenset[str] = frozenset()
    """Stream modes whose events the caller wants; others are not computed."""
    context: Any = None
    """The run's ``context=``."""
    store: Any = None
    """The graph's long-term store."""
    cache: Any = None
    """The graph's node and task cache."""
    output_values: bool = False
    """``values`` chunks show what ``invoke`` returns (a subgraph run by ``invoke``)."""
    tree: RunTree | None = None
    """What the enclosing runs share with this one (a subgraph's run); None: a new tree."""


@dataclass
class _Step:
    """The StepRuntime of one superstep: what its tasks use to record and emit."""

    loop: StepLoop
    config: dict[str, Any]
    recorded: dict[str, tuple[str, Any]] = field(default_factory=dict)
    consumed: dict[str, int] = field(default_factory=dict)

    @property
    def scope(self) -> RunScope:
        return self.loop.scope

    @property
    def saver(self) -> BaseCheckpointSaver | None:
        return self.loop.saver

    @property
    def durability(self) -> str:
        return self.loop.opts.durability

    def submit(self, fn: Any) -> None:
        self.loop.executor.submit(fn)

    def record(self, task_id: str, writes: list[Write]) -> None:
        self.loop.record(task_id, writes)

    def emit(self, mode: str, payload: Any) -> None:
        if mode in self.loop.opts.modes:
            self.loop.events.put(("event", mode, payload))

    def take_null_resume(self) -> Any:
        value, self.loop.null_resume = self.loop.null_resume, MISSING
        return value

    start_call = staticmethod(local_call)

    def begin_attempt(self, number: int) -> None:
        """Failed calls are not recorded here, so a retry runs them again anyway."""


class StepLoop:
    """Runs one invocation of a graph on one thread."""

    def __init__(
        self,
        spec: GraphSpec,
        saver: BaseCheckpointSaver | None,
        executor: Executor,
        config: dict[str, Any],
        opts: RunOptions,
    ) -> None:
        self.spec, self.saver, self.executor, self.opts = spec, saver, executor, opts
        self.config = config
        if saver is not None:
            self.thread_id, self.ns, self.checkpoint_id = config_ids(config)
        else:
            conf = config.get("configurable", {})
            self.thread_id = str(conf.get("thread_id", ""))
            self.ns, self.checkpoint_id = str(conf.get("checkpoint_ns", "")), None
        self.events: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self.pending: list[PendingWrite] = []
        self.null_resume: Any = MISSING
        self.status = "running"
        self.interrupts: list[Interrupt] = []
        self.output: Any = None
        self.checkpoint: Checkpoint = empty_checkpoint()
        self.source = ""
        """Metadata source of the checkpoint the run started from."""
        self.persister: Persister
        self.step_opts = StepOptions()
        self.first_events: list[Event] = []
        self.committed_id: str | None = None
        self.tree = opts.tree if opts.tree is not None else RunTree()
        self.seen_messages: set[Any] = self.tree.seen_messages
        """Ids of the chat messages streamed (or input to a node) in this run."""
        """The last checkpoint committed (or loaded): the parent of the next one."""
        self.loaded_meta: Any = None
        self.loaded_parent: str | None = None
        run_id = config.get("run_id")
        self.scope = RunScope(opts.context, opts.store, opts.cache,
                              self.thread_id if saver is not None else "",
                              str(run_id) if run_id is not None else None,
                              opts.modes if SUBGRAPHS in opts.modes else frozenset(),
                              self.tree)

    # -- recording -------------------------------------------------------------

    def record(self, task_id: str, writes: list[Write], *, hold: bool = False) -> None:
        """Store a task's writes against the current checkpoint (thread-safe); ``hold``:
        the step's last task's, sent with the commit that applies them (``Persister``)."""
        self.persister.put_writes(task_id, writes, hold=hold)
        self.pending.extend(PendingWrite(task_id, ch, v) for ch, v in writes)

    # -- the run ---------------------------------------------------------------

    def run(self, input: Any) -> Iterator[Event]:
        """Run to the end, yielding stream events; sets status, output, interrupts."""
        step = self._load()
        self.step_opts = self._step_options(step)
        try:
            step = yield from self._first(input, step, pair=True)
            while (yield from self._tick(step)):
                step += 1
        except BaseException as exc:
            self.status = "interrupted" if isinstance(exc, GraphInterrupt) else "failed"
            self._finish(exc)
            raise
        self._finish(None)
        self.output = self.spec.run_result(read_values(self.spec, self.checkpoint))

    def _updates(self, task: PlannedTask, outcome: Outcome) -> dict[str, Any]:
        """A task's ``updates`` chunk; for a subgraph run by ``invoke``, narrowed to its
        output schema's keys (None when it wrote none), as LangGraph streams it."""
        return task_updates(task, outcome, self.spec.updates_kept(self.opts.output_values))

    def _values(self, updated: frozenset[str] | None) -> Any:
        """The current ``values`` chunk (MISSING if the step wrote none of its keys)."""
        return self.spec.values_chunk(read_values(self.spec, self.checkpoint), updated,
                                      as_result=self.opts.output_values)

    def _step_options(self, loaded_step: int) -> StepOptions:
        """The run's step settings; the recursion limit counts from the loaded step."""
        return StepOptions(
            self.opts.interrupt_before, self.opts.interrupt_after,
            stop_step=loaded_step + self.opts.recursion_limit + 1,
            recursion_limit=self.opts.recursion_limit,
        )

    def begin(
        self, input: Any, on_load: Callable[[], None] | None = None, *, saved: Any = MISSING,
    ) -> int:
        """Load the thread and apply ``input`` without running a step; the step to run.

        The distributed driver starts runs this way and hands the steps to workers;
        the stream events applying the input makes are kept in ``first_events``.
        ``on_load`` runs once the thread is loaded, before the input changes anything,
        and marks the thread running itself (with whatever it stores then); ``saved``:
        the thread's checkpoint tuple as read already (None: it has none).
        """
        step = self._load(saved, mark_running=on_load is None)
        self.step_opts = self._step_options(step)
        if on_load is not None:
            on_load()  # before the input changes anything
        first = self._first(input, step)
        while True:
            try:
                self.first_events.append(next(first))
            except StopIteration as stop:
                self.first_events += self._drain()
                return int(stop.value)

    def _load(self, saved: Any = MISSING, *, mark_running: bool = True) -> int:
        # the latest checkpoint read and the thread marked running in one call; a named
        # one is read first, so a missing one fails the run before it is marked running
        marked = False
        if saved is MISSING and self.saver is not None:
            marked = mark_running and not self.checkpoint_id
            saved = (self.saver.get_tuple_for_run(self.config) if marked
                     else self.saver.get_tuple(self.config))
        elif saved is MISSING:
            saved = None
        if saved is None and self.checkpoint_id:
            raise GraphValueError(
                f"Thread {self.thread_id!r} has no checkpoint {self.checkpoint_id!r}."
            )
        parent = saved.checkpoint if saved else None
        self.loaded_id = saved.checkpoint.id if saved else ""
        """The checkpoint the run started from ('' on a new thread)."""
        if saved is not None:
            self.checkpoint, self.pending = saved.checkpoint, list(saved.pending_writes)
            self.source = str(saved.metadata.get("source", ""))
            self.loaded_meta = saved.metadata
            self.committed_id = saved.checkpoint.id
            self.loaded_parent = config_ids(saved.parent_config)[2] if saved.parent_config \
                else None
        self.persister = Persister(
            self.saver, thread_id=self.thread_id, ns=self.ns,
            durability=self.opts.durability, parent=parent,
            extra_configurable={
                k: v for k, v in self.config.get("configurable", {}).items() if k == "fence"
            },
        )
        if self.saver is not None and mark_running and not marked:
            self.saver.set_status(self.thread_id, "running")
        return int(saved.metadata.get("step", -1)) + 1 if saved else -1

    def _first(self, input: Any, step: int, *, pair: bool = False) -> Generator[Event, None, int]:
        """Apply the run's input: a Command, a resume (None), or new input; ``pair``: the
        input's checkpoint may wait to be stored with the first step's (``_input_waits``)."""
        if isinstance(input, Command):
            self._check_resumable(input)
            if isinstance(input.resume, dict):  # answers by interrupt id, for subgraphs too
                self.tree.resume_map.update(input.resume)
            by_task, null_writes, self.null_resume = command_writes(
                input, self.pending, self.spec
            )
            for task_id, writes in by_task.items():
                self.record(task_id, writes)
            if null_writes:
                self.record(NULL_TASK_ID, null_writes)
        self.checkpoint = with_null_writes(self.spec, self.checkpoint, self.pending)
        if input is None or isinstance(input, Command):
            if not self.checkpoint.channel_versions:
                raise EmptyInputError(
                    "Received no input and the thread has no checkpoint to resume: pass "
                    "input to start a run, or the thread_id of an existing run."
                )
            self.checkpoint = mark_resumed(self.checkpoint)
            if "values" in self.opts.modes:
                yield "values", self._values(None)
            if input is None and self.checkpoint_id and self._replays_a_branch():
                return self._fork(step)
            self._checkpoint_event(self.loaded_meta, self.loaded_parent, self.pending)
            yield from self._drain()
            return step
        discard = [TaskWrites(t.name, t.path, t.triggers, ()) for t in self._plan()]
        input_task = TaskWrites("__input__", ("input",), (), self.spec.input_writes(input))
        self.checkpoint, _ = apply_writes(
            self.spec, self.checkpoint, [*discard, input_task],
            new_checkpoint_id(after=self.checkpoint.id)
        )
        if pair and self._input_waits():
            self.persister.hold()
        self._commit({"source": "input", "step": step, "parents": {}})
        return step + 1

    def _input_waits(self) -> bool:
        """Whether the input's checkpoint can wait for the first step's commit, to be
        stored with it (``Persister.hold``): the input triggers internal nodes only, so
        no node of the user's runs before that commit, and with ``sync`` no stream event
        naming the input's checkpoint reaches the caller before it is stored."""
        if self.opts.durability == "sync" and self.opts.modes & {"checkpoints", "debug"}:
            return False
        return all(n.hidden for n in self.spec.nodes.values() if START in n.triggers)

    def _check_resumable(self, cmd: Command) -> None:
        """A resume value for a thread that waits on nothing would vanish: refuse it.

        (LangGraph 1.2 silently returns the finished state; see the README.)
        """
        if cmd.resume is None or self.ns or not self.checkpoint.channel_versions:
            return  # a thread with no checkpoint gets EmptyInputError just below
        if pending_interrupts(self.pending) or self._plan():
            return
        raise GraphValueError(
            f"Command(resume=...) for thread {self.thread_id!r}, which has no pending "
            "interrupt: its run finished, so there is nothing to resume and the value "
            "would be ignored. Start a new run with input, or check get_state(config)."
        )

    def _replays_a_branch(self) -> bool:
        """Whether running from the named checkpoint starts a new branch: always, except
        from an update_state/fork checkpoint that is still the thread's latest."""
        if self.source not in ("update", "fork"):
            return True
        assert self.saver is not None
        latest = self.saver.get_tuple(
            {"configurable": {"thread_id": self.thread_id, "checkpoint_ns": self.ns}}
        )
        return latest is None or latest.checkpoint.id != self.checkpoint.id

    def _fork(self, step: int) -> int:
        """Replay from a named checkpoint: a copy of it starts a new branch, so every
        task after it runs again (its old pending writes belong to the old branch)."""
        cp = self.checkpoint
        self.checkpoint = Checkpoint(
            new_checkpoint_id(after=cp.id), cp.ts, cp.channel_values, cp.channel_versions,
            cp.versions_seen, cp.v,
        )
        self._commit({"source": "fork", "step": step, "parents": {}})
        return step + 1

    def _plan(self) -> list[PlannedTask]:
        return plan_tasks(self.spec, self.checkpoint, self.thread_id, self.ns)

    def _commit(self, metadata: Any) -> None:
        self.pending = []
        parents = self.config.get("configurable", {}).get(CHECKPOINT_MAP)
        if parents:  # a subgraph's run: the checkpoints of its enclosing graphs
            metadata = {**metadata, "parents": dict(parents)}
        self.persister.put_checkpoint(self.checkpoint, metadata)
        parent, self.committed_id = self.committed_id, self.checkpoint.id
        self._checkpoint_event(metadata, parent)

    def _checkpoint_event(
        self, metadata: Any, parent: str | None, pending: Sequence[PendingWrite] = ()
    ) -> None:
        """Stream the current checkpoint (``checkpoints`` and ``debug`` modes)."""
        if "checkpoints" in self.opts.modes or "debug" in self.opts.modes:
            self.events.put(("event", "checkpoints", checkpoint_event(
                self.spec, self.checkpoint, metadata, self.thread_id, self.ns,
                parent_id=parent, pending=pending)))

    def _tick(self, step: int) -> Generator[Event, None, bool]:
        """Run one superstep; False when the run is over (done or interrupted)."""
        nxt = begin_step(self.spec, self.checkpoint, step, self.step_opts,
                         thread_id=self.thread_id, ns=self.ns)
        if nxt.status != "running":
            return (yield from self._stop(nxt))
        tasks = nxt.tasks
        outcomes = yield from self._run_tasks(tasks, step)
        nxt = end_step(self.spec, self.checkpoint, tasks, outcomes, step=step,
                       opts=self.step_opts, new_id=new_checkpoint_id(after=self.checkpoint.id))
        if nxt.metadata is None:
            self.persister.send_held()  # no commit applies the last task's writes
            return (yield from self._stop(nxt))
        self.checkpoint = nxt.checkpoint
        self._commit(nxt.metadata)
        if "values" in self.opts.modes and (chunk := self._values(nxt.updated)) is not MISSING:
            yield "values", chunk
        yield from self._drain()  # the checkpoint streams after its values, as in LangGraph
        if nxt.status == "interrupted":
            return (yield from self._pause(()))
        return True

    def _stop(self, nxt: Next) -> Generator[Event, None, bool]:
        """End the run as a step decided: raise its error, pause, or finish."""
        if nxt.error is not None:
            raise nxt.error
        if nxt.status == "interrupted":
            return (yield from self._pause(nxt.interrupts))
        self.status = "done"
        return False

    def _pause(self, interrupts: tuple[Interrupt, ...]) -> Generator[Event, None, bool]:
        self.status = "interrupted"
        self.interrupts = list(interrupts)
        if self.ns and not interrupts:
            return False  # a subgraph's breakpoint: only the root graph streams the pause
        for mode, payload in pause_events(self.spec, self.checkpoint, interrupts):
            if mode in self.opts.modes:
                yield mode, payload
        return False

    # -- running tasks ---------------------------------------------------------

    def _run_tasks(
        self, tasks: list[PlannedTask], step_no: int
    ) -> Generator[Event, None, dict[str, Outcome]]:
        done = finished_writes(tasks, self.pending)
        outcomes: dict[str, Outcome] = {}
        for t in tasks:
            if t.id in done:
                outcomes[t.id] = Outcome(writes=done[t.id])
        todo = [t for t in tasks if t.id not in done]
        yield from self._step_started(tasks, done)
        if not todo:
            return outcomes
        recorded = self._recorded_calls()
        step = _Step(self, self.config, recorded, consumed_answers(recorded, self.pending))
        resumes = {w.task_id: list(w.value) for w in self.pending if w.channel == RESUME}
        values = read_values(self.spec, self.checkpoint)
        def job(t: PlannedTask) -> None:
            self.events.put(("done", t, self._execute(t, step, values, resumes.get(t.id, []))))

        futures = [TaskFuture(functools.partial(job, t)) for t in todo]
        for fut in futures[1:]:
            self.executor.submit(fut.run_if_unclaimed)
        for fut in futures:
            fut.run_if_unclaimed()  # run here what no pool thread has started yet
        remaining = len(todo)
        while remaining:
            item = self.events.get()
            if item[0] == "event":
                yield item[1], item[2]
                continue
            _, task, outcome = item
            remaining -= 1
            outcomes[task.id] = outcome
            yield from self._task_done(task, outcome, step_no, last=not remaining)
        return outcomes

    def _step_started(
        self, tasks: list[PlannedTask], done: dict[str, list[Write]]
    ) -> Iterator[Event]:
        """The step's tasks starting, and the writes of those that finished before it
        resumed (``step_started_events``)."""
        yield from step_started_events(tasks, done, self.opts.modes,
                                       self.spec.updates_kept(self.opts.output_values))

    def _recorded_calls(self) -> dict[str, tuple[str, Any]]:
        return {w.task_id: w.value for w in self.pending if w.channel == RETURN}

    def _execute(
        self, task: PlannedTask, step: _Step, values: dict[str, Any], resume: list[Any]
    ) -> Outcome:
        config, ns = task_config(self.config, self.ns, self.checkpoint.id, task)
        return execute_task(task, step, config, ns, values=values, resume=resume)

    def _task_done(
        self, task: PlannedTask, outcome: Outcome, step: int, *, last: bool
    ) -> Iterator[Event]:
        """Stream and store a finished task; ``last``: the step's last to finish, whose
        writes (when it succeeded) wait for the commit that applies them, unless events
        handed to the caller before it would break ``sync``'s promise (``Persister``)."""
        if "messages" in self.opts.modes and outcome.writes:
            for chunk in message_events(task, outcome.writes, step, self.config,
                                        self.seen_messages):
                yield "messages", chunk
        after: list[Event] = []
        if outcome.writes is not None and "updates" in self.opts.modes and not task.node.hidden:
            after.append(("updates", self._updates(task, outcome)))
        if "tasks" in self.opts.modes and not task.node.hidden and not outcome.cached:
            after.append(("tasks", task_ended(task, outcome)))
        hold = last and outcome.writes is not None \
            and not (after and self.opts.durability == "sync")
        record_outcome(functools.partial(self.record, task.id, hold=hold), outcome)
        yield from after

    def _drain(self) -> Iterator[Event]:
        while True:
            try:
                item = self.events.get_nowait()
            except queue.Empty:
                return
            yield item[1], item[2]

    def _finish(self, error: BaseException | None) -> None:
        try:
            self.persister.flush()
        finally:
            if self.saver is not None:
                status = "failed" if error is not None and self.status == "failed" else self.status
                self.saver.set_status(self.thread_id, status, error)  # type: ignore[arg-type]

