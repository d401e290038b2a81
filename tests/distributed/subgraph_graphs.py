"""Subgraphs the distributed tests run on workers (``test_subgraphs_distributed``).

Importable by the test process and by the workers (the graphs ship by import path),
built on ``graphs_fixture``'s saver and executor. ``build_*()`` return builders, so a
test compiles the same graph embedded and compares. Bodies record where they ran
(``trace``) and count their executions (``count``: ``INCR {P}:count:{tag}:{name}``).

- ``fan_node``: prep -> fan (a 6-way fan-out subgraph as a node) -> after. The
  subgraph has a private key (``secret``) that does not flow back.
- ``fan_called``: prep -> caller, whose function calls ``fan_sub.invoke(...)``.
- ``kill_graph``: prep -> work (a subgraph: first, which calls a ``@task``, then slow,
  which sleeps long enough for a test to SIGKILL its worker) -> after.
- ``flaky_graph``: prep -> a node calling a subgraph whose middle node fails once.
- ``jump_graph``: a subgraph node returns ``Command.PARENT`` (routes in the parent);
  ``mode_none`` / ``mode_true`` / ``mode_false``: the subgraph checkpointer modes.
- ``ask_graph``: prep -> ask (a subgraph: before -> question (interrupt) -> done),
  called from a node function; a nested level: ``deep`` runs ``ask_sub`` as a node.
- ``twice_graph``: prep -> a node calling one subgraph twice; the second call's last
  node fails on its first execution.
- ``stop_node`` / ``stop_called``: a subgraph compiled with ``interrupt_before=["done"]``,
  as a node and called from a node function.
- ``io_graph``: think (a private key) -> answer, with input and output schemas;
  ``io_parent`` runs it as a node.
- ``pair_graph``: ``a`` (asks ``interrupt()``) beside ``b`` (plain) in one step;
  ``pair_parent`` runs that graph as a subgraph node.
"""

from __future__ import annotations

import operator
import time
from typing import Annotated, Any, TypedDict

import dg_trace
from graphs_fixture import PREFIX, REDIS_URL, executor, saver, thread_of, trace

from durable_graph import END, START, Command, StateGraph, interrupt, task

FAN = 6
FAN_SLEEP = 0.6
KILL_SLEEP = 3.0


def count(tag: str, name: str) -> int:
    """Count one execution of ``name`` in run ``tag``; the count so far."""
    return int(dg_trace.client(REDIS_URL).incr(f"{PREFIX}:count:{tag}:{name}"))


def counted(tag: str, name: str) -> int:
    """How many times ``name`` ran in run ``tag``."""
    raw = dg_trace.client(REDIS_URL).get(f"{PREFIX}:count:{tag}:{name}")
    return int(raw or 0)


class SubState(TypedDict, total=False):
    x: int
    log: Annotated[list[str], operator.add]
    secret: str


class ParentState(TypedDict, total=False):
    x: int
    log: Annotated[list[str], operator.add]


def _record(config: dict[str, Any], name: str) -> None:
    tag = thread_of(config)
    trace(tag, name)
    count(tag, name)


def line(state: type, nodes: list[tuple[str, Any]]) -> StateGraph:
    """START -> each of ``nodes`` in turn -> END."""
    b = StateGraph(state).add_sequence(nodes)
    b.add_edge(START, nodes[0][0])
    b.add_edge(nodes[-1][0], END)
    return b


def prep(state: ParentState, config: dict[str, Any]) -> dict[str, Any]:
    _record(config, "prep")
    return {"x": state["x"] + 1, "log": ["prep"]}


def after(state: ParentState, config: dict[str, Any]) -> dict[str, Any]:
    _record(config, "after")
    return {"log": [f"after:{len(state['log'])}"]}


# -- a 6-way fan-out subgraph ----------------------------------------------------------


def split(state: SubState, config: dict[str, Any]) -> dict[str, Any]:
    _record(config, "split")
    return {"secret": "kept in the subgraph", "log": ["split"]}


def _fan(i: int) -> Any:
    def node(state: SubState, config: dict[str, Any]) -> dict[str, Any]:
        _record(config, f"p{i}")
        time.sleep(FAN_SLEEP)
        return {"log": [f"p{i}={state['x'] * i}"]}

    node.__name__ = f"p{i}"
    return node


def gather(state: SubState, config: dict[str, Any]) -> dict[str, Any]:
    _record(config, "gather")
    return {"x": sum(int(e.split("=")[1]) for e in state["log"] if "=" in e)}


def build_fan_sub() -> StateGraph:
    b = StateGraph(SubState)
    b.add_node("split", split)
    for i in range(FAN):
        b.add_node(f"p{i}", _fan(i))
        b.add_edge("split", f"p{i}")
    b.add_node("gather", gather)
    b.add_edge([f"p{i}" for i in range(FAN)], "gather")
    b.add_edge(START, "split")
    b.add_edge("gather", END)
    return b


