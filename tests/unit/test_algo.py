"""The pure transition (scheduler/algo.py), tested directly on Checkpoint data.

No saver and no loop: specs come from ``StateGraph(...).compile().spec`` or are
built by hand, and a superstep is plan_tasks -> run each node -> apply_writes.
"""

from __future__ import annotations

import copy
import operator
import re
from typing import Annotated, Any, TypedDict

import pytest

from durable_graph import END, START, Send, StateGraph
from durable_graph.errors import InvalidUpdateError
from durable_graph.scheduler.algo import (
    INTERRUPT_SEEN,
    PlannedTask,
    TaskWrites,
    apply_writes,
    finished_writes,
    mark_resumed,
    next_channel_version,
    plan_tasks,
    read_values,
    should_interrupt,
    task_id,
)
from durable_graph.scheduler.channels import ChannelSpec
from durable_graph.scheduler.spec import TASKS, GraphSpec, NodeSpec
from durable_graph.store.base import (
    ERROR,
    INTERRUPT,
    NO_WRITES,
    RESUME,
    Checkpoint,
    PendingWrite,
    empty_checkpoint,
    new_checkpoint_id,
)

UUID_SHAPE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


class State(TypedDict):
    x: int
    log: Annotated[list[str], operator.add]


def _logger(name: str) -> Any:
    def node(state: dict[str, Any]) -> dict[str, Any]:
        return {"log": [name]}

    return node


# -- driving the transition by hand ---------------------------------------------


def start(spec: GraphSpec, value: Any) -> Checkpoint:
    """The checkpoint after the input step (what the loop commits first)."""
    cp, _ = apply_writes(
        spec, empty_checkpoint(),
        [TaskWrites("__input__", ("input",), (), spec.input_writes(value))],
        new_checkpoint_id(),
    )
    return cp


def run_tasks(spec: GraphSpec, cp: Checkpoint, tasks: list[PlannedTask]) -> list[TaskWrites]:
    values = read_values(spec, cp)
    # ctx is only used for injected parameters, which these nodes do not declare
    return [
        TaskWrites(t.name, t.path, t.triggers, t.node.run(t.input, values, None))  # type: ignore[arg-type]
        for t in tasks
    ]


def step(spec: GraphSpec, cp: Checkpoint) -> tuple[Checkpoint, list[str]]:
    """One superstep: (next checkpoint, names of the tasks that ran)."""
    tasks = plan_tasks(spec, cp, "t", "")
    new, _ = apply_writes(spec, cp, run_tasks(spec, cp, tasks), new_checkpoint_id())
    return new, [t.name for t in tasks]


def names(spec: GraphSpec, cp: Checkpoint) -> list[str]:
    return [t.name for t in plan_tasks(spec, cp, "t", "")]


def chain_spec() -> GraphSpec:
    b = StateGraph(State)
    b.add_node("a", _logger("a"))
    b.add_node("b", _logger("b"))
    b.add_edge(START, "a")
    b.add_edge("a", "b")
    b.add_edge("b", END)
    return b.compile().spec


def hand_spec() -> GraphSpec:
    """A spec without StateGraph: one 'last' key x and a 'reducer' key log."""

    def node(name: str) -> NodeSpec:
        return NodeSpec(
            name=name,
            triggers=("go",),
            read=lambda values: values.get("x"),
            run=lambda value, values, ctx: [("log", [name])],
            updates=lambda writes: None,
        )

    return GraphSpec(
        channels={
            "go": ChannelSpec("ephemeral"),
            "x": ChannelSpec("last"),
            "log": ChannelSpec("reducer", reducer=operator.add, default=list),
        },
        nodes={"n1": node("n1"), "n2": node("n2")},
        input_writes=lambda value: [("go", True), ("x", value)],
        output=dict,
    )


# -- task_id -------------------------------------------------------------------


