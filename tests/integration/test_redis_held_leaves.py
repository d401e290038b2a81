"""A leaf Redis holds already goes to a commit as its field name, not its bytes, and the
commit checks it is there: a leaf pruned since is sent again, never assumed (real Redis).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import ormsgpack
import pytest

from durable_graph.store.redis import RedisSaver
from durable_graph.store.redis.keys import LEAF
from durable_graph.store.redis.records import link_of
from tests.redis_records import prefix_values
from tests.unit.test_leaf_dedup import chat_app

pytestmark = pytest.mark.redis


def text() -> str:
    """1 KB of fresh text: a leaf kept apart."""
    return os.urandom(768).hex()[:1024]


@pytest.fixture
def saver(redis_url: str, redis_prefix: str) -> Iterator[RedisSaver]:
    made = RedisSaver.from_url(redis_url, prefix=f"{redis_prefix}-{uuid.uuid4().hex[:6]}",
                               delta=False)
    yield made
    made.close()


def puts(saver: RedisSaver) -> list[tuple[set[str], set[str]]]:
    """(leaf fields sent with their bytes, leaf fields required: named by the links of the
    values sent, not sent) of every PUT planned from now on, in order."""
    seen: list[tuple[set[str], set[str]]] = []
    real = saver._put_call

    def spy(blobs: Mapping[str, bytes], required: Sequence[str], **kw: Any) -> Any:
        sent = {f for f in blobs if f.startswith(LEAF)}
        named = {g for f, raw in blobs.items() if not f.startswith(LEAF)
                 for g in ormsgpack.unpackb(link_of(raw) or b"\x90")[2:]}
        seen.append((sent, {f for f in [*required, *named] if f.startswith(LEAF)} - sent))
        return real(blobs, required, **kw)

    saver._put_call = spy  # type: ignore[method-assign]
    return seen


def leaves(saver: RedisSaver) -> set[bytes]:
    return {field for _, field in prefix_values(saver.client, saver.prefix)
            if field.startswith(LEAF.encode())}


def say(app: Any, *messages: tuple[str, str]) -> list[str]:
    """One turn with ``messages`` (id, text); the thread's texts after it."""
    config = {"configurable": {"thread_id": "t"}}
    app.invoke({"messages": [{"id": i, "role": "user", "content": c} for i, c in messages]},
               config)
    return [m["content"] if isinstance(m, dict) else m.content
            for m in app.get_state(config).values["messages"]]


def test_a_turn_sends_its_message_once_and_refers_to_the_rest(saver: RedisSaver) -> None:
    app = chat_app(saver)
    first = text()
    say(app, ("m0", first))
    seen = puts(saver)
    second = text()
    assert say(app, ("m1", second)) == [first, second]
    sent = [f for blobs, _ in seen for f in blobs]
    assert len(sent) == 1  # the new message, with the input's checkpoint
    required = set().union(*(req for _, req in seen))
    assert len(required) == 2 and set(sent) < required  # both messages, by name
    assert len(leaves(saver)) == 2


def test_a_leaf_pruned_between_two_commits_is_sent_again(saver: RedisSaver) -> None:
    app = chat_app(saver)
    old, new, other = text(), text(), text()
    say(app, ("m0", old))
    say(app, ("m0", new), ("m1", other))  # an edit: only older checkpoints read ``old``
    before = leaves(saver)
    saver.prune(["t"], strategy="keep_latest")
    gone = before - leaves(saver)
    assert len(gone) == 1  # ``old``'s leaf; the saver's hint still says it is kept
    seen = puts(saver)
    assert say(app, ("m2", old)) == [new, other, old]  # read back: its leaf is stored
    field = next(iter(gone)).decode()
    assert field in seen[0][1] and field not in seen[0][0]  # by name: refused, missing
    # the same commit again, with its bytes (after the first step's, sent with it and
    # refused with it, and the input's alone: put_pair's fallback plans it anew)
    assert [field in blobs for blobs, _ in seen].count(True) == 1
    assert gone <= leaves(saver)
