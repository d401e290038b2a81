"""Graphs the distributed tests run, importable by the test process and by the workers.

Configuration comes from environment variables the test fixtures set for both
(``DG_TEST_REDIS_URL``, ``DG_TEST_PREFIX``, ``DG_TEST_QUEUE``, ``DG_TEST_SECRET``):
the module builds the Celery ``app`` (``celery -A graphs_fixture worker`` runs it),
one RedisSaver under the test prefix and one ``CeleryExecutor``, and compiles every
graph twice over: ``build_*()`` returns the builder so a test can compile the same
graph embedded (``InMemorySaver``, no executor) and compare.

Each node and ``@task`` body records where it ran (see ``dg_trace``): ``RPUSH
{P}:trace:{tag}`` with ``"<host>:<pid>:<name>"`` (``tag`` is the thread id), so a
test can tell which worker process ran what; every ``square`` call also increments
``{P}:count:{tag}:{i}``. The pool process of every worker pushes ``"<pid>:<parent
pid>"`` to ``{P}:pool`` when it starts, so the test maps pids to worker subprocesses.
"""

from __future__ import annotations

import operator
import os
import threading
import time
from typing import Annotated, Any, TypedDict

import dg_trace
from celery.signals import worker_process_init
from langchain_core.messages import AIMessage

from durable_graph import (
    END,
    START,
    MessagesState,
    RedisSaver,
    RemoveMessage,
    RetryPolicy,
    StateGraph,
    add_messages,
    entrypoint,
    interrupt,
    task,
)
from durable_graph.worker import CeleryExecutor, create_app