def test_task_id_is_deterministic_and_uuid_shaped() -> None:
    a = task_id("thread", "", "cp1", "pull", "node")
    assert a == task_id("thread", "", "cp1", "pull", "node")
    assert UUID_SHAPE.match(a)


@pytest.mark.parametrize(
    "other",
    [
        ("thread2", "", "cp1", "pull", "node"),
        ("thread", "ns", "cp1", "pull", "node"),
        ("thread", "", "cp2", "pull", "node"),
        ("thread", "", "cp1", "push", "node"),
        ("thread", "", "cp1", "pull", "node2"),
        ("thread", "", "cp1pull", "node"),  # joining parts must not collide
    ],
)
def test_task_id_differs_when_any_part_differs(other: tuple[str, ...]) -> None:
    assert task_id("thread", "", "cp1", "pull", "node") != task_id(*other)


def test_planned_ids_same_inputs_same_ids() -> None:
    spec = chain_spec()
    cp = start(spec, {"x": 1})
    first = plan_tasks(spec, cp, "t", "")
    again = plan_tasks(spec, copy.deepcopy(cp), "t", "")
    assert [t.id for t in first] == [t.id for t in again]
    assert [t.name for t in first] == [START]


def test_planned_ids_differ_by_checkpoint_ns_thread() -> None:
    spec = chain_spec()
    cp = start(spec, {"x": 1})
    fork = Checkpoint(new_checkpoint_id(), cp.ts, cp.channel_values, cp.channel_versions,
                      cp.versions_seen)
    (base,) = plan_tasks(spec, cp, "t", "")
    (forked,) = plan_tasks(spec, fork, "t", "")
    (in_ns,) = plan_tasks(spec, cp, "t", "parent:1")
    (other_thread,) = plan_tasks(spec, cp, "t2", "")
    ids = {base.id, forked.id, in_ns.id, other_thread.id}
    assert len(ids) == 4


def test_send_ids_differ_by_index_and_are_stable() -> None:
    spec = fanout_spec()
    cp = start(spec, {"x": 3})
    cp, _ = step(spec, cp)  # START runs, writes three Sends
    tasks = [t for t in plan_tasks(spec, cp, "t", "") if t.path[0] == "push"]
    assert len({t.id for t in tasks}) == 3
    # Sends are planned first, then triggered nodes, as LangGraph orders them
    assert [t.id for t in tasks] == [t.id for t in plan_tasks(spec, cp, "t", "")][:3]


# -- planning ------------------------------------------------------------------


def test_empty_checkpoint_plans_nothing() -> None:
    assert plan_tasks(chain_spec(), empty_checkpoint(), "t", "") == []


def test_chain_runs_node_by_node_then_stops() -> None:
    spec = chain_spec()
    cp = start(spec, {"x": 1})
    ran: list[list[str]] = []
    for _ in range(5):
        cp, tasks = step(spec, cp)
        if not tasks:
            break
        ran.append(tasks)
    assert ran == [[START], ["a"], ["b"]]
    assert cp.channel_values["log"] == ["a", "b"]
    assert cp.channel_values["x"] == 1


def test_pull_tasks_are_planned_in_node_order_not_name_order() -> None:
    b = StateGraph(State)
    b.add_node("zeta", _logger("zeta"))
    b.add_node("alpha", _logger("alpha"))
    b.add_node("mid", _logger("mid"))
    for n in ("mid", "alpha", "zeta"):
        b.add_edge(START, n)
    spec = b.compile().spec
    cp, _ = step(spec, start(spec, {"x": 0}))
    tasks = plan_tasks(spec, cp, "t", "")
    assert [t.name for t in tasks] == ["zeta", "alpha", "mid"]
    assert [t.path for t in tasks] == [("pull", "zeta"), ("pull", "alpha"), ("pull", "mid")]


