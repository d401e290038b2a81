"""How a producer's graph reaches the workers: by import path, or as a signed blob.

A producer names its graph by ``module:attribute`` when it finds the compiled
graph at module level in an importable module; it also stores the graph as a
cloudpickle blob in Redis under the blob's SHA-256, signed like every payload.
A worker imports the path when it can and otherwise loads the blob, after
checking its signature. ``ship="import"`` sends the path only (workers must have
the code), ``ship="pickle"`` the blob only.

The blob holds the compiled graph without its checkpointer and executor (workers
use their own); the module that defines the graph, and ``__main__``, are pickled
by value, so workers need not have that file at all.
"""

from __future__ import annotations

import hashlib
import logging
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Literal

import cloudpickle

from durable_graph.errors import DispatchError, GraphValueError, SignatureError
from durable_graph.graph.compiled import CompiledGraph
from durable_graph.store.codec import SigningCodec
from durable_graph.store.redis.connection import Client
from durable_graph.store.redis.keys import graph_key
from durable_graph.store.serde import import_attr

__all__ = ["GraphLoader", "GraphRef", "GraphShipper", "Ship", "locate"]

log = logging.getLogger("durable_graph.worker")
Ship = Literal["auto", "import", "pickle"]
_BLOB_TTL = 30 * 24 * 3600
"""Seconds a graph blob outlives its last upload (a producer re-uploads at start)."""


@dataclass(frozen=True)
class GraphRef:
    """Where workers find a graph: an import path, a blob digest, or both."""

    path: str | None = None
    digest: str | None = None
    inner: tuple[str, ...] = ()
    """For a subgraph: the nodes to descend through from that graph to reach it."""


def _importable_name(key: str, module: ModuleType) -> str | None:
    """The name workers can import ``module`` by, or None (a script run as ``__main__``).

    ``python -m pkg.mod`` runs ``pkg.mod`` as ``__main__``: its spec still names
    ``pkg.mod``. A plain ``python script.py`` has no such name, so its graphs ship
    by value only (the blob pickles ``__main__`` by value).
    """
    if key.startswith("durable_graph"):
        return None
    if key == "__main__" or module.__name__ == "__main__":
        spec = getattr(module, "__spec__", None)
        name = getattr(spec, "name", None)
        return name if isinstance(name, str) and name != "__main__" else None
    return key


def _candidates(graph: CompiledGraph) -> Iterator[tuple[str, ModuleType]]:
    for key, module in list(sys.modules.items()):
        name = _importable_name(key, module) if module is not None else None
        if name is not None:
            yield name, module


def locate(graph: CompiledGraph) -> str | None:
    """``module:attr`` where workers can import ``graph`` (never ``__main__:...``)."""
    for name, module in _candidates(graph):
        try:
            attrs = vars(module)
        except TypeError:
            continue
        for attr, value in list(attrs.items()):
            if value is graph and not attr.startswith("_"):
                return f"{name}:{attr}"
    return None


def _portable(graph: CompiledGraph) -> CompiledGraph:
    """The graph as workers run it: no checkpointer or executor of the producer's.

    Its store and cache go with it: a durable one pickles as where to reopen it
    (a URL or a path), so every worker shares it.
    """
    return CompiledGraph(
        graph.spec, interrupt_before=graph.interrupt_before,
        interrupt_after=graph.interrupt_after, name=graph.name, store=graph.store,
        cache=graph.cache, context_schema=graph.context_schema, drawing=graph.drawing,
    )


def pack(graph: CompiledGraph, path: str | None) -> bytes:
    """cloudpickle of the portable graph, its defining module pickled by value."""
    module = sys.modules.get(path.split(":")[0]) if path else None
    by_value = module is not None
    if by_value:
        cloudpickle.register_pickle_by_value(module)
    try:
        return bytes(cloudpickle.dumps(_portable(graph)))
    except Exception as exc:
        raise GraphValueError(
            f"cannot ship graph {graph.name!r} to workers as a blob: {exc}. Make its nodes "
            "picklable, or define it at module level in a module the workers can import "
            "and use CeleryExecutor(ship='import')."
        ) from exc
    finally:
        if by_value:
            cloudpickle.unregister_pickle_by_value(module)


