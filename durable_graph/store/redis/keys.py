"""Every Redis key the saver uses, built in this one module.

Layout (``P`` is the saver prefix, ``T`` the escaped thread id, ``N`` the escaped
checkpoint namespace)::

    {P:T}:rec                  hash  thread record: status, last checkpoint, errors, ttl
    {P:T}:lease                hash  lease: owner, generation (fencing token), expiry
    {P:T}:ns                   hash  namespace name -> namespace key base ``{P:T}:n:N``
    {P:T}:n:N:pages            zset  names of the namespace's id pages (redis-v11), score 0
    {P:T}:n:N:pg:<name>        zset  one page: up to ``ID_PAGE_MAX`` checkpoint ids, all score 0,
                               so lexical order = time order; named by a lower bound of its
                               ids (the first it held), it holds those up to the next name;
                               a member is the id, NUL, "offset,length" of its record in
                               the page's ``rc`` (the id alone: the record is a ``cp`` key)
    {P:T}:n:N:rc:<name>        str   the packed records of a page's checkpoints, one after
                               another (``history.py``)
    {P:T}:n:N:idx              zset  every checkpoint id of a namespace written before
                               redis-v11 (still read and written for such a namespace);
                               str ``ID_PAGES_MARK`` in a paged namespace
    {P:T}:n:N:blobs            hash  (before redis-v12; str ``VALUES_MARK`` in a namespace with
                               value pages) "channel\\0version" -> tag "\\0" bytes (one per version;
                               deflated, tag after "%", when that pays: redis-v8; headed
                               by its link [base field or '', depth, leaf fields] when it
                               is a delta or refers to leaves: redis-v9, ``records.linked``);
                               "\\1chain\\0" field -> that link (``chain_field``, v3 to v8);
                               "\\2leaf\\0" digest -> a large leaf kept
                               once (``leaf_field``, redis-v6: ``leafblobs``; a deflate or
                               base64 cell since v8: ``deflate.pack_leaf``)
    {P:T}:n:N:vpages           zset  names of the namespace's value pages (redis-v12), as ``pages``
    {P:T}:n:N:vpg:<name>       zset  one value page: up to ``ID_PAGE_MAX`` value fields (the
                               ``blobs`` field names below), each with NUL, "offset,length"
                               of its bytes in the page's ``vh`` (or NUL, "-": in ``v:``)
    {P:T}:n:N:vh:<name>        str   the stored values of a value page, one after another
    {P:T}:n:N:v:<field>        str   a value over ``history.RECORD_IN_PAGE_MAX`` bytes
    {P:T}:n:N:cp:<id>          string  one checkpoint (before redis-v11, or a record over
                               ``history.RECORD_IN_PAGE_MAX`` bytes), packed: parent, ts,
                               v, versions, seen, metadata, refs; versions only if
                               refs cannot give them back (redis-v7; a hash before v4);
                               ts as t (after the id's time) and no v "1" (redis-v8);
                               short keys, the parent's UUID bytes, seen and metadata as
                               msgpack, and small changed values in the refs (redis-v9)
    {P:T}:n:N:w:<id>           hash  pending writes of one checkpoint: "task_id:idx" -> write
    {P:T}:n:N:wt:<id>:<task>   set   @task calls a suspended task waits on (distributed)
    {P:T}:n:N:wk:<id>:<task>   str   the signed job that replays the task once they are done
    {P:T}:ev:<run>             stream events of one distributed run, read by its producer
    P:graph:<sha256>           str   a signed cloudpickled graph shipped by a producer
    {P:status:B}:<status>      zset  thread ids by status, score = updated-at (ms); B = bucket
    {P:jobs:B}:owed            hash  job key -> its signed message, until the job ends (B = bucket)
    {P:jobs:B}:due             zset  job key -> when it was (re)sent, while nobody claimed it
    {P:jobs:B}:claim           hash  job key -> the worker process running it
    {P:jobs:B}:deaths          hash  job key -> executions that ended with their process dying
    {P:jobs:B}:count           hash  thread id -> how many of its jobs are owed
    {P:jobs:B}:idle            zset  thread id -> deadline of a running thread that owes no job
    {P:live:w}                 zset  worker process id -> heartbeat expiry (ms)
    {P:probe:q}:<queue>        hash  the queue's probe: when the last was sent, newest one seen

Job keys are bucketed by their thread (the same CRC as the status index), so every
update of one job, and of its thread's owed count, is one script on one slot.

Every key of a thread carries the hash tag ``{P:T}``, so a thread's atomic commit
(a Lua script) touches a single slot and runs unchanged on Redis Cluster. The
thread id is escaped so it never contains ``:``, ``{`` or ``}``: two threads can
never share a key, and the status-index tags (which contain a second ``:``) can
never collide with a thread's tag. Cross-thread indexes are sharded over
``STATUS_BUCKETS`` tags so they spread over the cluster instead of one hot slot.

Lua scripts receive namespace key bases from Python (or from the ``{P:T}:ns``
hash) and append the suffix constants below, so key names are only ever composed
from this module's pieces (the commit script, on a single Redis, also takes the
thread's tag from a namespace base: it ends at the last ``NAMESPACE``).
"""

