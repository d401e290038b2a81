"""The distributed mode's parts that need no worker: payloads, settings, app, shipping."""

from __future__ import annotations

import base64
import os
import pickle
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from durable_graph import END, START, InMemorySaver, StateGraph
from durable_graph.errors import DispatchError, GraphValueError, SignatureError
from durable_graph.scheduler.algo import TaskWrites, apply_writes
from durable_graph.scheduler.transition import outcomes_from_pending, with_null_writes
from durable_graph.store.base import ERROR, NULL_TASK_ID, PendingWrite, empty_checkpoint
from durable_graph.store.codec import SigningCodec
from durable_graph.store.redis import RedisSaver
from durable_graph.worker import create_app
from durable_graph.worker.config import Settings
from durable_graph.worker.payload import open_sealed, seal
from durable_graph.worker.shipping import GraphLoader, GraphRef, GraphShipper, locate

CODEC = SigningCodec.from_secret("unit-test-secret-0123456789")


# -- payloads ------------------------------------------------------------------------


def test_a_sealed_payload_opens_to_what_was_sealed() -> None:
    job = {"thread": "t", "fn": lambda x: x + 1, "when": (1, 2)}
    back = open_sealed(CODEC, seal(CODEC, job))
    assert back["thread"] == "t" and back["when"] == (1, 2) and back["fn"](1) == 2


def test_a_flipped_byte_is_refused() -> None:
    raw = bytearray(base64.b64decode(seal(CODEC, {"x": 1})))
    raw[-1] ^= 1
    with pytest.raises(SignatureError, match="refused, nothing of it ran"):
        open_sealed(CODEC, base64.b64encode(bytes(raw)).decode())


def test_a_payload_signed_with_another_key_is_refused() -> None:
    other = SigningCodec.from_secret("another-secret-0123456789")
    with pytest.raises(SignatureError, match="does not verify"):
        open_sealed(CODEC, seal(other, {"x": 1}))


