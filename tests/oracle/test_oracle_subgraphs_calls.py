"""Subgraph runs as LangGraph numbers, streams and addresses them.

A node function may run a subgraph several times and in every form (``invoke``,
``stream``, ``ainvoke``, ``astream``); each run has its own namespace, streams to the
parent, checkpoints and pauses the same way. A subgraph's state is read and edited
through the parent graph with the config of the subgraph's state.
"""

from __future__ import annotations

import asyncio
import itertools
import operator
from typing import Annotated, Any

import pytest
from typing_extensions import TypedDict

from tests.oracle.impls import IMPLS, Calls, Norm, both, new_config, same
from tests.oracle.test_oracle_subgraphs_in_node import S, asking, caller, chain, failing_while

pytestmark = pytest.mark.oracle


def ns_of(chunk: tuple[Any, ...]) -> str:
    """A streamed chunk's namespace without task ids (``call|1`` for a second run)."""
    return Norm().ns("|".join(chunk[0]))


def ask_chain(m: Any, calls: Calls, **compile: Any) -> Any:
    """START -> s1 (writes a custom chunk) -> ask (interrupts) -> s3."""
    b = m.StateGraph(S)

    def s1(s: S) -> dict[str, Any]:
        calls.hit("s1")
        m.get_stream_writer()({"custom": "from s1"})
        return {"log": ["s1"]}

    b.add_node("s1", s1)
    b.add_node("ask", asking(m, calls, "ask"))
    b.add_node("s3", lambda s: calls.hit("s3") and {"log": ["s3"]})
    b.add_edge(m.START, "s1")
    b.add_edge("s1", "ask")
    b.add_edge("ask", "s3")
    return b.compile(**compile)


def test_same_subgraph_run_twice_in_a_node_resumes_each_run_on_its_own() -> None:
    def scenario(m: Any) -> Any:
        calls = Calls()
        fail = {"on": False}
        sub = chain(m, calls, ["s1", "flaky"], last=failing_while(fail, calls, "flaky"))

        def call(s: S) -> dict[str, Any]:
            calls.hit("call")
            a = sub.invoke({"log": ["a"]})
            fail["on"] = calls["call"] == 1  # the second run fails the first time
            b = sub.invoke({"log": ["b"]})
            return {"log": ["/".join(a["log"]), "/".join(b["log"])]}

        p = m.StateGraph(S)
        p.add_node("call", call)
        p.add_edge(m.START, "call")
        g = p.compile(checkpointer=m.InMemorySaver())
        cfg = new_config()
        chunks: list[Any] = []
        with pytest.raises(RuntimeError, match="flaky boom"):
            for c in g.stream({"log": []}, cfg, subgraphs=True):
                chunks.append((ns_of(c), c[1]))
        failed = g.get_state(cfg, subgraphs=True)
        fail["on"] = False
        out = g.invoke(None, cfg)
        return chunks, failed, out, dict(calls)

    res = same(scenario)
    # the first run's nodes ran once; the second run resumed at its failed node
    assert res[3] == {"call": 2, "s1": 2, "flaky": 3}


def test_same_subgraph_run_twice_in_a_node_pauses_twice() -> None:
    def scenario(m: Any) -> Any:
        calls = Calls()
        sub = ask_chain(m, calls)

        def call(s: S) -> dict[str, Any]:
            calls.hit("call")
            return {"log": [*sub.invoke({"log": ["a"]})["log"], *sub.invoke({"log": ["b"]})["log"]]}

        p = m.StateGraph(S)
        p.add_node("call", call)
        p.add_edge(m.START, "call")
        g = p.compile(checkpointer=m.InMemorySaver())
        cfg = new_config()
        first = g.invoke({"log": []}, cfg)
        second = g.invoke(m.Command(resume="one"), cfg)
        paused = g.get_state(cfg, subgraphs=True)
        out = g.invoke(m.Command(resume="two"), cfg)
        history = [(h.next, h.values) for h in g.get_state_history(cfg)]
        return first, second, paused, out, history, dict(calls)

    res = same(scenario)
    assert res[5] == {"call": 3, "s1": 2, "ask": 4, "s3": 2}


def two_asking(m: Any, calls: Calls, first: str, second: str, *, parallel: bool) -> Any:
    """A subgraph of two asking nodes, both after START or one after the other."""
    b = m.StateGraph(S)
    b.add_node(first, asking(m, calls, first))
    b.add_node(second, asking(m, calls, second))
    b.add_edge(m.START, first)
    b.add_edge(m.START if parallel else first, second)
    return b.compile()


