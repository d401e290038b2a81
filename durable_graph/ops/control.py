"""Changing threads for operators: resume, retry, cancel and fork distributed threads.

Each function takes the thread's ``RedisSaver`` and, where a run starts, the Celery
app of the workers (``connect()`` builds both from the ``DURABLE_GRAPH_*``
settings). None of them imports the user's graph: a run is started from the
thread's stored run record, which names the graph the way workers load it.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from celery import Celery

from durable_graph.errors import (
    DispatchError,
    DurableGraphError,
    GraphValueError,
    ThreadBusyError,
    ThreadNotFoundError,
    ThreadStateError,
)
from durable_graph.store.base import (
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    new_checkpoint_id,
)
from durable_graph.store.codec import SignedSerializer, SigningCodec
from durable_graph.store.redis.saver import RedisSaver
from durable_graph.types import Command
from durable_graph.worker.app import CeleryDispatcher, settings_of
from durable_graph.worker.config import ENV_BROKER_URL, Settings
from durable_graph.worker.events import RunEvents
from durable_graph.worker.executor import RunHandle
from durable_graph.worker.payload import seal
from durable_graph.worker.runs import Job, RunSpec
from durable_graph.worker.shipping import GraphLoader
from durable_graph.worker.threads import CancelResult, cancel_thread, run_record, signing_codec

if TYPE_CHECKING:
    from durable_graph.graph.compiled import CompiledGraph

__all__ = [
    "UNSET",
    "CancelResult",
    "Cluster",
    "cancel_thread",
    "connect",
    "fork_thread",
    "load_graph",
    "resume_thread",
    "retry_thread",
    "run_record",
]

log = logging.getLogger("durable_graph.ops")

UNSET: Any = object()
"""``resume_thread(value=UNSET)``: resume without answering an interrupt."""


@dataclass(frozen=True)
class Cluster:
    """The workers' app and a store signed with their key: what every operation needs."""

    app: Celery
    saver: RedisSaver
    settings: Settings


def connect(**create_app_kwargs: Any) -> Cluster:
    """The app and signed saver of the ``DURABLE_GRAPH_*`` settings (or the arguments,
    as ``create_app`` takes them)."""
    from durable_graph.worker.app import create_app

    app = create_app(**create_app_kwargs)
    settings = settings_of(app)
    # _thread_policy: an operator's resume or retry keeps the thread's retention policy
    saver = RedisSaver.from_url(settings.redis_url, prefix=settings.prefix, _thread_policy=True)
    return Cluster(app, _signed(saver, settings.require_codec()), settings)


def _signed(saver: RedisSaver, codec: SigningCodec) -> RedisSaver:
    if not isinstance(saver, RedisSaver):
        raise GraphValueError(f"thread operations need the workers' RedisSaver, "
                              f"got {type(saver).__name__}")
    if not isinstance(saver.serde, SignedSerializer):
        saver.serde = SignedSerializer(saver.serde, codec)
    return saver


def load_graph(saver: RedisSaver, thread_id: str) -> CompiledGraph | None:
    """The thread's graph loaded the way workers load it (import path, else the signed
    blob), or None when this process cannot load it (its code is not here)."""
    run = run_record(saver, thread_id)
    if run is None:
        return None
    try:
        return GraphLoader(saver.client, run.prefix, signing_codec(saver)).load(run.graph)
    except (DurableGraphError, ImportError, AttributeError) as exc:
        log.info("showing thread %s from the store alone: %s", thread_id, exc)
        return None


def _status(saver: RedisSaver, thread_id: str) -> str | None:
    record = saver.get_status(str(thread_id))
    return None if record is None else record.get("status")


def _require_run(saver: RedisSaver, thread_id: str) -> RunSpec:
    run = run_record(saver, thread_id)
    if run is None:
        raise ThreadNotFoundError(
            f"thread {thread_id!r} has no distributed run to resume (start it with "
            "CeleryExecutor first)")
    return run


def _checkpoint(saver: RedisSaver, thread_id: str, checkpoint_id: str) -> CheckpointTuple:
    """Checkpoint ``checkpoint_id`` of the thread's root graph, or a clear error."""
    if not isinstance(checkpoint_id, str) or not checkpoint_id:
        raise GraphValueError(
            f"a checkpoint id must not be empty, got {checkpoint_id!r}; the ids are listed "
            "under HISTORY by `durable-graph show THREAD`")
    saved = saver.get_tuple({"configurable": {"thread_id": str(thread_id), "checkpoint_ns": "",
                                              "checkpoint_id": checkpoint_id}})
    if saved is None:
        raise ThreadNotFoundError(f"thread {thread_id!r} has no checkpoint {checkpoint_id!r}")
    return saved


