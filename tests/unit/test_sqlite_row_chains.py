"""SQLite schema 6 row chains: a checkpoint row keeps what changed against its parent.

Each test compares a saver whose rows are diffs (the default: each ``put`` after its
parent's) with the same checkpoints read back whole, and checks that deleting,
pruning or replacing a row never leaves another row resolving through a missing one.
"""

from __future__ import annotations

import json
import random
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from durable_graph import SqliteSaver
from durable_graph.errors import CheckpointStoreError, SignatureError
from durable_graph.store.base import Checkpoint, new_checkpoint_id
from durable_graph.store.codec import SignedSerializer, SigningCodec
from durable_graph.store.serde import TypedSerializer
from durable_graph.store.sqlite_row import (
    ROW_CHAIN,
    apply_diff,
    diff_row,
    is_diff,
    pack_metadata,
    pack_seen_by,
    pack_versions,
    unpack_metadata,
    unpack_seen,
    unpack_versions,
)

_TS = "2026-01-01T00:00:00+00:00"


def signed() -> SignedSerializer:
    return SignedSerializer(TypedSerializer(), SigningCodec.from_secret("r" * 32))


def cfg(thread: str, checkpoint_id: str | None = None) -> dict[str, Any]:
    inner = {"thread_id": thread, "checkpoint_ns": ""}
    if checkpoint_id is not None:
        inner["checkpoint_id"] = checkpoint_id
    return {"configurable": inner}


