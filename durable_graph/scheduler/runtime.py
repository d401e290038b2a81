"""What a running task sees: its context, ``interrupt()``, ``@task`` calls and their futures.

A task's context lives in a ``ContextVar`` so user code reaches it without passing
it around. Replay works through recorded writes: a ``@task`` call whose result is
a pending write of the current checkpoint returns that result without running,
and an ``interrupt()`` whose resume value was recorded returns it without pausing.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from durable_graph.errors import GraphInterrupt, NondeterminismError, TaskNotInRunError
from durable_graph.scheduler.algo import task_id
from durable_graph.scheduler.caching import CacheKey, CachingCall, cache_get
from durable_graph.scheduler.channels import MISSING
from durable_graph.scheduler.retry import run_with_retry
from durable_graph.scheduler.spec import Write
from durable_graph.store.base import RESUME, RETURN, BaseCheckpointSaver
from durable_graph.types import ExecutionInfo, Interrupt, RetryPolicy, Runtime, TaskInfo

__all__ = [
    "CallError",
    "RunScope",
    "RunTree",
    "StepRuntime",
    "Suspended",
    "TaskContext",
    "TaskFuture",
    "answers_from",
    "consumed_answers",
    "current_context",
    "get_runtime",
    "get_store",
    "get_task_context",
    "interrupt",
    "local_call",
    "running_task",
]

T = TypeVar("T")


class Suspended(BaseException):
    """A distributed task waits on ``@task`` calls still running elsewhere.

    Raised by a call's future instead of blocking a worker slot; the job ends and
    the task is replayed once the calls' results are recorded.
    """


@dataclass(frozen=True)
class CallError:
    """A recorded ``@task`` call that failed: replay raises ``error`` from ``.result()``."""

    error: BaseException


@dataclass
class RunTree:
    """What a run and the subgraph runs inside it share, however deep."""

    seen_messages: set[Any] = field(default_factory=set)
    """Ids of the chat messages streamed (``messages`` mode): a message a subgraph
    streamed is not streamed again by the graphs above it."""
    resume_map: dict[str, Any] = field(default_factory=dict)
    """The run's answers by interrupt id (``Command(resume={id: value})``): a subgraph
    with several paused tasks takes each one's answer from here."""


@dataclass(frozen=True)
class RunScope:
    """What every task of one run shares besides the checkpoint."""

    context: Any = None
    """The run's ``context=`` (what ``runtime.context`` returns)."""
    store: Any = None
    """The graph's long-term store, or None."""
    cache: Any = None
    """The graph's cache for ``cache_policy`` nodes and tasks, or None."""
    thread_id: str = ""
    """The run's thread ('' without a checkpointer)."""
    run_id: str | None = None
    """The config's ``run_id``, if any."""
    stream_modes: frozenset[str] = frozenset()
    """The run's stream modes when its subgraphs stream too (``subgraphs=True``)."""
    tree: RunTree = field(default_factory=RunTree, compare=False)
    """What the run shares with the subgraph runs inside it."""


class StepRuntime(Protocol):
    """What the step loop offers the tasks of one superstep."""

    config: dict[str, Any]

    @property
    def scope(self) -> RunScope:
        """The run's context, store and cache."""

    @property
    def recorded(self) -> dict[str, tuple[str, Any]]:
        """Results of ``@task`` calls already recorded, by call id: (task name, value)."""

    @property
    def consumed(self) -> dict[str, int]:
        """How many of its caller's resume answers each recorded call took, by call id."""

    @property
    def saver(self) -> BaseCheckpointSaver | None:
        """The run's checkpointer (subgraphs share it)."""

    @property
    def durability(self) -> str:
        """The run's durability mode (subgraphs use it too)."""

    def submit(self, fn: Callable[[], Any]) -> None:
        """Run ``fn`` soon on the executor."""

    def record(self, task_id: str, writes: list[Write]) -> None:
        """Persist a task's writes against the current checkpoint."""

    def emit(self, mode: str, payload: Any) -> None:
        """Send a stream event to the caller."""

    def take_null_resume(self) -> Any:
        """The run's unassigned resume value, once; MISSING if none is left."""

    def start_call(
        self, parent: TaskContext, call_id: str, name: str, fn: Callable[[], Any],
        retry: RetryPolicy | None,
    ) -> TaskFuture[Any]:
        """Start a ``@task`` call that has no recorded result; return its future."""

    def begin_attempt(self, number: int) -> None:
        """A task body starts its ``number``-th attempt (retries run failed calls again)."""


