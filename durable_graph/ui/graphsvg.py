"""Draw a graph's nodes and edges as inline SVG (pure: no I/O, no browser, no network).

The layout is layered: a node's row is its longest distance from ``__start__``
along edges that do not close a cycle, and nodes of a row sit side by side. It
is enough for the graphs people draw by hand (tens of nodes), and it needs no
JavaScript or layout engine on the page.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape

__all__ = ["Edge", "layout", "render_svg"]

START, END = "__start__", "__end__"
_W, _H, _GAP_X, _GAP_Y, _PAD = 150, 36, 30, 56, 16


@dataclass(frozen=True)
class Edge:
    """One edge of the drawing."""

    source: str
    """Node the edge leaves."""
    target: str
    """Node the edge enters."""
    conditional: bool = False
    """Drawn dashed: taken only when the source's routing function says so."""


def _ranks(nodes: Sequence[str], edges: Sequence[Edge]) -> dict[str, int]:
    """Longest distance from START over a depth-first spanning DAG (back edges ignored)."""
    out: dict[str, list[str]] = {n: [] for n in nodes}
    for e in edges:
        out.setdefault(e.source, []).append(e.target)
    order: list[str] = []
    state: dict[str, int] = {}
    back: set[tuple[str, str]] = set()

    def visit(n: str) -> None:
        stack = [(n, iter(out.get(n, ())))]
        state[n] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[node] = 2
                order.append(node)
                stack.pop()
            elif state.get(child) == 1:
                back.add((node, child))
            elif child not in state:
                state[child] = 1
                stack.append((child, iter(out.get(child, ()))))

    for n in [START, *nodes]:
        if n not in state:
            visit(n)
    rank = dict.fromkeys(order, 0)
    for n in reversed(order):  # topological order of the DAG without back edges
        for m in out.get(n, ()):
            if (n, m) not in back:
                rank[m] = max(rank.get(m, 0), rank[n] + 1)
    others = [r for n, r in rank.items() if n != END]
    rank[END] = max(others, default=0) + 1  # always the bottom row
    return rank


def layout(nodes: Sequence[str], edges: Sequence[Edge]) -> dict[str, tuple[int, int]]:
    """Top-left corner of each node's box; START on top, END at the bottom."""
    names = [START, *[n for n in nodes if n not in (START, END)], END]
    ranks = _ranks(names, edges)
    rows: dict[int, list[str]] = {}
    for n in names:
        rows.setdefault(ranks.get(n, 0), []).append(n)
    widest = max(len(r) for r in rows.values())
    pos = {}
    for r, members in sorted(rows.items()):
        offset = (widest - len(members)) * (_W + _GAP_X) // 2
        for i, n in enumerate(members):
            pos[n] = (_PAD + offset + i * (_W + _GAP_X), _PAD + r * (_H + _GAP_Y))
    return pos


def _edge_path(a: tuple[int, int], b: tuple[int, int]) -> str:
    """A curve from the bottom of box ``a`` to the top of box ``b`` (or around, upward)."""
    ax, ay = a[0] + _W // 2, a[1] + _H
    bx, by = b[0] + _W // 2, b[1]
    if by > ay and (by - ay <= _GAP_Y or ax != bx):
        mid = (ay + by) // 2
        return f"M{ax},{ay} C{ax},{mid} {bx},{mid} {bx},{by}"
    # a loop back up, or a jump over the nodes below in the same column: go round the side
    side = max(a[0], b[0]) + _W + _GAP_X
    start, end = (a[0] + _W, a[1] + _H // 2), (b[0] + _W, b[1] + _H // 2)
    return f"M{start[0]},{start[1]} C{side},{a[1]} {side},{b[1] + _H} {end[0]},{end[1]}"


def render_svg(
    nodes: Sequence[str], edges: Sequence[Edge], states: Mapping[str, str] | None = None
) -> str:
    """SVG markup of the graph; ``states`` maps node names to a CSS class
    (``running``, ``waiting``, ``failed``) that highlights them. Every name is escaped."""
    states = states or {}
    pos = layout(nodes, edges)
    width = max(x for x, _ in pos.values()) + _W + _PAD + _GAP_X
    height = max(y for _, y in pos.values()) + _H + _PAD
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="graph" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" role="img" aria-label="graph">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z"/></marker>'
        "</defs>",
    ]
    for e in edges:
        if e.source in pos and e.target in pos:
            dash = ' stroke-dasharray="5,4"' if e.conditional else ""
            parts.append(
                f'<path class="edge" d="{_edge_path(pos[e.source], pos[e.target])}" '
                f'fill="none" marker-end="url(#arrow)"{dash}/>'
            )
    for n, (x, y) in pos.items():
        cls = "node " + ("terminal" if n in (START, END) else states.get(n, "idle"))
        label = escape(n.strip("_") if n in (START, END) else n)
        parts.append(
            f'<g class="{escape(cls)}" data-node="{escape(n)}"><rect x="{x}" y="{y}" '
            f'width="{_W}" height="{_H}" rx="8"/><text x="{x + _W // 2}" y="{y + _H // 2 + 5}" '
            f'text-anchor="middle">{label}</text></g>'
        )
    parts.append("</svg>")
    return "".join(parts)
