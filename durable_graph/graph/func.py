"""The functional API: ``@task`` for durable steps, ``@entrypoint`` for workflows."""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, overload

from durable_graph.graph.call import bind
from durable_graph.graph.compiled import CompiledGraph
from durable_graph.scheduler.channels import ChannelSpec
from durable_graph.scheduler.executor import Executor
from durable_graph.scheduler.runtime import TaskFuture, current_context
from durable_graph.scheduler.spec import GraphSpec, NodeSpec, Write
from durable_graph.store.base import BaseCheckpointSaver
from durable_graph.types import END, START, RetryPolicy

__all__ = ["TaskFunction", "entrypoint", "task"]

T = TypeVar("T")
RETURN_CHANNEL = "__end__"
PREVIOUS_CHANNEL = "__previous__"


class TaskFunction(Generic[T]):
    """A ``@task``: calling it inside a run starts a durable step and returns a future.

    Its result is recorded in the checkpoint, so a replay of the calling node gets
    the recorded value back instead of running the body again.
    """

    def __init__(self, fn: Callable[..., T], *, name: str | None, retry_policy: Any) -> None:
        self.fn = fn
        self.name: str = name or str(getattr(fn, "__name__", "task"))
        self.retry_policy: RetryPolicy | None = (
            retry_policy[0] if isinstance(retry_policy, Sequence) and retry_policy else
            retry_policy or None
        )
        functools.update_wrapper(self, fn)

    def __call__(self, *args: Any, **kwargs: Any) -> TaskFuture[T]:
        ctx = current_context(f"@task {self.name!r}")
        fn = self.fn
        if inspect.iscoroutinefunction(fn):
            return ctx.call(self.name, lambda: asyncio.run(fn(*args, **kwargs)),
                            self.retry_policy)
        return ctx.call(self.name, lambda: fn(*args, **kwargs), self.retry_policy)


@overload
def task(fn: Callable[..., T], /) -> TaskFunction[T]: ...
@overload
def task(
    *, name: str | None = None, retry_policy: Any = None, **kwargs: Any
) -> Callable[[Callable[..., T]], TaskFunction[T]]: ...


def task(
    fn: Callable[..., T] | None = None,
    /,
    *,
    name: str | None = None,
    retry_policy: Any = None,
    **kwargs: Any,
) -> TaskFunction[T] | Callable[[Callable[..., T]], TaskFunction[T]]:
    """Mark a function as a durable task: ``@task`` or ``@task(retry_policy=...)``."""
    retry_policy = retry_policy or kwargs.get("retry")

    def wrap(f: Callable[..., T]) -> TaskFunction[T]:
        return TaskFunction(f, name=name, retry_policy=retry_policy)

    return wrap(fn) if fn is not None else wrap


class entrypoint:  # noqa: N801 - LangGraph's name
    """Turn a function into a durable workflow: ``@entrypoint(checkpointer=...)``.

    The function takes one input and may declare ``previous`` (its last return value
    on this thread), ``config`` and ``writer``. Return ``entrypoint.final(value=,
    save=)`` to return one value and keep another as the next ``previous``.
    """

    @dataclass(frozen=True)
    class final(Generic[T]):  # noqa: N801 - LangGraph's name
        """Return ``value`` to the caller and save ``save`` for the next run."""

        value: Any
        save: Any

    def __init__(
        self,
        checkpointer: BaseCheckpointSaver | None = None,
        *,
        retry_policy: RetryPolicy | None = None,
        executor: Executor | None = None,
        **_: Any,
    ) -> None:
        self.checkpointer = checkpointer
        self.retry_policy = retry_policy
        self.executor = executor

    def __call__(self, fn: Callable[..., Any]) -> CompiledGraph:
        name = getattr(fn, "__name__", "entrypoint")
        call = bind(fn, provided=("previous",))

        def run(value: Any, values: Mapping[str, Any], ctx: Any) -> list[Write]:
            arg, previous = value
            return _final_writes(call(arg, ctx, previous=previous))

        node = NodeSpec(
            name=name,
            triggers=(START,),
            read=lambda values: (values.get(START), values.get(PREVIOUS_CHANNEL)),
            run=run,
            updates=lambda writes: dict(writes).get(RETURN_CHANNEL),
            retry=self.retry_policy,
        )
        spec = GraphSpec(
            channels={
                START: ChannelSpec("ephemeral"),
                RETURN_CHANNEL: ChannelSpec("last"),
                PREVIOUS_CHANNEL: ChannelSpec("last"),
            },
            nodes={name: node},
            input_writes=lambda value: [(START, value)],
            output=lambda values: values.get(RETURN_CHANNEL),
            output_channels=frozenset({RETURN_CHANNEL}),
            update_writes=lambda as_node, value, values: _final_writes(value),
            edges=((START, name, False), (name, END, False)),
        )
        graph = CompiledGraph(
            spec, checkpointer=self.checkpointer, executor=self.executor, name=name
        )
        functools.update_wrapper(graph, fn)  # type: ignore[arg-type]
        return graph


def _final_writes(result: Any) -> list[Write]:
    if isinstance(result, entrypoint.final):
        return [(RETURN_CHANNEL, result.value), (PREVIOUS_CHANNEL, result.save)]
    return [(RETURN_CHANNEL, result), (PREVIOUS_CHANNEL, result)]