def random_steps(seed: int, count: int) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Versions and versions seen of ``count`` steps: a few channels change each step,
    a channel or a node now and then comes or goes."""
    rng = random.Random(seed)
    versions: dict[str, Any] = {"__start__": 1}
    seen: dict[str, dict[str, Any]] = {"__input__": {}}
    out = []
    for step in range(count):
        for _ in range(rng.randint(0, 3)):
            versions[rng.choice(["a", "b", "branch:to:x", "messages", "c"])] = (step + 2) << 32
        if rng.random() < 0.2 and len(versions) > 1:
            versions.pop(rng.choice(sorted(versions)))
        node = rng.choice(["x", "y", "__start__"])
        if rng.random() < 0.15:
            seen.pop(node, None)
        else:
            seen[node] = {ch: v for ch, v in versions.items() if rng.random() < 0.5}
            if rng.random() < 0.3:
                seen[node]["gone"] = step  # a channel the versions do not name
        out.append((dict(versions), {n: dict(i) for n, i in seen.items()}))
    return out


def put_steps(saver: SqliteSaver, thread: str, seed: int, count: int) -> list[str]:
    ids: list[str] = []
    for step, (versions, seen) in enumerate(random_steps(seed, count)):
        cp = Checkpoint(ts=_TS, id=new_checkpoint_id(), channel_values={},
                        channel_versions=versions, versions_seen=seen)
        saver.put(cfg(thread, ids[-1] if ids else None), cp,
                  {"source": "loop", "step": step, "parents": {}}, {})
        ids.append(cp.id)
    return ids


def history(saver: SqliteSaver, thread: str) -> dict[str, Any]:
    return {t.checkpoint.id: (t.checkpoint.channel_versions, t.checkpoint.versions_seen,
                              t.metadata, t.parent_config)
            for t in saver.list(cfg(thread))}


def expected(seed: int, count: int, ids: list[str]) -> dict[str, Any]:
    return {cid: (v, s) for cid, (v, s) in zip(ids, random_steps(seed, count), strict=True)}


def stored(saver: SqliteSaver) -> list[tuple[str, bytes | str]]:
    return saver._conn.execute(
        "SELECT checkpoint_id, channel_versions FROM checkpoints ORDER BY checkpoint_id"
    ).fetchall()


@pytest.mark.parametrize("serde", [None, signed()], ids=["plain", "signed"])
@pytest.mark.parametrize("seed", range(4))
def test_rows_are_diffs_in_bounded_chains_and_read_back_exactly(
    tmp_path: Path, serde: Any, seed: int
) -> None:
    count = 3 * ROW_CHAIN
    with SqliteSaver(tmp_path / "d.db", serde=serde) as saver:
        ids = put_steps(saver, "t", seed, count)
        got = history(saver, "t")
        rows = stored(saver)
    want = expected(seed, count, ids)
    assert {cid: got[cid][:2] for cid in ids} == want
    assert all(got[cid][2] == {"source": "loop", "step": i, "parents": {}}
               for i, cid in enumerate(ids))
    diffs = [is_diff(v) for _, v in rows]
    assert sum(diffs) >= count - count // (ROW_CHAIN + 1) - 1  # most rows are diffs
    run = longest = 0
    for d in diffs:
        run = run + 1 if d else 0
        longest = max(longest, run)
    assert longest <= ROW_CHAIN
    with SqliteSaver(tmp_path / "d.db", serde=serde) as fresh:  # a new process reads it
        assert {cid: v[:2] for cid, v in history(fresh, "t").items()} == want


@pytest.mark.parametrize("serde", [None, signed()], ids=["plain", "signed"])
def test_deleting_a_parent_stores_its_children_whole(tmp_path: Path, serde: Any) -> None:
    count = 2 * ROW_CHAIN
    with SqliteSaver(tmp_path / "d.db", serde=serde) as saver:
        ids = put_steps(saver, "t", 7, count)
        want = expected(7, count, ids)
        gone = [ids[2], ids[3], ids[ROW_CHAIN + 3]]
        saver.delete_checkpoints("t", "", gone)
        got = history(saver, "t")
        assert set(got) == set(ids) - set(gone)
        assert {cid: v[:2] for cid, v in got.items()} == {
            cid: v for cid, v in want.items() if cid not in gone}
        versions = dict(stored(saver))
        assert not is_diff(versions[ids[4]]) and not is_diff(versions[ids[ROW_CHAIN + 4]])


@pytest.mark.parametrize("keep", [1, 2, ROW_CHAIN + 1])
def test_keep_last_never_breaks_a_row_chain(tmp_path: Path, keep: int) -> None:
    count = 3 * ROW_CHAIN
    with SqliteSaver(tmp_path / "d.db", serde=signed(), keep_last=keep) as saver:
        ids = put_steps(saver, "t", 3, count)
        got = history(saver, "t")
    want = expected(3, count, ids)
    assert set(got) == set(ids[-keep:])
    assert {cid: v[:2] for cid, v in got.items()} == {cid: want[cid] for cid in ids[-keep:]}


def test_replacing_a_parent_keeps_what_its_children_read(tmp_path: Path) -> None:
    with SqliteSaver(tmp_path / "d.db") as saver:
        ids = put_steps(saver, "t", 5, 4)
        want = expected(5, 4, ids)
        again = Checkpoint(ts=_TS, id=ids[1], channel_values={}, channel_versions={"other": 1},
                           versions_seen={})
        saver.put(cfg("t", ids[0]), again, {"source": "update", "step": 1}, {})
        got = history(saver, "t")
    assert got[ids[1]][:2] == ({"other": 1}, {})
    assert {cid: got[cid][:2] for cid in (ids[0], ids[2], ids[3])} == {
        cid: want[cid] for cid in (ids[0], ids[2], ids[3])}


def test_an_altered_parent_row_is_refused_by_its_child(tmp_path: Path) -> None:
    path = tmp_path / "d.db"
    with SqliteSaver(path, serde=signed()) as saver:
        ids = put_steps(saver, "t", 1, 3)
    conn = sqlite3.connect(path)
    conn.execute("UPDATE checkpoints SET sig = X'00' WHERE checkpoint_id = ?", (ids[0],))
    conn.commit()
    conn.close()
    with SqliteSaver(path, serde=signed()) as saver, pytest.raises(SignatureError):
        saver.get_tuple(cfg("t", ids[2]))


def test_a_missing_parent_row_is_named(tmp_path: Path) -> None:
    path = tmp_path / "d.db"
    with SqliteSaver(path) as saver:
        ids = put_steps(saver, "t", 1, 3)
    conn = sqlite3.connect(path)
    conn.execute("DELETE FROM checkpoints WHERE checkpoint_id = ?", (ids[1],))
    conn.commit()
    conn.close()
    with SqliteSaver(path) as saver, pytest.raises(CheckpointStoreError, match="parent is missing"):
        saver.get_tuple(cfg("t", ids[2]))


def test_metadata_msgpack_cannot_hold_stays_json(tmp_path: Path) -> None:
    with SqliteSaver(tmp_path / "d.db") as saver:
        for meta in ({"source": "input", "step": -1, "extra": {1: 2}, "parents": {}},
                     {"source": "input", "big": 2**70}):
            cp = Checkpoint(ts=_TS, id=new_checkpoint_id(), channel_values={},
                            channel_versions={"a": 1}, versions_seen={})
            saver.put(cfg("t"), cp, meta, {})
        got = [t.metadata for t in saver.list(cfg("t"))]
        raw = [m for (m,) in saver._conn.execute(
            "SELECT metadata FROM checkpoints ORDER BY checkpoint_id DESC")]
    assert got == [{"source": "input", "big": 2**70},
                   {"source": "input", "step": -1, "extra": {"1": 2}, "parents": {}}]
    assert isinstance(raw[0], str) and isinstance(raw[1], bytes)  # as JSON reads them
    assert [unpack_metadata(m) for m in raw] == got


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.text(max_size=4)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner,
                                                                 max_size=3),
    max_leaves=8)


@given(extra=st.dictionaries(st.sampled_from(["parents", "source", "step", "x"]), _JSON,
                             max_size=4),
       step=st.integers(-(2**40), 2**40), source=st.text(max_size=6))
def test_metadata_reads_back_as_its_json_whatever_its_form(
    extra: dict[str, Any], step: int, source: str
) -> None:
    for metadata in (extra, {"parents": {}, "source": source, "step": step},
                     {**extra, "parents": {}}):
        text = json.dumps(metadata, separators=(",", ":"), sort_keys=True)
        packed = pack_metadata(metadata, lambda: text)
        assert unpack_metadata(packed) == json.loads(text)
        assert list(unpack_metadata(packed)) == sorted(json.loads(text))  # keys in order


_VERSION = st.none() | st.integers(-5, 2**70) | st.sampled_from(["v1", "v2"]) | st.floats(
    allow_nan=False, allow_infinity=False) | st.booleans()
_NAMES = st.sampled_from(["a", "b", "__start__", "branch:to:x"])
_MAPS = st.tuples(st.dictionaries(_NAMES, _VERSION, max_size=4),
                  st.dictionaries(_NAMES, st.dictionaries(_NAMES, _VERSION, max_size=3),
                                  max_size=3))


@given(row=_MAPS, parent=_MAPS)
def test_a_row_reads_back_exactly_as_a_diff_or_whole(row: Any, parent: Any) -> None:
    """Whatever the versions (nil, text, floats, integers over 64 bits), each packed form
    gives back what JSON did, or the row falls back to a form that does."""
    versions, seen = row
    text = json.dumps(versions, separators=(",", ":"), sort_keys=True)
    assert unpack_versions(pack_versions(versions, text)) == versions
    assert unpack_seen(pack_seen_by(seen, versions), versions) == seen
    diff = diff_row(versions, seen, parent, 1)
    if diff is not None:
        assert apply_diff(*diff, parent) == (versions, seen)


def test_history_pages_resolve_rows_across_page_boundaries(tmp_path: Path) -> None:
    count = 250  # more than two pages of 100; chains cross each page's oldest row
    with SqliteSaver(tmp_path / "d.db", serde=signed()) as saver:
        ids = put_steps(saver, "t", 11, count)
        got = history(saver, "t")
        limited = [t.checkpoint.id for t in saver.list(cfg("t"), before=cfg("t", ids[150]),
                                                       limit=60)]
    assert {cid: got[cid][:2] for cid in ids} == expected(11, count, ids)
    assert limited == ids[150 - 60:150][::-1]
