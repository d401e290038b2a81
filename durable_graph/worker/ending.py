"""How a distributed run ends: its status, its end event and its lease, in one round trip.

``end_run`` records a run's end (a subgraph's run reports to its parent call instead,
``report_to_parent``); ``abort_run`` fails a run whose jobs cannot run at all;
``CloseRide`` sends a ``done`` end in the round trip of the commit of the run's last
checkpoint, conditional on that commit (see ``runs.finish``); ``EndRide`` the end of the
job that commits, when nothing is left for it to do after the commit.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from durable_graph.errors import FencingError, GraphInterrupt, SerializationError
from durable_graph.scheduler.algo import read_values
from durable_graph.scheduler.snapshot import build_snapshot
from durable_graph.scheduler.spec import Write
from durable_graph.scheduler.transition import Next, error_as_text, pause_events
from durable_graph.store.base import ERROR, RETURN
from durable_graph.store.redis.jobbook import queue_end
from durable_graph.store.redis.lease import Lease
from durable_graph.store.redis.saver import RedisSaver
from durable_graph.store.redis.threads import RunEnd
from durable_graph.worker import metrics
from durable_graph.worker.events import END, RunEvents

if TYPE_CHECKING:
    from durable_graph.worker.runs import Job, RunContext, RunSpec

__all__ = ["CloseRide", "EndRide", "abort_run", "end_run", "error_record", "report_to_parent"]

log = logging.getLogger("durable_graph.worker")


class EndRide:
    """The end of the job ``rc`` runs (``rc.ending``), sent just after the commit of a
    step that leaves that job nothing to do (a ``Rider``): its successors are owed
    already (sent or adopted before the commit, ``async``), or the run ends with it
    (``CloseRide``). Once sent, ``rc.ending`` is cleared: the worker records no end
    after the job. A refused commit ends the job all the same, as it would after."""

    def __init__(self, rc: RunContext) -> None:
        self.rc, self._sent = rc, False

    def queue(self, pipe: Any) -> list[Any]:
        rc = self.rc
        if rc.ending is None:
            return []
        self._sent = True
        key, ttl = rc.ending
        return [queue_end(rc.saver.conn, rc.run.prefix, pipe, (key, rc.thread_id), ttl)]

    def landed(self, replies: list[Any]) -> None:
        if self._sent:
            self.rc.ending = None

    def failed(self, exc: BaseException) -> None:
        """Nothing to undo: the job, given back, finds itself ended or not."""


class CloseRide:
    """A run's ``done`` end sent just after the commit of its last checkpoint (a
    ``Rider``): it ends the run only if that commit landed (see ``_close``), and the job
    that commits after it (``EndRide``; on Redis Cluster, where the run closes after
    the commit instead, the worker ends the job after it as usual)."""

    def __init__(self, rc: RunContext, follow: Next) -> None:
        spec = rc.graph.spec
        self.rc, self.at = rc, follow.checkpoint.id
        self.reply: int | None = None
        self._job = EndRide(rc)
        self.event = _end_event(rc.events, rc.run, "done", None, {
            "output": spec.run_result(read_values(spec, follow.checkpoint)),
            "interrupts": []})[1]

    def queue(self, pipe: Any) -> list[Any]:
        call = self.rc.saver.queue_close_run(pipe, self.rc.lease(), "done", (), self.event,
                                             at=self.at)
        return [] if call is None else [call, *self._job.queue(pipe)]

    def landed(self, replies: list[Any]) -> None:
        self.reply = int(replies[0]) if replies else None
        self._job.landed(replies[1:])

    def ended(self) -> bool:
        """Whether the run is over here (ended, or its lease taken over); after the commit."""
        if self.reply == 1:
            metrics.run_finished("done")
        elif self.reply == 0:
            log.info("run %s of thread %s was taken over; not ending it", self.rc.run.run_id,
                     self.rc.thread_id)
        return self.reply in (0, 1)

def end_run(rc: RunContext, nxt: Next) -> None:
    """Record how the run ended, tell the producer, then free the lease (once).

    A subgraph's run ends as its parent's call: see ``report_to_parent``.
    """
    spec = rc.graph.spec
    # as embedded: a subgraph stopped at a breakpoint leaves the pause to the root's stream
    if nxt.status == "interrupted" and (nxt.interrupts or rc.run.parent is None):
        for mode, payload in pause_events(spec, nxt.checkpoint, nxt.interrupts):
            rc.emit(mode, payload)
    if rc.run.parent is not None:
        report_to_parent(rc, nxt)
        return
    _close(rc.saver, rc.events, rc.run, rc.lease(), status=nxt.status, error=nxt.error, end={
        "output": spec.run_result(read_values(spec, nxt.checkpoint)),
        "interrupts": list(nxt.interrupts),
    }, next_nodes=_next_nodes(rc, nxt))

def report_to_parent(rc: RunContext, nxt: Next) -> None:
    """Record a subgraph run's end as its parent call's result and wake the caller.

    As embedded: its output is the call's value; its error, or its pause (its
    interrupts, none when it stopped at a breakpoint, as a ``GraphInterrupt``: the
    parent pauses too), are what the call raises when the calling task replays.
    """
    call = rc.run.parent
    assert call is not None
    error = nxt.error if nxt.status == "failed" else (
        GraphInterrupt(nxt.interrupts) if nxt.status == "interrupted" else None)
    spec = rc.graph.spec
    writes: list[Write] = [(RETURN, (call.name, spec.run_result(read_values(
        spec, nxt.checkpoint))))] if error is None else [(ERROR, {
            "call": call.name, "error": error, "run": rc.run.run_id})]
    config = replace(rc, run=call.run).config(call.checkpoint_id)
    try:
        wake = rc.saver.put_call_writes(config, writes, call.call_id, call.caller)
    except SerializationError:  # an error the store cannot keep is kept as its text
        if error is None or isinstance(error, GraphInterrupt):
            raise
        failure = {**writes[0][1], "error": error_as_text(error)}
        wake = rc.saver.put_call_writes(config, [(ERROR, failure)], call.call_id, call.caller)
    if wake is not None:
        rc.dispatcher.send_sealed(wake)

def _next_nodes(rc: RunContext, nxt: Next) -> tuple[str, ...]:
    """The nodes a thread that ends this way waits to run, as ``get_state().next``
    shows them: kept in its record so operators see them without the graph's code."""
    if nxt.status == "done":
        return ()
    saved = rc.saver.get_tuple(rc.config(nxt.checkpoint.id))
    if saved is None:  # exit durability keeps no step checkpoint: what it planned
        return tuple(t.name for t in nxt.tasks)
    return build_snapshot(rc.graph.spec, saved, rc.thread_id, "").next

