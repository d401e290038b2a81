"""Record the golden checkpoints: ``python tests/golden/make_golden.py [FORMAT]``.

Writes a store and what it holds (the ids and history lengths recorded) next to
this script. Run it only when the checkpoint format changes on purpose, into new
files: the committed ones are what older releases wrote, and the golden tests
(``tests/unit/test_golden_checkpoints.py``, ``tests/integration/test_golden_redis.py``)
read copies of all of them, so a change that cannot read or resume old threads fails.

Formats (each file keeps the format it was recorded in):

- ``plain`` -> ``checkpoints.sqlite`` + ``expected.json``: unsigned SQLite (schema 1).
- ``signed-v1``/``signed-v2`` -> ``checkpoints-signed-v1.sqlite`` + ``...expected.json``:
  SQLite with values signed under ``GOLDEN_KEY``; v1 was recorded by the release before
  signatures were bound to their place (envelopes 0xD1, no record signature, schema 1),
  v2 by the one that binds them (0xD2, signed records, schema 2).
- ``redis-v1``/``redis-v2`` -> ``redis-v1.json``: every key a signed RedisSaver
  wrote under ``GOLDEN_PREFIX`` (needs ``DURABLE_GRAPH_TEST_REDIS_URL``), same versions.
- ``signed-v3``/``redis-v3``: list channels stored as deltas (SQLite schema 3, its
  ``chains`` table; Redis chain fields beside the values) with a whole snapshot every
  ``GOLDEN_SNAPSHOT_EVERY`` deltas, and each step's applied writes retired by the
  step after it. These also hold the ``chat`` thread (``DELTA_THREADS``).
- ``redis-v4``: as ``redis-v3``, with each checkpoint's record packed in one string
  key (``records.pack_record``) instead of a hash.
- ``signed-v4``/``redis-v5``: as ``signed-v3``/``redis-v4``, with each delta one flat
  msgpack record (``delta.pack_delta``, extension code 13) instead of a dataclass
  record; SQLite schema 4 also keeps a row's parent id, timestamp and versions seen
  as BLOBs and serializer tags as one-byte codes (``store/sqlite_row.py``).
- ``signed-v5``: as ``signed-v4`` (SQLite schema 5), with each chat message padded by
  ``LEAF_PAD`` so its text is a large leaf kept once per thread (the ``leaves`` table,
  ``store/leaves.py``: the input refers to it, and so do the deltas and writes).
- ``signed-v6``: as ``signed-v5`` (SQLite schema 6), with a checkpoint row's versions,
  versions seen and metadata packed, and each leaf deflated (``store/sqlite_row.py``,
  ``store/sqlite_leaves.py``).
- ``signed-v7``: as ``signed-v6`` (SQLite schema 7), with channel and node names by
  number (the ``names`` table, ``store/sqlite_names.py``), a row's own and its
  parent's own versions by their steps (``store/sqlite_named.py``), the timestamp
  after the time in the checkpoint id and a step's metadata as one integer
  (``store/sqlite_row.py``).
- ``plain-v7``: as ``signed-v7``, unsigned, with each chat input canonical base64
  (``BASE64_TEXT``): its leaves are ``B`` cells, and the plain value rows that refer to
  them keep their references in the value alone (``leaves`` column ``'v'``,
  ``store/sqlite_leaves.py``).
- ``signed-v8``/``plain-v8``: as ``signed-v7``/``plain-v7`` (SQLite schema 8), with each
  branch channel's None marked in its checkpoint row's versions instead of a value row
  (``store/sqlite_named.py``'s ``pack_marked``), and each delta's link to its base in
  its value row (the ``link`` column, ``store/sqlite_links.py``): no ``chains`` table.
- ``signed-v8z``/``plain-v8z``: as ``signed-v8``/``plain-v8`` (still schema 8), with each
  value and write row whose bytes deflate by an eighth stored deflated with the LangChain
  framing as dictionary (``sqlite_row.pack_blob``, tag codes 5 to 8), which a release
  before them refuses as a code it lacks; ``blobs`` and ``leaves`` are rowid tables.
- ``signed-v9``/``plain-v9``: as ``signed-v8z``/``plain-v8z`` (SQLite schema 9), with each
  leaf's cell alone in a ``leaf_cells`` row and its thread, digest, count and cell number
  in ``leaf_refs`` (``store/sqlite_leaves.py``); ``leaves`` is a read-only view of the two.
- ``signed-v10``/``plain-v10``: as ``signed-v9``/``plain-v9`` (SQLite schema 10), with each
  checkpoint id in the ``checkpoints`` key as its 16 bytes (``store/sqlite_ids.py``).
- ``signed-v11``/``plain-v11``: as ``signed-v10``/``plain-v10`` (SQLite schema 11), with each
  parent that is the checkpoint before its child stored as the empty blob ``PREVIOUS``
  (``store/sqlite_parents.py``).
- ``signed-v12``/``plain-v12``: as ``signed-v11``/``plain-v11`` (SQLite schema 12), with each
  thread in the row tables by its key, a number in ``thread_keys`` kept as a blob
  (``store/sqlite_threads.py``).
- ``redis-v6``: as ``redis-v5``, with the chat padded as ``signed-v5``: each text is a
  leaf field of the blobs hash, kept once, listed in the chain field of every value
  that refers to it (``store/redis/leafblobs.py``); such a value's tag starts with
  ``&`` (``records.REFERS_LEAVES``), which a reader older than v6 refuses.
- ``redis-v7``: as ``redis-v6``, with no ``versions`` field in a checkpoint record whose
  versions are all ints: they are read back from its ``refs`` (``records.record_versions``).
- ``redis-v8``: as ``redis-v7``, with each leaf field a cell (``deflate.pack_leaf``: the
  chat's prose deflated, ``z``) and each value whose bytes deflate by an eighth stored so,
  its tag after ``%`` (``records.DEFLATED``), which a reader older than v8 refuses; each
  record keeps ``ts`` as microseconds after its id's time (``t``) and no ``v`` "1".
- ``redis-v9``: as ``redis-v8``, with a record's keys shortened (``r`` for the refs), its
  parent as UUID bytes and its versions seen and metadata as msgpack
  (``records.pack_record``); each changed scalar of at most ``INLINE_MAX`` bytes kept in
  the refs (``[field, value]``) instead of a field, written out as one by the commit of
  a child that reads it unchanged; and each delta link at the head of its value
  (``records.linked``, first byte 3) instead of a chain field. A reader older than v9
  refuses all three loudly.
- ``redis-v10``: as ``redis-v9``, with each value and pending write whose bytes deflate by
  an eighth deflated with the LangChain framing as the preset dictionary
  (``deflate.FRAMING``), its tag after ``%%`` (``records.FRAMED``): a reader of v8 or v9
  takes it for ``%``, cannot inflate it without the dictionary and refuses it loudly.
- ``redis-v11``: as ``redis-v10``, with a namespace's checkpoint ids in pages of at most
  ``keys.ID_PAGE_MAX`` (``pg:<name>`` sorted sets, named in a ``pages`` directory) instead
  of one ``idx`` sorted set, and each page's records in one string (``rc:<name>``, a
  member locating its record) instead of a key each (``store/redis/history.py``); a record
  split in what the scripts read (parent, refs) and the rest deflated with
  ``deflate.RECORD_FRAMING`` (``records.SPLIT``, first byte 0xC1). The
  ``idx`` key holds a text (``keys.ID_PAGES_MARK``): a reader older than v11 fails on it
  loudly (WRONGTYPE).
- ``redis-v12``: as ``redis-v11``, with a namespace's values and leaves in value pages
  (``vpg:<name>`` sorted sets of fields, named in a ``vpages`` directory, each page's values
  in one string, ``vh:<name>``) instead of one ``blobs`` hash (``store/redis/history.py``,
  ``VALS``). The ``blobs`` key holds a text (``keys.VALUES_MARK``): a reader older than v12
  fails on it loudly (WRONGTYPE).
- ``redis-v13``: as ``redis-v12``, with each split record's head (parent, refs) kept compact
  by the scripts (``store/redis/compact.py``, first byte 0xC2): channels numbered in
  the namespace's ``chn`` key, versions in 6 bytes, the parent raw.

The graphs live here so the test builds exactly the same ones. Threads:

- ``complete``: a 3-node chain a -> b -> c that finished.
- ``interrupted``: ``ask`` paused on ``interrupt("approve?")``; ``after`` follows.
- ``failed``: ``ok`` and ``flaky`` ran in parallel; ``ok`` finished, ``flaky`` raised.
- ``entry``: an ``@entrypoint`` whose two ``@task`` calls finished before it raised.
- ``chat`` (delta formats only): ``CHAT_TURNS`` turns of an ``add_messages`` chat with
  an ``operator.add`` log, with edits and a removal by id, so its values are delta
  chains across whole snapshots.
"""

