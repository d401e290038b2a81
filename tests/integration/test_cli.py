"""The ``durable-graph`` command line against real Celery workers and Redis.

The test process is the producer (``CeleryExecutor``); one ``celery worker``
subprocess runs the jobs; ``durable-graph`` runs as a third process, as an
operator would run it, and must agree with what the producer reads back.

The last two tests pin bugs found here: a resume's pending state update missing from
``get_state``, and a resume from a past checkpoint that never ended on workers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "distributed"))

import cli_graphs  # noqa: E402
from dg_workers import WorkerPool  # noqa: E402

from durable_graph import Command, RedisSaver  # noqa: E402
from durable_graph.cli import build_parser, main  # noqa: E402
from durable_graph.worker import CeleryExecutor, create_app  # noqa: E402

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

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``durable-graph --redis-url U --prefix P --queue Q ARGS...`` in a new process."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("DURABLE_GRAPH_")}
        env["DURABLE_GRAPH_SECRET_KEY"] = SECRET
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(HERE), os.environ.get("PYTHONPATH", "")) if p)
        argv = [*CLI, "--redis-url", self.url, "--prefix", self.prefix,
                "--queue", self.queue, *args]
        try:
            return subprocess.run(argv, env=env, capture_output=True, text=True, check=False,
                                  timeout=CLI_TIMEOUT)
        except subprocess.TimeoutExpired as exc:
            pytest.fail(f"{' '.join(argv)} did not finish: {exc}\n{self.pool.log_tails()}")

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
                   "--timeout", str(RUN_TIMEOUT))
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
