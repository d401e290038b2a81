"""Graphs and the Celery app of the worker-crash tests (``celery -A celery_graphs worker``).

Workers get every setting from ``DURABLE_GRAPH_*`` variables (one key prefix and
one queue per test); the test process builds its own app with the same values
and compiles the builders below with ``CeleryExecutor``. Graph code reaches the
workers as a pickled blob whose functions point back into this module, which
the workers import.

Every node and ``@task`` body counts its executions: ``INCR {P}:n:<name>`` with
``P`` the prefix of the worker's environment, so the test reads how often each
piece of user code ran, across processes and crashes. Each pool process pushes
``"<pid>:<parent pid>"`` to ``{P}:pool`` when it starts (what
``tests/distributed/dg_workers.WorkerPool`` waits for).

Redis clients live in a per-process dict reached only through functions, so
cloudpickle (which pickles a ``@task`` body by value) never tries to pickle one.
"""

from __future__ import annotations

import operator
import os
import signal
import time
from typing import Annotated, Any, TypedDict

import redis
from celery.signals import worker_process_init

from durable_graph import END, START, StateGraph, task
from durable_graph.worker import create_app, runs
from durable_graph.worker.app import settings_of

CALLS = 6
"""``@task`` calls the ``gather`` node issues, one after the other."""
HOLD = 20.0
"""Seconds the first run of ``gather``'s last phase blocks (the test kills it meanwhile)."""
CHAIN = ("s0", "s1", "s2", "s3", "s4", "s5")
STEP_SLEEP = 0.5

_clients: dict[tuple[int, str], redis.Redis] = {}


def tune(app: Any) -> Any:
    """Keep the broker's unacked-message records under the queue's own keys.

    kombu's defaults (``unacked``, ...) are shared by every Celery app on the
    Redis; a test's killed worker leaves its unacked job there, so it stays under
    the test's prefix (and is deleted with it) instead.
    """
    queue = settings_of(app).queue
    app.conf.broker_transport_options = {
        **app.conf.broker_transport_options,
        "unacked_key": f"{queue}.unacked",
        "unacked_index_key": f"{queue}.unacked_index",
        "unacked_mutex_key": f"{queue}.unacked_mutex",
    }
    return app


app = tune(create_app())
"""The workers' app: ``DURABLE_GRAPH_REDIS_URL``/``_PREFIX``/``_QUEUE``/``_SECRET_KEY``."""


def client() -> redis.Redis:
    """This process's Redis client (forked pool processes make their own)."""
    url = os.environ.get("DURABLE_GRAPH_REDIS_URL", "redis://127.0.0.1:6379/0")
    key = (os.getpid(), url)
    found = _clients.get(key)
    if found is None:
        found = _clients[key] = redis.Redis.from_url(url, socket_timeout=10)
    return found


def key(name: str) -> str:
    """A test key under this worker's prefix."""
    return f"{os.environ['DURABLE_GRAPH_PREFIX']}:{name}"


def count(name: str) -> int:
    """Record one execution of ``name``; how many there were, this one included."""
    return int(client().incr(key(f"n:{name}")))


@worker_process_init.connect
def _register_pool_process(**_: Any) -> None:
    if "DURABLE_GRAPH_PREFIX" in os.environ:
        client().rpush(key("pool"), f"{os.getpid()}:{os.getppid()}")


# -- one node, CALLS sequential @task calls, then a last phase that blocks once --------


class GatherState(TypedDict, total=False):
    n: int
    results: list[int]
    total: int


@task
def work(i: int) -> int:
    count(f"call{i}")
    return i * 10


def gather(state: GatherState) -> dict[str, Any]:
    """Each call is committed before the next is issued; then block on the first pass."""
    count("gather")
    results = [work(i).result() for i in range(state["n"])]
    passes = count("final")
    client().rpush(key("final_pids"), f"{os.getpid()}:{os.getppid()}")
    if passes == 1:
        deadline = time.monotonic() + HOLD
        while time.monotonic() < deadline and not client().exists(key("release")):
            time.sleep(0.05)
    return {"results": results}


