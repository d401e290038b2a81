"""A producer starting a run on a thread whose previous run just ended (real Redis, no
worker needed): the ending run tells its producer before it frees the thread's lease,
so the next run waits for that lease instead of failing; a running thread still refuses."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from typing import Any, TypedDict

import pytest

from durable_graph import END, START, RedisSaver, StateGraph
from durable_graph.errors import DispatchError, FencingError
from durable_graph.scheduler.executor import RunRequest
from durable_graph.store.base import Checkpoint, new_checkpoint_id
from durable_graph.store.redis.jobbook import JobBook, pipelined
from durable_graph.store.redis.keys import ThreadKeys, jobs_of
from durable_graph.store.redis.saver import Prior
from durable_graph.worker import CeleryExecutor, create_app
from durable_graph.worker.app import CeleryDispatcher
from durable_graph.worker.events import END as END_EVENT
from durable_graph.worker.events import RunEvents

pytestmark = pytest.mark.redis


class S(TypedDict):
    x: int


@pytest.fixture
def graph(redis_url: str, redis_prefix: str) -> Iterator[Any]:
    app = create_app(redis_url, prefix=redis_prefix, queue=f"{redis_prefix}.q",
                     secret_key="producer-lease-test-secret")
    b = StateGraph(S)
    b.add_node("n", lambda s: {"x": s["x"] + 1})
    b.add_edge(START, "n")
    b.add_edge("n", END)
    with RedisSaver.from_url(redis_url, prefix=redis_prefix) as saver:
        yield b.compile(checkpointer=saver, executor=CeleryExecutor(app))


def test_a_run_waits_for_the_lease_of_a_run_that_just_ended(graph: Any) -> None:
    saver = graph.saver
    ending = saver.leases.acquire("t", "run:before", 30)
    saver.set_status("t", "interrupted")  # told its producer, lease not freed yet
    threading.Timer(0.3, saver.leases.release, args=(ending,)).start()
    handle = graph.submit({"x": 1}, {"configurable": {"thread_id": "t"}})
    assert handle.status() == "running"
    assert saver.leases.generation("t") == ending.generation + 1


def test_a_running_thread_refuses_a_second_run_at_once(graph: Any) -> None:
    graph.saver.leases.acquire("busy", "run:other", 30)
    graph.saver.set_status("busy", "running")
    with pytest.raises(DispatchError, match="running on the workers already"):
        graph.submit({"x": 1}, {"configurable": {"thread_id": "busy"}})


def test_a_run_ends_in_one_fenced_step(graph: Any) -> None:
    """The end (status, index, end event, lease freed) happens whole, and only while
    the run still holds the lease: a run whose thread was taken over ends nothing."""
    saver = graph.saver
    events = RunEvents(saver.conn, saver.prefix, saver.serde)
    stale = saver.leases.acquire("gone", "run:old", 30)
    current = saver.leases.revoke("gone", "run:new", 30)
    end = events.encode("gone", "r0", END_EVENT, {"status": "done"})
    assert saver.close_run(stale, "done", None, None, end) is False
    assert saver.get_status("gone") is None and "gone" not in saver.list_threads("done")
    assert list(events.read("gone", "r0", block_ms=10)) == []
    assert saver.leases.acquire("gone", "run:third", 30) is None  # still run:new's
    assert current.owner == "run:new"

    lease = saver.leases.acquire("t", "run:r1", 30)
    end = events.encode("t", "r1", END_EVENT, {"status": "failed", "why": "boom"})
    assert saver.close_run(lease, "failed", ValueError("boom"), ["n"], end) is True
    record = saver.get_status("t")
    assert record is not None and record["status"] == "failed"
    assert saver.list_threads("failed") == ["t"] and saver.list_threads("running") == []
    ((_, mode, payload),) = list(events.read("t", "r1", block_ms=10))
    assert (mode, payload) == (END_EVENT, {"status": "failed", "why": "boom"})
    assert saver.leases.acquire("t", "run:r2", 30) is not None  # freed


def test_an_end_sent_with_a_commit_ends_the_run_only_if_that_commit_landed(
    graph: Any,
) -> None:
    """``queue_close_run(at=...)``: the end that rides on the commit of the run's last
    checkpoint changes nothing when the thread's newest checkpoint is another one."""
    saver = graph.saver
    events = RunEvents(saver.conn, saver.prefix, saver.serde)
    for x in (1, 2):  # the thread's checkpoints
        cp = Checkpoint(new_checkpoint_id(), "2026-01-01T00:00:00+00:00", {"x": x}, {"x": x},
                        {})
        saver.put({"configurable": {"thread_id": "ends", "checkpoint_ns": ""}}, cp,
                  {"step": x}, {"x": x})
    newest = saver.get_tuple({"configurable": {"thread_id": "ends"}})
    assert newest is not None and newest.checkpoint.id == cp.id
    saver.set_status("ends", "running")
    lease = saver.leases.acquire("ends", "run:r1", 30)
    assert lease is not None
    end = events.encode("ends", "r1", END_EVENT, {"status": "done"})

    def close(at: str) -> Any:
        return pipelined(saver.conn, "end run", lambda p: [
            saver.queue_close_run(p, lease, "done", (), end, at=at)])[0]

    assert close("not-the-newest") == -1  # as if its commit had been refused
    record = saver.get_status("ends")
    assert record is not None and record["status"] == "running"
    assert list(events.read("ends", "r1", block_ms=10)) == []
    assert saver.leases.acquire("ends", "run:r2", 30) is None  # still held

    assert close(newest.checkpoint.id) == 1
    record = saver.get_status("ends")
    assert record is not None and record["status"] == "done"
    ((_, mode, payload),) = list(events.read("ends", "r1", block_ms=10))
    assert (mode, payload) == (END_EVENT, {"status": "done"})
    assert saver.leases.acquire("ends", "run:r2", 30) is not None  # freed


