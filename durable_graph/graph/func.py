"""The functional API: ``@task`` for durable steps, ``@entrypoint`` for workflows."""

from __future__ import annotations

import asyncio
import functools
import importlib
import inspect
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, overload

import cloudpickle

from durable_graph.errors import GraphTypeError
from durable_graph.graph.call import bind
from durable_graph.graph.compiled import CompiledGraph
from durable_graph.graph.drawing import GraphDrawing
from durable_graph.scheduler.caching import CACHE_NS_WRITES, identifier, make_key
from durable_graph.scheduler.channels import ChannelSpec
from durable_graph.scheduler.executor import Executor
from durable_graph.scheduler.runtime import TaskFuture, current_context
from durable_graph.scheduler.spec import GraphSpec, NodeSpec, Write
from durable_graph.store.base import BaseCheckpointSaver
from durable_graph.types import END, START, CachePolicy, RetryPolicy

__all__ = ["TaskFunction", "by_value", "entrypoint", "task"]

T = TypeVar("T")
R = TypeVar("R")
S = TypeVar("S")
RETURN_CHANNEL = "__end__"
PREVIOUS_CHANNEL = "__previous__"


class TaskFunction(Generic[T]):
    """A ``@task``: calling it inside a run starts a durable step and returns a future.

    Its result is recorded in the checkpoint, so a replay of the calling node gets
    the recorded value back instead of running the body again.
    """

    def __init__(
        self, fn: Callable[..., T], *, name: str | None, retry_policy: Any,
        cache_policy: CachePolicy[Any] | None = None,
    ) -> None:
        if cache_policy is not None and not isinstance(cache_policy, CachePolicy):
            raise GraphTypeError(
                f"@task cache_policy must be a CachePolicy(key_func=, ttl=), got "
                f"{type(cache_policy).__name__}."
            )
        self.fn = fn
        self.cache_policy = cache_policy
        self.name: str = name or str(getattr(fn, "__name__", "task"))
        self.retry_policy: RetryPolicy | None = (
            retry_policy[0] if isinstance(retry_policy, Sequence) and retry_policy else
            retry_policy or None
        )
        functools.update_wrapper(self, fn)

    def __call__(self, *args: Any, **kwargs: Any) -> TaskFuture[T]:
        ctx = current_context(f"@task {self.name!r}")
        fn = self.fn
        key = None
        if self.cache_policy is not None:
            key = make_key(self.cache_policy, (CACHE_NS_WRITES, identifier(fn)), *args, **kwargs)
        if inspect.iscoroutinefunction(fn):
            return ctx.call(self.name, lambda: asyncio.run(fn(*args, **kwargs)),
                            self.retry_policy, key)
        # a partial, not a lambda: a distributed call's job pickles it (half the bytes
        # and time of a closure's code); of a body that pickles as a name where it can
        return ctx.call(self.name, functools.partial(_TaskBody(self), *args, **kwargs),
                        self.retry_policy, key)


class _TaskBody:
    """What a call of ``task`` runs: its function.

    A distributed call's job pickles it: as the name of ``task`` when its module has
    ``task`` under that name (the worker imports it, as it imports the graph), so each
    call's message carries a name, not the function's code (cloudpickle pickles a
    ``@task``'s function by value: its module's attribute is the ``TaskFunction``). By
    value, as before, when the name does not lead back to ``task`` (a script run as
    ``__main__``, a module or package registered to pickle by value, a local task) and
    for runs whose graph ships as a blob (``by_value``).
    """

    __slots__ = ("by_name", "task")

    def __init__(self, task: TaskFunction[Any], *, by_name: bool = True) -> None:
        self.task, self.by_name = task, by_name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.task.fn(*args, **kwargs)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        module, qualname = self.task.__module__, getattr(self.task, "__qualname__", "")
        if self.by_name and _found_by_name(self.task, module, qualname):
            return _task_body, (module, qualname)
        return _by_value, (self.task.fn,)


def _found_by_name(task: TaskFunction[Any], module: str, qualname: str) -> bool:
    """Whether ``module.qualname`` is ``task`` here, in a module pickled by reference."""
    found: Any = sys.modules.get(module)
    by_value = cloudpickle.list_registry_pickle_by_value()
    parts = module.split(".")
    if found is None or module == "__main__" or any(
            ".".join(parts[:i]) in by_value for i in range(1, len(parts) + 1)):
        return False  # (a package registered by value takes its submodules with it)
    return _named(found, qualname) is task


def _named(module: Any, qualname: str) -> Any:
    """What ``qualname`` names in ``module`` (None: nothing)."""
    for part in qualname.split("."):
        module = getattr(module, part, None)
    return module


