"""Functional API: @entrypoint with @task, previous, entrypoint.final, interrupts, resume."""

from __future__ import annotations

from typing import Any

import pytest

from tests.oracle.impls import Calls, new_config, same

pytestmark = pytest.mark.oracle


TASK_UPDATES = (
    "stream_mode='updates' of an @entrypoint: LangGraph yields one {task_name: result} chunk per "
    "finished @task (e.g. {'double': 2}, {'flaky': 7}) before the final {'wf': ...}; "
    "durable_graph yields only the entrypoint's final {'wf': ...} chunk (and the interrupt chunk)"
)


def workflow(m: Any, calls: Calls, fail: dict[str, bool] | None = None,
             ask: bool = False) -> Any:
    fail = fail if fail is not None else {}

    @m.task
    def double(x: int) -> int:
        calls.hit(f"double:{x}")
        return 2 * x

    @m.task
    def flaky(x: int) -> int:
        calls.hit("flaky")
        if fail.get("flaky"):
            raise RuntimeError("flaky")
        return x + 1

    @m.entrypoint(checkpointer=m.InMemorySaver())
    def wf(xs: list[int]) -> dict[str, Any]:
        doubled = [f.result() for f in [double(x) for x in xs]]
        answer = m.interrupt({"doubled": doubled}) if ask else None
        total = flaky(sum(doubled)).result()
        return {"total": total, "answer": answer}

    return wf


def test_entrypoint_with_tasks() -> None:
    def scenario(m: Any) -> Any:
        calls = Calls()
        wf = workflow(m, calls)
        cfg = new_config()
        out = wf.invoke([1, 2, 3], cfg)
        snap = wf.get_state(cfg)
        return out, dict(calls), snap.values, snap.next, snap.metadata["step"]

    same(scenario)


def test_entrypoint_history() -> None:
    def scenario(m: Any) -> Any:
        wf = workflow(m, Calls())
        cfg = new_config()
        wf.invoke([1], cfg)
        return [(h.metadata["source"], h.metadata["step"], h.next, h.values)
                for h in wf.get_state_history(cfg)]

    same(scenario)


def test_entrypoint_resume_after_task_failure_reuses_finished_tasks() -> None:
    def scenario(m: Any) -> Any:
        calls = Calls()
        fail = {"flaky": True}
        wf = workflow(m, calls, fail)
        cfg = new_config()
        with pytest.raises(RuntimeError):
            wf.invoke([1, 2], cfg)
        first = dict(calls)
        fail["flaky"] = False
        out = wf.invoke(None, cfg)
        return first, out, dict(calls)

    res = same(scenario)
    assert res[2] == {"double:1": 1, "double:2": 1, "flaky": 2}


def test_entrypoint_interrupt_and_resume() -> None:
    def scenario(m: Any) -> Any:
        calls = Calls()
        wf = workflow(m, calls, ask=True)
        cfg = new_config()
        first = wf.invoke([5], cfg)
        snap = wf.get_state(cfg)
        out = wf.invoke(m.Command(resume="go"), cfg)
        return first, snap.next, [i.value for i in snap.interrupts], out, dict(calls)

    res = same(scenario)
    assert res[4] == {"double:5": 1, "flaky": 1}


def test_entrypoint_interrupt_stream_chunks() -> None:
    def scenario(m: Any) -> Any:
        wf = workflow(m, Calls(), ask=True)
        cfg = new_config()
        first = list(wf.stream([5], cfg, stream_mode="updates"))
        second = list(wf.stream(m.Command(resume="go"), cfg, stream_mode="updates"))
        return first, second

    same(scenario)


def test_entrypoint_previous() -> None:
    def scenario(m: Any) -> Any:
        seen = []

        @m.entrypoint(checkpointer=m.InMemorySaver())
        def acc(x: int, *, previous: Any = None) -> int:
            seen.append(previous)
            return (previous or 0) + x

        cfg = new_config()
        return [acc.invoke(x, cfg) for x in (1, 2, 3)], seen, acc.get_state(cfg).values

    assert same(scenario)[0] == [1, 3, 6]


def test_entrypoint_final_value_and_save() -> None:
    def scenario(m: Any) -> Any:
        seen = []

        @m.entrypoint(checkpointer=m.InMemorySaver())
        def counter(x: int, *, previous: Any = None) -> Any:
            seen.append(previous)
            total = (previous or 0) + x
            return m.entrypoint.final(value=f"total={total}", save=total)

        cfg = new_config()
        outs = [counter.invoke(x, cfg) for x in (1, 10)]
        return outs, seen, counter.get_state(cfg).values

    assert same(scenario)[:2] == (["total=1", "total=11"], [None, 1])


