"""The ``durable-graph`` command line against real Celery workers and Redis.

The test process is the producer (``CeleryExecutor``); one ``celery worker``
subprocess runs the jobs; ``durable-graph`` runs as a third process, as an
operator would run it, and must agree with what the producer reads back.

The last two tests pin bugs found here: a resume's pending state update missing from
``get_state``, and a resume from a past checkpoint that never ended on workers.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import redis

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "distributed"))

import cli_graphs  # noqa: E402
from dg_workers import WorkerPool  # noqa: E402

from durable_graph import Command, GraphValueError, RedisSaver  # noqa: E402
from durable_graph.cli import build_parser, main  # noqa: E402
from durable_graph.errors import DispatchError  # noqa: E402
from durable_graph.ops import resume_thread  # noqa: E402
from durable_graph.worker import CeleryExecutor, create_app  # noqa: E402
from tests.conftest import free_port  # noqa: E402

pytestmark = [pytest.mark.celery, pytest.mark.redis]

SECRET = "cli-test-secret-not-for-production"
_SCRIPT = Path(sys.executable).with_name("durable-graph")
CLI = [str(_SCRIPT)] if _SCRIPT.exists() else [
    sys.executable, "-c", "from durable_graph.cli import main; raise SystemExit(main())"]
"""The console script of this environment, or its entry point when it is not installed."""
CLI_TIMEOUT = 30.0
RUN_TIMEOUT = 20.0


@dataclass
class Workers:
    url: str
    queue: str
    pool: WorkerPool


@pytest.fixture(scope="module")
def workers(redis_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Workers]:
    """One worker for the module, on a queue of its own."""
    base = f"t-cli-{uuid.uuid4().hex}"
    queue, pool_key = f"{base}.q", f"{base}:pool"
    env = {
        "DURABLE_GRAPH_REDIS_URL": redis_server,
        "DURABLE_GRAPH_PREFIX": base,
        "DURABLE_GRAPH_QUEUE": queue,
        "DURABLE_GRAPH_SECRET_KEY": SECRET,
        "DG_CLI_POOL_KEY": pool_key,
    }
    pool = WorkerPool(
        module="cli_graphs", module_dir=HERE, queue=queue,
        log_dir=tmp_path_factory.mktemp("cli-workers"), env=env, redis_url=redis_server,
        pool_key=pool_key,
    )
    pool.start(1)
    try:
        yield Workers(redis_server, queue, pool)
    finally:
        pool.stop()
        client = redis.Redis.from_url(redis_server, socket_timeout=10)
        try:
            keys = list(client.scan_iter(match=f"{base}*", count=1000))
            client.delete(f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}", *keys)
        finally:
            client.close()


@dataclass
class Ops:
    """The producer's side of one test, and the CLI pointed at the same threads."""

    url: str
    prefix: str
    queue: str
    saver: RedisSaver
    executor: CeleryExecutor
    pool: WorkerPool

    def compile(self, builder: Any) -> Any:
        return builder.compile(checkpointer=self.saver, executor=self.executor)

    def cli(
        self, *args: str, code: bool = True, process: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """``durable-graph --redis-url U --prefix P --queue Q ARGS...``.

        In this process (``main``, with its own environment) unless ``process``: then
        in a new process, as an operator runs it. ``code=False``: a new process that
        cannot import the graphs' module (cli_graphs).
        """
        if code and not process:
            return self._in_process(args)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("DURABLE_GRAPH_") and k != "PYTHONPATH"}
        env["DURABLE_GRAPH_SECRET_KEY"] = SECRET
        inherited = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep)
                     if p and p != str(HERE)]
        env["PYTHONPATH"] = os.pathsep.join([str(HERE)] * code + inherited)
        argv = [*CLI, "--redis-url", self.url, "--prefix", self.prefix,
                "--queue", self.queue, *args]
        try:
            return subprocess.run(argv, env=env, capture_output=True, text=True, check=False,
                                  timeout=CLI_TIMEOUT, cwd=None if code else HERE.parent)
        except subprocess.TimeoutExpired as exc:
            pytest.fail(f"{' '.join(argv)} did not finish: {exc}\n{self.pool.log_tails()}")

    def _in_process(self, args: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
        argv = ["--redis-url", self.url, "--prefix", self.prefix, "--queue", self.queue, *args]
        out, err = io.StringIO(), io.StringIO()
        env = {k: v for k, v in os.environ.items() if not k.startswith("DURABLE_GRAPH_")}
        env["DURABLE_GRAPH_SECRET_KEY"] = SECRET
        with mock.patch.dict(os.environ, env, clear=True), \
                contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as exc:  # argparse's usage errors
                code = exc.code if isinstance(exc.code, int) else 2
        return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())

    def ok(self, *args: str) -> str:
        """Run the CLI, require exit status 0, return its stdout."""
        done = self.cli(*args)
        assert done.returncode == 0, (
            f"{args} exited {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}\n"
            f"{self.pool.log_tails()}")
        return done.stdout

    def threads(self, status: str) -> list[str]:
        page = json.loads(self.ok("threads", "--status", status, "--json"))
        return [t["thread_id"] for t in page["threads"]]

    def show(self, thread_id: str) -> dict[str, Any]:
        return json.loads(self.ok("show", thread_id, "--json"))  # type: ignore[no-any-return]