def parent_of(m: Any, calls: Calls, sub: Any, as_node: bool) -> Any:
    """A parent running ``sub`` as its node ``call``, or from its node function ``call``."""
    if not as_node:
        return caller(m, calls, sub)
    p = m.StateGraph(S)
    p.add_node("call", sub)
    p.add_edge(m.START, "call")
    return p


FORMS = ["stream", "astream", "ainvoke", "invoke_updates"]


def run_form(sub: Any, form: str, value: Any, modes: Any) -> Any:
    """Run ``sub`` from inside a node in the given form; what the node gets back."""
    if form == "stream":
        return list(sub.stream(value, stream_mode=modes))
    if form == "invoke_updates":
        return sub.invoke(value, stream_mode="updates")

    async def go() -> Any:
        if form == "ainvoke":
            return await sub.ainvoke(value)
        return [c async for c in sub.astream(value, stream_mode=modes)]

    return asyncio.run(go())


@pytest.mark.parametrize(
    ("form", "modes", "checkpointer"),
    [(f, m, c) for f, m, c in itertools.product(
        FORMS, ["updates", ["values", "custom"]], [None, True])
     if not (f in ("ainvoke", "invoke_updates") and m != "updates")],
)
def test_subgraph_streamed_from_a_node_is_a_subgraph_run(
    form: str, modes: Any, checkpointer: Any
) -> None:
    """``sub.stream``/``astream``/``ainvoke`` in a node: own namespace, parent stream
    with ``subgraphs=True``, interrupts pause the parent, resume where it paused."""

    def scenario(m: Any) -> Any:
        calls = Calls()
        sub = ask_chain(m, calls, checkpointer=checkpointer)

        def call(s: S) -> dict[str, Any]:
            calls.hit("call")
            got = run_form(sub, form, {"log": ["in"]}, modes)
            again = sub.invoke({"log": ["again"]})
            return {"log": [repr(Norm()(got)), "/".join(again["log"])]}

        p = m.StateGraph(S)
        p.add_node("call", call)
        p.add_edge(m.START, "call")
        g = p.compile(checkpointer=m.InMemorySaver())
        cfg = new_config()
        runs = []
        for value in ({"log": []}, m.Command(resume="one"), m.Command(resume="two")):
            chunks = g.stream(value, cfg, subgraphs=True,
                              stream_mode=["updates", "values", "custom"])
            runs.append([(ns_of(c), *c[1:]) for c in chunks])
            state = g.get_state(cfg, subgraphs=True)
            runs.append([(t.name, t.state and (t.state.next, t.state.values)) for t in state.tasks])
        history = [(h.next, h.values) for h in g.get_state_history(cfg)]
        return runs, history, dict(calls)

    same(scenario)


@pytest.mark.parametrize("form", ["ainvoke", "astream"])
def test_async_node_awaiting_a_subgraph_in_an_async_run(form: str) -> None:
    def scenario(m: Any) -> Any:
        calls = Calls()
        sub = ask_chain(m, calls)

        async def call(s: S) -> dict[str, Any]:
            calls.hit("call")
            if form == "ainvoke":
                got: Any = await sub.ainvoke({"log": ["in"]})
            else:
                got = [c async for c in sub.astream({"log": ["in"]}, stream_mode="values")]
            return {"log": [repr(Norm()(got))]}

        p = m.StateGraph(S)
        p.add_node("call", call)
        p.add_edge(m.START, "call")
        g = p.compile(checkpointer=m.InMemorySaver())
        cfg = new_config()

        async def run(value: Any) -> Any:
            return [(ns_of(c), c[1]) async for c in g.astream(value, cfg, subgraphs=True)]

        first = asyncio.run(run({"log": []}))
        state = asyncio.run(g.aget_state(cfg, subgraphs=True))
        second = asyncio.run(run(m.Command(resume="yes")))
        return first, state, second, dict(calls)

    same(scenario)


@pytest.mark.parametrize(
    ("as_node", "checkpointer", "nested"), list(itertools.product([True, False], [None, True],
                                                                  [False, True])))
