"""``SqliteSaver.list`` loads checkpoints a few per read transaction: the same items, in
the same order, whatever the limit, filter and page boundaries."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from durable_graph import SqliteSaver
from durable_graph.store.base import Checkpoint, new_checkpoint_id


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