REDIS_URL = os.environ.get("DG_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
PREFIX = os.environ.get("DG_TEST_PREFIX", "dg-dist-test")
QUEUE = os.environ.get("DG_TEST_QUEUE", "dg-dist-test")
SECRET = os.environ.get("DG_TEST_SECRET", "not-a-secret-only-for-tests")
LEASE_TTL = 5.0
FAN_SLEEP = 0.3
SLOW_SLEEP = 1.0
SLOW_SEND = 1.5
CALLS = 100

app = create_app(REDIS_URL, prefix=PREFIX, queue=QUEUE, secret_key=SECRET, lease_ttl=LEASE_TTL)
saver = RedisSaver.from_url(REDIS_URL, prefix=PREFIX)
executor = CeleryExecutor(app)

POOL_KEY = f"{PREFIX}:pool"


def trace(tag: str, name: str) -> None:
    """Record that ``name`` ran in this process for run ``tag``."""
    dg_trace.trace(REDIS_URL, PREFIX, tag, name)


def thread_of(config: dict[str, Any]) -> str:
    return str(config["configurable"]["thread_id"])


@worker_process_init.connect
def _register_pool_process(**_: Any) -> None:
    dg_trace.client(REDIS_URL).rpush(POOL_KEY, f"{os.getpid()}:{os.getppid()}")


# -- fan-out: prep -> (a, b, c) -> join -------------------------------------------


class FanState(TypedDict, total=False):
    x: int
    log: Annotated[list[str], operator.add]
    total: int


def prep(state: FanState, config: dict[str, Any]) -> dict[str, Any]:
    trace(thread_of(config), "prep")
    return {"x": state["x"] + 1, "log": ["prep"]}


def _branch(name: str, factor: int) -> Any:
    def node(state: FanState, config: dict[str, Any]) -> dict[str, Any]:
        trace(thread_of(config), name)
        time.sleep(FAN_SLEEP)
        return {"log": [f"{name}={state['x'] * factor}"]}

    node.__name__ = name
    return node


fan_a, fan_b, fan_c = _branch("a", 2), _branch("b", 3), _branch("c", 5)


def join(state: FanState, config: dict[str, Any]) -> dict[str, Any]:
    trace(thread_of(config), "join")
    total = sum(int(item.split("=")[1]) for item in state["log"] if "=" in item)
    return {"total": total}


def build_fanout() -> StateGraph:
    b = StateGraph(FanState)
    b.add_node("prep", prep)
    b.add_node("a", fan_a)
    b.add_node("b", fan_b)
    b.add_node("c", fan_c)
    b.add_node("join", join)
    b.add_edge(START, "prep")
    for name in ("a", "b", "c"):
        b.add_edge("prep", name)
    b.add_edge(["a", "b", "c"], "join")
    b.add_edge("join", END)
    return b


# -- the fan-out with a committer slowed after its commit ------------------------------


class SlowToSend:
    """A value whose pickling sleeps ``SLOW_SEND`` s in the process that made it, and
    only there: that worker is slowed wherever it sends the value (its writes, its
    commit, the events it streams), while the workers it hands the run to are not."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def __reduce__(self) -> tuple[Any, ...]:
        if os.getpid() == self.pid:
            time.sleep(SLOW_SEND)
        return (SlowToSend, (self.pid,))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SlowToSend) and other.pid == self.pid

    def __hash__(self) -> int:
        return hash(self.pid)


class SlowFanState(FanState, total=False):
    slow: SlowToSend


def slow_prep(state: SlowFanState, config: dict[str, Any]) -> dict[str, Any]:
    return {**prep(state, config), "slow": SlowToSend(os.getpid())}


def build_slow_fanout() -> StateGraph:
    """``build_fanout`` whose first node's worker is slow to send what it made."""
    b = StateGraph(SlowFanState)
    b.add_node("prep", slow_prep)
    for name, node in (("a", fan_a), ("b", fan_b), ("c", fan_c)):
        b.add_node(name, node)
        b.add_edge("prep", name)
    b.add_node("join", join)
    b.add_edge(START, "prep")
    b.add_edge(["a", "b", "c"], "join")
    b.add_edge("join", END)
    return b


# -- one node, 100 @task calls -------------------------------------------------------


class CallState(TypedDict, total=False):
    n: int
    squares: list[int]
    total: int


@task
def square(tag: str, i: int) -> int:
    dg_trace.count(REDIS_URL, PREFIX, tag, i)
    trace(tag, f"square{i}")
    return i * i


def many(state: CallState, config: dict[str, Any]) -> dict[str, Any]:
    tag = thread_of(config)
    futures = [square(tag, i) for i in range(state["n"])]
    squares = [f.result() for f in futures]
    return {"squares": squares, "total": sum(squares)}


def build_calls(node: Any = many) -> StateGraph:
    b = StateGraph(CallState)
    b.add_node("many", node)
    b.add_edge(START, "many")
    b.add_edge("many", END)
    return b


EARLY_WAIT = 10.0
"""Seconds ``many_early`` waits for its first call to run before it waits on any."""


def early_key(tag: str) -> str:
    """Whether the first execution of ``many_early`` of run ``tag`` saw a call run."""
    return f"{PREFIX}:early:{tag}"


def _start_until_one_ran(
    call: Any, state: CallState, config: dict[str, Any]
) -> tuple[str, list[Any], bool]:
    """Start ``call(tag, i)`` for each i, then wait (up to ``EARLY_WAIT``) for call 0 to
    have run, which it can only if calls are sent while the node runs on: (tag,
    futures, whether it ran)."""
    tag = thread_of(config)
    futures = [call(tag, i) for i in range(state["n"])]
    client, ran = dg_trace.client(REDIS_URL), dg_trace.count_key(PREFIX, tag, 0)
    deadline = time.monotonic() + EARLY_WAIT
    while not client.exists(ran) and time.monotonic() < deadline:
        time.sleep(0.02)
    return tag, futures, bool(client.exists(ran))


def many_early(state: CallState, config: dict[str, Any]) -> dict[str, Any]:
    """``many``, but before waiting on a future it waits for call 0 to have run: which it
    can only if calls are sent while the node still starts them or runs on."""
    tag, futures, seen = _start_until_one_ran(square, state, config)
    client = dg_trace.client(REDIS_URL)
    client.set(early_key(tag), "1" if seen else "0", nx=True)  # the first run's
    squares = [f.result() for f in futures]
    return {"squares": squares, "total": sum(squares)}


SLOW_CALL = 3.0
"""Seconds the first two calls of ``many_dying`` take (the others are quick): they still
run when the caller's copy has sent them again and the quick ones are done."""


@task
def slow_square(tag: str, i: int) -> int:
    dg_trace.count(REDIS_URL, PREFIX, tag, i)
    time.sleep(SLOW_CALL if i < 2 else 0.01)
    return i * i


def many_dying(state: CallState, config: dict[str, Any]) -> dict[str, Any]:
    """Starts slow calls; its first execution kills its process once a call ran, so
    calls sent before it died are still queued or running when its copy sends them."""
    tag, futures, _ = _start_until_one_ran(slow_square, state, config)
    if dg_trace.client(REDIS_URL).set(f"{PREFIX}:died:{tag}", "1", nx=True):
        os._exit(137)  # as an OOM kill would
    squares = [f.result() for f in futures]
    return {"squares": squares, "total": sum(squares)}


# -- a chain: s0 -> s1 -> s2 -> s3 ---------------------------------------------------


class ChainState(TypedDict, total=False):
    value: int
    log: Annotated[list[str], operator.add]


CHAIN = ("s0", "s1", "s2", "s3")


def _link(name: str, k: int) -> Any:
    def node(state: ChainState, config: dict[str, Any], writer: Any) -> dict[str, Any]:
        trace(thread_of(config), name)
        writer({"node": name, "seen": state["value"]})
        return {"value": state["value"] * 2 + k, "log": [name]}

    node.__name__ = name
    return node


links = [_link(name, k) for k, name in enumerate(CHAIN)]


def build_chain() -> StateGraph:
    b = StateGraph(ChainState).add_sequence(list(zip(CHAIN, links, strict=True)))
    b.add_edge(START, CHAIN[0])
    b.add_edge(CHAIN[-1], END)
    return b


# -- approval: draft -> approve (interrupt) -> publish -------------------------------


class ApprovalState(TypedDict, total=False):
    draft: str
    decision: str
    reviewer: str
    published: str


def draft(state: ApprovalState, config: dict[str, Any]) -> dict[str, Any]:
    trace(thread_of(config), "draft")
    return {"draft": state["draft"].upper()}


def approve(state: ApprovalState, config: dict[str, Any]) -> dict[str, Any]:
    trace(thread_of(config), "approve")
    answer = interrupt("q")
    return {"decision": f"{answer}:{state['draft']}"}


def publish(state: ApprovalState, config: dict[str, Any]) -> dict[str, Any]:
    trace(thread_of(config), "publish")
    return {"published": f"{state['decision']} by {state.get('reviewer', '?')}"}


def build_approval() -> StateGraph:
    b = StateGraph(ApprovalState)
    b.add_node("draft", draft)
    b.add_node("approve", approve)
    b.add_node("publish", publish)
    b.add_edge(START, "draft")
    b.add_edge("draft", "approve")
    b.add_edge("approve", "publish")
    b.add_edge("publish", END)
    return b


# -- slow: one node that sleeps -------------------------------------------------------


class SlowState(TypedDict, total=False):
    value: int
    done: bool


def slow(state: SlowState, config: dict[str, Any]) -> dict[str, Any]:
    trace(thread_of(config), "slow")
    time.sleep(SLOW_SLEEP)
    return {"value": state["value"] + 1, "done": True}


def build_slow() -> StateGraph:
    b = StateGraph(SlowState)
    b.add_node("slow", slow)
    b.add_edge(START, "slow")
    b.add_edge("slow", END)
    return b


# -- boom: the second node raises -----------------------------------------------------


class BoomState(TypedDict, total=False):
    value: int


BOOM_MESSAGE = "boom: value 7 is not allowed"


def before_boom(state: BoomState, config: dict[str, Any]) -> dict[str, Any]:
    trace(thread_of(config), "before_boom")
    return {"value": state["value"] + 1}


def boom(state: BoomState, config: dict[str, Any]) -> dict[str, Any]:
    trace(thread_of(config), "boom")
    if state["value"] == 7:
        raise ValueError(BOOM_MESSAGE)
    return {"value": 0}


def build_boom() -> StateGraph:
    b = StateGraph(BoomState)
    b.add_node("before_boom", before_boom)
    b.add_node("boom", boom)
    b.add_edge(START, "before_boom")
    b.add_edge("before_boom", "boom")
    b.add_edge("boom", END)
    return b


# -- locked: a node using a module-level lock (which cannot be pickled) ------------------

COUNTER_LOCK = threading.Lock()


class LockedState(TypedDict, total=False):
    value: int


def locked(state: LockedState, config: dict[str, Any]) -> dict[str, Any]:
    trace(thread_of(config), "locked")
    with COUNTER_LOCK:
        return {"value": state["value"] + 1}


def build_locked() -> StateGraph:
    b = StateGraph(LockedState)
    b.add_node("locked", locked)
    b.add_edge(START, "locked")
    b.add_edge("locked", END)
    return b


# -- chat: bot -> review (interrupt; edits and deletes messages by id) -----------------
# ``reviews`` is private: only chat_review's input schema declares it.


class ReviewInput(TypedDict):
    messages: Annotated[list[Any], add_messages]
    reviews: int


def chat_bot(state: MessagesState, config: dict[str, Any]) -> dict[str, Any]:
    trace(thread_of(config), "chat_bot")
    last = state["messages"][-1].content
    return {"messages": [AIMessage(content=f"answer to {last}")], "reviews": 0,
            "undeclared": "ignored with a warning"}


def chat_review(state: ReviewInput, config: dict[str, Any]) -> dict[str, Any]:
    trace(thread_of(config), "chat_review")
    verdict = interrupt({"review": state["messages"][-1].content})
    first, last = state["messages"][0], state["messages"][-1]
    return {"messages": [RemoveMessage(id=first.id),
                         {"role": "assistant", "content": f"{verdict}: {last.content}",
                          "id": last.id}],
            "reviews": state["reviews"] + 1}


def build_chat() -> StateGraph:
    b = StateGraph(MessagesState)
    b.add_node("chat_bot", chat_bot)
    b.add_node("chat_review", chat_review)
    b.add_edge(START, "chat_bot")
    b.add_edge("chat_bot", "chat_review")
    return b


def distributed(builder: StateGraph) -> Any:
    return builder.compile(checkpointer=saver, executor=executor)


fanout = distributed(build_fanout())
slow_fanout = distributed(build_slow_fanout())
calls = distributed(build_calls())
early_calls = distributed(build_calls(many_early))
dying_calls = distributed(build_calls(many_dying))
chain = distributed(build_chain())
approval = distributed(build_approval())
slow_graph = distributed(build_slow())
boom_graph = distributed(build_boom())
locked_graph = distributed(build_locked())
chat = distributed(build_chat())


# -- an interrupt inside a @task, then one in the entrypoint ---------------------------


@task
def ask_in_call(question: str) -> str:
    trace("ask", question)
    return str(interrupt(question))


def two_questions(x: int) -> str:
    inner = ask_in_call("inner?").result()
    outer = interrupt("outer?")
    return f"{inner}+{outer}"


def build_questions(checkpointer: Any, on: Any = None) -> Any:
    """The functional workflow, on ``on`` (an executor) or embedded."""
    return entrypoint(checkpointer=checkpointer, executor=on)(two_questions)


questions = build_questions(saver, executor)


# -- a node retried under its policy re-runs the call that failed ---------------------


@task
def flaky_call(key: str) -> str:
    """Fails on its first execution for ``key``, succeeds after (counted in Redis)."""
    runs = dg_trace.client(REDIS_URL).incr(f"{PREFIX}:flaky:{key}")
    if runs == 1:
        raise ConnectionError(f"flaky {key} failed once")
    return f"ok after {runs}"


def retried(key: str) -> str:
    return flaky_call(key).result()


def build_retried(checkpointer: Any, on: Any = None) -> Any:
    """A workflow whose only retry policy is the entrypoint's."""
    return entrypoint(checkpointer=checkpointer, executor=on,
                      retry_policy=RetryPolicy(max_attempts=3, initial_interval=0.01))(retried)


retried_flow = build_retried(saver, executor)


@task
def broken_call(key: str) -> str:
    dg_trace.client(REDIS_URL).incr(f"{PREFIX}:broken:{key}")
    raise ConnectionError(f"broken {key}")


def always_broken(key: str) -> str:
    return broken_call(key).result()


broken_flow = entrypoint(checkpointer=saver, executor=executor,
                         retry_policy=RetryPolicy(max_attempts=3, initial_interval=0.01))(
    always_broken)


# -- a node whose task calls change between its first run and its replay --------------


@task
def first_pick(key: str) -> str:
    return f"first {key}"


@task
def second_pick(key: str) -> str:
    return f"second {key}"


def drifting(key: str) -> str:
    """Calls ``first_pick`` on its first execution and ``second_pick`` on its replay."""
    runs = dg_trace.client(REDIS_URL).incr(f"{PREFIX}:drift:{key}")
    pick = first_pick if runs == 1 else second_pick
    return pick(key).result()


drifting_flow = entrypoint(checkpointer=saver, executor=executor)(drifting)