@pytest.fixture
def ops(workers: Workers, redis_prefix: str) -> Ops:
    app = create_app(workers.url, prefix=redis_prefix, queue=workers.queue, secret_key=SECRET)
    saver = RedisSaver.from_url(workers.url, prefix=redis_prefix)
    return Ops(workers.url, redis_prefix, workers.queue, saver, CeleryExecutor(app), workers.pool)


def config_of(thread_id: str) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread_id}}


def interrupted_thread(ops: Ops) -> tuple[Any, str]:
    """Start the approval graph from the producer; it pauses at ``approve``."""
    graph = ops.compile(cli_graphs.build_approval())
    thread_id = f"approval-{uuid.uuid4().hex[:8]}"
    out = graph.submit({"topic": "launch"}, config_of(thread_id)).result(timeout=RUN_TIMEOUT)
    assert out["draft"] == "LAUNCH"
    assert [i.value for i in out["__interrupt__"]] == [cli_graphs.QUESTION]
    return graph, thread_id


def test_resume_from_a_third_process_applies_update_and_value(ops: Ops) -> None:
    graph, thread_id = interrupted_thread(ops)
    _, other = interrupted_thread(ops)  # stays interrupted: the filters must tell them apart
    assert sorted(ops.threads("interrupted")) == sorted([thread_id, other])
    assert ops.threads("done") == []

    shown = ops.show(thread_id)
    assert shown["status"] == "interrupted"
    assert shown["next"] == ["approve"]
    assert [i["value"] for i in shown["interrupts"]] == [cli_graphs.QUESTION]
    assert shown["values"] == {"topic": "launch", "draft": "LAUNCH"}
    assert shown["error"] is None

    done = ops.cli("resume", thread_id, "--value", '"yes"', "--update", '{"reviewer": "ann"}',
                   "--timeout", str(RUN_TIMEOUT), process=True)
    assert done.returncode == 0, f"{done.stderr}\n{ops.pool.log_tails()}"
    expected = {"topic": "launch", "draft": "LAUNCH", "decision": "yes", "reviewer": "ann",
                "published": "LAUNCH yes by ann"}
    assert json.loads(done.stdout) == {"status": "done", "output": expected}

    # the producer reads the same state back
    state = graph.get_state(config_of(thread_id))
    assert state.values == expected
    assert state.next == ()
    assert not state.interrupts
    assert ops.threads("done") == [thread_id]
    assert ops.threads("interrupted") == [other]
    after = ops.show(thread_id)
    assert after["status"] == "done"
    assert after["next"] == []
    assert after["values"] == expected
    assert len(after["history"]) > len(shown["history"])


def test_show_a_failed_thread_names_the_error_with_its_traceback(ops: Ops) -> None:
    graph = ops.compile(cli_graphs.build_boom())
    thread_id = f"boom-{uuid.uuid4().hex[:8]}"
    with pytest.raises(ValueError, match=cli_graphs.BOOM):
        graph.submit({"value": 1}, config_of(thread_id)).result(timeout=RUN_TIMEOUT)

    assert ops.threads("failed") == [thread_id]
    shown = ops.show(thread_id)
    assert shown["status"] == "failed"
    error = shown["error"]
    assert error["type"].endswith("ValueError")
    assert error["message"] == cli_graphs.BOOM
    assert "Traceback" in error["traceback"]
    assert "in explode" in error["traceback"]
    assert f"ValueError: {cli_graphs.BOOM}" in error["traceback"]
    # the step before the failure was committed; the failed node is still next
    assert shown["values"] == {"value": 2}
    assert shown["next"] == ["explode"]


