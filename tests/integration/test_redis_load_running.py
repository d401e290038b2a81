"""A run's start reads its checkpoint and marks its thread running in one script on a
single Redis (``LOAD_RUNNING``, sent no keys): what it returns and stores is what
``get_tuple`` then ``set_status(thread, "running")`` return and store."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, TypedDict

import pytest
import redis

from durable_graph import END, START, StateGraph
from durable_graph.store.base import BaseCheckpointSaver
from durable_graph.store.memory import InMemorySaver
from durable_graph.store.redis import RedisSaver
from durable_graph.store.redis.keys import status_key
from tests.integration.test_redis_saver import chain
from tests.keys_left import delete_prefix

pytestmark = pytest.mark.redis

_EVALSHA = re.compile(rb"\$7\r\nEVALSHA\r\n\$40\r\n([0-9a-f]{40})\r\n\$(\d+)\r\n(\d+)\r\n")


class _Scripts(redis.Connection):
    """Records (sha, number of keys) of every EVALSHA its connections write, in order
    (a fresh subclass per saver)."""

    calls: list[tuple[str, int]] = []

    def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        chunks = [command] if isinstance(command, (str, bytes)) else command
        data = b"".join(c.encode() if isinstance(c, str) else c for c in chunks)
        type(self).calls += [(m[1].decode(), int(m[3])) for m in _EVALSHA.finditer(data)]
        super().send_packed_command(command, check_health)


@pytest.fixture
def lr_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own (``lr_``), its keys deleted afterwards."""
    prefix = f"lr_{uuid.uuid4().hex[:12]}"
    yield prefix
    delete_prefix(redis_url, prefix)


@pytest.fixture
def counted(redis_url: str, lr_prefix: str) -> Iterator[tuple[RedisSaver, type[_Scripts]]]:
    kind = type("Scripts", (_Scripts,), {"calls": []})
    with RedisSaver.from_url(redis_url, prefix=lr_prefix, connection_class=kind) as s:
        yield s, kind


def _cfg(thread: str, ns: str = "") -> dict[str, Any]:
    return {"configurable": {"thread_id": thread, "checkpoint_ns": ns}}


