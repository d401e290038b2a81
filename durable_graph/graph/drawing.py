"""``get_graph()``: a compiled graph's nodes and edges, drawn as Mermaid or ASCII text.

The edges are the ones LangGraph draws: plain edges, fan-in edges, conditional edges
from path maps (or a path function's ``Literal`` return type) and the destinations of
``Command[Literal[...]]`` return types, only from nodes reachable from START; a node
no edge leaves goes to END (plain edges to END are drawn that way, last, as LangGraph
does). ``draw_mermaid()`` writes the same text as LangGraph's.
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal, get_args, get_origin, get_type_hints

from durable_graph.types import END, START

__all__ = ["DrawnEdge", "DrawnGraph", "GraphDrawing", "draw_graph"]

Ends = tuple[tuple[str, str | None], ...]
"""Destinations with their labels (None: the label is the destination)."""


@dataclass(frozen=True)
class GraphDrawing:
    """What a builder knows about its graph's shape, kept for ``get_graph()``."""

    nodes: tuple[str, ...]
    """User node names in the order they were added."""
    edges: tuple[tuple[str, str], ...] = ()
    """Plain edges (source, destination)."""
    waiting_edges: tuple[tuple[tuple[str, ...], str], ...] = ()
    """Fan-in edges: (sources, destination)."""
    branches: tuple[tuple[str, Ends | None], ...] = ()
    """Conditional edges: (source, destinations), None when they are unknown."""
    ends: tuple[tuple[str, Ends], ...] = ()
    """Nodes' ``Command[Literal]`` (or ``destinations=``) destinations with labels."""
    start_first: bool = True
    """START is drawn first (a StateGraph's input node); a workflow draws it after."""


@dataclass(frozen=True, order=True)
class DrawnEdge:
    """One drawn edge."""

    source: str
    target: str
    conditional: bool = False
    data: str | None = None
    """Its label (a path map key that differs from the destination)."""


@dataclass
class DrawnGraph:
    """Nodes and edges of a graph, with LangGraph's ``Graph`` drawing methods."""

    nodes: dict[str, dict[str, str]] = field(default_factory=dict)
    """Node id -> its metadata (breakpoints), in drawing order."""
    edges: list[DrawnEdge] = field(default_factory=list)

    def add_edge(self, edge: DrawnEdge) -> None:
        """Add ``edge`` unless one joins the same two nodes already."""
        if any(e.source == edge.source and e.target == edge.target for e in self.edges):
            return
        if edge.target == END:
            self.nodes.setdefault(END, {})
        self.edges.append(edge)

    def first_node(self) -> str | None:
        """The one node no edge enters, if there is exactly one."""
        targets = {e.target for e in self.edges}
        found = [n for n in self.nodes if n not in targets]
        return found[0] if len(found) == 1 else None

    def last_node(self) -> str | None:
        """The one node no edge leaves, if there is exactly one."""
        sources = {e.source for e in self.edges}
        found = [n for n in self.nodes if n not in sources]
        return found[0] if len(found) == 1 else None

    def draw_mermaid(self) -> str:
        """Mermaid flowchart text, the same as LangGraph's ``draw_mermaid()``."""
        first, last = self.first_node(), self.last_node()
        out = "---\nconfig:\n  flowchart:\n    curve: linear\n---\ngraph TD;\n"
        for node, meta in self.nodes.items():
            label = f"<p>{node}</p>" if _markdown(node) else node
            if meta:
                lines = "\n".join(f"{k} = {v}" for k, v in meta.items())
                label += f"<hr/><small><em>{lines}</em></small>"
            shape = "{0}([{1}]):::first" if node == first else (
                "{0}([{1}]):::last" if node == last else "{0}({1})")
            out += "\t" + shape.format(_safe_id(node), label) + "\n"
        for e in self.edges:
            if e.data is not None:
                arrow = (f" -. &nbsp;{e.data}&nbsp; .-> " if e.conditional
                         else f" -- &nbsp;{e.data}&nbsp; --> ")
            else:
                arrow = " -.-> " if e.conditional else " --> "
            out += f"\t{_safe_id(e.source)}{arrow}{_safe_id(e.target)};\n"
        out += ("\tclassDef default fill:#f2f0ff,line-height:1.2\n"
                "\tclassDef first fill-opacity:0\n\tclassDef last fill:#bfb6fc\n")
        return out

    def draw_ascii(self) -> str:
        """A plain-text drawing: nodes boxed layer by layer from START, then the edges."""
        layers = _layers(list(self.nodes), self.edges)
        rows = ["   ".join(f"+{'-' * (len(n) + 2)}+" for n in layer) for layer in layers]
        lines: list[str] = []
        for layer, border in zip(layers, rows, strict=True):
            lines += [border, "   ".join(f"| {n} |" for n in layer), border, ""]
        for e in self.edges:
            arrow = "-.->" if e.conditional else "--->"
            label = f" ({e.data})" if e.data is not None else ""
            lines.append(f"{e.source} {arrow} {e.target}{label}")
        return "\n".join(lines) + "\n"

    def print_ascii(self) -> None:
        """Print ``draw_ascii()``."""
        print(self.draw_ascii())


