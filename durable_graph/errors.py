"""Every error durable_graph raises, under one root.

    DurableGraphError
    ├── GraphValueError (also ValueError)      a graph, config or input that cannot work
    │   ├── GraphTypeError (also TypeError)    a value of the wrong kind (a state schema)
    │   ├── InvalidUpdateError                 a node wrote something its state cannot take
    │   ├── EmptyInputError                    invoke(None) with nothing to resume
    │   ├── ThreadNotFoundError (also LookupError)  an operation on a thread the store lacks
    │   └── ThreadStateError                   an operation the thread's status does not allow
    ├── GraphRecursionError (also RecursionError)  recursion_limit supersteps ran out
    ├── TaskNotInRunError (also RuntimeError)  a @task called outside a graph run
    ├── NondeterminismError                    a replay called tasks other than the recorded ones
    ├── NotSupportedError (also NotImplementedError)  a LangGraph option not implemented yet
    ├── SerializationError (also TypeError)    a value the store cannot encode or decode
    │   └── SignatureError                     a payload whose HMAC did not verify
    ├── CheckpointStoreError                   a store that failed or cannot be reached
    │   └── FencingError                       a commit from an owner whose lease was taken over
    │       └── LeaseReleasedError             a lease renewed after its run's end released it
    └── DispatchError                          a job that could not be sent or run
        ├── RunFailedError                     a distributed run failed (worker's view)
        ├── RunCancelledError                  a distributed run was cancelled
        ├── ThreadBusyError                    new input for a thread whose run goes on
        ├── JobCrashedError                    a job whose process died max_deaths times
        └── RunTimeoutError (also TimeoutError)  a run still going when a wait ran out

Control-flow signals (``GraphInterrupt``, ``ParentCommand``) derive from ``BaseException`` so that a
user's ``except Exception`` inside a node does not swallow an ``interrupt()``.
Every class pickles by its constructor arguments, so errors cross process boundaries.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from durable_graph.types import Command, Interrupt

__all__ = [
    "CheckpointStoreError",
    "CommitConflictError",
    "DispatchError",
    "DurableGraphError",
    "EmptyInputError",
    "FencingError",
    "GraphInterrupt",
    "GraphRecursionError",
    "GraphTypeError",
    "GraphValueError",
    "InvalidUpdateError",
    "JobCrashedError",
    "LeaseReleasedError",
    "NondeterminismError",
    "NotSupportedError",
    "ParentCommand",
    "RunCancelledError",
    "RunFailedError",
    "RunTimeoutError",
    "SerializationError",
    "SignatureError",
    "TaskNotInRunError",
    "ThreadBusyError",
    "ThreadNotFoundError",
    "ThreadStateError",
]


class DurableGraphError(Exception):
    """Root of every error raised by durable_graph."""

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (type(self), self.args)


class GraphValueError(DurableGraphError, ValueError):
    """A graph, config or input that cannot work as given."""


class GraphTypeError(GraphValueError, TypeError):
    """A value of the wrong kind where the graph needs another (e.g. a state schema)."""


class InvalidUpdateError(GraphValueError):
    """A node returned or wrote an update that its state cannot take."""


class EmptyInputError(GraphValueError):
    """``invoke(None)`` on a thread that has no checkpoint to resume from."""


class ThreadNotFoundError(GraphValueError, LookupError):
    """An operation on a thread the store has no record or checkpoint of."""


class ThreadStateError(GraphValueError):
    """An operation the thread's status does not allow (resume of a finished thread)."""


class GraphRecursionError(DurableGraphError, RecursionError):
    """The run used up ``recursion_limit`` supersteps without finishing."""


class TaskNotInRunError(DurableGraphError, RuntimeError):
    """A ``@task`` or ``interrupt()`` was called outside a running graph."""


class NondeterminismError(DurableGraphError):
    """A replayed node called different tasks than the ones recorded for it."""


class NotSupportedError(DurableGraphError, NotImplementedError):
    """A LangGraph option durable_graph does not implement (yet): refused, never ignored."""


class SerializationError(DurableGraphError, TypeError):
    """A value the checkpoint store cannot encode, or bytes it cannot decode."""


class SignatureError(SerializationError):
    """A signed payload whose HMAC is missing, unknown or does not verify."""


class CheckpointStoreError(DurableGraphError):
    """The checkpoint store failed or could not be reached."""


class FencingError(CheckpointStoreError):
    """A commit from an owner whose lease on the thread was taken over."""


class LeaseReleasedError(FencingError):
    """A lease its owner released (its run ended) and nobody has taken since: renewing
    it is refused like a takeover, but no other owner can have committed."""


class CommitConflictError(CheckpointStoreError):
    """A step commit lost the race: another worker already committed that step."""


class DispatchError(DurableGraphError):
    """A job could not be dispatched to, or run by, a worker."""


class JobCrashedError(DispatchError):
    """A job's process died (killed, out of memory, ``os._exit``) too many times."""


class RunFailedError(DispatchError):
    """A distributed run failed and its error could not be rebuilt in this process.

    Built as ``RunFailedError(message, error_type, traceback)``: the worker's view.
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""

    @property
    def error_type(self) -> str:
        """Qualified name of the error the worker saw."""
        return str(self.args[1]) if len(self.args) > 1 else ""

    @property
    def traceback(self) -> str:
        """The worker's traceback of it."""
        return str(self.args[2]) if len(self.args) > 2 else ""


class RunCancelledError(DispatchError):
    """The distributed run was cancelled (``cancel``, or new input with ``multitask``)."""


class ThreadBusyError(DispatchError):
    """New input for a thread whose distributed run is still going (``multitask="reject"``)."""


class RunTimeoutError(DispatchError, TimeoutError):
    """A run was still going when a caller's wait for it (``timeout=``) ran out."""


class GraphInterrupt(BaseException):
    """Raised inside a node to pause the run; carries the interrupts raised."""

    def __init__(self, interrupts: Sequence[Interrupt] = ()) -> None:
        super().__init__(tuple(interrupts))
        self.interrupts: tuple[Interrupt, ...] = tuple(interrupts)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (type(self), (self.interrupts,))


class ParentCommand(BaseException):
    """A subgraph node returned ``Command(graph=Command.PARENT, ...)``: it leaves the
    subgraph and becomes the result of the parent graph's node that ran it."""

    def __init__(self, command: Command[Any]) -> None:
        super().__init__(command)
        self.command = command

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (type(self), (self.command,))
