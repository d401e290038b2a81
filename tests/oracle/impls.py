"""Both implementations behind one interface, and helpers to compare their behaviour.

Each test writes ``def scenario(m) -> observable`` using only names of ``m`` (an
implementation namespace) and asserts ``same(scenario)``: the scenario runs once on real
LangGraph (the oracle) and once on durable_graph, and the normalised observables must be
equal. ``Norm`` removes what legitimately differs (checkpoint ids, task ids, interrupt ids,
timestamps) by replacing each id with a label in order of first appearance, so the *shape*
of id references (which snapshot's parent is which, which interrupt is which) is still
compared.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from types import SimpleNamespace
from typing import Any

import pytest

pytest.importorskip(
    "langgraph",
    reason="real LangGraph is not installed: pip install -e '.[oracle]' to run tests/oracle",
)

from langchain_core.messages import BaseMessage as _LCBaseMessage  # noqa: E402
from langchain_core.messages import RemoveMessage as _LCRemoveMessage  # noqa: E402
from langgraph.checkpoint.memory import InMemorySaver as _LGInMemorySaver  # noqa: E402
from langgraph.checkpoint.memory import MemorySaver as _LGMemorySaver  # noqa: E402
from langgraph.config import get_stream_writer as _lg_get_stream_writer  # noqa: E402
from langgraph.func import entrypoint as _lg_entrypoint  # noqa: E402
from langgraph.func import task as _lg_task  # noqa: E402
from langgraph.graph import END as _LG_END  # noqa: E402
from langgraph.graph import START as _LG_START  # noqa: E402
from langgraph.graph import StateGraph as _LGStateGraph  # noqa: E402
from langgraph.graph.message import REMOVE_ALL_MESSAGES as _LG_REMOVE_ALL  # noqa: E402
from langgraph.graph.message import MessagesState as _LGMessagesState  # noqa: E402
from langgraph.graph.message import add_messages as _lg_add_messages  # noqa: E402
from langgraph.types import Command as _LGCommand  # noqa: E402
from langgraph.types import Interrupt as _LGInterrupt  # noqa: E402
from langgraph.types import RetryPolicy as _LGRetryPolicy  # noqa: E402
from langgraph.types import Send as _LGSend  # noqa: E402
from langgraph.types import interrupt as _lg_interrupt  # noqa: E402

import durable_graph as _dg  # noqa: E402

__all__ = ["DG", "IMPLS", "LG", "Calls", "Norm", "both", "new_config", "same"]

LG = SimpleNamespace(
    name="langgraph",
    StateGraph=_LGStateGraph,
    START=_LG_START,
    END=_LG_END,
    task=_lg_task,
    entrypoint=_lg_entrypoint,
    interrupt=_lg_interrupt,
    Command=_LGCommand,
    Send=_LGSend,
    RetryPolicy=_LGRetryPolicy,
    InMemorySaver=_LGInMemorySaver,
    get_stream_writer=_lg_get_stream_writer,
    MemorySaver=_LGMemorySaver,
    MessagesState=_LGMessagesState,
    add_messages=_lg_add_messages,
    RemoveMessage=_LCRemoveMessage,
    REMOVE_ALL_MESSAGES=_LG_REMOVE_ALL,
    Interrupt=_LGInterrupt,
)

DG = SimpleNamespace(
    name="durable_graph",
    StateGraph=_dg.StateGraph,
    START=_dg.START,
    END=_dg.END,
    task=_dg.task,
    entrypoint=_dg.entrypoint,
    interrupt=_dg.interrupt,
    Command=_dg.Command,
    Send=_dg.Send,
    RetryPolicy=_dg.RetryPolicy,
    InMemorySaver=_dg.InMemorySaver,
    get_stream_writer=_dg.get_stream_writer,
    MemorySaver=_dg.MemorySaver,
    MessagesState=_dg.MessagesState,
    add_messages=_dg.add_messages,
    RemoveMessage=_dg.RemoveMessage,
    REMOVE_ALL_MESSAGES=_dg.REMOVE_ALL_MESSAGES,
    Interrupt=_dg.Interrupt,
)

IMPLS = {"langgraph": LG, "durable_graph": DG}


def new_config(**extra: Any) -> dict[str, Any]:
    """A config for a brand-new thread."""
    cfg: dict[str, Any] = {"configurable": {"thread_id": f"oracle-{uuid.uuid4()}"}}
    cfg.update(extra)
    return cfg


class Calls(Counter[str]):
    """Side-effect counter: ``calls.hit(name)`` increments and returns the new count."""

    def hit(self, key: str) -> int:
        self[key] += 1
        return self[key]


_ID_KEYS = {"checkpoint_id": "cp", "id": "id", "task_id": "task"}


class Norm:
    """Turns implementation objects into plain comparable data.

    Ids become labels (``cp0``, ``cp1``, ``int0`` ...) in order of first appearance, so
    two runs that reference the same checkpoints in the same pattern normalise equally.
    """

    def __init__(self) -> None:
        self.labels: dict[tuple[str, Any], str] = {}

    def label(self, kind: str, value: Any) -> str | None:
        if value is None:
            return None
        key = (kind, value)
        if key not in self.labels:
            n = sum(1 for k in self.labels if k[0] == kind)
            self.labels[key] = f"{kind}{n}"
        return self.labels[key]

    def config(self, cfg: Mapping[str, Any] | None) -> Any:
        """A config's shape: its configurable keys, checkpoint id and namespace labelled."""
        if cfg is None:
            return None
        conf = dict(cfg.get("configurable", {}))
        out: dict[str, Any] = {}
        for key, value in conf.items():
            if key == "checkpoint_id":
                out[key] = self.label("cp", value)
            elif key == "checkpoint_ns":
                out[key] = self.ns(value)
            elif key == "thread_id":
                out[key] = "<thread>"
            elif key.startswith("__pregel") or key == "checkpoint_map":
                continue
            else:
                out[key] = self(value)
        return {"configurable": out}

    def ns(self, value: str) -> str:
        """``"node:task-id|inner:task-id"`` -> ``"node|inner"`` (task ids differ)."""
        return "|".join(part.split(":")[0] for part in value.split("|")) if value else ""

    def snapshot(self, s: Any, *, config: bool = True) -> dict[str, Any]:
        meta = dict(s.metadata or {})
        out = {
            "values": self(s.values),
            "next": tuple(s.next),
            "metadata": {"source": meta.get("source"), "step": meta.get("step")},
            "tasks": [self.task(t) for t in s.tasks],
            "interrupts": [self(i) for i in s.interrupts],
        }
        if config:
            out["config"] = self.config(s.config)
            out["parent"] = self.config(s.parent_config)
        return out

    def task(self, t: Any) -> dict[str, Any]:
        return {
            "name": t.name,
            # LangGraph keeps only repr(exc) (a str) after a round trip through the saver;
            # test_oracle_history pins that separately, here only "is there an error".
            "error": t.error is not None,
            "interrupts": [self(i) for i in t.interrupts],
            "has_state": t.state is not None,
        }

    def __call__(self, o: Any) -> Any:
        cls = type(o).__name__
        if cls == "StateSnapshot":
            return self.snapshot(o)
        if cls == "Interrupt":
            return ("Interrupt", self(o.value), self.label("int", o.id))
        if cls == "RemoveMessage":  # langchain_core's or durable_graph's own
            return ("RemoveMessage", self.label("msg", o.id))
        if isinstance(o, _LCBaseMessage):  # a chat message: its generated id is labelled
            return ("message", cls, self(o.content), self.label("msg", o.id), o.name,
                    self(getattr(o, "tool_calls", None)))
        if isinstance(o, BaseException):
            return ("raised", type(o).__name__)
        if cls in ("Command", "Send"):
            fields = ("node", "arg") if cls == "Send" else ("update", "resume", "goto")
            return (cls, *(self(getattr(o, f)) for f in fields))
        if hasattr(o, "model_dump"):  # pydantic
            return ("model", cls, self(o.model_dump()))
        if dataclasses.is_dataclass(o) and not isinstance(o, type):
            return ("dataclass", cls, self(dataclasses.asdict(o)))
        if isinstance(o, Mapping) and "role" in o and "id" in o:  # a message as a dict
            return {k: self.label("msg", v) if k == "id" else self(v) for k, v in o.items()}
        if isinstance(o, Mapping):
            # invoke()'s "__interrupt__" is a list in LangGraph (a tuple in durable_graph);
            # test_oracle_streaming pins the container type on its own.
            return {
                k: list(self(v)) if k == "__interrupt__" and isinstance(v, (list, tuple))
                else self(v)
                for k, v in o.items()
            }
        if isinstance(o, list):
            return [self(v) for v in o]
        if isinstance(o, tuple):
            return tuple(self(v) for v in o)
        return o


def run(scenario: Callable[[SimpleNamespace], Any], m: SimpleNamespace) -> Any:
    """Run the scenario on ``m`` and normalise what it returns."""
    return Norm()(scenario(m))


def both(scenario: Callable[[SimpleNamespace], Any]) -> tuple[Any, Any]:
    """(langgraph result, durable_graph result), each normalised with its own ``Norm``."""
    return run(scenario, LG), run(scenario, DG)


def same(scenario: Callable[[SimpleNamespace], Any]) -> Any:
    """Assert the scenario behaves identically on both; return the (LangGraph) result."""
    lg, dg = both(scenario)
    assert dg == lg, f"\nlanggraph:     {lg!r}\ndurable_graph: {dg!r}"
    return lg


def raised(fn: Callable[[], Any]) -> Any:
    """``fn()``'s result, or ``("raised", class name)`` when it raises."""
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - any error is an observable
        return ("raised", type(exc).__name__)
