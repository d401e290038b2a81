"""One Redis client plus the saver's scripts, with every Redis error made a store error.

Callers see ``CheckpointStoreError`` (naming the server, password redacted)
instead of redis-py's exceptions, and a client built from a URL gets connect and
read timeouts, so an unreachable Redis fails within a bounded time instead of
hanging a graph run. With a ``CommitWait``, every script that commits state is sent
in one pipeline with the ``WAITAOF``/``WAIT`` that makes it durable (the wait must
run on the connection that wrote).
"""

from __future__ import annotations

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

from durable_graph.errors import CheckpointStoreError, GraphValueError
from durable_graph.store.redis import job_scripts, scripts
from durable_graph.store.redis.commit_wait import CommitWait

__all__ = [
    "UNWAITED_SCRIPTS", "Client", "RedisConn", "client_from_url", "execute_pipeline", "redact",
]

Client: TypeAlias = "redis.Redis[bytes] | RedisCluster[bytes]"
T = TypeVar("T")

CONNECT_TIMEOUT = 5.0
"""Default seconds to open a connection before giving up."""
SOCKET_TIMEOUT = 10.0
"""Default seconds to wait for a reply; every script is short, so this is generous."""
UNWAITED_SCRIPTS = frozenset({"LOAD", "PAGE", "FINISHED", "ACQUIRE", "RENEW", "RELEASE"})
"""Scripts no commit wait follows: the reads, and the leases (a lost lease renewal is
what fencing is for). Every other script writes state a reported result depends on, so
a script added later is waited for unless it is listed here."""


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
        return redis.Redis.from_url(url, **options)
    except (redis.RedisError, ValueError) as exc:
        raise CheckpointStoreError(f"cannot connect to Redis at {redact(url)}: {exc}") from exc


def execute_pipeline(client: redis.Redis[bytes], build: Callable[[Any], Any]) -> list[Any]:
    """The replies of what ``build(pipe)`` queues on a pipeline of ``client``: one round trip.

    redis-py's ``Pipeline.execute`` sends ``SCRIPT EXISTS`` for the pipeline's scripts
    before every execution, a hidden second round trip; here scripts run by ``EVALSHA``
    straight away. When the server lacks them (their first use, a restart), they are
    loaded, and if none of the pipeline's scripts ran the whole pipeline runs again
    (the commands beside them are reads or idempotent); if only some ran, a
    ``NoScriptError`` goes up (a store error: its job is retried, now with the scripts).
    A command's error is raised, as ``execute`` does.
    """
    pipe = client.pipeline(transaction=False)
    build(pipe)
    scripts = list(pipe.scripts)
    pipe.scripts.clear()  # no SCRIPT EXISTS: EVALSHA and see
    evalsha = [i for i, (args, _) in enumerate(pipe.command_stack) if args[0] == "EVALSHA"]
    replies = list(pipe.execute(raise_on_error=False))
    missing = [i for i in evalsha if isinstance(replies[i], NoScriptError)]
    if missing:
        loader: Any = client  # script_load is untyped in the stubs
        for script in scripts:
            script.sha = loader.script_load(script.script)
        if len(missing) < len(evalsha):
            raise replies[missing[0]]
        pipe = client.pipeline(transaction=False)
        build(pipe)
        pipe.scripts.clear()
        replies = list(pipe.execute(raise_on_error=False))
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies


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
        def build(pipe: Any) -> None:
            for name, keys, args in calls:
                self.script(name)(keys=list(keys), args=list(args), client=pipe)

        with self.errors(action):
            return execute_pipeline(client, build)

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
