"""When checkpoints and task writes reach the saver: the three durability modes.

- ``sync``: each write and checkpoint is stored before the run goes on, but for the
  writes of a step's last task (below).
- ``async``: stored in order on one background thread while the next step runs;
  the run waits for them before it returns.
- ``exit``: kept in memory and stored once when the run ends, however it ends
  (done, failed or interrupted): the last checkpoint and its pending writes.

The writes of the task that finishes a step are held back (``put_writes(...,
hold=True)``, ``sync`` and ``async``): the next thing stored is normally the checkpoint
that applies them, and a store that retires a parent's applied writes at that commit
(``retires_applied_writes``: Redis, SQLite) would store them only to delete them. They
go with that commit instead (``saver.put_applying``): the ordinary writes not at all,
the outcomes it keeps (errors, interrupts, resume values) in the commit's round trip
where the store can. Anything else stored first sends them as they are, first: another
task's writes, a checkpoint that does not apply them, ``send_held`` (the step ends
without a commit) and ``flush``. A commit that fails stores them then, as if sent first
(the failure is raised still), so the task is not run again for that.

Only the step's last task is held (the loop says which): the others are stored as they
finish, as before, so a crash mid-step never runs again a task that finished before
the last one. With ``sync`` the loop holds it only when no stream event is handed to
the caller before the commit, so what ``sync`` promises stays true: between the last
task's end and its commit the run executes no node and hands nothing to the caller (no
stream event, no return); it only applies the step's writes (the channels' reducers) and
plans the next step. A process killed in that window runs the last task again on
resume, as one killed while that task was running would; no reader can tell the
difference but by reading the store inside that window.

A run's input checkpoint is held back too (``hold``, by the embedded loop, when its
first step runs none of the user's nodes and, with ``sync``, streams nothing that names
it first): it goes with the next checkpoint put, the first step's, in one call
(``saver.put_pair``: one round trip and one script on Redis). Anything else stored first
stores it first, alone, as before: task writes sent, ``send_held``, ``flush`` (the run
ends, fails or pauses before that commit). ``exit`` holds nothing of this. A distributed
run's producer takes it instead (``take_held``) to send with its first job's commit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from durable_graph.errors import SerializationError
from durable_graph.scheduler.spec import Write
from durable_graph.store.base import (
    EXTENDS_LATEST,
    BaseCheckpointSaver,
    Checkpoint,
    CheckpointMetadata,
    HeldWrites,
    PutArgs,
    checkpoint_config,
    config_ids,
)
from durable_graph.store.delta import plan_values

__all__ = ["Persister"]


class Persister:
    """Stores one run's checkpoints and writes as its durability mode says."""

    def __init__(
        self,
        saver: BaseCheckpointSaver | None,
        *,
        thread_id: str,
        ns: str,
        durability: str,
        parent: Checkpoint | None,
        extra_configurable: Mapping[str, Any] | None = None,
    ) -> None:
        self.saver = saver
        self.thread_id, self.ns, self.durability = thread_id, ns, durability
        self._extra = dict(extra_configurable or {})
        self._saved_versions: dict[str, int] = dict(parent.channel_versions) if parent else {}
        self._saved_values: dict[str, Any] = dict(parent.channel_values) if parent else {}
        self._depths: dict[str, int | None] = {}
        self._parent_id = parent.id if parent else None
        self._first_parent = self._parent_id
        self._current_id = parent.id if parent else None
        self._deferred: tuple[Checkpoint, CheckpointMetadata] | None = None
        self._deferred_writes: list[tuple[str, list[Write]]] = []
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._futures: list[Future[Any]] = []
        self._holding = False
        self._held: PutArgs | None = None
        self._held_writes: HeldWrites | None = None

    def hold(self) -> None:
        """Keep the next checkpoint back (``sync`` and ``async``) until ``take_held`` hands
        it to a caller that sends it with its own next write, or the next checkpoint put
        sends both (``saver.put_pair``), or anything else stored first stores it."""
        self._holding = self.saver is not None and self.durability != "exit"

    def take_held(self) -> PutArgs | None:
        """The ``put`` arguments of the checkpoint held back, now the caller's to store."""
        held, self._held, self._holding = self._held, None, False
        return held

    def _config(self, checkpoint_id: str | None) -> dict[str, Any]:
        conf: dict[str, Any] = {"thread_id": self.thread_id, "checkpoint_ns": self.ns}
        if checkpoint_id is not None:
            conf["checkpoint_id"] = checkpoint_id
        conf.update(self._extra)
        return {"configurable": conf}

    def current_config(self) -> dict[str, Any]:
        """Config of the latest checkpoint of this run (saved or not yet)."""
        return checkpoint_config(self.thread_id, self.ns, self._current_id or "")

    def put_checkpoint(self, checkpoint: Checkpoint, metadata: CheckpointMetadata) -> None:
        """Store a new checkpoint (now, in the background, or at exit)."""
        self._current_id = checkpoint.id
        if self.saver is None:
            return
        if self.durability == "exit":
            self._deferred = (checkpoint, metadata)
            self._deferred_writes = []
            return
        writes = self._take_writes()
        applied = writes is not None and not self._holding \
            and config_ids(writes[0])[2] == self._parent_id
        if writes is not None and not applied:
            self._release()
            self._send(writes)  # not this checkpoint's: they go first, as they are
            writes = None
        if self._holding:  # this one only
            self._release()
            self._held, self._holding = self._put_args(checkpoint, metadata), False
            return
        first, self._held = self._held, None  # the input's, held for this commit
        self._run(self._commit_call(first, self._put_args(checkpoint, metadata), writes))

    def _commit_call(
        self, first: PutArgs | None, args: PutArgs, writes: HeldWrites | None,
    ) -> Callable[[], Any]:
        """The store of checkpoint ``args``: after ``first`` (``put_pair``), applying
        ``writes`` (``put_applying``), or alone."""
        saver = self.saver
        assert saver is not None
        if first is None and writes is None:
            return lambda: saver.put(*args)
        thread_id, ns = self.thread_id, self.ns

        def commit() -> Any:
            try:
                if first is not None:
                    return saver.put_pair(first, args, writes)
                assert writes is not None
                return saver.put_applying(*args, writes)
            except BaseException:
                with contextlib.suppress(Exception):  # as if they had gone first
                    if writes is not None and (first is None or saver.get_tuple(
                            checkpoint_config(thread_id, ns, first[1].id)) is not None):
                        _put_held(saver, writes)  # not to a first checkpoint never stored
                raise
        return commit

    def _release(self) -> None:
        """Store the checkpoint held back, if any (before anything written after it)."""
        held, self._held = self._held, None
        if held is not None:
            saver = self.saver
            assert saver is not None
            self._run(lambda: saver.put(*held))

    def put_writes(self, task_id: str, writes: Sequence[Write], *, hold: bool = False) -> None:
        """Store a task's writes against the latest checkpoint; ``hold``: the step's last
        task's, held back for the commit that applies them (see the module's doc)."""
        if self.saver is None:
            return
        if self.durability == "exit":
            with self._lock:
                self._deferred_writes.append((task_id, list(writes)))
            return
        if not hold:  # a held checkpoint waits for the commit, as the held writes do
            self._release()
        self.send_held()
        held = (self._config(self._current_id), task_id, list(writes))
        if hold:
            with self._lock:
                self._held_writes = held
            return
        self._send(held)

    def send_held(self) -> None:
        """Store the task writes held back, now (the step ends without a commit)."""
        held = self._take_writes()
        if held is not None:
            self._release()  # the checkpoint they are written against goes first
            self._send(held)

    def _take_writes(self) -> HeldWrites | None:
        with self._lock:
            held, self._held_writes = self._held_writes, None
        return held

    def _send(self, held: HeldWrites) -> None:
        saver = self.saver
        assert saver is not None
        self._run(lambda: _put_held(saver, held))

    def flush(self) -> None:
        """Store whatever is still held back; raise the first error a store hit."""
        if self.saver is None:
            return
        self._release()
        self.send_held()
        if self.durability == "exit":
            if self._deferred is not None:
                deferred, self._deferred = self._deferred, None
                try:
                    self._commit_call(None, self._put_args(*deferred), None)()
                except SerializationError as exc:
                    raise SerializationError(self._exit_lost(exc)) from exc
            writes, self._deferred_writes = self._deferred_writes, []
            for task_id, task_writes in writes:
                self.saver.put_writes(self._config(self._current_id), task_writes, task_id)
        futures, self._futures = self._futures, []
        for fut in futures:
            fut.result()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def _exit_lost(self, exc: SerializationError) -> str:
        """What a failed ``exit`` store lost: the whole run, input included."""
        kept = (f"the thread stays at checkpoint {self._first_parent}"
                if self._first_parent else "the thread has no checkpoint")
        return (f"{exc}. With durability='exit' nothing of this run was saved, not even "
                f"its input: {kept}. Make the value serializable and run the input again "
                "(durability='sync' stores each step, so the input is kept).")

    def _put_args(self, checkpoint: Checkpoint, metadata: CheckpointMetadata) -> PutArgs:
        """What ``saver.put`` stores ``checkpoint`` with (the next put extends it)."""
        saver = self.saver
        assert saver is not None
        new_versions = {
            ch: v for ch, v in checkpoint.channel_versions.items()
            if self._saved_versions.get(ch) != v
        }
        parent = self._config(self._parent_id)
        parent["configurable"][EXTENDS_LATEST] = True  # one writer per thread
        stored = self._deltas(saver, checkpoint, new_versions)
        self._parent_id = checkpoint.id
        self._saved_versions = dict(checkpoint.channel_versions)
        self._saved_values = dict(checkpoint.channel_values)
        return (parent, stored, metadata, new_versions)

    def _deltas(
        self, saver: BaseCheckpointSaver, checkpoint: Checkpoint, new_versions: Mapping[str, int]
    ) -> Checkpoint:
        """The checkpoint with list channels the saver keeps as deltas replaced by them."""
        every = saver.snapshot_every
        if every < 1:
            return checkpoint
        values = plan_values(
            checkpoint.channel_values, new_versions, (self._saved_values, self._saved_versions),
            depth_of=lambda ch, v: saver.value_depth(self.thread_id, self.ns, ch, v),
            every=every, depths=self._depths)
        return dataclasses.replace(checkpoint, channel_values=values)

    def _run(self, call: Callable[[], Any]) -> None:
        if self.durability == "sync":
            call()
            return
        with self._lock:
            for fut in [f for f in self._futures if f.done()]:
                fut.result()  # surface a failed background store at once
                self._futures.remove(fut)
            if self._pool is None:
                self._pool = ThreadPoolExecutor(1, thread_name_prefix="durable-graph-persist")
            self._futures.append(self._pool.submit(call))


def _put_held(saver: BaseCheckpointSaver, held: HeldWrites) -> None:
    """Store writes held back, as ``put_writes`` would have then."""
    config, task_id, writes = held
    saver.put_writes(config, writes, task_id)
