"""Committed checkpoints (tests/golden) must stay readable and resumable.

``tests/golden/make_golden.py`` recorded them with the graphs it defines; these tests
open a copy with today's code. A change to the stored format, the task ids, the
channel layout or the write encoding that breaks old threads fails here. Every
test runs on each committed SQLite store: unsigned, signed before signatures were
bound to their place (v1), and signed with bound places and records (v2).
(``tests/integration/test_golden_redis.py`` runs the same tests on the Redis ones.)
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from durable_graph import Command, SqliteSaver

GOLDEN = Path(__file__).resolve().parents[1] / "golden"


def _load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("golden_make", GOLDEN / "make_golden.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # get_type_hints resolves the state schema through it
    spec.loader.exec_module(module)
    return module


gen = _load_generator()
STORES = {"plain": gen.DB_NAME, **gen.SQLITE_FORMATS}
_DELTA_STORES = {
    name for fmt, name in {**gen.SQLITE_FORMATS, **gen.REDIS_FORMATS}.items()
    if fmt in gen.DELTA_FORMATS
}


def expected_of(store_name: str) -> dict[str, Any]:
    """What ``make_golden`` recorded for one committed store."""
    return json.loads((GOLDEN / gen.expected_name(store_name)).read_text())  # type: ignore[no-any-return]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def stores_for(test_name: str, names: list[str]) -> list[str]:
    """The golden stores a shared test runs on: the chat tests only on those recorded
    with delta storage (older ones hold no chat thread)."""
    if test_name.startswith("test_chat_"):
        return [n for n in names if n in _DELTA_STORES]
    return names


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "store_name" in metafunc.fixturenames:
        metafunc.parametrize("store_name", stores_for(metafunc.function.__name__,
                                                      list(STORES.values())))


@pytest.fixture
def saver(tmp_path: Path, store_name: str) -> Iterator[SqliteSaver]:
    """A SqliteSaver on a copy of a golden file (the original is never opened)."""
    original = GOLDEN / store_name
    digest = _digest(original)
    copy = tmp_path / store_name
    shutil.copyfile(original, copy)
    serde = gen.serde_of(store_name)
    with SqliteSaver(copy, serde=serde) as s:
        yield s
    assert _digest(original) == digest


@pytest.fixture
def expected(store_name: str) -> dict[str, Any]:
    return expected_of(store_name)


def cfg(thread: str) -> dict[str, Any]:
    return gen.config(thread)  # type: ignore[no-any-return]


@pytest.mark.parametrize("name", list(STORES.values()))
def test_golden_files_are_committed_without_a_wal(name: str) -> None:
    assert (GOLDEN / name).stat().st_size > 0
    assert not Path(f"{GOLDEN / name}-wal").exists()
    threads = set(gen.THREADS) | (set(gen.DELTA_THREADS) if name in _DELTA_STORES else set())
    assert set(expected_of(name)) == threads


def test_signed_golden_files_hold_the_format_they_are_named_after() -> None:
    import sqlite3

    from durable_graph.store.sqlite_links import DEPTH

    formats = {"signed-v1": (1, 0xD1), "signed-v2": (2, 0xD2), "signed-v3": (3, 0xD2),
               "signed-v4": (4, 0xD2), "signed-v5": (5, 0xD2), "signed-v6": (6, 0xD2),
               "signed-v7": (7, 0xD2), "signed-v8": (8, 0xD2)}
    for name, (schema, envelope) in formats.items():
        conn = sqlite3.connect(f"file:{GOLDEN / STORES[name]}?immutable=1", uri=True)
        try:
            assert conn.execute("PRAGMA user_version").fetchone()[0] == schema
            blobs = [bytes(b) for (b,) in conn.execute("SELECT blob FROM blobs")]
            links = "chains" if schema < 8 else f"(SELECT {DEPTH} AS depth FROM blobs)"
            depths = [d for (d,) in conn.execute(f"SELECT depth FROM {links}")] \
                if schema >= 3 else []
        finally:
            conn.close()
        assert blobs and {b[0] for b in blobs} == {envelope}
        if schema >= 3:  # delta chains that restart at whole snapshots
            assert depths and max(depths) == gen.GOLDEN_SNAPSHOT_EVERY


def test_v4_rows_are_compact() -> None:
    """What schema 4 changes: parent ids, timestamps, versions seen and tags as BLOBs."""
    import sqlite3

    conn = sqlite3.connect(f"file:{GOLDEN / STORES['signed-v4']}?immutable=1", uri=True)
    try:
        rows = conn.execute("SELECT parent_id, ts, versions_seen FROM checkpoints "
                            "WHERE parent_id IS NOT NULL").fetchall()
        tags = {bytes(t) for (t,) in conn.execute("SELECT type FROM blobs")}
    finally:
        conn.close()
    assert rows and all(isinstance(c, bytes) for row in rows for c in row)
    assert {len(p) for p, _, _ in rows} == {16} and {len(t) for _, t, _ in rows} == {8}
    assert tags == {b"\x04"}  # every value signed: the one-byte code of "signed"


def test_v5_keeps_each_chat_text_once() -> None:
    """What schema 5 changes: the chat's texts are leaves, each kept once and referred to."""
    import sqlite3

    conn = sqlite3.connect(f"file:{GOLDEN / STORES['signed-v5']}?immutable=1", uri=True)
    try:
        leaves = [bytes(d) for (d,) in conn.execute("SELECT data FROM leaves")]
        refs = conn.execute("SELECT sum(refs) FROM leaves").fetchone()[0]
        held = conn.execute("SELECT count(*) FROM blobs WHERE leaves IS NOT NULL").fetchone()[0]
        indexes = {n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    finally:
        conn.close()
    texts = {m["content"] for t in range(gen.CHAT_TURNS)
             for m in gen.chat_turn(t, gen.LEAF_PAD)["messages"] if isinstance(m, dict)}
    assert sorted(d[1:].decode() for d in leaves) == sorted(texts)  # every input text, once
    assert refs > len(leaves) and held  # each held by its input, a delta or snapshot, ...
    assert "checkpoints_newest" not in indexes


def test_v6_packs_rows_and_deflates_leaves() -> None:
    """What schema 6 changes: versions, versions seen and metadata packed (``sqlite_row``),
    each row whole, and each leaf deflated (``sqlite_leaves``); the rows read back as
    before (tests below)."""
    import sqlite3

    from durable_graph.store.deflate import unpack_leaf
    from durable_graph.store.sqlite_row import unpack_versions

    conn = sqlite3.connect(f"file:{GOLDEN / STORES['signed-v6']}?immutable=1", uri=True)
    try:
        rows = conn.execute(
            "SELECT channel_versions, versions_seen, metadata FROM checkpoints").fetchall()
        leaves = [bytes(d) for (d,) in conn.execute("SELECT data FROM leaves")]
    finally:
        conn.close()
    assert rows and all(isinstance(c, bytes) for row in rows for c in row)
    # whole rows: versions a msgpack map, seen named against them (``\x01``)
    assert all(isinstance(unpack_versions(versions), dict) for versions, _, _ in rows)
    assert {seen[:1] for _, seen, _ in rows} == {b"\x01"}
    assert {meta[:1] for _, _, meta in rows} <= {b"\x00", b"\x01", b"\x02"}
    texts = {m["content"] for t in range(gen.CHAT_TURNS)
             for m in gen.chat_turn(t, gen.LEAF_PAD)["messages"] if isinstance(m, dict)}
    assert {d[:1] for d in leaves} == {b"z"} and all(len(d) < 100 for d in leaves)
    assert sorted(unpack_leaf(d)[1:].decode() for d in leaves) == sorted(texts)


def test_v7_names_by_number_and_keeps_versions_by_step() -> None:
    """What schema 7 changes: channel and node names by number (the ``names`` table),
    own and parent's versions by step, the timestamp after the id, a step's metadata
    as one integer; each row whole."""
    import sqlite3

    import ormsgpack

    from durable_graph.store.sqlite_named import RowNames, unpack_seen, unpack_versions
    from durable_graph.store.sqlite_row import unpack_id, unpack_metadata, unpack_ts

    conn = sqlite3.connect(f"file:{GOLDEN / STORES['signed-v7']}?immutable=1", uri=True)
    try:
        rows = conn.execute("SELECT checkpoint_id, parent_id, ts, channel_versions, "
                            "versions_seen FROM checkpoints").fetchall()
        names = dict(conn.execute("SELECT id, name FROM names").fetchall())
        metadata = [bytes(m) for (m,) in conn.execute("SELECT metadata FROM checkpoints")]
    finally:
        conn.close()
    assert {m[:2] for m in metadata} == {b"\x03\xc1"}  # a step's metadata: one integer
    assert {unpack_metadata(m)["source"] for m in metadata} == {"input", "loop"}
    assert rows and {versions[:2] for *_, versions, _ in rows} == {b"\xc1\x03"}
    assert {seen[:2] for *_, seen in rows} == {b"\xc1\x02"}
    assert all(len(ts) < 8 for _, _, ts, _, _ in rows)
    assert {"__start__", "messages", "log", "reply"} <= set(names.values())
    for checkpoint_id, parent, ts, versions, seen in rows:
        row = RowNames(checkpoint_id, unpack_id(parent), names.__getitem__)
        decoded = unpack_versions(versions, row)
        assert decoded and all(type(v) is int and v > 0 for v in decoded.values())
        assert isinstance(unpack_seen(seen, decoded, row), dict)
        assert unpack_ts(ts, checkpoint_id).endswith("+00:00")
    stored = [ormsgpack.unpackb(versions[2:]) for *_, versions, _ in rows]
    shown = [v for flat in stored for v in flat[2::2]]
    assert None in shown and any(v < 0 for v in shown if v is not None)  # own, parent's


@pytest.mark.parametrize(("fmt", "schema"), [("plain-v7", 7), ("plain-v8", 8), ("plain-v8z", 8),
                                             ("plain-v9", 9), ("plain-v10", 10), ("plain-v11", 11),
                                             ("plain-v12", 12)])
def test_plain_stores_keep_base64_leaves_and_references_in_the_value(
    tmp_path: Path, fmt: str, schema: int
) -> None:
    """What schema 7 changes for a plain store: base64 inputs kept as ``B`` cells, value
    rows keeping their references in the value (``leaves`` column ``'v'``); on a copy,
    keep_last, prune and ``delete_checkpoints`` give back exactly what the rows held."""
    import sqlite3

    from durable_graph.store.deflate import unpack_leaf
    from durable_graph.store.sqlite_leaves import IN_VALUE
    from tests.leaf_counts import counted, held_by_rows

    name = STORES[fmt]
    conn = sqlite3.connect(f"file:{GOLDEN / name}?immutable=1", uri=True)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == schema
        cells = [bytes(d) for (d,) in conn.execute("SELECT data FROM leaves")]
        columns = [c for (c,) in conn.execute("SELECT leaves FROM blobs")]
    finally:
        conn.close()
    pad = gen.pad_of(name)
    texts = {m["content"] for t in range(gen.CHAT_TURNS)
             for m in gen.chat_turn(t, pad)["messages"] if isinstance(m, dict)}
    assert cells and {c[:1] for c in cells} == {b"B"}
    assert sorted(unpack_leaf(c)[1:].decode() for c in cells) == sorted(texts)
    assert columns.count(IN_VALUE) >= gen.CHAT_TURNS and set(columns) <= {IN_VALUE, None}
    copy = tmp_path / name
    shutil.copyfile(GOLDEN / name, copy)
    with SqliteSaver(copy, keep_last=3) as saver:
        conn = saver._conn
        assert counted(conn) == held_by_rows(conn) and counted(conn)
        out = gen.chat_graph(saver, gen.Runs(fail=False)).invoke(
            gen.chat_turn(gen.CHAT_TURNS, pad), cfg("chat"))  # a commit trims to 3
        assert _messages(out) == gen.chat_messages(gen.CHAT_TURNS + 1, pad)
        assert counted(conn) == held_by_rows(conn)
        saver.prune(["chat"], strategy="keep_latest")
        assert counted(conn) == held_by_rows(conn)
        saver.delete_checkpoints("chat", "", [c.checkpoint_id for c in saver.list_ids("chat")])
        assert counted(conn) == held_by_rows(conn) == {}


@pytest.mark.parametrize("fmt", ["signed-v8", "plain-v8", "signed-v8z", "plain-v8z", "signed-v9",
                                 "plain-v9", "signed-v10", "plain-v10", "signed-v11", "plain-v11",
                                 "signed-v12", "plain-v12"])
def test_v8_marks_branch_triggers_and_keeps_links_in_value_rows(fmt: str) -> None:
    """What schema 8 changes: a branch channel's None is a mark in its row's versions,
    not a value row; a delta's link is in its value row (no ``chains`` table)."""
    import sqlite3

    import ormsgpack

    from durable_graph.store.sqlite_links import DEPTH, base_of

    conn = sqlite3.connect(f"file:{GOLDEN / STORES[fmt]}?immutable=1", uri=True)
    try:
        tables = {n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        heads = [bytes(v[:2]) for (v,) in conn.execute("SELECT channel_versions FROM checkpoints")]
        marked = [ormsgpack.unpackb(bytes(v)[2:]) for (v,) in conn.execute(
            "SELECT channel_versions FROM checkpoints WHERE substr(channel_versions, 1, 2) = ?",
            (b"\xc1\x04",))]
        names = dict(conn.execute("SELECT id, name FROM names").fetchall())
        channels = {c for (c,) in conn.execute("SELECT channel FROM blobs")}
        links = conn.execute(f"SELECT version, {base_of('b')}, {DEPTH}, typeof(link) "
                             "FROM blobs b WHERE link IS NOT NULL").fetchall()
    finally:
        conn.close()
    assert "chains" not in tables and heads.count(b"\xc1\x04") >= gen.CHAT_TURNS
    assert {names[~n] for flat in marked for n in flat[1::2] if n < 0} >= {"branch:to:reply"}
    assert not any(c.startswith("branch:to:") for c in channels)
    assert links and {kind for *_, kind in links} == {"integer"}
    assert all(base < version for version, base, _, _ in links)
    assert max(depth for _, _, depth, _ in links) == gen.GOLDEN_SNAPSHOT_EVERY


@pytest.mark.parametrize(("fmt", "code"), [("signed-v8z", b"\x08"), ("plain-v8z", b"\x05"),
                                           ("signed-v9", b"\x08"), ("plain-v9", b"\x05"),
                                           ("signed-v10", b"\x08"), ("plain-v10", b"\x05"),
                                           ("signed-v11", b"\x08"), ("plain-v11", b"\x05"),
                                           ("signed-v12", b"\x08"), ("plain-v12", b"\x05")])
def test_v8z_keeps_value_rows_deflated(fmt: str, code: bytes) -> None:
    """What ``v8z`` changes (schema 8 still): value rows whose bytes deflate by an eighth
    are stored deflated with the LangChain framing, under a tag code of their own
    (``sqlite_row.pack_blob``); in the plain store those rows keep their leaf references
    in the value (the golden tests above read, resume and prune both stores)."""
    import sqlite3

    from durable_graph.store.deflate import FRAMING, inflated

    conn = sqlite3.connect(f"file:{GOLDEN / STORES[fmt]}?immutable=1", uri=True)
    try:
        rows = [(bytes(b), leaves) for b, leaves in conn.execute(
            "SELECT blob, leaves FROM blobs WHERE type = ?", (code,))]
        older = conn.execute("SELECT COUNT(*) FROM blobs WHERE type > x'08'").fetchone()[0]
    finally:
        conn.close()
    assert len(rows) >= gen.CHAT_TURNS and older == 0
    for stream, _ in rows:
        whole = inflated(stream, zdict=FRAMING)
        assert whole is not None and len(stream) * 8 <= len(whole) * 7
    if fmt.startswith("plain"):
        assert sum(leaves == "v" for _, leaves in rows) >= gen.CHAT_TURNS


@pytest.mark.parametrize("fmt", ["signed-v9", "plain-v9", "signed-v10", "plain-v10", "signed-v11",
                                 "plain-v11", "signed-v12", "plain-v12"])
def test_v9_keeps_each_leaf_cell_in_a_row_of_its_own(fmt: str) -> None:
    """What schema 9 changes: a leaf's cell alone in ``leaf_cells``, its thread, digest,
    count and cell number in ``leaf_refs``, and ``leaves`` a view of the two
    (``sqlite_leaves``); the golden tests above read, resume and prune both stores."""
    import sqlite3

    from tests.leaf_counts import counted

    conn = sqlite3.connect(f"file:{GOLDEN / STORES[fmt]}?immutable=1", uri=True)
    try:
        kinds = dict(conn.execute("SELECT name, type FROM sqlite_master WHERE name IN "
                                  "('leaves', 'leaf_cells', 'leaf_refs')").fetchall())
        columns = [r[1] for r in conn.execute("PRAGMA table_info(leaf_cells)")]
        counts = counted(conn)
        viewed = conn.execute("SELECT count(*) FROM leaves").fetchone()[0]
    finally:
        conn.close()
    assert kinds == {"leaves": "view", "leaf_cells": "table", "leaf_refs": "table"}
    assert columns == ["data"] and len(counts) == viewed >= gen.CHAT_TURNS


@pytest.mark.parametrize(("fmt", "form"), [("signed-v9", str), ("signed-v10", bytes),
                                           ("plain-v10", bytes), ("signed-v11", bytes),
                                           ("signed-v12", bytes)])
def test_v10_keeps_checkpoint_ids_as_bytes(fmt: str, form: type) -> None:
    """What schema 10 changes: each checkpoint id in the key as its 16 bytes
    (``sqlite_ids``), where schema 9 kept its text."""
    import sqlite3

    conn = sqlite3.connect(f"file:{GOLDEN / STORES[fmt]}?immutable=1", uri=True)
    try:
        ids = [i for (i,) in conn.execute("SELECT checkpoint_id FROM checkpoints")]
    finally:
        conn.close()
    assert len(ids) > gen.CHAT_TURNS and {type(i) for i in ids} == {form}
    assert form is str or {len(i) for i in ids} == {16}


@pytest.mark.parametrize(("fmt", "marks"), [("signed-v10", False), ("signed-v11", True),
                                            ("plain-v11", True), ("signed-v12", True)])
def test_v11_marks_each_parent_that_is_the_checkpoint_before(fmt: str, marks: bool) -> None:
    """What schema 11 changes: a parent that is the checkpoint before its child is the
    empty blob ``PREVIOUS`` (``sqlite_parents``), where schema 10 kept its 16 bytes;
    the golden tests above read every parent back and resume, fork and prune on them."""
    import sqlite3

    conn = sqlite3.connect(f"file:{GOLDEN / STORES[fmt]}?immutable=1", uri=True)
    try:
        rows = conn.execute("SELECT thread_id, checkpoint_ns, checkpoint_id, parent_id "
                            "FROM checkpoints ORDER BY 1, 2, 3").fetchall()
    finally:
        conn.close()
    newest: dict[tuple[str, str], bytes] = {}
    implied = 0
    for t, ns, cid, parent in rows:  # oldest first in each namespace
        if parent == b"":
            assert (t, ns) in newest  # a row before it, which it stands for
            implied += 1
        else:
            assert parent is None or len(parent) == 16
        newest[t, ns] = cid
    assert (implied > gen.CHAT_TURNS) if marks else implied == 0


@pytest.mark.parametrize(("fmt", "keyed"), [("signed-v11", False), ("signed-v12", True),
                                            ("plain-v12", True)])
def test_v12_keeps_each_thread_in_the_row_tables_by_its_key(fmt: str, keyed: bool) -> None:
    """What schema 12 changes: the row tables name a thread by its key, a number in
    ``thread_keys`` kept as a blob of its bytes (``sqlite_threads``), where schema 11 kept
    the thread id; the golden tests above read, resume, fork and prune on them."""
    import sqlite3

    from durable_graph.store.sqlite_threads import KEYED_TABLES

    conn = sqlite3.connect(f"file:{GOLDEN / STORES[fmt]}?immutable=1", uri=True)
    try:
        stored = {t: set(conn.execute(f"SELECT DISTINCT thread_id FROM {t}").fetchall())
                  for t in KEYED_TABLES}
        keys = dict(conn.execute("SELECT key, thread_id FROM thread_keys").fetchall()) \
            if keyed else {}
    finally:
        conn.close()
    every = {t for rows in stored.values() for (t,) in rows}
    assert len(stored["checkpoints"]) == 5 and stored["leaf_refs"]  # the chat's leaves
    if keyed:
        assert every == set(keys) and {len(k) for k in keys} == {1}
        assert set(keys.values()) == {"complete", "interrupted", "failed", "entry", "chat"}
    else:
        assert {type(t) for t in every} == {str}


def test_a_signed_store_refuses_unsigned_golden_values(tmp_path: Path) -> None:
    from durable_graph.errors import SignatureError

    copy = tmp_path / gen.DB_NAME
    shutil.copyfile(GOLDEN / gen.DB_NAME, copy)
    with SqliteSaver(copy, serde=gen.golden_serde()) as s, pytest.raises(
            SignatureError, match="unsigned payload"):
        s.get_tuple(cfg("complete"))


@pytest.mark.parametrize("thread", ["complete", "interrupted", "failed", "entry"])
def test_history_reads_every_recorded_checkpoint(
    saver: SqliteSaver, thread: str, expected: dict[str, Any]
) -> None:
    history = list(saver.list(cfg(thread)))
    assert [t.checkpoint.id for t in history] == expected[thread]["checkpoint_ids"]
    assert [t.metadata.get("step") for t in history] == expected[thread]["steps"]
    pending = sorted(w.channel for w in history[0].pending_writes)
    assert pending == expected[thread]["pending_channels"]
    for child, parent in zip(history, history[1:]):
        assert child.parent_config is not None
        assert child.parent_config["configurable"]["checkpoint_id"] == parent.checkpoint.id


# -- complete ------------------------------------------------------------------


def test_complete_thread_state_and_history(saver: SqliteSaver, expected: dict[str, Any]) -> None:
    graph = gen.chain_graph(saver, gen.Runs(fail=False))
    state = graph.get_state(cfg("complete"))
    assert state.values == {"x": 3, "log": ["a", "b", "c"]}
    assert state.next == ()
    assert state.metadata["step"] == 3
    latest = expected["complete"]["checkpoint_ids"][0]
    assert state.config["configurable"]["checkpoint_id"] == latest

    history = list(graph.get_state_history(cfg("complete")))
    assert [s.values.get("log") for s in history] == [
        ["a", "b", "c"], ["a", "b"], ["a"], [], []
    ]
    assert [s.next for s in history] == [(), ("c",), ("b",), ("a",), ("__start__",)]
    assert [s.metadata["source"] for s in history] == ["loop"] * 4 + ["input"]


def test_complete_thread_resumes_to_nothing_and_continues_with_new_input(
    saver: SqliteSaver,
) -> None:
    runs = gen.Runs(fail=False)
    graph = gen.chain_graph(saver, runs)
    assert graph.invoke(None, cfg("complete")) == {"x": 3, "log": ["a", "b", "c"]}
    assert sum(runs.count.values()) == 0
    out = graph.invoke({"x": 10}, cfg("complete"))
    assert out == {"x": 13, "log": ["a", "b", "c", "a", "b", "c"]}
    assert runs.count == {"a": 1, "b": 1, "c": 1}


def test_complete_thread_time_travel_from_an_old_checkpoint(saver: SqliteSaver) -> None:
    runs = gen.Runs(fail=False)
    graph = gen.chain_graph(saver, runs)
    after_a = next(s for s in graph.get_state_history(cfg("complete")) if s.next == ("b",))
    out = graph.invoke(None, after_a.config)
    assert out == {"x": 3, "log": ["a", "b", "c"]}
    assert runs.count["a"] == 0  # before the checkpoint: not run again
    assert runs.count["c"] == 1  # after it: runs on the new branch
    assert len(list(graph.get_state_history(cfg("complete")))) > 5


# -- interrupted ---------------------------------------------------------------


def test_interrupted_thread_state(saver: SqliteSaver) -> None:
    graph = gen.interrupt_graph(saver, gen.Runs(fail=False))
    state = graph.get_state(cfg("interrupted"))
    assert state.next == ("ask",)
    assert state.values == {"x": 0, "log": []}
    assert [i.value for i in state.interrupts] == ["approve?"]
    (task,) = state.tasks
    assert task.name == "ask"
    assert [i.value for i in task.interrupts] == ["approve?"]


def test_interrupted_thread_resumes(saver: SqliteSaver) -> None:
    runs = gen.Runs(fail=False)
    graph = gen.interrupt_graph(saver, runs)
    out = graph.invoke(Command(resume="yes"), cfg("interrupted"))
    assert out == {"x": 0, "log": ["ask:yes", "after"]}
    assert runs.count == {"ask": 1, "after": 1}
    assert graph.get_state(cfg("interrupted")).next == ()


def test_interrupted_thread_resumes_by_interrupt_id(saver: SqliteSaver) -> None:
    graph = gen.interrupt_graph(saver, gen.Runs(fail=False))
    (pending,) = graph.get_state(cfg("interrupted")).interrupts
    out = graph.invoke(Command(resume={pending.id: "by-id"}), cfg("interrupted"))
    assert out["log"] == ["ask:by-id", "after"]


# -- failed with a finished sibling --------------------------------------------


def test_failed_thread_state_shows_error_and_finished_sibling(saver: SqliteSaver) -> None:
    graph = gen.failing_graph(saver, gen.Runs(fail=False))
    state = graph.get_state(cfg("failed"))
    assert state.next == ("flaky",)
    assert state.values == {"x": 0, "log": ["ok"]}
    tasks = {t.name: t for t in state.tasks}
    assert tasks["ok"].error is None
    assert tasks["ok"].result == {"log": ["ok"]}
    assert tasks["flaky"].error is not None  # the exception or its repr, as LangGraph shows it
    assert "RuntimeError" in repr(tasks["flaky"].error)
    assert "flaky failed" in str(tasks["flaky"].error)


def test_failed_thread_resumes_without_rerunning_the_sibling(saver: SqliteSaver) -> None:
    runs = gen.Runs(fail=False)
    graph = gen.failing_graph(saver, runs)
    out = graph.invoke(None, cfg("failed"))
    # writes apply in task-path order (by node name), as in a run that never failed
    assert out == {"x": 2, "log": ["flaky", "ok"]}
    assert runs.count == {"flaky": 1, "join": 1}
    fresh = gen.Runs(fail=False)
    assert gen.failing_graph(saver, fresh).invoke({"x": 0}, cfg("fresh")) == out
    assert fresh.count == {"ok": 1, "flaky": 1, "join": 1}


# -- entrypoint with task results ----------------------------------------------


def test_entry_thread_state(saver: SqliteSaver) -> None:
    graph = gen.entry_graph(saver, gen.Runs(fail=False))
    state = graph.get_state(cfg("entry"))
    assert state.next == ("workflow",)
    (task,) = state.tasks
    assert "workflow failed after its tasks" in str(task.error)
    recorded = sorted(
        w.value for w in saver.get_tuple(cfg("entry")).pending_writes  # type: ignore[union-attr]
        if w.channel == "__return__"
    )
    assert recorded == [("square", 1), ("square", 4)]


def test_entry_thread_resumes_with_recorded_task_results(saver: SqliteSaver) -> None:
    runs = gen.Runs(fail=False)
    graph = gen.entry_graph(saver, runs)
    assert graph.invoke(None, cfg("entry")) == {"squares": [1, 4]}
    assert runs.count == {"workflow": 1}  # the squares came from the checkpoint
    assert graph.get_state(cfg("entry")).values == {"squares": [1, 4]}


# -- chat: delta chains (stores recorded with delta storage) ---------------------


def _needs_chat(expected: dict[str, Any]) -> None:
    assert "chat" in expected, "a store recorded with delta storage holds a chat thread"


def _messages(values: dict[str, Any]) -> list[tuple[str, str]]:
    return [(gen.id_of(m), gen.content_of(m)) for m in values.get("messages", [])]


def test_chat_thread_history_reads_back_through_its_delta_chains(
    saver: SqliteSaver, expected: dict[str, Any], store_name: str
) -> None:
    """Every turn's state, edits and a removal included, rebuilt from deltas and snapshots."""
    _needs_chat(expected)
    graph = gen.chat_graph(saver, gen.Runs(fail=False))
    history = list(graph.get_state_history(cfg("chat")))
    assert [s.config["configurable"]["checkpoint_id"] for s in history] == \
        expected["chat"]["checkpoint_ids"]
    turn_ends = [s.values for s in history if s.next == ()]
    pad = gen.pad_of(store_name)
    assert [_messages(v) for v in turn_ends] == \
        [gen.chat_messages(t, pad) for t in range(gen.CHAT_TURNS, 0, -1)]
    assert turn_ends[0]["log"] == [
        f"turn{len(gen.chat_messages(t + 1)) - 1}" for t in range(gen.CHAT_TURNS)]


def test_chat_thread_resumes_with_a_new_turn(
    saver: SqliteSaver, expected: dict[str, Any], store_name: str
) -> None:
    _needs_chat(expected)
    pad = gen.pad_of(store_name)
    runs = gen.Runs(fail=False)
    graph = gen.chat_graph(saver, runs)
    out = graph.invoke(gen.chat_turn(gen.CHAT_TURNS, pad), cfg("chat"))
    assert _messages(out) == gen.chat_messages(gen.CHAT_TURNS + 1, pad)
    assert runs.count == {"reply": 1}
    assert _messages(graph.get_state(cfg("chat")).values) == \
        gen.chat_messages(gen.CHAT_TURNS + 1, pad)