def _markdown(name: str) -> bool:
    return name[:1] in "*_`" and name[-1:] in "*_`" and bool(name)


def _safe_id(label: str) -> str:
    allowed = string.ascii_letters + string.digits + "_-"
    return "".join(ch if ch in allowed else "\\" + format(ord(ch), "x") for ch in label)


def _layers(nodes: list[str], edges: Sequence[DrawnEdge]) -> list[list[str]]:
    """Nodes grouped by their distance from the first one (the rest last)."""
    depth: dict[str, int] = {nodes[0]: 0} if nodes else {}
    frontier = list(depth)
    while frontier:
        nxt = []
        for src in frontier:
            for e in edges:
                if e.source == src and e.target not in depth:
                    depth[e.target] = depth[src] + 1
                    nxt.append(e.target)
        frontier = nxt
    last = max(depth.values(), default=0) + 1
    layers: dict[int, list[str]] = {}
    for n in nodes:
        layers.setdefault(depth.get(n, last), []).append(n)
    return [layers[k] for k in sorted(layers)]


def path_ends(path: object) -> Ends | None:
    """A path function's destinations from its ``Literal[...]`` return type, if any."""
    try:
        hint = get_type_hints(path).get("return")
    except (NameError, TypeError):
        return None
    if get_origin(hint) is not Literal:
        return None
    return tuple((str(v), None) for v in get_args(hint))


def draw_graph(
    drawing: GraphDrawing, interrupt_before: Iterable[str] | str,
    interrupt_after: Iterable[str] | str,
) -> DrawnGraph:
    """The drawn graph of ``drawing``, breakpoints shown as LangGraph shows them."""
    candidates = _candidate_edges(drawing)
    reached = _reachable(candidates, drawing.waiting_edges)
    edges = sorted(
        {e for e in candidates if e.source in reached},
        key=lambda e: (e.source, e.target, e.conditional, e.data or ""),
    )
    order = (START, *drawing.nodes) if drawing.start_first else (*drawing.nodes, START)
    graph = DrawnGraph({n: _breakpoints(n, interrupt_before, interrupt_after) for n in order})
    for e in edges:
        graph.add_edge(e)
    sources = {e.source for e in edges}
    for node in sorted({e.target for e in edges if e.target != END} - sources):
        graph.add_edge(DrawnEdge(node, END))
    return graph


def _candidate_edges(drawing: GraphDrawing) -> set[DrawnEdge]:
    # a plain edge to END is not drawn as such: a node no edge leaves goes to END
    edges = {DrawnEdge(s, d) for s, d in drawing.edges if d != END}
    edges |= {DrawnEdge(s, d) for srcs, d in drawing.waiting_edges for s in srcs}
    for src, ends in drawing.branches:
        for dest, label in ends or ():
            edges.add(DrawnEdge(src, dest, True, label if label != dest else None))
    for src, dests in drawing.ends:
        edges |= {DrawnEdge(src, d, True, label if label != d else None) for d, label in dests}
    return edges


def _reachable(
    edges: set[DrawnEdge], waiting: Iterable[tuple[tuple[str, ...], str]]
) -> set[str]:
    """Nodes a run could reach from START (a fan-in once all its sources are reached)."""
    joins = {d: set(srcs) for srcs, d in waiting}
    reached, frontier = {START}, [START]
    while frontier:
        src = frontier.pop()
        for e in edges:
            blocked = e.target in joins and not joins[e.target] <= reached
            if e.source == src and e.target not in reached and not blocked:
                reached.add(e.target)
                frontier.append(e.target)
        for dest, srcs in joins.items():
            if srcs <= reached and dest not in reached:
                reached.add(dest)
                frontier.append(dest)
    return reached


def _breakpoints(node: str, before: Iterable[str] | str, after: Iterable[str] | str) -> dict[
        str, str]:
    if node == START:
        return {}
    b, a = node in before, node in after
    where = "before,after" if b and a else "before" if b else "after" if a else ""
    return {"__interrupt": where} if where else {}