@pytest.mark.parametrize("flag", ["--value", "--update"])
def test_resume_with_bad_json_fails_naming_the_flag_and_changes_nothing(
    ops: Ops, flag: str
) -> None:
    graph, thread_id = interrupted_thread(ops)
    before = graph.get_state(config_of(thread_id))
    generation = ops.saver.leases.generation(thread_id)

    done = ops.cli("resume", thread_id, flag, "not json", "--timeout", "5")

    assert done.returncode != 0
    assert flag in done.stderr and "JSON" in done.stderr, done.stderr
    assert done.stdout == ""
    after = graph.get_state(config_of(thread_id))
    assert after.values == before.values and after.next == ("approve",)
    assert ops.saver.leases.generation(thread_id) == generation, "no run was started"
    assert ops.threads("interrupted") == [thread_id]
    # and the thread still resumes fine
    resumed = graph.invoke(Command(resume="ok"), config_of(thread_id))
    assert resumed["published"] == "LAUNCH ok by nobody"


def test_resume_or_show_of_an_unknown_thread_fails_clearly(ops: Ops) -> None:
    done = ops.cli("resume", "no-such-thread", "--value", '"yes"', "--timeout", "5")
    assert done.returncode != 0
    assert "no-such-thread" in done.stderr and "no distributed run" in done.stderr, done.stderr
    assert done.stdout == ""

    shown = ops.cli("show", "no-such-thread")
    assert shown.returncode != 0
    assert "no thread 'no-such-thread'" in shown.stderr, shown.stderr
    assert ops.threads("running") == []


def test_show_includes_an_update_applied_by_a_resume_that_interrupted_again(ops: Ops) -> None:
    graph, thread_id = interrupted_thread(ops)
    done = ops.cli("resume", thread_id, "--update", '{"reviewer": "bob"}',
                   "--timeout", str(RUN_TIMEOUT))
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert printed["status"] == "interrupted"
    assert printed["output"]["reviewer"] == "bob"  # the run applied the update ...
    assert graph.get_state(config_of(thread_id)).values["reviewer"] == "bob"  # ... get_state not
    assert ops.show(thread_id)["values"]["reviewer"] == "bob"


def test_resume_with_a_value_from_an_older_checkpoint_ends(ops: Ops) -> None:
    graph, thread_id = interrupted_thread(ops)
    fork_id = graph.get_state(config_of(thread_id)).config["configurable"]["checkpoint_id"]
    graph.invoke(Command(resume="yes"), config_of(thread_id))
    history = list(graph.get_state_history(config_of(thread_id)))

    done = ops.cli("resume", thread_id, "--checkpoint", fork_id, "--value", '"again"',
                   "--timeout", "4")

    # embedded, the same Command on the same checkpoint ends "done" (as in LangGraph)
    assert done.returncode == 0, done.stderr  # exits 3: still running after 4 s
    printed = json.loads(done.stdout)
    assert printed["status"] == "done"
    assert printed["output"]["published"].startswith("LAUNCH ")
    assert len(list(graph.get_state_history(config_of(thread_id)))) > len(history)