class TaskFuture(Generic[T]):
    """The result of a ``@task`` call. ``result()`` waits for it.

    The waiting thread runs the call itself when no worker has started it yet, so
    a node waiting on its tasks never deadlocks a bounded pool.
    """

    def __init__(self, run: Callable[[], T] | None = None) -> None:
        self._future: Future[T] = Future()
        self._run = run
        self._claim = threading.Lock()

    @classmethod
    def resolved(cls, value: T) -> TaskFuture[T]:
        """A future that already holds ``value`` (a recorded result)."""
        fut: TaskFuture[T] = cls()
        fut._future.set_result(value)
        return fut

    @classmethod
    def failed(cls, error: BaseException) -> TaskFuture[T]:
        """A future that already holds ``error`` (a recorded failure)."""
        fut: TaskFuture[T] = cls()
        fut._future.set_exception(error)
        return fut

    def run_if_unclaimed(self) -> None:
        """Run the call here unless another thread already did or is doing it."""
        if self._run is None or not self._claim.acquire(blocking=False):
            return
        try:
            self._future.set_result(self._run())
        except BaseException as exc:  # interrupts travel through the future too
            self._future.set_exception(exc)

    def result(self, timeout: float | None = None) -> T:
        """Wait for the call and return its value (or raise its error)."""
        self.run_if_unclaimed()
        return self._future.result(timeout)

    def done(self) -> bool:
        """Whether the call finished."""
        return self._future.done()

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """The call's error, if it failed."""
        self.run_if_unclaimed()
        return self._future.exception(timeout)


