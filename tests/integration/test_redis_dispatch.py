"""The Redis operations distributed runs rely on, against a real Redis.

Conditional step commits, the exit-durability replace, suspended callers and their
single wake-up, finished-task checks: each is one script, so these tests race
them from threads where a race is the point.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from durable_graph.errors import CommitConflictError, FencingError
from durable_graph.store.base import ERROR, INTERRUPT, RESUME, RETURN, Checkpoint, new_checkpoint_id
from durable_graph.store.redis import RedisSaver
from durable_graph.store.redis.jobbook import JobBook
from durable_graph.store.redis.keys import ThreadKeys
from durable_graph.store.redis.lease import Lease
from tests.redis_records import value_fields

pytestmark = pytest.mark.redis


@pytest.fixture
def saver(redis_url: str, redis_prefix: str) -> Iterator[RedisSaver]:
    with RedisSaver.from_url(redis_url, prefix=redis_prefix) as s:
        yield s


def cfg(checkpoint_id: str | None = None, **extra: Any) -> dict[str, Any]:
    conf: dict[str, Any] = {"thread_id": "t", "checkpoint_ns": "", **extra}
    if checkpoint_id:
        conf["checkpoint_id"] = checkpoint_id
    return {"configurable": conf}


def make(values: dict[str, Any], versions: dict[str, int]) -> Checkpoint:
    return Checkpoint(new_checkpoint_id(), "2026-01-01T00:00:00+00:00", values, versions, {})


def commit(saver: RedisSaver, parent: Checkpoint | None, cp: Checkpoint, **kw: Any) -> None:
    old = parent.channel_versions if parent else {}
    new = {ch: v for ch, v in cp.channel_versions.items() if old.get(ch) != v}
    saver.put(cfg(parent.id if parent else None), cp, {"step": 0}, new, **kw)


def taken_over(saver: RedisSaver) -> tuple[Checkpoint, Lease]:
    """A committed checkpoint of thread ``t``, and the lease of ``t`` that was taken over."""
    cp = make({"x": 0}, {"x": 1})
    commit(saver, None, cp)
    old = saver.leases.acquire("t", "run-1", 0.05)
    assert old is not None
    threading.Event().wait(0.1)
    new = saver.leases.acquire("t", "recover-1", 5)
    assert new is not None and new.generation == old.generation + 1
    return cp, old


def test_a_step_commits_once_even_when_two_workers_race(saver: RedisSaver) -> None:
    base = make({"x": 0}, {"x": 1})
    commit(saver, None, base)
    rivals = [make({"x": i}, {"x": 2 + i}) for i in range(8)]
    wins: list[str] = []
    losses: list[str] = []

    def race(cp: Checkpoint) -> None:
        try:
            commit(saver, base, cp, expect_latest=base.id)
            wins.append(cp.id)
        except CommitConflictError:
            losses.append(cp.id)

    threads = [threading.Thread(target=race, args=(cp,)) for cp in rivals]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1 and len(losses) == 7
    ids = [t.checkpoint.id for t in saver.list(cfg())]
    assert ids == [wins[0], base.id]  # the losers wrote nothing


def test_a_conflicting_commit_names_the_newer_checkpoint(saver: RedisSaver) -> None:
    first = make({"x": 0}, {"x": 1})
    commit(saver, None, first)
    second = make({"x": 1}, {"x": 2})
    commit(saver, first, second)
    with pytest.raises(CommitConflictError, match=second.id):
        commit(saver, first, make({"x": 9}, {"x": 3}), expect_latest=first.id)


def test_exit_durability_replaces_the_previous_step_and_its_own_values(
    saver: RedisSaver,
) -> None:
    start = make({"kept": "s", "x": 0}, {"kept": 1, "x": 1})
    commit(saver, None, start)
    step1 = make({"kept": "s", "x": 1, "tmp": "t"}, {"kept": 1, "x": 2, "tmp": 2})
    commit(saver, start, step1)
    saver.put_writes(cfg(step1.id), [("x", 5)], "task-a")
    step2 = make({"kept": "s", "x": 2, "tmp": "t"}, {"kept": 1, "x": 3, "tmp": 2})
    new = {"x": 3}
    saver.put(cfg(start.id), step2, {"step": 1}, new,
              expect_latest=step1.id, replaces=step1.id, keep=start.id)
    assert [t.checkpoint.id for t in saver.list(cfg())] == [step2.id, start.id]
    assert saver.get_tuple(cfg(step1.id)) is None
    latest = saver.get_tuple(cfg())
    assert latest is not None and latest.checkpoint.channel_values == step2.channel_values
    assert latest.parent_config is not None
    assert latest.parent_config["configurable"]["checkpoint_id"] == start.id
    old = saver.get_tuple(cfg(start.id))
    assert old is not None and old.checkpoint.channel_values == {"kept": "s", "x": 0}
    blobs = value_fields(saver.client, ThreadKeys(saver.prefix, "t").ns(""))
    # x's small values live in their records (redis-v9), step1's with it; "kept" and
    # "tmp", read unchanged by later checkpoints, were written out as fields for them
    assert sorted(b.split(b"\0")[0] for b in blobs) == [b"kept", b"tmp"]
    writes = saver.client.keys(f"{{{saver.prefix}:t}}:n::w:{step1.id}")
    assert writes == []


def test_finished_counts_outcomes_not_resume_answers(saver: RedisSaver) -> None:
    cp = make({"x": 0}, {"x": 1})
    commit(saver, None, cp)
    saver.put_writes(cfg(cp.id), [("x", 1)], "wrote")
    saver.put_writes(cfg(cp.id), [(ERROR, ValueError("e"))], "failed")
    saver.put_writes(cfg(cp.id), [(INTERRUPT, ["q"])], "paused")
    saver.put_writes(cfg(cp.id), [(RESUME, ["a"])], "answered-only")
    ids = ["wrote", "failed", "paused", "answered-only", "never"]
    assert saver.finished(cfg(cp.id), ids) == {"wrote", "failed", "paused"}
    saver.clear_outcomes(cfg(cp.id), ["failed", "paused"])
    assert saver.finished(cfg(cp.id), ids) == {"wrote"}
    resumed = saver.get_tuple(cfg(cp.id))
    assert resumed is not None
    assert {(w.task_id, w.channel) for w in resumed.pending_writes} == {
        ("wrote", "x"), ("answered-only", RESUME)}


def test_the_last_finished_call_wakes_its_caller_exactly_once(saver: RedisSaver) -> None:
    cp = make({"x": 0}, {"x": 1})
    commit(saver, None, cp)
    calls = [f"call-{i}" for i in range(40)]
    saver.put_call_writes(cfg(cp.id), [(RETURN, ("t", -1))], calls[0], "node")
    assert saver.suspend(cfg(cp.id), "node", calls, b"wake-job", 60) is True
    wakes: list[bytes] = []
    lock = threading.Lock()

    def finish(call_id: str) -> None:
        wake = saver.put_call_writes(cfg(cp.id), [(RETURN, ("t", call_id))], call_id, "node")
        if wake is not None:
            with lock:
                wakes.append(wake)

    threads = [threading.Thread(target=finish, args=(c,)) for c in calls[1:]]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wakes == [b"wake-job"]
    # a redelivered call finishing again wakes nobody
    assert saver.put_call_writes(cfg(cp.id), [(RETURN, ("t", 0))], calls[5], "node") is None


def test_suspending_after_the_calls_finished_replays_at_once(saver: RedisSaver) -> None:
    cp = make({"x": 0}, {"x": 1})
    commit(saver, None, cp)
    for call in ("a", "b"):
        assert saver.put_call_writes(cfg(cp.id), [(RETURN, ("t", 1))], call, "node") is None
    assert saver.suspend(cfg(cp.id), "node", ["a", "b"], b"wake", 60) is False
    assert saver.client.exists(f"{{{saver.prefix}:t}}:n::wk:{cp.id}:node") == 0


def test_a_stale_call_result_is_fenced_out(saver: RedisSaver) -> None:
    cp, old = taken_over(saver)
    with pytest.raises(FencingError):
        saver.put_call_writes(cfg(cp.id, fence=old.generation), [(RETURN, ("t", 1))], "c", "n")
    assert saver.finished(cfg(cp.id), ["c"]) == set()


def test_a_call_result_and_the_end_of_its_job_land_together(saver: RedisSaver) -> None:
    book = JobBook(saver.conn, saver.prefix)
    cp = make({"x": 0}, {"x": 1})
    commit(saver, None, cp)
    book.register_sent([("job-1", "t", "m1"), ("job-2", "t", "m2")])()
    assert book.claim("job-1", "t", "w:1") == ("ok", "")
    assert saver.suspend(cfg(cp.id), "node", ["c1", "c2"], b"wake", 60) is True
    assert saver.put_call_writes(cfg(cp.id), [(RETURN, ("t", 1))], "c1", "node",
                                 ends=("job-1", 5)) is None
    assert saver.finished(cfg(cp.id), ["c1"]) == {"c1"}
    assert book.claim("job-1", "t", "w:2") == ("gone", "")  # ended: a copy is dropped
    assert book.owes("t")  # job-2 still runs
    assert saver.put_call_writes(cfg(cp.id), [(RETURN, ("t", 2))], "c2", "node",
                                 ends=("job-2", 5)) == b"wake"
    assert not book.owes("t")


def test_a_call_claim_renews_the_lease_and_reads_the_result_in_one_script(
    saver: RedisSaver,
) -> None:
    book = JobBook(saver.conn, saver.prefix)
    cp = make({"x": 0}, {"x": 1})
    commit(saver, None, cp)
    lease = saver.leases.acquire("t", "run-1", 5)
    assert lease is not None
    mine = ("run-1", lease.generation, 5.0)
    read = saver.finished_read(cfg(cp.id), ["c1"])
    book.register_sent([("job-1", "t", "m1"), ("job-2", "t", "m2")])()
    assert book.claim_renewing("job-1", "t", "w:1", mine, read) == ("ok", "", True, [])
    assert book.claim_renewing("job-1", "t", "w:2", mine, read) == ("held", "w:1", True, [])
    saver.put_call_writes(cfg(cp.id), [(RETURN, ("t", 1))], "c1", "node", ends=("job-1", 5))
    assert book.claim_renewing("job-1", "t", "w:2", mine, read) == ("gone", "", True, [b"c1"])
    # a copy of a call whose result landed, claimed: it finds the result, runs nothing
    assert book.claim_renewing("job-2", "t", "w:2", mine, read) == ("ok", "", True, [b"c1"])
    def expires() -> int:
        return int(saver.client.hget(ThreadKeys(saver.prefix, "t").lease, "expires") or 0)

    first = expires()
    threading.Event().wait(0.01)
    book.register_sent([("job-3", "t", "m3")])()
    assert book.claim_renewing("job-3", "t", "w:2", mine, read)[2] is True
    assert expires() > first  # renewed by the claim
    stale = ("run-1", lease.generation - 1, 5.0)  # a job of an older lease: not renewed
    renewed = expires()
    book.register_sent([("job-4", "t", "m4")])()
    assert book.claim_renewing("job-4", "t", "w:3", stale, read) == ("ok", "", False, [b"c1"])
    assert expires() == renewed


def test_a_stale_call_job_ends_though_its_result_is_fenced_out(saver: RedisSaver) -> None:
    book = JobBook(saver.conn, saver.prefix)
    cp, old = taken_over(saver)
    book.register_sent([("job-1", "t", "m1")])()
    with pytest.raises(FencingError):
        saver.put_call_writes(cfg(cp.id, fence=old.generation), [(RETURN, ("t", 1))], "c",
                              "n", ends=("job-1", 5))
    assert saver.finished(cfg(cp.id), ["c"]) == set()
    assert not book.owes("t")


def test_a_second_execution_of_a_task_adds_none_of_its_writes(saver: RedisSaver) -> None:
    cp = make({"x": 0}, {"x": 1})
    commit(saver, None, cp)
    saver.put_task_writes(cfg(cp.id), [("answer", "run1")], "T")
    saver.put_task_writes(cfg(cp.id), [("answer", "run2"), ("extra", "run2-only")], "T")
    got = saver.get_tuple(cfg(cp.id))
    assert got is not None
    assert [(w.task_id, w.channel, w.value) for w in got.pending_writes] == [
        ("T", "answer", "run1")]


def test_take_over_takes_expired_leases_only(saver: RedisSaver) -> None:
    assert saver.leases.take_over("free", "recover", 5) is None  # never held: nothing to do
    held = saver.leases.acquire("gone", "run-1", 0.05)
    assert held is not None
    assert saver.leases.take_over("gone", "recover", 5) is None  # still live
    threading.Event().wait(0.1)
    taken = saver.leases.take_over("gone", "recover", 5)
    assert taken is not None and taken.generation == held.generation + 1
    assert saver.leases.release(taken)
    assert saver.leases.take_over("gone", "recover-2", 5) is None  # released: run ended


def test_stale_jobs_cannot_suspend_or_clear_outcomes(saver: RedisSaver) -> None:
    cp, old = taken_over(saver)
    saver.put_writes(cfg(cp.id), [(ERROR, ValueError("e"))], "failed")
    stale = cfg(cp.id, fence=old.generation)
    with pytest.raises(FencingError):
        saver.suspend(stale, "node", ["c"], b"stale-wake", 60)
    with pytest.raises(FencingError):
        saver.clear_outcomes(stale, ["failed"])
    assert saver.finished(cfg(cp.id), ["failed"]) == {"failed"}
    assert saver.client.exists(f"{{{saver.prefix}:t}}:n::wk:{cp.id}:node") == 0


class _ReadBack:
    """A ``Rider`` reading the thread's newest checkpoint in the commit's round trip."""

    def __init__(self, saver: RedisSaver) -> None:
        self.saver, self.replies = saver, list[Any]()

    def queue(self, pipe: Any) -> list[Any]:
        return [self.saver.queue_get_tuple(pipe, cfg())]

    def landed(self, replies: list[Any]) -> None:
        self.replies = replies


def _ride(saver: RedisSaver, parent: Checkpoint, cp: Checkpoint, **kw: Any) -> _ReadBack:
    ride = _ReadBack(saver)
    saver.commit_step(cfg(parent.id), cp, {"step": 1}, {"x": cp.channel_versions["x"]},
                      ride=ride, **kw)
    return ride


def test_a_ride_runs_after_the_commit_in_its_round_trip(saver: RedisSaver) -> None:
    first = make({"x": 0}, {"x": 1})
    commit(saver, None, first)
    second = make({"x": 1}, {"x": 2})
    ride = _ride(saver, first, second, expect_latest=first.id)
    seen = saver.tuple_from(cfg(), ride.replies[0])
    assert seen is not None and seen.checkpoint.id == second.id  # it saw the commit


def test_a_ride_runs_and_lands_also_when_the_commit_is_refused(saver: RedisSaver) -> None:
    first = make({"x": 0}, {"x": 1})
    commit(saver, None, first)
    second = make({"x": 1}, {"x": 2})
    commit(saver, first, second)
    ride = _ReadBack(saver)
    with pytest.raises(CommitConflictError):
        saver.commit_step(cfg(first.id), make({"x": 9}, {"x": 3}), {"step": 1}, {"x": 3},
                          ride=ride, expect_latest=first.id)
    seen = saver.tuple_from(cfg(), ride.replies[0])
    assert seen is not None and seen.checkpoint.id == second.id


def test_a_task_claim_renews_the_lease_in_the_claims_own_script(saver: RedisSaver) -> None:
    """A task job's claim and its lease renewal are one script (``CLAIM_RENEWING``), its
    first read rides the same round trip after it; a job of an older lease is claimed,
    and told its lease is not its own any more (nothing renewed)."""
    book = JobBook(saver.conn, saver.prefix)
    lease = saver.leases.acquire("t", "run-1", 5)
    assert lease is not None
    marker = f"{saver.prefix}:marker"
    saver.client.set(marker, b"first read")
    sent: list[Any] = []

    def read(p: Any) -> Any:
        sent.extend(p.command_stack)
        return p.get(marker)

    def expires() -> int:
        return int(saver.client.hget(ThreadKeys(saver.prefix, "t").lease, "expires") or 0)

    mine, stale = ("run-1", lease.generation, 5.0), ("run-1", lease.generation - 1, 5.0)
    book.register_sent([("job-1", "t", "m1"), ("job-2", "t", "m2")])()
    first = expires()
    threading.Event().wait(0.01)
    assert book.claim_renewing("job-1", "t", "w:1", mine, read) == ("ok", "", True,
                                                                   b"first read")
    assert len(sent) == 1  # the claim and the renewal: one command before the read
    assert expires() > first
    assert book.claim_renewing("job-1", "t", "w:2", mine) == ("held", "w:1", True, None)
    book.end("job-1", "t", 5)
    assert book.claim_renewing("job-1", "t", "w:2", mine) == ("gone", "", True, None)
    renewed = expires()
    assert book.claim_renewing("job-2", "t", "w:3", stale) == ("ok", "", False, None)
    assert expires() == renewed
