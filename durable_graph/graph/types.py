"""Where the vocabulary types lived before they moved to `durable_graph.types`.

Kept so that imports of the old path, and checkpoints that name it, still resolve.
"""

from __future__ import annotations

from durable_graph.types import (
    END,
    START,
    Command,
    Durability,
    Interrupt,
    RetryPolicy,
    Send,
    StateSnapshot,
    StateTask,
    StreamMode,
)

__all__ = [
    "END",
    "START",
    "Command",
    "Durability",
    "Interrupt",
    "RetryPolicy",
    "Send",
    "StateSnapshot",
    "StateTask",
    "StreamMode",
]