def total(state: GatherState) -> dict[str, Any]:
    count("total")
    return {"total": sum(state["results"])}


def build_gather() -> StateGraph:
    b = StateGraph(GatherState)
    b.add_node("gather", gather)
    b.add_node("total", total)
    b.add_edge(START, "gather")
    b.add_edge("gather", "total")
    b.add_edge("total", END)
    return b


# -- a chain of slow steps ---------------------------------------------------------------


class ChainState(TypedDict, total=False):
    value: int
    log: Annotated[list[str], operator.add]


def _link(name: str, k: int) -> Any:
    def node(state: ChainState) -> dict[str, Any]:
        count(name)
        time.sleep(STEP_SLEEP)
        return {"value": state["value"] * 2 + k, "log": [name]}

    node.__name__ = node.__qualname__ = f"link_{name}"
    return node


link_s0, link_s1, link_s2, link_s3, link_s4, link_s5 = (
    _link(name, k) for k, name in enumerate(CHAIN)
)
LINKS = (link_s0, link_s1, link_s2, link_s3, link_s4, link_s5)


def chain_value(start: int) -> int:
    """What the chain computes from ``value=start``."""
    value = start
    for k in range(len(CHAIN)):
        value = value * 2 + k
    return value


def build_chain() -> StateGraph:
    b = StateGraph(ChainState).add_sequence(list(zip(CHAIN, LINKS, strict=True)))
    b.add_edge(START, CHAIN[0])
    b.add_edge(CHAIN[-1], END)
    return b


# -- recovery with nothing but workers ----------------------------------------------------

SIBLING_CALL = 8.0
"""Seconds each sibling call of ``fanout`` runs."""
LONG_TASK = 15.0
"""Seconds the ``long`` task runs (past a 10 s visibility timeout)."""


def mark(name: str) -> None:
    """Record when ``name`` started (server time, s) in the list ``{P}:t:<name>``."""
    seconds, micros = client().time()
    client().rpush(key(f"t:{name}"), f"{seconds + micros / 1e6}:{os.getpid()}:{os.getppid()}")


class FanState(TypedDict, total=False):
    n: int
    results: list[int]


@task
def sibling(i: int) -> int:
    count(f"sibling{i}")
    mark(f"sibling{i}")
    time.sleep(SIBLING_CALL)
    return i


def fanout(state: FanState) -> dict[str, Any]:
    """Start ``n`` slow calls at once (they run on different workers), then gather them."""
    futures = [sibling(i) for i in range(state["n"])]
    return {"results": [f.result() for f in futures]}


def build_fanout() -> StateGraph:
    b = StateGraph(FanState)
    b.add_node("fanout", fanout)
    b.add_edge(START, "fanout")
    b.add_edge("fanout", END)
    return b


class IdState(TypedDict, total=False):
    id: str
    value: int
    log: Annotated[list[str], operator.add]


def crash(state: IdState) -> dict[str, Any]:
    """A node that kills its own process, as an OOM kill or a segfault would."""
    count("crash")
    os._exit(7)


def build_crash() -> StateGraph:
    b = StateGraph(IdState)
    b.add_node("crash", crash)
    b.add_edge(START, "crash")
    b.add_edge("crash", END)
    return b


@task
def long_task(x: int) -> int:
    count("long")
    mark("long")
    time.sleep(LONG_TASK)
    return x + 1


def call_long(state: IdState) -> dict[str, Any]:
    return {"value": long_task(state["value"]).result()}


def build_long() -> StateGraph:
    b = StateGraph(IdState)
    b.add_node("call_long", call_long)
    b.add_edge(START, "call_long")
    b.add_edge("call_long", END)
    return b


# -- many small runs: every body counts itself per thread; a body that starts after its
# -- result was committed counts a violation ----------------------------------------------


def per_thread(name: str, thread: str) -> int:
    """Executions of ``name`` in ``thread``, this one included (hash ``{P}:runs``)."""
    return int(client().hincrby(key("runs"), f"{thread}:{name}", 1))