def fanout_spec() -> GraphSpec:
    def worker(arg: Any) -> dict[str, Any]:
        return {"log": [f"w{arg['i']}"]}

    b = StateGraph(State)
    b.add_node("after", _logger("after"))
    b.add_node("worker", worker)
    b.add_conditional_edges(
        START, lambda s: [Send("worker", {"i": i}) for i in range(s["x"])] + ["after"]
    )
    return b.compile().spec


def test_sends_come_before_pull_tasks_and_keep_their_index() -> None:
    """LangGraph plans a step's Sends first (its snapshots' ``next`` shows that order);
    writes still apply in path order, triggered nodes first."""
    spec = fanout_spec()
    cp, _ = step(spec, start(spec, {"x": 3}))
    tasks = plan_tasks(spec, cp, "t", "")
    assert [(t.name, t.path) for t in tasks] == [
        ("worker", ("push", 0)),
        ("worker", ("push", 1)),
        ("worker", ("push", 2)),
        ("after", ("pull", "after")),
    ]
    assert [t.input for t in tasks[:3]] == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert tasks[0].triggers == (TASKS,)


def test_sends_are_consumed_after_their_step() -> None:
    spec = fanout_spec()
    cp, _ = step(spec, start(spec, {"x": 2}))
    cp, ran = step(spec, cp)
    assert ran == ["worker", "worker", "after"]
    assert TASKS not in cp.channel_values
    assert cp.channel_values["log"] == ["after", "w0", "w1"]
    assert names(spec, cp) == []


def test_send_to_unknown_node_is_an_error() -> None:
    spec = chain_spec()
    cp = start(spec, {"x": 1})
    bad = Checkpoint(cp.id, cp.ts, {**cp.channel_values, TASKS: [Send("ghost", 1)]},
                     {**cp.channel_versions, TASKS: 1}, cp.versions_seen)
    with pytest.raises(InvalidUpdateError, match="ghost"):
        plan_tasks(spec, bad, "t", "")


# -- applying writes -----------------------------------------------------------


def test_writes_are_applied_in_path_order_whatever_order_given() -> None:
    spec = hand_spec()
    cp = start(spec, 0)
    writes = [
        TaskWrites("w", ("push", 1), (), [("log", ["push1"])]),
        TaskWrites("n2", ("pull", "n2"), ("go",), [("log", ["n2"])]),
        TaskWrites("w", ("push", 0), (), [("log", ["push0"])]),
        TaskWrites("n1", ("pull", "n1"), ("go",), [("log", ["n1"])]),
    ]
    expected = ["n1", "n2", "push0", "push1"]
    for order in (writes, writes[::-1], [writes[2], writes[0], writes[3], writes[1]]):
        new, updated = apply_writes(spec, cp, order, new_checkpoint_id())
        assert new.channel_values["log"] == expected
        assert "log" in updated


def test_push_index_orders_numerically() -> None:
    spec = hand_spec()
    cp = start(spec, 0)
    writes = [TaskWrites("w", ("push", i), (), [("log", [i])]) for i in (10, 2, 1)]
    new, _ = apply_writes(spec, cp, writes, new_checkpoint_id())
    assert new.channel_values["log"] == [1, 2, 10]


def test_two_writes_to_a_plain_key_name_the_key_and_nodes() -> None:
    spec = hand_spec()
    cp = start(spec, 0)
    writes = [
        TaskWrites("n2", ("pull", "n2"), ("go",), [("x", 2)]),
        TaskWrites("n1", ("pull", "n1"), ("go",), [("x", 1)]),
    ]
    with pytest.raises(InvalidUpdateError) as info:
        apply_writes(spec, cp, writes, new_checkpoint_id())
    msg = str(info.value)
    assert "'x'" in msg
    assert "n1" in msg and "n2" in msg


def test_one_task_writing_a_plain_key_twice_is_an_error_too() -> None:
    spec = hand_spec()
    cp = start(spec, 0)
    with pytest.raises(InvalidUpdateError, match="'x'"):
        apply_writes(spec, cp, [TaskWrites("n1", ("pull", "n1"), (), [("x", 1), ("x", 2)])],
                     new_checkpoint_id())