from __future__ import annotations

import base64
import hashlib
import json
import operator
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Annotated, Any, TypedDict

from durable_graph import (
    END,
    START,
    RemoveMessage,
    SqliteSaver,
    StateGraph,
    add_messages,
    entrypoint,
    interrupt,
    task,
)
from durable_graph.store.codec import SignedSerializer, SigningCodec
from durable_graph.store.serde import TypedSerializer

HERE = Path(__file__).resolve().parent
DB_NAME = "checkpoints.sqlite"
EXPECTED_NAME = "expected.json"
THREADS = ("complete", "interrupted", "failed", "entry")
GOLDEN_KEY = "golden-test-key-not-secret-" + "0123456789abcdef" * 2
"""The (public, test-only) signing key the signed golden stores were written with."""
GOLDEN_PREFIX = "dg-golden"
"""Key prefix the Redis golden stores were written under."""
SQLITE_FORMATS = {"signed-v1": "checkpoints-signed-v1.sqlite",
                  "signed-v2": "checkpoints-signed-v2.sqlite",
                  "signed-v3": "checkpoints-signed-v3.sqlite",
                  "signed-v4": "checkpoints-signed-v4.sqlite",
                  "signed-v5": "checkpoints-signed-v5.sqlite",
                  "signed-v6": "checkpoints-signed-v6.sqlite",
                  "signed-v7": "checkpoints-signed-v7.sqlite",
                  "plain-v7": "checkpoints-plain-v7.sqlite",
                  "signed-v8": "checkpoints-signed-v8.sqlite",
                  "plain-v8": "checkpoints-plain-v8.sqlite",
                  "signed-v8z": "checkpoints-signed-v8z.sqlite",
                  "plain-v8z": "checkpoints-plain-v8z.sqlite",
                  "signed-v9": "checkpoints-signed-v9.sqlite",
                  "plain-v9": "checkpoints-plain-v9.sqlite",
                  "signed-v10": "checkpoints-signed-v10.sqlite",
                  "plain-v10": "checkpoints-plain-v10.sqlite",
                  "signed-v11": "checkpoints-signed-v11.sqlite",
                  "plain-v11": "checkpoints-plain-v11.sqlite",
                  "signed-v12": "checkpoints-signed-v12.sqlite",
                  "plain-v12": "checkpoints-plain-v12.sqlite"}
