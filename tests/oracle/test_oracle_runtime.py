"""Runtime features on both: context, the store, managed values, one-value state, defer,
node and task caching. Each scenario compares outputs, streamed chunks, state and history."""

from __future__ import annotations

import dataclasses
import functools
import operator
import time
from typing import Annotated, Any

import pytest
from typing_extensions import TypedDict

from tests.oracle.impls import Calls, new_config
from tests.oracle.runtime_impls import observe, same_rt, store_dump

pytestmark = pytest.mark.oracle


@dataclasses.dataclass
class Ctx:
    user: str
    model: str = "small"


class S(TypedDict, total=False):
    log: Annotated[list[Any], operator.add]
    n: int


def test_context_runtime_and_get_runtime() -> None:
    def scenario(m: Any) -> Any:
        def a(s: S, runtime: m.Runtime[Ctx]) -> dict[str, Any]:
            runtime.stream_writer({"user": runtime.context.user})
            info = runtime.execution_info
            return {"log": [[runtime.context.user, runtime.context.model, info.node_attempt,
                             info.task_id is not None, runtime.store is None]]}

        def b(s: S) -> dict[str, Any]:
            rt = m.get_runtime(Ctx)
            return {"log": [["b", rt.context.model]]}

        bld = m.StateGraph(S, context_schema=Ctx)
        bld.add_node("a", a)
        bld.add_node("b", b)
        bld.add_edge(m.START, "a")
        bld.add_edge("a", "b")
        g = bld.compile(checkpointer=m.InMemorySaver())
        cfg = new_config()
        seen = observe(g, {"log": []}, cfg, context={"user": "ann", "model": "big"})
        return seen, g.invoke({"log": []}, new_config(), context=Ctx("bob"))

    same_rt(scenario)


def test_context_reaches_subgraph_and_retries_count_attempts() -> None:
    def scenario(m: Any) -> Any:
        calls = Calls()

        def inner(s: S, runtime: m.Runtime[Ctx]) -> dict[str, Any]:
            if calls.hit("inner") < 2:
                raise ConnectionError("flaky")
            return {"log": [[runtime.context.user, runtime.execution_info.node_attempt]]}

        sub = m.StateGraph(S, context_schema=Ctx)
        sub.add_node("inner", inner, retry_policy=m.RetryPolicy(initial_interval=0.01,
                                                                  jitter=False))
        sub.add_edge(m.START, "inner")
        bld = m.StateGraph(S, context_schema=Ctx)
        bld.add_node("sub", sub.compile())
        bld.add_edge(m.START, "sub")
        g = bld.compile()
        return observe(g, {"log": []}, new_config(), context=Ctx("cy"), modes=("values",))

    same_rt(scenario)


def test_store_injected_get_store_and_runtime_store() -> None:
    def scenario(m: Any) -> Any:
        store = m.InMemoryStore()
        store.put(("users",), "ann", {"name": "Ann"})

        def remember(s: S, store) -> dict[str, Any]:  # noqa: ANN001 - injected by name
            store.put(("memories", "ann"), f"m{s.get('n', 0)}", {"text": "likes tea"})
            return {"n": s.get("n", 0) + 1}

        def recall(s: S, runtime: m.Runtime[Ctx]) -> dict[str, Any]:
            found = runtime.store.search(("memories", runtime.context.user))
            user = m.get_store().get(("users",), runtime.context.user)
            return {"log": [user.value["name"], *sorted(i.key for i in found)]}

        bld = m.StateGraph(S, context_schema=Ctx)
        bld.add_node("remember", remember)
        bld.add_node("recall", recall)
        bld.add_edge(m.START, "remember")
        bld.add_edge("remember", "recall")
        g = bld.compile(checkpointer=m.InMemorySaver(), store=store)
        cfg = new_config()
        first = observe(g, {"log": []}, cfg, context={"user": "ann"})
        second = g.invoke({"log": [], "n": 5}, new_config(), context={"user": "ann"})
        return first, second, store_dump(store)

    same_rt(scenario)


