"""Functional API with a store, a cache and a context: a workflow that enriches
documents with a cached ``@task``, keeps a per-user summary in the store, and
returns ``entrypoint.final`` so ``previous`` carries a running count.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from tests.oracle.impls import Calls, new_config
from tests.oracle.runtime_impls import same_rt, store_dump

pytestmark = pytest.mark.oracle


@dataclass
class Ctx:
    user: str


def program(m: Any) -> Any:
    calls = Calls()
    store = m.InMemoryStore()

    @m.task(cache_policy=m.CachePolicy())
    def enrich(doc: str) -> str:
        calls.hit(doc)
        return doc.upper()

    @m.task
    def save_summary(user: str, docs: list[str]) -> int:
        m.get_store().put(("summaries", user), "latest", {"docs": docs})
        return len(docs)

    @m.entrypoint(checkpointer=m.InMemorySaver(), store=store, cache=m.InMemoryCache(),
                  context_schema=Ctx)
    def workflow(docs: list[str], *, previous: Any = None, runtime: m.Runtime[Ctx]) -> Any:
        enriched = [enrich(d).result() for d in docs]  # one by one: a stable stream order
        saved = save_summary(runtime.context.user, enriched).result()
        total = (previous or 0) + saved
        return m.entrypoint.final(value={"docs": enriched, "total": total}, save=total)

    cfg = new_config()
    first = list(workflow.stream(["a", "b"], cfg, stream_mode="updates", context=Ctx("ann")))
    second = workflow.invoke(["b", "c"], cfg, context={"user": "ann"})
    state = workflow.get_state(cfg)
    return first, second, state, dict(calls), store_dump(store)


def test_functional_workflow_with_store_cache_and_context() -> None:
    *_, calls, dump = same_rt(program)
    assert calls == {"a": 1, "b": 1, "c": 1}
    assert dump == [(("summaries", "ann"), "latest", {"docs": ["B", "C"]})]