UNSIGNED_FORMATS = frozenset({"plain-v7", "plain-v8", "plain-v8z", "plain-v9", "plain-v10",
                              "plain-v11", "plain-v12"})
"""SQLite formats recorded without signing (as ``plain``, ``DB_NAME``)."""
REDIS_FORMATS = {"redis-v1": "redis-v1.json", "redis-v2": "redis-v2.json",
                 "redis-v3": "redis-v3.json", "redis-v4": "redis-v4.json",
                 "redis-v5": "redis-v5.json", "redis-v6": "redis-v6.json",
                 "redis-v7": "redis-v7.json", "redis-v8": "redis-v8.json",
                 "redis-v9": "redis-v9.json", "redis-v10": "redis-v10.json",
                 "redis-v11": "redis-v11.json", "redis-v12": "redis-v12.json",
                 "redis-v13": "redis-v13.json"}
DELTA_FORMATS = frozenset({"signed-v3", "signed-v4", "signed-v5", "signed-v6", "signed-v7",
                           "plain-v7", "signed-v8", "plain-v8", "signed-v8z", "plain-v8z",
                           "signed-v9", "plain-v9", "signed-v10", "plain-v10", "signed-v11",
                           "plain-v11", "signed-v12", "plain-v12", "redis-v3", "redis-v4",
                           "redis-v5", "redis-v6", "redis-v7", "redis-v8", "redis-v9",
                           "redis-v10", "redis-v11", "redis-v12", "redis-v13"})