class _Marker:
    """Unpickling this creates a file: proof that bytes were unpickled."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path(self.path).touch, ())


def test_an_unsigned_pickle_is_refused_before_it_is_unpickled() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        marker = os.path.join(tmp, "unpickled")
        evil = base64.b64encode(pickle.dumps(_Marker(marker))).decode()
        with pytest.raises(SignatureError):
            open_sealed(CODEC, evil)
        assert not os.path.exists(marker)
        pickle.loads(base64.b64decode(evil))  # the payload was live: unpickling touches it
        assert os.path.exists(marker)


@pytest.mark.parametrize("junk", ["not base64!!", 42, None, ""])
def test_junk_payloads_are_refused(junk: Any) -> None:
    with pytest.raises(SignatureError):
        open_sealed(CODEC, junk)


# -- settings and the app ------------------------------------------------------------


def test_settings_come_from_the_environment_and_arguments_win() -> None:
    env = {"DURABLE_GRAPH_REDIS_URL": "redis://h:1/2", "DURABLE_GRAPH_PREFIX": "p",
           "DURABLE_GRAPH_LEASE_TTL": "7.5", "DURABLE_GRAPH_SECRET_KEY": "s" * 20}
    s = Settings.from_env(env, prefix="q")
    assert (s.redis_url, s.broker, s.prefix, s.lease_ttl) == ("redis://h:1/2", "redis://h:1/2",
                                                              "q", 7.5)
    assert s.codec is not None and s.codec.decode(s.codec.encode(b"x")) == b"x"


@pytest.mark.parametrize("value", ["soon", "0", "-3"])
def test_a_bad_lease_ttl_is_named(value: str) -> None:
    with pytest.raises(GraphValueError, match="DURABLE_GRAPH_LEASE_TTL"):
        Settings.from_env({"DURABLE_GRAPH_LEASE_TTL": value})


@pytest.mark.parametrize(("name", "value"), [
    ("DURABLE_GRAPH_MAX_DEATHS", "0"), ("DURABLE_GRAPH_MAX_DEATHS", "2.5"),
    ("DURABLE_GRAPH_MAX_DEATHS", "many"), ("DURABLE_GRAPH_HEARTBEAT_TTL", "-1"),
])
def test_bad_liveness_settings_are_named(name: str, value: str) -> None:
    with pytest.raises(GraphValueError, match=name):
        Settings.from_env({name: value})


def test_liveness_settings_from_the_environment_and_arguments() -> None:
    s = Settings.from_env({"DURABLE_GRAPH_MAX_DEATHS": "5", "DURABLE_GRAPH_HEARTBEAT_TTL": "2"})
    assert (s.max_deaths, s.heartbeat_ttl) == (5, 2.0)
    assert Settings.from_env({}, max_deaths=1).max_deaths == 1
    with pytest.raises(GraphValueError, match="max_deaths"):
        Settings.from_env({}, max_deaths=0)


def test_eager_depth_from_the_environment_and_arguments() -> None:
    assert Settings.from_env({}).eager_depth == 8
    assert Settings.from_env({"DURABLE_GRAPH_EAGER_DEPTH": "0"}).eager_depth == 0
    assert Settings.from_env({}, eager_depth=3).eager_depth == 3
    for bad in ("-1", "2.5", "deep"):
        with pytest.raises(GraphValueError, match="DURABLE_GRAPH_EAGER_DEPTH"):
            Settings.from_env({"DURABLE_GRAPH_EAGER_DEPTH": bad})
    for bad_arg in (-1, True, 1.5):
        with pytest.raises(GraphValueError, match="eager_depth"):
            Settings.from_env({}, eager_depth=bad_arg)


def test_task_events_are_off_unless_turned_on() -> None:
    off = create_app("redis://127.0.0.1:1/0", secret_key="k" * 40)
    assert off.conf.worker_send_task_events is False
    on = create_app("redis://127.0.0.1:1/0", secret_key="k" * 40, task_events=True)
    assert on.conf.worker_send_task_events is True
    cases = (("1", True), ("on", True), ("TRUE", True), ("0", False), ("no", False), ("", False))
    for raw, want in cases:
        assert Settings.from_env({"DURABLE_GRAPH_TASK_EVENTS": raw}).task_events is want
    with pytest.raises(GraphValueError, match="DURABLE_GRAPH_TASK_EVENTS"):
        Settings.from_env({"DURABLE_GRAPH_TASK_EVENTS": "maybe"})
    with pytest.raises(GraphValueError, match="task_events"):
        Settings.from_env({}, task_events="yes")


def test_no_signing_key_is_a_clear_error() -> None:
    with pytest.raises(GraphValueError, match="DURABLE_GRAPH_SECRET_KEY"):
        Settings.from_env({}).require_codec()


def test_the_app_delivers_at_least_once_with_json_only() -> None:
    app = create_app("redis://127.0.0.1:1/0", secret_key="k" * 20, visibility_timeout=42,
                     queue="qq", worker_concurrency=3)
    conf = app.conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.accept_content == ["json"] and conf.task_serializer == "json"
    assert conf.broker_transport_options["visibility_timeout"] == 42
    assert conf.task_default_queue == "qq" and conf.worker_concurrency == 3
    assert "durable_graph.job" in app.tasks


# -- the shared transition -------------------------------------------------------------


def _graph() -> Any:
    from typing import TypedDict

    class S(TypedDict):
        x: int

    b = StateGraph(S)
    b.add_node("a", lambda s: {"x": s["x"] + 1})
    b.add_edge(START, "a")
    b.add_edge("a", END)
    return b.compile(checkpointer=InMemorySaver())


def test_null_writes_apply_the_same_way_on_every_load() -> None:
    spec = _graph().spec
    cp, _ = apply_writes(spec, empty_checkpoint(), [
        TaskWrites("__input__", ("input",), (), [("x", 1)])], "id-1")
    pending = [PendingWrite(NULL_TASK_ID, "x", 5)]
    one, two = with_null_writes(spec, cp, pending), with_null_writes(spec, cp, pending)
    assert one.channel_values["x"] == 5 and one.channel_versions == two.channel_versions
    assert one.id == cp.id
    assert with_null_writes(spec, cp, []) is cp


def test_a_task_that_finished_after_failing_counts_as_finished() -> None:
    spec = _graph().spec
    from durable_graph.scheduler.algo import plan_tasks

    cp, _ = apply_writes(spec, empty_checkpoint(), [
        TaskWrites("__input__", ("input",), (), spec.input_writes({"x": 1}))], "id-1")
    (task,) = plan_tasks(spec, cp, "t", "")
    stale = [PendingWrite(task.id, ERROR, ValueError("old"))]
    assert outcomes_from_pending([task], stale)[task.id].error is not None
    both = [*stale, PendingWrite(task.id, "x", 3)]
    out = outcomes_from_pending([task], both)[task.id]
    assert out.error is None and out.writes == [("x", 3)]


# -- shipping graphs ------------------------------------------------------------------

module_level_graph = _graph()


def test_locate_names_a_module_level_graph() -> None:
    assert locate(module_level_graph) == f"{__name__}:module_level_graph"
    assert locate(_graph()) is None


@pytest.fixture
def saver(redis_url: str, redis_prefix: str) -> Iterator[RedisSaver]:
    with RedisSaver.from_url(redis_url, prefix=redis_prefix) as s:
        yield s


@pytest.mark.redis
def test_a_pickled_graph_loads_from_its_signed_blob(saver: RedisSaver) -> None:
    graph = _graph()
    ref = GraphShipper(saver.client, saver.prefix, CODEC, "pickle").ref(graph)
    assert ref.path is None and ref.digest is not None
    loaded = GraphLoader(saver.client, saver.prefix, CODEC).load(ref)
    assert loaded is not graph and loaded.saver is None
    assert loaded.invoke({"x": 1}) == {"x": 2}


@pytest.mark.redis
def test_a_tampered_graph_blob_is_refused(saver: RedisSaver) -> None:
    ref = GraphShipper(saver.client, saver.prefix, CODEC, "pickle").ref(_graph())
    key = f"{saver.prefix}:graph:{ref.digest}"
    raw = bytearray(saver.client.get(key))
    raw[-3] ^= 0xFF
    saver.client.set(key, bytes(raw))
    with pytest.raises(SignatureError, match="not unpickled"):
        GraphLoader(saver.client, saver.prefix, CODEC).load(ref)


@pytest.mark.redis
def test_a_missing_blob_and_an_unimportable_path_say_what_to_do(saver: RedisSaver) -> None:
    loader = GraphLoader(saver.client, saver.prefix, CODEC)
    with pytest.raises(DispatchError, match="DURABLE_GRAPH_REDIS_URL"):
        loader.load(GraphRef(None, "0" * 64))
    with pytest.raises(DispatchError, match="Install the module"):
        loader.load(GraphRef("no_such_module_here:graph", None))


def test_import_shipping_needs_a_module_level_graph(saver: RedisSaver) -> None:
    with pytest.raises(GraphValueError, match="module-level"):
        GraphShipper(saver.client, saver.prefix, CODEC, "import").ref(_graph())


def test_a_checkpoint_id_sorts_after_its_parent_even_from_a_slow_clock() -> None:
    from durable_graph.store.base import new_checkpoint_id

    ahead = new_checkpoint_id()
    future = str(uuid.UUID(int=((uuid.UUID(ahead).int >> 64) + 10**12) << 64))  # ~17 min
    child = new_checkpoint_id(after=future)
    assert child > future and new_checkpoint_id() < future
    assert new_checkpoint_id(after="not-a-uuid") > ahead
