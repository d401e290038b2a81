"""Where tasks run: the executor seam between the step loop and threads or workers."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

__all__ = ["Executor", "LocalExecutor", "RemoteExecutor", "RunHandle", "RunRequest"]


class Executor(Protocol):
    """Runs callables soon, somewhere; the step loop collects their results itself."""

    def submit(self, fn: Callable[[], Any]) -> None:
        """Schedule ``fn``; it must eventually run unless the loop runs it first."""
        ...


@dataclass(frozen=True)
class RunRequest:
    """How a caller asked for a run: what a remote executor needs besides the input."""

    durability: str | None = None
    interrupt_before: Sequence[str] | str | None = None
    interrupt_after: Sequence[str] | str | None = None
    modes: frozenset[str] = frozenset()
    context: Any = None
    """The run's ``context=`` (travels to the workers signed, with the run)."""
    multitask: str = "reject"
    """What to do when the thread is running already (see ``worker.multitask``)."""
    output_values: bool = False
    """``values``/``updates`` chunks show the output schema's keys (``invoke(stream_mode=)``)."""


class RunHandle(Protocol):
    """A run started elsewhere (or in the background)."""

    def status(self) -> str:
        """``running``, ``done``, ``interrupted`` or ``failed``."""
        ...

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the run; its output, or its error raised."""
        ...

    def events(self, timeout: float | None = None) -> Iterator[tuple[str, Any]]:
        """(mode, chunk) stream events until the run ends."""
        ...


@runtime_checkable
class RemoteExecutor(Protocol):
    """An executor that runs whole runs elsewhere (Celery workers), not single tasks."""

    def submit(self, fn: Callable[[], Any]) -> None:
        """Executor protocol."""
        ...

    def start_run(
        self, graph: Any, input: Any, config: dict[str, Any], request: RunRequest
    ) -> RunHandle:
        """Start a run of ``graph`` and return its handle at once."""
        ...

    def cancel(self, graph: Any, config: dict[str, Any]) -> None:
        """Stop the thread's current run."""
        ...


class LocalExecutor:
    """Runs tasks on a lazily created pool of local threads (the embedded default).

    The loop and waiting tasks run unstarted work themselves, so a small pool
    cannot deadlock; the pool only adds parallelism.
    """

    def __init__(self, max_workers: int = 32) -> None:
        self.max_workers = max_workers
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def submit(self, fn: Callable[[], Any]) -> None:
        """Queue ``fn`` on the pool."""
        if self._pool is None:
            with self._lock:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(
                        self.max_workers, thread_name_prefix="durable-graph"
                    )
        self._pool.submit(fn)

    def __getstate__(self) -> dict[str, Any]:
        return {"max_workers": self.max_workers}  # a shipped graph gets a fresh pool

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["max_workers"])  # type: ignore[misc]

    def shutdown(self) -> None:
        """Stop the pool's threads once queued work is done."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
