"""SQLite schema 8: None values marked in the row's versions; delta links in the value row.

A channel whose value is None (a branch channel's trigger) has no ``blobs`` row: its
row's versions mark it (``sqlite_named.pack_marked``), and a signed row covers the mark.
A delta's link to its base is in its value row (``sqlite_links``), and opening an older
file moves its ``chains`` there and drops the table. Each must read back exactly what
schema 7 did.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any, TypedDict

import ormsgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from durable_graph import END, START, SqliteSaver, StateGraph
from durable_graph.errors import CheckpointStoreError, SerializationError, SignatureError
from durable_graph.store.base import Checkpoint, new_checkpoint_id
from durable_graph.store.codec import SignedSerializer, SigningCodec
from durable_graph.store.delta import ChannelDelta
from durable_graph.store.serde import TypedSerializer
from durable_graph.store.sqlite_links import DEPTH, base_of, move_chains, pack_link
from durable_graph.store.sqlite_named import (
    RowNames,
    own_version,
    pack_marked,
    unpack_marked,
    unpack_versions,
)
from durable_graph.store.sqlite_row import pack_id, plain_form
from durable_graph.store.sqlite_schema import SCHEMA_VERSION
from tests.sqlite_keys import named_rows

_SIGNED = SignedSerializer(TypedSerializer(), SigningCodec.from_secret("k" * 32))


def _golden_serde() -> Any:
    from tests.golden import make_golden as gen

    return gen.golden_serde()
_ID, _PARENT = new_checkpoint_id(), new_checkpoint_id()
_NAMES = ["a", "b", "__start__", "branch:to:x", "é"]


class Names:
    """An in-memory name table, numbered from ``first`` (0 too: ``~0`` is -1)."""

    def __init__(self, first: int) -> None:
        self.numbers: dict[str, int] = {}
        self.first = first

    def row(self) -> RowNames:
        return RowNames(_ID, _PARENT, self.name_of,
                        lambda name: self.numbers.setdefault(name, len(self.numbers) + self.first))

    def name_of(self, number: int) -> str:
        return {n: name for name, n in self.numbers.items()}[number]


_VERSION = st.integers(0, 2**20).map(lambda s: own_version(s, _ID)) \
    | st.integers(0, 2**20).map(lambda s: own_version(s, _PARENT)) \
    | st.integers(-3, 2**65) | st.sampled_from(["v", 1.5])


@given(versions=st.dictionaries(st.sampled_from(_NAMES), _VERSION, max_size=5),
       marks=st.frozensets(st.sampled_from([*_NAMES, "absent"])), first=st.sampled_from([0, 1]))
def test_marks_read_back_with_the_versions_or_not_at_all(
    versions: dict[str, Any], marks: frozenset[str], first: int
) -> None:
    """The marks a form holds are the asked ones among its channels, or none when it
    falls back to schema 6's form; the versions read back as JSON gives them."""
    text = json.dumps(versions, separators=(",", ":"), sort_keys=True)
    plain = plain_form(versions, lambda: text)
    row = Names(first).row()
    packed, held = pack_marked(plain, text, row, marks)
    back, marked = unpack_marked(packed, row)
    assert marked == held <= marks & set(versions)
    assert json.dumps(back, sort_keys=True) == json.dumps(plain, sort_keys=True)
    assert unpack_versions(packed, row) == back
    if held:
        assert isinstance(packed, bytes) and packed[:2] == b"\xc1\x04"
    elif isinstance(packed, bytes):
        assert packed[:2] != b"\xc1\x04"


class Count(TypedDict, total=False):
    x: int
    n: int


class Branchy:
    """A graph whose edge from START writes a branch channel's None each turn."""

    def __init__(self, saver: SqliteSaver) -> None:
        g = StateGraph(Count)
        g.add_node("noop", lambda s: {"n": s.get("n", 0) + 1})
        g.add_edge(START, "noop")
        g.add_edge("noop", END)
        self.app = g.compile(checkpointer=saver)

    def turn(self, thread: str = "t") -> Any:
        return self.app.invoke({"x": 1}, {"configurable": {"thread_id": thread}})


