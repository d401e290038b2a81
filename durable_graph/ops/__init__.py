"""Thread operations for operators, shared by the ``durable-graph`` CLI and the web UI.

Reading (``view``, works on the store alone, no graph code):

- ``list_threads(saver, status=, older_than=, newer_than=, graph=, limit=, offset=)``
  -> ``ThreadPage`` of ``ThreadSummary``
- ``describe_thread(saver, thread_id, history=10, graph=None)`` -> ``ThreadView``
  (values, next nodes, pending interrupts with their values, last error and
  traceback, history); ``graph=load_graph(saver, thread_id)`` refines values and
  next nodes when this process can load the graph

Changing (``control``, distributed threads; runs start on the workers):

- ``resume_thread(saver, app, thread_id, value=, update=, checkpoint_id=)`` -> ``RunHandle``
- ``retry_thread(saver, app, thread_id)`` -> ``RunHandle`` (a failed thread)
- ``cancel_thread(saver, thread_id)`` -> ``CancelResult``
- ``fork_thread(saver, thread_id, checkpoint_id, new_thread_id=None)`` -> new thread id

``connect()`` builds the app and a saver signed with the workers' key from the
``DURABLE_GRAPH_*`` settings. Errors: ``ThreadNotFoundError``, ``ThreadStateError``
(e.g. resuming a finished thread), ``ThreadBusyError`` (a run still going), all
``DurableGraphError``.
"""

from __future__ import annotations

from durable_graph.ops.control import (
    UNSET,
    CancelResult,
    Cluster,
    cancel_thread,
    connect,
    fork_thread,
    load_graph,
    resume_thread,
    retry_thread,
    run_record,
)
from durable_graph.ops.view import (
    HistoryEntry,
    PendingInterrupt,
    ThreadError,
    ThreadPage,
    ThreadSummary,
    ThreadView,
    Unreadable,
    describe_thread,
    list_threads,
)

__all__ = [
    "UNSET",
    "CancelResult",
    "Cluster",
    "HistoryEntry",
    "PendingInterrupt",
    "ThreadError",
    "ThreadPage",
    "ThreadSummary",
    "ThreadView",
    "Unreadable",
    "cancel_thread",
    "connect",
    "describe_thread",
    "fork_thread",
    "list_threads",
    "load_graph",
    "resume_thread",
    "retry_thread",
    "run_record",
]