"""Formats recorded with delta storage (and the ``chat`` thread)."""
LEAF_FORMATS = frozenset({"signed-v5", "signed-v6", "signed-v7", "signed-v8", "signed-v8z",
                          "signed-v9", "signed-v10", "signed-v11", "signed-v12", "redis-v6",
                          "redis-v7", "redis-v8", "redis-v9", "redis-v10", "redis-v11",
                          "redis-v12", "redis-v13"})
"""Formats whose chat messages are large leaves (each padded with ``LEAF_PAD``)."""
LEAF_PAD = " " + "lorem ipsum dolor sit amet " * 12
"""What a leaf format's chat messages end with: over ``leaves.LEAF_MIN`` bytes each."""
BASE64_FORMATS = frozenset({"plain-v7", "plain-v8", "plain-v8z", "plain-v9", "plain-v10",
                            "plain-v11", "plain-v12"})
"""Formats whose chat inputs are canonical base64 (``say`` with ``BASE64_TEXT``)."""
BASE64_TEXT = "<base64>"
"""``pad_of`` a base64 format: each input is the base64 of its words and 300 bytes
that do not deflate (an image's, say), so it is kept as a ``B`` cell."""
DELTA_THREADS = ("chat",)
GOLDEN_SNAPSHOT_EVERY = 3
"""Deltas between whole values in the delta golden stores: chains restart within ``chat``."""
CHAT_TURNS = 8


def golden_serde() -> SignedSerializer:
    """The serializer the signed golden stores were written with."""
    return SignedSerializer(TypedSerializer(), SigningCodec.from_secret(GOLDEN_KEY))


def serde_of(store_name: str) -> SignedSerializer | None:
    """The serializer a golden SQLite store was written with (None: the default)."""
    unsigned = {DB_NAME} | {SQLITE_FORMATS[f] for f in UNSIGNED_FORMATS}
    return None if store_name in unsigned else golden_serde()


def expected_name(store_name: str) -> str:
    """Where what a golden store holds is recorded."""
    return EXPECTED_NAME if store_name == DB_NAME else f"{store_name}.expected.json"


class State(TypedDict, total=False):
    x: int
    log: Annotated[list[str], operator.add]


class Runs:
    """Counts executions and decides whether the failing nodes fail."""

    def __init__(self, fail: bool) -> None:
        self.fail = fail
        self.count: Counter[str] = Counter()

    def hit(self, name: str) -> None:
        self.count[name] += 1


def chain_graph(saver: SqliteSaver, runs: Runs) -> Any:
    def make(name: str) -> Any:
        def node(state: State) -> State:
            runs.hit(name)
            return {"log": [name], "x": state.get("x", 0) + 1}

        return node

    b = StateGraph(State)
    for name in ("a", "b", "c"):
        b.add_node(name, make(name))
    b.add_edge(START, "a")
    b.add_edge("a", "b")
    b.add_edge("b", "c")
    b.add_edge("c", END)
    return b.compile(checkpointer=saver)


