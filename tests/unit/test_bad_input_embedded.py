"""Bad input to the embedded engine: a clear error, and the thread as it was.

One table: each row makes one careless or hostile call against a thread that has
finished a run on a real SQLite file, and asserts the error type, the words that
name the problem, and that the thread's history and values did not change.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypedDict

import pytest

from durable_graph import (
    END,
    START,
    CheckpointStoreError,
    Command,
    DurableGraphError,
    EmptyInputError,
    GraphValueError,
    InvalidUpdateError,
    SerializationError,
    SqliteSaver,
    StateGraph,
)


def picky_add(left: list[str], right: list[str]) -> list[str]:
    """A reducer that refuses one value (a user's reducer that raises)."""
    if "poison" in right:
        raise ValueError("poison is not allowed in log")
    return left + right


class State(TypedDict, total=False):
    x: Any
    log: Annotated[list[str], picky_add]




def build(saver: SqliteSaver, runs: list[str]) -> Any:
    def step(state: State) -> State:
        runs.append("step")
        if state.get("x") == "make-poison":
            return {"log": ["poison"]}
        if state.get("x") == "make-lock":
            return {"x": threading.Lock()}
        return {"log": [f"x={state.get('x')}"]}

    g = StateGraph(State)
    g.add_node("step", step)
    g.add_edge(START, "step")
    g.add_edge("step", END)
    return g.compile(checkpointer=saver)


def cfg(thread: Any = "t", **extra: Any) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread, **extra}}


Row = tuple[str, Callable[[Any], Any], type[BaseException], tuple[str, ...]]

ROWS: list[Row] = [
    ("thread id as bytes", lambda g: g.invoke({"x": 1}, cfg(b"t")), GraphValueError,
     ("thread_id must be a str, int or UUID", "bytes")),
    ("thread id as float", lambda g: g.invoke({"x": 1}, cfg(1.5)), GraphValueError,
     ("thread_id must be a str, int or UUID", "float")),
    ("thread id as dict", lambda g: g.get_state(cfg({"id": 1})), GraphValueError,
     ("thread_id must be a str, int or UUID", "dict")),
    ("thread id as bool", lambda g: g.invoke({"x": 1}, cfg(True)), GraphValueError,
     ("thread_id must be a str, int or UUID", "bool")),
    ("thread id None", lambda g: g.invoke({"x": 1}, cfg(None)), GraphValueError,
     ("needs a thread id",)),
    ("update_state of a checkpoint that does not exist",
     lambda g: g.update_state(cfg(checkpoint_id=str(uuid.uuid4())), {"x": 5}),
     GraphValueError, ("has no checkpoint", "nothing was written")),
    ("invoke(None) from a checkpoint that does not exist",
     lambda g: g.invoke(None, cfg(checkpoint_id=str(uuid.uuid4()))),
     GraphValueError, ("has no checkpoint",)),
    ("resume a finished thread", lambda g: g.invoke(Command(resume="yes"), cfg()),
     GraphValueError, ("no pending interrupt", "'t'")),
    ("resume a thread that never ran", lambda g: g.invoke(Command(resume="yes"), cfg("new")),
     EmptyInputError, ("no checkpoint to resume",)),
    ("update_state as a node that does not exist",
     lambda g: g.update_state(cfg(), {"x": 5}, as_node="nope"),
     InvalidUpdateError, ("no such node", "'nope'")),
    ("a reducer raising on the input", lambda g: g.invoke({"log": ["poison"]}, cfg()),
     InvalidUpdateError, ("reducer of channel 'log'", "ValueError", "poison")),
    ("an unknown stream mode", lambda g: list(g.stream({"x": 1}, cfg(), stream_mode="vals")),
     GraphValueError, ("stream_mode", "vals")),
    ("an unknown durability", lambda g: g.invoke({"x": 1}, cfg(), durability="never"),
     GraphValueError, ("durability", "never")),
    ("Command(graph=...) as input", lambda g: g.invoke(Command(graph="PARENT"), cfg()),
     GraphValueError, ("Command(graph=...)",)),
    ("exit durability with a value that cannot be stored",
     lambda g: g.invoke({"x": "make-lock"}, cfg(), durability="exit"),
     SerializationError, ("channel 'x'", "nothing of this run was saved, not even its input",
                          "stays at checkpoint")),
]


INPUT_KEPT = {"a reducer raising on the input"}
"""Rows whose input is stored (its checkpoint, ``next == ('__start__',)``) before it fails."""


def _snapshot(graph: Any) -> tuple[list[str], dict[str, Any]]:
    history = [s.config["configurable"]["checkpoint_id"] for s in graph.get_state_history(cfg())]
    return history, graph.get_state(cfg()).values


@pytest.mark.parametrize(("name", "call", "error", "words"), ROWS, ids=[r[0] for r in ROWS])
def test_bad_input_is_refused_and_the_thread_is_intact(
    tmp_path: Path, name: str, call: Callable[[Any], Any], error: type[BaseException],
    words: tuple[str, ...],
) -> None:
    runs: list[str] = []
    graph = build(SqliteSaver(tmp_path / "t.sqlite"), runs)
    graph.invoke({"x": 1}, cfg())
    before, ran = _snapshot(graph), list(runs)
    with pytest.raises(error) as caught:
        call(graph)
    assert isinstance(caught.value, DurableGraphError)
    for word in words:
        assert word in str(caught.value), f"{word!r} not in {caught.value}"
    history, values = _snapshot(graph)
    assert values == before[1]
    if name in INPUT_KEPT:  # as in LangGraph: the input's own checkpoint stays, nothing else
        assert history[1:] == before[0]
        assert next(iter(graph.get_state_history(cfg()))).metadata["source"] == "input"
    else:
        assert history == before[0]
    if name != "exit durability with a value that cannot be stored":
        assert runs == ran  # nothing ran