def test_subgraph_state_read_and_edited_through_the_parent(
    as_node: bool, checkpointer: Any, nested: bool
) -> None:
    """``get_state``/``get_state_history``/``update_state`` with a subgraph's config
    address the subgraph (its ``next``, its history), as LangGraph; the edit is what
    the paused subgraph resumes from."""

    def scenario(m: Any) -> Any:
        calls = Calls()
        sub = ask_chain(m, calls, checkpointer=checkpointer)
        if nested:
            mid = m.StateGraph(S)
            mid.add_node("inner", sub)
            mid.add_edge(m.START, "inner")
            sub = mid.compile()
        g = parent_of(m, calls, sub, as_node).compile(checkpointer=m.InMemorySaver())
        cfg = new_config()
        g.invoke({"log": []}, cfg)
        inner = g.get_state(cfg, subgraphs=True).tasks[0].state
        while inner.tasks and inner.tasks[0].state is not None:
            inner = inner.tasks[0].state
        plain = g.get_state(cfg).tasks[0].state  # a config without a checkpoint id
        seen = [
            Norm().ns(inner.config["configurable"]["checkpoint_ns"]),
            g.get_state(inner.config), g.get_state(plain), g.get_state(plain, subgraphs=True),
            [(h.next, h.values, h.metadata["step"]) for h in g.get_state_history(inner.config)],
            [(h.next, h.values, h.metadata["step"]) for h in g.get_state_history(plain)],
        ]
        edited = g.update_state(inner.config, {"log": ["edited"]})
        seen += [Norm().config(edited), g.get_state(cfg, subgraphs=True)]
        return [*seen, g.invoke(m.Command(resume="yes"), cfg), dict(calls)]

    res = same(scenario)
    assert res[-1]["ask"] == 2 and res[-1]["s1"] == 1  # resumed at the edited pause


@pytest.mark.parametrize("m", IMPLS.values(), ids=IMPLS.keys())
def test_update_state_in_a_namespace_naming_no_subgraph_is_refused(m: Any) -> None:
    b = m.StateGraph(S)
    b.add_node("a", lambda s: {"log": ["a"]})
    b.add_edge(m.START, "a")
    g = b.compile(checkpointer=m.InMemorySaver())
    cfg = new_config()
    g.invoke({"log": []}, cfg)
    nowhere = {"configurable": {**cfg["configurable"], "checkpoint_ns": "nope:1"}}
    with pytest.raises(ValueError, match="nope"):  # LangGraph's ValueError; ours is one too
        g.update_state(nowhere, {"log": ["x"]})


def test_history_of_a_named_checkpoint_is_that_checkpoint() -> None:
    def scenario(m: Any) -> Any:
        g = chain(m, Calls(), ["a", "b", "c"], checkpointer=m.InMemorySaver())
        cfg = new_config()
        g.invoke({"log": []}, cfg)
        snaps = list(g.get_state_history(cfg))
        return [list(g.get_state_history(s.config)) for s in snaps]

    same(scenario)


def test_messages_a_subgraph_streamed_are_not_streamed_again_by_its_parent() -> None:
    from langchain_core.messages import AIMessage

    def scenario(m: Any) -> Any:
        sb = m.StateGraph(m.MessagesState)
        sb.add_node("talk", lambda s: {"messages": [AIMessage(content="inner hi", id="m1")]})
        sb.add_edge(m.START, "talk")
        sub = sb.compile()

        def call(s: Any) -> dict[str, Any]:
            return {"messages": sub.invoke({"messages": s["messages"]})["messages"][-1:]}

        b = m.StateGraph(m.MessagesState)
        b.add_node("call", call)
        b.add_node("node", sub)
        b.add_edge(m.START, "call")
        b.add_edge("call", "node")
        g = b.compile(checkpointer=m.InMemorySaver())
        keys = ("langgraph_node", "langgraph_step", "langgraph_triggers", "langgraph_path")
        out = []
        for ns, (msg, meta) in g.stream({"messages": [("user", "hi")]}, new_config(),
                                        stream_mode="messages", subgraphs=True):
            shown = {k: meta[k] for k in keys}
            out.append((Norm().ns("|".join(ns)), msg, shown,
                        Norm().ns(meta["langgraph_checkpoint_ns"])))
        return out

    assert len(same(scenario)) == 1


