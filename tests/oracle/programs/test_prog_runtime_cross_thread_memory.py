"""How-to "add cross-thread persistence": a store keeps user memories across threads.

The user id comes from the run's context; ``call_model`` reads the user's memories
from the injected ``store`` and saves a new one when asked to remember. A second
thread of the same user sees the first thread's memory; another user does not.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import pytest
from typing_extensions import TypedDict

from tests.oracle.impls import new_config
from tests.oracle.runtime_impls import observe, same_rt, store_dump

if TYPE_CHECKING:
    from durable_graph import BaseStore  # injection goes by the annotation's name

pytestmark = pytest.mark.oracle


@dataclass
class Context:
    user_id: str


class State(TypedDict):
    messages: Annotated[list[str], operator.add]


def program(m: Any) -> Any:
    def call_model(state: State, runtime: m.Runtime[Context], store: BaseStore) -> Any:
        namespace = ("memories", runtime.context.user_id)
        memories = store.search(namespace, query=None)
        info = "; ".join(sorted(d.value["data"] for d in memories))
        last = state["messages"][-1]
        if "remember" in last.lower():
            memory = last.split(":", 1)[1].strip()
            store.put(namespace, f"mem-{len(memories)}", {"data": memory})
        return {"messages": [f"ai(user info: {info or 'none'})"]}

    builder = m.StateGraph(State, context_schema=Context)
    builder.add_node("call_model", call_model)
    builder.add_edge(m.START, "call_model")
    store = m.InMemoryStore()
    graph = builder.compile(checkpointer=m.InMemorySaver(), store=store)

    first = observe(graph, {"messages": ["Hi! Remember: my name is Bob"]}, new_config(),
                    context=Context("1"), modes=("updates", "values"))
    second = observe(graph, {"messages": ["what is my name?"]}, new_config(),
                     context=Context("1"), modes=("values",))
    other = graph.invoke({"messages": ["what is my name?"]}, new_config(),
                         context={"user_id": "2"})
    return first, second, other, store_dump(store)


def test_memories_cross_threads_of_one_user() -> None:
    *_, other, dump = same_rt(program)
    assert other["messages"][-1] == "ai(user info: none)"
    assert dump == [(("memories", "1"), "mem-0", {"data": "my name is Bob"})]