COMMANDS = ["threads", "show", "resume", "retry", "cancel", "fork", "worker", "scheduler",
            "ping", "ui"]


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_of_every_command_exits_0(
    command: str | None, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--help"] if command is None else [command, "--help"]
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: durable-graph")
    if command is not None:
        assert f"durable-graph {command}" in out


def test_every_command_has_help_and_the_console_script_runs() -> None:
    parser = build_parser()
    choices = next(a.choices for a in parser._actions if a.dest == "command")
    assert sorted(choices) == sorted(COMMANDS)
    done = subprocess.run([*CLI, "--help"], capture_output=True, text=True, check=False,
                          timeout=30)
    assert done.returncode == 0, done.stderr
    for command in COMMANDS:
        assert command in done.stdout


def test_worker_without_a_signing_key_refuses_to_start() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DURABLE_GRAPH_SECRET")}
    done = subprocess.run(
        [sys.executable, "-c", "from durable_graph.cli import main; raise SystemExit(main())",
         "worker"], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "DURABLE_GRAPH_SECRET_KEY" in done.stderr


@pytest.mark.parametrize("argv, flag", [
    (["scheduler", "--once", "--loglevel", "chatty"], "--loglevel"),
    (["worker", "--loglevel", "chatty"], "--loglevel"),
    (["scheduler", "--once", "--interval", "-1"], "--interval"),
    (["ping", "--timeout", "0"], "--timeout"),
    (["resume", "t", "--timeout", "-5"], "--timeout"),
    (["worker", "--concurrency", "0"], "--concurrency"),
    (["threads", "--limit", "many"], "--limit"),
    (["--prefix", "", "threads"], "--prefix"),
    (["--redis-url", "", "threads"], "--redis-url"),
    (["--queue", " ", "threads"], "--queue"),
    (["ui", "--loglevel", "chatty"], "--loglevel"),
    (["ui", "--port", "70000"], "--port"),
    (["scheduler", "--once", "--metrics-port", "-1"], "--metrics-port"),
])
def test_a_bad_option_value_is_a_usage_error_naming_the_option(
    argv: list[str], flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Refused before anything connects or starts: exit 2 and the option's name, no traceback."""
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}" in err and "Traceback" not in err, err


# -- operating threads: show without code, cancel, retry, fork, tables ---------------------


def test_show_in_a_process_that_cannot_import_the_graph(ops: Ops) -> None:
    _, waiting = interrupted_thread(ops)
    boom = ops.compile(cli_graphs.build_boom())
    failed = f"boom-{uuid.uuid4().hex[:8]}"
    with pytest.raises(ValueError, match=cli_graphs.BOOM):
        boom.submit({"value": 1}, config_of(failed)).result(timeout=RUN_TIMEOUT)
    probe = ops.cli("show", waiting, "--json", code=False)
    assert probe.returncode == 0, probe.stderr

    shown = json.loads(probe.stdout)
    assert shown["from_graph"] is False  # the graph's module is not importable there
    assert shown["status"] == "interrupted"
    assert shown["next"] == ["approve"]
    assert [i["value"] for i in shown["interrupts"]] == [cli_graphs.QUESTION]
    assert shown["values"] == {"topic": "launch", "draft": "LAUNCH"}
    assert [h["source"] for h in shown["history"]] == ["loop", "loop", "input"]

    bad = json.loads(ops.cli("show", failed, "--json", code=False).stdout)
    assert bad["status"] == "failed"
    assert bad["next"] == ["explode"]
    assert bad["values"] == {"value": 2}
    assert bad["error"]["type"].endswith("ValueError")
    assert "in explode" in bad["error"]["traceback"]

    table = ops.cli("show", failed, code=False)
    assert table.returncode == 0, table.stderr
    assert "next        explode" in table.stdout
    assert f"ValueError: {cli_graphs.BOOM}" in table.stdout


def gate_of(ops: Ops) -> tuple[redis.Redis, str]:
    return redis.Redis.from_url(ops.url, socket_timeout=10), f"{ops.prefix}:gate"


def runs_of(client: redis.Redis, gate: str, node: str) -> int:
    return int(client.get(f"{gate}:runs:{node}") or 0)


def wait_for(condition: Any, what: str, timeout: float = RUN_TIMEOUT) -> None:
    from dg_workers import wait_until
    wait_until(condition, timeout, what)


def test_cancel_fences_out_the_running_node_and_resume_continues(ops: Ops) -> None:
    from durable_graph import RunCancelledError

    client, gate = gate_of(ops)
    graph = ops.compile(cli_graphs.build_gated())
    thread_id = f"gated-{uuid.uuid4().hex[:8]}"
    handle = graph.submit({"gate": gate}, config_of(thread_id))
    wait_for(lambda: runs_of(client, gate, "slow") == 1, "the slow node to start")

    done = ops.cli("cancel", thread_id, "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["previous_status"] == "running"
    with pytest.raises(RunCancelledError, match="cancelled"):
        handle.result(timeout=RUN_TIMEOUT)  # the producer learns at once
    assert ops.show(thread_id)["status"] == "cancelled"

    client.rpush(gate, "go")  # the node ends now: its result is refused, nothing follows
    wait_for(lambda: client.llen(gate) == 0, "the slow node to take its token")
    time.sleep(1.0)  # give a (wrong) follow-up step the time to run
    assert runs_of(client, gate, "last") == 0
    shown = ops.show(thread_id)
    assert shown["status"] == "cancelled"
    assert shown["values"]["n"] == 1  # the last committed step: first ran, slow did not commit

    again = ops.cli("cancel", thread_id)
    assert again.returncode == 1 and "already" not in again.stdout
    assert "cancelled: nothing to cancel" in again.stderr

    client.rpush(gate, "go")
    resumed = ops.cli("resume", thread_id, "--timeout", str(RUN_TIMEOUT))
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout) == {"status": "done", "output": {"gate": gate, "n": 20}}
    assert runs_of(client, gate, "first") == 1  # committed work was not redone
    assert runs_of(client, gate, "slow") == 2
    assert runs_of(client, gate, "last") == 1
    client.close()


def test_graph_cancel_and_handle_cancel_stop_a_run(ops: Ops) -> None:
    from durable_graph import RunCancelledError

    client, gate = gate_of(ops)
    graph = ops.compile(cli_graphs.build_gated())
    for how in ("graph", "handle"):
        thread_id = f"gated-{how}-{uuid.uuid4().hex[:8]}"
        handle = graph.submit({"gate": gate}, config_of(thread_id))
        wait_for(lambda: runs_of(client, gate, "slow") >= 1, "the slow node to start")
        if how == "graph":
            graph.cancel(config_of(thread_id))
        else:
            handle.cancel()
        with pytest.raises(RunCancelledError):
            handle.result(timeout=RUN_TIMEOUT)
        assert handle.status() == "cancelled"
        assert ops.saver.get_status(thread_id)["status"] == "cancelled"
        client.rpush(gate, "go")
        wait_for(lambda: client.llen(gate) == 0, "the slow node to take its token")
        client.delete(f"{gate}:runs:slow")
    client.close()


def test_retry_runs_a_failed_thread_from_the_failed_step(ops: Ops) -> None:
    client, gate = gate_of(ops)
    graph = ops.compile(cli_graphs.build_flaky())
    thread_id = f"flaky-{uuid.uuid4().hex[:8]}"
    with pytest.raises(RuntimeError, match="not yet"):
        graph.submit({"gate": gate}, config_of(thread_id)).result(timeout=RUN_TIMEOUT)
    assert ops.threads("failed") == [thread_id]

    client.set(f"{gate}:ok", "1")
    done = ops.cli("retry", thread_id, "--timeout", str(RUN_TIMEOUT))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"status": "done", "output": {"gate": gate, "n": 100}}
    assert runs_of(client, gate, "first") == 1
    assert runs_of(client, gate, "flaky") == 2

    refused = ops.cli("retry", thread_id)
    assert refused.returncode == 1
    assert "is done, not failed" in refused.stderr
    client.close()


def test_fork_starts_a_new_thread_from_a_past_checkpoint(ops: Ops) -> None:
    graph, thread_id = interrupted_thread(ops)
    paused_at = graph.get_state(config_of(thread_id)).config["configurable"]["checkpoint_id"]
    graph.invoke(Command(resume="yes"), config_of(thread_id))
    before = graph.get_state(config_of(thread_id)).values

    new_id = ops.ok("fork", thread_id, "--checkpoint", paused_at,
                    "--new-thread", f"{thread_id}-b").strip()
    assert new_id == f"{thread_id}-b"
    shown = ops.show(new_id)
    assert shown["status"] == "interrupted"
    assert shown["values"] == {"topic": "launch", "draft": "LAUNCH"}
    assert [h["source"] for h in shown["history"]] == ["fork"]

    done = ops.cli("resume", new_id, "--timeout", str(RUN_TIMEOUT))
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["status"] == "interrupted"  # approve runs again and asks again
    done = ops.cli("resume", new_id, "--value", '"again"', "--timeout", str(RUN_TIMEOUT))
    assert json.loads(done.stdout)["output"]["published"] == "LAUNCH again by nobody"
    assert graph.get_state(config_of(thread_id)).values == before  # the source is unchanged

    taken = ops.cli("fork", thread_id, "--checkpoint", paused_at, "--new-thread", new_id)
    assert taken.returncode == 1 and "exists already" in taken.stderr
    missing = ops.cli("fork", thread_id, "--checkpoint", "nope")
    assert missing.returncode == 1 and "no checkpoint 'nope'" in missing.stderr


def test_resume_of_a_done_thread_or_with_a_non_object_update_is_refused(ops: Ops) -> None:
    graph, thread_id = interrupted_thread(ops)
    bad = ops.cli("resume", thread_id, "--update", "[1, 2]")
    assert bad.returncode == 2
    assert "object" in bad.stderr and "list" in bad.stderr, bad.stderr
    graph.invoke(Command(resume="yes"), config_of(thread_id))
    done = ops.cli("resume", thread_id, "--value", '"again"')
    assert done.returncode == 1
    assert "is done: nothing to resume" in done.stderr, done.stderr
    assert done.stdout == ""


def test_resume_while_the_broker_is_down_fails_clearly_and_leaves_the_thread_free(
    ops: Ops,
) -> None:
    """A run that could not be sent holds no lease: the next resume starts at once."""
    _, thread_id = interrupted_thread(ops)
    down = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    dead = create_app(ops.url, broker_url=down, prefix=ops.prefix, queue=ops.queue,
                      secret_key=SECRET)
    with pytest.raises(DispatchError, match="broker") as refused:
        resume_thread(ops.saver, dead, thread_id, value="no")
    assert thread_id in str(refused.value)
    assert ops.saver.get_status(thread_id)["status"] == "interrupted"  # type: ignore[index]
    done = ops.cli("resume", thread_id, "--value", '"yes"', "--timeout", str(RUN_TIMEOUT))
    assert done.returncode == 0, f"{done.stderr}\n{ops.pool.log_tails()}"
    assert json.loads(done.stdout)["output"]["decision"] == "yes"


def test_ping_with_the_broker_down_exits_1_naming_the_broker(ops: Ops) -> None:
    env = {**os.environ, "DURABLE_GRAPH_SECRET_KEY": SECRET,
           "DURABLE_GRAPH_BROKER_URL": f"redis://127.0.0.1:{free_port()}/0"}
    done = subprocess.run([*CLI, "--redis-url", ops.url, "--prefix", ops.prefix, "ping",
                           "--timeout", "1"], env=env, capture_output=True, text=True,
                          timeout=CLI_TIMEOUT, check=False)
    assert done.returncode == 1
    assert "broker does not answer" in done.stderr and "Traceback" not in done.stderr, \
        done.stderr


def test_resume_or_fork_from_an_unknown_checkpoint_is_refused_and_changes_nothing(
    ops: Ops,
) -> None:
    _, thread_id = interrupted_thread(ops)
    done = ops.cli("resume", thread_id, "--checkpoint", "no-such-checkpoint")
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "has no checkpoint 'no-such-checkpoint'" in done.stderr, done.stderr
    assert "run " not in done.stderr  # refused before any run started
    for command in ("resume", "fork"):
        done = ops.cli(command, thread_id, "--checkpoint", "")
        assert done.returncode == 2, (command, done.stdout, done.stderr)
        assert "checkpoint id must not be empty" in done.stderr, done.stderr
    checkpoint = ops.show(thread_id)["checkpoint_id"]
    done = ops.cli("fork", thread_id, "--checkpoint", checkpoint, "--new-thread", "")
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "new thread id must not be empty" in done.stderr, done.stderr
    assert ops.show(thread_id)["status"] == "interrupted"
    assert ops.threads("interrupted") == [thread_id]  # no fork was made


def test_threads_filters_pages_and_prints_tables(ops: Ops) -> None:
    _, a = interrupted_thread(ops)
    _, b = interrupted_thread(ops)
    _, c = interrupted_thread(ops)

    page = json.loads(ops.ok("threads", "--json", "--limit", "2"))
    assert [t["thread_id"] for t in page["threads"]] == [c, b]
    assert page["total"] == 3 and page["next_offset"] == 2
    page = json.loads(ops.ok("threads", "--json", "--limit", "2", "--offset", "2"))
    assert [t["thread_id"] for t in page["threads"]] == [a]
    assert page["next_offset"] is None
    assert json.loads(ops.ok("threads", "--json", "--older-than", "1h"))["threads"] == []
    assert json.loads(ops.ok("threads", "--json", "--newer-than", "1h"))["total"] == 3
    assert json.loads(ops.ok("threads", "--json", "--graph", "no-such-graph"))["total"] == 0
    assert json.loads(ops.ok("threads", "--json", "--graph", "LangGraph"))["total"] == 3

    done = ops.cli("threads")
    assert done.returncode == 0
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["THREAD", "STATUS", "UPDATED", "GRAPH", "CHECKPOINT", "ERROR"]
    assert [line.split()[0] for line in lines[1:]] == [c, b, a]
    status_col = lines[0].index("STATUS")
    assert all(line[status_col:].startswith("interrupted") for line in lines[1:])
    assert "1-3 of 3 threads" in done.stderr

    bad = ops.cli("threads", "--older-than", "soon")
    assert bad.returncode == 2 and "not an age" in bad.stderr


def test_show_cuts_long_values_unless_full(ops: Ops) -> None:
    graph = ops.compile(cli_graphs.build_approval())
    thread_id = f"long-{uuid.uuid4().hex[:8]}"
    graph.submit({"topic": "x" * 300}, config_of(thread_id)).result(timeout=RUN_TIMEOUT)
    short = ops.ok("show", thread_id)
    assert "x" * 300 not in short and "…" in short and "--full" in short
    assert "x" * 300 in ops.ok("show", thread_id, "--full")
    assert json.loads(ops.ok("show", thread_id, "--json"))["values"]["topic"] == "x" * 300


def test_piping_into_a_closed_reader_ends_quietly(ops: Ops) -> None:
    for _ in range(2):
        interrupted_thread(ops)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DURABLE_GRAPH_")}
    env["DURABLE_GRAPH_SECRET_KEY"] = SECRET
    argv = [*CLI, "--redis-url", ops.url, "--prefix", ops.prefix, "threads"]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # as `| head -0` does, before the command writes
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=CLI_TIMEOUT) == 0, err
    assert "Traceback" not in err and "BrokenPipe" not in err, err