def _writes(saver: Any, monkeypatch: Any) -> list[str]:
    """The store actions (scripts and pipelines) the saver's connection runs from now on."""
    seen: list[str] = []
    conn = saver.conn
    for name in ("run", "run_many", "call"):
        real = getattr(conn, name)

        def spy(*a: Any, _real: Any = real, _name: str = name, **k: Any) -> Any:
            seen.append(a[0] if _name == "call" else a[-1])
            return _real(*a, **k)
        monkeypatch.setattr(conn, name, spy)
    return seen


def test_the_input_checkpoint_is_stored_in_the_round_trip_of_the_first_commit(
    graph: Any, monkeypatch: Any,
) -> None:
    """The producer holds the run's record and the input's checkpoint back and sends
    them just before the commit of the step that applies it: one round trip."""
    actions = _writes(graph.saver, monkeypatch)
    handle = graph.submit({"x": 1}, {"configurable": {"thread_id": "folded"}})
    assert actions[-2:] == ["acquire lease", "store run and input, commit checkpoint"]
    assert graph.saver.get_status("folded")["status"] == "running"
    assert graph.saver.list_threads("running") == ["folded"]
    assert graph.saver.get_run("folded") is not None and handle.status() == "running"
    history = list(graph.saver.list({"configurable": {"thread_id": "folded"}}))
    assert [h.metadata["source"] for h in history] == ["loop", "input"]
    assert history[0].parent_config is not None
    assert history[0].parent_config["configurable"]["checkpoint_id"] == \
        history[1].checkpoint.id
    assert history[0].checkpoint.channel_values["x"] == 1


def _cp(x: int, after: str = "") -> Checkpoint:
    return Checkpoint(new_checkpoint_id(after=after or None), "2026-01-01T00:00:00+00:00",
                      {"x": x}, {"x": x}, {})


def test_a_refused_prior_put_commits_nothing_and_raises_as_put_does(graph: Any) -> None:
    """A held input whose fence went stale is refused, and so is the commit after it."""
    saver = graph.saver
    lease = saver.leases.acquire("stale", "run:old", 30)
    saver.leases.revoke("stale", "run:new", 30)
    conf = {"configurable": {"thread_id": "stale", "checkpoint_ns": "",
                             "fence": lease.generation}}
    first = _cp(1)
    prior = Prior((conf, first, {"source": "input", "step": -1}, {"x": 1}))
    step0 = {"configurable": {**conf["configurable"], "checkpoint_id": first.id}}
    with pytest.raises(FencingError):
        saver.commit_step(step0, _cp(2, first.id), {"source": "loop", "step": 0}, {"x": 2},
                          expect_latest=first.id, prior=prior)
    assert list(saver.list({"configurable": {"thread_id": "stale"}})) == []