def _channels(conn: sqlite3.Connection) -> set[str]:
    return {ch for (ch,) in conn.execute("SELECT DISTINCT channel FROM blobs")}


@pytest.mark.parametrize("serde", [None, _SIGNED], ids=["plain", "signed"])
def test_a_branch_trigger_has_no_value_row_and_reads_back_none(
    tmp_path: Path, serde: Any
) -> None:
    with SqliteSaver(tmp_path / "m.db", serde=serde) as saver:
        graph = Branchy(saver)
        for _ in range(3):
            graph.turn()
        conn = saver._conn
        assert not any(ch.startswith("branch:to:") for ch in _channels(conn))
        heads = {bytes(v[:2]) for (v,) in conn.execute(
            "SELECT channel_versions FROM checkpoints")}
        assert b"\xc1\x04" in heads
        history = list(saver.list({"configurable": {"thread_id": "t"}}))
        marked = [t for t in history if "branch:to:noop" in t.checkpoint.channel_values]
        assert marked and all(
            t.checkpoint.channel_values["branch:to:noop"] is None for t in marked)
        assert graph.turn()["n"] == 4  # resumes as before


def _whole_values(saver: SqliteSaver, thread: str) -> list[dict[str, Any]]:
    return [dict(t.checkpoint.channel_values)
            for t in saver.list({"configurable": {"thread_id": thread}})]


def test_marked_rows_read_back_what_value_rows_did(tmp_path: Path) -> None:
    """The same puts, with marks and with schema 7's rows (a None value in a row form
    that holds no marks), give the same checkpoints, values in the same order."""
    with SqliteSaver(tmp_path / "m.db") as saver:
        for marks_fit in (True, False):
            parent = None
            for step in range(3):
                cid = new_checkpoint_id(parent)
                version: Any = own_version(step, cid) if marks_fit else f"v{step}"
                values = {"a": step, "branch:to:x": None, "z": None}
                cp = Checkpoint(id=cid, ts="2026-01-01T00:00:00+00:00",
                                channel_values=values,
                                channel_versions=dict.fromkeys(values, version),
                                versions_seen={})
                conf: dict[str, Any] = {"thread_id": str(marks_fit), "checkpoint_ns": ""}
                if parent:
                    conf["checkpoint_id"] = parent
                saver.put({"configurable": conf}, cp, {"source": "loop", "step": step},
                          cp.channel_versions)
                parent = cid
        marked, rows = _whole_values(saver, "True"), _whole_values(saver, "False")
        assert marked == rows and [list(v) for v in marked] == [["a", "branch:to:x", "z"]] * 3
        assert saver._conn.execute(
            "SELECT count(*) FROM blobs WHERE thread_id = "
            "(SELECT key FROM thread_keys WHERE thread_id = 'True')").fetchone()[0] == 3


def _edit_versions(path: Path, edit: Any) -> None:
    conn = sqlite3.connect(path)
    for cid, versions in conn.execute(
            "SELECT checkpoint_id, channel_versions FROM checkpoints").fetchall():
        conn.execute("UPDATE checkpoints SET channel_versions = ? WHERE checkpoint_id = ?",
                     (edit(bytes(versions)), cid))
    conn.commit()
    conn.close()


def _unmark(versions: bytes) -> bytes:
    """The named form without its marks (schema 7's head, each number as itself)."""
    if versions[:2] != b"\xc1\x04":
        return versions
    step, *flat = ormsgpack.unpackb(versions[2:])
    flat[::2] = [~n if n < 0 else n for n in flat[::2]]
    return b"\xc1\x03" + ormsgpack.packb([step, *flat])