def test_store_in_entrypoint_and_task() -> None:
    def scenario(m: Any) -> Any:
        store = m.InMemoryStore()

        @m.task
        def save(key: str, value: int) -> int:
            m.get_store().put(("kv",), key, {"v": value})
            return value

        @m.entrypoint(checkpointer=m.InMemorySaver(), store=store)
        def wf(n: int, *, previous: Any = None, store) -> int:  # noqa: ANN001
            total = sum(save(f"k{i}", i).result() for i in range(n))
            store.put(("runs",), "last", {"total": total, "previous": previous})
            return total

        cfg = new_config()
        out = [wf.invoke(3, cfg), wf.invoke(4, cfg)]
        return out, list(wf.stream(2, new_config(), stream_mode="updates")), store_dump(store)

    same_rt(scenario)


def test_remaining_steps_and_is_last_step() -> None:
    def scenario(m: Any) -> Any:
        # functional form: the annotations must be the implementation's, not strings
        agent_state = TypedDict("agent_state", {  # type: ignore[misc]  # noqa: UP013
            "log": Annotated[list[Any], operator.add],
            "remaining_steps": m.RemainingSteps,
            "is_last_step": m.IsLastStep,
        }, total=False)

        def agent(s):  # noqa: ANN001, ANN202 - LangGraph reads node hints
            return {"log": [[s["remaining_steps"], s["is_last_step"]]]}

        def route(s):  # noqa: ANN001, ANN202
            return m.END if s["remaining_steps"] <= 2 else "agent"

        bld = m.StateGraph(agent_state)
        bld.add_node("agent", agent)
        bld.add_edge(m.START, "agent")
        bld.add_conditional_edges("agent", route)
        g = bld.compile(checkpointer=m.InMemorySaver())
        first = observe(g, {"log": []}, new_config(recursion_limit=6))

        def last(s):  # noqa: ANN001, ANN202
            return {"log": [s["is_last_step"]]}

        bld2 = m.StateGraph(agent_state)
        bld2.add_node("last", last)
        bld2.add_edge(m.START, "last")
        bld2.add_edge("last", "last")
        try:
            bld2.compile().invoke({"log": []}, {"recursion_limit": 3})
        except Exception as exc:  # noqa: BLE001 - the error is an observable
            stopped: Any = type(exc).__name__
        return first, stopped

    same_rt(scenario)


def test_one_value_state() -> None:
    def scenario(m: Any) -> Any:
        def more(s: list[str]) -> list[str]:
            return [f"step{len(s)}"]

        bld = m.StateGraph(Annotated[list, operator.add])
        bld.add_node("more", more)
        bld.add_edge(m.START, "more")
        bld.add_conditional_edges("more", lambda s: m.END if len(s) >= 4 else "more")
        g = bld.compile(checkpointer=m.InMemorySaver())
        cfg = new_config()
        seen = observe(g, ["start"], cfg, modes=("updates", "values"))
        g.update_state(cfg, ["edited"])
        return seen, g.get_state(cfg), g.invoke(["x"], new_config())

    same_rt(scenario)


def test_defer_waits_for_every_branch() -> None:
    def scenario(m: Any) -> Any:
        bld = m.StateGraph(S)
        for name in ("a", "b", "c", "d"):
            bld.add_node(name, functools.partial(lambda n, s: {"log": [n]}, name))
        bld.add_node("reduce", lambda s: {"log": ["reduce:" + "".join(sorted(s["log"]))]},
                     defer=True)
        bld.add_edge(m.START, "a")
        bld.add_edge("a", "b")
        bld.add_edge("b", "c")
        bld.add_edge(m.START, "d")
        bld.add_edge("c", "reduce")
        bld.add_edge("d", "reduce")
        g = bld.compile(checkpointer=m.InMemorySaver())
        return observe(g, {"log": []}, new_config(), modes=("updates",), sort_updates=True)

    same_rt(scenario)


def test_defer_after_fan_in_and_sends() -> None:
    def scenario(m: Any) -> Any:
        bld = m.StateGraph(S)
        bld.add_node("split", lambda s: {"n": 3})
        bld.add_node("work", lambda x: {"log": [x * 10]})
        bld.add_node("left", lambda s: {"log": ["left"]})
        bld.add_node("sum", lambda s: {"n": sum(v for v in s["log"] if isinstance(v, int))},
                     defer=True)
        bld.add_edge(m.START, "split")
        bld.add_conditional_edges("split", lambda s: [m.Send("work", i) for i in range(s["n"])])
        bld.add_edge(m.START, "left")
        bld.add_edge(["work", "left"], "sum")
        g = bld.compile(checkpointer=m.InMemorySaver())
        cfg = new_config()
        return observe(g, {"log": []}, cfg, modes=("values",), sort_updates=True)

    same_rt(scenario)


