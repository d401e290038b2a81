"""A subgraph node inherits the parent run's context and store: a support bot whose
"billing" subgraph looks up the customer (from the context) in the shared store.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Annotated, Any

import pytest
from typing_extensions import TypedDict

from tests.oracle.impls import new_config
from tests.oracle.runtime_impls import observe, same_rt, store_dump

pytestmark = pytest.mark.oracle


@dataclass
class Customer:
    customer_id: str
    tier: str = "free"


class State(TypedDict, total=False):
    question: str
    answers: Annotated[list[str], operator.add]


def program(m: Any) -> Any:
    store = m.InMemoryStore()
    store.put(("customers",), "c1", {"balance": 42})

    def lookup(state: State, runtime: m.Runtime[Customer]) -> dict[str, Any]:
        account = runtime.store.get(("customers",), runtime.context.customer_id)
        return {"answers": [f"balance {account.value['balance']} ({runtime.context.tier})"]}

    def log_visit(state: State) -> dict[str, Any]:
        rt = m.get_runtime()
        m.get_store().put(("visits",), rt.context.customer_id, {"q": state["question"]})
        return {"answers": ["logged"]}

    billing = m.StateGraph(State, context_schema=Customer)
    billing.add_node("lookup", lookup)
    billing.add_node("log_visit", log_visit)
    billing.add_edge(m.START, "lookup")
    billing.add_edge("lookup", "log_visit")

    def triage(state: State) -> dict[str, Any]:
        return {"answers": [f"triaged: {state['question']}"]}

    parent = m.StateGraph(State, context_schema=Customer)
    parent.add_node("triage", triage)
    parent.add_node("billing", billing.compile())
    parent.add_edge(m.START, "triage")
    parent.add_edge("triage", "billing")
    graph = parent.compile(store=store)
    seen = observe(graph, {"question": "my balance?"}, new_config(),
                   context=Customer("c1", "pro"), modes=("updates", "values"))
    return seen, store_dump(store)


def test_subgraph_sees_parent_context_and_store() -> None:
    seen, dump = same_rt(program)
    assert (("visits",), "c1", {"q": "my balance?"}) in dump
