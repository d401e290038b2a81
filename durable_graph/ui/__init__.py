"""The web view of threads: ``durable-graph ui`` (see ``app``)."""

from __future__ import annotations

from durable_graph.ui.app import create_ui
from durable_graph.ui.store import UiStore

__all__ = ["UiStore", "create_ui"]