def test_writes_to_unknown_channels_are_ignored() -> None:
    spec = hand_spec()
    cp = start(spec, 0)
    new, updated = apply_writes(
        spec, cp, [TaskWrites("n1", ("pull", "n1"), (), [("nope", 1), (NO_WRITES, None)])],
        new_checkpoint_id(),
    )
    assert "nope" not in new.channel_values and NO_WRITES not in new.channel_values
    assert "nope" not in updated


def test_apply_writes_never_mutates_its_input() -> None:
    spec = fanout_spec()
    cp, _ = step(spec, start(spec, {"x": 2}))
    before = copy.deepcopy(cp)
    tasks = plan_tasks(spec, cp, "t", "")
    new, _ = apply_writes(spec, cp, run_tasks(spec, cp, tasks), new_checkpoint_id())
    assert cp == before
    assert new.channel_values is not cp.channel_values
    assert new.channel_versions is not cp.channel_versions
    assert new.versions_seen is not cp.versions_seen
    for node, seen in new.versions_seen.items():
        assert seen is not cp.versions_seen.get(node)
    assert new.channel_values != cp.channel_values


def test_apply_writes_marks_triggers_seen_at_their_versions() -> None:
    spec = hand_spec()
    cp = start(spec, 0)
    tasks = plan_tasks(spec, cp, "t", "")
    assert [t.name for t in tasks] == ["n1", "n2"]
    new, _ = apply_writes(spec, cp, run_tasks(spec, cp, tasks), new_checkpoint_id())
    assert new.versions_seen["n1"]["go"] == cp.channel_versions["go"]
    assert new.versions_seen["n2"]["go"] == cp.channel_versions["go"]
    assert plan_tasks(spec, new, "t", "") == []


def test_updated_set_lists_changed_channels_only() -> None:
    spec = hand_spec()
    cp = start(spec, 0)
    tasks = plan_tasks(spec, cp, "t", "")
    new, updated = apply_writes(spec, cp, run_tasks(spec, cp, tasks), new_checkpoint_id())
    assert updated == {"log", "go"}  # log written, go (ephemeral) cleared
    assert new.channel_versions["x"] == cp.channel_versions["x"]


# -- ephemeral channels --------------------------------------------------------


def test_branch_channels_are_cleared_after_the_step() -> None:
    spec = chain_spec()
    cp, _ = step(spec, start(spec, {"x": 1}))
    assert "branch:to:a" in cp.channel_values
    assert START not in cp.channel_values  # input consumed by the START step
    version = cp.channel_versions["branch:to:a"]
    cp, ran = step(spec, cp)
    assert ran == ["a"]
    assert "branch:to:a" not in cp.channel_values
    assert cp.channel_versions["branch:to:a"] > version
    assert "branch:to:b" in cp.channel_values


def test_ephemeral_not_cleared_by_a_step_with_no_triggered_tasks() -> None:
    # update_state-like write (no triggers) keeps the edge channels of the step
    spec = chain_spec()
    cp, _ = step(spec, start(spec, {"x": 1}))
    new, _ = apply_writes(spec, cp, [TaskWrites("a", ("pull", "a"), (), [("x", 5)])],
                          new_checkpoint_id())
    assert "branch:to:a" in new.channel_values
    assert names(spec, new) == ["a"]


# -- barrier (join) channels ---------------------------------------------------


def join_spec() -> GraphSpec:
    b = StateGraph(State)
    for n in ("a", "x", "b", "c"):
        b.add_node(n, _logger(n))
    b.add_edge(START, "a")
    b.add_edge(START, "x")
    b.add_edge("x", "b")  # b finishes one step after a
    b.add_edge(["a", "b"], "c")
    b.add_edge("c", END)
    return b.compile().spec