def test_parallel_subgraph_runs_from_send_paused_and_resumed_by_id() -> None:
    class Overall(TypedDict):
        docs: list[str]
        out: Annotated[list[str], operator.add]

    class Doc(TypedDict):
        doc: str
        out: Annotated[list[str], operator.add]

    def scenario(m: Any) -> Any:
        calls = Calls()

        def check(s: Doc) -> dict[str, Any]:
            calls.hit(s["doc"])
            return {"out": [f"{s['doc']}={m.interrupt(s['doc'])}"]}

        sb = m.StateGraph(Doc)
        sb.add_node("check", check)
        sb.add_edge(m.START, "check")
        b = m.StateGraph(Overall)
        b.add_node("one", sb.compile())
        b.add_conditional_edges(
            m.START, lambda s: [m.Send("one", {"doc": d, "out": []}) for d in s["docs"]], ["one"])
        g = b.compile(checkpointer=m.InMemorySaver())
        cfg = new_config()
        paused = g.invoke({"docs": ["a", "b", "c"], "out": []}, cfg)["__interrupt__"]
        first = sorted(paused, key=lambda i: i.value)
        again = g.invoke(m.Command(resume={i.id: f"yes-{i.value}" for i in first[:2]}), cfg)
        left = [i.value for i in again["__interrupt__"]]
        state = g.get_state(cfg, subgraphs=True)
        pending = sorted([i.value for t in state.tasks for i in t.interrupts])
        done = g.invoke(m.Command(resume={i.id: "last" for i in again["__interrupt__"]}), cfg)
        return [i.value for i in first], left, pending, sorted(done["out"]), dict(calls)

    res = same(scenario)
    assert res[-1] == {"a": 2, "b": 2, "c": 3}


@pytest.mark.parametrize(("as_node", "where"), list(itertools.product(
    [True, False], ["interrupt_before", "interrupt_after"])))
def test_breakpoint_in_a_subgraph_pauses_the_parent(as_node: bool, where: str) -> None:
    """A subgraph compiled with ``interrupt_before``/``interrupt_after`` pauses its
    parent (no ``__interrupt__`` value); ``invoke(None)`` continues it."""

    def scenario(m: Any) -> Any:
        calls = Calls()
        sub = chain(m, calls, ["s1", "s2"], **{where: ["s2" if "before" in where else "s1"]})
        g = parent_of(m, calls, sub, as_node).compile(checkpointer=m.InMemorySaver())
        cfg = new_config()
        modes = ["updates", "values"]
        first = [(ns_of(c), *c[1:]) for c in g.stream({"log": []}, cfg, subgraphs=True,
                                                      stream_mode=modes)]
        paused = g.get_state(cfg, subgraphs=True)
        then = [(ns_of(c), *c[1:]) for c in g.stream(None, cfg, subgraphs=True,
                                                     stream_mode=modes)]
        history = [(h.next, h.values) for h in g.get_state_history(cfg)]
        return first, paused, then, dict(calls), history

    res = same(scenario)
    assert res[3]["s1"] == 1 and res[3]["s2"] == 1


def test_nested_stream_with_subgraphs_names_its_own_chunks() -> None:
    def scenario(m: Any) -> Any:
        calls = Calls()
        mid = m.StateGraph(S)
        mid.add_node("inner", ask_chain(m, calls))
        mid.add_edge(m.START, "inner")
        middle = mid.compile()

        def call(s: S) -> dict[str, Any]:
            got = [(ns_of(c), c[1]) for c in middle.stream({"log": ["x"]}, subgraphs=True)]
            return {"log": [repr(Norm()(got))]}

        p = m.StateGraph(S)
        p.add_node("call", call)
        p.add_edge(m.START, "call")
        g = p.compile(checkpointer=m.InMemorySaver())
        cfg = new_config()
        first = [(ns_of(c), c[1]) for c in g.stream({"log": []}, cfg, subgraphs=True)]
        then = [(ns_of(c), c[1]) for c in g.stream(m.Command(resume="y"), cfg, subgraphs=True)]
        return first, then, dict(calls)

    same(scenario)


