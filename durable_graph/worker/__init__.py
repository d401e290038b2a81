"""Distributed execution on Celery: the worker app, the producer's executor, settings.

``app`` is configured from the environment (``DURABLE_GRAPH_REDIS_URL``,
``DURABLE_GRAPH_BROKER_URL``, ``DURABLE_GRAPH_SECRET_KEY``, ...), so
``celery -A durable_graph.worker worker`` runs a worker, and Flower and the rest of
Celery's tooling work on it. ``create_app`` builds one from arguments instead.
"""

from __future__ import annotations

from durable_graph.worker.app import create_app
from durable_graph.worker.config import Settings
from durable_graph.worker.executor import CeleryExecutor, RunHandle

__all__ = ["CeleryExecutor", "RunHandle", "Settings", "app", "create_app"]

app = create_app()
"""The app ``celery -A durable_graph.worker`` and ``durable-graph worker`` run."""
