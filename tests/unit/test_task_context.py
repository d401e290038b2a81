"""get_task_context(): an idempotency key per call, stable over retries and replays."""

from __future__ import annotations

import operator
from typing import Annotated, Any, TypedDict

import pytest

from durable_graph import (
    START,
    Command,
    InMemorySaver,
    RetryPolicy,
    StateGraph,
    TaskNotInRunError,
    entrypoint,
    get_runtime,
    get_task_context,
    interrupt,
    task,
)

FAST = RetryPolicy(initial_interval=0.001, jitter=False, max_attempts=3)


class S(TypedDict, total=False):
    keys: Annotated[list[str], operator.add]


def test_retries_of_a_node_see_one_key_and_other_nodes_another() -> None:
    seen: list[str] = []

    def flaky(s: S) -> S:
        seen.append(get_task_context().idempotency_key)
        if len(seen) < 3:
            raise ConnectionError("payment API timed out")
        return {"keys": [seen[-1]]}

    def other(s: S) -> S:
        return {"keys": [get_task_context().idempotency_key]}

    g = StateGraph(S)
    g.add_node("flaky", flaky, retry_policy=FAST)
    g.add_node("other", other)
    g.add_edge(START, "flaky")
    g.add_edge("flaky", "other")
    out = g.compile().invoke({"keys": []})
    assert len(set(seen)) == 1 and len(seen) == 3
    assert out["keys"][0] == seen[0] and out["keys"][1] != seen[0]


def test_task_calls_get_their_own_keys_stable_across_an_interrupt_replay() -> None:
    runs: list[tuple[str, str, str]] = []

    @task
    def send_email(to: str) -> str:
        return get_task_context().idempotency_key

    @entrypoint(checkpointer=InMemorySaver())
    def wf(to: str) -> Any:
        first, second = send_email(to).result(), send_email(to).result()
        node = get_task_context().idempotency_key
        runs.append((node, first, second))
        return interrupt("confirm?")

    cfg = {"configurable": {"thread_id": "mail"}}
    wf.invoke("ann@example.com", cfg)
    wf.invoke(Command(resume="ok"), cfg)
    assert len(runs) == 2 and runs[0] == runs[1]  # the replay sees the same keys
    node, first, second = runs[0]
    assert len({node, first, second}) == 3  # same task, same args: still two calls


def test_a_new_run_on_the_thread_gets_new_keys() -> None:
    @entrypoint(checkpointer=InMemorySaver())
    def wf(x: int) -> str:
        return get_task_context().idempotency_key

    cfg = {"configurable": {"thread_id": "t"}}
    assert wf.invoke(1, cfg) != wf.invoke(1, cfg)


def test_outside_a_run_the_error_says_where_to_call_it() -> None:
    with pytest.raises(TaskNotInRunError, match="inside a node"):
        get_task_context()
    with pytest.raises(TaskNotInRunError, match="get_runtime"):
        get_runtime()


def test_bad_cache_policy_is_refused_with_its_type() -> None:
    g = StateGraph(S)
    with pytest.raises(TypeError, match="cache_policy must be a CachePolicy"):
        g.add_node("n", lambda s: s, cache_policy={"ttl": 5})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="cache_policy must be a CachePolicy"):
        task(cache_policy=5)(lambda: 1)  # type: ignore[arg-type]
