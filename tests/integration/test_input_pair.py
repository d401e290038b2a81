"""A run's input checkpoint and its first step's go to the saver together (``put_pair``).

On Redis that is one round trip and one ``PUT_STEP`` script call where they were two
``PUT`` calls; the stored history is the one the two puts leave (compared with a saver
that sends them apart, the base ``put_pair``), under every durability, on resume, and
when applying the input fails. On a real Redis (db 11 unless
``DURABLE_GRAPH_TEST_REDIS_URL`` says otherwise), each test under its own ``pp_`` prefix;
the default ``put_pair`` on memory and SQLite.
"""

from __future__ import annotations

import operator
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, TypedDict

import pytest
import redis

from durable_graph import END, START, Command, InMemorySaver, StateGraph, entrypoint, interrupt
from durable_graph.errors import CommitConflictError
from durable_graph.store.base import (
    EXTENDS_LATEST,
    BaseCheckpointSaver,
    CheckpointMetadata,
    PutArgs,
    checkpoint_config,
    empty_checkpoint,
    new_checkpoint_id,
)
from durable_graph.store.redis import RedisSaver
from durable_graph.store.sqlite import SqliteSaver
from tests.keys_left import delete_prefix

URL = os.environ.get("DURABLE_GRAPH_TEST_REDIS_URL", "redis://127.0.0.1:6379/11")


class Sent(redis.Connection):
    """Records every command its connections send (name and first argument, read back
    from the bytes written), and each write to the socket (a round trip)."""

    commands: list[tuple[bytes, ...]] = []
    writes = 0

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        chunks = [command] if isinstance(command, (str, bytes)) else command
        data = b"".join(c.encode() if isinstance(c, str) else bytes(c) for c in chunks)
        type(self).commands.extend(_heads(data))
        type(self).writes += 1
        super().send_packed_command(command, check_health)


def _heads(data: bytes) -> list[tuple[bytes, ...]]:
    """The first two arguments of each RESP command in ``data``."""
    out, at = [], 0
    while at < len(data):
        end = data.index(b"\r\n", at)
        n, at = int(data[at + 1:end]), end + 2
        args = []
        for _ in range(n):
            end = data.index(b"\r\n", at)
            size = int(data[at + 1:end])
            args.append(data[end + 2:end + 2 + size])
            at = end + 2 + size + 2
        out.append(tuple(args[:2]))
    return out


class Apart(RedisSaver):
    """Sends the pair as two puts, as before ``put_pair`` (the base method)."""

    put_pair = BaseCheckpointSaver.put_pair


@pytest.fixture
def make_redis() -> Iterator[Callable[..., RedisSaver]]:
    made: list[RedisSaver] = []

    def make(kind: type[RedisSaver] = RedisSaver) -> RedisSaver:
        counter = type("Counter", (Sent,), {"commands": [], "writes": 0})
        saver = kind.from_url(URL, prefix=f"pp_{uuid.uuid4().hex[:12]}",
                              connection_class=counter)
        made.append(saver)
        return saver

    yield make
    for saver in made:
        delete_prefix(URL, saver.prefix)
        saver.close()


def sent(saver: RedisSaver) -> type[Sent]:
    kind: type[Sent] = saver.client.connection_pool.connection_class  # type: ignore[union-attr]
    return kind


def script_calls(saver: RedisSaver, name: str) -> int:
    sha = saver._conn.script(name).sha.encode()
    return sum(1 for c in sent(saver).commands
               if c[0].upper() == b"EVALSHA" and c[1:] == (sha,))


class S(TypedDict):
    msgs: Annotated[list[str], operator.add]


def chain(saver: BaseCheckpointSaver, *, ask: bool = False) -> Any:
    def a(state: S) -> dict[str, Any]:
        return {"msgs": ["a"]}

    def b(state: S) -> dict[str, Any]:
        answer = interrupt("why?") if ask else "b"
        return {"msgs": [str(answer)]}

    g = StateGraph(S)
    for node in (a, b):
        g.add_node(node.__name__, node)
    for edge in ((START, "a"), ("a", "b"), ("b", END)):
        g.add_edge(*edge)
    return g.compile(checkpointer=saver)


def history(app: Any, config: dict[str, Any]) -> list[tuple[Any, ...]]:
    """The thread's history with ids as positions: values, metadata, next, parent, writes."""
    snaps = list(app.get_state_history(config))
    pos = {s.config["configurable"]["checkpoint_id"]: i for i, s in enumerate(snaps)}
    out = []
    for s in snaps:
        parent = s.parent_config["configurable"]["checkpoint_id"] if s.parent_config else None
        meta = {k: v for k, v in s.metadata.items() if k != "parents"}
        out.append((s.values, meta, s.next, pos.get(parent, parent),
                    sorted((t.name, repr(t.error), len(t.interrupts)) for t in s.tasks)))
    return out