from __future__ import annotations

import base64
import re
import zlib
from dataclasses import dataclass

__all__ = [
    "BLOBS",
    "CHAIN",
    "CHANNEL_NAMES",
    "CHECKPOINT",
    "ESCAPES",
    "ID_DIR_V13",
    "ID_PAGE",
    "ID_PAGES",
    "ID_PAGES_MARK",
    "ID_PAGES_MARK_V13",
    "ID_PAGE_MAX",
    "INDEX",
    "LEAF",
    "LEASE",
    "NAMESPACE",
    "NAMESPACES",
    "PAGE_RECORDS",
    "RECORD",
    "STATUS_BUCKETS",
    "STATUS_TAG",
    "VALUE",
    "VALUES_MARK",
    "VALUES_MARK_V13",
    "VALUE_DIR_V13",
    "VALUE_HEAP",
    "VALUE_PAGE",
    "VALUE_PAGES",
    "WRITES",
    "JobKeys",
    "NamespaceKeys",
    "ThreadKeys",
    "blob_field",
    "chain_field",
    "escape",
    "graph_key",
    "job_buckets",
    "jobs_of",
    "leaf_digest",
    "leaf_field",
    "live_key",
    "probe_key",
    "status_bucket",
    "status_key",
    "status_keys",
    "thread_from_record_key",
    "thread_record_pattern",
    "unescape",
    "write_field",
]