def test_int_and_uuid_thread_ids_are_threads_as_in_langgraph(tmp_path: Path) -> None:
    graph = build(SqliteSaver(tmp_path / "t.sqlite"), [])
    graph.invoke({"x": 1}, cfg(7))
    assert graph.get_state(cfg("7")).values["log"] == ["x=1"]  # 7 and "7": one thread
    tid = uuid.uuid4()
    graph.invoke({"x": 2}, cfg(tid))
    assert graph.get_state(cfg(str(tid))).values["log"] == ["x=2"]


def test_a_reducer_raising_in_a_step_names_channel_and_node_and_state_stays_readable(
    tmp_path: Path,
) -> None:
    runs: list[str] = []
    graph = build(SqliteSaver(tmp_path / "t.sqlite"), runs)
    graph.invoke({"x": 1}, cfg())
    with pytest.raises(InvalidUpdateError) as first:
        graph.invoke({"x": "make-poison"}, cfg())
    assert "reducer of channel 'log'" in str(first.value)
    assert "['step']" in str(first.value)  # the node whose write it was
    state = graph.get_state(cfg())  # always works on a thread whose last step failed
    assert state.values == {"x": "make-poison", "log": ["x=1"]}
    assert state.next == ("step",)
    assert "reducer of channel 'log'" in str(state.tasks[0].error)
    with pytest.raises(InvalidUpdateError, match="reducer of channel 'log'"):
        graph.invoke(None, cfg())  # the same meaningful error, not a loop
    graph.update_state(cfg(), {"x": 2}, as_node="step")  # an operator can move on
    assert graph.get_state(cfg()).values["x"] == 2


def test_a_sqlite_path_under_a_file_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(CheckpointStoreError, match="cannot open the SQLite checkpoint store"):
        SqliteSaver(tmp_path / "file" / "db.sqlite")


def test_the_package_raises_no_bare_builtin_errors_from_its_own_checks() -> None:
    """Every ``raise`` of the package raises one of its own errors (grep, as a reviewer)."""
    import re

    import durable_graph

    root = Path(durable_graph.__file__).parent
    allowed = {"SystemExit", "Suspended", "Empty", "AttributeError", "# internal signal"}
    bare = re.compile(r"raise (ValueError|TypeError|KeyError|FileExistsError|RuntimeError|"
                      r"TimeoutError|IndexError|LookupError|OSError|Exception)\(")
    found = [
        f"{path.relative_to(root)}:{n}: {line.strip()}"
        for path in root.rglob("*.py") if path.name != "demo.py"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if bare.search(line) and not any(a in line for a in allowed)
    ]
    assert found == []


_RACER = """
import sys, time
from pathlib import Path
from typing import TypedDict
from durable_graph import END, START, SqliteSaver, StateGraph, CommitConflictError

class S(TypedDict, total=False):
    who: str

db, me, barrier = sys.argv[1], sys.argv[2], Path(sys.argv[3])

def step(state):
    (barrier / me).touch()
    deadline = time.monotonic() + 20
    while len(list(barrier.iterdir())) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)  # both runs loaded the same latest checkpoint
    return {"who": me}

g = StateGraph(S)
g.add_node("step", step)
g.add_edge(START, "step")
g.add_edge("step", END)
graph = g.compile(checkpointer=SqliteSaver(db), interrupt_before=["step"])
cfg = {"configurable": {"thread_id": "t"}}
if me == "setup":
    graph.invoke({"who": "nobody"}, cfg)
    sys.exit(0)
try:
    print("RESULT", graph.invoke(None, cfg, durability="sync")["who"])
except CommitConflictError as exc:
    print("CONFLICT", exc)
"""


def test_two_processes_on_one_sqlite_thread_do_not_fork_it(tmp_path: Path) -> None:
    import subprocess
    import sys

    script, db, barrier = tmp_path / "racer.py", tmp_path / "race.sqlite", tmp_path / "barrier"
    script.write_text(_RACER)
    barrier.mkdir()
    run = [sys.executable, str(script), str(db)]
    subprocess.run([*run, "setup", str(barrier)], check=True, timeout=60)
    procs = [subprocess.Popen([*run, me, str(barrier)], stdout=subprocess.PIPE, text=True)
             for me in ("A", "B")]
    outs = [p.communicate(timeout=60)[0] for p in procs]
    results = [line for out in outs for line in out.splitlines() if line.startswith("RESULT")]
    conflicts = [line for out in outs for line in out.splitlines() if line.startswith("CONFLICT")]
    assert len(results) == 1 and len(conflicts) == 1, outs
    assert "another process is running this thread" in conflicts[0]
    winner = results[0].split()[1]
    with SqliteSaver(db) as saver:
        history = list(saver.list(cfg()))
        assert history[0].checkpoint.channel_values["who"] == winner
        parents = [h.parent_config["configurable"]["checkpoint_id"]
                   for h in history if h.parent_config]
        assert len(parents) == len(set(parents))  # one line of history, no fork
