"""Graphs on real Celery workers (three prefork subprocesses) against the same graphs
run embedded (``InMemorySaver``, no executor): same results, same checkpoints, and
the work really spread over the workers, each ``@task`` call run exactly once.

Also: interrupts and resume, streaming, ``submit``, node failures, payloads that
are tampered with or unsigned (refused, never unpickled), and graphs the workers
cannot import (shipped as a signed cloudpickle blob, or failing clearly).
"""

from __future__ import annotations

import base64
import json
import os
import pickle
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import pytest
from dg_workers import Cluster, wait_until

from durable_graph import Command, InMemorySaver, NondeterminismError, RedisSaver, SignatureError
from durable_graph.store.codec import SigningCodec
from durable_graph.store.redis.keys import ThreadKeys
from durable_graph.worker import CeleryExecutor, create_app
from durable_graph.worker.app import JOB_TASK
from durable_graph.worker.bundles import bundles
from durable_graph.worker.payload import open_sealed, seal

pytestmark = [pytest.mark.celery, pytest.mark.redis]

TIMEOUT = 30.0
HERE = Path(__file__).resolve().parent


# -- helpers ----------------------------------------------------------------------------


def new_config(name: str) -> dict[str, Any]:
    return {"configurable": {"thread_id": f"{name}-{uuid.uuid4().hex[:10]}"}}


def thread_of(config: dict[str, Any]) -> str:
    return str(config["configurable"]["thread_id"])