def test_node_cache_hits_are_streamed_as_cached() -> None:
    def scenario(m: Any) -> Any:
        calls = Calls()

        def slow(s: S) -> dict[str, Any]:
            calls.hit("slow")
            return {"log": [s.get("n", 0) * 2]}

        bld = m.StateGraph(S)
        bld.add_node("slow", slow, cache_policy=m.CachePolicy(ttl=60))
        bld.add_node("after", lambda s: {"n": len(s["log"])})
        bld.add_edge(m.START, "slow")
        bld.add_edge("slow", "after")
        g = bld.compile(checkpointer=m.InMemorySaver(), cache=m.InMemoryCache())
        runs = [observe(g, {"log": [], "n": n}, new_config(), modes=("updates", "values"))
                for n in (1, 1, 2)]
        tasks = list(g.stream({"log": [], "n": 2}, new_config(), stream_mode="tasks"))
        return runs, [t["name"] for t in tasks], dict(calls)

    same_rt(scenario)


def test_node_cache_key_func_and_ttl() -> None:
    def scenario(m: Any) -> Any:
        calls = Calls()

        def node(s: S) -> dict[str, Any]:
            return {"log": [calls.hit("node")]}

        bld = m.StateGraph(S)
        policy = m.CachePolicy(key_func=lambda s: str(s.get("n")), ttl=1)
        bld.add_node("node", node, cache_policy=policy)
        bld.add_edge(m.START, "node")
        g = bld.compile(cache=m.InMemoryCache())
        out = [g.invoke({"log": ["ignored by the key"], "n": 1}), g.invoke({"log": [], "n": 1})]
        time.sleep(1.1)
        out.append(g.invoke({"log": [], "n": 1}))
        return out

    same_rt(scenario)


def test_task_cache_policy() -> None:
    def scenario(m: Any) -> Any:
        calls = Calls()

        @m.task(cache_policy=m.CachePolicy())
        def square(x: int) -> int:
            calls.hit(f"square{x}")
            return x * x

        @m.entrypoint(checkpointer=m.InMemorySaver(), cache=m.InMemoryCache())
        def wf(xs: list[int]) -> list[int]:
            return [square(x).result() for x in xs]

        first = list(wf.stream([1, 2], new_config(), stream_mode="updates"))
        second = list(wf.stream([2, 3], new_config(), stream_mode="updates"))
        return first, second, dict(calls)

    same_rt(scenario)


def test_entrypoint_cache_policy() -> None:
    def scenario(m: Any) -> Any:
        calls = Calls()

        @m.entrypoint(checkpointer=m.InMemorySaver(), cache=m.InMemoryCache(),
                      cache_policy=m.CachePolicy(ttl=60))
        def wf(x: int, *, previous: Any = None) -> dict[str, Any]:
            return {"x": x, "runs": calls.hit("wf"), "previous": previous}

        cfg = new_config()
        first = list(wf.stream(1, cfg, stream_mode=["updates", "values"]))
        again = list(wf.stream(1, cfg, stream_mode=["updates", "values"]))  # same input: hit
        other = wf.invoke(2, cfg)
        return first, again, other, wf.get_state(cfg), dict(calls)

    same_rt(scenario)


def test_cache_hit_in_debug_and_tasks_streams() -> None:
    """A hit shows its task starting but no task result, in ``tasks`` and ``debug`` alike."""
    def scenario(m: Any) -> Any:
        bld = m.StateGraph(S)
        bld.add_node("a", lambda s: {"n": s["n"] + 1}, cache_policy=m.CachePolicy())
        bld.add_edge(m.START, "a")
        g = bld.compile(checkpointer=m.InMemorySaver(), cache=m.InMemoryCache())
        g.invoke({"n": 1}, new_config())
        chunks = g.stream({"n": 1}, new_config(), stream_mode=["debug", "updates", "tasks"])
        shown = {"debug": lambda c: c["type"], "updates": lambda c: c,
                 "tasks": lambda c: {k: v for k, v in c.items() if k != "id"}}
        return [(mode, shown[mode](c)) for mode, c in chunks]

    same_rt(scenario)
