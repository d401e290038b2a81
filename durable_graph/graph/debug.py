"""Stream events as the caller asked for them; ``debug`` wraps checkpoints and tasks.

A ``debug`` event is ``{"step", "timestamp", "type", "payload"}`` as LangGraph emits
it: ``type`` is ``checkpoint``, ``task`` or ``task_result``; a checkpoint's step is its
metadata step, a task's the step it runs in (one more than the checkpoint it runs from).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

__all__ = ["StreamShaper"]


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