def interrupt_graph(saver: SqliteSaver, runs: Runs) -> Any:
    def ask(state: State) -> State:
        runs.hit("ask")
        answer = interrupt("approve?")
        return {"log": [f"ask:{answer}"]}

    def after(state: State) -> State:
        runs.hit("after")
        return {"log": ["after"]}

    b = StateGraph(State)
    b.add_node("ask", ask)
    b.add_node("after", after)
    b.add_edge(START, "ask")
    b.add_edge("ask", "after")
    b.add_edge("after", END)
    return b.compile(checkpointer=saver)


def failing_graph(saver: SqliteSaver, runs: Runs) -> Any:
    def ok(state: State) -> State:
        runs.hit("ok")
        return {"log": ["ok"]}

    def flaky(state: State) -> State:
        runs.hit("flaky")
        if runs.fail:
            raise RuntimeError("flaky failed")
        return {"log": ["flaky"]}

    def join(state: State) -> State:
        runs.hit("join")
        return {"x": len(state["log"])}

    b = StateGraph(State)
    b.add_node("ok", ok)
    b.add_node("flaky", flaky)
    b.add_node("join", join)
    b.add_edge(START, "ok")
    b.add_edge(START, "flaky")
    b.add_edge(["ok", "flaky"], "join")
    b.add_edge("join", END)
    return b.compile(checkpointer=saver)


def entry_graph(saver: SqliteSaver, runs: Runs) -> Any:
    @task
    def square(n: int) -> int:
        runs.hit(f"square{n}")
        return n * n

    @entrypoint(checkpointer=saver)
    def workflow(n: int) -> dict[str, Any]:
        runs.hit("workflow")
        values = [square(i).result() for i in range(1, n + 1)]
        if runs.fail:
            raise RuntimeError("workflow failed after its tasks")
        return {"squares": values}

    return workflow


class ChatState(TypedDict, total=False):
    messages: Annotated[list[Any], add_messages]
    log: Annotated[list[str], operator.add]


def content_of(message: Any) -> str:
    """A message's text: a dict's, or a LangChain message's (with langchain_core installed)."""
    return str(message["content"] if isinstance(message, dict) else message.content)


def id_of(message: Any) -> str:
    return str(message["id"] if isinstance(message, dict) else message.id)


def chat_graph(saver: Any, runs: Runs) -> Any:
    """One ``reply`` node per turn: it answers the last message and logs the turn."""

    def reply(state: ChatState) -> ChatState:
        runs.hit("reply")
        n = len(state["messages"])
        text = f"re: {content_of(state['messages'][-1])}"
        return {"messages": [{"id": f"r{n}", "role": "ai", "content": text}],
                "log": [f"turn{n}"]}

    b = StateGraph(ChatState)
    b.add_node("reply", reply)
    b.add_edge(START, "reply")
    b.add_edge("reply", END)
    return b.compile(checkpointer=saver)


def pad_of(store_name: str) -> str:
    """What the chat messages of a golden store end with (``LEAF_PAD`` for leaf formats,
    ``BASE64_TEXT`` for base64 ones)."""
    if store_name in {SQLITE_FORMATS[f] for f in BASE64_FORMATS}:
        return BASE64_TEXT
    leafy = {SQLITE_FORMATS.get(f, REDIS_FORMATS.get(f)) for f in LEAF_FORMATS}
    return LEAF_PAD if store_name in leafy else ""


def say(words: str, pad: str) -> str:
    """A chat input's text: ``words`` and ``pad``, or for ``BASE64_TEXT`` the base64 of
    ``words`` and 300 bytes derived from them that do not deflate."""
    if pad != BASE64_TEXT:
        return words + pad
    raw = words.encode()
    return base64.b64encode(raw + hashlib.shake_256(raw).digest(300)).decode()


