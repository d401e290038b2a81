"""The page's actions, each the same ``durable_graph.ops`` call the CLI makes.

This module only turns a form into the arguments of an operation and its result
into a line for the page; the operations themselves live in ``durable_graph.ops``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from durable_graph import ops
from durable_graph.errors import DurableGraphError
from durable_graph.ui.store import UiStore

__all__ = ["ActionError", "parse_json", "run_action"]


class ActionError(DurableGraphError):
    """A form the page cannot act on; the message says what to fix."""


def parse_json(text: str | None, field: str, *, want_object: bool = False) -> Any:
    """A form field as JSON (blank means None); ActionError naming the field otherwise."""
    if text is None or not text.strip():
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ActionError(f"the {field} is not valid JSON ({exc.msg} at line {exc.lineno} "
                          f"column {exc.colno}); write e.g. \"yes\", 42 or {{\"k\": 1}}") from None
    if want_object and not isinstance(value, dict):
        raise ActionError(f"the {field} must be a JSON object such as {{\"key\": \"value\"}}, "
                          f"got {type(value).__name__}")
    return value


def run_action(store: UiStore, action: str, thread_id: str, form: Mapping[str, str]
               ) -> tuple[str, str]:
    """Run ``action`` on ``thread_id`` with the form's fields: a line saying what happened,
    and the thread to show next (the new one, after a fork).

    Resume and retry enqueue the run and return: the page follows it live.
    """
    saver, app = store.saver, store.app
    if action == "resume":
        text = form.get("value")
        value = ops.UNSET if text is None or not text.strip() else parse_json(
            text, "resume value")
        update = parse_json(form.get("update"), "state update", want_object=True)
        run = ops.resume_thread(saver, app, thread_id, value=value, update=update)
        return f"resumed thread {thread_id} (run {run.run_id}): the workers run it now", thread_id
    if action == "retry":
        run = ops.retry_thread(saver, app, thread_id)
        return f"retrying thread {thread_id} from the failed step (run {run.run_id})", thread_id
    if action == "cancel":
        done = ops.cancel_thread(saver, thread_id, reason="cancelled from the web view")
        return f"cancelled thread {thread_id} (it was {done.previous_status})", thread_id
    if action == "fork":
        checkpoint = (form.get("checkpoint") or "").strip()
        if not checkpoint:
            raise ActionError("pick the checkpoint to fork from")
        new = ops.fork_thread(saver, thread_id, checkpoint,
                              new_thread_id=(form.get("new_thread") or "").strip() or None)
        return f"forked thread {thread_id} at checkpoint {checkpoint[:24]} into {new}", new
    raise ActionError(f"no action {action!r}: use resume, retry, cancel or fork")