def _committed(thread: str) -> Any:
    """The thread's latest checkpoint as this worker reads it (None before the first)."""
    from durable_graph.worker.app import WorkerRuntime

    saver = WorkerRuntime.of(app).saver(os.environ["DURABLE_GRAPH_PREFIX"])
    return saver.get_tuple({"configurable": {"thread_id": thread, "checkpoint_ns": ""}})


def _check_not_committed(name: str, thread: str, *, call: bool = False) -> None:
    saved = _committed(thread)
    if saved is None:
        return
    if call:
        done = any(w.channel == "__return__" and w.value[0] == name for w in saved.pending_writes)
    else:
        done = name in saved.checkpoint.channel_values.get("log", [])
    if done:
        client().rpush(key("violations"), f"{thread}:{name}")


def _small(name: str, k: int, pause: float) -> Any:
    def node(state: IdState) -> dict[str, Any]:
        _check_not_committed(name, state["id"])
        per_thread(name, state["id"])
        time.sleep(pause)
        return {"value": state["value"] * 3 + k, "log": [name]}

    node.__name__ = node.__qualname__ = f"small_{name}"
    return node


@task
def small_task(thread: str, value: int) -> int:
    _check_not_committed("small_task", thread, call=True)
    per_thread("small_task", thread)
    return value + 100


def small_call(state: IdState) -> dict[str, Any]:
    value = small_task(state["id"], state["value"]).result()
    per_thread("small_call_after", state["id"])  # past the replay: runs once
    return {"value": value, "log": ["small_call"]}


small_a = _small("small_a", 1, 0.0)
small_c = _small("small_c", 2, 0.0)
small_a_slow = _small("small_a", 1, 0.05)
small_c_slow = _small("small_c", 2, 0.05)


def small_value(start: int) -> int:
    """What ``build_small`` computes from ``value=start``."""
    return ((start * 3 + 1) + 100) * 3 + 2


def build_small(slow: bool = False) -> StateGraph:
    """a -> call (one @task) -> c: three steps, every body counted per thread."""
    b = StateGraph(IdState)
    b.add_node("small_a", small_a_slow if slow else small_a)
    b.add_node("small_call", small_call)
    b.add_node("small_c", small_c_slow if slow else small_c)
    b.add_edge(START, "small_a")
    b.add_edge("small_a", "small_call")
    b.add_edge("small_call", "small_c")
    b.add_edge("small_c", END)
    return b


# -- eager continuation: a chain whose middle step blocks once, run inline ---------------

EAGER_GATE = 60.0
"""Seconds the first execution of ``eager_b`` waits for the test to kill its process."""


def _eager_link(name: str, k: int, *, block: bool = False) -> Any:
    def node(state: IdState) -> dict[str, Any]:
        from celery import current_task

        from durable_graph import get_task_context

        _check_not_committed(name, state["id"])
        n = per_thread(name, state["id"])
        # inline: the Celery message this process runs is another step's job
        message = current_task.request.args or ["", ""]
        inline = message[1] != get_task_context().idempotency_key
        client().rpush(key(f"e:{name}"), f"{os.getpid()}:{os.getppid()}:{int(inline)}")
        if block and n == 1:
            deadline = time.monotonic() + EAGER_GATE
            while time.monotonic() < deadline:  # the test kills this process meanwhile
                time.sleep(0.05)
        return {"value": state["value"] * 3 + k, "log": [name]}

    node.__name__ = node.__qualname__ = f"eager_{name}"
    return node


eager_a = _eager_link("eager_a", 1)
eager_b = _eager_link("eager_b", 2, block=True)
eager_c = _eager_link("eager_c", 3)


def eager_value(start: int) -> int:
    """What ``build_eager`` computes from ``value=start``."""
    return ((start * 3 + 1) * 3 + 2) * 3 + 3


def _sequence(names: tuple[str, ...], links: tuple[Any, ...]) -> StateGraph:
    """START -> each of ``links`` (named ``names``) in turn -> END, on ``IdState``."""
    b = StateGraph(IdState).add_sequence(list(zip(names, links, strict=True)))
    b.add_edge(START, names[0])
    b.add_edge(names[-1], END)
    return b


