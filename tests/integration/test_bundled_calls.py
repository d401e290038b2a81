"""``@task`` calls travel in bundles: one message, each call still a job of its own.

Every job runs here, in this process, as a worker's pool process runs it (the
``durable_graph.job`` task's body, messages captured as they are sent). Each call
body counts its runs in Redis, so the tests see what a redelivered bundle runs again.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any, TypedDict

import pytest
import redis
from celery import Celery
from kept_sends import kept_sends

from durable_graph import END, START, StateGraph, task
from durable_graph.errors import CheckpointStoreError
from durable_graph.store.base import RETURN
from durable_graph.store.redis import RedisSaver
from durable_graph.store.redis.jobbook import jobs_of
from durable_graph.worker import CeleryExecutor, create_app
from durable_graph.worker import held as held_module
from durable_graph.worker.app import JOB_TASK, WorkerRuntime
from durable_graph.worker.liveness import note_lost

pytestmark = pytest.mark.redis
SECRET = "bundles-test-secret-0123456789ab"


class Fan(TypedDict, total=False):
    n: int
    url: str
    counter: str
    results: list[int]


@task
def counted(url: str, counter: str, i: int) -> int:
    redis.Redis.from_url(url).hincrby(counter, str(i), 1)
    return i * 10


def fan(state: Fan) -> dict[str, Any]:
    futures = [counted(state["url"], state["counter"], i) for i in range(state["n"])]
    return {"results": [f.result() for f in futures]}


@pytest.fixture
def app(redis_url: str, redis_prefix: str) -> Iterator[Celery]:
    queue = f"{redis_prefix}-bundle-queue"
    yield create_app(redis_url, prefix=redis_prefix, queue=queue, secret_key=SECRET)
    redis.Redis.from_url(redis_url).delete(queue)


def _graph(app: Celery, redis_url: str, prefix: str, node: Any = fan) -> Any:
    graph = StateGraph(Fan)
    graph.add_node("fan", node)
    graph.add_edge(START, "fan")
    graph.add_edge("fan", END)
    return graph.compile(checkpointer=RedisSaver.from_url(redis_url, prefix=prefix),
                         executor=CeleryExecutor(app))


def _start(app: Celery, redis_url: str, prefix: str, n: int) -> tuple[Any, dict[str, Any], str]:
    counter = f"{prefix}:bundle-runs"
    handle = _graph(app, redis_url, prefix).submit(
        {"n": n, "url": redis_url, "counter": counter},
        {"configurable": {"thread_id": f"bundle-{uuid.uuid4().hex}"}})
    return handle, {"n": n, "url": redis_url, "counter": counter}, counter


def _runs(redis_url: str, counter: str, n: int) -> list[int]:
    found = redis.Redis.from_url(redis_url).hgetall(counter)
    return [int(found.get(str(i).encode(), 0)) for i in range(n)]


def test_calls_travel_in_bundles_and_a_redelivered_bundle_runs_none_again(
    app: Celery, redis_url: str, redis_prefix: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent = kept_sends(monkeypatch)
    handle, _, counter = _start(app, redis_url, redis_prefix, 40)
    job = app.tasks[JOB_TASK]
    kinds: list[str] = []
    bundles: list[tuple[Any, Any]] = []
    while sent:
        args, kwargs = sent.popleft()
        kinds.append(args[2])
        if args[2] == "bundle":
            bundles.append((args, kwargs))
        assert set(job(*args, **kwargs).split()) == {"ok"}
    # 32 calls sent early (4 bundles of 8), the other 8 when the node suspended (4 of 2)
    assert sorted(len(a[3]) for a, _ in bundles) == [2] * 4 + [8] * 4
    assert kinds.count("call") == 0
    assert handle.result(timeout=10)["results"] == [i * 10 for i in range(40)]
    assert _runs(redis_url, counter, 40) == [1] * 40
    # Celery delivers a bundle again (its worker died before the ack): nothing runs twice
    args, kwargs = bundles[0]
    assert job(*args, **kwargs).split() == ["dropped"] * 8
    assert _runs(redis_url, counter, 40) == [1] * 40


def test_a_bundle_delivered_again_mid_way_runs_only_the_calls_that_did_not_finish(
    app: Celery, redis_url: str, redis_prefix: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """As after a SIGKILL half-way: the calls a bundle finished are not run again, the
    rest run once; each call was sent alone too (as the owed job a sweep resends)."""
    sent = kept_sends(monkeypatch)
    handle, _, counter = _start(app, redis_url, redis_prefix, 8)
    job = app.tasks[JOB_TASK]
    args, kwargs = sent.popleft()  # the node's job: it starts 8 calls, in 4 bundles of 2
    job(*args, **kwargs)
    first, rest = sent.popleft(), list(sent)
    sent.clear()
    assert first[0][2] == "bundle" and len(first[0][3]) == 2
    half = [first[0][0], "", "bundle", first[0][3][:1], *first[0][4:]]
    assert job(*half, **first[1]) == "ok"  # its first call only, as if killed after it
    assert job(*first[0], **first[1]).split() == ["dropped", "ok"]
    for args, kwargs in rest:
        job(*args, **kwargs)
    while sent:  # the node's replay
        args, kwargs = sent.popleft()
        job(*args, **kwargs)
    assert handle.result(timeout=10)["results"] == [i * 10 for i in range(8)]
    assert _runs(redis_url, counter, 8) == [1] * 8


def test_a_lone_call_message_still_runs(
    app: Celery, redis_url: str, redis_prefix: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A node's lone call goes alone, in the message format of before bundles (the one a
    message sent before an upgrade has), and runs."""
    sent = kept_sends(monkeypatch)
    handle, _, counter = _start(app, redis_url, redis_prefix, 1)
    job = app.tasks[JOB_TASK]
    kinds = []
    while sent:
        args, kwargs = sent.popleft()
        kinds.append(args[2])
        assert job(*args, **kwargs) == "ok"
    assert kinds == ["task", "call", "task"]
    assert handle.result(timeout=10)["results"] == [0]


