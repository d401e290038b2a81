"""One Redis client plus the saver's scripts, with every Redis error made a store error.

Callers see ``CheckpointStoreError`` (naming the server, password redacted)
instead of redis-py's exceptions, and a client built from a URL gets connect and
read timeouts, so an unreachable Redis fails within a bounded time instead of
hanging a graph run. With a ``CommitWait``, every script that commits state is sent
in one pipeline with the ``WAITAOF``/``WAIT`` that makes it durable (the wait must
run on the connection that wrote).
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeAlias, TypeVar

import redis
from redis.backoff import ExponentialBackoff
from redis.cluster import RedisCluster
from redis.commands.core import Script
from redis.exceptions import NoScriptError
from redis.retry import Retry
from redis.utils import HIREDIS_AVAILABLE

from durable_graph.errors import CheckpointStoreError, GraphValueError
from durable_graph.store.redis import job_scripts, scripts
from durable_graph.store.redis.commit_wait import CommitWait
from durable_graph.store.redis.resp import RespPacker

__all__ = ["UNWAITED_SCRIPTS", "Client", "RedisConn", "client_from_url", "redact"]

Client: TypeAlias = "redis.Redis[bytes] | RedisCluster[bytes]"
T = TypeVar("T")

CONNECT_TIMEOUT = 5.0
"""Default seconds to open a connection before giving up."""
SOCKET_TIMEOUT = 10.0
"""Default seconds to wait for a reply; every script is short, so this is generous."""
UNWAITED_SCRIPTS = frozenset({"LOAD", "PAGE", "IDS", "FINISHED", "VALUE_LINK", "ACQUIRE", "RENEW",
                              "RELEASE", "LOAD_RUNNING"})
"""Scripts no commit wait follows: the reads, the leases (a lost lease renewal is
what fencing is for) and a run's start (``LOAD_RUNNING``: a read and the thread's
"running" mark, which ``set_status``'s ``RECORD_STATUS`` never waited for either; the
run's end status replaces it). Every other script writes state a reported result depends
on, so a script added later is waited for unless it is listed here."""


_USERINFO_PASSWORD = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^/?#@:]*):[^/?#@]*@")
_QUERY_PASSWORD = re.compile(r"([?&](?:password|pass|pwd|secret|token|auth)=)[^&#]*",
                             re.IGNORECASE)


def redact(url: str) -> str:
    """``url`` with every password replaced by ``***``, fit for error messages and logs.

    Covers ``user:password@`` in the authority and ``?password=`` (and the like) in
    the query, for TCP and ``unix://`` URLs alike; text that is not a URL is
    returned unchanged.
    """
    return _QUERY_PASSWORD.sub(r"\1***", _USERINFO_PASSWORD.sub(r"\1:***@", url))


def client_from_url(url: str, *, cluster: bool = False, **client_kwargs: Any) -> Client:
    """A client for ``url`` with bounded timeouts and a short retry (caller kwargs win).

    Two quick retries ride out a dropped connection; every script is idempotent
    (same checkpoint id, first-write-wins slots), so a retry after a lost reply is safe.
    A plain pipeline the store sends itself (``_exchange``) may carry other commands: it
    is retried only when it could not be sent.
    A single-node client packs its commands with ``RespPacker`` (the same bytes as
    redis-py's packer, for a fraction of its CPU); hiredis's, when installed, is kept.
    """
    options: dict[str, Any] = {
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "socket_timeout": SOCKET_TIMEOUT,
        "retry": Retry(ExponentialBackoff(cap=0.5, base=0.05), 2),
        **client_kwargs,
    }
    try:
        if cluster:
            return RedisCluster.from_url(url, **options)
        if not HIREDIS_AVAILABLE and "command_packer" not in options:
            options["command_packer"] = RespPacker(options.get("encoding", "utf-8"),
                                                   options.get("encoding_errors", "strict"))
        return redis.Redis.from_url(url, **options)
    except (redis.RedisError, ValueError) as exc:
        raise CheckpointStoreError(f"cannot connect to Redis at {redact(url)}: {exc}") from exc


def _connection_kwargs(client: Any) -> dict[str, Any]:
    """Connection options of a client (untyped in the redis stubs)."""
    return dict(client.get_connection_kwargs())


def _describe(client: Client) -> str:
    """Where ``client`` points, for error messages (never includes a password)."""
    if isinstance(client, RedisCluster):
        nodes = client.get_nodes()
        return "Redis Cluster " + ",".join(n.name for n in nodes[:3])
    kwargs = _connection_kwargs(client)
    if "path" in kwargs:
        return f"unix://{kwargs['path']}"
    return f"redis://{kwargs.get('host', '?')}:{kwargs.get('port', '?')}/{kwargs.get('db', 0)}"


class RedisConn:
    """The client, the registered scripts, and error translation, shared by saver and leases."""

    def __init__(
        self, client: Client, where: str | None = None, commit_wait: CommitWait | None = None
    ) -> None:
        if _connection_kwargs(client).get("decode_responses"):
            raise GraphValueError(
                "RedisSaver stores binary values: build the client with decode_responses=False"
            )
        self.client = client
        self.where = where or _describe(client)
        self.commit_wait: CommitWait | None = None
        """What each committing script waits for (None: the server's reply only)."""
        self.use_commit_wait(commit_wait)
        self._scripts: dict[str, Script] = {}
        self._known: set[str] = set()
        """SHAs of scripts this connection has run on its server (see ``execute``)."""

    def use_commit_wait(self, wait: CommitWait | None) -> None:
        """Make every committing script wait for ``wait`` (None: stop waiting)."""
        if wait is not None and isinstance(self.client, RedisCluster):
            raise GraphValueError(
                "a commit wait (WAITAOF/WAIT) is not supported on Redis Cluster here: set "
                "`appendfsync always` on every primary instead")
        self.commit_wait = wait

    def script(self, name: str) -> Script:
        """The registered script ``scripts.<name>`` or ``job_scripts.<name>`` (registered
        once, run by SHA)."""
        found = self._scripts.get(name)
        if found is None:
            client: Any = self.client  # RedisCluster has it too; the stubs lack it
            source = getattr(scripts, name, None) or getattr(job_scripts, name)
            found = self._scripts[name] = client.register_script(source)
        return found

    def loaded(self, name: str) -> str:
        """The SHA of script ``name``, loaded on the server first unless this connection
        ran it already: for an ``EVALSHA`` sent by hand, whose NOSCRIPT the caller only
        sees later (``JobBook.register_sent``)."""
        script: Any = self.script(name)  # the stubs lack sha and script
        if script.sha not in self._known:
            client: Any = self.client
            client.script_load(script.script)
            self._known.add(script.sha)
        return str(script.sha)

    @contextmanager
    def errors(self, action: str) -> Iterator[None]:
        """Re-raise any Redis error as CheckpointStoreError naming the action and server."""
        try:
            yield
        except redis.RedisError as exc:
            raise CheckpointStoreError(
                f"{action} failed on {self.where}: {type(exc).__name__}: {exc}"
            ) from exc

    def run(self, name: str, keys: Sequence[str], args: Sequence[Any], action: str) -> Any:
        """Run script ``name`` on ``keys`` with ``args``; store errors as CheckpointStoreError."""
        with self.errors(action):
            if self.commit_wait is None or name in UNWAITED_SCRIPTS:
                return self.script(name)(keys=list(keys), args=list(args))
            return self._run_waited(self.script(name), self.commit_wait, keys, args)

    def run_many(
        self, calls: Sequence[tuple[str, Sequence[str], Sequence[Any]]], action: str
    ) -> list[Any]:
        """Several scripts in one round trip, in order (each atomic, not all together);
        their replies. One after another on Redis Cluster (its pipelines refuse
        scripts) or when commits wait (each waits as ``run`` does)."""
        client: Any = self.client
        if self.commit_wait is not None or not isinstance(client, redis.Redis):
            return [self.run(name, keys, args, action) for name, keys, args in calls]
        with self.errors(action):
            pipe = client.pipeline(transaction=False)
            for name, keys, args in calls:
                self.script(name)(keys=list(keys), args=list(args), client=pipe)
            return self.execute(pipe)

    def execute(self, pipe: Any) -> list[Any]:
        """Run ``pipe`` (scripts queued on it as ``Script(client=pipe)``) in one round trip.

        redis-py first asks the server whether a pipeline's scripts exist (``SCRIPT
        EXISTS``, a round trip of its own, every time); that is skipped here once this
        connection has run them. A script the server lost since (a restart, ``SCRIPT
        FLUSH``) fails with NOSCRIPT and nothing else: it is loaded, and the commands
        that failed so are run again, in their order, after the commands that did run:
        a read queued after a lost script may miss its effect (the job paths read again
        what they miss: a task's checkpoint by id). In a MULTI they run again in one
        MULTI of their own (the whole MULTI is not sent again: its other commands, a
        first job's LPUSH, already ran). The first error is raised. A plain pipeline (no
        MULTI, no WATCH) of known scripts is sent and read here (``_exchange``).
        """
        scripts = list(pipe.scripts)
        if all(s.sha in self._known for s in scripts):
            pipe.scripts = set()
        stack = list(pipe.command_stack)
        if pipe.scripts or pipe.transaction or pipe.explicit_transaction or pipe.watching:
            replies = list(pipe.execute(raise_on_error=False))
        else:
            replies = _exchange(pipe, stack)
        lost = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if lost:
            client: Any = self.client
            for s in scripts:
                s.sha = client.script_load(s.script)
            again = client.pipeline(transaction=bool(pipe.transaction or pipe.explicit_transaction))
            for i in lost:
                args, options = stack[i]
                again.execute_command(*args, **options)
            for i, reply in zip(lost, again.execute(raise_on_error=False), strict=True):
                replies[i] = reply
        self._known.update(s.sha for s in scripts)
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies

    def _run_waited(
        self, script: Any, wait: CommitWait, keys: Sequence[str], args: Sequence[Any]
    ) -> Any:
        """The script, then the wait on the connection that ran it; the script's reply."""
        reply, acks = self._pipelined(script.sha, wait, keys, args)
        if isinstance(reply, NoScriptError):  # first use on this server, or after a restart
            client: Any = self.client  # not a cluster: use_commit_wait refused those
            client.script_load(script.script)
            reply, acks = self._pipelined(script.sha, wait, keys, args)
        if isinstance(reply, Exception):
            raise reply
        wait.check(acks, self.where)
        return reply

    def _pipelined(
        self, sha: str, wait: CommitWait, keys: Sequence[str], args: Sequence[Any]
    ) -> list[Any]:
        """EVALSHA and the wait in one pipeline: one connection, one round trip."""
        pipe = self.client.pipeline(transaction=False)
        pipe.evalsha(sha, len(keys), *keys, *args)
        pipe.execute_command(*wait.command())
        return list(pipe.execute(raise_on_error=False))

    def call(self, action: str, fn: Callable[[Client], T]) -> T:
        """Run ``fn(client)`` with Redis errors translated."""
        with self.errors(action):
            return fn(self.client)


def checkout(pool: Any) -> Any:
    """A connection from ``pool``, taken as this redis-py wants: before 5.3 its
    ``get_connection`` needs a command's name; from 5.3 on it warns when given one."""
    if _wants_command_name(pool.__class__):
        return pool.get_connection("PIPELINE")
    return pool.get_connection()


@functools.cache
def _wants_command_name(kind: Any) -> bool:
    """Whether ``kind.get_connection`` has a ``command_name`` with no default."""
    found = inspect.signature(kind.get_connection).parameters.get("command_name")
    return found is not None and found.default is inspect.Parameter.empty


def _exchange(pipe: Any, stack: list[tuple[Any, dict[str, Any]]]) -> list[Any]:
    """The replies of a plain pipeline's commands (``stack``), as its ``execute(raise_on_error
    =False)`` gives them, in one round trip without redis-py's per-pipeline bookkeeping
    (its HIMPORT and metrics passes over every command, and its debug logs and metrics
    of the round trip). The commands go in one write; each reply is parsed with the
    client's callbacks, an error reply kept in its place.

    Only a failure to send is retried (with the client's ``retry``: the connection is
    made again and the same bytes sent). A failure once the commands were written (a
    read timeout, a connection dropped mid-reply) is raised, never sent again: the
    server may have run them, and a pipeline may carry a command that must not run
    twice (a first job's LPUSH); the callers' own recovery treats it as "may have
    landed". The connection is then closed, never handed out again with replies unread
    (redis-py's pipeline releases it as it is, and the next command would read the reply
    of this one)."""
    pool = pipe.connection_pool
    conn = checkout(pool)
    try:
        packed = conn.pack_commands([args for args, _ in stack])
        conn.retry.call_with_retry(
            lambda: conn.send_packed_command(packed), lambda _error: conn.disconnect())
        return _read_replies(pipe, conn, stack)
    except BaseException:
        conn.disconnect()
        raise
    finally:
        pool.release(conn)


def _read_replies(pipe: Any, conn: Any, stack: list[tuple[Any, dict[str, Any]]]) -> list[Any]:
    replies: list[Any] = []
    for args, options in stack:
        try:
            replies.append(pipe.parse_response(conn, args[0], **options))
        except redis.ResponseError as exc:
            replies.append(exc)
    return replies