def test_help_shows_every_default(capsys: pytest.CaptureFixture[str]) -> None:
    for command, defaults in {"threads": ["50", "0"], "show": ["10"],
                              "ping": ["5.0"], "scheduler": ["1.0", "INFO"],
                              "worker": ["WARNING", "prefork"]}.items():
        with pytest.raises(SystemExit):
            main([command, "--help"])
        out = " ".join(capsys.readouterr().out.split())
        for value in defaults:
            assert f"(default: {value})" in out, (command, value, out)


# -- double texting: new input for a thread whose run goes on ------------------------------


def start_gated(ops: Ops, client: redis.Redis, gate: str, inp: dict[str, Any],
                thread_id: str, started: int) -> Any:
    """Submit the gated graph and wait until its slow node runs (``started`` runs so far)."""
    graph = ops.compile(cli_graphs.build_gated())
    handle = graph.submit({"gate": gate, **inp}, config_of(thread_id))
    wait_for(lambda: runs_of(client, gate, "slow") == started, "the slow node to start")
    return graph, handle


def test_multitask_reject_is_the_default_and_changes_nothing(ops: Ops) -> None:
    from durable_graph import ThreadBusyError

    client, gate = gate_of(ops)
    thread_id = f"mt-reject-{uuid.uuid4().hex[:8]}"
    graph, first = start_gated(ops, client, gate, {"n": 0}, thread_id, 1)
    with pytest.raises(ThreadBusyError, match="multitask='enqueue'"):
        graph.submit({"gate": gate, "n": 5}, config_of(thread_id))
    with pytest.raises(GraphValueError, match="multitask must be one of"):
        graph.invoke({"gate": gate}, config_of(thread_id), multitask="queue")
    client.rpush(gate, "go")
    assert first.result(timeout=RUN_TIMEOUT) == {"gate": gate, "n": 20}
    client.close()