def test_join_waits_for_every_writer_and_resets_after_the_node_runs() -> None:
    spec = join_spec()
    join = "join:a+b:c"
    cp, _ = step(spec, start(spec, {"x": 0}))
    cp, ran = step(spec, cp)
    assert ran == ["a", "x"]
    assert cp.channel_values[join] == frozenset({"a"})
    assert "c" not in names(spec, cp)
    cp, ran = step(spec, cp)
    assert ran == ["b"]
    assert cp.channel_values[join] == frozenset({"a", "b"})
    assert names(spec, cp) == ["c"]
    cp, ran = step(spec, cp)
    assert ran == ["c"]
    assert cp.channel_values[join] == frozenset()
    assert names(spec, cp) == []
    assert cp.channel_values["log"] == ["a", "x", "b", "c"]


def test_join_reset_bumps_its_version() -> None:
    spec = join_spec()
    join = "join:a+b:c"
    cp = start(spec, {"x": 0})
    for _ in range(3):
        cp, _ = step(spec, cp)
    filled = cp.channel_versions[join]
    cp, _ = step(spec, cp)
    assert cp.channel_versions[join] > filled


# -- reducer defaults ----------------------------------------------------------


def test_read_values_gives_reducer_channels_their_empty_value() -> None:
    spec = chain_spec()
    values = read_values(spec, empty_checkpoint())
    assert values["log"] == []
    assert "x" not in values
    assert spec.channels["log"].kind == "reducer"
    assert spec.channels["x"].kind == "last"


def test_reducer_applies_to_default_on_first_write() -> None:
    class S(TypedDict):
        n: Annotated[int, operator.add]

    b = StateGraph(S)
    b.add_node("inc", lambda s: {"n": 5})
    b.add_edge(START, "inc")
    spec = b.compile().spec
    cp = start(spec, {})
    cp, _ = step(spec, cp)
    cp, ran = step(spec, cp)
    assert ran == ["inc"]
    assert cp.channel_values["n"] == 5  # int() + 5


def test_node_input_has_reducer_defaults() -> None:
    spec = chain_spec()
    cp, _ = step(spec, start(spec, {"x": 1}))
    (task,) = plan_tasks(spec, cp, "t", "")
    assert task.input == {"x": 1, "log": []}


# -- versions ------------------------------------------------------------------


def test_next_channel_version_counts_steps_in_high_bits() -> None:
    v1 = next_channel_version({}, "id1")
    assert v1 >> 32 == 1
    v2 = next_channel_version({"a": v1, "b": 3}, "id2")
    assert v2 >> 32 == 2
    assert v2 > v1
    assert next_channel_version({"a": v1}, "id1") == next_channel_version({"a": v1}, "id1")


def test_next_channel_version_salt_depends_on_checkpoint_id() -> None:
    base = {"a": 1 << 32}
    salts = {next_channel_version(base, f"id{i}") & 0xFFFFFFFF for i in range(20)}
    assert len(salts) == 20


def test_two_forks_of_one_checkpoint_get_different_versions() -> None:
    spec = hand_spec()
    cp = start(spec, 0)
    writes = run_tasks(spec, cp, plan_tasks(spec, cp, "t", ""))
    fork1, _ = apply_writes(spec, cp, writes, new_checkpoint_id())
    fork2, _ = apply_writes(spec, cp, writes, new_checkpoint_id())
    assert fork1.channel_values == fork2.channel_values
    assert fork1.channel_versions["log"] != fork2.channel_versions["log"]
    assert fork1.channel_versions["log"] >> 32 == fork2.channel_versions["log"] >> 32
    assert fork1.channel_versions["x"] == fork2.channel_versions["x"]  # not written


def test_versions_grow_monotonically_over_steps() -> None:
    spec = chain_spec()
    cp = start(spec, {"x": 1})
    previous = max(cp.channel_versions.values())
    for _ in range(3):
        cp, _ = step(spec, cp)
        current = max(cp.channel_versions.values())
        assert current > previous
        previous = current


