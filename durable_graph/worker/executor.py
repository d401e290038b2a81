"""The producer side: ``CeleryExecutor`` starts runs on workers and hands back a handle.

``compile(checkpointer=RedisSaver.from_url(url), executor=CeleryExecutor(app))``
makes ``invoke``, ``stream`` and ``submit`` run the graph on Celery workers. The
producer applies the input itself (the same code as an embedded run), takes the
thread's lease, ships the graph, enqueues the first step's jobs and from then on
only reads the run's event stream: no step runs here and nothing polls.

A Redis outage shorter than ``Settings.store_retry`` (30 s) is ridden out: reads
of the run's events resume after the last event seen, and a submit that cannot
reach the store yet waits for it (see ``outage``).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from celery import Celery

from durable_graph.errors import GraphValueError, RunFailedError, RunTimeoutError
from durable_graph.scheduler.executor import RunRequest
from durable_graph.store.cache import InMemoryCache
from durable_graph.store.codec import SignedSerializer
from durable_graph.store.kv import InMemoryStore
from durable_graph.store.redis.jobbook import JobBook
from durable_graph.store.redis.lease import Lease
from durable_graph.store.redis.saver import RedisSaver
from durable_graph.worker.app import CeleryDispatcher, settings_of
from durable_graph.worker.events import END, RunEvents
from durable_graph.worker.firstjob import FirstJob
from durable_graph.worker.multitask import acquire
from durable_graph.worker.outage import ride_out
from durable_graph.worker.payload import check_key
from durable_graph.worker.runs import RunContext, RunSpec, abort_run, begin_run
from durable_graph.worker.shipping import GraphShipper, Ship
from durable_graph.worker.threads import cancel_thread
from durable_graph.worker.tracing import carry, run_span

if TYPE_CHECKING:
    from durable_graph.graph.compiled import CompiledGraph

__all__ = ["CeleryExecutor", "RunHandle"]

INTERNAL_KEYS = ("checkpoint_id", "fence", "task_id", "checkpoint_ns")
KEY_CHECK_EVERY = 10.0
"""Seconds a producer trusts a signing-key check of a store before reading it again."""


class RunHandle:
    """A run on the workers: wait for it, stream its events, or ask its status."""

    def __init__(
        self, saver: RedisSaver, events: RunEvents, run: RunSpec,
        first: list[tuple[str, Any]] | None = None, *, store_retry: float = 30.0,
        confirm: Callable[[], None] | None = None,
    ) -> None:
        self._saver, self._events, self.run = saver, events, run
        self._confirm = confirm
        """Waits for the broker's confirms of the jobs this process published (a
        RabbitMQ producer's submit does not: ``worker/confirms``); called once, by the
        first wait on the run, so a refused publish is sent again before waiting on it."""
        self._retry = store_retry
        """Seconds a failing store read is retried before the error reaches the caller."""
        self._first = list(first or [])
        self._cursor = "0"
        self._end: dict[str, Any] | None = None

    @property
    def thread_id(self) -> str:
        """The thread the run belongs to."""
        return self.run.thread_id

    @property
    def run_id(self) -> str:
        """This run's id (its event stream's name)."""
        return self.run.run_id

    def status(self) -> str:
        """``running``, ``done``, ``interrupted``, ``failed`` or ``cancelled``."""
        if self._end is not None:
            return str(self._end["status"])
        record = ride_out(lambda: self._saver.get_status(self.thread_id), self._retry,
                          f"reading the status of thread {self.thread_id!r}") or {}
        return str(record.get("status") or "running")

    def events(self, timeout: float | None = None) -> Iterator[tuple[str, Any]]:
        """(mode, chunk) as workers produce them, until the run ends."""
        deadline = None if timeout is None else time.monotonic() + timeout
        confirm, self._confirm = self._confirm, None
        if confirm is not None:
            confirm()
        first, self._first = self._first, []
        yield from first  # made here while applying the input (a resume's state)
        while self._end is None:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise RunTimeoutError(f"run {self.run_id} of thread {self.thread_id!r} is still "
                                   f"{self.status()} after {timeout} s")
            block = 1000 if left is None else max(1, min(1000, int(left * 1000)))
            window = self._retry if left is None else min(self._retry, max(left, 0.0))
            for event_id, mode, payload in self._read(block, window):
                self._cursor = event_id
                if mode == END:
                    self._end = payload
                    break
                yield mode, payload

    def _read(self, block_ms: int, window: float) -> list[tuple[str, str, Any]]:
        """The events after the last one seen, read again through an outage of ``window`` s."""
        return ride_out(
            lambda: list(self._events.read(self.thread_id, self.run_id, self._cursor, block_ms)),
            window, f"reading the events of run {self.run_id} of thread {self.thread_id!r}")

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the run; its output (with ``__interrupt__`` when it paused).

        Raises the run's error if it failed, or ``TimeoutError`` after ``timeout``.
        """
        for _ in self.events(timeout):
            pass
        end = self._end
        assert end is not None
        if end["status"] in ("failed", "cancelled"):
            raise _rebuilt(end["error"])
        if end["interrupts"]:
            base = end["output"] if isinstance(end["output"], dict) else {}
            return {**base, "__interrupt__": list(end["interrupts"])}
        return end["output"]


    def cancel(self, reason: str = "cancelled from Python") -> None:
        """Stop this run (see ``durable_graph.ops.cancel_thread``); its ``result`` then
        raises ``RunCancelledError``. ThreadStateError if it is not running any more."""
        cancel_thread(self._saver, self.thread_id, reason=reason, run_id=self.run_id)
        self._first = []