def chat_turn(turn: int, pad: str = "") -> dict[str, Any]:
    """The input of one chat turn: a new message; turn 3 edits m1, turn 5 removes m2."""
    new: list[Any] = [{"id": f"m{turn}", "role": "user", "content": say(f"hello {turn}", pad)}]
    if turn == 3:
        new.append({"id": "m1", "role": "user", "content": say("hello 1, edited", pad)})
    if turn == 5:
        new.append(RemoveMessage(id="m2"))
    return {"messages": new}


def chat_messages(turns: int, pad: str = "") -> list[tuple[str, str]]:
    """(id, content) of the chat's messages after ``turns`` turns, as a run leaves them."""
    out: list[tuple[str, str]] = []
    for turn in range(turns):
        out.append((f"m{turn}", say(f"hello {turn}", pad)))
        if turn == 3:
            out = [("m1", say("hello 1, edited", pad)) if i == "m1" else (i, c) for i, c in out]
        if turn == 5:
            out = [(i, c) for i, c in out if i != "m2"]
        out.append((f"r{len(out)}", f"re: {out[-1][1]}"))
    return out


def run_chat(saver: Any, pad: str = "") -> None:
    """Run the ``chat`` thread's turns against ``saver``."""
    graph = chat_graph(saver, Runs(fail=False))
    for turn in range(CHAT_TURNS):
        graph.invoke(chat_turn(turn, pad), config("chat"), durability="sync")


def config(thread: str) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread}}


def run_threads(saver: Any) -> None:
    """Run every golden thread once against ``saver``."""
    runs = Runs(fail=True)
    chain_graph(saver, runs).invoke({"x": 0}, config("complete"), durability="sync")
    interrupt_graph(saver, runs).invoke({"x": 0}, config("interrupted"), durability="sync")
    try:
        failing_graph(saver, runs).invoke({"x": 0}, config("failed"), durability="sync")
    except RuntimeError:
        pass
    else:
        raise AssertionError("the failed thread did not fail")
    try:
        entry_graph(saver, runs).invoke(2, config("entry"), durability="sync")
    except RuntimeError:
        pass
    else:
        raise AssertionError("the entry thread did not fail")


def describe(saver: Any, threads: tuple[str, ...] = THREADS) -> dict[str, Any]:
    """What the golden tests check: ids, steps and pending channels per thread."""
    expected: dict[str, Any] = {}
    for thread in threads:
        history = list(saver.list(config(thread)))
        expected[thread] = {
            "checkpoint_ids": [t.checkpoint.id for t in history],
            "steps": [t.metadata.get("step") for t in history],
            "pending_channels": sorted(w.channel for w in history[0].pending_writes),
        }
    return expected


def _threads_of(delta: bool) -> tuple[str, ...]:
    return (*THREADS, *DELTA_THREADS) if delta else THREADS


def _run_all(saver: Any, delta: bool, pad: str = "") -> dict[str, Any]:
    run_threads(saver)
    if delta:
        run_chat(saver, pad)
    return describe(saver, _threads_of(delta))


def _delta_options(delta: bool) -> dict[str, Any]:
    """Saver options of a format: deltas with short chains, or whole values (older formats)."""
    return {"snapshot_every": GOLDEN_SNAPSHOT_EVERY} if delta else {"delta": False}


def record(
    directory: Path, name: str = DB_NAME, signed: bool = False, delta: bool = False
) -> dict[str, Any]:
    """Run every golden thread into the SQLite file ``directory/name``; return what was stored."""
    db = directory / name
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    with SqliteSaver(db, serde=golden_serde() if signed else None,
                     **_delta_options(delta)) as saver:
        expected = _run_all(saver, delta, pad_of(name))
        saver._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    _write_expected(directory, name, expected)
    return expected


