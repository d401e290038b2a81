"""SQLite schema 6 rows: versions, versions seen and metadata packed, each row whole.

A packed form must read back exactly what its JSON form did, types included (``True``,
``1`` and ``1.0`` never turn into each other), or the row keeps the JSON form; a read
verifies the records it returns, once each, and no other.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from durable_graph import SqliteSaver
from durable_graph.errors import SerializationError
from durable_graph.store.base import Checkpoint, new_checkpoint_id
from durable_graph.store.codec import SignedSerializer, SigningCodec
from durable_graph.store.serde import TypedSerializer
from durable_graph.store.sqlite_row import (
    pack_metadata,
    pack_seen_by,
    pack_versions,
    plain_form,
    unpack_metadata,
    unpack_seen,
    unpack_versions,
)

_TS = "2026-01-01T00:00:00+00:00"


class CountingSerializer(SignedSerializer):
    """A signing serializer that counts the record signatures it verifies."""

    def __init__(self) -> None:
        super().__init__(TypedSerializer(), SigningCodec.from_secret("r" * 32))
        self.verified = 0

    def verify(self, signature: bytes, place: bytes) -> None:
        self.verified += 1
        super().verify(signature, place)


def cfg(thread: str, checkpoint_id: str | None = None) -> dict[str, Any]:
    inner = {"thread_id": thread, "checkpoint_ns": ""}
    if checkpoint_id is not None:
        inner["checkpoint_id"] = checkpoint_id
    return {"configurable": inner}


def exact(value: Any) -> Any:
    """``value`` with the type of every part beside it: equal only when read back exactly."""
    if isinstance(value, dict):
        return {k: exact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [exact(v) for v in value]
    return (type(value).__name__, repr(value))


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


def put_steps(saver: SqliteSaver, thread: str, steps: list[tuple[Any, Any]]) -> list[str]:
    ids: list[str] = []
    for step, (versions, seen) in enumerate(steps):
        cp = Checkpoint(ts=_TS, id=new_checkpoint_id(), channel_values={},
                        channel_versions=versions, versions_seen=seen)
        saver.put(cfg(thread, ids[-1] if ids else None), cp,
                  {"source": "loop", "step": step, "parents": {}}, {})
        ids.append(cp.id)
    return ids


def history(saver: SqliteSaver, thread: str) -> dict[str, Any]:
    return {t.checkpoint.id: (t.checkpoint.channel_versions, t.checkpoint.versions_seen)
            for t in saver.list(cfg(thread))}


@pytest.mark.parametrize("serde", [None, CountingSerializer()], ids=["plain", "signed"])
@pytest.mark.parametrize("seed", range(3))
def test_rows_read_back_exactly_each_on_its_own(tmp_path: Path, serde: Any, seed: int) -> None:
    steps = random_steps(seed, 24)
    with SqliteSaver(tmp_path / "d.db", serde=serde) as saver:
        ids = put_steps(saver, "t", steps)
        got = history(saver, "t")
        saver.delete_checkpoints("t", "", ids[1:23:2])  # a row's parent gone changes nothing
        kept = history(saver, "t")
    want = dict(zip(ids, steps, strict=True))
    assert exact(got) == exact(want)
    assert exact(kept) == exact({cid: want[cid] for cid in ids[0:24:2] + [ids[23]]})
    with SqliteSaver(tmp_path / "d.db", serde=serde) as fresh:  # a new process reads it
        assert exact(history(fresh, "t")) == exact(kept)


def test_equal_versions_of_other_types_read_back_as_written(tmp_path: Path) -> None:
    """``True`` and ``1.0`` where the row's version is ``1`` are not stored as "the same"."""
    steps = [({"a": 1, "b": 2, "c": 0.0}, {"n": {"a": True, "b": 2.0, "c": -0.0}}),
             ({"a": 1.0, "b": 3, "c": 0.0}, {"n": {"a": 1, "b": 3, "c": 0.0}, "m": {"a": 1.0}})]
    with SqliteSaver(tmp_path / "d.db") as saver:
        ids = put_steps(saver, "t", steps)
        got = [saver.get_tuple(cfg("t", cid)) for cid in ids]
    assert [exact((t.checkpoint.channel_versions, t.checkpoint.versions_seen))
            for t in got if t is not None] == [exact(s) for s in steps]


def test_a_checkpoint_put_again_as_its_own_parent_reads_back(tmp_path: Path) -> None:
    with SqliteSaver(tmp_path / "d.db") as saver:
        first = put_steps(saver, "t", [({"x": 1}, {})])[0]
        loaded = saver.get_tuple(cfg("t", first))
        assert loaded is not None
        saver.put(loaded.config, loaded.checkpoint, {"source": "update", "step": 1}, {})
        latest = saver.get_tuple(cfg("t"))
    assert latest is not None and latest.checkpoint.channel_versions == {"x": 1}
    assert latest.metadata == {"source": "update", "step": 1}