INDEX = ":idx"
"""Suffix of a namespace's history index before redis-v11 (one sorted set of every id)."""
ID_PAGES = ":pages"
"""Suffix of a namespace's page directory (redis-v11): the names of its id pages."""
ID_DIR_V13 = ":idir"
"""Suffix of the page directory of a namespace that keeps its ids compact (redis-v13); its
``pages`` key then holds ``ID_PAGES_MARK_V13``, a text a release older than v13 fails on."""
ID_PAGE = ":pg:"
"""Infix before a page's name: ``<ns base>:pg:<name>``, a sorted set of checkpoint ids."""
ID_PAGES_MARK = "checkpoint ids in pages (redis-v11): read this thread with a newer durable-graph"
"""What a paged namespace keeps at its ``idx`` key (a text, not a sorted set): a release
older than redis-v11 fails loudly on it (WRONGTYPE) instead of finding no checkpoint."""
CHANNEL_NAMES = ":chn"
"""Suffix of a namespace's channel names (redis-v13, ``compact``): each name and a NUL,
numbered from 1 in that order by the compact records of its checkpoints."""
ID_PAGES_MARK_V13 = "checkpoint ids in pages, as bytes (redis-v13): read with a newer durable-graph"
"""``ID_PAGES_MARK`` of a namespace created since redis-v13 whose ids are canonical UUIDs:
its page members hold their 16 bytes (``compact``)."""
PAGE_RECORDS = ":rc:"
"""Infix before a page's name: ``<ns base>:rc:<name>``, the records of its checkpoints."""
ID_PAGE_MAX = 120
"""Ids a page holds at most (one more for an instant while it splits): below Redis's
default ``zset-max-listpack-entries`` (128), so every page keeps the compact listpack
encoding, about 45 bytes an id against about 145 in one sorted set of every id. Part of
the stored layout only as a bound: pages of any size read back."""
VALUE_PAGES = ":vpages"
"""Suffix of a namespace's value-page directory (redis-v12): the names of its value pages."""
VALUE_DIR_V13 = ":vdir"
"""Suffix of the value-page directory of a namespace that keeps its fields compact
(redis-v13); its ``vpages`` key then holds ``VALUES_MARK_V13``."""
VALUE_PAGE = ":vpg:"
"""Infix before a value page's name: ``<ns base>:vpg:<name>``, a sorted set of value fields."""
VALUE_HEAP = ":vh:"
"""Infix before a value page's name: ``<ns base>:vh:<name>``, the values of its fields."""
VALUE = ":v:"
"""Infix before a value field: ``<ns base>:v:<field>``, a value too large for a page."""
VALUES_MARK = "values in pages (redis-v12): read this thread with a newer durable-graph"
"""What a namespace with value pages keeps at its ``blobs`` key (a text, not a hash): a
release older than redis-v12 fails loudly on it (WRONGTYPE) instead of finding no value."""
VALUES_MARK_V13 = "values in pages, fields compact (redis-v13): read with a newer durable-graph"
"""``VALUES_MARK`` of a namespace created since redis-v13: its value fields and links are
kept compact (``compact``)."""
BLOBS = ":blobs"
"""Suffix of a namespace's channel-value hash."""
CHECKPOINT = ":cp:"
"""Infix before a checkpoint id: ``<ns base>:cp:<id>``."""
WRITES = ":w:"
"""Infix before a checkpoint id: ``<ns base>:w:<id>``."""
STATUS_BUCKETS = 16
"""Shards of the status index; part of the stored layout, never change it."""
STATUS_TAG = ":status:"
"""Between the prefix and the bucket in a status shard's hash tag: ``{P:status:B}:<status>``."""
RECORD = ":rec"
"""Suffix of a thread record after the thread's tag: ``{P:T}:rec``."""
LEASE = ":lease"
"""Suffix of a thread's lease after the thread's tag: ``{P:T}:lease``."""
NAMESPACES = ":ns"
"""Suffix of a thread's namespace hash after the thread's tag: ``{P:T}:ns``."""
NAMESPACE = ":n:"
"""Between the thread's tag and the escaped namespace in a namespace's key base:
``{P:T}:n:N`` (N holds no ``:``, so the last ``:n:`` ends the tag)."""

ESCAPES = {"%": "%25", ":": "%3A", "{": "%7B", "}": "%7D"}
"""What ``escape`` replaces in an id, and with what (``unescape`` reverses it)."""
_ESCAPE_RE = re.compile("[%:{}]")
_UNESCAPE_RE = re.compile("%(25|3A|7B|7D)")
_GLOB_RE = re.compile(r"([*?\[\]\\])")


def escape(text: str) -> str:
    """``text`` with ``% : { }`` percent-escaped, so it can sit inside a hash tag.

    Most ids hold none of them: those are returned as they are without a regex pass
    (every key of a commit is built through here)."""
    if "%" not in text and ":" not in text and "{" not in text and "}" not in text:
        return text
    return _ESCAPE_RE.sub(lambda m: ESCAPES[m.group(0)], text)


def unescape(text: str) -> str:
    """Inverse of ``escape``."""
    return _UNESCAPE_RE.sub(lambda m: chr(int(m.group(1), 16)), text)