@pytest.mark.parametrize("payload", [
    "not a list", [], [["a", "call", "sealed"]], [["a", "bundle", "sealed", "k"]], [[1, 2, 3, 4]],
])
def test_a_malformed_bundle_is_refused(app: Celery, payload: Any) -> None:
    job = app.tasks[JOB_TASK]
    assert job("thread", "", "bundle", payload, run="r", prefix="p") == "refused"


def test_a_pool_process_dying_in_a_bundle_is_declared_dead_with_the_cause_on_each_call_it_held(
    app: Celery, redis_url: str, redis_prefix: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``note_lost`` of a bundle's message finds which of its calls the dead process held."""
    sent = kept_sends(monkeypatch)
    _start(app, redis_url, redis_prefix, 8)
    job = app.tasks[JOB_TASK]
    args, kwargs = sent.popleft()
    job(*args, **kwargs)
    bundle_args, bundle_kwargs = sent.popleft()
    thread_id, items = bundle_args[0], bundle_args[3]
    books = WorkerRuntime.books_of(app)
    book = books(redis_prefix)
    dead = f"{socket.gethostname()}:4242:abcdef01"
    book.heartbeat(dead, 60)
    held = [item[3] for item in items]  # claimed together: the dead process holds both
    for key in held:
        assert book.claim(key, thread_id, dead) == ("ok", "")

    class Request:
        worker_pid = 4242

    request = Request()
    request.args, request.kwargs = bundle_args, bundle_kwargs  # type: ignore[attr-defined]
    note_lost(books, request, RuntimeError("Worker exited prematurely: signal 9 (SIGKILL)"))
    assert book.view(f"{redis_prefix}-bundle-queue", 0).dead == [dead]
    # each call it held keeps the cause, for the error of whichever fails at max deaths
    taken = [book.reclaim(jobs_of(redis_prefix, thread_id), key, dead, 1) for key in held]
    assert [(t.action, "SIGKILL" in t.why) for t in taken if t] == [("fail", True)] * 2


def test_a_bundle_stopped_by_a_store_error_gives_back_the_calls_it_did_not_run(
    app: Celery, redis_url: str, redis_prefix: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its calls were claimed together; those after the failed one are released, so the
    bundle's retry (on any process) runs them."""
    sent = kept_sends(monkeypatch)
    handle, _, counter = _start(app, redis_url, redis_prefix, 32)
    job = app.tasks[JOB_TASK]
    args, kwargs = sent.popleft()
    job(*args, **kwargs)  # the node: 32 calls, 4 bundles of 8
    bundle = sent.popleft()
    runtime = WorkerRuntime.of(app)
    real, ran = runtime._run, []

    def failing_second(job: Any, **kw: Any) -> str:
        ran.append(job.task_id)
        if len(ran) == 2:
            raise CheckpointStoreError("the store went away (test)")
        return real(job, **kw)

    monkeypatch.setattr(runtime, "_run", failing_second)
    with pytest.raises(CheckpointStoreError):
        job(*bundle[0], **bundle[1])
    book = runtime.dispatcher.books(redis_prefix)
    assert book.claims() == []  # the first ended with its result, the others given back
    monkeypatch.setattr(runtime, "_run", real)
    assert job(*bundle[0], **bundle[1]).split() == ["dropped"] + ["ok"] * 7
    while sent:
        args, kwargs = sent.popleft()
        job(*args, **kwargs)
    assert handle.result(timeout=10)["results"] == [i * 10 for i in range(32)]
    assert _runs(redis_url, counter, 32) == [1] * 32


@pytest.mark.parametrize(("hold_for", "landed"), [
    (60.0, [8, 8, 8, 8, 2, 2, 2, 2]), (0.0, [1] * 40)])
def test_a_bundle_lands_the_results_it_holds_together(
    app: Celery, redis_url: str, redis_prefix: str, monkeypatch: pytest.MonkeyPatch,
    hold_for: float, landed: list[int],
) -> None:
    """Results held no longer than ``HOLD_FOR`` land in one round trip per bundle; held for
    no time, each lands before the bundle starts its next call."""
    monkeypatch.setattr(held_module, "HOLD_FOR", hold_for)
    batches: list[int] = []
    land = RedisSaver.land_call_writes
    monkeypatch.setattr(RedisSaver, "land_call_writes",
                        lambda self, calls: (batches.append(len(calls)), land(self, calls))[1])
    sent = kept_sends(monkeypatch)
    handle, _, counter = _start(app, redis_url, redis_prefix, 40)
    job = app.tasks[JOB_TASK]
    while sent:
        args, kwargs = sent.popleft()
        job(*args, **kwargs)
    assert handle.result(timeout=10)["results"] == [i * 10 for i in range(40)]
    assert batches == landed
    assert _runs(redis_url, counter, 40) == [1] * 40
    book = WorkerRuntime.of(app).dispatcher.books(redis_prefix)
    deadline = time.monotonic() + 5
    while book.claims() and time.monotonic() < deadline:  # an end recorded apart lands
        time.sleep(0.01)
    assert book.claims() == []  # every job ended


def _lone(msg: str) -> tuple[list[Any], dict[str, Any]]:
    """The (args, kwargs) of a job's own message, as a sweep sends it."""
    args = json.loads(msg)
    return args[:4], {"run": args[4], "prefix": args[5], "key": args[6]}


def test_a_call_a_sweep_took_back_while_its_bundle_ran_an_earlier_one_is_not_run_twice(
    redis_url: str, redis_prefix: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The process looked dead while the bundle's first call ran (past the heartbeat TTL):
    a sweep took the second call back and sent it alone, and another process ran and
    recorded it. The bundle checks its claims again before the second call (a while
    passed since it made them) and drops it."""
    queue = f"{redis_prefix}-bundle-queue"
    app = create_app(redis_url, prefix=redis_prefix, queue=queue, secret_key=SECRET,
                     heartbeat_ttl=0.3)
    sent = kept_sends(monkeypatch)
    handle, _, counter = _start(app, redis_url, redis_prefix, 8)
    job = app.tasks[JOB_TASK]
    args, kwargs = sent.popleft()
    job(*args, **kwargs)  # the node: 8 calls in 4 bundles of 2
    (thread_id, _, _, items), bundle_kwargs = sent.popleft()
    runtime = WorkerRuntime.of(app)
    book, real = runtime.dispatcher.books(redis_prefix), runtime._run
    checks: list[int] = []
    claim_calls = runtime.liveness.claim_calls
    monkeypatch.setattr(runtime.liveness, "claim_calls", lambda jobs, finished, **kw: (
        checks.append(kw.get("again", False)), claim_calls(jobs, finished, **kw))[1])

    def first_call_then_a_sweep(job_: Any, **kw: Any) -> str:
        ack = real(job_, **kw)
        if job_.key == items[0][3]:
            taken = book.reclaim(jobs_of(redis_prefix, thread_id), items[1][3],
                                 runtime.liveness.worker, 3)
            assert taken is not None and taken.action == "requeue"
            other = threading.Thread(target=lambda: job(*_lone(taken.message)[0],
                                                        **_lone(taken.message)[1]))
            other.start()
            other.join()
            time.sleep(0.15)  # past a third of the heartbeat TTL since the claims
        return ack

    monkeypatch.setattr(runtime, "_run", first_call_then_a_sweep)
    assert job(thread_id, "", "bundle", items, **bundle_kwargs).split() == ["ok", "dropped"]
    assert checks == [False, True]
    monkeypatch.setattr(runtime, "_run", real)
    while sent:
        args, kwargs = sent.popleft()
        job(*args, **kwargs)
    assert handle.result(timeout=10)["results"] == [i * 10 for i in range(8)]
    assert _runs(redis_url, counter, 8) == [1] * 8
    redis.Redis.from_url(redis_url).delete(queue)


def test_a_bundle_delivered_after_its_process_died_leaves_its_calls_to_their_own_messages(
    app: Celery, redis_url: str, redis_prefix: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The sweep counted a death against every call the dead process held and sent each
    alone; the bundle, delivered again by Celery, runs none of them: each runs from its
    own message, so a call that crashes again counts its deaths alone, not its bundle's."""
    sent = kept_sends(monkeypatch)
    handle, _, counter = _start(app, redis_url, redis_prefix, 8)
    job = app.tasks[JOB_TASK]
    args, kwargs = sent.popleft()
    job(*args, **kwargs)
    bundle_args, bundle_kwargs = sent.popleft()
    thread_id, items = bundle_args[0], bundle_args[3]
    book = WorkerRuntime.of(app).dispatcher.books(redis_prefix)
    dead = "host:4343:dead0001"
    for item in items:
        assert book.claim(item[3], thread_id, dead) == ("ok", "")
    taken = [book.reclaim(jobs_of(redis_prefix, thread_id), item[3], dead, 3) for item in items]
    assert [(t.action, t.deaths) for t in taken if t] == [("requeue", 1)] * 2
    assert job(*bundle_args, **bundle_kwargs).split() == ["dropped", "dropped"]
    assert sum(_runs(redis_url, counter, 8)) == 0
    for t in taken:
        assert t is not None and job(*_lone(t.message)[0], **_lone(t.message)[1]) == "ok"
    while sent:
        args, kwargs = sent.popleft()
        job(*args, **kwargs)
    assert handle.result(timeout=10)["results"] == [i * 10 for i in range(8)]
    assert _runs(redis_url, counter, 8) == [1] * 8


@task
def gated(url: str, counter: str, i: int) -> int:
    """Counts its run; call 4 then waits for the test's gate (at most 10 s)."""
    client = redis.Redis.from_url(url)
    client.hincrby(counter, str(i), 1)
    deadline = time.monotonic() + 10
    while i == 4 and not client.exists(f"{counter}:gate") and time.monotonic() < deadline:
        time.sleep(0.01)
    return i * 10


def gated_fan(state: Fan) -> dict[str, Any]:
    futures = [gated(state["url"], state["counter"], i) for i in range(state["n"])]
    return {"results": [f.result() for f in futures]}


def test_the_results_of_fast_calls_land_while_a_slow_call_of_their_bundle_runs(
    app: Celery, redis_url: str, redis_prefix: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bundle of calls 0 and 4: call 0's result is held a few milliseconds, not until
    call 4 (slow) returns; the caller sees it recorded while call 4 still runs."""
    sent = kept_sends(monkeypatch)
    graph = _graph(app, redis_url, redis_prefix, gated_fan)
    saver, counter = graph.checkpointer, f"{redis_prefix}:bundle-runs"
    config = {"configurable": {"thread_id": f"bundle-{uuid.uuid4().hex}"}}
    handle = graph.submit({"n": 8, "url": redis_url, "counter": counter}, config)
    job = app.tasks[JOB_TASK]
    args, kwargs = sent.popleft()
    job(*args, **kwargs)
    bundle_args, bundle_kwargs = sent.popleft()
    assert len(bundle_args[3]) == 2  # calls 0 and 4
    runner = threading.Thread(target=lambda: job(*bundle_args, **bundle_kwargs))
    runner.start()

    def recorded() -> set[int]:
        saved = saver.get_tuple(config)
        return {w.value[1] // 10 for w in saved.pending_writes if w.channel == RETURN} \
            if saved is not None else set()

    deadline, seen = time.monotonic() + 5, False
    while not seen and time.monotonic() < deadline:  # call 4 waits for the gate meanwhile
        seen = _runs(redis_url, counter, 8)[4] == 1 and recorded() == {0} and runner.is_alive()
        time.sleep(0.01)
    redis.Redis.from_url(redis_url).set(f"{counter}:gate", 1)
    runner.join(timeout=15)
    assert seen, "call 0's result was not recorded while call 4 ran"
    assert recorded() >= {0, 4}
    while sent:
        args, kwargs = sent.popleft()
        job(*args, **kwargs)
    assert handle.result(timeout=10)["results"] == [i * 10 for i in range(8)]
    assert _runs(redis_url, counter, 8) == [1] * 8
