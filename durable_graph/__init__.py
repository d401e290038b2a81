"""durable-graph: LangGraph-compatible graphs that run durably, embedded or on Celery.

Swap ``from langgraph... import`` for ``from durable_graph import`` and the same
graph checkpoints every superstep and resumes where it stopped.
"""

from __future__ import annotations

from durable_graph.errors import (
    CheckpointStoreError,
    CommitConflictError,
    DispatchError,
    DurableGraphError,
    EmptyInputError,
    FencingError,
    GraphInterrupt,
    GraphRecursionError,
    GraphValueError,
    InvalidUpdateError,
    NondeterminismError,
    RunCancelledError,
    RunFailedError,
    SerializationError,
    SignatureError,
    TaskNotInRunError,
    ThreadBusyError,
    ThreadNotFoundError,
    ThreadStateError,
)
from durable_graph.graph.compiled import CompiledGraph
from durable_graph.graph.func import entrypoint, task
from durable_graph.graph.state import CompiledStateGraph, StateGraph
from durable_graph.scheduler.executor import Executor, LocalExecutor, RunHandle
from durable_graph.scheduler.runtime import get_stream_writer, interrupt
from durable_graph.store.base import BaseCheckpointSaver, Checkpoint, CheckpointTuple
from durable_graph.store.memory import InMemorySaver
from durable_graph.store.redis import RedisSaver
from durable_graph.store.serde import TypedSerializer
from durable_graph.store.sqlite import SqliteSaver
from durable_graph.types import (
    END,
    START,
    Command,
    Interrupt,
    RetryPolicy,
    Send,
    StateSnapshot,
    StateTask,
)

__all__ = [
    "END",
    "START",
    "BaseCheckpointSaver",
    "Checkpoint",
    "CheckpointStoreError",
    "CheckpointTuple",
    "Command",
    "CommitConflictError",
    "CompiledGraph",
    "CompiledStateGraph",
    "DispatchError",
    "DurableGraphError",
    "EmptyInputError",
    "Executor",
    "FencingError",
    "GraphInterrupt",
    "GraphRecursionError",
    "GraphValueError",
    "InMemorySaver",
    "Interrupt",
    "InvalidUpdateError",
    "LocalExecutor",
    "NondeterminismError",
    "RedisSaver",
    "RetryPolicy",
    "RunCancelledError",
    "RunFailedError",
    "RunHandle",
    "Send",
    "SerializationError",
    "SignatureError",
    "SqliteSaver",
    "StateGraph",
    "StateSnapshot",
    "StateTask",
    "TaskNotInRunError",
    "ThreadBusyError",
    "ThreadNotFoundError",
    "ThreadStateError",
    "TypedSerializer",
    "entrypoint",
    "get_stream_writer",
    "interrupt",
    "task",
]