@dataclass(frozen=True)
class NamespaceKeys:
    """Keys of one (thread, namespace)."""

    base: str
    """Key base the suffixes are appended to; stored in the thread's ``ns`` hash."""

    @property
    def index(self) -> str:
        """History index: checkpoint ids in a sorted set."""
        return self.base + INDEX

    @property
    def pages(self) -> str:
        """History page directory (redis-v11): the names of the id pages."""
        return self.base + ID_PAGES

    def page(self, name: str) -> str:
        """One id page (redis-v11), named by the first id it held."""
        return self.base + ID_PAGE + name

    def page_records(self, name: str) -> str:
        """The records of one id page's checkpoints (redis-v11), one string."""
        return self.base + PAGE_RECORDS + name

    @property
    def channel_names(self) -> str:
        """The channel names its compact records number (redis-v13, ``compact``)."""
        return self.base + CHANNEL_NAMES

    @property
    def value_pages(self) -> str:
        """Value page directory (redis-v12): the names of the value pages."""
        return self.base + VALUE_PAGES

    def value_page(self, name: str) -> str:
        """One value page (redis-v12): value fields and where their bytes sit."""
        return self.base + VALUE_PAGE + name

    def value_heap(self, name: str) -> str:
        """The values of one value page (redis-v12), one string."""
        return self.base + VALUE_HEAP + name

    def value(self, field: str) -> str:
        """A value kept in a key of its own (redis-v12): over a page's bound."""
        return self.base + VALUE + field

    @property
    def blobs(self) -> str:
        """Channel values, one field per (channel, version)."""
        return self.base + BLOBS

    def checkpoint(self, checkpoint_id: str) -> str:
        """The hash of one checkpoint."""
        return self.base + CHECKPOINT + checkpoint_id

    def writes(self, checkpoint_id: str) -> str:
        """The pending writes of one checkpoint."""
        return self.base + WRITES + checkpoint_id

    def waits(self, checkpoint_id: str, task_id: str) -> str:
        """Call ids a suspended task of ``checkpoint_id`` still waits on."""
        return f"{self.base}:wt:{checkpoint_id}:{task_id}"

    def wake(self, checkpoint_id: str, task_id: str) -> str:
        """The job that replays a suspended task when its calls are done."""
        return f"{self.base}:wk:{checkpoint_id}:{task_id}"


@dataclass(frozen=True)
class ThreadKeys:
    """Keys of one thread, all under the hash tag ``{prefix:thread}``."""

    prefix: str
    """Saver prefix."""
    thread_id: str
    """Thread id, unescaped."""

    @property
    def tag(self) -> str:
        """``{prefix:escaped thread}``: the hash tag shared by every key of the thread."""
        return "{" + f"{self.prefix}:{escape(self.thread_id)}" + "}"

    @property
    def record(self) -> str:
        """Thread record hash."""
        return self.tag + RECORD

    @property
    def lease(self) -> str:
        """Lease hash (owner, generation, expiry)."""
        return self.tag + LEASE

    @property
    def namespaces(self) -> str:
        """Namespace name -> key base hash."""
        return self.tag + NAMESPACES

    def events(self, run_id: str) -> str:
        """Event stream of one distributed run."""
        return f"{self.tag}:ev:{escape(run_id)}"

    def ns(self, checkpoint_ns: str) -> NamespaceKeys:
        """Keys of one namespace of this thread."""
        return NamespaceKeys(self.tag + NAMESPACE + escape(checkpoint_ns))


def blob_field(channel: str, version: object) -> str:
    """Field of one channel value (in the value pages, or the blobs hash before redis-v12)."""
    return f"{channel}\x00{version}"


CHAIN = "\x01chain\x00"
"""Prefix of the blobs-hash field beside a delta value that lists its chain's fields."""


def chain_field(field: str) -> str:
    """Field listing the blob fields a delta value at ``field`` needs (msgpack list)."""
    return CHAIN + field


LEAF = "\x02leaf\x00"
"""Prefix of the value field holding a large leaf kept once (``leafblobs``)."""


def leaf_field(digest: bytes) -> str:
    """Field of the leaf whose SHA-256 is ``digest`` (URL-safe base64, unpadded)."""
    return LEAF + base64.urlsafe_b64encode(digest).decode().rstrip("=")


def leaf_digest(field: str) -> bytes:
    """Inverse of ``leaf_field``."""
    b64 = field[len(LEAF):]
    return base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4))


def write_field(task_id: str, idx: int) -> str:
    """Field of one pending write: ``task_id:idx`` (split on the last colon)."""
    return f"{task_id}:{idx}"