def _task_body(module: str, qualname: str) -> _TaskBody:
    """The ``_TaskBody`` of the task ``module.qualname`` (unpickling a call's job)."""
    try:
        found: Any = importlib.import_module(module)
    except ImportError as exc:
        raise GraphTypeError(
            f"@task {module}.{qualname} cannot be imported on this worker ({exc}): deploy the "
            "same code to producers and workers."
        ) from None
    found = _named(found, qualname)
    if not isinstance(found, TaskFunction):
        raise GraphTypeError(
            f"{module}.{qualname} is not a @task on this worker (got {type(found).__name__}): "
            "deploy the same code to producers and workers."
        )
    return _TaskBody(found)


def by_value(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A call's function (as ``TaskFunction.__call__`` makes it) pickled with its task's
    code, not its name: for a run whose graph ships as a blob, which a worker that cannot
    import the graph's modules may run."""
    if isinstance(fn, functools.partial) and isinstance(fn.func, _TaskBody):
        return functools.partial(_TaskBody(fn.func.task, by_name=False), *fn.args,
                                 **fn.keywords)
    return fn


def _by_value(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A task's function pickled by value (``_TaskBody.__reduce__``)."""
    return fn


@overload
def task(fn: Callable[..., T], /) -> TaskFunction[T]: ...
@overload
def task(
    *, name: str | None = None, retry_policy: Any = None,
    cache_policy: CachePolicy[Any] | None = None, retry: Any = None,
) -> Callable[[Callable[..., T]], TaskFunction[T]]: ...


def task(
    fn: Callable[..., T] | None = None,
    /,
    *,
    name: str | None = None,
    retry_policy: Any = None,
    cache_policy: CachePolicy[Any] | None = None,
    retry: Any = None,
) -> TaskFunction[T] | Callable[[Callable[..., T]], TaskFunction[T]]:
    """Mark a function as a durable task: ``@task`` or ``@task(retry_policy=...,
    cache_policy=...)`` (a cached call's result comes from the graph's cache).

    ``retry=`` is LangGraph's older name for ``retry_policy=``.
    """
    retry_policy = retry_policy or retry

    def wrap(f: Callable[..., T]) -> TaskFunction[T]:
        return TaskFunction(f, name=name, retry_policy=retry_policy, cache_policy=cache_policy)

    return wrap(fn) if fn is not None else wrap


class entrypoint:  # noqa: N801 - LangGraph's name
    """Turn a function into a durable workflow: ``@entrypoint(checkpointer=...)``.

    The function takes one input and may declare ``previous`` (its last return value
    on this thread), ``config`` and ``writer``. Return ``entrypoint.final(value=,
    save=)`` to return one value and keep another as the next ``previous``.
    """

    @dataclass(frozen=True)
    class final(Generic[R, S]):  # noqa: N801 - LangGraph's name
        """Return ``value`` to the caller and save ``save`` for the next run.

        ``entrypoint.final[ReturnT, SaveT]`` types a workflow's return, as in LangGraph.
        """

        value: R
        """What the caller gets back."""
        save: S
        """What the next run on this thread receives as ``previous``."""

    def __init__(
        self,
        checkpointer: BaseCheckpointSaver | None = None,
        store: Any = None,
        cache: Any = None,
        context_schema: Any = None,
        cache_policy: CachePolicy[Any] | None = None,
        *,
        retry_policy: RetryPolicy | None = None,
        executor: Executor | None = None,
    ) -> None:
        if cache_policy is not None and not isinstance(cache_policy, CachePolicy):
            raise GraphTypeError(
                f"@entrypoint cache_policy must be a CachePolicy(key_func=, ttl=), got "
                f"{type(cache_policy).__name__}."
            )
        self.checkpointer = checkpointer
        self.store, self.cache, self.context_schema = store, cache, context_schema
        self.cache_policy = cache_policy
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
            cache_policy=self.cache_policy,
            cache_ns=(CACHE_NS_WRITES, identifier(fn), name),
            cache_input=_input_only,
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
        )
        graph = CompiledGraph(
            spec, checkpointer=self.checkpointer, executor=self.executor, name=name,
            store=self.store, cache=self.cache, context_schema=self.context_schema,
            drawing=GraphDrawing((name,), edges=((START, name),), ends=((name, ((END, None),)),),
                                 start_first=False),
        )
        functools.update_wrapper(graph, fn)  # type: ignore[arg-type]
        return graph


def _input_only(value: tuple[Any, Any]) -> Any:
    """An entrypoint is cached by its input, not by ``previous`` (as in LangGraph)."""
    return value[0]


def _final_writes(result: Any) -> list[Write]:
    if isinstance(result, entrypoint.final):
        return [(RETURN_CHANNEL, result.value), (PREVIOUS_CHANNEL, result.save)]
    return [(RETURN_CHANNEL, result), (PREVIOUS_CHANNEL, result)]