def turns(saver: BaseCheckpointSaver, durability: str) -> list[tuple[Any, ...]]:
    app = chain(saver)
    config = {"configurable": {"thread_id": "t"}}
    assert app.invoke({"msgs": ["x"]}, config, durability=durability)["msgs"] == ["x", "a", "b"]
    assert app.invoke({"msgs": ["y"]}, config, durability=durability)["msgs"] == [
        "x", "a", "b", "y", "a", "b"]
    return history(app, config)


@pytest.mark.redis
def test_an_invoke_sends_the_input_with_the_first_step(
    make_redis: Callable[..., RedisSaver],
) -> None:
    """One PUT_STEP for input + step 0, one PUT per later step, one round trip fewer."""
    pair, apart = make_redis(), make_redis(Apart)
    counts = {}
    for saver in (pair, apart):
        app = chain(saver)
        app.invoke({"msgs": ["w"]}, {"configurable": {"thread_id": "warm"}})
        sent(saver).commands, sent(saver).writes = [], 0  # scripts known by now
        app.invoke({"msgs": ["x"]}, {"configurable": {"thread_id": "t"}})
        app.invoke({"msgs": ["y"]}, {"configurable": {"thread_id": "t"}})  # thread exists
        counts[saver.prefix] = (script_calls(saver, "PUT_STEP"), script_calls(saver, "PUT"),
                                sent(saver).writes)
    put_step, put, writes = counts[pair.prefix]
    a_step, a_put, a_writes = counts[apart.prefix]
    assert (a_step, a_put) == (0, 2 * 4)  # input, steps 0, 1, 2: per invoke
    assert (put_step, put) == (2, 2 * 2)
    assert writes == a_writes - 2
    # no MULTI for the script alone (a producer's first job still sends one)
    assert not [c for c in sent(pair).commands if c[0].upper() == b"MULTI"]


@pytest.mark.redis
@pytest.mark.parametrize("durability", ["sync", "async", "exit"])
def test_same_history_as_two_puts(
    make_redis: Callable[..., RedisSaver], durability: str,
) -> None:
    got = turns(make_redis(), durability)
    assert got == turns(make_redis(Apart), durability)
    assert got == turns(InMemorySaver(), durability)
    if durability != "exit":
        sources = [(m["source"], m["step"]) for _, m, *_ in got]
        assert sources == [("loop", 6), ("loop", 5), ("loop", 4), ("input", 3),
                           ("loop", 2), ("loop", 1), ("loop", 0), ("input", -1)]


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_default_pair_is_two_puts(kind: str, tmp_path: Path) -> None:
    def make() -> BaseCheckpointSaver:
        if kind == "memory":
            return InMemorySaver()
        return SqliteSaver(tmp_path / f"{uuid.uuid4().hex}.db")

    class Counted(InMemorySaver):
        puts = 0

        def put(self, *args: Any, **kw: Any) -> dict[str, Any]:
            type(self).puts += 1
            return super().put(*args, **kw)

    for durability in ("sync", "async", "exit"):
        got = turns(make(), durability)
        assert got == turns(InMemorySaver(), durability)
        assert [m["source"] for _, m, *_ in got][-1] == ("loop" if durability == "exit"
                                                          else "input")
    counted = Counted()
    turns(counted, "sync")
    assert Counted.puts == 8


@pytest.mark.redis
def test_resume_with_command(make_redis: Callable[..., RedisSaver]) -> None:
    """A resume makes no input checkpoint: nothing to pair, the run goes on as before."""
    results = []
    for saver in (make_redis(), make_redis(Apart)):
        app = chain(saver, ask=True)
        config = {"configurable": {"thread_id": "t"}}
        out = app.invoke({"msgs": ["x"]}, config)
        assert out["__interrupt__"][0].value == "why?"
        before = script_calls(saver, "PUT_STEP")
        assert app.invoke(Command(resume="because"), config)["msgs"] == ["x", "a", "because"]
        assert script_calls(saver, "PUT_STEP") == before
        results.append(history(app, config))
    assert results[0] == results[1]
    assert [(m["source"], m["step"]) for _, m, *_ in results[0]] == [
        ("loop", 2), ("loop", 1), ("loop", 0), ("input", -1)]


def raising(left: list[str], right: list[str]) -> list[str]:
    if "bad" in right:
        raise ValueError("bad input")
    return left + right


