"""The ``messages`` stream mode: chat messages a node returned, with LangGraph's metadata.

LangGraph streams every ``langchain_core`` message object a node returns (in a dict
update, a ``Command`` update or a list of them) as ``(message, metadata)``, once per
message id, skipping messages that were already in the node's input; a message with
no id gets one first. Without ``langchain_core`` loaded there are no message objects,
so nothing streams. Tokens of a chat model streaming inside a node are not captured
(that needs LangChain's callbacks).
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator, Mapping
from typing import Any

from durable_graph.scheduler.algo import PlannedTask
from durable_graph.scheduler.spec import Write

__all__ = ["message_events"]


def _message_class() -> Any:
    """langchain_core's ``BaseMessage`` if langchain_core is imported, else None."""
    module = sys.modules.get("langchain_core.messages")
    return getattr(module, "BaseMessage", None)


def _items(value: Any) -> Iterator[Any]:
    if isinstance(value, (list, tuple)):
        yield from value
    else:
        yield value


def message_events(
    task: PlannedTask, writes: list[Write], step: int, config: Mapping[str, Any],
    seen: set[Any],
) -> list[tuple[Any, dict[str, Any]]]:
    """The ``messages`` chunks of a finished task; ``seen`` (message ids) is updated."""
    cls = _message_class()
    if cls is None or task.node.hidden:
        return []
    state = task.input if isinstance(task.input, Mapping) else getattr(task.input, "__dict__", {})
    for value in state.values():
        seen.update(m.id for m in _items(value) if isinstance(m, cls) and m.id is not None)
    meta = _metadata(task, step, config)
    out = []
    for _, value in writes:
        for item in _items(value):
            if not isinstance(item, cls) or item.id in seen:
                continue
            if item.id is None:
                item.id = str(uuid.uuid4())
            seen.add(item.id)
            out.append((item, meta))
    return out


def _metadata(task: PlannedTask, step: int, config: Mapping[str, Any]) -> dict[str, Any]:
    meta: dict[str, Any] = dict(config.get("metadata") or {})
    conf = config.get("configurable") or {}
    thread_id = conf.get("thread_id")
    if thread_id is not None:
        meta["thread_id"] = thread_id
    kind, *rest = task.path
    return {**meta, "ls_integration": "langgraph", "langgraph_step": step,
            "langgraph_node": task.name, "langgraph_triggers": tuple(task.triggers),
            "langgraph_path": (f"__pregel_{kind}", *rest),
            "langgraph_checkpoint_ns": "|".join(  # under its subgraph's namespace, if any
                filter(None, (conf.get("checkpoint_ns"), f"{task.name}:{task.id}")))}