# -- finished_writes -----------------------------------------------------------


def test_finished_writes_keeps_only_finished_tasks_of_this_plan() -> None:
    spec = hand_spec()
    cp = start(spec, 0)
    t1, t2 = plan_tasks(spec, cp, "t", "")
    pending = [
        PendingWrite(t1.id, "log", ["n1"]),
        PendingWrite(t1.id, "x", 9),
        PendingWrite(t2.id, ERROR, ValueError("boom")),
        PendingWrite(t2.id, INTERRUPT, []),
        PendingWrite(t2.id, RESUME, [1]),
        PendingWrite("someone-else", "log", ["stray"]),
    ]
    done = finished_writes([t1, t2], pending)
    assert done == {t1.id: [("log", ["n1"]), ("x", 9)]}


def test_finished_writes_counts_a_task_that_wrote_nothing() -> None:
    spec = hand_spec()
    cp = start(spec, 0)
    t1, _ = plan_tasks(spec, cp, "t", "")
    done = finished_writes([t1], [PendingWrite(t1.id, NO_WRITES, None)])
    assert done == {t1.id: [(NO_WRITES, None)]}


def test_resuming_with_finished_writes_matches_a_full_run() -> None:
    spec = hand_spec()
    cp = start(spec, 0)
    tasks = plan_tasks(spec, cp, "t", "")
    full = run_tasks(spec, cp, tasks)
    # n1 "crashed" after recording its writes; only n2 runs again
    pending = [PendingWrite(tasks[0].id, ch, v) for ch, v in full[0].writes]
    done = finished_writes(tasks, pending)
    replayed = [TaskWrites(tasks[0].name, tasks[0].path, tasks[0].triggers, done[tasks[0].id]),
                *run_tasks(spec, cp, tasks[1:])]
    a, _ = apply_writes(spec, cp, full, "same-id")
    b, _ = apply_writes(spec, cp, replayed, "same-id")
    assert a.channel_values == b.channel_values
    assert a.channel_versions == b.channel_versions


# -- should_interrupt ----------------------------------------------------------


def test_should_interrupt_on_named_and_star_breakpoints() -> None:
    spec = chain_spec()
    cp, _ = step(spec, start(spec, {"x": 1}))
    tasks = plan_tasks(spec, cp, "t", "")
    assert should_interrupt(cp, ["a"], tasks)
    assert should_interrupt(cp, "*", tasks)
    assert not should_interrupt(cp, ["b"], tasks)
    assert not should_interrupt(cp, [], tasks)


def test_should_interrupt_never_on_hidden_input_node() -> None:
    spec = chain_spec()
    cp = start(spec, {"x": 1})
    tasks = plan_tasks(spec, cp, "t", "")
    assert [t.name for t in tasks] == [START]
    assert not should_interrupt(cp, "*", tasks)
    assert not should_interrupt(cp, [START], tasks)


def test_should_interrupt_not_again_after_resume() -> None:
    spec = chain_spec()
    cp, _ = step(spec, start(spec, {"x": 1}))
    tasks = plan_tasks(spec, cp, "t", "")
    resumed = mark_resumed(cp)
    assert resumed.versions_seen[INTERRUPT_SEEN] == cp.channel_versions
    assert INTERRUPT_SEEN not in cp.versions_seen  # not mutated
    assert not should_interrupt(resumed, ["a"], tasks)
    # once the state moves on, the breakpoint can fire again
    nxt, _ = step(spec, resumed)
    assert should_interrupt(nxt, ["b"], plan_tasks(spec, nxt, "t", ""))


def test_interrupt_seen_entry_does_not_plan_a_node() -> None:
    spec = chain_spec()
    cp, _ = step(spec, start(spec, {"x": 1}))
    assert names(spec, mark_resumed(cp)) == names(spec, cp) == ["a"]