def graph_key(prefix: str, digest: str) -> str:
    """Where a shipped graph blob is stored, by its content hash."""
    return f"{prefix}:graph:{digest}"


def status_bucket(thread_id: str) -> int:
    """The shard of ``thread_id`` in the status index (and in the job-liveness keys)."""
    return zlib.crc32(thread_id.encode()) % STATUS_BUCKETS


def _status_tag(prefix: str, bucket: int) -> str:
    return "{" + f"{prefix}{STATUS_TAG}{bucket}" + "}:"


def key_check_key(prefix: str, key_id: str) -> str:
    """Where workers publish the fingerprint of their signing key ``key_id``."""
    return f"{prefix}:keycheck:{key_id}"


def status_key(prefix: str, thread_id: str, status: str) -> str:
    """The status-index shard holding ``thread_id`` (every status of one thread: one slot)."""
    return _status_tag(prefix, status_bucket(thread_id)) + status


@dataclass(frozen=True)
class JobKeys:
    """The job-liveness keys of one bucket, all under the hash tag ``{prefix:jobs:B}``."""

    prefix: str
    """Saver prefix."""
    bucket: int
    """Shard number, ``crc32(thread id) % STATUS_BUCKETS``."""

    @property
    def tag(self) -> str:
        return "{" + f"{self.prefix}:jobs:{self.bucket}" + "}"

    @property
    def owed(self) -> str:
        """Job key -> signed message of every job a committed step still owes."""
        return self.tag + ":owed"

    @property
    def due(self) -> str:
        """Unclaimed job keys by the time (ms) they were last sent."""
        return self.tag + ":due"

    @property
    def claim(self) -> str:
        """Job key -> id of the worker process running it."""
        return self.tag + ":claim"

    @property
    def deaths(self) -> str:
        """Job key -> executions that ended with their process dying (and ``key:why``)."""
        return self.tag + ":deaths"

    @property
    def count(self) -> str:
        """Thread id -> number of owed jobs."""
        return self.tag + ":count"

    @property
    def idle(self) -> str:
        """Running threads that owe no job, by the deadline (ms) of their lease."""
        return self.tag + ":idle"

    def ordered(self) -> list[str]:
        """The keys in the order every liveness script takes them."""
        return [self.owed, self.due, self.claim, self.deaths, self.count, self.idle]


def jobs_of(prefix: str, thread_id: str) -> JobKeys:
    """The job-liveness bucket of ``thread_id``."""
    return JobKeys(prefix, status_bucket(thread_id))


def job_buckets(prefix: str) -> list[JobKeys]:
    """Every job-liveness bucket of ``prefix``."""
    return [JobKeys(prefix, b) for b in range(STATUS_BUCKETS)]


def live_key(prefix: str) -> str:
    """Heartbeats of the worker processes running jobs of ``prefix``."""
    return "{" + f"{prefix}:live:w" + "}"


def probe_key(prefix: str, queue: str) -> str:
    """The lost-message probe of one queue."""
    return "{" + f"{prefix}:probe:q" + "}:" + escape(queue)


def status_keys(prefix: str, status: str) -> list[str]:
    """Every shard of one status's index."""
    return [_status_tag(prefix, b) + status for b in range(STATUS_BUCKETS)]


def thread_record_pattern(prefix: str, starting: str = "") -> str:
    """SCAN pattern matching every thread record of ``prefix`` (whose id starts with
    ``starting``)."""
    head = _GLOB_RE.sub(r"\\\1", prefix) + ":" + _GLOB_RE.sub(r"\\\1", escape(starting))
    return "{" + head + "*}" + RECORD


def thread_from_record_key(prefix: str, key: str) -> str | None:
    """The thread id of a thread record key, or None if the key is not one."""
    head = "{" + prefix + ":"
    if not (key.startswith(head) and key.endswith("}" + RECORD)):
        return None
    inner = key[len(head) : -len("}" + RECORD)]
    if any(c in inner for c in ":{}"):
        return None
    return unescape(inner)
