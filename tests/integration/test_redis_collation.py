"""A Redis server whose locale collates text (en_US.UTF-8), against the store's scripts.

Redis sets its collation from its environment (``setlocale(LC_COLLATE, "")``) and Lua's
string ``<`` follows it: under en_US.UTF-8 ``'B' < 'a'`` is false, where Redis orders
sorted-set members byte by byte. The scripts must never order keys with Lua's ``<`` (a
leaf's field is base64 of both cases): on such a server, a chat with leaves, a history
written out of order and random values read back, prune and delete exactly as on any
other. The server is started here with a generated en_US.UTF-8 locale (``localedef``,
Debian's ``locales`` package, installed when missing).
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from durable_graph.store.base import Checkpoint
from durable_graph.store.redis import RedisSaver
from tests.conftest import start_redis_server, stop_process
from tests.integration.test_redis_id_pages import (  # noqa: F401  (collected here too)
    test_random_puts_rewrites_deletes_and_prunes_match_one_sorted_index,
)
from tests.integration.test_redis_value_pages import (  # noqa: F401  (collected here too)
    test_random_values_read_back_and_go_with_the_last_checkpoint_that_reads_them,
)
from tests.unit.test_leaf_dedup import chat_app, run_chat

pytestmark = pytest.mark.redis

LOCALE = "en_US.UTF-8"


def _localedef(into: Path) -> bool:
    done = subprocess.run(["localedef", "-i", "en_US", "-f", "UTF-8", str(into / LOCALE)],
                          capture_output=True, check=False)
    return done.returncode == 0


def collating_locale(into: Path) -> dict[str, str]:
    """An environment whose processes collate text by en_US.UTF-8 (generated in ``into``);
    Debian's ``locales`` is installed when ``localedef`` cannot make it, else the test
    fails naming what is missing."""
    if not (shutil.which("localedef") and _localedef(into)):
        if shutil.which("apt-get") and os.geteuid() == 0:
            env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
            subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True,
                           check=False)
            subprocess.run(["apt-get", "install", "-y", "-qq", "locales"], env=env,
                           capture_output=True, check=False)
        if not (shutil.which("localedef") and _localedef(into)):
            pytest.fail("these tests need a Redis running under en_US.UTF-8: localedef and "
                        "its locale sources (Debian package locales) could not make it here")
    return {**os.environ, "LOCPATH": str(into), "LC_ALL": LOCALE}


@pytest.fixture(scope="module")
def collating_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis of its own whose Lua collates text as en_US.UTF-8 does."""
    env = collating_locale(tmp_path_factory.mktemp("locale"))
    proc, url = start_redis_server(str(tmp_path_factory.mktemp("redis")), env=env)
    try:
        client = redis.Redis.from_url(url)
        collates = client.eval("return tostring('B' < 'a')", 0)
        client.close()
        assert collates == b"false", "the server must collate, or these tests prove nothing"
        yield url
    finally:
        stop_process(proc)


@pytest.fixture
def redis_url(collating_url: str) -> str:
    """This module's Redis, for the ``saver`` and ``raw`` fixtures."""
    return collating_url


def test_a_chat_with_leaves_reads_prunes_and_deletes_as_anywhere(saver: RedisSaver) -> None:
    """Leaves (fields of base64 digests, both cases) land in value pages whose order a
    collating Lua would get wrong: every turn's history reads back, and keep_last keeps what
    the kept checkpoints read."""
    app = chat_app(saver)
    texts = run_chat(app, "t", 24)
    config: dict[str, Any] = {"configurable": {"thread_id": "t"}}
    history = list(app.get_state_history(config))
    assert len(history) == 3 * 24 and len(texts) == 24
    saver.prune_thread("t", 5)
    assert run_chat(app, "t", 3, start=24)[:24] == texts
    saver.delete_thread("t")
    assert list(saver.client.scan_iter(match=f"{{{saver.prefix}:t}}*")) == []


def test_ids_out_of_order_in_both_cases_page_as_redis_orders_them(
        saver: RedisSaver, raw: redis.Redis) -> None:
    """Ids a collating ``<`` would order otherwise than Redis (case, punctuation): a page
    closes to a new id only when Redis puts it after every id of the page."""
    rng = random.Random(7)
    alphabet = "AaBbZz-_09"
    ids = ["".join(rng.choice(alphabet) for _ in range(12)) for _ in range(400)]
    for cid in ids:
        saver.put({"configurable": {"thread_id": "o", "checkpoint_ns": ""}},
                  Checkpoint(id=cid, ts="2026-01-01T00:00:00+00:00", channel_values={},
                             channel_versions={}, versions_seen={}),
                  {"source": "loop", "step": 0}, {})
    listed = [t.checkpoint.id for t in saver.list({"configurable": {"thread_id": "o"}})]
    assert listed == sorted(set(ids), key=str.encode, reverse=True)
    assert raw.zcard(f"{{{saver.prefix}:o}}:n::pages") >= 4
