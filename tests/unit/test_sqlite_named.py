"""SQLite schema 7 rows: names by number, own versions by step, timestamps after the id.

Each form must read back exactly what the JSON form did, types included, or the row
keeps schema 6's form; a name's number must never stand for another name (a rolled
back name is forgotten), and a signed row covers the names its numbers stand for.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from durable_graph import SqliteSaver
from durable_graph.errors import CheckpointStoreError, SerializationError, SignatureError
from durable_graph.store.base import Checkpoint, new_checkpoint_id
from durable_graph.store.codec import SignedSerializer, SigningCodec
from durable_graph.store.serde import TypedSerializer
from durable_graph.store.sqlite_named import (
    RowNames,
    is_named,
    own_version,
    pack_seen,
    pack_versions,
    unpack_seen,
    unpack_versions,
)
from durable_graph.store.sqlite_row import pack_id, pack_ts, plain_form, unpack_ts
from durable_graph.store.sqlite_schema import SCHEMA_VERSION
from tests.sqlite_keys import named_rows


def exact(value: Any) -> Any:
    """``value`` with the type of every part beside it: equal only when read back exactly."""
    if isinstance(value, dict):
        return {k: exact(v) for k, v in value.items()}
    return (type(value).__name__, value)


class Names:
    """An in-memory name table (both ways), as ``sqlite_names.NameTable`` keeps one."""

    def __init__(self) -> None:
        self.numbers: dict[str, int] = {}

    def row(self, checkpoint_id: str, parent_id: str | None) -> RowNames:
        return RowNames(checkpoint_id, parent_id, self.name_of,
                        lambda name: self.numbers.setdefault(name, len(self.numbers) + 7))

    def name_of(self, number: int) -> str:
        return {n: name for name, n in self.numbers.items()}[number]


_ID, _PARENT = new_checkpoint_id(), new_checkpoint_id()
_OWN = st.integers(0, 2**20).map(lambda step: own_version(step, _ID))
_PARENTS = st.integers(0, 2**20).map(lambda step: own_version(step, _PARENT))
_VERSION = _OWN | _PARENTS | st.integers(-5, 2**70) | st.sampled_from(["v1", "v2", None]) \
    | st.floats(allow_nan=False, allow_infinity=False) | st.booleans() \
    | st.sampled_from([0, 1, 1.0, True, 2**64 - 1, 2**64])
_NAMES = st.sampled_from(["a", "b", "__start__", "branch:to:x", "é"])
_MAPS = st.tuples(st.dictionaries(_NAMES, _VERSION, max_size=4),
                  st.dictionaries(_NAMES, st.dictionaries(_NAMES, _VERSION, max_size=3),
                                  max_size=3),
                  st.booleans())


@given(row=_MAPS)
def test_named_forms_read_back_exactly_whatever_the_versions(row: Any) -> None:
    """Own, parent's and other versions, text, floats, booleans, nil, integers over 64
    bits: each named form gives back what JSON did, types included, or falls back."""
    versions, seen, has_parent = row
    names = Names().row(_ID, _PARENT if has_parent else None)
    text = json.dumps(versions, separators=(",", ":"), sort_keys=True)
    plain = plain_form(versions, lambda: text)
    plain_seen = plain_form(seen, lambda: json.dumps(seen, sort_keys=True))
    packed = pack_versions(plain, text, names)
    decoded = unpack_versions(packed, names)
    assert exact(decoded) == exact(json.loads(text)) and list(decoded) == sorted(versions)
    assert exact(unpack_seen(pack_seen(plain_seen, plain, names), plain, names)) \
        == exact(json.loads(json.dumps(seen, sort_keys=True)))


def test_own_and_parent_versions_are_kept_by_their_steps() -> None:
    names = Names().row(_ID, _PARENT)
    versions = {"a": own_version(40, _ID), "b": own_version(40, _ID),
                "c": own_version(39, _PARENT), "d": 12345}
    packed = pack_versions(versions, json.dumps(versions), names)
    assert is_named(packed) and len(packed) < 16  # 9 bytes a version at schema 6
    assert unpack_versions(packed, names) == versions
    seen = {"n": {"a": versions["a"], "c": own_version(38, _PARENT), "z": "x"}}
    assert unpack_seen(pack_seen(seen, versions, names), versions, names) == seen


def test_a_named_row_needs_its_names_and_parent_to_be_read() -> None:
    names = Names()
    versions = {"a": own_version(3, _PARENT)}
    packed = pack_versions(versions, json.dumps(versions), names.row(_ID, _PARENT))
    with pytest.raises(SerializationError, match="has no parent"):
        unpack_versions(packed, names.row(_ID, None))
    with pytest.raises(KeyError):
        unpack_versions(packed, RowNames(_ID, _PARENT, {}.__getitem__))


@pytest.mark.parametrize("ts", ["2026-12-01T05:00:00.123456+00:00",
                                "2026-01-01T00:00:00+00:00", "2099-01-01T00:00:00+00:00"])
def test_timestamps_are_kept_after_the_time_in_the_id(ts: str) -> None:
    checkpoint_id = new_checkpoint_id()
    packed = pack_ts(ts, checkpoint_id)
    assert isinstance(packed, bytes) and unpack_ts(packed, checkpoint_id) == ts
    assert len(packed) < 8
    assert pack_ts(ts, "not-a-uuid") == pack_ts(ts)  # 8 bytes: schema 4's form
    assert unpack_ts(pack_ts(ts)) == ts
    with pytest.raises(SerializationError, match="needs a UUID id"):
        unpack_ts(packed, "not-a-uuid")


def _put(saver: SqliteSaver, thread: str, versions: dict[str, int], values: dict[str, Any],
         parent: str | None = None, checkpoint_id: str | None = None) -> str:
    cp = Checkpoint(id=checkpoint_id or new_checkpoint_id(parent), ts="2026-01-01T00:00:00+00:00",
                    channel_values=values, channel_versions=versions,
                    versions_seen={"node": dict(versions)})
    conf: dict[str, Any] = {"thread_id": thread, "checkpoint_ns": ""}
    if parent:
        conf["checkpoint_id"] = parent
    saver.put({"configurable": conf}, cp, {"source": "loop", "step": 1}, versions)
    return cp.id


def test_a_rolled_back_name_never_stands_for_another(tmp_path: Path) -> None:
    """A put that fails after numbering a new name: another process may give that number
    to another name; this saver must not keep using it."""
    path = tmp_path / "c.db"
    with SqliteSaver(path) as first, SqliteSaver(path) as second:
        with pytest.raises(SerializationError):
            _put(first, "t", {"fresh": 1}, {"fresh": threading.Lock()})
        _put(second, "u", {"other": 1}, {"other": "b"})
        _put(first, "t", {"fresh": 2}, {"fresh": "a"})
        for saver in (first, second):
            for thread, channel, value in (("t", "fresh", "a"), ("u", "other", "b")):
                got = saver.get_tuple({"configurable": {"thread_id": thread}})
                assert got is not None
                assert got.checkpoint.channel_values == {channel: value}
                assert got.checkpoint.versions_seen == {"node": got.checkpoint.channel_versions}


def test_an_edited_name_fails_the_rows_signature(tmp_path: Path) -> None:
    """The numbers are in the row, the names in the names table: a signed row covers
    what they stand for, so swapping two names is refused, not read as the other."""
    serde = SignedSerializer(TypedSerializer(), SigningCodec.from_secret("k" * 32))
    path = tmp_path / "c.db"
    with SqliteSaver(path, serde=serde) as saver:
        _put(saver, "t", {"a": 1, "b": 2}, {"a": "x", "b": "y"})
    conn = sqlite3.connect(path)
    conn.execute("UPDATE names SET name = 'tmp' WHERE name = 'a'")
    conn.execute("UPDATE names SET name = 'a' WHERE name = 'b'")
    conn.execute("UPDATE names SET name = 'b' WHERE name = 'tmp'")
    conn.commit()
    conn.close()
    with SqliteSaver(path, serde=serde) as saver, pytest.raises(SignatureError):
        saver.get_tuple({"configurable": {"thread_id": "t"}})


def test_a_missing_name_is_named_in_the_error(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    with SqliteSaver(path) as saver:
        _put(saver, "t", {"a": 1}, {"a": "x"})
    conn = sqlite3.connect(path)
    conn.execute("DELETE FROM names")
    conn.commit()
    conn.close()
    with SqliteSaver(path) as saver, pytest.raises(CheckpointStoreError, match="names table"):
        saver.get_tuple({"configurable": {"thread_id": "t"}})


def test_opening_a_schema_6_file_marks_it_current_and_rewrites_only_its_ids(
    tmp_path: Path,
) -> None:
    """Its rows stay as they are but for the ids in their key, rewritten as bytes in the
    same order (schema 10, ``sqlite_ids``)."""
    golden = Path(__file__).parent.parent / "golden" / "checkpoints-signed-v6.sqlite"
    path = tmp_path / "v6.sqlite"
    path.write_bytes(golden.read_bytes())
    query = "SELECT * FROM checkpoints ORDER BY thread_id, checkpoint_id"
    with sqlite3.connect(path) as conn:
        before = conn.execute(query).fetchall()
    with SqliteSaver(path) as saver:
        assert saver._conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert named_rows(saver._conn, saver._conn.execute(query).fetchall()) == [
            (*row[:2], pack_id(row[2]), *row[3:]) for row in before]
        assert all(isinstance(pack_id(row[2]), bytes) for row in before)
        assert not any(is_named(row[5]) for row in before)


def test_keep_last_reads_named_rows_in_sql(tmp_path: Path) -> None:
    """``keep_last`` finds the values the kept rows read through ``dg_versions`` (named
    rows: own and parent's versions by step) and drops only the others."""
    with SqliteSaver(tmp_path / "c.db", keep_last=2) as saver:
        ids: list[str] = []
        for step in range(1, 6):
            cid = new_checkpoint_id(ids[-1] if ids else None)
            versions = {"kept": own_version(1, ids[0] if ids else cid),
                        "now": own_version(step, cid)}
            if ids:
                versions["last"] = own_version(step - 1, ids[-1])
            values = {"kept": "k", "now": step, "last": step - 1}
            _put(saver, "t", versions, {k: values[k] for k in versions},
                 ids[-1] if ids else None, cid)
            ids.append(cid)
        row = saver._conn.execute(
            "SELECT channel_versions FROM checkpoints WHERE checkpoint_id = ?",
            (pack_id(ids[-1]),)).fetchone()
        left = saver._conn.execute("SELECT COUNT(*) FROM blobs").fetchone()[0]
        for cid, step in ((ids[-1], 5), (ids[-2], 4)):
            got = saver.get_tuple({"configurable": {"thread_id": "t", "checkpoint_id": cid}})
            assert got is not None
            assert got.checkpoint.channel_values == {"kept": "k", "now": step, "last": step - 1}
    assert is_named(row[0])
    assert left == 5  # kept; now and last of each kept row (the newest's last = the other's now)


def test_keep_last_on_a_schema_6_thread_reads_both_forms(tmp_path: Path) -> None:
    """A schema 6 chat resumed by this release with ``keep_last``: the commit's SQL reads
    the kept rows of both schemas (``dg_versions``) and keeps every value they need."""
    import importlib.util
    import sys

    golden = Path(__file__).parent.parent / "golden"
    spec = importlib.util.spec_from_file_location("golden_make", golden / "make_golden.py")
    assert spec is not None and spec.loader is not None
    gen = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = gen
    spec.loader.exec_module(gen)
    path = tmp_path / "v6.sqlite"
    path.write_bytes((golden / "checkpoints-signed-v6.sqlite").read_bytes())
    pad = gen.pad_of("checkpoints-signed-v6.sqlite")
    config = gen.config("chat")
    with SqliteSaver(path, serde=gen.golden_serde(), keep_last=4) as saver:
        graph = gen.chat_graph(saver, gen.Runs(fail=False))
        graph.invoke(gen.chat_turn(gen.CHAT_TURNS, pad), config)
        forms = [is_named(v) for (v,) in saver._conn.execute(
            "SELECT channel_versions FROM checkpoints WHERE thread_id = "
            "(SELECT key FROM thread_keys WHERE thread_id = 'chat') "
            "ORDER BY checkpoint_id")]
        history = list(graph.get_state_history(config))
    assert forms == [False, True, True, True]  # one schema 6 row kept, three new
    ends = [s.values for s in history if s.next == ()]
    got = [(m.id if not isinstance(m, dict) else m["id"]) for m in ends[0]["messages"]]
    assert got == [i for i, _ in gen.chat_messages(gen.CHAT_TURNS + 1, pad)]
    assert len(history) == 4 and all(s.values["messages"] for s in history)


@pytest.mark.parametrize("seen", [b"\xc1\x02\x92\x01\x92\x09\xc0", b"\xc1\x02\x92\x01",
                                  b"\xc1\x02\xc1"])
def test_an_edited_named_row_is_refused_by_name(tmp_path: Path, seen: bytes) -> None:
    """A channel index out of range, a list cut short, bytes msgpack refuses: the error
    names the checkpoint, whether or not the store signs."""
    serde = SignedSerializer(TypedSerializer(), SigningCodec.from_secret("k" * 32))
    for signing in (None, serde):
        path = tmp_path / f"{signing is None}.db"
        with SqliteSaver(path, serde=signing) as saver:
            cid = _put(saver, "t", {"a": 1}, {"a": "x"})
            saver._conn.execute("UPDATE checkpoints SET versions_seen = ?", (seen,))
            with pytest.raises(SerializationError, match=f"checkpoint {cid} of thread 't'"):
                saver.get_tuple({"configurable": {"thread_id": "t"}})


@pytest.mark.parametrize("number", [2**63, 2**64 - 1, -1])
def test_an_edited_name_number_out_of_range_is_refused_by_name(
        tmp_path: Path, number: int) -> None:
    """A name number no SQLite INTEGER id can be (edited in the row) is refused with the
    error naming the checkpoint, not SQLite's raw ``OverflowError``."""
    import ormsgpack

    with SqliteSaver(tmp_path / "c.db") as saver:
        cid = _put(saver, "t", {"a": 1}, {"a": "x"})
        saver._conn.execute("UPDATE checkpoints SET channel_versions = ?",
                            (b"\xc1\x03" + ormsgpack.packb([None, number, 1]),))
        with pytest.raises(SerializationError, match=f"checkpoint {cid} of thread 't'"):
            saver.get_tuple({"configurable": {"thread_id": "t"}})


def test_schema_6_readers_fail_loudly_on_named_columns() -> None:
    """A schema 6 process that still has the file open unpacks a column whole (versions,
    seen) or after its first byte (metadata): each named form starts so that msgpack
    refuses it, never reads as a number (which an old keep_last took for no versions)."""
    import ormsgpack

    from durable_graph.store.sqlite_row import pack_metadata
    from durable_graph.store.sqlite_row import unpack_seen as unpack_seen_v6
    from durable_graph.store.sqlite_row import unpack_versions as unpack_versions_v6

    names = Names()
    row = names.row(_ID, _PARENT)
    versions = {"a": own_version(3, _ID), "b": own_version(2, _PARENT), "c": 5}
    text = json.dumps(versions, separators=(",", ":"), sort_keys=True)
    packed = pack_versions(versions, text, row)
    seen = pack_seen({"n": {"a": versions["a"], "c": 4}}, versions, row)
    metadata = {"parents": {}, "source": "loop", "step": 3}
    meta = pack_metadata(metadata, lambda: json.dumps(metadata))
    assert is_named(packed) and is_named(seen)
    for old_read in (lambda: unpack_versions_v6(packed), lambda: unpack_seen_v6(seen),
                     lambda: ormsgpack.unpackb(meta[1:])):  # schema 6's metadata reader
        with pytest.raises(ValueError):  # ormsgpack's decode error
            old_read()


def _put_seen(saver: SqliteSaver, versions: dict[str, Any], seen: dict[str, Any]) -> None:
    cp = Checkpoint(id=new_checkpoint_id(), ts="2026-01-01T00:00:00+00:00",
                    channel_values={}, channel_versions=versions, versions_seen=seen)
    saver.put({"configurable": {"thread_id": "t", "checkpoint_ns": ""}}, cp,
              {"source": "loop", "step": 1}, {})


@pytest.mark.parametrize(("versions", "seen"), [
    ({"a": 2**64}, {"node": {"a": 2**64}}),  # seen as the row's: over 64 bits all the same
    ({"a": 1}, {"node": {"a": 2**64}}),
    ({"a\udc80": 1}, {"n\udc80": {"a\udc80": 1}}),  # names that are not UTF-8
    ({"a": 1}, {"n\udc80": {"a": 1}}),
])
def test_versions_named_forms_cannot_hold_read_back_as_before(
    tmp_path: Path, versions: dict[str, Any], seen: dict[str, Any]
) -> None:
    """Versions over 64 bits and names that are not UTF-8 keep schema 6's forms: the
    put succeeds and reads back what it gave, signed or not."""
    serde = SignedSerializer(TypedSerializer(), SigningCodec.from_secret("k" * 32))
    for signing in (None, serde):
        with SqliteSaver(tmp_path / f"{signing is None}.db", serde=signing) as saver:
            _put_seen(saver, versions, seen)
            got = saver.get_tuple({"configurable": {"thread_id": "t"}})
            assert got is not None
            assert exact(got.checkpoint.channel_versions) == exact(versions)
            assert {n: exact(v) for n, v in got.checkpoint.versions_seen.items()} == {
                n: exact(v) for n, v in seen.items()}