def test_multitask_enqueue_runs_after_the_current_run(ops: Ops) -> None:
    client, gate = gate_of(ops)
    thread_id = f"mt-enqueue-{uuid.uuid4().hex[:8]}"
    graph, first = start_gated(ops, client, gate, {"n": 0}, thread_id, 1)
    with ThreadPoolExecutor(1) as pool:
        second = pool.submit(graph.invoke, {"gate": gate, "n": 5}, config_of(thread_id),
                             multitask="enqueue")
        time.sleep(0.5)
        assert not second.done()  # waits for the first run
        client.rpush(gate, "go", "go")
        assert first.result(timeout=RUN_TIMEOUT) == {"gate": gate, "n": 20}
        assert second.result(timeout=RUN_TIMEOUT) == {"gate": gate, "n": 70}
    assert runs_of(client, gate, "last") == 2
    client.close()


def test_multitask_interrupt_stops_the_current_run_at_its_next_step_boundary(
    ops: Ops,
) -> None:
    from durable_graph import RunCancelledError

    client, gate = gate_of(ops)
    thread_id = f"mt-interrupt-{uuid.uuid4().hex[:8]}"
    client.rpush(gate, "go")
    graph = ops.compile(cli_graphs.build_gated())
    assert graph.invoke({"gate": gate, "n": 0, "note": "v1"}, config_of(thread_id))["n"] == 20
    _, current = start_gated(ops, client, gate, {"n": 0, "note": "v2"}, thread_id, 2)
    with ThreadPoolExecutor(1) as pool:
        starting = pool.submit(graph.submit, {"gate": gate, "n": 5}, config_of(thread_id),
                               multitask="interrupt")
        time.sleep(0.5)
        assert not starting.done()  # the current step is still running: it is not cut off
        client.rpush(gate, "go")  # the slow node ends and its step commits; no next step
        with pytest.raises(RunCancelledError, match="step boundary"):
            current.result(timeout=RUN_TIMEOUT)
        new = starting.result(timeout=RUN_TIMEOUT)
    client.rpush(gate, "go")
    # the new input lands on what the stopped run committed (note v2), and the stopped
    # run's own next node (last) never ran
    assert new.result(timeout=RUN_TIMEOUT) == {"gate": gate, "n": 70, "note": "v2"}
    assert runs_of(client, gate, "slow") == 3
    assert runs_of(client, gate, "last") == 2  # the first run's and the new one's
    assert ops.show(thread_id)["status"] == "done"
    client.close()


