"""Subgraphs on real Celery workers: each node of a subgraph's step is a job of its own.

Against the same graphs run embedded (``InMemorySaver``): the same output, state and
history, the parent's and the subgraph's. Bodies count their executions in Redis
(``subgraph_graphs``), so a test can tell that finished subgraph nodes and recorded
``@task`` calls do not run again after a worker is SIGKILLed or an interrupt resumed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from dg_workers import Cluster, wait_until

from durable_graph import Command, InMemorySaver

pytestmark = [pytest.mark.celery, pytest.mark.redis]

TIMEOUT = 60.0
HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def sg(cluster: Cluster) -> Any:
    import subgraph_graphs

    return subgraph_graphs


def new_config(name: str) -> dict[str, Any]:
    return {"configurable": {"thread_id": f"sub-{name}-{uuid.uuid4().hex[:10]}"}}


def thread_of(config: dict[str, Any]) -> str:
    return str(config["configurable"]["thread_id"])


def embedded(builder: Any) -> Any:
    return builder.compile(checkpointer=InMemorySaver())


def ran(cluster: Cluster, tag: str) -> list[tuple[int, str]]:
    gf = cluster.gf
    return gf.dg_trace.traced(gf.REDIS_URL, gf.PREFIX, tag)


def history(graph: Any, config: dict[str, Any]) -> list[tuple[Any, ...]]:
    """Each checkpoint of the thread (or of a subgraph's namespace), newest first."""
    return [(s.metadata.get("step"), s.metadata.get("source"), s.values, s.next)
            for s in graph.get_state_history(config)]


def subgraph_namespaces(graph: Any, config: dict[str, Any], node: str) -> list[str]:
    """The checkpoint namespaces ``node``'s subgraphs checkpointed in (``node:<task id>``)."""
    found = {c.config["configurable"]["checkpoint_ns"] for c in graph.checkpointer.list(
        {"configurable": {"thread_id": thread_of(config)}})}
    return sorted(ns for ns in found if ns.split(":")[0] == node)


@pytest.mark.parametrize("durability", ["async", "sync", "exit"])
def test_fanout_subgraph_as_node_runs_its_nodes_on_several_workers(
    cluster: Cluster, sg: Any, durability: str
) -> None:
    config = new_config(f"fan-node-{durability}")
    tag = thread_of(config)
    out = sg.fan_node.submit({"x": 1}, config, durability=durability).result(timeout=TIMEOUT)

    local = embedded(sg.build_fan_node())
    local_config = new_config("fan-node-local")
    expected = local.invoke({"x": 1}, local_config, durability=durability)
    assert out == expected
    assert out["x"] == sum(2 * i for i in range(sg.FAN))
    assert sg.fan_node.get_state(config).values == local.get_state(local_config).values
    same_histories(sg.fan_node, config, local, local_config, "fan")
    assert "secret" not in out  # the subgraph's private key stays there

    pids = {pid for pid, name in ran(cluster, tag) if name.startswith("p")}
    names = {name for _, name in ran(cluster, tag)}
    assert names == {"prep", "split", "gather", "after", *(f"p{i}" for i in range(sg.FAN))}
    assert os.getpid() not in pids
    workers = {cluster.pool.worker_of_pid(pid) for pid in pids}
    assert None not in workers
    assert len(workers) > 1, f"the 6 subgraph nodes ran on workers {workers}"
    for name in names:
        assert sg.counted(tag, name) == 1, name


def same_histories(remote: Any, config: dict[str, Any], local: Any,
                   local_config: dict[str, Any], node: str) -> None:
    """The parent's history and the history of each subgraph run by ``node`` match
    embedded."""
    assert history(remote, config) == history(local, local_config)
    remote_ns = subgraph_namespaces(remote, config, node)
    local_ns = subgraph_namespaces(local, local_config, node)
    assert len(remote_ns) == len(local_ns) >= 1
    for r_ns, l_ns in zip(remote_ns, local_ns, strict=True):
        assert r_ns.split(":")[0] == l_ns.split(":")[0]
        r_conf = {"configurable": {"thread_id": thread_of(config), "checkpoint_ns": r_ns}}
        l_conf = {"configurable": {"thread_id": thread_of(local_config), "checkpoint_ns": l_ns}}
        r_hist, l_hist = history(remote, r_conf), history(local, l_conf)
        assert r_hist == l_hist
        assert len(r_hist) >= 1, r_ns


def test_fanout_subgraph_called_from_a_node_matches_embedded(cluster: Cluster, sg: Any) -> None:
    config = new_config("fan-called")
    tag = thread_of(config)
    out = sg.fan_called.submit({"x": 2}, config).result(timeout=TIMEOUT)

    local = embedded(sg.build_fan_called())
    local_config = new_config("fan-called-local")
    assert out == local.invoke({"x": 2}, local_config)
    assert sg.fan_called.get_state(config).values == local.get_state(local_config).values
    same_histories(sg.fan_called, config, local, local_config, "caller")

    pids = {pid for pid, name in ran(cluster, tag) if name.startswith("p")}
    assert len({cluster.pool.worker_of_pid(pid) for pid in pids}) > 1
    assert sg.counted(tag, "caller") == 2  # it ran, suspended, and replayed with the result
    for name in ("prep", "split", "gather", *(f"p{i}" for i in range(sg.FAN))):
        assert sg.counted(tag, name) == 1, name


_SCRIPT = Path(sys.executable).with_name("durable-graph")
CLI = [str(_SCRIPT)] if _SCRIPT.exists() else [
    sys.executable, "-c", "from durable_graph.cli import main; raise SystemExit(main())"]


def cli(cluster: Cluster, *args: str) -> Any:
    """``durable-graph ARGS...`` as an operator runs it, in a process of its own; its
    JSON output."""
    env = cluster.env
    argv = [*CLI, "--redis-url", env.redis_url, "--prefix", env.prefix, "--queue", env.queue,
            *args]
    environ = {k: v for k, v in os.environ.items() if not k.startswith("DURABLE_GRAPH_")}
    environ["DURABLE_GRAPH_SECRET_KEY"] = env.secret
    done = subprocess.run(argv, env=environ, capture_output=True, text=True, timeout=TIMEOUT,
                          check=False)
    assert done.returncode == 0, f"{args}: {done.stdout}\n{done.stderr}"
    return json.loads(done.stdout)


def child_states(graph: Any, config: dict[str, Any]) -> list[Any]:
    """(node, values, next) of each level of ``get_state(subgraphs=True)``, outermost first."""
    out = []
    snap = graph.get_state(config, subgraphs=True)
    while True:
        out.append((snap.values, snap.next))
        inner = [t.state for t in snap.tasks if t.state is not None and not isinstance(
            t.state, dict)]
        if not inner:
            return out
        (snap,) = inner


def without_interrupts(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if k != "__interrupt__"}


@pytest.mark.parametrize("graph", ["ask", "deep"])
def test_interrupt_in_a_subgraph_parks_the_run_and_the_cli_resumes_it(
    cluster: Cluster, sg: Any, graph: str
) -> None:
    remote = getattr(sg, f"{graph}_graph")
    config = new_config(graph)
    tag = thread_of(config)
    paused = remote.submit({"x": 3}, config).result(timeout=TIMEOUT)

    local = embedded(getattr(sg, f"build_{graph}")())
    local_config = new_config(f"{graph}-local")
    local_paused = local.invoke({"x": 3}, local_config)
    assert [i.value for i in paused["__interrupt__"]] == [{"ask": 4}]
    assert without_interrupts(paused) == without_interrupts(local_paused)
    assert cluster.gf.saver.get_status(tag)["status"] == "interrupted"
    state = remote.get_state(config)
    assert state.next == local.get_state(local_config).next
    assert [i.value for i in state.interrupts] == [{"ask": 4}]
    assert sg.counted(tag, "question") == 1
    levels = child_states(remote, config)
    assert len(levels) == (2 if graph == "ask" else 3)  # the paused child's state is shown
    assert levels == child_states(local, local_config)

    resumed = cli(cluster, "resume", tag, "--value", '"yes"')
    expected = local.invoke(Command(resume="yes"), local_config)
    assert resumed == {"status": "done", "output": expected}
    assert any("answer=yes" in entry for entry in expected["log"]), expected
    assert remote.get_state(config).values == local.get_state(local_config).values
    node = "asker" if graph == "ask" else "middle"
    same_histories(remote, config, local, local_config, node)
    assert sg.counted(tag, "question") == 2  # paused, then re-ran with the answer
    for name in ("prep", "before", "done", "after"):
        assert sg.counted(tag, name) == 1, name  # finished nodes did not run again


def test_a_worker_killed_inside_a_subgraph_node_loses_only_that_nodes_job(
    cluster: Cluster, sg: Any
) -> None:
    config = new_config("kill")
    tag = thread_of(config)
    handle = sg.kill_graph.submit({"x": 1}, config)
    wait_until(lambda: sg.counted(tag, "slow") >= 1, TIMEOUT, "the subgraph's slow node")
    (victim,) = [pid for pid, name in ran(cluster, tag) if name == "slow"]
    assert cluster.pool.worker_of_pid(victim) is not None
    os.kill(victim, signal.SIGKILL)
    started = time.monotonic()
    out = handle.result(timeout=TIMEOUT)
    recovered_in = time.monotonic() - started

    local = embedded(sg.build_kill())
    local_config = new_config("kill-local")
    assert out == local.invoke({"x": 1}, local_config)
    assert remote_values(sg.kill_graph, config) == remote_values(local, local_config)
    same_histories(sg.kill_graph, config, local, local_config, "work")
    assert sg.counted(tag, "slow") == 2  # the killed job ran again
    for name in ("prep", "first", "sub_call", "after"):
        assert sg.counted(tag, name) == 1, name  # nothing finished ran again
    again = [pid for pid, name in ran(cluster, tag) if name == "slow"]
    assert len(again) == 2 and again[1] != victim
    print(f"run done {recovered_in:.1f} s after the kill")


def remote_values(graph: Any, config: dict[str, Any]) -> Any:
    return graph.get_state(config).values


def fail_as_embedded(
    cluster: Cluster, remote: Any, builder: Any, value: Any, message: str
) -> tuple[dict[str, Any], Any, dict[str, Any]]:
    """Run ``remote`` and the same graph embedded on ``value``: both fail with ``message``
    and keep the same history. The remote config, the embedded graph and its config."""
    config = new_config("fail")
    with pytest.raises(ValueError, match=message):
        remote.submit(value, config).result(timeout=TIMEOUT)
    local = embedded(builder)
    local_config = new_config("fail-local")
    with pytest.raises(ValueError, match=message):
        local.invoke(value, local_config)
    assert cluster.gf.saver.get_status(thread_of(config))["status"] == "failed"
    assert history(remote, config) == history(local, local_config)
    return config, local, local_config


def retry_as_embedded(
    cluster: Cluster, config: dict[str, Any], local: Any, local_config: dict[str, Any]
) -> Any:
    """``durable-graph retry`` the remote thread: it ends with the output an embedded
    ``invoke(None)`` gives; that output."""
    retried = cli(cluster, "retry", thread_of(config))
    expected = local.invoke(None, local_config)
    assert retried == {"status": "done", "output": expected}
    return expected


def test_an_error_in_a_subgraph_fails_the_run_and_retry_resumes_at_the_failed_node(
    cluster: Cluster, sg: Any
) -> None:
    config, local, local_config = fail_as_embedded(
        cluster, sg.flaky_graph, sg.build_flaky(), {"x": 5}, sg.FLAKY_MESSAGE)
    tag = thread_of(config)
    expected = retry_as_embedded(cluster, config, local, local_config)
    assert expected["x"] == 12
    same_histories(sg.flaky_graph, config, local, local_config, "flaky_caller")
    assert sg.counted(tag, "flaky") == 2
    for name in ("prep", "before", "done", "after"):
        assert sg.counted(tag, name) == 1, name


def test_a_node_calling_a_subgraph_twice_resumes_the_second_call_alone(
    cluster: Cluster, sg: Any
) -> None:
    """Each call checkpoints under its own namespace (``twice:<id>``, ``twice:<id>|1``);
    after an error in the second call, a retry replays the node: the first call's
    recorded output is reused and the second resumes at its failed node."""
    config, local, local_config = fail_as_embedded(
        cluster, sg.twice_graph, sg.build_twice(), {"x": 3}, sg.SECOND_MESSAGE)
    tag = thread_of(config)
    (first,) = subgraph_namespaces(sg.twice_graph, config, "twice")[:1]
    assert subgraph_namespaces(sg.twice_graph, config, "twice") == [first, f"{first}|1"]

    expected = retry_as_embedded(cluster, config, local, local_config)
    assert expected["x"] == ((3 + 1 + 1) * 2 + sg.SECOND_CALL + 1) * 2
    same_histories(sg.twice_graph, config, local, local_config, "twice")
    assert sg.counted(tag, "t_last:111") == 2  # failed, then resumed there
    for name in ("prep", "t_first:4", "t_last:5", "t_first:110", "after"):
        assert sg.counted(tag, name) == 1, name  # the first call did not run again


@pytest.mark.parametrize("called", [False, True], ids=["as-node", "called"])
def test_a_subgraph_breakpoint_pauses_the_run_on_workers_and_resumes_past_it(
    cluster: Cluster, sg: Any, called: bool
) -> None:
    remote = sg.stop_called if called else sg.stop_node
    config = new_config(f"stop-{called}")
    tag = thread_of(config)
    paused = remote.submit({"x": 2}, config).result(timeout=TIMEOUT)
    local = embedded(sg.build_stop(called))
    local_config = new_config(f"stop-{called}-local")
    assert paused == local.invoke({"x": 2}, local_config)
    assert cluster.gf.saver.get_status(tag)["status"] == "interrupted"
    assert remote.get_state(config).next == local.get_state(local_config).next == ("stop",)
    levels = child_states(remote, config)
    assert levels == child_states(local, local_config)
    assert levels[-1][1] == ("done",)  # the subgraph waits before its breakpoint node
    assert sg.counted(tag, "done") == 0

    resumed = cli(cluster, "resume", tag)
    expected = local.invoke(None, local_config)
    assert resumed == {"status": "done", "output": expected}
    assert expected["x"] == (2 + 1) * 2
    same_histories(remote, config, local, local_config, "stop")
    for name in ("prep", "before", "done", "after"):
        assert sg.counted(tag, name) == 1, name


def by_name(chunks: list[tuple[Any, ...]]) -> list[str]:
    """Stream chunks with namespaces cut to node names (task ids differ per thread),
    sorted: parallel nodes finish in any order."""
    return sorted(repr((tuple(p.split(":")[0] for p in ns), *rest)) for ns, *rest in chunks)


def test_invoke_with_a_stream_mode_on_workers_narrows_chunks_to_the_output_schema(
    cluster: Cluster, sg: Any
) -> None:
    local = embedded(sg.build_io())
    for mode in ("updates", ["values", "updates"]):
        out = sg.io_graph.invoke({"q": "hi"}, new_config("io"), stream_mode=mode)
        assert out == local.invoke({"q": "hi"}, new_config("io-local"), stream_mode=mode)
        assert not any("scratch" in repr(chunk) for chunk in out), out


def test_a_subgraph_on_workers_streams_its_output_schemas_keys_as_embedded(
    cluster: Cluster, sg: Any
) -> None:
    """A subgraph run as a node streams (``subgraphs=True``) ``values`` of its output
    schema when a step wrote one, and ``updates`` narrowed to those keys."""
    modes = ["values", "updates"]
    chunks = list(sg.io_parent.stream({"q": "hi", "a": ""}, new_config("io-parent"),
                                      subgraphs=True, stream_mode=modes))
    local = embedded(sg.build_io_parent())
    local_chunks = list(local.stream({"q": "hi", "a": ""}, new_config("io-parent-local"),
                                     subgraphs=True, stream_mode=modes))
    assert by_name(chunks) == by_name(local_chunks)
    assert not any("scratch" in repr(chunk) for chunk in chunks), chunks


def test_parallel_interrupts_inside_a_subgraph_on_workers_are_resumed_by_id(
    cluster: Cluster, sg: Any
) -> None:
    def run(g: Any, config: dict[str, Any]) -> Any:
        paused = sorted(g.invoke({"log": []}, config)["__interrupt__"], key=lambda i: i.value)
        left = g.invoke(Command(resume={paused[0].id: "X"}), config)["__interrupt__"]
        done = g.invoke(Command(resume={i.id: "Y" for i in left}), config)
        return [i.value for i in paused], [i.value for i in left], done

    config = new_config("two-asks")
    got = run(sg.two_asks, config)
    assert got == run(embedded(sg.build_two_asks()), new_config("two-asks-local"))
    assert got[1] == ["ask_y"]
    tag = thread_of(config)
    assert (sg.counted(tag, "ask_x"), sg.counted(tag, "ask_y")) == (2, 3)


def comparable(chunks: list[tuple[Any, ...]]) -> list[str]:
    """``by_name`` of (namespace, mode, chunk) stream chunks without the task ids and
    interrupt ids, which differ per thread."""

    def same(chunk: Any) -> Any:
        ns, mode, payload = chunk
        if mode == "tasks":
            payload = {k: v for k, v in payload.items() if k != "id"}
            if payload.get("interrupts"):
                payload["interrupts"] = [i["value"] for i in payload["interrupts"]]
        if isinstance(payload, dict) and "__interrupt__" in payload:
            payload = {**payload, "__interrupt__": [i.value for i in payload["__interrupt__"]]}
        return ns, mode, payload

    return by_name([same(c) for c in chunks])


@pytest.mark.parametrize("graph", ["pair_graph", "pair_parent"])
def test_a_resumed_step_on_workers_streams_its_finished_tasks_as_cached(
    cluster: Cluster, sg: Any, graph: str
) -> None:
    """As embedded: resuming a step starts (``tasks``) every task of it, those that
    finished before the pause too, whose writes stream again marked cached (``updates``),
    in the root graph and in a subgraph (``subgraphs=True``)."""
    remote = getattr(sg, graph)
    local = embedded(getattr(sg, f"build_{graph.removesuffix('_graph')}")())
    modes = ["tasks", "updates"]

    def resumed(g: Any, config: dict[str, Any]) -> list[str]:
        g.invoke({"log": []}, config)
        return comparable(list(g.stream(Command(resume="go"), config, subgraphs=True,
                                        stream_mode=modes)))

    config = new_config(graph)
    got = resumed(remote, config)
    assert got == resumed(local, new_config(f"{graph}-local"))
    assert any("'cached': True" in chunk for chunk in got), got
    assert sg.counted(thread_of(config), "b") == 1  # streamed again, not run again


@pytest.mark.parametrize("graph", ["fan_node", "deep"])
def test_stream_subgraphs_on_workers_yields_the_childrens_events_with_their_namespace(
    cluster: Cluster, sg: Any, graph: str
) -> None:
    remote = getattr(sg, f"{graph}_graph" if graph == "deep" else graph)
    config = new_config(f"stream-{graph}")
    modes = ["updates", "values", "tasks"]
    chunks = list(remote.stream({"x": 1}, config, stream_mode=modes, subgraphs=True))
    local = embedded(getattr(sg, f"build_{graph}")())
    local_config = new_config(f"stream-{graph}-local")
    local_chunks = list(local.stream({"x": 1}, local_config, stream_mode=modes, subgraphs=True))
    assert comparable(chunks) == comparable(local_chunks)
    namespaces = {ns for ns, *_ in chunks}
    assert () in namespaces and len(namespaces) >= 2
    depth = 2 if graph == "deep" else 1
    assert max(len(ns) for ns in namespaces) == depth
    tag = thread_of(config)
    tasks = {f"{t.name}:{t.id}" for s in remote.get_state_history(config) for t in s.tasks}
    assert {ns[0] for ns in namespaces if ns} <= tasks, (namespaces, tag)


def test_command_parent_from_a_subgraph_node_routes_in_the_parent_on_workers(
    cluster: Cluster, sg: Any
) -> None:
    config = new_config("jump")
    tag = thread_of(config)
    out = sg.jump_graph.submit({"x": 0, "log": ["in"]}, config).result(timeout=TIMEOUT)
    local = embedded(sg.build_jump())
    local_config = new_config("jump-local")
    assert out == local.invoke({"x": 0, "log": ["in"]}, local_config)
    assert "jumped" in out["log"] and any(e.startswith("target") for e in out["log"])
    assert history(sg.jump_graph, config) == history(local, local_config)
    assert sg.counted(tag, "never") == 0
    assert sg.counted(tag, "jump") == 1


@pytest.mark.parametrize("mode", ["none", "true", "false"])
def test_subgraph_checkpointer_modes_on_workers_match_embedded(
    cluster: Cluster, sg: Any, mode: str
) -> None:
    remote = getattr(sg, f"mode_{mode}")
    config = new_config(f"mode-{mode}")
    runs = [remote.submit({"x": 0, "log": []}, config).result(timeout=TIMEOUT)
            for _ in range(2)]
    local = embedded(sg.build_mode({"none": None, "true": True, "false": False}[mode]))
    local_config = new_config(f"mode-{mode}-local")
    assert runs == [local.invoke({"x": 0, "log": []}, local_config) for _ in range(2)]
    assert history(remote, config) == history(local, local_config)
    assert sg.counted(thread_of(config), "s1") == 2
    if mode == "true":  # one history of the subgraph, kept across the two runs
        def kept(c: dict[str, Any]) -> dict[str, Any]:
            return {"configurable": {"thread_id": thread_of(c), "checkpoint_ns": "child"}}

        assert history(remote, kept(config)) == history(local, kept(local_config))
        assert len(history(remote, kept(config))) >= 4


@pytest.mark.chaos
def test_subgraph_runs_complete_while_pool_processes_are_killed(cluster: Cluster, sg: Any) -> None:
    """Fourteen runs with subgraphs while a pool process that ran one of their bodies is
    SIGKILLed every 1.5 s (work enough for four kills, however fast the jobs): every run
    ends with the embedded output; a body runs again only where one of its executions
    died (checked for the parent graph's nodes: a
    killed process may also have been starting a subgraph, whose step's jobs are then
    sent again, see the README's limits)."""
    graphs = [("fan_called", sg.fan_called, sg.build_fan_called())] * 8 + [
        ("kill", sg.kill_graph, sg.build_kill())] * 6
    configs = [new_config(f"soak-{name}") for name, _, _ in graphs]
    handles = [g.submit({"x": 1}, c) for (_, g, _), c in zip(graphs, configs, strict=True)]
    killed: list[int] = []
    deadline = time.monotonic() + 12
    while time.monotonic() < deadline:
        time.sleep(1.5)
        recent = [pid for c in configs for pid, _ in ran(cluster, thread_of(c))[-2:]]
        live = [p for p in recent if p not in killed and cluster.pool.worker_of_pid(p)]
        if live:
            os.kill(live[-1], signal.SIGKILL)
            killed.append(live[-1])
            cluster.pool._read_pool(cluster.client)  # the new pool processes' pids
    outs = [h.result(timeout=180) for h in handles]
    assert len(killed) >= 4, killed
    again = 0
    for (name, _, builder), config, out in zip(graphs, configs, outs, strict=True):
        assert out == embedded(builder).invoke({"x": 1}, new_config("soak-local")), name
        tag = thread_of(config)
        for body in {n for _, n in ran(cluster, tag)}:
            pids = [pid for pid, n in ran(cluster, tag) if n == body]
            normal = 2 if body == "caller" else 1  # the caller replays with the result
            again += max(0, len(pids) - normal)
            if body in ("prep", "after"):
                assert len(pids) == normal or set(pids) & set(killed), (tag, body, pids)
    print(f"soak: 12/12 done, {len(killed)} kills, {again} bodies ran again")
