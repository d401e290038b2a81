"""The vocabulary every layer speaks: Send, Command, Interrupt, RetryPolicy, snapshots.

It sits at the bottom of the package (as `langgraph.types` does), so `scheduler/`,
`store/` and `errors.py` use these records without importing the user API in `graph/`.
"""

from __future__ import annotations

import dataclasses
import pickle
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Generic, Literal

from typing_extensions import TypeVar

from durable_graph.errors import GraphTypeError, GraphValueError

__all__ = [
    "END",
    "START",
    "CachePolicy",
    "Command",
    "Durability",
    "ExecutionInfo",
    "Interrupt",
    "IsLastStep",
    "RemainingSteps",
    "RetryPolicy",
    "Runtime",
    "Send",
    "StateSnapshot",
    "StateTask",
    "StreamMode",
    "TaskInfo",
    "default_cache_key",
]

ContextT = TypeVar("ContextT")

START = "__start__"
"""The virtual node a graph's input comes from."""
END = "__end__"
"""The virtual node an edge points at to finish the run."""

N = TypeVar("N", bound=Hashable, default=Any)
ResponseT = TypeVar("ResponseT", default=Any)

Durability = Literal["sync", "async", "exit"]
StreamMode = Literal["values", "updates", "custom", "debug", "tasks", "checkpoints", "messages"]


@dataclass(frozen=True)
class Send:
    """Run ``node`` once with ``arg`` as its input in the next superstep (map-reduce fan-out)."""

    node: str
    """Name of the node to run."""
    arg: Any
    """The input that node receives instead of the graph state."""


@dataclass(frozen=True)
class Interrupt(Generic[ResponseT]):
    """A pause raised by ``interrupt(value)`` inside a node, resumable by ``id``.

    The same fields as LangGraph's: ``Interrupt[T]`` is subscriptable for type hints.
    """

    value: Any
    """What the node asked, shown to whoever resumes."""
    id: str = "placeholder-id"
    """Deterministic 32-hex id; resume this one alone with ``Command(resume={id: value})``."""
    _: dataclasses.KW_ONLY
    response_schema: type[ResponseT] | dict[str, Any] | None = None
    """Schema of the answer expected, when the graph gave one (as in LangGraph)."""


@dataclass(frozen=True)
class Command(Generic[N]):
    """Input that resumes, updates or redirects a run; also a node's return value.

    ``-> Command[Literal["a", "b"]]`` on a node declares where it may go: the drawn
    graph (``get_graph()``) shows those edges.
    """

    update: Any = None
    """State update applied before the next superstep (a dict, or list of (key, value))."""
    resume: Any = None
    """Value returned by the pending ``interrupt()``, or a map ``{interrupt_id: value}``."""
    goto: str | Send | Sequence[str | Send] = ()
    """Nodes (or Sends) to run next, in addition to static edges."""
    graph: str | None = None
    """``Command.PARENT`` to address the graph that runs this one as a subgraph."""

    PARENT = "__parent__"


def _default_retry_on(exc: BaseException) -> bool:
    """LangGraph's default: retry transient errors, never programming errors."""
    programming = (
        ValueError, TypeError, ArithmeticError, ImportError, LookupError, NameError,
        SyntaxError, RuntimeError, ReferenceError, StopIteration, StopAsyncIteration, OSError,
    )
    if isinstance(exc, ConnectionError):
        return True
    return not isinstance(exc, programming)


@dataclass(frozen=True)
class RetryPolicy:
    """How a node or task is retried when it raises."""

    initial_interval: float = 0.5
    """Seconds before the first retry."""
    backoff_factor: float = 2.0
    """Multiplier applied to the interval after each retry."""
    max_interval: float = 128.0
    """Upper bound on the interval, in seconds."""
    max_attempts: int = 3
    """Attempts in all, the first one included."""
    jitter: bool = True
    """Add up to one second of random jitter to each interval."""
    retry_on: (
        type[BaseException] | Sequence[type[BaseException]] | Callable[[BaseException], bool]
    ) = _default_retry_on
    """Exception classes to retry, or a predicate; default skips programming errors."""

    def should_retry(self, exc: BaseException) -> bool:
        """Whether ``exc`` is one this policy retries."""
        on = self.retry_on
        if isinstance(on, type):
            return isinstance(exc, on)
        if isinstance(on, Sequence):
            return isinstance(exc, tuple(on))
        return bool(on(exc))


def _freeze(obj: Any, depth: int = 10) -> Any:
    """``obj`` made hashable and order-independent for dicts (as LangGraph's cache keys do)."""
    if isinstance(obj, Hashable) or depth <= 0:
        return obj
    if isinstance(obj, Mapping):
        return tuple(sorted((k, _freeze(v, depth - 1)) for k, v in obj.items()))
    if isinstance(obj, Sequence):
        return tuple(_freeze(x, depth - 1) for x in obj)
    if hasattr(obj, "tobytes"):  # numpy and friends
        return (type(obj).__name__, obj.tobytes(), getattr(obj, "shape", None))
    return obj


def default_cache_key(*args: Any, **kwargs: Any) -> str | bytes:
    """LangGraph's default node cache key: the pickled, frozen arguments.

    Only ever pickled (to bytes that are hashed into a key), never unpickled.
    """
    return pickle.dumps((_freeze(args), _freeze(kwargs)), protocol=5, fix_imports=False)


KeyFuncT = TypeVar("KeyFuncT", bound=Callable[..., str | bytes])