@pytest.mark.parametrize("as_node", [True, False])
def test_parallel_interrupts_inside_one_subgraph_resumed_by_id_one_at_a_time(
    as_node: bool,
) -> None:
    def scenario(m: Any) -> Any:
        calls = Calls()
        sub = two_asking(m, calls, "x", "y", parallel=True)
        g = parent_of(m, calls, sub, as_node).compile(checkpointer=m.InMemorySaver())
        cfg = new_config()
        paused = sorted(g.invoke({"log": []}, cfg)["__interrupt__"], key=lambda i: i.value)
        left = g.invoke(m.Command(resume={paused[0].id: "X"}), cfg)["__interrupt__"]
        state = g.get_state(cfg, subgraphs=True)
        done = g.invoke(m.Command(resume={i.id: "Y" for i in left}), cfg)
        return [i.value for i in paused], [i.value for i in left], state, done, dict(calls)

    res = same(scenario)
    assert res[-1]["x"] == 2 and res[-1]["y"] == 3  # x answered once, not asked again


def test_subgraph_run_inside_a_task_resumes_with_each_new_answer() -> None:
    def scenario(m: Any) -> Any:
        calls = Calls()
        sub = two_asking(m, calls, "a1", "a2", parallel=False)

        @m.task
        def run_sub(x: str) -> list[str]:
            calls.hit("run_sub")
            return list(sub.invoke({"log": [x]})["log"])

        @m.entrypoint(checkpointer=m.InMemorySaver())
        def workflow(x: str) -> list[str]:
            first = m.interrupt("top?")
            return [first, *run_sub(x).result()]

        cfg = new_config()
        seen = [workflow.invoke("in", cfg)]
        for answer in ("T", "A1", "A2"):
            seen.append(workflow.invoke(m.Command(resume=answer), cfg))
        return seen, dict(calls)

    res = same(scenario)
    assert res[0][-1] == ["T", "in", "a1=A1", "a2=A2"]


@pytest.mark.parametrize(
    ("as_node", "resume"), list(itertools.product([True, False], [True, False])))
def test_running_the_parent_with_a_subgraph_config_runs_the_parent(
    as_node: bool, resume: bool
) -> None:
    """With a resume it continues the thread; with None it replays the parent's step
    the subgraph checkpoint belongs to (a fork), as in LangGraph."""

    def scenario(m: Any) -> Any:
        calls = Calls()
        g = parent_of(m, calls, ask_chain(m, calls), as_node).compile(
            checkpointer=m.InMemorySaver())
        cfg = new_config()
        g.invoke({"log": []}, cfg)
        child = g.get_state(cfg, subgraphs=True).tasks[0].state.config
        out = g.invoke(m.Command(resume="yes") if resume else None, child)
        history = [(h.next, h.values, h.metadata["source"]) for h in g.get_state_history(cfg)]
        return out, g.get_state(cfg, subgraphs=True), history, dict(calls)

    same(scenario)


def test_checkpointer_true_subgraph_called_after_a_resumed_interrupt_takes_its_new_input() -> None:
    """A difference on purpose (README): LangGraph hands back the subgraph's old state
    and drops the new input; durable_graph runs it on its history."""

    def scenario(m: Any) -> Any:
        calls = Calls()
        sub = chain(m, calls, ["s1"], checkpointer=True)

        def call(s: S) -> dict[str, Any]:
            ok = m.interrupt("go?")
            return {"log": ["/".join(sub.invoke({"log": [f"in-{ok}"]})["log"])]}

        p = m.StateGraph(S)
        p.add_node("call", call)
        p.add_edge(m.START, "call")
        g = p.compile(checkpointer=m.InMemorySaver())
        cfg = new_config()
        outs = []
        for i in range(2):
            g.invoke({"log": []}, cfg)
            outs.append(g.invoke(m.Command(resume=f"r{i}"), cfg)["log"][-1])
        return outs, dict(calls)

    lg, dg = both(scenario)
    assert lg == (["in-r0/s1", "in-r0/s1"], {"s1": 1})
    assert dg == (["in-r0/s1", "in-r0/s1/in-r1/s1"], {"s1": 2})


@pytest.mark.parametrize("sibling", ["node", "subgraph"])
def test_resumed_step_streams_its_finished_tasks_as_cached(sibling: str) -> None:
    def scenario(m: Any) -> Any:
        calls = Calls()
        p = m.StateGraph(S)
        p.add_node("a", asking(m, calls, "a"))
        p.add_node("b", chain(m, calls, ["t1"]) if sibling == "subgraph"
                   else (lambda s: {"log": ["b"]}))
        p.add_edge(m.START, "a")
        p.add_edge(m.START, "b")
        g = p.compile(checkpointer=m.InMemorySaver())
        cfg = new_config()
        first = sorted(repr(Norm()((ns_of(c), c[1])))
                       for c in g.stream({"log": []}, cfg, subgraphs=True))
        resumed = []
        for ns, mode, chunk in g.stream(m.Command(resume="go"), cfg, subgraphs=True,
                                        stream_mode=["tasks", "updates", "values"]):
            shown = {k: v for k, v in chunk.items() if k != "id"} if mode == "tasks" else chunk
            resumed.append((ns_of((ns,)), mode, shown))
        return first, resumed, dict(calls)

    same(scenario)


