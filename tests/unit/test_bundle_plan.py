"""How a send of jobs is cut into messages: ``@task`` calls of a run in bundles."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from durable_graph.worker.bundles import bundle_keys, bundled, bundles, together
from durable_graph.worker.runs import Job, RunSpec
from durable_graph.worker.shipping import GraphRef


def _message(kind: str, n: int, thread: str = "t", run: str = "r") -> list[str]:
    return [thread, f"id{n}", kind, f"sealed{n}", run, "p", f"key{n}"]


def _sizes(out: list[list[Any]]) -> list[int]:
    return [len(m[3]) if m[2] == "bundle" else 1 for m in out]


@pytest.mark.parametrize(("calls", "sizes"), [
    (1, [1]), (3, [1, 1, 1]), (8, [2, 2, 2, 2]), (32, [8] * 4), (64, [16] * 4),
    (128, [32] * 4), (512, [32] * 16), (40, [10] * 4), (33, [7, 7, 7, 6, 6]),
])
def test_calls_go_in_at_most_32_a_bundle_over_at_least_4_bundles(
    calls: int, sizes: list[int],
) -> None:
    out = bundles([_message("call", n) for n in range(calls)])
    assert _sizes(out) == sizes
    # every call travels exactly once, its task id, kind, sealed job and key together
    items = [i for m in out for i in (m[3] if m[2] == "bundle" else [[*m[1:4], m[6]]])]
    assert sorted(items) == sorted([f"id{n}", "call", f"sealed{n}", f"key{n}"]
                                   for n in range(calls))
    assert all(bundled(i) for i in items)
    assert all(m[:3] == ["t", "", "bundle"] and m[4:] == ["r", "p", ""]
               for m in out if m[2] == "bundle")


def test_other_jobs_keep_a_message_of_their_own_and_runs_are_bundled_apart() -> None:
    tasks = [_message("task", n) for n in range(8)]
    other = [_message("call", n, thread="u") for n in range(8, 16)]
    keyless = [[*_message("call", 99)[:6], ""]]
    out = bundles([*tasks, *[_message("call", n) for n in range(16, 24)], *other, *keyless])
    assert out[:8] == tasks and keyless[0] in out
    threads = [(m[0], len(m[3])) for m in out if m[2] == "bundle"]
    assert threads == [("t", 2)] * 4 + [("u", 2)] * 4
    assert bundle_keys(out[-1]) == [m[6] for m in other[3::4]]
    assert bundle_keys(tasks[0]) == []


def _job(n: int, **changes: Any) -> Job:
    run = RunSpec("run", "thread", GraphRef("mod:graph"), {}, "sync", (), (), 25, -1, (), "",
                  "p")
    return replace(Job("call", run, "owner", 1, checkpoint_id="c1", task_id=f"call{n}",
                       key=f"k{n}"), **changes)


def test_calls_are_claimed_together_only_of_one_checkpoint_under_one_lease() -> None:
    assert together([_job(0), _job(1), _job(2)])
    assert not together([_job(0), _job(1, checkpoint_id="c2")])
    assert not together([_job(0), _job(1, fence=2)])
    assert not together([_job(0), _job(1, kind="task")])
    assert not together([_job(0), _job(1, key="")])
