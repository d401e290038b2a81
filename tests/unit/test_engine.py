"""Engine behaviour through the public API: errors, replay checks, durability, concurrency."""

from __future__ import annotations

import asyncio
import logging
import operator
import pickle
import threading
from pathlib import Path
from typing import Annotated, Any, TypedDict

import pytest

import durable_graph
from durable_graph import (
    END,
    START,
    CheckpointStoreError,
    Command,
    CommitConflictError,
    DispatchError,
    DurableGraphError,
    EmptyInputError,
    FencingError,
    GraphInterrupt,
    GraphRecursionError,
    GraphTypeError,
    GraphValueError,
    InMemorySaver,
    Interrupt,
    InvalidUpdateError,
    JobCrashedError,
    LocalExecutor,
    NondeterminismError,
    NotSupportedError,
    ParentCommand,
    RunFailedError,
    RunTimeoutError,
    Send,
    SerializationError,
    SignatureError,
    SqliteSaver,
    StateGraph,
    TaskNotInRunError,
    TypedSerializer,
    entrypoint,
    interrupt,
    task,
)


class State(TypedDict):
    x: int
    log: Annotated[list[str], operator.add]


def cfg(thread: str = "t") -> dict[str, Any]:
    return {"configurable": {"thread_id": thread}}


def single(fn: Any, name: str = "node", checkpointer: Any = None) -> Any:
    b = StateGraph(State)
    b.add_node(name, fn)
    b.add_edge(START, name)
    b.add_edge(name, END)
    return b.compile(checkpointer=checkpointer)


