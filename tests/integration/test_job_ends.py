"""A job's end rides a round trip the job makes anyway: a chain run records no end apart.

Every job of a 3-step run runs here, in this process, as a worker's pool process runs
it (the ``durable_graph.job`` task's body, messages captured as they are sent): the
first job is published, the next two are adopted (eager continuation), and each job's
end lands with its commit: after the adoption of its successor (``sync``: in the
commit's round trip; ``async``: adopted before the commit) or, ``sync``, with the run's
close. So the worker's background ender records none (``async``: the last job's, whose
run closes in a round trip after its commit).
"""

from __future__ import annotations

import operator
import time
import uuid
from collections.abc import Iterator
from typing import Annotated, Any, TypedDict

import pytest
import redis
from celery import Celery
from kept_sends import kept_sends

from durable_graph import END, START, StateGraph
from durable_graph.store.redis import RedisSaver
from durable_graph.worker import CeleryExecutor, create_app
from durable_graph.worker.app import JOB_TASK, WorkerRuntime

pytestmark = pytest.mark.redis
SECRET = "job-ends-test-secret-0123456789"


class Chain(TypedDict):
    items: Annotated[list[str], operator.add]


@pytest.fixture
def app(redis_url: str, redis_prefix: str) -> Iterator[Celery]:
    queue = f"{redis_prefix}-queue"
    yield create_app(redis_url, prefix=redis_prefix, queue=queue, secret_key=SECRET)
    redis.Redis.from_url(redis_url).delete(queue)


def _chain(app: Celery, redis_url: str, prefix: str) -> Any:
    graph = StateGraph(Chain).add_sequence(
        [(name, lambda state, name=name: {"items": [name]}) for name in ("a", "b", "c")])
    graph.add_edge(START, "a")
    graph.add_edge("c", END)
    return graph.compile(checkpointer=RedisSaver.from_url(redis_url, prefix=prefix),
                         executor=CeleryExecutor(app))


@pytest.mark.parametrize(("durability", "apart"), [("sync", []), ("async", ["c"])])
def test_a_chain_run_ends_its_jobs_with_its_commits(
    app: Celery, redis_url: str, redis_prefix: str, monkeypatch: pytest.MonkeyPatch,
    durability: str, apart: list[str],
) -> None:
    liveness = WorkerRuntime.of(app).liveness
    ended: list[str] = []  # the jobs whose end the worker records after them
    end = liveness.end_later
    monkeypatch.setattr(liveness, "end_later", lambda job: (ended.append(job.name), end(job)))
    sent = kept_sends(monkeypatch)
    chain = _chain(app, redis_url, redis_prefix)
    handle = chain.submit({"items": []}, {"configurable": {"thread_id": uuid.uuid4().hex}},
                          durability=durability)
    job = app.tasks[JOB_TASK]
    ran = 0
    while sent:
        args, kwargs = sent.popleft()
        assert job(*args, **kwargs) == "ok"
        ran += 1
    assert ran == 1  # the two later steps ran inline, adopted
    assert handle.result(timeout=10) == {"items": ["a", "b", "c"]}
    assert ended == apart
    book = WorkerRuntime.of(app).dispatcher.books(redis_prefix)
    deadline = time.monotonic() + 5
    while book.claims() and time.monotonic() < deadline:  # an end recorded apart lands
        time.sleep(0.01)
    assert book.claims() == []  # every job ended
    assert not book.owes(handle.thread_id)


def test_a_job_adopted_with_a_commit_starts_from_its_adopters_plan_and_reads_nothing(
    app: Celery, redis_url: str, redis_prefix: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Only the published job reads its checkpoint (with its claim); each adopted job
    runs against the checkpoint its adopter just committed, as committed, and its
    commit plans the list channel's delta from the depth that commit stored: no
    checkpoint read, no depth read. The run's values are those of a run that reads."""
    from durable_graph.store.redis.connection import RedisConn

    reads: list[str] = []
    for name in ("get_tuple", "queue_get_tuple"):
        real = getattr(RedisSaver, name)
        monkeypatch.setattr(RedisSaver, name, lambda self, *a, _r=real, _n=name, **k: (
            reads.append(_n), _r(self, *a, **k))[1])
    call = RedisConn.call
    monkeypatch.setattr(RedisConn, "call", lambda self, action, *a, **k: (
        reads.append(action) if "depth" in action else None, call(self, action, *a, **k))[1])
    sent = kept_sends(monkeypatch)
    chain = _chain(app, redis_url, redis_prefix)
    config = {"configurable": {"thread_id": uuid.uuid4().hex}}
    handle = chain.submit({"items": []}, config, durability="sync")
    reads.clear()  # the producer's
    job = app.tasks[JOB_TASK]
    while sent:
        args, kwargs = sent.popleft()
        assert job(*args, **kwargs) == "ok"
    assert reads == ["queue_get_tuple"]  # the first job's, with its claim
    assert handle.result(timeout=10) == {"items": ["a", "b", "c"]}
    saved = chain.saver.get_tuple(config)
    assert saved is not None and saved.checkpoint.channel_values["items"] == ["a", "b", "c"]
