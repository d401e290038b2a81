"""Chat state: ``add_messages``, ``MessagesState``, ``RemoveMessage``, as LangGraph has them.

``add_messages`` appends new messages, replaces a message whose id is already there,
deletes on ``RemoveMessage(id=...)`` and clears on ``RemoveMessage(id=REMOVE_ALL_MESSAGES)``.

``langchain_core`` is optional. When it is installed, messages are coerced exactly as
LangGraph does (dicts, ``(role, content)`` tuples and strings become message objects,
chunks become messages, ids are assigned). Without it, messages stay what they are: dicts
(given an ``"id"`` key), objects with an ``id`` attribute (given one when it is None), and
tuples or strings become ``{"role": ..., "content": ...}`` dicts.
"""

from __future__ import annotations

import functools
import importlib
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

from typing_extensions import TypedDict

from durable_graph.errors import GraphTypeError, GraphValueError

__all__ = ["REMOVE_ALL_MESSAGES", "MessagesState", "RemoveMessage", "add_messages"]

REMOVE_ALL_MESSAGES = "__remove_all__"
"""The id of a ``RemoveMessage`` that deletes every message before it."""


@dataclass(frozen=True)
class RemoveMessage:
    """Deletes the message with this ``id`` from the state (``REMOVE_ALL_MESSAGES``: all).

    With ``langchain_core`` installed, its own ``RemoveMessage`` works the same. A plain
    record, so a node's writes holding one are stored as msgpack, never pickled.
    """

    id: str
    """The id of the message to delete."""
    type: ClassVar[str] = "remove"


@functools.cache
def _langchain() -> Any:
    """``langchain_core.messages`` when installed, else None."""
    try:
        return importlib.import_module("langchain_core.messages")
    except ImportError:
        return None


def _coerce(messages: list[Any], *, held: bool = False) -> list[Any]:
    """Messages as LangGraph coerces them (as plain data without langchain_core).

    ``held``: the state's own list, whose dicts a merge already made: kept as the same
    objects (a merge copies only what it is given), so the merged list shares them and a
    saver stores the step as a delta (``store.delta`` matches items by identity)."""
    lc = _langchain()
    if lc is None:
        return [m if held and type(m) is dict else _plain(m) for m in messages]
    messages = [lc.RemoveMessage(id=m.id) if isinstance(m, RemoveMessage) else m
                for m in messages]
    kinds = set(map(type, messages))
    if all(issubclass(t, lc.BaseMessage) and not issubclass(t, lc.BaseMessageChunk)
           for t in kinds):
        return messages
    return [lc.message_chunk_to_message(m) for m in lc.convert_to_messages(messages)]


def _plain(m: Any) -> Any:
    if isinstance(m, str):
        return {"role": "user", "content": m}
    if isinstance(m, tuple) and len(m) == 2:
        return {"role": m[0], "content": m[1]}
    if isinstance(m, Mapping):
        return dict(m)
    if not hasattr(m, "id"):
        raise GraphTypeError(
            f"add_messages got {type(m).__name__} ({m!r:.60}): a message is a dict, a "
            "(role, content) tuple, a string or an object with an 'id' attribute."
        )
    return m


def _id(m: Any) -> Any:
    return m.get("id") if isinstance(m, dict) else m.id


def _with_id(m: Any) -> Any:
    """The message with an id (a new uuid4 when it had none)."""
    if _id(m) is not None:
        return m
    if isinstance(m, dict):
        return {**m, "id": str(uuid.uuid4())}
    m.id = str(uuid.uuid4())  # LangGraph sets it on the object too
    return m


def _is_remove(m: Any) -> bool:
    if isinstance(m, dict):
        return m.get("type") == "remove" or m.get("role") == "remove"
    return getattr(m, "type", None) == "remove"


def _merge(left: Any, right: Any, *, format: str | None = None) -> list[Any]:
    old = [_with_id(m) for m in _coerce(left if isinstance(left, list) else [left],
                                         held=True)]
    new = [_with_id(m) for m in _coerce(right if isinstance(right, list) else [right])]
    clear = [i for i, m in enumerate(new) if _is_remove(m) and _id(m) == REMOVE_ALL_MESSAGES]
    if clear:
        return new[clear[-1] + 1:]
    merged = list(old)
    index = {_id(m): i for i, m in enumerate(merged)}
    removed: set[Any] = set()
    for m in new:
        at = index.get(_id(m))
        if at is None:
            if _is_remove(m):
                raise GraphValueError(
                    f"Attempting to delete a message with an ID that doesn't exist ('{_id(m)}')"
                )
            index[_id(m)] = len(merged)
            merged.append(m)
        elif _is_remove(m):
            removed.add(_id(m))
        else:
            removed.discard(_id(m))
            merged[at] = m
    merged = [m for m in merged if _id(m) not in removed]
    return _formatted(merged, format)


def _formatted(messages: list[Any], format: str | None) -> list[Any]:
    if format is None:
        return messages
    if format != "langchain-openai":
        raise GraphValueError(
            f"Unrecognized format={format!r}. Expected one of 'langchain-openai', None."
        )
    lc = _langchain()
    if lc is None:
        raise ImportError("add_messages(format='langchain-openai') needs langchain-core installed")
    return list(lc.convert_to_messages(lc.convert_to_openai_messages(messages)))


def add_messages(left: Any = None, right: Any = None, **kwargs: Any) -> Any:
    """Merge ``right`` into ``left`` by message id (the reducer of ``MessagesState``).

    Called with only ``format=`` it returns the configured reducer, as in LangGraph:
    ``Annotated[list, add_messages(format="langchain-openai")]``.
    """
    unknown = sorted(set(kwargs) - {"format"})
    if unknown:
        raise GraphTypeError(f"add_messages() got unexpected keyword argument(s) {unknown}")
    if left is not None and right is not None:
        return _merge(left, right, **kwargs)
    if left is not None or right is not None:
        raise GraphValueError(
            "Must specify non-null arguments for both 'left' and 'right'. Only "
            f"received: '{'left' if left else 'right'}'."
        )
    reducer: Callable[[Any, Any], list[Any]] = functools.partial(_merge, **kwargs)
    return reducer


class MessagesState(TypedDict):
    """A state with one key, ``messages``, merged by ``add_messages``; subclass to add keys."""

    messages: Annotated[list[Any], add_messages]