@dataclass
class TaskContext:
    """The context of one running task (a node or a ``@task`` call)."""

    task_id: str
    """Deterministic id of this task."""
    name: str
    """Node or task name."""
    ns: str
    """Checkpoint namespace of this task (for subgraphs it runs)."""
    config: dict[str, Any]
    """The config the node receives."""
    step: StepRuntime
    """The superstep it runs in."""
    resume: list[Any] = field(default_factory=list)
    """Resume values recorded for its interrupts, in call order."""
    interrupt_idx: int = 0
    call_idx: int = 0
    children: list[TaskFuture[Any]] = field(default_factory=list)
    answers: Callable[[], Any] | None = None
    """For a ``@task`` call: where its interrupts find answers given to its caller."""
    attempt: int = 1
    """Attempt number of a node body under its retry policy."""
    subgraph_calls: Iterator[int] = field(default_factory=itertools.count)
    """Numbers the subgraph runs this task starts (each gets its own namespace)."""

    def interrupt(self, value: Any) -> Any:
        """Return the recorded answer to this interrupt, or pause the task."""
        idx = self.interrupt_idx
        self.interrupt_idx += 1
        if idx < len(self.resume):
            return self.resume[idx]
        answer = self.answers() if self.answers is not None else MISSING
        if answer is not MISSING:
            return answer
        answer = self.step.take_null_resume()
        if answer is not MISSING:
            self.resume.append(answer)
            self.step.record(self.task_id, [(RESUME, list(self.resume))])
            return answer
        raise GraphInterrupt([Interrupt(value, interrupt_id(self.task_id, idx))])

    def take_answer(self) -> Any:
        """The next resume answer no interrupt of this task used yet (MISSING if none).

        An interrupt inside a ``@task`` call pauses the calling task, so the answer
        is recorded for the caller; the call takes it from there on replay.
        """
        if self.interrupt_idx < len(self.resume):
            self.interrupt_idx += 1
            return self.resume[self.interrupt_idx - 1]
        return MISSING

    def call(
        self, name: str, fn: Callable[[], T], retry: RetryPolicy | None,
        cache_key: CacheKey | None = None,
    ) -> TaskFuture[T]:
        """Start a ``@task`` call, or return its recorded (or cached) result."""
        idx = self.call_idx
        self.call_idx += 1
        call_id = task_id(self.task_id, "call", str(idx))
        recorded = self.step.recorded.get(call_id)
        if recorded is not None:
            if recorded[0] != name:
                raise NondeterminismError(
                    f"Task call #{idx} of {self.name!r} is {name!r} on replay, but "
                    f"{recorded[0]!r} was recorded. Tasks must be called in the same "
                    "order on every run; move nondeterministic logic into a task."
                )
            if isinstance(recorded[1], CallError):
                return TaskFuture.failed(recorded[1].error)
            for _ in range(self.step.consumed.get(call_id, 0)):
                self.take_answer()  # the answers its interrupts took stay taken
            return TaskFuture.resolved(recorded[1])
        cache = self.step.scope.cache if cache_key is not None else None
        if cache is not None and cache_key is not None:
            hit = cache_get(cache, cache_key)
            if hit is not MISSING:
                return self._cache_hit(call_id, name, hit)
            fn = CachingCall(fn, cache_key, _running_cache)
        future: TaskFuture[T] = self.step.start_call(self, call_id, name, fn, retry)
        self.children.append(future)
        return future

    def _cache_hit(self, call_id: str, name: str, value: Any) -> TaskFuture[Any]:
        """A call answered from the cache: recorded like a run one, streamed as cached."""
        self.step.record(call_id, [(RETURN, (name, value))])
        self.step.recorded[call_id] = (name, value)
        self.step.emit("updates", {name: value, "__metadata__": {"cached": True}})
        return TaskFuture.resolved(value)

    def runtime(self, previous: Any = None) -> Runtime[Any]:
        """The ``Runtime`` a node or task declaring ``runtime`` receives."""
        scope = self.step.scope
        conf = self.config.get("configurable", {})
        info = ExecutionInfo(
            checkpoint_id=str(conf.get("checkpoint_id", "")), checkpoint_ns=self.ns,
            task_id=self.task_id, thread_id=scope.thread_id or None, run_id=scope.run_id,
            node_attempt=self.attempt,
        )
        return Runtime(context=scope.context, store=scope.store, stream_writer=self.writer,
                       previous=previous, execution_info=info)

    def info(self) -> TaskInfo:
        """What ``get_task_context()`` returns."""
        return TaskInfo(self.task_id, self.name, self.step.scope.thread_id)

    def run(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` as this task: the context is current and children are awaited."""
        token = _CURRENT.set(self)
        try:
            value = fn()
        finally:
            _CURRENT.reset(token)
            for child in self.children:
                child.exception()  # recorded or failed; the caller saw the error
        return value

    def writer(self, chunk: Any) -> None:
        """Emit ``chunk`` on the ``custom`` stream."""
        self.step.emit("custom", chunk)


def local_call(
    parent: TaskContext, call_id: str, name: str, fn: Callable[[], T],
    retry: RetryPolicy | None,
) -> TaskFuture[T]:
    """Start a ``@task`` call on this process's executor (the embedded way)."""
    step = parent.step
    child = TaskContext(call_id, name, f"{parent.ns}|{name}:{call_id}", parent.config, step,
                        answers=answers_from(parent.take_answer, step, call_id))

    def run() -> T:
        value = child.run(lambda: run_with_retry(fn, retry))
        step.record(call_id, [(RETURN, (name, value))])
        step.recorded[call_id] = (name, value)
        step.emit("updates", {name: value})
        return value

    future = TaskFuture(run)
    step.submit(future.run_if_unclaimed)
    return future


def answers_from(
    take: Callable[[], Any], step: StepRuntime, call_id: str
) -> Callable[[], Any]:
    """A call's source of answers: its caller's, each one taken recorded as the call's
    RESUME write, so a replay of the caller knows those answers are used."""
    taken: list[Any] = []

    def answer() -> Any:
        value = take()
        if value is not MISSING:
            taken.append(value)
            step.record(call_id, [(RESUME, list(taken))])
        return value

    return answer


def consumed_answers(
    recorded: dict[str, tuple[str, Any]], pending: Any
) -> dict[str, int]:
    """Answers each recorded call took from its caller (its RESUME write), by call id."""
    return {w.task_id: len(w.value) for w in pending
            if w.channel == RESUME and w.task_id in recorded}


_CURRENT: ContextVar[TaskContext | None] = ContextVar("durable_graph_task", default=None)


def running_task() -> TaskContext | None:
    """The task running on this thread, or None outside a run (a nested ``invoke``)."""
    return _CURRENT.get()


def current_context(what: str) -> TaskContext:
    """The running task's context; a clear error outside a run."""
    ctx = _CURRENT.get()
    if ctx is None:
        raise TaskNotInRunError(
            f"{what} can only be called while a graph or entrypoint runs: call it from "
            "inside a node, a @task or an @entrypoint function."
        )
    return ctx


def interrupt_id(task: str, index: int) -> str:
    """Deterministic id of the ``index``-th interrupt of a task: 32 hex digits, as LangGraph's."""
    return task_id(task, "interrupt", str(index)).replace("-", "")


def interrupt(value: Any) -> Any:
    """Pause the run and surface ``value``; returns the resume value once resumed.

    The node re-runs from its start on resume; each ``interrupt()`` call returns
    the answer recorded for it, in call order.
    """
    return current_context("interrupt()").interrupt(value)


def get_stream_writer() -> Callable[[Any], None]:
    """A function that emits chunks on the ``custom`` stream of the current run."""
    return current_context("get_stream_writer()").writer


def _running_cache() -> Any:
    """The cache of the run the current task belongs to (None outside a run)."""
    ctx = _CURRENT.get()
    return ctx.step.scope.cache if ctx is not None else None


def get_runtime(context_schema: Any = None) -> Runtime[Any]:
    """The running node's ``Runtime`` (context, store, stream writer), as LangGraph's.

    ``context_schema`` is accepted for type hints only, as in LangGraph.
    """
    return current_context("get_runtime()").runtime()


def get_store() -> Any:
    """The long-term store of the running graph (``compile(store=...)``), or None."""
    return current_context("get_store()").step.scope.store


def get_task_context() -> TaskInfo:
    """Facts about the running node or ``@task`` call, with its idempotency key.

    ``get_task_context().idempotency_key`` is the same for every execution of this
    call (retries, redeliveries to another worker, replays after a crash) and
    different for every other call: pass it to external APIs that deduplicate
    (payments, e-mail) so a side effect happens once.
    """
    return current_context("get_task_context()").info()