def _rebuilt(record: Mapping[str, Any] | None) -> BaseException:
    if record is None:
        return RunFailedError("the run failed without an error record")
    error = record.get("error")
    if isinstance(error, BaseException):
        return error
    return RunFailedError(
        f"{record['type']}: {record['message']}\n(worker traceback follows)\n"
        f"{record['traceback']}", record["type"], record["traceback"])


class CeleryExecutor:
    """Run a compiled graph's steps and ``@task`` calls as Celery jobs.

    Args:
        app: from ``durable_graph.worker.create_app`` (or the module's ``app``).
        ship: how workers get the graph: ``auto`` (import path when the graph is a
            module-level name, plus a signed blob for workers that cannot import
            it), ``import`` or ``pickle``.
    """

    def __init__(self, app: Celery, *, ship: Ship = "auto") -> None:
        self.app = app
        self.settings = settings_of(app)
        self._codec = self.settings.require_codec()
        self._dispatcher = CeleryDispatcher(app, self.settings)
        self._ship: Ship = ship
        self._shippers: dict[int, GraphShipper] = {}
        self._books: dict[int, JobBook] = {}
        self._key_checked: dict[tuple[int, str], float] = {}
        """(store, prefix) -> until when its key check holds (monotonic seconds)."""

    def submit(self, fn: Any) -> None:
        """Executor protocol: nothing of a distributed run runs here; run inline."""
        fn()

    def adopt(self, saver: Any) -> RedisSaver:
        """The graph's checkpointer, checked, with values signed like every payload and
        commits waited for like the workers' (``Settings.commit_wait``) unless it has its own."""
        if not isinstance(saver, RedisSaver):
            raise GraphValueError(
                "CeleryExecutor needs a RedisSaver checkpointer shared with the workers: "
                "compile(checkpointer=RedisSaver.from_url(url), executor=CeleryExecutor(app))."
            )
        if not isinstance(saver.serde, SignedSerializer):
            saver.serde = SignedSerializer(saver.serde, self._codec)
        if saver.conn.commit_wait is None:
            saver.conn.use_commit_wait(self.settings.commit_waiter)
        return saver

    def cancel(self, graph: CompiledGraph, config: dict[str, Any]) -> None:
        """Stop the thread's current run on the workers (``graph.cancel(config)``)."""
        thread_id = str(config.get("configurable", {}).get("thread_id") or "")
        if not thread_id:
            raise GraphValueError("cancel needs a thread: pass config={'configurable': "
                                  "{'thread_id': ...}}")
        cancel_thread(self.adopt(graph.saver), thread_id, reason="cancelled from Python")

    def _check_key(self, saver: RedisSaver, window: float) -> None:
        """Compare the signing key with the workers' (SignatureError if they differ): read
        at most every ``KEY_CHECK_EVERY`` seconds per store and prefix, not per run."""
        where = (id(saver.conn), saver.prefix)
        if time.monotonic() < self._key_checked.get(where, 0.0):
            return
        ride_out(lambda: check_key(saver.conn, saver.prefix, self._codec), window,
                 "checking the signing key against the workers'")
        self._key_checked[where] = time.monotonic() + KEY_CHECK_EVERY

    def _shipper(self, saver: RedisSaver) -> GraphShipper:
        found = self._shippers.get(id(saver))
        if found is None:
            found = self._shippers[id(saver)] = GraphShipper(
                saver.client, saver.prefix, self._codec, self._ship)
        return found

    def _book(self, saver: RedisSaver) -> JobBook:
        """The job book of ``saver``'s prefix on its connection (registrations ride its
        commits)."""
        found = self._books.get(id(saver))
        if found is None:
            found = self._books[id(saver)] = JobBook(saver.conn, saver.prefix)
        return found

    def _take_lease(
        self, saver: RedisSaver, thread_id: str, owner: str, multitask: str,
        config: dict[str, Any],
    ) -> tuple[Lease, dict[str, Any], Any]:
        """The thread's lease for a new run (see ``multitask``), through a store outage,
        with the config it starts from and that config's checkpoint if read with it.

        The same owner may take its own lease again, so a retry after a lost reply is safe.
        """
        ttl = self.settings.lease_ttl
        return ride_out(
            lambda: acquire(saver, thread_id, owner, ttl, multitask=multitask, config=config),
            self.settings.store_retry, f"taking the lease of thread {thread_id!r}")

    @run_span
    def start_run(
        self, graph: CompiledGraph, input: Any, config: dict[str, Any], request: RunRequest
    ) -> RunHandle:
        """Apply ``input`` here, then hand the run to the workers."""
        _require_shared(graph)
        saver = self.adopt(graph.saver)
        thread_id = str(config.get("configurable", {}).get("thread_id") or "")
        if not thread_id:
            raise GraphValueError(
                "a distributed run needs a thread: pass config={'configurable': "
                "{'thread_id': ...}}")
        window = self.settings.store_retry
        self._check_key(saver, window)
        ref = ride_out(lambda: self._shipper(saver).ref(graph), window, "shipping the graph")
        run_id = uuid.uuid4().hex
        lease, config, saved = self._take_lease(saver, thread_id, f"run:{run_id}",
                                                request.multitask, config)
        loop = graph.make_loop(lease.fence(config), durability=request.durability,
                               interrupt_before=request.interrupt_before,
                               interrupt_after=request.interrupt_after, saver=saver,
                               modes=request.modes, output_values=request.output_values)
        user_conf = {k: v for k, v in config.get("configurable", {}).items()
                     if k not in INTERNAL_KEYS}
        run = RunSpec(
            run_id, thread_id, ref, {**config, "configurable": user_conf},
            loop.opts.durability, _names(loop.opts.interrupt_before),
            _names(loop.opts.interrupt_after), loop.opts.recursion_limit, 0,
            tuple(sorted(request.modes)), "", saver.prefix, context=request.context,
            trace=carry(run_id, thread_id), output_values=request.output_values,
        )
        events = RunEvents(saver.conn, saver.prefix, saver.serde)
        # the first job sent with the input's commit (``firstjob``); with async durability
        # a slot would make ``finish`` send the next step before its commit, as workers
        # do, and a producer commits first (the input's events stream first)
        first = None if loop.opts.durability == "async" else FirstJob(
            lambda: self._book(saver), self._dispatcher, saver.client,
            idle_ttl=self.settings.lease_ttl)
        rc = RunContext(run, graph, saver, events, self._dispatcher, lease.owner,
                        lease.generation, eager=first)
        try:
            begin_run(rc, loop, input, saved)
        except BaseException as exc:
            abort_run(saver, events, rc.job("start"), exc)
            raise
        return RunHandle(saver, events, rc.run, loop.first_events, store_retry=window,
                         confirm=self._dispatcher.flush)


def _require_shared(graph: CompiledGraph) -> None:
    """Refuse a store or cache that would be a separate copy on every worker."""
    for what, obj, local in (("store", graph.store, InMemoryStore),
                             ("cache", graph.cache, InMemoryCache)):
        if isinstance(obj, local):
            raise GraphValueError(
                f"compile({what}={type(obj).__name__}()) cannot be shared by Celery workers "
                f"(each would get its own copy): use a Redis{what.title()} or "
                f"Sqlite{what.title()} all workers reach."
            )


def _names(nodes: Any) -> tuple[str, ...] | str:
    return nodes if isinstance(nodes, str) else tuple(nodes)