fan_sub = build_fan_sub().compile()


def build_fan_node() -> StateGraph:
    return line(ParentState, [("prep", prep), ("fan", fan_sub), ("after", after)])


def caller(state: ParentState, config: dict[str, Any]) -> dict[str, Any]:
    _record(config, "caller")
    out = fan_sub.invoke({"x": state["x"]})
    return {"x": out["x"], "log": [f"called:{len(out['log'])}"]}


def build_fan_called() -> StateGraph:
    return line(ParentState, [("prep", prep), ("caller", caller)])


# -- a subgraph whose second node is killed ---------------------------------------------


@task
def sub_call(tag: str, x: int) -> int:
    trace(tag, "sub_call")
    count(tag, "sub_call")
    return x * 10


def first(state: SubState, config: dict[str, Any]) -> dict[str, Any]:
    value = sub_call(thread_of(config), state["x"]).result()
    _record(config, "first")  # after the call: on workers the body suspends before it
    return {"x": value, "log": ["first"]}


def slow(state: SubState, config: dict[str, Any]) -> dict[str, Any]:
    _record(config, "slow")
    time.sleep(KILL_SLEEP)
    return {"x": state["x"] + 1, "log": ["slow"]}


kill_sub = line(SubState, [("first", first), ("slow", slow)]).compile()


def build_kill() -> StateGraph:
    return line(ParentState, [("prep", prep), ("work", kill_sub), ("after", after)])


# -- an interrupt inside a subgraph, one and two levels down -----------------------------


def before(state: SubState, config: dict[str, Any]) -> dict[str, Any]:
    _record(config, "before")
    return {"log": ["before"]}


def question(state: SubState, config: dict[str, Any]) -> dict[str, Any]:
    _record(config, "question")
    answer = interrupt({"ask": state["x"]})
    return {"log": [f"answer={answer}"]}


def done(state: SubState, config: dict[str, Any]) -> dict[str, Any]:
    _record(config, "done")
    return {"x": state["x"] * 2, "log": ["done"]}


ask_sub = line(SubState, [("before", before), ("question", question), ("done", done)]).compile()


def asker(state: ParentState, config: dict[str, Any]) -> dict[str, Any]:
    _record(config, "asker")
    out = ask_sub.invoke({"x": state["x"]})
    return {"x": out["x"], "log": [f"asked:{out['log'][-2]}"]}


def build_ask() -> StateGraph:
    return line(ParentState, [("prep", prep), ("asker", asker), ("after", after)])


middle_sub = line(SubState, [("inner", ask_sub)]).compile()
"""A subgraph whose only node runs ``ask_sub`` (the second level)."""


def build_deep() -> StateGraph:
    return line(ParentState, [("prep", prep), ("middle", middle_sub), ("after", after)])


# -- a subgraph node that fails on its first execution ----------------------------------

FLAKY_MESSAGE = "flaky: the first execution fails"


def flaky(state: SubState, config: dict[str, Any]) -> dict[str, Any]:
    tag = thread_of(config)
    trace(tag, "flaky")
    if count(tag, "flaky") == 1:
        raise ValueError(FLAKY_MESSAGE)
    return {"log": ["flaky"]}


flaky_sub = line(SubState, [("before", before), ("flaky", flaky), ("done", done)]).compile()


def flaky_caller(state: ParentState, config: dict[str, Any]) -> dict[str, Any]:
    _record(config, "flaky_caller")
    return {"x": flaky_sub.invoke({"x": state["x"]})["x"]}


def build_flaky() -> StateGraph:
    return line(ParentState, [("prep", prep), ("flaky_caller", flaky_caller), ("after", after)])


# -- one subgraph called twice by a node; a subgraph with a breakpoint ----------------------

SECOND_MESSAGE = "second call: its first execution fails"
SECOND_CALL = 100
"""Added to the first call's output to make the second call's input."""


def t_first(state: SubState, config: dict[str, Any]) -> dict[str, Any]:
    _record(config, f"t_first:{state['x']}")
    return {"x": state["x"] + 1, "log": ["t_first"]}


def t_last(state: SubState, config: dict[str, Any]) -> dict[str, Any]:
    tag, name = thread_of(config), f"t_last:{state['x']}"
    trace(tag, name)
    if count(tag, name) == 1 and state["x"] > SECOND_CALL:
        raise ValueError(SECOND_MESSAGE)
    return {"x": state["x"] * 2, "log": ["t_last"]}


twice_sub = line(SubState, [("t_first", t_first), ("t_last", t_last)]).compile()


def twice(state: ParentState, config: dict[str, Any]) -> dict[str, Any]:
    _record(config, "twice")
    one = twice_sub.invoke({"x": state["x"]})
    two = twice_sub.invoke({"x": one["x"] + SECOND_CALL})
    return {"x": two["x"], "log": [f"twice:{one['x']}:{two['x']}"]}


