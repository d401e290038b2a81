"""The vocabulary every layer speaks: Send, Command, Interrupt, RetryPolicy, snapshots.

It sits at the bottom of the package (as `langgraph.types` does), so `scheduler/`,
`store/` and `errors.py` use these records without importing the user API in `graph/`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Literal

from typing_extensions import TypeVar

__all__ = [
    "END",
    "START",
    "Command",
    "Durability",
    "Interrupt",
    "RetryPolicy",
    "Send",
    "StateSnapshot",
    "StateTask",
    "StreamMode",
]

START = "__start__"
"""The virtual node a graph's input comes from."""
END = "__end__"
"""The virtual node an edge points at to finish the run."""

N = TypeVar("N", bound=Hashable, default=Any)
ResponseT = TypeVar("ResponseT", default=Any)

Durability = Literal["sync", "async", "exit"]
StreamMode = Literal["values", "updates", "custom", "debug", "tasks", "checkpoints"]


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
    """``Command.PARENT`` to address the parent graph (not supported yet: raises)."""

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