def test_multitask_rollback_stops_the_current_run_and_undoes_it(ops: Ops) -> None:
    from durable_graph import RunCancelledError

    client, gate = gate_of(ops)
    thread_id = f"mt-rollback-{uuid.uuid4().hex[:8]}"
    client.rpush(gate, "go")
    graph = ops.compile(cli_graphs.build_gated())
    done = graph.invoke({"gate": gate, "n": 0, "note": "v1"}, config_of(thread_id))
    assert done == {"gate": gate, "n": 20, "note": "v1"}
    _, current = start_gated(ops, client, gate, {"n": 0, "note": "v2"}, thread_id, 2)

    new = graph.submit({"gate": gate, "n": 5}, config_of(thread_id), multitask="rollback")
    with pytest.raises(RunCancelledError, match="rollback"):
        current.result(timeout=RUN_TIMEOUT)  # stopped at once
    client.rpush(gate, "go", "go")  # the stopped run's node ends (refused), then the new one's
    # the new input lands on the checkpoint the stopped run started from (note v1)
    assert new.result(timeout=RUN_TIMEOUT) == {"gate": gate, "n": 70, "note": "v1"}
    assert runs_of(client, gate, "last") == 2  # the first run's and the new one's
    assert ops.show(thread_id)["status"] == "done"
    client.close()


