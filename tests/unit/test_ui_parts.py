"""The web view's pure parts: the graph drawing, the state diff, form parsing, bind checks."""

from __future__ import annotations

import re

import pytest

from durable_graph import END, START
from durable_graph.errors import DurableGraphError
from durable_graph.ui.actions import ActionError, parse_json
from durable_graph.ui.diff import diff_values, show
from durable_graph.ui.graphsvg import Edge, layout, render_svg
from durable_graph.ui.security import check_bind, is_loopback


def _rows(pos: dict[str, tuple[int, int]]) -> dict[str, int]:
    ys = sorted({y for _, y in pos.values()})
    return {n: ys.index(y) for n, (_, y) in pos.items()}


def test_layout_puts_each_node_below_its_predecessors_and_end_at_the_bottom() -> None:
    edges = [Edge(START, "a"), Edge("a", "b"), Edge("a", "c"), Edge("b", "d"), Edge("c", "d"),
             Edge("d", "a", conditional=True), Edge("d", END)]
    rows = _rows(layout(["a", "b", "c", "d"], edges))
    assert rows[START] == 0 and rows["a"] == 1
    assert rows["b"] == rows["c"] == 2  # side by side
    assert rows["d"] == 3  # the loop d -> a does not push a down
    assert rows[END] == 4


def test_svg_escapes_names_and_marks_node_states() -> None:
    svg = render_svg(["<x>", "ok"], [Edge(START, "<x>"), Edge("<x>", "ok", True)],
                     {"<x>": "waiting", "ok": "running"})
    assert "<x>" not in svg and "&lt;x&gt;" in svg
    assert re.search(r'class="node waiting" data-node="&lt;x&gt;"', svg)
    assert 'class="node running" data-node="ok"' in svg
    assert svg.count('class="edge"') == 2 and 'stroke-dasharray' in svg


def test_diff_names_added_removed_and_changed_keys() -> None:
    rows = diff_values({"a": 1, "b": [1], "c": "same"}, {"b": [1, 2], "c": "same", "d": None})
    assert [(r.key, r.change) for r in rows] == [("a", "removed"), ("b", "changed"),
                                                 ("d", "added")]
    assert rows[1].before == show([1]) and rows[1].after == show([1, 2])
    assert [r.change for r in diff_values(1, 2)] == ["changed"]  # an entrypoint's value


def test_show_cuts_long_values_and_falls_back_to_repr() -> None:
    assert show("x" * 50, limit=10).startswith('"xxxxxxxxx')
    assert "more)" in show("x" * 50, limit=10)
    assert "object at" in show(object())


def test_form_json_fields_are_checked_with_a_message_naming_them() -> None:
    assert parse_json(' "yes" ', "resume value") == "yes"
    assert parse_json("", "resume value") is None
    with pytest.raises(ActionError, match="resume value is not valid JSON"):
        parse_json("yes", "resume value")
    with pytest.raises(ActionError, match="state update must be a JSON object"):
        parse_json("[1]", "state update", want_object=True)


def test_binding_off_loopback_needs_a_long_token() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("example.org")
    check_bind("127.0.0.1", None)
    check_bind("0.0.0.0", "x" * 32)
    with pytest.raises(DurableGraphError, match="DURABLE_GRAPH_UI_TOKEN"):
        check_bind("0.0.0.0", None)
    with pytest.raises(DurableGraphError, match="too short"):
        check_bind("127.0.0.1", "short")
