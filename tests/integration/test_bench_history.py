"""``bench/bench_history.py`` (issue 13's instrument): its bytes-sent column counts what
goes to Redis, exactly, and a tiny run gives every row the figures the verdict reads.

The figures of so small a run are not checked against the targets (that is the
benchmark's business); what is checked is that the instrument measures: the count is
the RESP bytes of the commands, deltas send less than whole values, and a miss names
which target it missed.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from durable_graph.store.redis import RedisSaver

pytestmark = pytest.mark.redis

BENCH = Path(__file__).resolve().parents[2] / "bench" / "bench_history.py"


@pytest.fixture(scope="module")
def bench() -> Iterator[ModuleType]:
    """The bench file as a module, registered while in use (its state schemas' type
    hints are resolved in their module's globals)."""
    spec = importlib.util.spec_from_file_location("bench_history", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


def test_sent_counts_the_resp_bytes_of_every_command(
    bench: Any, redis_url: str, redis_prefix: str
) -> None:
    saver = RedisSaver.from_url(redis_url, prefix=redis_prefix,
                                connection_class=bench.counting_class())
    other = RedisSaver.from_url(redis_url, prefix=redis_prefix,
                                connection_class=bench.counting_class())
    try:
        saver.client.ping()  # the connection's handshake, then a count from here
        start = bench.redis_sent(saver)
        key, value = f"{redis_prefix}:k", b"x" * 7000  # past the packer's cutoff: 2 chunks
        saver.client.set(key, value)
        pipe = saver.client.pipeline(transaction=False)
        pipe.get(key)
        pipe.delete(key)
        pipe.execute()
        resp = (b"*3\r\n$3\r\nSET\r\n$%d\r\n%b\r\n$7000\r\n%b\r\n" % (len(key), key.encode(), value)
                + b"*2\r\n$3\r\nGET\r\n$%d\r\n%b\r\n" % (len(key), key.encode())
                + b"*2\r\n$3\r\nDEL\r\n$%d\r\n%b\r\n" % (len(key), key.encode()))
        assert bench.redis_sent(saver) - start == len(resp)
        assert bench.redis_sent(other) == 0  # each saver's count is its own
    finally:
        saver.close()
        other.close()


@pytest.mark.parametrize("thread", ["name", "uuid"])
def test_tiny_run_sends_less_with_deltas_and_names_its_miss(bench: Any, redis_url: str,
                                                            tmp_path: Path, thread: str) -> None:
    args = argparse.Namespace(steps=20, redis_url=redis_url, thread=thread)
    rows = {(store, work, form): (float(sent), float(held), float(ratio))
            for store, work, form, sent, held, _values, _kb, ratio in
            bench.storage_rows(args, tmp_path)}
    assert len(rows) == 8
    for (store, work, form), (sent, held, _ratio) in rows.items():
        assert sent > 0 and held > 0, (store, work, form)
        if form == "deltas":  # a step sends its change, not the whole list again
            assert sent < rows[store, work, "whole values"][0], (store, work)
    assert rows["redis", "append", "deltas"][0] < rows["redis", "append", "whole values"][0] / 2
    assert bench.verdict("3.0", 1.5) == "PASS"
    assert bench.verdict("3.1", 1.2) == "MISS (3.1 KB/step sent/written > 3)"
    assert bench.verdict("-", 1.6) == ("MISS (sent/written not counted, "
                                       "store 1.60x > 1.5x appended)")
