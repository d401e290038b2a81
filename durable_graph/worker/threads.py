"""Operations on a thread's distributed runs that need no graph: its run record, cancel.

``cancel_thread`` stops a thread by revoking its lease: the generation goes up, so
every job of the old run, queued or running, fails its lease check and is dropped,
and every commit it tries is refused by the fencing token. What the run committed
stays, so the thread can be resumed from its last committed step or forked.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from durable_graph.errors import (
    GraphValueError,
    RunCancelledError,
    SignatureError,
    ThreadNotFoundError,
    ThreadStateError,
)
from durable_graph.store.codec import SignedSerializer, SigningCodec
from durable_graph.store.redis.saver import RedisSaver
from durable_graph.worker.events import END, RunEvents
from durable_graph.worker.payload import open_sealed
from durable_graph.worker.runs import RunSpec, error_record

__all__ = ["CancelResult", "cancel_thread", "run_record", "signing_codec", "stop_run"]

_CANCEL_HOLD = 60.0
"""Seconds a cancel holds the thread's lease while it records the cancellation."""


def signing_codec(saver: RedisSaver) -> SigningCodec:
    """The codec the saver signs values with (the workers' key)."""
    serde = saver.serde
    if not isinstance(serde, SignedSerializer) or not isinstance(serde.codec, SigningCodec):
        raise GraphValueError(
            "this saver does not sign with the workers' key: build it with "
            "durable_graph.ops.connect() or CeleryExecutor(app).adopt(saver)")
    return serde.codec


def run_record(saver: RedisSaver, thread_id: str) -> RunSpec | None:
    """The thread's last distributed run, or None if it never ran on workers."""
    sealed = saver.get_run(str(thread_id))
    if sealed is None:
        return None
    try:
        run = open_sealed(signing_codec(saver), sealed, "run record")
    except SignatureError as exc:
        raise SignatureError(f"the run record of thread {thread_id!r} is refused: {exc}") from None
    return run if isinstance(run, RunSpec) else None


@dataclass(frozen=True)
class CancelResult:
    """What a cancel did."""

    thread_id: str
    previous_status: str | None
    run_id: str | None
    """The run that was stopped (None if none ran)."""
    generation: int
    """The lease generation jobs of the stopped run are now fenced out by."""


def cancel_thread(
    saver: RedisSaver, thread_id: str, *, reason: str = "cancelled by an operator",
    run_id: str | None = None,
) -> CancelResult:
    """Stop a thread: its queued and running jobs are fenced out, its status becomes
    ``cancelled``, a producer waiting on its run gets ``RunCancelledError``.

    What it committed stays: ``resume_thread`` continues it from its last committed
    step, ``fork_thread`` copies any of its checkpoints. A node already running
    finishes its own code, but its result is refused and nothing follows it.

    ``run_id`` cancels only that run (a run handle's ``cancel``): ThreadStateError
    when the thread no longer runs it.

    Raises:
        ThreadNotFoundError: no such thread.
        ThreadStateError: it is done, or already cancelled.
    """
    thread_id = str(thread_id)
    record = saver.get_status(thread_id)
    if record is None:
        raise ThreadNotFoundError(f"no thread {thread_id!r} in this store")
    previous = record.get("status")
    if previous in ("done", "cancelled"):
        raise ThreadStateError(f"thread {thread_id!r} is {previous}: nothing to cancel")
    run = run_record(saver, thread_id)
    if run_id is not None and (run is None or run.run_id != run_id or previous != "running"):
        raise ThreadStateError(
            f"run {run_id} of thread {thread_id!r} is not running any more (the thread is "
            f"{previous}); cancel the thread itself to stop what it does now")
    generation = stop_run(saver, thread_id, run, reason, next_nodes=record.get("next"))
    return CancelResult(thread_id, previous, run.run_id if run else None, generation)


def stop_run(
    saver: RedisSaver, thread_id: str, run: RunSpec | None, reason: str,
    *, next_nodes: Sequence[str] | None = None,
) -> int:
    """Fence out the thread's current run whatever its status, mark the thread
    ``cancelled`` and tell the run's producer; returns the fencing generation."""
    lease = saver.leases.revoke(thread_id, f"cancel:{uuid.uuid4().hex}", _CANCEL_HOLD)
    error = RunCancelledError(
        f"run of thread {thread_id!r} was cancelled ({reason}); resume it with "
        f"durable-graph resume {thread_id}")
    saver.set_status(thread_id, "cancelled", error, next_nodes=next_nodes)
    if run is not None:
        RunEvents(saver.conn, saver.prefix, saver.serde).publish(thread_id, run.run_id, END, {
            "status": "cancelled", "output": None, "interrupts": [],
            "error": error_record(error),
        })
    saver.leases.release(lease)
    return lease.generation