# -- a graph the workers cannot load ------------------------------------------------------

_UNLOADABLE = '''
from typing import TypedDict

from durable_graph import END, START, StateGraph

class S(TypedDict):
    n: int

def step(state):
    return {"n": state["n"] + 1}

def build():
    b = StateGraph(S)
    b.add_node("step", step)
    b.add_edge(START, "step")
    b.add_edge("step", END)
    return b
'''


def test_a_graph_workers_cannot_import_fails_the_run_at_once_and_show_says_why(
    ops: Ops, tmp_path: Path
) -> None:
    import importlib

    from durable_graph import DispatchError

    module = f"dg_only_here_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(_UNLOADABLE)
    sys.path.insert(0, str(tmp_path))
    try:
        mod = importlib.import_module(module)
        app = create_app(ops.url, prefix=ops.prefix, queue=ops.queue, secret_key=SECRET)
        mod.graph = mod.build().compile(checkpointer=ops.saver,  # type: ignore[attr-defined]
                                        executor=CeleryExecutor(app, ship="import"))
        thread_id = f"unloadable-{uuid.uuid4().hex[:8]}"
        started = time.monotonic()
        with pytest.raises(DispatchError, match=f"cannot load graph '{module}:graph'"):
            mod.graph.invoke({"n": 1}, config_of(thread_id))
        assert time.monotonic() - started < RUN_TIMEOUT / 2  # at once, not after a timeout
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop(module, None)

    shown = ops.show(thread_id)
    assert shown["status"] == "failed"
    assert shown["error"]["type"] == "durable_graph.errors.DispatchError"
    assert module in shown["error"]["message"]
    assert "Install the module on the workers" in shown["error"]["message"]
    assert "ship" in shown["error"]["message"]
    assert ops.threads("running") == []