@dataclass(frozen=True, kw_only=True, slots=True)
class CachePolicy(Generic[KeyFuncT]):
    """How a node's or task's result is cached: by a key of its input, for ``ttl`` seconds."""

    key_func: KeyFuncT = default_cache_key  # type: ignore[assignment]
    """Builds the cache key from the node's input; default pickles the frozen input."""
    ttl: int | None = None
    """Seconds a cached result lives; None keeps it until the cache is cleared."""

    def __post_init__(self) -> None:
        if not callable(self.key_func):
            raise GraphTypeError(
                f"CachePolicy(key_func=...) must be callable, got {type(self.key_func).__name__}"
            )
        ttl = self.ttl
        if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int) or ttl <= 0):
            raise GraphValueError(
                f"CachePolicy(ttl=...) must be a positive number of seconds or None, got {ttl!r}"
            )


@dataclass(frozen=True)
class StateTask:
    """A task of a snapshot's next superstep: what will run, or what failed or paused."""

    id: str
    """Deterministic task id."""
    name: str
    """Node name."""
    path: tuple[Any, ...] = ()
    """Where the task came from: ("pull", node) or ("push", index)."""
    error: str | None = None
    """The error it raised last time, as its repr (as LangGraph shows it)."""
    interrupts: tuple[Interrupt, ...] = ()
    """Interrupts it raised and that wait for a resume."""
    state: Any = None
    """A subgraph's snapshot (with ``subgraphs=True``) or its config."""
    result: Any = None
    """Its writes, when it already finished in this superstep."""


@dataclass(frozen=True)
class StateSnapshot:
    """The state of a thread at one checkpoint, as ``get_state`` returns it."""

    values: Any
    """Channel values (the graph state)."""
    next: tuple[str, ...]
    """Nodes that run in the next superstep."""
    config: dict[str, Any]
    """Config addressing this checkpoint (thread_id, checkpoint_ns, checkpoint_id)."""
    metadata: Mapping[str, Any] | None
    """Checkpoint metadata: source, step, parents."""
    created_at: str | None
    """ISO-8601 time the checkpoint was written."""
    parent_config: dict[str, Any] | None
    """Config of the previous checkpoint, or None for the first one."""
    tasks: tuple[StateTask, ...] = ()
    """Tasks of the next superstep, with their errors and interrupts."""
    interrupts: tuple[Interrupt, ...] = field(default=())
    """Interrupts pending in this checkpoint."""


class ManagedValue:
    """A state key whose value the scheduler computes for each step (never stored)."""

    @staticmethod
    def get(step: int, stop: int) -> Any:
        """The value for a task of step ``step`` in a run that stops after ``stop - 1``."""
        raise NotImplementedError


class IsLastStepManager(ManagedValue):
    """True in the last step the recursion limit allows."""

    @staticmethod
    def get(step: int, stop: int) -> bool:
        return step == stop - 1


class RemainingStepsManager(ManagedValue):
    """Steps left before the recursion limit stops the run."""

    @staticmethod
    def get(step: int, stop: int) -> int:
        return stop - step


IsLastStep = Annotated[bool, IsLastStepManager]
RemainingSteps = Annotated[int, RemainingStepsManager]


@dataclass(frozen=True)
class ExecutionInfo:
    """Read-only facts about the running task, as LangGraph's ``Runtime.execution_info``."""

    checkpoint_id: str
    """The checkpoint the task was planned from."""
    checkpoint_ns: str
    """The task's checkpoint namespace."""
    task_id: str
    """The task's deterministic id."""
    thread_id: str | None = None
    """The run's thread, None without a checkpointer."""
    run_id: str | None = None
    """The ``run_id`` of the config, if one was given."""
    node_attempt: int = 1
    """Attempt number of the task body (1 on the first try, more on retries)."""
    node_first_attempt_time: float | None = None
    """Unix time the first attempt started."""


def _no_op_writer(_: Any) -> None:
    """The stream writer outside a run."""


@dataclass(frozen=True)
class Runtime(Generic[ContextT]):
    """What a node may declare as ``runtime``: the run's context, store and stream writer."""

    context: ContextT = field(default=None)  # type: ignore[assignment]
    """The ``context=`` of the run (coerced to the graph's ``context_schema``)."""
    store: Any = None
    """The graph's long-term store (``compile(store=...)``), or None."""
    stream_writer: Callable[[Any], None] = _no_op_writer
    """Emits a chunk on the ``custom`` stream."""
    heartbeat: Callable[[], None] = field(default=lambda: None)
    """Progress signal (a no-op: durable_graph has no idle timeouts)."""
    previous: Any = None
    """An entrypoint's previous return value on this thread."""
    execution_info: ExecutionInfo | None = None
    """Facts about the running task."""
    server_info: Any = None
    """Always None (no LangGraph Server)."""
    control: Any = None
    """Always None (no cooperative draining)."""

    def override(self, **overrides: Any) -> Runtime[ContextT]:
        """A copy with the given fields replaced."""
        return dataclasses.replace(self, **overrides)


@dataclass(frozen=True)
class TaskInfo:
    """What ``get_task_context()`` tells a running node or ``@task`` about its call."""

    idempotency_key: str
    """The same for every execution of this call (retries, redeliveries, replays after a
    crash), different for every other call: pass it to APIs that deduplicate."""
    name: str
    """The node or task name."""
    thread_id: str
    """The run's thread ('' without a checkpointer)."""