def test_a_signed_row_refuses_a_removed_mark(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    with SqliteSaver(path, serde=_SIGNED) as saver:
        Branchy(saver).turn()
    _edit_versions(path, _unmark)
    with SqliteSaver(path, serde=_SIGNED) as saver, pytest.raises(SignatureError):
        list(saver.list({"configurable": {"thread_id": "t"}}))


def test_a_signed_store_refuses_marks_in_a_row_without_its_signature(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    with SqliteSaver(path, serde=_SIGNED) as saver:
        Branchy(saver).turn()
    conn = sqlite3.connect(path)
    conn.execute("DELETE FROM blobs")  # so no signed value gives the cut away first
    conn.execute("UPDATE checkpoints SET sig = NULL")
    conn.commit()
    conn.close()
    with SqliteSaver(path, serde=_SIGNED) as saver, pytest.raises(
            SignatureError, match="marks channels None"):
        list(saver.list({"configurable": {"thread_id": "t"}}))


def test_an_unsigned_store_reads_an_edited_mark_as_it_reads_an_edited_row(
    tmp_path: Path
) -> None:
    """A mark whose number the file lacks is refused like any edited row."""
    path = tmp_path / "m.db"
    with SqliteSaver(path) as saver:
        Branchy(saver).turn()

    def bad(versions: bytes) -> bytes:
        if versions[:2] != b"\xc1\x04":
            return versions
        step, *flat = ormsgpack.unpackb(versions[2:])
        flat[::2] = [-1000 if n < 0 else n for n in flat[::2]]
        return b"\xc1\x04" + ormsgpack.packb([step, *flat])

    _edit_versions(path, bad)
    with SqliteSaver(path) as saver, pytest.raises(CheckpointStoreError, match="number 999"):
        list(saver.list({"configurable": {"thread_id": "t"}}))


# -- delta links in the value row ------------------------------------------------


def _put_chain(saver: SqliteSaver, versions: list[Any], thread: str = "t") -> list[str]:
    """A list channel's values at ``versions``: the first whole, then each a delta on
    the one before (one new item each), as the engine's plan stores them."""
    parent: str | None = None
    ids = []
    for i, version in enumerate(versions):
        value: Any = ["item0"] if i == 0 else ChannelDelta(
            versions[i - 1], i, (("c", (0, i)), ("n", (f"item{i}",))))
        cid = new_checkpoint_id(parent)
        cp = Checkpoint(id=cid, ts="2026-01-01T00:00:00+00:00", channel_values={"log": value},
                        channel_versions={"log": version}, versions_seen={})
        conf: dict[str, Any] = {"thread_id": thread, "checkpoint_ns": ""}
        if parent:
            conf["checkpoint_id"] = parent
        saver.put({"configurable": conf}, cp, {"source": "loop", "step": i}, {"log": version})
        parent = cid
        ids.append(cid)
    return ids


def _log(saver: SqliteSaver, checkpoint_id: str | None = None) -> Any:
    conf: dict[str, Any] = {"thread_id": "t"}
    if checkpoint_id:
        conf["checkpoint_id"] = checkpoint_id
    got = saver.get_tuple({"configurable": conf})
    assert got is not None
    return got.checkpoint.channel_values["log"]


_VERSIONS = {
    "own": [own_version(s, new_checkpoint_id()) for s in range(1, 5)],  # the engine's
    "small": [1, 2, 3, 4],
    "far": [1, 2**48, 2**49 + 1, 2**60],  # gaps over 2**47: the JSON form
    "down": [10, 9, 8, 7],  # a base above its version: the JSON form
}


@pytest.mark.parametrize("serde", [None, _SIGNED], ids=["plain", "signed"])
@pytest.mark.parametrize("kind", list(_VERSIONS))
def test_delta_links_live_in_their_value_rows(tmp_path: Path, kind: str, serde: Any) -> None:
    versions = _VERSIONS[kind]
    with SqliteSaver(tmp_path / "l.db", serde=serde) as saver:
        _put_chain(saver, versions)
        conn = saver._conn
        assert conn.execute("SELECT type FROM sqlite_master WHERE name = 'chains'"
                            ).fetchall() == [("view",)]
        links = dict(conn.execute("SELECT version, link FROM blobs").fetchall())
        assert links[versions[0]] is None
        compact = kind in ("own", "small")
        assert all(isinstance(links[v], int if compact else str) for v in versions[1:])
        assert [saver.value_depth("t", "", "log", v) for v in versions] == [0, 1, 2, 3]
        assert _log(saver) == ["item0", "item1", "item2", "item3"]
        saver.prune(["t"], strategy="keep_latest")  # keeps the chain the latest needs
        assert conn.execute("SELECT count(*) FROM blobs").fetchone()[0] == 4
        assert _log(saver) == ["item0", "item1", "item2", "item3"]


_TEXT_VERSIONS = st.text(st.characters(blacklist_characters="\x00",
                                        blacklist_categories=("Cs",)), max_size=5)
"""Text versions as a saver stores them: never with a NUL or a lone surrogate
(``require_storable``)."""


@given(version=st.integers(0, 2**62) | _TEXT_VERSIONS | st.floats(-1e9, 1e9),
       base=st.integers(0, 2**62) | _TEXT_VERSIONS | st.floats(-1e9, 1e9),
       depth=st.integers(1, 1000))
def test_a_link_reads_back_its_base_and_depth_in_sql(version: Any, base: Any, depth: int) -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE blobs (version, link)")
    conn.execute("INSERT INTO blobs VALUES (?, ?)", (version, pack_link(version, base, depth)))
    got = conn.execute(f"SELECT {base_of('b')}, {DEPTH} FROM blobs b").fetchone()
    assert got == (base, depth) and type(got[0]) is type(base)


def test_an_edited_link_is_refused_not_read_as_another_value(tmp_path: Path) -> None:
    """Links are not signed (nor were ``chains``): a reader checks each link is the base
    its delta names, so a link pointed at another value of the channel is refused."""
    versions = [1, 2, 3, 4]
    with SqliteSaver(tmp_path / "l.db") as saver:
        _put_chain(saver, versions)
        assert _log(saver) == ["item0", "item1", "item2", "item3"]
        # version 3 (depth 2, base 2: the latest's base) now links to version 1, a whole
        # value: the chain would end there, one delta short and one item wrong
        saver._conn.execute("UPDATE blobs SET link = ? WHERE version = 3 AND thread_id = "
                            "(SELECT key FROM thread_keys WHERE thread_id = 't')",
                            (pack_link(3, 1, 2),))
        with pytest.raises(SerializationError, match="link was edited"):
            _log(saver)


def test_opening_a_schema_7_file_moves_its_links_and_drops_chains(tmp_path: Path) -> None:
    golden = Path(__file__).parent.parent / "golden" / "checkpoints-signed-v7.sqlite"
    path = tmp_path / "v7.sqlite"
    path.write_bytes(golden.read_bytes())
    with sqlite3.connect(path) as conn:
        chains = conn.execute("SELECT thread_id, checkpoint_ns, channel, version, base, depth "
                              "FROM chains ORDER BY 1, 2, 3, 4").fetchall()
        rows = conn.execute("SELECT * FROM checkpoints ORDER BY 1, 2, 3").fetchall()
    assert chains
    with SqliteSaver(path, serde=_golden_serde()) as saver:
        conn = saver._conn
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("SELECT type FROM sqlite_master WHERE name = 'chains'"
                            ).fetchall() == [("view",)]
        moved = conn.execute(
            f"SELECT thread_id, checkpoint_ns, channel, version, {base_of('b')}, {DEPTH} "
            "FROM blobs b WHERE link IS NOT NULL").fetchall()
        assert named_rows(conn, moved) == chains
        assert named_rows(conn, conn.execute("SELECT * FROM checkpoints").fetchall()) == [
            (*row[:2], pack_id(row[2]), *row[3:]) for row in rows]  # ids as bytes: schema 10
        with pytest.raises(sqlite3.OperationalError, match="chains because it is a view"):
            # what a schema 7 process still running on the file does on every commit
            conn.execute("INSERT OR REPLACE INTO chains VALUES (?, ?, ?, ?, ?, ?)",
                         ("t", "", "log", 2, 1, 1))


# Schema 7's statements on ``chains`` (main before schema 8): its open, a commit, a
# prune's clean-up and a chain read.
_V7_CREATE_CHAINS = """
CREATE TABLE IF NOT EXISTS chains (
    thread_id TEXT NOT NULL, checkpoint_ns TEXT NOT NULL, channel TEXT NOT NULL,
    version NOT NULL, base NOT NULL, depth INTEGER NOT NULL,
    PRIMARY KEY (thread_id, checkpoint_ns, channel, version)
) WITHOUT ROWID"""
_V7_LOAD_CHAIN = """
WITH RECURSIVE link(version, n) AS (
    SELECT ?4, 0
    UNION ALL
    SELECT d.base, link.n + 1 FROM link CROSS JOIN chains d ON d.thread_id = ?1
        AND d.checkpoint_ns = ?2 AND d.channel = ?3 AND d.version = link.version
)
SELECT b.version FROM link CROSS JOIN blobs AS b ON b.thread_id = ?1
    AND b.checkpoint_ns = ?2 AND b.channel = ?3 AND b.version = link.version
ORDER BY link.n
"""


def assert_view_refuses(conn: sqlite3.Connection, view: str,
                        statements: list[tuple[str, tuple[Any, ...]]]) -> None:
    """Each statement (an older release's write of a table now a read-only view) fails."""
    for statement, args in statements:
        with pytest.raises(sqlite3.OperationalError, match=f"{view} because it is a view"):
            conn.execute(statement, args)


@pytest.mark.parametrize("old_file", [True, False], ids=["schema-7-file", "new-file"])
def test_an_older_release_that_checked_the_version_first_cannot_write_chains(
    tmp_path: Path, old_file: bool
) -> None:
    """A schema 7 process checks the version before its own write transaction: if this
    release upgrades the file in between, it then runs its schema on the upgraded file.
    It must not get a ``chains`` table back (its delta links there, unseen by this
    release, whose prune would delete the bases they need): every write of ``chains``
    fails, and a read of its links reads this release's."""
    path = tmp_path / "f.sqlite"
    if old_file:
        golden = Path(__file__).parent.parent / "golden" / "checkpoints-plain-v7.sqlite"
        path.write_bytes(golden.read_bytes())
    with SqliteSaver(path) as saver:
        _put_chain(saver, [1, 2, 3, 4])
    old = sqlite3.connect(path)  # the older release, after its (passed) version check
    old.execute(_V7_CREATE_CHAINS)
    old.execute("PRAGMA user_version = 7")
    old.commit()
    assert old.execute("SELECT type FROM sqlite_master WHERE name = 'chains'"
                       ).fetchall() == [("view",)]
    # the thread by its key (schema 12): a schema 7 process asks by its id, and finds none
    assert list(old.execute(_V7_LOAD_CHAIN, ("t", "", "log", 3))) == []
    (key,) = old.execute("SELECT key FROM thread_keys WHERE thread_id = 't'").fetchone()
    assert [v for (v,) in old.execute(_V7_LOAD_CHAIN, (key, "", "log", 3))] == [3, 2, 1]
    assert_view_refuses(old, "chains", [
        ("INSERT OR REPLACE INTO chains VALUES (?, ?, ?, ?, ?, ?)", ("t", "", "log", 5, 4, 4)),
        ("DELETE FROM chains WHERE thread_id = ?", ("t",))])
    old.close()
    with SqliteSaver(path) as saver:  # and this release opens it as before
        assert saver._conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert _log(saver) == ["item0", "item1", "item2", "item3"]


def test_moving_links_goes_in_batches_and_keeps_every_one() -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE blobs (thread_id, checkpoint_ns, channel, version, type, "
                 "blob, leaves, PRIMARY KEY (thread_id, checkpoint_ns, channel, version))")
    conn.execute("CREATE TABLE chains (thread_id, checkpoint_ns, channel, version, base, depth)")
    count = 2500
    conn.executemany("INSERT INTO blobs VALUES ('t', '', 'log', ?, 'x', x'', NULL)",
                     [(v,) for v in range(count + 1)])
    conn.executemany("INSERT INTO chains VALUES ('t', '', 'log', ?, ?, ?)",
                     [(v, v - 1, 1 + v % 300) for v in range(1, count + 1)])
    move_chains(conn)
    got = conn.execute(f"SELECT version, {base_of('b')}, {DEPTH} FROM blobs b "
                       "WHERE link IS NOT NULL ORDER BY version").fetchall()
    assert got == [(v, v - 1, 1 + v % 300) for v in range(1, count + 1)]
    assert conn.execute("SELECT link FROM blobs WHERE version = 0").fetchone() == (None,)
