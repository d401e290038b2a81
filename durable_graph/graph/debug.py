"""Stream events as the caller asked for them; ``debug`` wraps checkpoints and tasks.

A ``debug`` event is ``{"step", "timestamp", "type", "payload"}`` as LangGraph emits
it: ``type`` is ``checkpoint``, ``task`` or ``task_result``; a checkpoint's step is its
metadata step, a task's the step it runs in (one more than the checkpoint it runs from).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from durable_graph.scheduler.loop import SUBGRAPHS

__all__ = ["StreamShaper", "shape_stream"]


def shape_stream(
    events: Iterable[tuple[str, Any]], modes: frozenset[str], *, single: bool,
    subgraphs: bool = False,
) -> Iterator[Any]:
    """The chunks a stream yields for a run's loop events: the chunk for one mode,
    (mode, chunk) for several; with ``subgraphs`` each led by its namespace tuple
    (``()`` for the graph itself), as LangGraph's ``stream(subgraphs=True)``."""
    shapers: dict[tuple[str, ...], StreamShaper] = {}
    for event in events:
        ns, mode, payload = event[1] if event[0] == SUBGRAPHS else ((), *event)
        shape = shapers.setdefault(ns, StreamShaper(modes))
        for out_mode, out in shape(mode, payload):
            chunk = (out,) if single else (out_mode, out)
            if subgraphs:
                yield (ns, *chunk)
            else:
                yield chunk[0] if single else chunk


class StreamShaper:
    """Turns one run's loop events into the chunks of the requested stream modes."""

    def __init__(self, wanted: frozenset[str]) -> None:
        self.wanted = wanted
        self.step = -1
        """The step of the last checkpoint streamed."""

    def __call__(self, mode: str, payload: Any) -> Iterator[tuple[str, Any]]:
        """The (mode, chunk) pairs one loop event makes."""
        if mode in self.wanted:
            yield mode, payload
        if "debug" not in self.wanted or mode not in ("checkpoints", "tasks"):
            return
        if mode == "checkpoints":
            self.step = int((payload.get("metadata") or {}).get("step", self.step))
            step, kind = self.step, "checkpoint"
        else:
            step, kind = self.step + 1, "task_result" if "result" in payload else "task"
        yield "debug", {"step": step, "timestamp": datetime.now(UTC).isoformat(),
                        "type": kind, "payload": payload}
