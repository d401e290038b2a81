"""Calling user functions with the parameters they declare (config, writer, store,
runtime, previous)."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

from durable_graph.scheduler.runtime import TaskContext

__all__ = ["bind"]

Injector = Callable[[TaskContext], Any]
_INJECTABLE: dict[str, Injector] = {
    "config": lambda ctx: ctx.config,
    "writer": lambda ctx: ctx.writer,
    "store": lambda ctx: ctx.step.scope.store,
    "runtime": lambda ctx: ctx.runtime(),
}


def _injectable(name: str, param: inspect.Parameter) -> bool:
    """LangGraph injects ``store`` only into a parameter typed as a store (or untyped)."""
    if name != "store" or param.annotation is inspect.Parameter.empty:
        return True
    return "BaseStore" in str(getattr(param.annotation, "__name__", param.annotation))


def bind(fn: Callable[..., Any], provided: tuple[str, ...] = ()) -> Callable[..., Any]:
    """A caller ``(input, ctx, **values) -> result`` passing the parameters ``fn`` declares.

    ``config``, ``writer``, ``store`` and ``runtime`` come from the task context; names
    in ``provided`` (such as an entrypoint's ``previous``) come from the caller's
    keyword values (and a ``runtime`` carries ``previous`` too).

    The signature is read once here, not on every call. Coroutine functions run to
    completion on the calling thread.
    """
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = {}  # type: ignore[assignment]
    wanted = {name: inj for name, inj in _INJECTABLE.items()
              if name in params and _injectable(name, params[name])}
    passed = tuple(name for name in provided if name in params)
    is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        vars(type(fn)).get("__call__")
    )

    def call(value: Any, ctx: TaskContext, **values: Any) -> Any:
        kwargs = {name: inj(ctx) for name, inj in wanted.items()}
        kwargs.update((name, values[name]) for name in passed)
        if "runtime" in kwargs and "previous" in values:
            kwargs["runtime"] = kwargs["runtime"].override(previous=values["previous"])
        result = fn(value, **kwargs)
        return asyncio.run(result) if is_async else result

    return call