def build_eager() -> StateGraph:
    """eager_a -> eager_b (blocks in its first execution) -> eager_c."""
    return _sequence(("eager_a", "eager_b", "eager_c"), (eager_a, eager_b, eager_c))


# -- a worker that dies between committing a step and ending its run ---------------------


def die_ending(thread: str, status: str) -> None:
    """Make the worker process that ends ``thread``'s run as ``status`` SIGKILL itself
    first, once: the step before is committed, the run's end is not recorded."""
    client().set(key(f"die-ending:{thread}"), status)


def _dying_end_run(end_run: Any) -> Any:
    def end(rc: Any, nxt: Any) -> None:
        flag = key(f"die-ending:{rc.thread_id}")
        if client().get(flag) == nxt.status.encode() and client().delete(flag):
            os.kill(os.getpid(), signal.SIGKILL)
        end_run(rc, nxt)

    return end


@worker_process_init.connect
def _die_ending_here(**_: Any) -> None:
    """In worker pool processes only: a test process importing this module keeps its own."""
    runs.end_run = _dying_end_run(runs.end_run)


def _pause_link(name: str, k: int, *, gate: bool = False) -> Any:
    def node(state: IdState) -> dict[str, Any]:
        count(name)
        mark(name)
        deadline = time.monotonic() + EAGER_GATE
        while gate and time.monotonic() < deadline and not client().exists(key("release")):
            time.sleep(0.02)  # until the test has asked the run to stop
        return {"value": state["value"] * 3 + k, "log": [name]}

    node.__name__ = node.__qualname__ = f"pause_{name}"
    return node


pause_a, pause_b, pause_c = (_pause_link("pause_a", 1, gate=True), _pause_link("pause_b", 2),
                             _pause_link("pause_c", 3))


def build_pause() -> StateGraph:
    """pause_a (waits for ``{P}:release``) -> pause_b -> pause_c."""
    return _sequence(("pause_a", "pause_b", "pause_c"), (pause_a, pause_b, pause_c))


# -- one node starting BUNDLE_CALLS calls at once: they travel in bundles -----------------

BUNDLE_CALLS = 16
"""Calls ``bundled`` starts before it waits on any: four bundles of four (see
``worker/bundles``), the first of them calls 0, 4, 8 and 12."""
BUNDLE_BLOCKS = 8
"""The call whose first run blocks (the third of its bundle: the test kills it there)."""


@task
def bundle_work(i: int) -> int:
    runs = count(f"bundle{i}")
    client().rpush(key(f"t:bundle{i}"), f"{os.getpid()}:{os.getppid()}")
    if i == BUNDLE_BLOCKS and runs == 1:
        deadline = time.monotonic() + HOLD
        while time.monotonic() < deadline and not client().exists(key("release")):
            time.sleep(0.05)
    return i * 10


def bundled(state: GatherState) -> dict[str, Any]:
    futures = [bundle_work(i) for i in range(state["n"])]
    return {"results": [f.result() for f in futures]}


def build_bundled() -> StateGraph:
    b = StateGraph(GatherState)
    b.add_node("bundled", bundled)
    b.add_edge(START, "bundled")
    b.add_edge("bundled", END)
    return b


# -- a wide fan-out whose publishes a kill interrupts (RabbitMQ's confirm window) ---------

WIDE = 300
"""``@task`` calls the ``wide`` node publishes at once (several confirm windows' worth)."""


@task
def wide_call(thread: str, i: int) -> int:
    _check_not_committed(f"wide{i}", thread, call=True)
    per_thread(f"wide{i}", thread)
    count("wide_call")
    return i


def wide(state: IdState) -> dict[str, Any]:
    """Publish ``WIDE`` calls at once, then gather them; records its pid the first time."""
    client().rpush(key("wide_pids"), f"{os.getpid()}:{os.getppid()}")
    futures = [wide_call(state["id"], i) for i in range(WIDE)]
    return {"value": sum(f.result() for f in futures), "log": ["wide"]}


def build_wide() -> StateGraph:
    b = StateGraph(IdState)
    b.add_node("wide", wide)
    b.add_edge(START, "wide")
    b.add_edge("wide", END)
    return b
