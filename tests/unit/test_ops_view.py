"""``durable_graph.ops.view`` on the embedded stores, and the CLI's output helpers.

What ``show`` prints must come from the store alone: values, pending interrupts with
their values, history; a value whose class cannot be imported here becomes a
placeholder instead of failing the whole view.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any, TypedDict

import pytest

from durable_graph import END, START, SqliteSaver, StateGraph, ThreadNotFoundError, interrupt
from durable_graph.cli._output import WIDTH, age, cell
from durable_graph.ops import Unreadable, describe_thread


class S(TypedDict, total=False):
    a: int
    b: Any


def _graph(saver: SqliteSaver) -> Any:
    b = StateGraph(S)
    b.add_node("n", lambda s: {"a": s["a"] + 1})
    b.add_node("ask", lambda s: {"b": interrupt({"question": "ok?"})})
    b.add_edge(START, "n")
    b.add_edge("n", "ask")
    b.add_edge("ask", END)
    return b.compile(checkpointer=saver)


def test_describe_reads_values_interrupts_and_history_from_the_store(tmp_path: Path) -> None:
    saver = SqliteSaver(str(tmp_path / "t.sqlite"))
    graph = _graph(saver)
    graph.invoke({"a": 1}, {"configurable": {"thread_id": "t"}})

    view = describe_thread(saver, "t", history=2)
    assert view.status == "interrupted"
    assert view.values == {"a": 2}
    assert [i.value for i in view.interrupts] == [{"question": "ok?"}]
    assert view.next is None  # not recorded by embedded runs; the graph knows
    assert [h.source for h in view.history] == ["loop", "loop"]
    assert view.from_graph is False

    exact = describe_thread(saver, "t", graph=graph)
    assert exact.next == ("ask",) and exact.from_graph is True
    assert exact.to_dict()["interrupts"][0]["value"] == {"question": "ok?"}

    with pytest.raises(ThreadNotFoundError, match="no thread 'nope'"):
        describe_thread(saver, "nope")
    with pytest.raises(ValueError, match="history"):
        describe_thread(saver, "t", history=-1)


def test_a_value_whose_class_is_not_importable_here_is_a_placeholder(tmp_path: Path) -> None:
    module = tmp_path / "dg_view_private.py"
    module.write_text("from dataclasses import dataclass\n\n@dataclass\nclass Secret:\n"
                      "    x: int\n")
    sys.path.insert(0, str(tmp_path))
    try:
        secret = importlib.import_module("dg_view_private").Secret(7)
        saver = SqliteSaver(str(tmp_path / "t.sqlite"))
        _graph(saver).invoke({"a": 1, "b": secret}, {"configurable": {"thread_id": "t"}})
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("dg_view_private", None)
    module.unlink()  # as on a machine without the graph's code

    view = describe_thread(SqliteSaver(str(tmp_path / "t.sqlite")), "t")
    assert view.values["a"] == 2
    assert isinstance(view.values["b"], Unreadable)
    assert "dg_view_private" in repr(view.values["b"])
    assert view.to_dict()["values"]["b"].startswith("<unreadable here:")


@pytest.mark.parametrize(("text", "seconds"), [
    ("90", 90), ("90s", 90), ("15m", 900), ("2h", 7200), ("3d", 259200), ("1w", 604800),
    ("1.5h", 5400),
])
def test_ages(text: str, seconds: float) -> None:
    assert age(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "soon", "-1h", "3 days", "2y"])
def test_bad_ages_say_what_to_write(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="e.g. 15m, 2h, 3d"):
        age(text)


def test_cells_cut_long_values_unless_full() -> None:
    long = "x" * (WIDTH * 2)
    assert cell(long, full=False) == "x" * (WIDTH - 1) + "…"
    assert cell(long, full=True) == long
    assert cell({"k": [1, 2]}, full=False) == '{"k": [1, 2]}'
    assert cell(None, full=False) == "-"
    assert cell("a\nb", full=True) == "a\\nb"


def test_a_tolerant_reader_is_bound_as_what_it_wraps_whatever_it_wrapped_before() -> None:
    from durable_graph.ops.view import _Tolerant
    from durable_graph.store.codec import SignedSerializer, SigningCodec
    from durable_graph.store.encoding import bound_serializer
    from durable_graph.store.serde import TypedSerializer

    signed = SignedSerializer(TypedSerializer(), SigningCodec({"k": b"x" * 32}, "k"))
    assert bound_serializer(_Tolerant(signed)) is not None
    assert bound_serializer(_Tolerant(TypedSerializer())) is None
    assert bound_serializer(signed) is signed and bound_serializer(TypedSerializer()) is None