def _names(saver: RedisSaver, calls: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """``calls`` with each SHA named by the script it runs (unknown ones as '?')."""
    names = {saver.conn.loaded(n): n for n in ("LOAD", "LOAD_RUNNING", "RECORD_STATUS",
                                               "PUT", "PUT_WRITES", "PUT_STEP")}
    return [(names.get(sha, "?"), nkeys) for sha, nkeys in calls]


def _assert_running(saver: RedisSaver, raw: redis.Redis, thread: str, since: datetime) -> None:
    record = saver.get_status(thread)
    assert record is not None and record["status"] == "running"
    stamp = datetime.fromisoformat(record["updated_at"])
    assert since - timedelta(seconds=1) <= stamp <= datetime.now(UTC) + timedelta(seconds=1)
    assert thread in saver.list_threads("running")
    score = raw.zscore(status_key(saver.prefix, thread, "running"), thread)
    assert score is not None and abs(score - stamp.timestamp() * 1000) < 2


@pytest.fixture
def raw(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


def test_reads_what_get_tuple_reads_and_marks_the_thread_running(
    counted: tuple[RedisSaver, type[_Scripts]], raw: redis.Redis,
) -> None:
    saver, kind = counted
    chain(saver, 3, thread="t:{1}%")  # escaped in its keys
    saver.set_status("t:{1}%", "done", next_nodes=["a"])
    since = datetime.now(UTC)
    kind.calls.clear()
    got = saver.get_tuple_for_run(_cfg("t:{1}%"))
    assert _names(saver, kind.calls[:1]) == [("LOAD_RUNNING", 0)] and len(kind.calls) == 1
    assert got is not None and got == saver.get_tuple(_cfg("t:{1}%"))
    assert got.metadata["step"] == 2
    _assert_running(saver, raw, "t:{1}%", since)
    assert saver.get_status("t:{1}%")["next"] is None  # type: ignore[index]  # as set_status
    assert "t:{1}%" not in saver.list_threads("done")


def test_a_new_thread_reads_none_and_is_marked_running(
    counted: tuple[RedisSaver, type[_Scripts]], raw: redis.Redis,
) -> None:
    saver, _ = counted
    since = datetime.now(UTC)
    assert saver.get_tuple_for_run(_cfg("fresh")) is None
    _assert_running(saver, raw, "fresh", since)


def test_a_subgraph_namespace_loads_its_checkpoint_and_marks_the_thread(
    counted: tuple[RedisSaver, type[_Scripts]], raw: redis.Redis,
) -> None:
    """A status is per thread: a namespace's run marks its thread, as set_status did."""
    saver, _ = counted
    chain(saver, 2, thread="p")
    chain(saver, 3, thread="p", ns="child:1")
    since = datetime.now(UTC)
    got = saver.get_tuple_for_run(_cfg("p", "child:1"))
    assert got is not None and got == saver.get_tuple(_cfg("p", "child:1"))
    assert got.metadata["step"] == 2 and got.config["configurable"]["checkpoint_ns"] == "child:1"
    _assert_running(saver, raw, "p", since)
    assert saver.list_threads() == ["p"]


def test_a_named_checkpoint_is_read(counted: tuple[RedisSaver, type[_Scripts]]) -> None:
    saver, _ = counted
    configs = chain(saver, 3, thread="n")
    got = saver.get_tuple_for_run(configs[0])
    assert got is not None and got == saver.get_tuple(configs[0])
    assert got.metadata["step"] == 0
    assert saver.get_status("n")["status"] == "running"  # type: ignore[index]


def test_the_default_is_get_tuple_then_set_status() -> None:
    """Savers without a script of their own: the two calls, in this order."""
    calls: list[str] = []

    class Recording(InMemorySaver):
        def get_tuple(self, config: Any) -> Any:
            calls.append("get_tuple")
            return super().get_tuple(config)

        def set_status(self, thread_id: str, status: Any, error: Any = None) -> None:
            calls.append(f"set_status {thread_id} {status}")
            super().set_status(thread_id, status, error)

    saver = Recording()
    assert isinstance(saver, BaseCheckpointSaver)
    assert saver.get_tuple_for_run(_cfg("x", "sub")) is None
    assert calls == ["get_tuple", "set_status x running"]


class _State(TypedDict):
    n: int


def _graph(saver: RedisSaver) -> Any:
    b = StateGraph(_State)
    b.add_node("inc", lambda s: {"n": s["n"] + 1})
    b.add_edge(START, "inc")
    b.add_edge("inc", END)
    return b.compile(checkpointer=saver)


def test_an_embedded_run_loads_and_marks_running_in_one_script(
    counted: tuple[RedisSaver, type[_Scripts]],
) -> None:
    saver, kind = counted
    graph = _graph(saver)
    for n in ("LOAD", "LOAD_RUNNING", "RECORD_STATUS"):
        saver.conn.loaded(n)  # no NOSCRIPT retry counted below
    for turn, expected in ((0, 1), (1, 2)):
        kind.calls.clear()
        out = graph.invoke({"n": 0} if turn == 0 else {"n": 1}, _cfg("g"))
        assert out == {"n": expected}
        named = _names(saver, kind.calls)
        assert named[0] == ("LOAD_RUNNING", 0)  # the run's first script: no keys sent
        assert [n for n, _ in named].count("LOAD_RUNNING") == 1
        assert "LOAD" not in [n for n, _ in named]
        assert [n for n, _ in named].count("RECORD_STATUS") == 1  # the end's only
        record = saver.get_status("g")
        assert record is not None and record["status"] == "done"
        assert saver.list_threads("done") == ["g"] and saver.list_threads("running") == []
