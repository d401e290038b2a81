"""New input for a thread whose distributed run is still going ("double texting").

``multitask`` says what a producer does when the thread's lease is held:

- ``reject`` (default): raise ``ThreadBusyError`` at once; nothing changes.
- ``enqueue``: wait until the current run ends (reading its end event, no polling
  of the store), then start; several waiting producers start one after another.
- ``interrupt``: ask the current run to stop at its next step boundary (the worker
  that commits its current step starts no next one and ends it ``cancelled``), wait
  for that, then apply the new input to the checkpoint it committed last.
- ``rollback``: stop the current run now (its lease is revoked: tasks still running
  are fenced out), then apply the new input to the checkpoint that run started from,
  as if it had never run (its checkpoints stay in the history as an abandoned
  branch; a run that started the thread is deleted with it).
"""

from __future__ import annotations

import time
from typing import Any

from durable_graph.errors import GraphValueError, ThreadBusyError
from durable_graph.scheduler.channels import MISSING
from durable_graph.store.redis.lease import Lease
from durable_graph.store.redis.saver import RedisSaver
from durable_graph.worker.events import END, RunEvents
from durable_graph.worker.threads import run_record, stop_run

__all__ = ["MULTITASK", "acquire", "check"]

MULTITASK = ("reject", "enqueue", "interrupt", "rollback")
_WAIT_MS = 1000
"""Longest wait on the current run's end event before checking the lease again."""
_CLOSING_POLL = 0.01
"""Pause before taking the lease again from a run that has ended but not yet released it."""


def check(multitask: str) -> str:
    """``multitask`` if it is one of ``MULTITASK``; a clear error otherwise."""
    if multitask not in MULTITASK:
        raise GraphValueError(
            f"multitask must be one of {', '.join(map(repr, MULTITASK))}, got {multitask!r}")
    return multitask


def acquire(
    saver: RedisSaver, thread_id: str, owner: str, ttl: float, *, multitask: str,
    config: dict[str, Any],
) -> tuple[Lease, dict[str, Any], Any]:
    """The thread's lease for a new run, the config that run starts from, and that
    config's checkpoint tuple read in the same round trip (``MISSING``: not read, the
    lease was not free at once; None: the thread has none)."""
    check(multitask)
    # watched: a producer that dies before its first job is sent leaves a thread to recover
    lease, early = saver.leases.acquire_reading(
        thread_id, owner, ttl, watch_idle=True,
        also=lambda p: saver.queue_get_tuple(p, config))
    saved = saver.tuple_from(config, early) if lease is not None else MISSING
    while lease is None:
        config = _make_way(saver, thread_id, multitask, config)
        lease = saver.leases.acquire(thread_id, owner, ttl, watch_idle=True)
    return lease, config, saved


def _make_way(
    saver: RedisSaver, thread_id: str, multitask: str, config: dict[str, Any]
) -> dict[str, Any]:
    """Deal with the run holding the thread as ``multitask`` says, before taking its
    lease again; the config the new run starts from."""
    run = run_record(saver, thread_id)
    if _closing(saver, thread_id):
        return config  # its run has ended; the lease is released right after the end event
    if multitask == "reject":
        raise ThreadBusyError(
            f"thread {thread_id!r} is running on the workers already; wait for it, or "
            "pass multitask='enqueue' (run after it), 'interrupt' (stop it, then apply "
            "this input) or 'rollback' (stop it and undo it, then apply this input).")
    if multitask in ("enqueue", "interrupt"):
        if run is None:  # held by a cancel in progress: it ends in a moment
            time.sleep(_WAIT_MS / 10000)
            return config
        if multitask == "interrupt":
            saver.request_stop(thread_id, run.run_id)
        _wait_for_end(saver, thread_id, run.run_id)
        return config
    stop_run(saver, thread_id, run, f"new input with multitask={multitask!r}")
    if multitask == "rollback" and run is not None:
        config = _rolled_back(saver, thread_id, run.start_checkpoint, config)
    return config


def _closing(saver: RedisSaver, thread_id: str) -> bool:
    """Whether the lease holder is a run that has already ended (its status is set while
    it still holds the lease, then it publishes its end and releases): wait a moment."""
    record = saver.get_status(thread_id) or {}
    if record.get("status") in (None, "running"):
        return False
    time.sleep(_CLOSING_POLL)
    return True


def _wait_for_end(saver: RedisSaver, thread_id: str, run_id: str) -> None:
    """Block until run ``run_id`` publishes its end, or its stream is quiet for
    ``_WAIT_MS`` (then the caller checks the lease again)."""
    events = RunEvents(saver.conn, saver.prefix, saver.serde)
    cursor, quiet = "0", False
    while not quiet:
        quiet = True
        for event_id, mode, _ in events.read(thread_id, run_id, cursor, _WAIT_MS):
            quiet, cursor = False, event_id
            if mode == END:
                return


def _rolled_back(
    saver: RedisSaver, thread_id: str, start: str, config: dict[str, Any]
) -> dict[str, Any]:
    """The config of a run that replaces the stopped one from where that one started."""
    conf = dict(config.get("configurable") or {})
    if conf.get("checkpoint_id"):
        return config  # the caller chose where to start
    if not start:
        saver.delete_thread(thread_id)  # the stopped run created the thread
        return config
    return {**config, "configurable": {**conf, "checkpoint_id": start}}