def _start(
    saver: RedisSaver, app: Celery, run: RunSpec, input: Any, checkpoint_id: str | None,
) -> RunHandle:
    """Start a new run of the thread on the workers from its stored run record."""
    settings = settings_of(app)
    _signed(saver, settings.require_codec())
    run = replace(run, run_id=uuid.uuid4().hex, branch=("", ""), null_resume=())
    owner = f"run:{run.run_id}"
    lease = saver.leases.acquire(run.thread_id, owner, settings.lease_ttl)
    if lease is None:
        raise ThreadBusyError(
            f"thread {run.thread_id!r} is running; wait for it, or cancel it first "
            "(durable-graph cancel)")
    job = Job("start", run, owner, lease.generation, input=input, checkpoint=checkpoint_id)
    try:
        dispatcher = CeleryDispatcher(app, settings)
        dispatcher.send([job])
        dispatcher.flush()  # an operator's action returns once the broker holds the job
    except Exception as exc:  # kombu's OperationalError and the like: nothing was sent
        saver.leases.release(lease)
        raise DispatchError(
            f"could not send the run of thread {run.thread_id!r} to the Celery broker "
            f"({type(exc).__name__}: {exc}); the thread is unchanged: try again when the "
            f"broker answers (${ENV_BROKER_URL})") from exc
    events = RunEvents(saver.conn, saver.prefix, saver.serde)
    return RunHandle(saver, events, run)


def resume_thread(
    saver: RedisSaver, app: Celery, thread_id: str, *, value: Any = UNSET,
    update: dict[str, Any] | None = None, checkpoint_id: str | None = None,
) -> RunHandle:
    """Resume an interrupted, failed or cancelled thread on the workers.

    Args:
        value: the answer to the pending interrupt (``Command(resume=value)``).
        update: a state update applied with the resume (a mapping of state keys).
        checkpoint_id: replay from this past checkpoint instead of the latest.

    Raises:
        ThreadNotFoundError: the thread never ran on workers, or has no such checkpoint.
        GraphValueError: an empty checkpoint id, or an update that is not a mapping.
        ThreadStateError: it is done (and no checkpoint was given): nothing to resume.
        ThreadBusyError: a run of it is still going.
    """
    if update is not None and not isinstance(update, dict):
        raise GraphValueError(
            f"a state update must be an object of state keys, got {type(update).__name__} "
            f"{update!r}; e.g. {{\"reviewer\": \"ann\"}}")
    run = _require_run(saver, thread_id)
    if checkpoint_id is not None:
        _checkpoint(saver, thread_id, checkpoint_id)
    status = _status(saver, thread_id)
    if status == "done" and checkpoint_id is None:
        raise ThreadStateError(
            f"thread {thread_id!r} is done: nothing to resume. Fork it from a past "
            "checkpoint (durable-graph fork) or resume from one (--checkpoint ID).")
    given = value is not UNSET or update is not None
    command = Command(resume=None if value is UNSET else value, update=update) \
        if given else None
    return _start(saver, app, run, command, checkpoint_id)


def retry_thread(saver: RedisSaver, app: Celery, thread_id: str) -> RunHandle:
    """Run a failed thread again from the step that failed (finished work is reused).

    Raises:
        ThreadStateError: the thread is not ``failed`` (the message says what to use).
    """
    run = _require_run(saver, thread_id)
    status = _status(saver, thread_id)
    if status != "failed":
        hint = {"interrupted": "resume it with an answer (durable-graph resume)",
                "cancelled": "resume it (durable-graph resume)",
                "running": "wait for it, or cancel it", "done": "nothing to retry"}
        raise ThreadStateError(
            f"thread {thread_id!r} is {status}, not failed: {hint.get(str(status), '')}")
    return _start(saver, app, run, None, None)


def fork_thread(
    saver: RedisSaver, thread_id: str, checkpoint_id: str, *, new_thread_id: str | None = None,
) -> str:
    """Copy checkpoint ``checkpoint_id`` of a thread into a new thread; returns its id.

    The new thread starts from that checkpoint's state (its pending writes are not
    copied: the step after it runs again) and, if the source ran on workers, gets
    its run record, so ``resume_thread(new)`` runs it there. Its status is
    ``interrupted`` until it is resumed.

    Raises:
        ThreadNotFoundError: no such checkpoint in the thread.
        GraphValueError: an empty checkpoint id or new thread id.
        ThreadStateError: ``new_thread_id`` exists already.
    """
    if new_thread_id is not None and (not isinstance(new_thread_id, str) or not new_thread_id):
        raise GraphValueError(f"the new thread id must not be empty, got {new_thread_id!r}; "
                              "leave it out for a generated one")
    saved = _checkpoint(saver, thread_id, checkpoint_id)
    new_id = new_thread_id or f"{thread_id}-fork-{uuid.uuid4().hex[:8]}"
    target = {"configurable": {"thread_id": new_id, "checkpoint_ns": ""}}
    if saver.get_tuple(target) is not None or saver.get_status(new_id) is not None:
        raise ThreadStateError(f"thread {new_id!r} exists already; pick another id")
    cp = saved.checkpoint
    copy = Checkpoint(new_checkpoint_id(), datetime.now(UTC).isoformat(),
                      dict(cp.channel_values), dict(cp.channel_versions),
                      {k: dict(v) for k, v in cp.versions_seen.items()})
    metadata: CheckpointMetadata = {"source": "fork", "step": saved.metadata.get("step", -1),
                                    "parents": {}}
    saver.put(target, copy, metadata, dict(copy.channel_versions))
    run = run_record(saver, thread_id)
    if run is not None:
        forked = replace(run, thread_id=new_id, run_id=uuid.uuid4().hex, start_checkpoint="",
                         branch=("", ""), null_resume=())
        saver.set_run(new_id, seal(signing_codec(saver), forked), (saver.get_status(str(thread_id))
                                                            or {}).get("graph") or "")
    saver.set_status(new_id, "interrupted")
    return new_id