def run_with_timeout(fn: Any, timeout: float = 30.0) -> Any:
    """Run ``fn`` on a daemon thread; fail (not hang) if it does not finish."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        pytest.fail(f"did not finish within {timeout}s (deadlock?)")
    if "error" in box:
        raise box["error"]
    return box["value"]


# -- invalid updates -------------------------------------------------------------


def test_node_returning_a_non_dict_names_the_node() -> None:
    graph = single(lambda s: 42, name="answer")
    with pytest.raises(InvalidUpdateError, match=r"'answer'.*int"):
        graph.invoke({"x": 1})


def test_update_to_unknown_key_is_ignored_with_a_warning_naming_node_and_key(
    caplog: pytest.LogCaptureFixture,
) -> None:
    graph = single(lambda s: {"nope": 1, "x": 2}, name="writer")
    with caplog.at_level(logging.WARNING, logger="durable_graph"):
        assert graph.invoke({"x": 1}) == {"x": 2, "log": []}
    (record,) = [r for r in caplog.records if "nope" in r.getMessage()]
    assert "'writer'" in record.getMessage()


def test_strict_updates_raise_on_an_unknown_key_naming_node_and_key() -> None:
    b = StateGraph(State)
    b.add_node("writer", lambda s: {"nope": 1})
    b.add_edge(START, "writer")
    graph = b.compile(strict_updates=True)
    with pytest.raises(InvalidUpdateError) as info:
        graph.invoke({"x": 1})
    assert "'writer'" in str(info.value)
    assert "nope" in str(info.value)


def test_subgraph_node_private_keys_stay_in_it_without_warning_even_when_strict(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Inner(TypedDict, total=False):
        x: int
        secret: str

    sb = StateGraph(Inner)
    sb.add_node("hide", lambda s: {"secret": "kept inside", "x": s["x"] + 1})
    sb.add_edge(START, "hide")
    b = StateGraph(State)
    b.add_node("sub", sb.compile())
    b.add_edge(START, "sub")
    with caplog.at_level(logging.WARNING, logger="durable_graph"):
        assert b.compile(strict_updates=True).invoke({"x": 1}) == {"x": 2, "log": []}
    assert not [r for r in caplog.records if "secret" in r.getMessage()]


def test_parallel_writes_to_a_key_without_reducer() -> None:
    b = StateGraph(State)
    b.add_node("left", lambda s: {"x": 1})
    b.add_node("right", lambda s: {"x": 2})
    b.add_edge(START, "left")
    b.add_edge(START, "right")
    with pytest.raises(InvalidUpdateError) as info:
        b.compile().invoke({"x": 0})
    msg = str(info.value)
    assert "'x'" in msg and "left" in msg and "right" in msg


def test_parallel_writes_to_a_reducer_key_combine() -> None:
    b = StateGraph(State)
    b.add_node("left", lambda s: {"log": ["l"]})
    b.add_node("right", lambda s: {"log": ["r"]})
    b.add_edge(START, "left")
    b.add_edge(START, "right")
    assert b.compile().invoke({"x": 0})["log"] == ["l", "r"]


def test_invalid_update_is_a_value_error() -> None:
    assert issubclass(InvalidUpdateError, ValueError)


# -- compile-time errors ---------------------------------------------------------


def test_edge_to_unknown_node_names_it() -> None:
    b = StateGraph(State)
    b.add_node("a", lambda s: {})
    b.add_edge(START, "a")
    b.add_edge("a", "ghost")
    with pytest.raises(ValueError, match="ghost"):
        b.compile()


def test_edge_from_unknown_node_names_it() -> None:
    b = StateGraph(State)
    b.add_node("a", lambda s: {})
    b.add_edge(START, "a")
    b.add_edge("phantom", "a")
    with pytest.raises(ValueError, match="phantom"):
        b.compile()


def test_conditional_edge_to_unknown_node_names_it() -> None:
    b = StateGraph(State)
    b.add_node("a", lambda s: {})
    b.add_edge(START, "a")
    b.add_conditional_edges("a", lambda s: "x", {"x": "nowhere"})
    with pytest.raises(ValueError, match="nowhere"):
        b.compile()


def test_graph_without_entry_point() -> None:
    b = StateGraph(State)
    b.add_node("a", lambda s: {})
    b.add_edge("a", END)
    with pytest.raises(ValueError, match=r"(?i)entrypoint.*START"):
        b.compile()


# -- run-time input and config errors ---------------------------------------------


def test_invoke_none_on_new_thread_is_empty_input() -> None:
    graph = single(lambda s: {"x": 2}, checkpointer=InMemorySaver())
    with pytest.raises(EmptyInputError, match="no input"):
        graph.invoke(None, cfg("fresh"))


def test_checkpointer_without_thread_id_says_what_to_add() -> None:
    graph = single(lambda s: {"x": 2}, checkpointer=InMemorySaver())
    for config in (None, {}, {"configurable": {}}):
        with pytest.raises(ValueError, match=r"thread_id.*configurable|configurable.*thread_id"):
            graph.invoke({"x": 1}, config)


class Opaque:
    """A value msgpack cannot carry (and pickle is off)."""

    def __init__(self, n: int) -> None:
        self.n = n


class OpaqueState(TypedDict, total=False):
    x: int
    obj: Any


def opaque_graph(saver: Any) -> Any:
    b = StateGraph(OpaqueState)
    b.add_node("good", lambda s: {"x": 1})
    b.add_node("bad", lambda s: {"obj": Opaque(1)})
    b.add_edge(START, "good")
    b.add_edge("good", "bad")
    b.add_edge("bad", END)
    return b.compile(checkpointer=saver)


def strict_saver(kind: str, tmp_path: Path) -> Any:
    serde = TypedSerializer(pickle_fallback=False)
    if kind == "memory":
        return InMemorySaver(serde=serde)
    return SqliteSaver(tmp_path / "cp.sqlite", serde=serde)


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_unserializable_state_keeps_the_previous_checkpoint(kind: str, tmp_path: Path) -> None:
    graph = opaque_graph(strict_saver(kind, tmp_path))
    with pytest.raises(SerializationError, match="Opaque"):
        graph.invoke({"x": 0}, cfg(), durability="sync")
    state = graph.get_state(cfg())
    assert state.values == {"x": 1}
    assert state.next == ("bad",)
    assert state.metadata is not None and state.metadata["step"] == 1


@pytest.mark.parametrize(
    "kind",
    [
        "memory",
        "sqlite",
    ],
)
def test_unserializable_state_error_names_channel_and_type(kind: str, tmp_path: Path) -> None:
    graph = opaque_graph(strict_saver(kind, tmp_path))
    with pytest.raises(SerializationError) as info:
        graph.invoke({"x": 0}, cfg(), durability="sync")
    assert "Opaque" in str(info.value)
    assert "'obj'" in str(info.value)


def test_unserializable_state_direct_put_names_channel() -> None:
    # The saver's own put (no task write before it) names the channel and keeps the parent.
    saver = InMemorySaver(serde=TypedSerializer(pickle_fallback=False))
    b = StateGraph(OpaqueState)
    b.add_node("good", lambda s: {"x": 1})
    b.add_edge(START, "good")
    graph = b.compile(checkpointer=saver)
    graph.invoke({"x": 0}, cfg())
    before = graph.get_state(cfg())
    with pytest.raises(SerializationError, match=r"'obj'.*Opaque"):
        graph.update_state(cfg(), {"obj": Opaque(2)}, as_node="good")
    after = graph.get_state(cfg())
    assert after.values == before.values == {"x": 1}
    assert after.config == before.config


# -- error hierarchy ---------------------------------------------------------------

PUBLIC_ERRORS = [
    CheckpointStoreError,
    CommitConflictError,
    DispatchError,
    EmptyInputError,
    FencingError,
    GraphRecursionError,
    GraphTypeError,
    GraphValueError,
    InvalidUpdateError,
    JobCrashedError,
    NondeterminismError,
    NotSupportedError,
    RunFailedError,
    RunTimeoutError,
    SerializationError,
    SignatureError,
    TaskNotInRunError,
    durable_graph.RunCancelledError,
    durable_graph.ThreadBusyError,
    durable_graph.ThreadNotFoundError,
    durable_graph.LeaseReleasedError,
    durable_graph.ThreadStateError,
]


@pytest.mark.parametrize("cls", PUBLIC_ERRORS)
def test_every_public_error_is_a_durable_graph_error(cls: type[Exception]) -> None:
    assert issubclass(cls, DurableGraphError)
    assert issubclass(cls, Exception)


def test_every_exported_exception_is_covered() -> None:
    exported = {
        getattr(durable_graph, n) for n in durable_graph.__all__
        if isinstance(getattr(durable_graph, n), type)
        and issubclass(getattr(durable_graph, n), BaseException)
    }
    assert exported == {*PUBLIC_ERRORS, DurableGraphError, GraphInterrupt, ParentCommand}


def test_std_bases() -> None:
    assert issubclass(GraphRecursionError, RecursionError)
    assert issubclass(TaskNotInRunError, RuntimeError)
    assert issubclass(SerializationError, TypeError)
    assert issubclass(GraphValueError, ValueError)
    assert issubclass(EmptyInputError, ValueError)
    assert issubclass(GraphTypeError, TypeError) and issubclass(GraphTypeError, ValueError)
    assert issubclass(RunTimeoutError, TimeoutError)
    assert issubclass(FencingError, CheckpointStoreError)
    assert issubclass(SignatureError, SerializationError)


def test_graph_interrupt_is_not_an_exception() -> None:
    assert issubclass(GraphInterrupt, BaseException)
    assert not issubclass(GraphInterrupt, Exception)


@pytest.mark.parametrize("cls", [DurableGraphError, *PUBLIC_ERRORS])
def test_errors_pickle_round_trip(cls: type[Exception]) -> None:
    err = cls("something went wrong", 7)
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is cls
    assert back.args == ("something went wrong", 7)
    assert str(back) == str(err)


def test_graph_interrupt_pickles_with_its_interrupts() -> None:
    gi = GraphInterrupt([Interrupt("question?", "id-1")])
    back = pickle.loads(pickle.dumps(gi))
    assert type(back) is GraphInterrupt
    assert back.interrupts == gi.interrupts
    assert back.interrupts[0].value == "question?"


def test_parent_command_is_a_signal_that_pickles_with_its_command() -> None:
    sent = ParentCommand(Command(goto="next", update={"x": 1}))
    back = pickle.loads(pickle.dumps(sent))
    assert not issubclass(ParentCommand, Exception)
    assert type(back) is ParentCommand
    assert back.command == sent.command


def test_recursion_limit_raises_graph_recursion_error() -> None:
    b = StateGraph(State)
    b.add_node("loop", lambda s: {"x": s["x"] + 1})
    b.add_edge(START, "loop")
    b.add_edge("loop", "loop")
    with pytest.raises(RecursionError, match="recursion_limit"):
        b.compile().invoke({"x": 0}, {"recursion_limit": 5})


# -- interrupts and @task outside runs --------------------------------------------


def test_interrupt_is_not_caught_by_except_exception() -> None:
    seen: list[str] = []

    def ask(state: dict[str, Any]) -> dict[str, Any]:
        try:
            answer = interrupt("name?")
        except Exception:  # must not swallow the pause
            seen.append("swallowed")
            return {"log": ["swallowed"]}
        return {"log": [f"got {answer}"]}

    graph = single(ask, checkpointer=InMemorySaver())
    out = graph.invoke({"x": 0}, cfg())
    assert seen == []
    assert "__interrupt__" in out
    assert out["__interrupt__"][0].value == "name?"
    out = graph.invoke(Command(resume="bob"), cfg())
    assert out["log"] == ["got bob"]
    assert seen == []


def test_task_outside_a_run() -> None:
    @task
    def double(n: int) -> int:
        return n * 2

    with pytest.raises(TaskNotInRunError, match="double"):
        double(2)


def test_interrupt_outside_a_run() -> None:
    with pytest.raises(TaskNotInRunError, match="interrupt"):
        interrupt("x")


# -- replay and nondeterminism -------------------------------------------------


def test_nondeterminism_when_replay_calls_a_different_task() -> None:
    saver = InMemorySaver()
    calls: list[str] = []

    @task
    def task_a() -> str:
        calls.append("a")
        return "a"

    @task
    def task_b() -> str:
        calls.append("b")
        return "b"

    def first(state: dict[str, Any]) -> dict[str, Any]:
        task_a().result()
        raise RuntimeError("crash after task_a")

    def second(state: dict[str, Any]) -> dict[str, Any]:
        task_b().result()
        return {"log": ["b"]}

    with pytest.raises(RuntimeError, match="crash after task_a"):
        single(first, checkpointer=saver).invoke({"x": 0}, cfg())
    assert calls == ["a"]
    with pytest.raises(NondeterminismError, match=r"task_b.*task_a|task_a.*task_b"):
        single(second, checkpointer=saver).invoke(None, cfg())
    assert calls == ["a"]  # task_b never ran


def test_replay_returns_recorded_task_results() -> None:
    saver = InMemorySaver()
    calls: list[int] = []
    fail = [True]

    @task
    def step(n: int) -> int:
        calls.append(n)
        return n * 10

    def node(state: dict[str, Any]) -> dict[str, Any]:
        a = step(1).result()
        b = step(2).result()
        if fail[0]:
            fail[0] = False
            raise RuntimeError("once")
        return {"x": a + b}

    graph = single(node, checkpointer=saver)
    with pytest.raises(RuntimeError):
        graph.invoke({"x": 0}, cfg())
    assert graph.invoke(None, cfg())["x"] == 30
    assert calls == [1, 2]


# -- durability modes ----------------------------------------------------------


def chain3(saver: Any) -> Any:
    b = StateGraph(State)
    for n in ("a", "b", "c"):
        b.add_node(n, lambda s, n=n: {"log": [n]})
    b.add_edge(START, "a")
    b.add_edge("a", "b")
    b.add_edge("b", "c")
    b.add_edge("c", END)
    return b.compile(checkpointer=saver)


@pytest.mark.parametrize(("durability", "expected"), [("sync", 5), ("async", 5), ("exit", 1)])
def test_durability_checkpoint_counts(tmp_path: Path, durability: str, expected: int) -> None:
    with SqliteSaver(tmp_path / "cp.sqlite") as saver:
        graph = chain3(saver)
        out = graph.invoke({"x": 0}, cfg(), durability=durability)
        assert out["log"] == ["a", "b", "c"]
        history = list(graph.get_state_history(cfg()))
        assert len(history) == expected
        assert history[0].values["log"] == ["a", "b", "c"]
        assert history[0].next == ()
        assert history[0].metadata is not None and history[0].metadata["step"] == 3


def test_exit_durability_stores_the_failed_step_for_resume(tmp_path: Path) -> None:
    fail = [True]

    def flaky(state: dict[str, Any]) -> dict[str, Any]:
        if fail[0]:
            raise RuntimeError("flaky")
        return {"log": ["b"]}

    with SqliteSaver(tmp_path / "cp.sqlite") as saver:
        b = StateGraph(State)
        b.add_node("a", lambda s: {"log": ["a"]})
        b.add_node("b", flaky)
        b.add_edge(START, "a")
        b.add_edge("a", "b")
        graph = b.compile(checkpointer=saver)
        with pytest.raises(RuntimeError):
            graph.invoke({"x": 0}, cfg(), durability="exit")
        assert len(list(graph.get_state_history(cfg()))) == 1
        state = graph.get_state(cfg())
        assert state.next == ("b",)
        assert state.values["log"] == ["a"]
        fail[0] = False
        assert graph.invoke(None, cfg(), durability="exit")["log"] == ["a", "b"]


def test_unknown_durability_is_rejected() -> None:
    graph = single(lambda s: {}, checkpointer=InMemorySaver())
    with pytest.raises(GraphValueError, match="durability"):
        graph.invoke({"x": 0}, cfg(), durability="never")


# -- concurrency -----------------------------------------------------------------


def test_parallel_tasks_run_concurrently() -> None:
    barrier = threading.Barrier(2, timeout=5)

    @task
    def meet(n: int) -> int:
        barrier.wait()  # both must be running at once, or this times out
        return n

    def node(state: dict[str, Any]) -> dict[str, Any]:
        futures = [meet(1), meet(2)]
        return {"x": sum(f.result() for f in futures)}

    out = run_with_timeout(lambda: single(node).invoke({"x": 0}), timeout=20)
    assert out["x"] == 3
    assert not barrier.broken


def test_parallel_nodes_run_concurrently() -> None:
    barrier = threading.Barrier(2, timeout=5)

    def meet(name: str) -> Any:
        def node(state: dict[str, Any]) -> dict[str, Any]:
            barrier.wait()
            return {"log": [name]}

        return node

    b = StateGraph(State)
    b.add_node("p", meet("p"))
    b.add_node("q", meet("q"))
    b.add_edge(START, "p")
    b.add_edge(START, "q")
    out = run_with_timeout(lambda: b.compile().invoke({"x": 0}), timeout=20)
    assert out["log"] == ["p", "q"]


def test_single_worker_pool_does_not_deadlock() -> None:
    @task
    def square(n: int) -> int:
        return n * n

    @task
    def inc(n: int) -> int:
        return n + 1

    def fan(state: dict[str, Any]) -> dict[str, Any]:
        futures = [square(i) for i in range(20)]
        return {"x": sum(f.result() for f in futures)}

    def worker(arg: dict[str, Any]) -> dict[str, Any]:
        return {"log": [str(inc(arg["i"]).result())]}

    b = StateGraph(State)
    b.add_node("fan", fan)
    b.add_node("worker", worker)
    b.add_edge(START, "fan")
    b.add_conditional_edges("fan", lambda s: [Send("worker", {"i": i}) for i in range(5)])
    executor = LocalExecutor(max_workers=1)
    try:
        graph = b.compile(executor=executor, checkpointer=InMemorySaver())
        out = run_with_timeout(lambda: graph.invoke({"x": 0}, cfg()), timeout=30)
    finally:
        executor.shutdown()
    assert out["x"] == sum(i * i for i in range(20))
    assert out["log"] == ["1", "2", "3", "4", "5"]


# -- async entry points --------------------------------------------------------


def test_ainvoke_and_astream() -> None:
    graph = chain3(InMemorySaver())

    async def main() -> tuple[Any, list[Any]]:
        out = await graph.ainvoke({"x": 1}, cfg("a1"))
        chunks = [c async for c in graph.astream({"x": 1}, cfg("a2"), stream_mode="updates")]
        return out, chunks

    out, chunks = asyncio.run(main())
    assert out == {"x": 1, "log": ["a", "b", "c"]}
    assert chunks == [{"a": {"log": ["a"]}}, {"b": {"log": ["b"]}}, {"c": {"log": ["c"]}}]
    state = asyncio.run(graph.aget_state(cfg("a2")))
    assert state.values["log"] == ["a", "b", "c"]


def test_async_entrypoint_with_async_task() -> None:
    @task
    async def add_one(n: int) -> int:
        await asyncio.sleep(0)
        return n + 1

    @entrypoint(checkpointer=InMemorySaver())
    def flow(n: int) -> int:
        return add_one(n).result() * 2

    async def main() -> Any:
        return await flow.ainvoke(3, cfg())

    assert asyncio.run(main()) == 8


# -- exported names ------------------------------------------------------------

EXPORTED = [
    "END",
    "REMOVE_ALL_MESSAGES",
    "START",
    "BaseCache",
    "BaseCheckpointSaver",
    "BaseStore",
    "CachePolicy",
    "Checkpoint",
    "CheckpointRef",
    "CheckpointStoreError",
    "CheckpointTuple",
    "Command",
    "CommitConflictError",
    "CompiledGraph",
    "CompiledStateGraph",
    "DispatchError",
    "DurableGraphError",
    "EmptyInputError",
    "ExecutionInfo",
    "Executor",
    "FencingError",
    "GraphInterrupt",
    "GraphRecursionError",
    "GraphTypeError",
    "GraphValueError",
    "InMemoryCache",
    "InMemorySaver",
    "InMemoryStore",
    "Interrupt",
    "InvalidUpdateError",
    "IsLastStep",
    "Item",
    "JobCrashedError",
    "LeaseReleasedError",
    "LocalExecutor",
    "MemorySaver",
    "MessagesState",
    "NondeterminismError",
    "NotSupportedError",
    "ParentCommand",
    "RedisCache",
    "RedisSaver",
    "RedisStore",
    "RemainingSteps",
    "RemoveMessage",
    "RetryPolicy",
    "RunCancelledError",
    "RunFailedError",
    "RunHandle",
    "RunTimeoutError",
    "Runtime",
    "SearchItem",
    "Send",
    "SerializationError",
    "SignatureError",
    "SqliteCache",
    "SqliteSaver",
    "SqliteStore",
    "StateGraph",
    "StateSnapshot",
    "StateTask",
    "TaskInfo",
    "TaskNotInRunError",
    "ThreadBusyError",
    "ThreadNotFoundError",
    "ThreadStateError",
    "TypedSerializer",
    "add_messages",
    "entrypoint",
    "get_runtime",
    "get_store",
    "get_stream_writer",
    "get_task_context",
    "interrupt",
    "task",
]


def test_all_is_pinned() -> None:
    assert durable_graph.__all__ == EXPORTED


@pytest.mark.parametrize("name", EXPORTED)
def test_each_exported_name_imports(name: str) -> None:
    namespace: dict[str, Any] = {}
    exec(f"from durable_graph import {name}", namespace)
    assert namespace[name] is getattr(durable_graph, name)


def test_no_private_module_leaks_into_all() -> None:
    assert all(not n.startswith("_") for n in durable_graph.__all__)
    assert len(set(durable_graph.__all__)) == len(durable_graph.__all__)