class R(TypedDict):
    msgs: Annotated[list[str], raising]


@pytest.mark.redis
@pytest.mark.parametrize("durability", ["sync", "async", "exit"])
def test_input_failing_to_apply_keeps_its_checkpoint(
    make_redis: Callable[..., RedisSaver], durability: str,
) -> None:
    """A reducer raising on the input: the input checkpoint (and the input node's writes)
    are stored, as when it was stored on its own first."""
    results = []
    for saver in (make_redis(), make_redis(Apart), InMemorySaver()):
        g = StateGraph(R)
        g.add_node("a", lambda s: {"msgs": ["a"]})
        g.add_edge(START, "a")
        g.add_edge("a", END)
        app = g.compile(checkpointer=saver)
        config = {"configurable": {"thread_id": "t"}}
        app.invoke({"msgs": ["x"]}, config, durability=durability)
        with pytest.raises(ValueError, match="bad input"):
            app.invoke({"msgs": ["bad"]}, config, durability=durability)
        results.append(history(app, config))
    assert results[0] == results[1] == results[2]
    newest = results[0][0]
    assert newest[1]["source"] == "input" and newest[2] == ("__start__",)


@pytest.mark.redis
def test_sync_stores_the_input_before_a_user_node_runs(
    make_redis: Callable[..., RedisSaver],
) -> None:
    """An entrypoint is the user's code at step 0: its input is stored before it runs;
    with the ``checkpoints`` stream under ``sync`` the input's is stored alone too."""
    saver = make_redis()
    seen: list[list[str]] = []

    @entrypoint(checkpointer=saver)
    def flow(x: int) -> int:
        seen.append([t.metadata["source"] for t in saver.list(
            {"configurable": {"thread_id": "e"}})])
        return x + 1

    assert flow.invoke(1, {"configurable": {"thread_id": "e"}}, durability="sync") == 2
    assert seen == [["input"]]
    assert script_calls(saver, "PUT_STEP") == 0

    app = chain(saver)
    config = {"configurable": {"thread_id": "c"}}
    events = list(app.stream({"msgs": ["x"]}, config, stream_mode="checkpoints",
                             durability="sync"))
    assert [e["metadata"]["source"] for e in events] == ["input", "loop", "loop", "loop"]
    assert script_calls(saver, "PUT_STEP") == 0
    list(app.stream({"msgs": ["y"]}, config, stream_mode="checkpoints", durability="async"))
    assert script_calls(saver, "PUT_STEP") == 1


def _put(saver: BaseCheckpointSaver, parent: str | None, x: int) -> PutArgs:
    cp = empty_checkpoint()
    cp = type(cp)(new_checkpoint_id(), cp.ts, {"x": x}, {"x": x + 1}, {}, cp.v)
    config = checkpoint_config("t", "", parent) if parent else checkpoint_config("t", "", "")
    config["configurable"][EXTENDS_LATEST] = True
    if not parent:
        del config["configurable"]["checkpoint_id"]
    meta: CheckpointMetadata = {"source": "loop", "step": x, "parents": {}}
    return (config, cp, meta, {"x": x + 1})


@pytest.mark.redis
def test_first_refused_raises_as_put_and_stores_nothing(
    make_redis: Callable[..., RedisSaver],
) -> None:
    """The first put refused ('gone': the checkpoint it extends was deleted): the error
    is put's own, and the second, which extends the first, is not stored."""
    saver = make_redis()
    base = _put(saver, None, 0)
    saver.put(*base)
    saver.delete_thread("t")
    first = _put(saver, base[1].id, 1)
    second = _put(saver, first[1].id, 2)
    with pytest.raises(CommitConflictError) as alone:
        saver.put(*first)
    with pytest.raises(CommitConflictError) as paired:
        saver.put_pair(first, second)
    assert str(paired.value) == str(alone.value)
    assert saver.get_tuple(checkpoint_config("t", "", second[1].id)) is None
    assert script_calls(saver, "PUT_STEP") == 1

    ok_first = _put(saver, None, 1)
    ok_second = _put(saver, ok_first[1].id, 2)
    got = saver.put_pair(ok_first, ok_second)
    assert got["configurable"]["checkpoint_id"] == ok_second[1].id
    stored = saver.get_tuple({"configurable": {"thread_id": "t", "checkpoint_ns": ""}})
    assert stored is not None and stored.checkpoint.channel_values == {"x": 2}
    assert stored.parent_config is not None
    assert stored.parent_config["configurable"]["checkpoint_id"] == ok_first[1].id