def test_entrypoint_stream_updates() -> None:
    def scenario(m: Any) -> Any:
        wf = workflow(m, Calls())
        chunks = list(wf.stream([1, 2], new_config(), stream_mode="updates"))
        # The two `double` calls run in parallel: either may finish (and stream) first,
        # in LangGraph as here. Their pair is compared as a set, the rest in order.
        doubles = [c for c in chunks if "double" in c]
        assert len(doubles) == 2 and chunks[:2] == doubles, chunks
        return [sorted(doubles, key=repr), *chunks[2:]]

    same(scenario)


def test_entrypoint_stream_values() -> None:
    def scenario(m: Any) -> Any:
        wf = workflow(m, Calls())
        return list(wf.stream([1, 2], new_config(), stream_mode="values"))

    same(scenario)


@pytest.mark.parametrize("durability", ["sync", "async", "exit"])
def test_entrypoint_checkpoint_count_per_durability(durability: str) -> None:
    def scenario(m: Any) -> Any:
        wf = workflow(m, Calls())
        cfg = new_config()
        wf.invoke([1, 2], cfg, durability=durability)
        return [(h.metadata["source"], h.metadata["step"])
                for h in wf.get_state_history(cfg)]

    same(scenario)


@pytest.mark.parametrize("durability", ["sync", "async", "exit"])
def test_entrypoint_interrupt_checkpoint_count_per_durability(durability: str) -> None:
    def scenario(m: Any) -> Any:
        calls = Calls()
        wf = workflow(m, calls, ask=True)
        cfg = new_config()
        wf.invoke([1], cfg, durability=durability)
        n1 = len(list(wf.get_state_history(cfg)))
        out = wf.invoke(m.Command(resume="r"), cfg, durability=durability)
        return n1, len(list(wf.get_state_history(cfg))), out, dict(calls)

    same(scenario)


def test_entrypoint_injected_config_and_writer() -> None:
    def scenario(m: Any) -> Any:
        @m.entrypoint(checkpointer=m.InMemorySaver())
        def wf(x: int, config, writer):
            writer({"progress": x})
            return str(config["configurable"]["thread_id"]).startswith("oracle-")

        return list(wf.stream(7, new_config(), stream_mode=["custom", "updates"]))

    same(scenario)


def test_task_with_retry_policy_in_entrypoint() -> None:
    def scenario(m: Any) -> Any:
        calls = Calls()

        @m.task(retry_policy=m.RetryPolicy(max_attempts=3, initial_interval=0.001,
                                          jitter=False, retry_on=ConnectionError))
        def shaky() -> str:
            if calls.hit("shaky") < 3:
                raise ConnectionError("again")
            return "ok"

        @m.entrypoint(checkpointer=m.InMemorySaver())
        def wf(_: Any) -> str:
            return shaky().result()

        return wf.invoke(1, new_config()), dict(calls)

    assert same(scenario) == ("ok", {"shaky": 3})


def test_entrypoint_update_state() -> None:
    def scenario(m: Any) -> Any:
        @m.entrypoint(checkpointer=m.InMemorySaver())
        def acc(x: int, *, previous: Any = None) -> int:
            return (previous or 0) + x

        cfg = new_config()
        acc.invoke(1, cfg)
        acc.update_state(cfg, 100)
        snap = acc.get_state(cfg)
        return snap.values, snap.metadata["source"], acc.invoke(5, cfg)

    same(scenario)


def test_interrupt_inside_a_task_then_in_the_entrypoint() -> None:
    def scenario(m: Any) -> Any:
        calls = Calls()

        @m.task
        def ask(q: str) -> str:
            calls.hit(f"ask:{q}")
            return str(m.interrupt(q))

        @m.entrypoint(checkpointer=m.InMemorySaver())
        def wf(x: int) -> str:
            inner = ask("inner?").result()
            outer = m.interrupt("outer?")
            return f"{inner}+{outer}"

        cfg = new_config()
        first = wf.invoke(1, cfg)
        second = wf.invoke(m.Command(resume="yes"), cfg)
        third = wf.invoke(m.Command(resume="!"), cfg)
        return ([i.value for i in first["__interrupt__"]],
                [i.value for i in second["__interrupt__"]], third, dict(calls))

    res = same(scenario)
    assert res[2] == "yes+!"
    assert res[3] == {"ask:inner?": 2}  # paused once, answered once; recorded after