class GraphShipper:
    """Producer side: one reference per graph, uploading its blob once per process."""

    def __init__(self, client: Client, prefix: str, codec: SigningCodec, ship: Ship) -> None:
        if ship not in ("auto", "import", "pickle"):
            raise GraphValueError(f"ship must be 'auto', 'import' or 'pickle', got {ship!r}")
        self._client, self._prefix, self._codec, self._ship = client, prefix, codec, ship
        self._refs: dict[int, tuple[CompiledGraph, GraphRef]] = {}
        self._lock = threading.Lock()

    def ref(self, graph: CompiledGraph) -> GraphRef:
        """The reference workers load ``graph`` by (uploading its blob the first time)."""
        with self._lock:
            known = self._refs.get(id(graph))
            if known is not None and known[0] is graph:
                return known[1]
        path = locate(graph) if self._ship != "pickle" else None
        if self._ship == "import" and path is None:
            raise GraphValueError(
                f"ship='import' but graph {graph.name!r} is not a module-level name of an "
                "importable module; define it at module level or use ship='auto'."
            )
        digest = None
        if self._ship != "import":
            try:
                digest = self._upload(pack(graph, path))
            except GraphValueError as exc:
                if path is None:
                    raise
                log.warning("graph %r ships by import path %s only: %s", graph.name, path, exc)
        ref = GraphRef(path, digest)
        with self._lock:
            self._refs[id(graph)] = (graph, ref)
        return ref

    def _upload(self, blob: bytes) -> str:
        digest = hashlib.sha256(blob).hexdigest()
        sealed = self._codec.encode(blob)
        self._client.set(graph_key(self._prefix, digest), sealed, ex=_BLOB_TTL)
        return digest


class GraphLoader:
    """Worker side: load (and cache) graphs by reference."""

    def __init__(self, client: Client, prefix: str, codec: SigningCodec) -> None:
        self._client, self._prefix, self._codec = client, prefix, codec
        self._cache: dict[GraphRef, CompiledGraph] = {}
        self._lock = threading.Lock()

    def load(self, ref: GraphRef) -> CompiledGraph:
        """The graph ``ref`` names; DispatchError saying why when neither way works."""
        with self._lock:
            found = self._cache.get(ref)
        if found is not None:
            return found
        if ref.inner:
            return self._inner(ref)
        import_error = None
        graph = None
        if ref.path is not None:
            try:
                graph = _import(ref.path)
            except (ImportError, AttributeError) as exc:
                import_error = exc
        if graph is None and ref.digest is not None:
            try:
                graph = self._from_blob(ref.digest)
            except (ImportError, AttributeError) as exc:
                where = ref.path or "no import path"
                raise DispatchError(
                    f"worker cannot load graph blob {ref.digest[:12]} ({where}): "
                    f"{type(exc).__name__}: {exc}. Install that code on the workers, "
                    "or define the graph in a module the producer pickles by value "
                    "(CeleryExecutor(ship='pickle'))."
                ) from exc
        if graph is None:
            raise DispatchError(
                f"worker cannot load graph {ref.path!r}: {import_error}. Install the module "
                "on the workers, or let the producer ship it (CeleryExecutor(ship='auto'))."
            )
        with self._lock:
            self._cache[ref] = graph
        return graph

    def _inner(self, ref: GraphRef) -> CompiledGraph:
        """The subgraph that node ``ref.inner[-1]`` of the graph above it runs."""
        outer = self.load(GraphRef(ref.path, ref.digest, ref.inner[:-1]))
        node = outer.spec.nodes.get(ref.inner[-1])
        child = node.subgraph if node is not None else None
        if not isinstance(child, CompiledGraph):
            raise DispatchError(
                f"graph {outer.name!r} on this worker has no subgraph at node "
                f"{ref.inner[-1]!r}: its code differs from the producer's. Deploy the same "
                "graph code to producers and workers.")
        if (child.store is None and outer.store is not None) or (
                child.cache is None and outer.cache is not None):
            child = _inheriting(child, outer)
        with self._lock:
            self._cache[ref] = child
        return child

    def _from_blob(self, digest: str) -> CompiledGraph:
        sealed = self._client.get(graph_key(self._prefix, digest))
        if sealed is None:
            raise DispatchError(
                f"graph blob {digest[:12]} is not in Redis under prefix {self._prefix!r}: "
                "producer and workers must share DURABLE_GRAPH_REDIS_URL and the prefix."
            )
        try:
            blob = self._codec.decode(sealed)
        except SignatureError as exc:
            raise SignatureError(
                f"graph blob {digest[:12]} refused, not unpickled: {exc}") from None
        if hashlib.sha256(blob).hexdigest() != digest:
            raise SignatureError(f"graph blob {digest[:12]} does not match its digest; refused")
        graph = cloudpickle.loads(blob)
        if not isinstance(graph, CompiledGraph):
            raise DispatchError(f"graph blob {digest[:12]} holds a {type(graph).__name__}")
        return graph


def _inheriting(child: CompiledGraph, outer: CompiledGraph) -> CompiledGraph:
    """``child`` with the store and cache of the graph running it where it has none of
    its own (an embedded subgraph's loop gets them the same way)."""
    return CompiledGraph(
        child.spec, checkpointer=child.checkpointer, interrupt_before=child.interrupt_before,
        interrupt_after=child.interrupt_after, name=child.name, drawing=child.drawing,
        store=outer.store if child.store is None else child.store,
        cache=outer.cache if child.cache is None else child.cache,
        context_schema=child.context_schema)


def _import(path: str) -> CompiledGraph:
    module_name, _, attr = path.partition(":")
    obj = import_attr(module_name, attr)
    if not isinstance(obj, CompiledGraph):
        raise AttributeError(f"{path} is a {type(obj).__name__}, not a compiled graph")
    return obj