def _write_expected(directory: Path, name: str, expected: dict[str, Any]) -> None:
    text = json.dumps(expected, indent=2, sort_keys=True) + "\n"
    (directory / expected_name(name)).write_text(text)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def export_redis(client: Any, prefix: str) -> list[dict[str, Any]]:
    """Every key under ``prefix`` as JSON-able records (type, name and content, base64)."""
    out = []
    for pattern in (f"{prefix}*", f"{{{prefix}*"):
        for key in sorted(client.scan_iter(match=pattern, count=1000)):
            kind = client.type(key).decode()
            if kind == "hash":
                content: Any = {_b64(k): _b64(v) for k, v in client.hgetall(key).items()}
            elif kind == "zset":
                content = [[_b64(m), s] for m, s in client.zrange(key, 0, -1, withscores=True)]
            elif kind == "set":
                content = sorted(_b64(m) for m in client.smembers(key))
            elif kind == "string":
                content = _b64(client.get(key))
            else:
                continue  # streams of run events: not part of a thread's state
            out.append({"key": _b64(key), "type": kind, "content": content})
    return out


def import_redis(client: Any, records: list[dict[str, Any]], rename: tuple[str, str]) -> None:
    """Write exported keys back, replacing ``rename[0]`` by ``rename[1]`` in key names."""
    old, new = (r.encode() for r in rename)
    for rec in records:
        key = base64.b64decode(rec["key"]).replace(old, new, 1)
        content = rec["content"]
        if rec["type"] == "hash":
            client.hset(key, mapping={base64.b64decode(k): base64.b64decode(v)
                                      for k, v in content.items()})
        elif rec["type"] == "zset":
            client.zadd(key, {base64.b64decode(m): s for m, s in content})
        elif rec["type"] == "set":
            client.sadd(key, *[base64.b64decode(m) for m in content])
        else:
            client.set(key, base64.b64decode(content))


def record_redis(
    directory: Path, name: str, url: str, delta: bool = False,
) -> dict[str, Any]:
    """Run every golden thread into Redis under ``GOLDEN_PREFIX``; export it to ``name``."""
    import redis

    from durable_graph.store.redis import RedisSaver

    client = redis.Redis.from_url(url)
    for pattern in (f"{GOLDEN_PREFIX}*", f"{{{GOLDEN_PREFIX}*"):
        for key in client.scan_iter(match=pattern):
            client.delete(key)
    with RedisSaver.from_url(url, prefix=GOLDEN_PREFIX, serde=golden_serde(),
                             **_delta_options(delta)) as saver:
        expected = _run_all(saver, delta, pad_of(name))
    data = {"prefix": GOLDEN_PREFIX, "keys": export_redis(client, GOLDEN_PREFIX)}
    (directory / name).write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    _write_expected(directory, name, expected)
    for pattern in (f"{GOLDEN_PREFIX}*", f"{{{GOLDEN_PREFIX}*"):
        for key in client.scan_iter(match=pattern):
            client.delete(key)
    return expected


if __name__ == "__main__":
    fmt = sys.argv[1] if len(sys.argv) > 1 else "plain"
    if fmt == "plain":
        result = record(HERE)
    elif fmt in SQLITE_FORMATS:
        result = record(HERE, SQLITE_FORMATS[fmt], signed=fmt not in UNSIGNED_FORMATS,
                        delta=fmt in DELTA_FORMATS)
    elif fmt in REDIS_FORMATS:
        url = os.environ.get("DURABLE_GRAPH_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
        result = record_redis(HERE, REDIS_FORMATS[fmt], url, delta=fmt in DELTA_FORMATS)
    else:
        known = ", ".join(["plain", *SQLITE_FORMATS, *REDIS_FORMATS])
        raise SystemExit(f"unknown format {fmt!r}: one of {known}")
    print(json.dumps(result, indent=2))