def test_a_prior_put_missing_a_value_is_sent_again_whole_then_the_commit(
    graph: Any, monkeypatch: Any,
) -> None:
    """A held input that names an unchanged value the store lacks is refused as
    'missing': the put and the commit are then sent one after the other and land."""
    saver = graph.saver
    actions = _writes(saver, monkeypatch)
    conf = {"configurable": {"thread_id": "missing", "checkpoint_ns": ""}}
    first = _cp(1)
    prior = Prior((conf, first, {"source": "input", "step": -1}, {}))  # x "unchanged"
    step0 = {"configurable": {**conf["configurable"], "checkpoint_id": first.id}}
    second = Checkpoint(new_checkpoint_id(after=first.id), first.ts, {"x": 1, "y": 2},
                        {"x": 1, "y": 2}, {})
    saver.commit_step(step0, second, {"source": "loop", "step": 0}, {"y": 2},
                      expect_latest=first.id, prior=prior)
    assert actions == ["store run and input, commit checkpoint", "commit checkpoint",
                       "commit checkpoint", "commit checkpoint"]  # prior x2, then the commit
    history = list(saver.list({"configurable": {"thread_id": "missing"}}))
    assert [h.checkpoint.id for h in history] == [second.id, first.id]
    assert history[0].checkpoint.channel_values == {"x": 1, "y": 2}


def _owed(saver: Any, thread_id: str) -> dict[str, str]:
    """Job key -> signed message of the jobs the thread owes, due (sent, unclaimed)."""
    keys = jobs_of(saver.prefix, thread_id)
    owed = {k.decode(): m.decode() for k, m in saver.client.hgetall(keys.owed).items()}
    due = {k.decode() for k in saver.client.zrange(keys.due, 0, -1)}
    assert set(owed) == due
    return owed


def _queued(saver: Any, queue: str) -> list[list[str]]:
    """The job messages waiting on the (Redis broker's) queue, as the dispatcher seals
    them: the task's arguments, then its run, prefix and job key."""
    bodies = [json.loads(base64.b64decode(json.loads(raw)["body"]))
              for raw in saver.client.lrange(queue, 0, -1)]
    return [[*args, kwargs["run"], kwargs["prefix"], kwargs["key"]]
            for args, kwargs, _ in bodies]


def test_the_first_job_is_sent_in_the_round_trip_of_the_first_commit(
    graph: Any, redis_prefix: str, monkeypatch: Any,
) -> None:
    """A chain's first job rides the MULTI of the input's commit: registered (owed and
    due from then on) and, the broker being the store's Redis, pushed to the queue;
    neither a registration nor a publish of its own follows. (With ``async`` durability
    it is registered and published after the commit, as every job.)"""
    def separately(*_: Any, **__: Any) -> Any:
        raise AssertionError("sent on its own")

    monkeypatch.setattr(JobBook, "register_sent", separately)
    monkeypatch.setattr(CeleryDispatcher, "_publish", separately)
    actions = _writes(graph.saver, monkeypatch)
    graph.submit({"x": 1}, {"configurable": {"thread_id": "rides"}}, durability="sync")
    assert actions[-2:] == ["acquire lease", "store run and input, commit checkpoint"]
    ((key, message),) = _owed(graph.saver, "rides").items()
    (sent,) = _queued(graph.saver, f"{redis_prefix}.q")
    assert json.loads(message) == sent and sent[6] == key and sent[2] == "task"
    newest = graph.saver.get_tuple({"configurable": {"thread_id": "rides"}})
    assert newest is not None and newest.metadata["source"] == "loop"


def test_on_another_broker_the_first_job_is_registered_with_the_commit_then_published(
    redis_url: str, redis_prefix: str, rabbitmq: Any, monkeypatch: Any,
) -> None:
    """On RabbitMQ the job is registered in the commit's MULTI, then published."""
    queue = f"{redis_prefix}.amqp"
    app = create_app(redis_url, broker_url=rabbitmq.url, prefix=redis_prefix, queue=queue,
                     secret_key="producer-lease-test-secret")
    b = StateGraph(S)
    b.add_node("n", lambda s: {"x": s["x"] + 1})
    b.add_edge(START, "n")
    b.add_edge("n", END)

    def separately(*_: Any, **__: Any) -> Any:
        raise AssertionError("registered on its own")

    monkeypatch.setattr(JobBook, "register_sent", separately)
    try:
        with RedisSaver.from_url(redis_url, prefix=redis_prefix) as saver:
            executor = CeleryExecutor(app)
            graph = b.compile(checkpointer=saver, executor=executor)
            graph.submit({"x": 1}, {"configurable": {"thread_id": "amqp"}}, durability="sync")
            assert len(_owed(saver, "amqp")) == 1
            executor._dispatcher.flush()  # what a wait on the run does first (unconfirmed)
        with app.connection_for_write() as conn:
            assert conn.default_channel.queue_declare(queue, passive=True).message_count == 1
    finally:
        rabbitmq.delete_queues(queue)


