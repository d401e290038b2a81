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
    GraphTypeError,
    GraphValueError,
    InvalidUpdateError,
    JobCrashedError,
    LeaseReleasedError,
    NondeterminismError,
    NotSupportedError,
    ParentCommand,
    RunCancelledError,
    RunFailedError,
    RunTimeoutError,
    SerializationError,
    SignatureError,
    TaskNotInRunError,
    ThreadBusyError,
    ThreadNotFoundError,
    ThreadStateError,
)
from durable_graph.graph.compiled import CompiledGraph
from durable_graph.graph.func import entrypoint, task
from durable_graph.graph.message import (
    REMOVE_ALL_MESSAGES,
    MessagesState,
    RemoveMessage,
    add_messages,
)
from durable_graph.graph.state import CompiledStateGraph, StateGraph
from durable_graph.scheduler.executor import Executor, LocalExecutor, RunHandle
from durable_graph.scheduler.runtime import (
    get_runtime,
    get_store,
    get_stream_writer,
    get_task_context,
    interrupt,
)
from durable_graph.store.base import BaseCheckpointSaver, Checkpoint, CheckpointTuple
from durable_graph.store.cache import BaseCache, InMemoryCache, RedisCache, SqliteCache
from durable_graph.store.kv import (
    BaseStore,
    InMemoryStore,
    Item,
    RedisStore,
    SearchItem,
    SqliteStore,
)
from durable_graph.store.memory import InMemorySaver, MemorySaver
from durable_graph.store.redis import RedisSaver
from durable_graph.store.retention import CheckpointRef
from durable_graph.store.serde import TypedSerializer
from durable_graph.store.sqlite import SqliteSaver
from durable_graph.types import (
    END,
    START,
    CachePolicy,
    Command,
    ExecutionInfo,
    Interrupt,
    IsLastStep,
    RemainingSteps,
    RetryPolicy,
    Runtime,
    Send,
    StateSnapshot,
    StateTask,
    TaskInfo,
)

__all__ = [
    "END",
    "REMOVE_ALL_MESSAGES",
    "START",
    "BaseCache",
    "BaseCheckpointSaver",
    "BaseStore",
    "CachePolicy",
    "Checkpoint",
    "CheckpointRef",
    "CheckpointStoreError",
    "CheckpointTuple",
    "Command",
    "CommitConflictError",
    "CompiledGraph",
    "CompiledStateGraph",
    "DispatchError",
    "DurableGraphError",
    "EmptyInputError",
    "ExecutionInfo",
    "Executor",
    "FencingError",
    "GraphInterrupt",
    "GraphRecursionError",
    "GraphTypeError",
    "GraphValueError",
    "InMemoryCache",
    "InMemorySaver",
    "InMemoryStore",
    "Interrupt",
    "InvalidUpdateError",
    "IsLastStep",
    "Item",
    "JobCrashedError",
    "LeaseReleasedError",
    "LocalExecutor",
    "MemorySaver",
    "MessagesState",
    "NondeterminismError",
    "NotSupportedError",
    "ParentCommand",
    "RedisCache",
    "RedisSaver",
    "RedisStore",
    "RemainingSteps",
    "RemoveMessage",
    "RetryPolicy",
    "RunCancelledError",
    "RunFailedError",
    "RunHandle",
    "RunTimeoutError",
    "Runtime",
    "SearchItem",
    "Send",
    "SerializationError",
    "SignatureError",
    "SqliteCache",
    "SqliteSaver",
    "SqliteStore",
    "StateGraph",
    "StateSnapshot",
    "StateTask",
    "TaskInfo",
    "TaskNotInRunError",
    "ThreadBusyError",
    "ThreadNotFoundError",
    "ThreadStateError",
    "TypedSerializer",
    "add_messages",
    "entrypoint",
    "get_runtime",
    "get_store",
    "get_stream_writer",
    "get_task_context",
    "interrupt",
    "task",
]