def build_twice() -> StateGraph:
    return line(ParentState, [("prep", prep), ("twice", twice), ("after", after)])


stop_sub = line(SubState, [("before", before), ("done", done)]).compile(
    interrupt_before=["done"])


def stopper(state: ParentState, config: dict[str, Any]) -> dict[str, Any]:
    _record(config, "stopper")
    return {"x": stop_sub.invoke({"x": state["x"]})["x"]}


def build_stop(called: bool) -> StateGraph:
    """prep -> ``stop_sub`` (as the node ``stop``, or called by it) -> after."""
    return line(ParentState, [("prep", prep), ("stop", stopper if called else stop_sub),
                              ("after", after)])


# -- input and output schemas: streams narrowed to the output keys ------------------------


class IoIn(TypedDict):
    q: str


class IoOut(TypedDict):
    a: str


class IoFull(TypedDict):
    q: str
    a: str
    scratch: str


def think(state: IoFull, config: dict[str, Any]) -> dict[str, Any]:
    _record(config, "think")
    return {"scratch": state["q"] * 2}


def answer(state: IoFull, config: dict[str, Any]) -> dict[str, Any]:
    _record(config, "answer")
    return {"a": state["scratch"].upper()}


def build_io() -> StateGraph:
    b = StateGraph(IoFull, input_schema=IoIn, output_schema=IoOut)
    b.add_sequence([("think", think), ("answer", answer)])
    b.add_edge(START, "think")
    b.add_edge("answer", END)
    return b


io_sub = build_io().compile()


class IoParent(TypedDict):
    q: str
    a: str


def build_io_parent() -> StateGraph:
    return line(IoParent, [("sub", io_sub)])


# -- a step resumed after an interrupt, with a sibling that finished ----------------------


def build_pair() -> StateGraph:
    b = StateGraph(ParentState)
    b.add_node("a", _plain("a", asks=True))
    b.add_node("b", _plain("b"))
    b.add_edge(START, "a")
    b.add_edge(START, "b")
    return b


def build_pair_parent() -> StateGraph:
    return line(ParentState, [("sub", build_pair().compile())])


def build_two_asks() -> StateGraph:
    """A subgraph node whose subgraph pauses in two parallel tasks at once."""
    b = StateGraph(SubState)
    for name in ("ask_x", "ask_y"):
        b.add_node(name, _plain(name, asks=True))
        b.add_edge(START, name)
    return line(ParentState, [("two", b.compile())])


# -- Command.PARENT from a subgraph node; the subgraph checkpointer modes ------------------


def jump(state: SubState, config: dict[str, Any]) -> Any:
    _record(config, "jump")
    return Command(graph=Command.PARENT, goto="target", update={"log": ["jumped"]})


def _plain(name: str, *, asks: bool = False) -> Any:
    """A node that logs its name (with ``asks``: and the answer to ``interrupt(name)``)."""

    def node(state: Any, config: dict[str, Any]) -> dict[str, Any]:
        _record(config, name)
        if asks:
            return {"log": [f"{name}={interrupt(name)}"]}
        return {"log": [f"{name}:{len(state['log'])}"]}

    node.__name__ = name
    return node


jump_sub = line(SubState, [("jump", jump), ("never", _plain("never"))]).compile()


def build_jump() -> StateGraph:
    b = StateGraph(ParentState)
    b.add_node("child", jump_sub, destinations=("target",))
    b.add_node("target", _plain("target"))
    b.add_node("other", _plain("other"))
    b.add_edge(START, "child")
    b.add_edge("child", "other")
    return b


def build_mode(mode: bool | None) -> StateGraph:
    """A one-node subgraph compiled with ``checkpointer=mode``, as the parent's node."""
    sub = line(SubState, [("s1", _plain("s1"))]).compile(checkpointer=mode)
    return line(ParentState, [("child", sub)])


def distributed(builder: StateGraph) -> Any:
    return builder.compile(checkpointer=saver, executor=executor)


fan_node = distributed(build_fan_node())
fan_called = distributed(build_fan_called())
kill_graph = distributed(build_kill())
ask_graph = distributed(build_ask())
deep_graph = distributed(build_deep())
flaky_graph = distributed(build_flaky())
jump_graph = distributed(build_jump())
twice_graph = distributed(build_twice())
stop_node = distributed(build_stop(False))
stop_called = distributed(build_stop(True))
io_graph = distributed(build_io())
io_parent = distributed(build_io_parent())
pair_graph = distributed(build_pair())
pair_parent = distributed(build_pair_parent())
two_asks = distributed(build_two_asks())
mode_none = distributed(build_mode(None))
mode_true = distributed(build_mode(True))
mode_false = distributed(build_mode(False))