def test_a_read_verifies_the_records_it_returns_once_each(tmp_path: Path) -> None:
    serde = CountingSerializer()
    with SqliteSaver(tmp_path / "d.db", serde=serde) as saver:
        ids = put_steps(saver, "t", random_steps(4, 30))  # no values: records only
        counts = {}
        for name, read in [
            ("latest", lambda: saver.get_tuple(cfg("t"))),
            ("by id", lambda: saver.get_tuple(cfg("t", ids[12]))),
            ("limit=1", lambda: list(saver.list(cfg("t"), limit=1))),
            ("before, limit=3", lambda: list(saver.list(cfg("t"), before=cfg("t", ids[20]),
                                                        limit=3))),
            ("filter step 5", lambda: list(saver.list(cfg("t"), filter={"step": 5}))),
            ("all", lambda: list(saver.list(cfg("t")))),
        ]:
            serde.verified = 0
            read()
            counts[name] = serde.verified
    assert counts == {"latest": 1, "by id": 1, "limit=1": 1, "before, limit=3": 3,
                      "filter step 5": 1, "all": 30}


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
        assert exact(unpack_metadata(packed)) == exact(json.loads(text))
        assert list(unpack_metadata(packed)) == sorted(json.loads(text))  # keys in order


_VERSION = st.none() | st.integers(-5, 2**70) | st.sampled_from(["v1", "v2"]) | st.floats(
    allow_nan=False, allow_infinity=False) | st.booleans() | st.sampled_from([0, 1, 1.0, True])
_NAMES = st.sampled_from(["a", "b", "__start__", "branch:to:x"])
_MAPS = st.tuples(st.dictionaries(_NAMES, _VERSION, max_size=4),
                  st.dictionaries(_NAMES, st.dictionaries(_NAMES, _VERSION, max_size=3),
                                  max_size=3))


@given(row=_MAPS)
def test_a_row_reads_back_exactly_whatever_its_versions(row: Any) -> None:
    """Whatever the versions (nil, text, floats, booleans, integers over 64 bits), each
    packed form gives back what JSON did, types included, or falls back to one that does."""
    versions, seen = row
    text = json.dumps(versions, separators=(",", ":"), sort_keys=True)
    plain = plain_form(versions, lambda: text)
    assert exact(plain) == exact(json.loads(text))
    assert exact(unpack_versions(pack_versions(plain, text))) == exact(versions)
    assert exact(unpack_seen(pack_seen_by(seen, plain), plain)) == exact(seen)


@given(step=st.integers(-(2**31), 2**31 - 1),
       source=st.sampled_from(["input", "loop", "update", "fork", "Loop", "other", ""]))
def test_a_steps_metadata_is_one_integer_for_langgraphs_sources(step: int, source: str) -> None:
    """A step's usual metadata with one of LangGraph's four sources is one integer (the
    step and the source's code) behind ``\\x03\\xc1``; any other source keeps [source, step];
    both read back what JSON did."""
    metadata = {"parents": {}, "source": source, "step": step}
    text = json.dumps(metadata, separators=(",", ":"), sort_keys=True)
    packed = pack_metadata(metadata, lambda: text)
    coded = source in ("input", "loop", "update", "fork")
    assert isinstance(packed, bytes) and packed[:1] == (b"\x03" if coded else b"\x02")
    assert packed[1:2] == b"\xc1" or not coded  # msgpack never uses it: old readers fail
    assert exact(unpack_metadata(packed)) == exact(json.loads(text))
    assert list(unpack_metadata(packed)) == sorted(json.loads(text))
    if coded and -8 <= step < 32:
        assert len(packed) == 3  # a fixint: 3 bytes where [source, step] took 7 to 12


def test_a_steps_metadata_keeps_its_types() -> None:
    """Only an exact ``int`` step is coded: ``True`` and ``1.0`` keep the forms that give
    them back as they were."""
    for step in (True, 1.0):
        metadata = {"parents": {}, "source": "loop", "step": step}
        text = json.dumps(metadata, separators=(",", ":"), sort_keys=True)
        packed = pack_metadata(metadata, lambda: text)  # noqa: B023
        assert packed[:1] != b"\x03"
        assert exact(unpack_metadata(packed)) == exact(json.loads(text))


def test_an_edited_coded_step_is_refused_by_name() -> None:
    with pytest.raises(SerializationError, match="not an integer: the row was edited"):
        unpack_metadata(b"\x03\xc1\xa4loop")
