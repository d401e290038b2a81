"""``SqliteSaver.list`` loads checkpoints a few per read transaction: the same items, in
the same order, whatever the limit, filter and page boundaries."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from durable_graph import SqliteSaver
from durable_graph.store.base import Checkpoint, new_checkpoint_id
from durable_graph.store.sqlite_row import pack_id


def _fill(saver: SqliteSaver, count: int) -> list[str]:
    ids: list[str] = []
    for i in range(count):
        cp = Checkpoint(id=new_checkpoint_id(ids[-1] if ids else None),
                        ts="2026-01-01T00:00:00+00:00", channel_values={"n": i},
                        channel_versions={"n": i + 1}, versions_seen={})
        conf: dict[str, Any] = {"thread_id": "t", "checkpoint_ns": ""}
        if ids:
            conf["checkpoint_id"] = ids[-1]
        saver.put({"configurable": conf}, cp, {"source": "loop", "step": i, "odd": i % 2},
                  {"n": i + 1})
        ids.append(cp.id)
    return ids[::-1]


@pytest.mark.parametrize("limit", [None, 1, 2, 10, 11, 13, 101, 250])
@pytest.mark.parametrize("odd", [None, 1])
def test_list_gives_every_item_in_order_across_batches(
        tmp_path: Path, limit: int | None, odd: int | None) -> None:
    with SqliteSaver(tmp_path / "c.db") as saver:
        newest_first = _fill(saver, 230)  # three pages of 100 rows
        config = {"configurable": {"thread_id": "t"}}
        got = list(saver.list(config, limit=limit,
                              filter=None if odd is None else {"odd": odd}))
    want = [cid for i, cid in enumerate(newest_first) if odd is None or (229 - i) % 2 == odd]
    want = want if limit is None else want[:limit]
    assert [t.checkpoint.id for t in got] == want
    assert all(t.checkpoint.channel_values == {"n": t.metadata["step"]} for t in got)


def test_a_row_that_fails_to_load_stops_the_listing_after_the_rows_before_it(
        tmp_path: Path) -> None:
    """Loading ten per transaction changes nothing on a bad row: every checkpoint newer
    than it is listed (as one by one did), then its error is raised."""
    import sqlite3

    from durable_graph.errors import SignatureError
    from durable_graph.store.codec import SignedSerializer, SigningCodec
    from durable_graph.store.serde import TypedSerializer

    serde = SignedSerializer(TypedSerializer(), SigningCodec.from_secret("k" * 32))
    path = tmp_path / "c.db"
    with SqliteSaver(path, serde=serde) as saver:
        newest_first = _fill(saver, 6)
    conn = sqlite3.connect(path)
    conn.execute("UPDATE checkpoints SET sig = zeroblob(length(sig)) WHERE checkpoint_id = ?",
                 (pack_id(newest_first[3]),))
    conn.commit()
    conn.close()
    got: list[str] = []
    with SqliteSaver(path, serde=serde) as saver, pytest.raises(SignatureError):
        for item in saver.list({"configurable": {"thread_id": "t"}}):
            got.append(item.checkpoint.id)
    assert got == newest_first[:3]