def test_a_refused_first_commit_ends_the_job_sent_with_it(
    graph: Any, redis_prefix: str, monkeypatch: Any,
) -> None:
    """A lease taken over between the producer's lease and its commit: the commit is
    fenced out (the submit raises), so the job sent with it is owed no more; its message,
    pushed in the same MULTI, is dropped by its claim."""
    saver = graph.saver
    real = saver.commit_step

    def taken_over(*a: Any, **k: Any) -> Any:
        saver.leases.revoke("lost", "run:other", 30)
        return real(*a, **k)

    monkeypatch.setattr(saver, "commit_step", taken_over)
    with pytest.raises(FencingError):
        graph.submit({"x": 1}, {"configurable": {"thread_id": "lost"}}, durability="sync")
    assert _owed(saver, "lost") == {}
    (sent,) = _queued(saver, f"{redis_prefix}.q")
    assert JobBook(saver.conn, saver.prefix).claim(sent[6], "lost", "w") == ("gone", "")
    assert [h.metadata["source"] for h in saver.list(
        {"configurable": {"thread_id": "lost"}})] == []  # the input went with it


def test_a_run_streaming_its_steps_events_publishes_its_first_job_after_them(
    graph: Any, redis_prefix: str, monkeypatch: Any,
) -> None:
    """The producer publishes the input step's values and checkpoint after its commit;
    the first job is registered with that commit but pushed to the queue only after
    them, or its worker's events could reach the stream first."""
    order: list[str] = []
    emit = RunEvents.publish

    def noted(self: Any, thread_id: str, run_id: str, mode: str, payload: Any) -> Any:
        order.append(mode)
        return emit(self, thread_id, run_id, mode, payload)

    publish = CeleryDispatcher._publish

    def published(self: Any, *a: Any, **k: Any) -> Any:
        order.append("publish")
        return publish(self, *a, **k)

    monkeypatch.setattr(RunEvents, "publish", noted)
    monkeypatch.setattr(CeleryDispatcher, "_publish", published)
    request = RunRequest("sync", None, None, frozenset({"values", "checkpoints"}))
    graph._remote().start_run(graph, {"x": 1}, {"configurable": {"thread_id": "streams"}},
                              request)  # what ``stream`` starts, without reading it
    assert order[-3:] == ["values", "checkpoints", "publish"]
    assert len(_owed(graph.saver, "streams")) == 1
    assert len(_queued(graph.saver, f"{redis_prefix}.q")) == 1


def test_a_producer_takes_the_lease_and_watches_its_thread_in_one_script(
    graph: Any, redis_prefix: str, monkeypatch: Any,
) -> None:
    """``acquire_reading(watch_idle=True)`` on one Redis: one script (``ACQUIRE_WATCHED``)
    takes the lease as ``ACQUIRE`` does and watches the thread as ``ARM_IDLE`` does
    (only while it owes no job), the read riding the same round trip."""
    saver = graph.saver
    leases, conn = saver.leases, saver.conn
    names: list[str] = []
    real_script = conn.script

    def script(name: str) -> Any:
        names.append(name)
        return real_script(name)

    monkeypatch.setattr(conn, "script", script)
    idle = jobs_of(redis_prefix, "watched").idle
    client = saver.client
    now_ms = int(client.time()[0]) * 1000
    lease, early = leases.acquire_reading("watched", "p1", 30.0, watch_idle=True,
                                          also=lambda p: p.time())
    assert names == ["ACQUIRE_WATCHED"] and early is not None
    assert lease is not None and (lease.owner, lease.generation) == ("p1", 1)
    assert now_ms + 29_000 <= lease.expires_at_ms <= now_ms + 31_000
    assert abs(client.zscore(idle, "watched") - lease.expires_at_ms) <= 1
    # another owner: refused, nothing of the lease changes
    assert leases.acquire_reading("watched", "p2", 30.0, watch_idle=True)[0] is None
    assert leases.generation("watched") == 1
    # the same owner again: the same generation, extended
    again = leases.acquire("watched", "p1", 60.0, watch_idle=True)
    assert again is not None and again.generation == 1
    assert again.expires_at_ms >= lease.expires_at_ms + 29_000
    # a thread that owes a job is no longer watched
    JobBook(saver.conn, redis_prefix).register_sent([("job-1", "watched", "{}")])()
    assert leases.acquire("watched", "p1", 30.0, watch_idle=True) is not None
    assert client.zscore(idle, "watched") is None
    # expired, then taken by another owner: a generation up
    client.hset(ThreadKeys(redis_prefix, "watched").lease, "expires", 0)
    taken = leases.acquire("watched", "p2", 30.0, watch_idle=True)
    assert taken is not None and (taken.owner, taken.generation) == ("p2", 2)