def within(timeout: float, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` on a daemon thread: its result, its error re-raised, or
    a test failure after ``timeout`` s (a hung run fails the test instead of CI)."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn(*args, **kwargs)
        except BaseException as exc:
            box["error"] = exc

    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    runner.join(timeout)
    if runner.is_alive():
        pytest.fail(f"{getattr(fn, '__name__', fn)} still running after {timeout} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


def embedded(builder: Any) -> Any:
    return builder.compile(checkpointer=InMemorySaver())


def run_pids(cluster: Cluster, tag: str) -> list[tuple[int, str]]:
    """(pid, name) of every node/task body that ran for thread ``tag``."""
    gf = cluster.gf
    return gf.dg_trace.traced(gf.REDIS_URL, gf.PREFIX, tag)


def worker_names(cluster: Cluster, pids: list[int]) -> list[str]:
    """The worker subprocess of each pid; fails on a pid that is no worker's."""
    names = []
    for pid in pids:
        name = cluster.pool.worker_of_pid(pid)
        assert name is not None, f"pid {pid} is not a worker pool process (test pid {os.getpid()})"
        names.append(name)
    return names


def history(graph: Any, config: dict[str, Any]) -> list[tuple[Any, ...]]:
    """Each checkpoint of the thread, newest first: step, source, values, next."""
    return [
        (s.metadata.get("step"), s.metadata.get("source"), s.values, s.next)
        for s in graph.get_state_history(config)
    ]


def thread_keys(cluster: Cluster, thread_id: str) -> list[bytes]:
    tag = ThreadKeys(cluster.env.prefix, thread_id).tag
    return list(cluster.client.scan_iter(match=f"{tag}*", count=1000))


def in_flight(cluster: Cluster) -> list[bytes]:
    """Messages of our queue in kombu's ``unacked`` hash (shared by every queue of the
    Redis database): a message a worker took and has not acknowledged yet, unless it
    is a job (``transport.QoS``)."""
    queue = json.dumps(cluster.env.queue).encode()
    return [v for v in cluster.client.hvals("unacked") if queue in v]


# -- the tests ----------------------------------------------------------------------------


def test_fanout_step_runs_its_nodes_in_three_worker_processes(cluster: Cluster) -> None:
    gf = cluster.gf
    config = new_config("fan")
    out = within(TIMEOUT, gf.fanout.invoke, {"x": 1}, config)

    local = embedded(gf.build_fanout())
    local_config = new_config("fan-local")
    expected = local.invoke({"x": 1}, local_config)
    assert expected == {"x": 2, "log": ["prep", "a=4", "b=6", "c=10"], "total": 20}
    assert out == expected
    assert gf.fanout.get_state(config).values == local.get_state(local_config).values

    ran = run_pids(cluster, thread_of(config))
    assert sorted(name for _, name in ran) == ["a", "b", "c", "join", "prep"]
    fan_pids = [pid for pid, name in ran if name in ("a", "b", "c")]
    assert os.getpid() not in {pid for pid, _ in ran}
    worker_names(cluster, [pid for pid, _ in ran])  # every node ran in a worker
    fan_workers = worker_names(cluster, fan_pids)
    assert len(set(fan_pids)) == 3, f"fan-out nodes ran in pids {ran}"
    assert len(set(fan_workers)) == 3, f"fan-out nodes ran on workers {fan_workers}"


def test_hundred_task_calls_run_once_each_across_workers(cluster: Cluster) -> None:
    gf = cluster.gf
    config = new_config("calls")
    tag = thread_of(config)
    out = gf.calls.submit({"n": gf.CALLS}, config).result(timeout=TIMEOUT)

    expected = embedded(gf.build_calls()).invoke({"n": gf.CALLS}, new_config("calls-local"))
    assert expected["squares"] == [i * i for i in range(gf.CALLS)]
    assert out == expected

    counts = cluster.client.mget([gf.dg_trace.count_key(gf.PREFIX, tag, i)
                                  for i in range(gf.CALLS)])
    ran_more = {i: c for i, c in enumerate(counts) if c != b"1"}
    assert not ran_more, f"calls not run exactly once (index: count): {ran_more}"

    ran = [(pid, name) for pid, name in run_pids(cluster, tag) if name.startswith("square")]
    assert sorted(name for _, name in ran) == sorted(f"square{i}" for i in range(gf.CALLS))
    spread = Counter(worker_names(cluster, [pid for pid, _ in ran]))
    assert len(spread) >= 2, f"all {gf.CALLS} calls ran on one worker: {spread}"
    assert gf.saver.get_status(tag)["status"] == "done"


def test_hundred_task_calls_travel_in_bundles_each_run_once(cluster: Cluster) -> None:
    """The node's calls are sent in batches (32, then 64, then the 4 left when it
    suspends), each batch cut into bundles (``worker/bundles``): the calls of a bundle
    run in the process that took the bundle (but a call the lost-message probe sent again
    alone, which a slow machine may see), and every call runs once."""
    gf = cluster.gf
    config = new_config("bundles")
    tag = thread_of(config)
    out = gf.calls.submit({"n": gf.CALLS}, config).result(timeout=TIMEOUT)
    assert out["squares"] == [i * i for i in range(gf.CALLS)]
    counts = cluster.client.mget([gf.dg_trace.count_key(gf.PREFIX, tag, i)
                                  for i in range(gf.CALLS)])
    assert counts == [b"1"] * gf.CALLS
    pid_of = {name: pid for pid, name in run_pids(cluster, tag) if name.startswith("square")}
    groups, start = [], 0
    for size in (32, 64, gf.CALLS - 96):  # the batches the node sends
        sent = [["t", str(i), "call", "", "r", "p", f"k{i}"] for i in range(start, start + size)]
        groups += [[int(item[0]) for item in m[3]] if m[2] == "bundle" else [int(m[1])]
                   for m in bundles(sent)]
        start += size
    assert sorted(i for g in groups for i in g) == list(range(gf.CALLS))
    assert sum(len(g) > 1 for g in groups) == 8  # 4 bundles of 8, 4 of 16; 4 calls alone
    whole = [g for g in groups if len(g) > 1 and len({pid_of[f"square{i}"] for i in g}) == 1]
    assert len(whole) >= 6, (groups, pid_of)


@pytest.mark.parametrize("durability", ["sync", "async", "exit"])
def test_checkpoints_per_durability_mode_match_embedded(cluster: Cluster, durability: str) -> None:
    gf = cluster.gf
    config = new_config(f"dur-{durability}")
    inp = {"value": 3, "log": []}
    out = gf.chain.submit(inp, config, durability=durability).result(timeout=TIMEOUT)

    local = embedded(gf.build_chain())
    local_config = new_config(f"dur-{durability}-local")
    expected = local.invoke(inp, local_config, durability=durability)
    assert out == expected == {"value": 59, "log": ["s0", "s1", "s2", "s3"]}

    remote_history = history(gf.chain, config)
    local_history = history(local, local_config)
    expected_count = 1 if durability == "exit" else len(gf.CHAIN) + 2
    assert len(local_history) == expected_count  # the modes differ: the test can tell
    assert len(remote_history) == len(local_history)
    assert remote_history == local_history
    # the workers' commits stored the growing log as deltas, one per step after the first
    latest = gf.saver.get_tuple(config)
    assert latest is not None
    version = latest.checkpoint.channel_versions["log"]
    assert gf.saver.value_depth(thread_of(config), "", "log", version) == len(gf.CHAIN) - 1


def test_workers_commits_apply_the_retention_policy_of_the_starting_saver(
    cluster: Cluster,
) -> None:
    gf = cluster.gf
    with RedisSaver.from_url(gf.REDIS_URL, prefix=gf.PREFIX, keep_last=2, ttl=600) as policy:
        graph = gf.build_chain().compile(checkpointer=policy, executor=gf.executor)
        config = new_config("retained")
        inp = {"value": 3, "log": []}
        out = within(TIMEOUT, graph.invoke, inp, config, durability="sync")
        local = embedded(gf.build_chain())
        local_config = new_config("retained-local")
        assert out == local.invoke(inp, local_config, durability="sync")
        # the producer commits only the input; the four steps are the workers' commits
        assert len(history(local, local_config)) == len(gf.CHAIN) + 2
        assert history(graph, config) == history(local, local_config)[:2]
        stored = thread_keys(cluster, thread_of(config))  # bytes: v13 names pages by bytes
        lived = {k: cluster.client.ttl(k) for k in stored
                 if k.endswith((b":rec", b":idx", b":pages", b":blobs", b":vpages"))
                 or any(part in k for part in (b":pg:", b":rc:", b":vpg:", b":vh:"))}
        # the record; the id pages' mark and directory, one page's ids and records; the
        # same four of the value pages
        assert len(lived) == 1 + 4 + 4 and all(0 < t <= 600 for t in lived.values()), lived
        kept = {r.checkpoint_id for r in policy.list_ids(thread_of(config))}
        assert len(kept) == 2
        # nothing of a pruned checkpoint stays: every checkpoint-keyed key is a kept one's
        writes = {k.rsplit(b":w:", 1)[1].decode() for k in stored if b":w:" in k}
        own = {str(uuid.UUID(bytes=k.rsplit(b":cp:", 1)[1])) for k in stored if b":cp:" in k}
        assert writes | own <= kept


def test_interrupt_pauses_without_a_busy_worker_and_command_resumes(cluster: Cluster) -> None:
    gf = cluster.gf
    config = new_config("approval")
    tag = thread_of(config)
    local = embedded(gf.build_approval())
    local_config = new_config("approval-local")

    paused = within(TIMEOUT, gf.approval.invoke, {"draft": "hello"}, config)
    local_paused = local.invoke({"draft": "hello"}, local_config)
    # interrupt ids derive from checkpoint ids (random), so compare the rest
    assert [i.value for i in paused["__interrupt__"]] == ["q"]
    assert [i.value for i in local_paused["__interrupt__"]] == ["q"]
    without = "__interrupt__"
    assert {k: v for k, v in paused.items() if k != without} == {
        k: v for k, v in local_paused.items() if k != without} == {"draft": "HELLO"}

    # the run is over: thread marked interrupted, lease released, nothing queued
    assert gf.saver.get_status(tag)["status"] == "interrupted"
    # the lease is released just after the end event that woke us (a new run arriving
    # in between waits for it: ``multitask.acquire`` sees the run closing)
    lease = ThreadKeys(gf.PREFIX, tag).lease
    wait_until(lambda: cluster.client.hget(lease, "owner") in (b"", None), 5.0,
               "the ended run to release the lease")
    assert cluster.client.llen(cluster.env.queue) == 0
    # job messages keep no copy in kombu's unacked hash (transport.QoS)
    assert in_flight(cluster) == []
    snap, local_snap = gf.approval.get_state(config), local.get_state(local_config)
    assert snap.next == local_snap.next == ("approve",)
    assert snap.values == local_snap.values
    assert [i for t in snap.tasks for i in t.interrupts] == paused["__interrupt__"]

    resume = Command(resume="a", update={"reviewer": "rev"})
    out = within(TIMEOUT, gf.approval.invoke, resume, config)
    local_out = local.invoke(Command(resume="a", update={"reviewer": "rev"}), local_config)
    assert out == local_out
    assert out["published"] == "a:HELLO by rev"
    assert gf.saver.get_status(tag)["status"] == "done"
    assert history(gf.approval, config) == history(local, local_config)
    ran = run_pids(cluster, tag)
    worker_names(cluster, [pid for pid, _ in ran])
    assert Counter(name for _, name in ran) == {"draft": 1, "approve": 2, "publish": 1}


def test_stream_of_a_chain_equals_embedded(cluster: Cluster) -> None:
    gf = cluster.gf
    inp = {"value": 1, "log": []}
    modes = ["updates", "values", "custom"]
    chunks = within(TIMEOUT, lambda: list(
        gf.chain.stream(inp, new_config("stream"), stream_mode=modes)))
    expected = list(embedded(gf.build_chain()).stream(
        inp, new_config("stream-local"), stream_mode=modes))
    assert Counter(mode for mode, _ in expected) == {"updates": 4, "values": 5, "custom": 4}
    assert chunks == expected

    single = within(TIMEOUT, lambda: list(
        gf.chain.stream(inp, new_config("stream1"), stream_mode="updates")))
    assert single == [chunk for mode, chunk in expected if mode == "updates"]


def test_stream_of_a_fanout_equals_embedded_as_a_multiset(cluster: Cluster) -> None:
    gf = cluster.gf
    modes = ["updates", "values"]
    chunks = within(TIMEOUT, lambda: list(
        gf.fanout.stream({"x": 5}, new_config("fstream"), stream_mode=modes)))
    expected = list(embedded(gf.build_fanout()).stream(
        {"x": 5}, new_config("fstream-local"), stream_mode=modes))
    assert sorted(map(repr, chunks)) == sorted(map(repr, expected))
    # values chunks come once per committed step, in step order
    assert [c for m, c in chunks if m == "values"] == [c for m, c in expected if m == "values"]


def test_a_slowed_committer_streams_each_steps_values_once_in_order(cluster: Cluster) -> None:
    """The worker that commits the fan-out's first step is slow to publish that step's
    values (a value it made pickles slowly there, ``SlowToSend``): the next step's jobs,
    run by the other workers, must not overtake them, nor the run's end drop them."""
    gf = cluster.gf
    chunks = within(TIMEOUT + 4 * gf.SLOW_SEND, lambda: list(
        gf.slow_fanout.stream({"x": 5}, new_config("slowsend"), stream_mode="values")))
    fanned = ["prep", "a=12", "b=18", "c=30"]
    assert [{k: v for k, v in c.items() if k != "slow"} for c in chunks] == [
        {"x": 5, "log": []}, {"x": 6, "log": ["prep"]}, {"x": 6, "log": fanned},
        {"x": 6, "log": fanned, "total": 60}]
    assert ["slow" in c for c in chunks] == [False, True, True, True]


def test_submit_returns_before_the_run_ends(cluster: Cluster) -> None:
    gf = cluster.gf
    config = new_config("submit")
    started = time.monotonic()
    handle = gf.slow_graph.submit({"value": 41}, config)
    assert handle.status() == "running"
    assert time.monotonic() - started < gf.SLOW_SLEEP, "submit waited for the run"
    assert handle.thread_id == thread_of(config)

    assert handle.result(timeout=TIMEOUT) == {"value": 42, "done": True}
    assert time.monotonic() - started >= gf.SLOW_SLEEP
    assert handle.status() == "done"
    assert gf.saver.get_status(thread_of(config))["status"] == "done"
    [(pid, name)] = run_pids(cluster, thread_of(config))
    assert name == "slow"
    worker_names(cluster, [pid])


def test_node_error_is_raised_like_embedded_and_recorded(cluster: Cluster) -> None:
    gf = cluster.gf
    config = new_config("boom")
    local = embedded(gf.build_boom())
    local_config = new_config("boom-local")
    with pytest.raises(ValueError) as local_error:
        local.invoke({"value": 6}, local_config)

    with pytest.raises(ValueError) as remote_error:
        within(TIMEOUT, gf.boom_graph.invoke, {"value": 6}, config)
    assert type(remote_error.value) is type(local_error.value)
    assert str(remote_error.value) == str(local_error.value) == gf.BOOM_MESSAGE

    record = gf.saver.get_status(thread_of(config))
    assert record["status"] == "failed"
    assert record["error_type"] == "builtins.ValueError"
    assert record["error_message"] == gf.BOOM_MESSAGE
    assert "ValueError" in (record["error_traceback"] or "")
    snap, local_snap = gf.boom_graph.get_state(config), local.get_state(local_config)
    assert snap.values == local_snap.values == {"value": 7}
    assert snap.next == local_snap.next == ("boom",)

    handle = gf.boom_graph.submit({"value": 6}, new_config("boom-submit"))
    with pytest.raises(ValueError, match=gf.BOOM_MESSAGE):
        handle.result(timeout=TIMEOUT)
    assert handle.status() == "failed"


class _TouchOnUnpickle:
    """Unpickling this creates ``path``: proof that a payload was unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.path,))


def _flip_last_byte(sealed: str) -> str:
    raw = bytearray(base64.b64decode(sealed))
    raw[-1] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


def test_tampered_and_unsigned_payloads_are_refused_unrun(
    cluster: Cluster, tmp_path: Path
) -> None:
    gf = cluster.gf
    right = SigningCodec.from_secret(cluster.env.secret)
    wrong = SigningCodec.from_secret("another-secret-" + "x" * 32)
    marker = tmp_path / "unpickled"
    evil = _TouchOnUnpickle(marker)
    payloads = {
        "flipped": _flip_last_byte(seal(right, evil)),
        "wrong-key": seal(wrong, evil),
        "unsigned-pickle": base64.b64encode(pickle.dumps(evil)).decode(),
        "plain-text": "this is not a sealed payload",
    }
    assert seal(right, "x") != seal(wrong, "x")
    probe = tmp_path / "probe"  # the detector works: opening a good seal of it unpickles
    open_sealed(right, seal(right, _TouchOnUnpickle(probe)))
    assert probe.exists()
    threads = {case: f"tamper-{case}-{uuid.uuid4().hex[:8]}" for case in payloads}
    refused_before = cluster.pool.logs().count(": 'refused'")
    for case, payload in payloads.items():
        gf.app.send_task(JOB_TASK, args=[threads[case], "task-1", "task", payload],
                         queue=cluster.env.queue)
    # signed with the right key but not a job: refused by the ids check
    not_a_job = f"tamper-not-a-job-{uuid.uuid4().hex[:8]}"
    gf.app.send_task(JOB_TASK, args=[not_a_job, "task-1", "task", seal(right, {"a": 1})],
                     queue=cluster.env.queue)

    def refused(thread_id: str) -> bool:
        return any("refused" in line and repr(thread_id) in line
                   for line in cluster.pool.logs().splitlines())

    everything = [*threads.values(), not_a_job]
    wait_until(lambda: all(refused(t) for t in everything), TIMEOUT,
               "a refusal in the worker logs for every tampered payload")
    # each of them ended as a job that returned 'refused' (no retry, no crash)
    wait_until(lambda: cluster.pool.logs().count(": 'refused'") - refused_before
               >= len(everything), TIMEOUT, "every refused job to end")
    assert cluster.pool.logs().count(": 'refused'") - refused_before == len(everything)
    assert not marker.exists(), "a refused payload was unpickled"
    for thread_id in everything:
        assert gf.saver.get_status(thread_id) is None
        assert thread_keys(cluster, thread_id) == []
    assert all(w.alive() for w in cluster.pool.workers)


def test_producer_with_another_signing_key_fails_fast_and_runs_nothing(
    cluster: Cluster,
) -> None:
    gf = cluster.gf
    other = create_app(gf.REDIS_URL, prefix=gf.PREFIX, queue=gf.QUEUE,
                       secret_key="not-the-workers-key-" + "y" * 32)
    graph = gf.build_chain().compile(
        checkpointer=RedisSaver.from_url(gf.REDIS_URL, prefix=gf.PREFIX),
        executor=CeleryExecutor(other),
    )
    config = new_config("other-key")
    # the workers published their key's fingerprint: the producer sees it is not
    # theirs and fails before it enqueues anything (workers report nothing to
    # anyone about messages they cannot verify)
    with pytest.raises(SignatureError, match="not the workers' key") as failure:
        within(TIMEOUT, graph.invoke, {"value": 1, "log": []}, config)
    assert "Nothing was enqueued" in str(failure.value)
    assert run_pids(cluster, thread_of(config)) == []  # no node ran anywhere


def _producer_env(cluster: Cluster) -> dict[str, str]:
    env = dict(os.environ)
    env.update(cluster.env.as_env())
    env["PYTHONPATH"] = str(HERE)  # for dg_trace; private_graph sits next to the script
    return env


def _run_producer(cluster: Cluster, workdir: Path, mode: str, thread_id: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, str(workdir / "run_private.py"), mode, thread_id],
        cwd=workdir, env=_producer_env(cluster), capture_output=True, text=True,
        timeout=TIMEOUT + 30, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert lines, f"no result:\n{proc.stdout}\n{proc.stderr}"
    return json.loads(lines[-1].removeprefix("RESULT "))  # type: ignore[no-any-return]


@pytest.fixture
def offpath(tmp_path: Path) -> Path:
    """A temp dir holding the private graph and its producer script (not on any
    worker's PYTHONPATH)."""
    workdir = tmp_path / "producer"
    workdir.mkdir()
    for name in ("private_graph.py", "run_private.py"):
        shutil.copy(HERE / "offpath" / name, workdir / name)
    return workdir


def test_graph_workers_cannot_import_runs_from_its_pickled_blob(
    cluster: Cluster, offpath: Path
) -> None:
    gf = cluster.gf
    thread_id = f"private-{uuid.uuid4().hex[:8]}"
    blobs_before = set(cluster.client.scan_iter(match=f"{gf.PREFIX}:graph:*"))
    outcome = _run_producer(cluster, offpath, "auto", thread_id)
    assert not outcome["hung"], outcome
    assert outcome.get("output") == {
        "words": ["alpha", "be", "gamma"], "lengths": [51, 21, 51], "summary": "private-7f3a:123",
    }, outcome
    assert outcome["status"] == "done"

    ran = run_pids(cluster, thread_id)
    assert Counter(name for _, name in ran)["summarize"] == 1
    assert {name for _, name in ran} >= {"measure:alpha", "measure:be", "measure:gamma"}
    assert outcome["pid"] not in {pid for pid, _ in ran}
    worker_names(cluster, [pid for pid, _ in ran])  # all ran in worker pool processes
    blobs = set(cluster.client.scan_iter(match=f"{gf.PREFIX}:graph:*")) - blobs_before
    assert len(blobs) == 1, "the producer did not upload its graph"
    assert f"cannot load the graph of thread {thread_id!r}" not in cluster.pool.logs()


def test_import_only_graph_workers_cannot_import_fails_clearly(
    cluster: Cluster, offpath: Path
) -> None:
    thread_id = f"import-only-{uuid.uuid4().hex[:8]}"
    outcome = _run_producer(cluster, offpath, "import", thread_id)
    assert not outcome["hung"], f"the run hung instead of failing: {outcome}"
    assert "output" not in outcome, outcome
    assert "private_graph" in outcome["error"], outcome
    assert "DispatchError" in outcome["error"] or outcome["error_type"] == "DispatchError"
    assert outcome["status"] == "failed"
    assert "private_graph" in (outcome["error_message"] or "")
    wait_until(lambda: f"cannot load the graph of thread {thread_id!r}" in cluster.pool.logs(),
               TIMEOUT, "the worker to log why it cannot load the graph")
    assert run_pids(cluster, thread_id) == []


def test_auto_ship_of_an_importable_graph_does_not_need_a_picklable_module(
    cluster: Cluster,
) -> None:
    gf = cluster.gf
    config = new_config("locked")
    assert gf.locked_graph.submit({"value": 1}, config).result(timeout=TIMEOUT) == {"value": 2}
    [(pid, name)] = run_pids(cluster, thread_of(config))
    assert name == "locked"
    worker_names(cluster, [pid])


def test_a_node_starting_many_calls_has_them_run_before_it_waits(cluster: Cluster) -> None:
    """The first calls a node starts are sent at once (a batch of 32), not when it first
    waits on one: other workers run them while it starts more."""
    gf = cluster.gf
    config = new_config("early")
    tag = thread_of(config)
    out = gf.early_calls.submit({"n": 40}, config).result(timeout=TIMEOUT)
    assert out["squares"] == [i * i for i in range(40)]
    assert cluster.client.get(gf.early_key(tag)) == b"1"
    counts = cluster.client.mget([gf.dg_trace.count_key(gf.PREFIX, tag, i) for i in range(40)])
    assert counts == [b"1"] * 40


@pytest.mark.chaos
def test_calls_sent_before_their_caller_died_run_once(cluster: Cluster) -> None:
    """A node's first execution sends a batch of calls and dies with them queued or
    running; its copy sends them again under the same job keys, so each call runs once."""
    gf = cluster.gf
    config = new_config("dying")
    tag = thread_of(config)
    out = gf.dying_calls.submit({"n": 40}, config).result(timeout=TIMEOUT)
    assert out["squares"] == [i * i for i in range(40)]
    assert cluster.client.get(f"{gf.PREFIX}:died:{tag}") == b"1"
    counts = cluster.client.mget([gf.dg_trace.count_key(gf.PREFIX, tag, i) for i in range(40)])
    assert counts == [b"1"] * 40


def test_interrupt_inside_a_task_call_resumes_like_embedded(cluster: Cluster) -> None:
    gf = cluster.gf
    config = new_config("questions")
    local = gf.build_questions(InMemorySaver())
    local_config = new_config("questions-local")
    outs = []
    for step_input in (1, Command(resume="yes"), Command(resume="!")):
        remote = within(TIMEOUT, gf.questions.invoke, step_input, config)
        embedded_out = local.invoke(step_input, local_config)
        outs.append(remote)
        if isinstance(remote, dict):
            assert [i.value for i in remote["__interrupt__"]] == [
                i.value for i in embedded_out["__interrupt__"]]
        else:
            assert remote == embedded_out
    assert [i.value for i in outs[0]["__interrupt__"]] == ["inner?"]
    assert [i.value for i in outs[1]["__interrupt__"]] == ["outer?"]
    assert outs[2] == "yes+!"
    assert gf.saver.get_status(thread_of(config))["status"] == "done"


def _paused_approvals(gf: Any, name: str) -> tuple[dict[str, Any], Any, dict[str, Any]]:
    """The approval graph paused at its interrupt on workers and embedded:
    (workers' config, the embedded graph, its config)."""
    config, local_config = new_config(name), new_config(f"{name}-local")
    local = embedded(gf.build_approval())
    within(TIMEOUT, gf.approval.invoke, {"draft": "hi"}, config)
    local.invoke({"draft": "hi"}, local_config)
    return config, local, local_config


def test_stream_of_a_resume_equals_embedded(cluster: Cluster) -> None:
    gf = cluster.gf
    config, local, local_config = _paused_approvals(gf, "approval-stream")
    resume = Command(resume="ok", update={"reviewer": "r"})
    remote = within(TIMEOUT, lambda: list(gf.approval.stream(
        resume, config, stream_mode=["values", "updates"])))
    mirrored = list(local.stream(Command(resume="ok", update={"reviewer": "r"}), local_config,
                                 stream_mode=["values", "updates"]))
    assert remote == mirrored
    assert remote[0][0] == "values"  # the resumed state comes first, as embedded


def _without_ids(chunk: Any) -> Any:
    """A tasks/checkpoints/debug chunk without the parts that are random per run."""
    if isinstance(chunk, dict):
        return {k: _without_ids(v) for k, v in chunk.items()
                if k not in ("id", "timestamp", "config", "checkpoint_id", "parent_config")}
    if isinstance(chunk, (list, tuple)):
        return type(chunk)(_without_ids(v) for v in chunk)
    return chunk


@pytest.mark.parametrize("modes", [["tasks", "checkpoints", "updates", "values"], ["debug"]])
def test_task_and_checkpoint_streams_equal_embedded(cluster: Cluster, modes: list[str]) -> None:
    gf = cluster.gf
    config, local_config = new_config("chain-debug"), new_config("chain-debug-local")
    local = embedded(gf.build_chain())
    remote = within(TIMEOUT, lambda: list(gf.chain.stream(
        {"value": 1, "log": []}, config, stream_mode=modes, durability="sync")))
    mirrored = list(local.stream({"value": 1, "log": []}, local_config, stream_mode=modes,
                                 durability="sync"))
    assert [(m, _without_ids(c)) for m, c in remote] == [
        (m, _without_ids(c)) for m, c in mirrored]
    assert sum(1 for m, _ in remote if m in ("checkpoints", "debug")) >= len(gf.CHAIN)


@pytest.mark.parametrize("durability", ["sync", "exit"])
@pytest.mark.parametrize("modes", [["updates"], ["updates", "custom"], ["updates", "tasks"]])
def test_the_last_steps_events_reach_the_stream_before_its_end(
    cluster: Cluster, modes: list[str], durability: str
) -> None:
    """A run ending with the commit of its last step (sync, exit) still streams that
    step's updates and task results, which are published after the commit returns."""
    gf = cluster.gf
    config, local_config = new_config("chain-last"), new_config("chain-last-local")
    remote = within(TIMEOUT, lambda: list(gf.chain.stream(
        {"value": 1, "log": []}, config, stream_mode=modes, durability=durability)))
    mirrored = list(embedded(gf.build_chain()).stream(
        {"value": 1, "log": []}, local_config, stream_mode=modes, durability=durability))
    assert [(m, _without_ids(c)) for m, c in remote] == [
        (m, _without_ids(c)) for m, c in mirrored]
    assert sum(1 for m, _ in remote if m == "updates") == len(gf.CHAIN)


def test_a_resume_at_a_breakpoint_answers_the_next_interrupt_like_embedded(
    cluster: Cluster,
) -> None:
    gf = cluster.gf
    config, local_config = new_config("approval-bp"), new_config("approval-bp-local")
    local = embedded(gf.build_approval())
    within(TIMEOUT, gf.approval.invoke, {"draft": "x"}, config, interrupt_before=["approve"])
    local.invoke({"draft": "x"}, local_config, interrupt_before=["approve"])
    out = within(TIMEOUT, gf.approval.invoke, Command(resume="early"), config)
    local_out = local.invoke(Command(resume="early"), local_config)
    assert out == local_out
    assert "__interrupt__" not in out


def test_a_node_retry_runs_its_failed_call_again_like_embedded(cluster: Cluster) -> None:
    gf = cluster.gf
    key = uuid.uuid4().hex[:8]
    remote = within(TIMEOUT, gf.retried_flow.invoke, f"r-{key}", new_config("retried"))
    local = gf.build_retried(InMemorySaver()).invoke(f"l-{key}", new_config("retried-l"))
    assert remote == local == "ok after 2"
    assert int(cluster.client.get(f"{gf.PREFIX}:flaky:r-{key}")) == 2


def test_node_retries_stay_bounded_across_suspensions(cluster: Cluster) -> None:
    gf = cluster.gf
    key = uuid.uuid4().hex[:8]
    with pytest.raises(ConnectionError, match=f"broken {key}"):
        within(TIMEOUT, gf.broken_flow.invoke, key, new_config("broken"))
    assert int(cluster.client.get(f"{gf.PREFIX}:broken:{key}")) == 3  # max_attempts


def test_a_replay_calling_other_tasks_fails_with_a_nondeterminism_error(
    cluster: Cluster,
) -> None:
    gf = cluster.gf
    key = uuid.uuid4().hex[:8]
    config = new_config("drift")
    with pytest.raises(NondeterminismError, match="'second_pick' on replay"):
        within(TIMEOUT, gf.drifting_flow.invoke, key, config)
    assert int(cluster.client.get(f"{gf.PREFIX}:drift:{key}")) == 2  # ran, then replayed
    assert gf.saver.get_status(thread_of(config))["status"] == "failed"


# -- chat state on workers ------------------------------------------------------------


def _chat_view(values: dict[str, Any]) -> dict[str, Any]:
    """Messages as (class, content): their generated ids differ from run to run."""
    return {**values, "messages": [(type(m).__name__, m.content) for m in values["messages"]]}


def test_chat_messages_on_workers_match_embedded(cluster: Cluster) -> None:
    """MessagesState on workers: coerced, edited by id, deleted, private keys, resumed
    with command=; the same as embedded, stored and read back as message objects."""
    gf = cluster.gf
    config, local_config = new_config("chat"), new_config("chat-local")
    local = embedded(gf.build_chat())
    paused = within(TIMEOUT, gf.chat.invoke, {"messages": [("user", "hi")]}, config)
    local_paused = local.invoke({"messages": [("user", "hi")]}, local_config)
    assert _chat_view(paused) == _chat_view(local_paused) | {"__interrupt__": ANY}
    assert [i.value for i in paused["__interrupt__"]] == [{"review": "answer to hi"}]
    kept_id = paused["messages"][1].id
    chunks = within(TIMEOUT, lambda: list(gf.chat.stream(
        None, config, command=Command(resume="approved"), stream_mode="values")))
    local_chunks = list(local.stream(None, local_config, command=Command(resume="approved"),
                                     stream_mode="values"))
    assert [_chat_view(c) for c in chunks] == [_chat_view(c) for c in local_chunks]
    final = gf.chat.get_state(config).values
    assert _chat_view(final) == {"messages": [("AIMessage", "approved: answer to hi")],
                                 "reviews": 1}
    assert final["messages"][0].id == kept_id  # replaced in place, by id
    ran = {name for _, name in run_pids(cluster, thread_of(config))}
    assert ran == {"chat_bot", "chat_review"}
    assert all(pid != os.getpid() for pid, _ in run_pids(cluster, thread_of(config)))


def test_debug_stream_of_a_resume_on_workers_equals_embedded(cluster: Cluster) -> None:
    """The resumed checkpoint comes first, then the task events, as LangGraph streams."""
    gf = cluster.gf
    config, local, local_config = _paused_approvals(gf, "debug-resume")
    remote = within(TIMEOUT, lambda: list(gf.approval.stream(
        Command(resume="ok"), config, stream_mode="debug")))
    mirrored = list(local.stream(Command(resume="ok"), local_config, stream_mode="debug"))
    assert [(c["type"], c["step"]) for c in remote] == [
        (c["type"], c["step"]) for c in mirrored]
    assert [_without_ids(c["payload"]) for c in remote] == [
        _without_ids(c["payload"]) for c in mirrored]
    assert remote[0]["type"] == "checkpoint"
    assert remote[0]["payload"]["tasks"][0]["interrupts"][0]["value"] == "q"


def test_messages_stream_on_workers_equals_embedded(cluster: Cluster) -> None:
    """stream_mode="messages": each message object a node returns, once, with metadata."""
    gf = cluster.gf
    config, local_config = new_config("chat-messages"), new_config("chat-messages-local")
    local = embedded(gf.build_chat())
    remote = within(TIMEOUT, lambda: list(gf.chat.stream(
        {"messages": [("user", "hi")]}, config, stream_mode=["messages", "updates"])))
    mirrored = list(local.stream({"messages": [("user", "hi")]}, local_config,
                                 stream_mode=["messages", "updates"]))

    def view(chunks: list[Any]) -> list[Any]:
        out = []
        for mode, chunk in chunks:
            if mode == "messages":
                message, meta = chunk
                out.append((mode, (type(message).__name__, message.content,
                                   meta["langgraph_node"], meta["langgraph_step"],
                                   meta["langgraph_path"])))
            else:
                out.append((mode, sorted(chunk)))
        return out

    assert view(remote) == view(mirrored)
    assert ("messages", ("AIMessage", "answer to hi", "chat_bot", 1,
                         ("__pregel_pull", "chat_bot"))) in view(remote)


@pytest.mark.parametrize("durability", ["sync", "exit"])
def test_a_breakpoint_after_the_last_node_pauses_the_run_like_embedded(
    cluster: Cluster, durability: str,
) -> None:
    """The last commit of a chain paused after its last node must not also send the
    run's ``done`` end with it: the run ends ``interrupted``, as embedded."""
    gf = cluster.gf
    config, local_config = new_config("chain-bp-last"), new_config("chain-bp-last-local")
    last = gf.CHAIN[-1]
    out = within(TIMEOUT, gf.chain.invoke, {"value": 1, "log": []}, config,
                 interrupt_after=[last], durability=durability)
    local = embedded(gf.build_chain()).invoke({"value": 1, "log": []}, local_config,
                                              interrupt_after=[last], durability=durability)
    assert out == local
    assert gf.saver.get_status(config["configurable"]["thread_id"])["status"] == "interrupted"
    done = within(TIMEOUT, gf.chain.invoke, None, config, durability=durability)
    assert done["log"] == list(gf.CHAIN) and "__interrupt__" not in done
    assert gf.saver.get_status(config["configurable"]["thread_id"])["status"] == "done"