def test_async_state_methods_address_a_subgraph_through_its_config() -> None:
    def scenario(m: Any) -> Any:
        calls = Calls()
        g = caller(m, calls, ask_chain(m, calls)).compile(checkpointer=m.InMemorySaver())
        cfg = new_config()

        async def go() -> Any:
            await g.ainvoke({"log": []}, cfg)
            child = (await g.aget_state(cfg, subgraphs=True)).tasks[0].state.config
            history = [h async for h in g.aget_state_history(child)]
            plain = (await g.aget_state(cfg)).tasks[0].state
            whole = [h async for h in g.aget_state_history(plain, limit=2)]
            await g.aupdate_state(child, {"log": ["edited"]})
            return history, whole, await g.ainvoke(m.Command(resume="ok"), cfg), dict(calls)

        return asyncio.run(go())

    same(scenario)


class In(TypedDict):
    q: str


class Out(TypedDict):
    a: str


class Full(TypedDict):
    q: str
    a: str
    scratch: str


def io_graph(m: Any) -> Any:
    """think (a private key) -> answer (the output key), with input and output schemas."""
    b = m.StateGraph(Full, input_schema=In, output_schema=Out)
    b.add_node("think", lambda s: {"scratch": s["q"] * 2})
    b.add_node("answer", lambda s: {"a": s["scratch"].upper()})
    b.add_edge(m.START, "think")
    b.add_edge("think", "answer")
    return b


def test_invoked_subgraph_with_io_schemas_streams_its_output_keys() -> None:
    """A subgraph run by ``invoke`` (as a node or from one) streams ``values`` of its
    output schema, when a step wrote one; ``sub.stream`` streams the whole state."""

    class Parent(TypedDict):
        q: str
        a: str
        streamed: list[Any]

    def scenario(m: Any) -> Any:
        sub = io_graph(m).compile()

        def call(s: Parent) -> dict[str, Any]:
            return {**sub.invoke({"q": s["q"] + "!"}),
                    "streamed": list(sub.stream({"q": "x"}, stream_mode="values"))}

        p = m.StateGraph(Parent)
        p.add_node("sub", sub)
        p.add_node("call", call)
        p.add_edge(m.START, "sub")
        p.add_edge("sub", "call")
        g = p.compile(checkpointer=m.InMemorySaver())
        cfg = new_config()
        chunks = g.stream({"q": "hi", "a": "", "streamed": []}, cfg, subgraphs=True,
                          stream_mode=["values", "updates"])
        return [(ns_of(c), *c[1:]) for c in chunks], g.get_state(cfg)

    same(scenario)


def test_invoke_with_a_stream_mode_narrows_chunks_to_the_output_schema() -> None:
    def scenario(m: Any) -> Any:
        g = io_graph(m).compile(checkpointer=m.InMemorySaver())
        return [g.invoke({"q": "hi"}, new_config(), stream_mode=mode)
                for mode in ("updates", ["values", "updates"])]

    same(scenario)


@pytest.mark.parametrize("in_subgraph", [False, True])
def test_history_shows_a_resume_update_on_the_checkpoint_it_was_given_to(
    in_subgraph: bool,
) -> None:
    def scenario(m: Any) -> Any:
        calls = Calls()
        if in_subgraph:
            g = parent_of(m, calls, ask_chain(m, calls), True)
        else:
            g = m.StateGraph(S)
            g.add_node("call", asking(m, calls, "ask"))
            g.add_edge(m.START, "call")
        graph = g.compile(checkpointer=m.InMemorySaver())
        cfg = new_config()
        graph.invoke({"log": []}, cfg)
        out = graph.invoke(m.Command(resume="y", update={"log": ["upd"]}), cfg)
        return out, [(h.next, h.values) for h in graph.get_state_history(cfg)], dict(calls)

    same(scenario)
