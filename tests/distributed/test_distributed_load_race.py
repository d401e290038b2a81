"""A worker job of an ``async`` run must run once its checkpoint has landed, whenever
it lands: the interleaving below loses a fan-out run's next step.

With ``durability="async"`` the worker that ends a step enqueues the next step's
jobs before it commits their checkpoint, and each such job waits (``jobs._load``)
for that checkpoint. When its first read comes just before the commit and its read
of the thread's latest checkpoint just after, the job sees "a checkpoint of my step
is committed" and drops itself as if another worker had won the step, although the
committed checkpoint is its own. The run then never advances (observed with real
workers: about one fan-out run in a hundred hangs ``running`` at the join node).

This test replays that interleaving deterministically with a real RedisSaver: the
checkpoint is committed, and the job's first read of it is made to miss.
"""

from __future__ import annotations

import operator
import uuid
from collections.abc import Iterator, Mapping
from typing import Annotated, Any, TypedDict

import pytest

from durable_graph import END, START, RedisSaver, StateGraph
from durable_graph.worker.jobs import _load
from durable_graph.worker.runs import Job, RunContext, RunSpec
from durable_graph.worker.shipping import GraphRef

pytestmark = pytest.mark.redis


class State(TypedDict, total=False):
    log: Annotated[list[str], operator.add]


def _graph(saver: RedisSaver) -> Any:
    b = StateGraph(State)
    b.add_node("one", lambda state: {"log": ["one"]})
    b.add_node("two", lambda state: {"log": ["two"]})
    b.add_edge(START, "one")
    b.add_edge("one", "two")
    b.add_edge("two", END)
    return b.compile(checkpointer=saver)


class FirstReadMisses:
    """The saver as the waiting job sees it: its first read of the checkpoint by id
    happened before the async commit landed."""

    def __init__(self, saver: RedisSaver) -> None:
        self.saver = saver
        self.missed = 0

    def get_tuple(self, config: Mapping[str, Any]) -> Any:
        if config["configurable"].get("checkpoint_id") and not self.missed:
            self.missed += 1
            return None
        return self.saver.get_tuple(config)


@pytest.fixture
def saver(redis_url: str, redis_prefix: str) -> Iterator[RedisSaver]:
    found = RedisSaver.from_url(redis_url, prefix=redis_prefix)
    yield found
    found.close()


def test_async_job_runs_when_its_checkpoint_lands_between_its_reads(saver: RedisSaver) -> None:
    thread_id = f"race-{uuid.uuid4().hex[:8]}"
    graph = _graph(saver)
    config = {"configurable": {"thread_id": thread_id}}
    # stop before "two": the latest checkpoint is the one step "two"'s job waits for
    graph.invoke({"log": []}, config, durability="sync", interrupt_before=["two"])
    latest = saver.get_tuple(config)
    assert latest is not None
    step = int(latest.metadata["step"]) + 1

    run = RunSpec(
        run_id=uuid.uuid4().hex, thread_id=thread_id, graph=GraphRef(), config=config,
        durability="async", interrupt_before=(), interrupt_after=(), recursion_limit=25,
        stop_step=0, modes=(), start_checkpoint="", prefix=saver.prefix,
    )
    late = FirstReadMisses(saver)
    rc = RunContext(run, graph, late, None, None, "owner", 0)  # type: ignore[arg-type]
    job = Job("task", run, "owner", 0, checkpoint_id=latest.checkpoint.id, step=step,
              task_id="two-task")

    loaded = _load(rc, job)

    assert late.missed == 1  # the interleaving happened
    assert loaded is not None, "the job dropped itself although its checkpoint is committed"
    assert loaded.checkpoint.id == latest.checkpoint.id


def test_a_job_for_a_task_the_graph_does_not_plan_fails_the_run(saver: RedisSaver) -> None:
    """A worker whose graph differs from the producer's fails the run once, clearly,
    instead of failing the job (which the scheduler would recover again and again)."""
    from durable_graph.store.codec import SignedSerializer, SigningCodec
    from durable_graph.store.serde import TypedSerializer
    from durable_graph.worker.events import END, RunEvents
    from durable_graph.worker.jobs import LeaseKeeper, handle

    thread_id = f"drift-{uuid.uuid4().hex[:8]}"
    graph = _graph(saver)
    config = {"configurable": {"thread_id": thread_id}}
    graph.invoke({"log": []}, config, durability="sync", interrupt_before=["two"])
    latest = saver.get_tuple(config)
    assert latest is not None
    lease = saver.leases.acquire(thread_id, "owner", 5)
    assert lease is not None
    run = RunSpec(
        run_id=uuid.uuid4().hex, thread_id=thread_id, graph=GraphRef(), config=config,
        durability="sync", interrupt_before=(), interrupt_after=(), recursion_limit=25,
        stop_step=0, modes=(), start_checkpoint="", prefix=saver.prefix,
    )
    serde = SignedSerializer(TypedSerializer(), SigningCodec.from_secret("drift-test-secret"))
    events = RunEvents(saver.conn, saver.prefix, serde)
    rc = RunContext(run, graph, saver, events, None, "owner", lease.generation)  # type: ignore[arg-type]
    job = Job("task", run, "owner", lease.generation, checkpoint_id=latest.checkpoint.id,
              step=int(latest.metadata["step"]) + 1, task_id="not-a-planned-task")

    handle(rc, job, LeaseKeeper(lambda _prefix: saver, 5.0))

    record = saver.get_status(thread_id)
    assert record is not None and record["status"] == "failed"
    assert record["error_type"].endswith("NondeterminismError")
    [(_, mode, end)] = list(events.read(thread_id, run.run_id, "0", 100))
    assert mode == END and end["status"] == "failed"
    assert "not planned" in end["error"]["message"]
    assert saver.leases.acquire(thread_id, "someone-else", 5) is not None  # lease released