def abort_run(saver: RedisSaver, events: RunEvents, job: Job, error: BaseException) -> None:
    """Fail a run whose jobs cannot run here at all (its graph cannot be loaded)."""
    lease = Lease(job.run.thread_id, job.owner, job.fence, 0)
    _close(saver, events, job.run, lease, status="failed", error=error,
           end={"output": None, "interrupts": []})

def _close(
    saver: RedisSaver, events: RunEvents, run: RunSpec, lease: Lease, *, status: str,
    error: BaseException | None, end: dict[str, Any], next_nodes: Sequence[str] | None = None,
) -> None:
    """Set the status while the lease is still held (so a recovering scheduler never
    sees a released lease on a thread that says ``running``), publish the end, release.
    A run whose lease was taken over is not ended here. One round trip on one Redis."""
    end, event = _end_event(events, run, status, error, end)
    closed = saver.close_run(lease, status, error, next_nodes, event)  # type: ignore[arg-type]
    if closed is None:  # Redis Cluster: step by step, the status while the lease is held
        try:
            saver.leases.renew(lease, 60)
        except FencingError:
            closed = False
        else:
            saver.set_status(run.thread_id, status, error,  # type: ignore[arg-type]
                             next_nodes=next_nodes)
            events.publish(run.thread_id, run.run_id, END, end)
            saver.leases.release(lease)
            closed = True
    if not closed:
        log.info("run %s of thread %s was taken over; not ending it", run.run_id,
                 run.thread_id)
        return
    metrics.run_finished(status)

def _end_event(
    events: RunEvents, run: RunSpec, status: str, error: BaseException | None,
    end: dict[str, Any],
) -> tuple[dict[str, Any], RunEnd]:
    """The end the producer gets (status, ``end``'s output and interrupts, the error),
    and its event, encoded."""
    end = {"status": status, **end, "error": error_record(error, with_object=True)}
    try:
        return end, events.encode(run.thread_id, run.run_id, END, end)
    except SerializationError:  # the error object cannot travel: its text can
        end["error"] = error_record(error, with_object=False)
        return end, events.encode(run.thread_id, run.run_id, END, end)

def error_record(error: BaseException | None, *, with_object: bool = True) -> Any:
    """The failure as the producer gets it: the error itself when it travels, and its
    type, message and traceback as text in any case."""
    if error is None:
        return None
    return {
        "error": error if with_object else None,
        "type": f"{type(error).__module__}.{type(error).__qualname__}",
        "message": str(error),
        "traceback": "".join(traceback.format_exception(error)),
    }
