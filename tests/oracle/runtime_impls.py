"""The oracle namespaces with the runtime vocabulary: context, store, cache, managed values.

``RLG`` and ``RDG`` extend ``tests.oracle.impls``' namespaces with the names runtime
programs use, so a scenario still writes ``m.Runtime``, ``m.InMemoryStore()`` ... and
runs unchanged on both. ``same_rt`` is ``same`` over these namespaces, and
``observe`` collects what every program compares: output, streamed chunks, final state
and history.
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from langgraph.cache.memory import InMemoryCache as _LGInMemoryCache
from langgraph.config import get_store as _lg_get_store
from langgraph.managed import IsLastStep as _LGIsLastStep
from langgraph.managed import RemainingSteps as _LGRemainingSteps
from langgraph.runtime import Runtime as _LGRuntime
from langgraph.runtime import get_runtime as _lg_get_runtime
from langgraph.store.base import BaseStore as _LGBaseStore
from langgraph.store.memory import InMemoryStore as _LGInMemoryStore
from langgraph.types import CachePolicy as _LGCachePolicy

import durable_graph as _dg
from tests.oracle.impls import DG, LG, Norm

__all__ = ["RDG", "RLG", "observe", "same_rt"]

RLG = SimpleNamespace(
    **vars(LG),
    Runtime=_LGRuntime,
    get_runtime=_lg_get_runtime,
    get_store=_lg_get_store,
    BaseStore=_LGBaseStore,
    InMemoryStore=_LGInMemoryStore,
    InMemoryCache=_LGInMemoryCache,
    CachePolicy=_LGCachePolicy,
    RemainingSteps=_LGRemainingSteps,
    IsLastStep=_LGIsLastStep,
)

RDG = SimpleNamespace(
    **vars(DG),
    Runtime=_dg.Runtime,
    get_runtime=_dg.get_runtime,
    get_store=_dg.get_store,
    BaseStore=_dg.BaseStore,
    InMemoryStore=_dg.InMemoryStore,
    InMemoryCache=_dg.InMemoryCache,
    CachePolicy=_dg.CachePolicy,
    RemainingSteps=_dg.RemainingSteps,
    IsLastStep=_dg.IsLastStep,
)


def same_rt(scenario: Callable[[SimpleNamespace], Any]) -> Any:
    """Assert the scenario behaves identically on both; return the (LangGraph) result."""
    lg, dg = Norm()(scenario(RLG)), Norm()(scenario(RDG))
    assert dg == lg, f"\nlanggraph:     {lg!r}\ndurable_graph: {dg!r}"
    return lg


def observe(
    graph: Any, input: Any, config: dict[str, Any], *,
    modes: tuple[str, ...] = ("updates", "values", "custom"), sort_updates: bool = False,
    **kwargs: Any,
) -> dict[str, Any]:
    """Run ``graph`` streaming ``modes`` and return chunks, final state and history.

    ``sort_updates`` sorts the chunks of each mode by their text, for graphs whose
    parallel branches may finish in either order within a superstep.
    """
    chunks = list(graph.stream(input, config, stream_mode=list(modes), **kwargs))
    if sort_updates:
        chunks = sorted(chunks, key=repr)
    out: dict[str, Any] = {"chunks": chunks}
    if graph.checkpointer:
        out["state"] = graph.get_state(config)
        out["history"] = list(graph.get_state_history(config))
    return out


def store_dump(store: Any, prefix: tuple[str, ...] = ()) -> list[tuple[Any, str, Any]]:
    """Every item under ``prefix``, sorted: (namespace, key, value)."""
    items = store.search(prefix, limit=1000)
    return sorted(((tuple(i.namespace), i.key, i.value) for i in items), key=repr)
