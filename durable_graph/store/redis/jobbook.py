"""The job book: which jobs a committed step still owes, who runs them, who is alive.

A dispatcher registers every job before publishing it (owed, and due: sent but
not claimed). The worker process that starts a job claims it, and the claim names
the process, whose heartbeat lives in one sorted set by expiry. When the job ends
it is owed no more. So a recovery sweep can tell, without trusting any timeout
of the broker:

- a claimed job whose process stopped beating (``reclaim``): sent again at once;
- a job sent but never claimed although the queue moved past it (``requeue_lost``,
  see the probe in ``worker/recovery``): the broker lost it; sent again;
- a running thread that owes no job for a lease TTL (``idle``): a crash between two
  steps of a worker; recovered from its last committed step.

A job that merely waits in the queue is owed and due, which is neither: waiting is
never a reason to take anything over. Every read a sweep makes is bounded by what
expired (sorted sets by deadline, bucketed by hash tag, so it runs on Redis Cluster).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

import redis
from redis.cluster import RedisCluster
from redis.commands.core import Script

from durable_graph.store.redis.connection import RedisConn, checkout
from durable_graph.store.redis.keys import (
    JobKeys,
    ThreadKeys,
    job_buckets,
    jobs_of,
    live_key,
    probe_key,
)

__all__ = ["Also", "ClaimMode", "Expired", "Finished", "JobBook", "Reclaimed", "View", "pipelined",
           "queue_end"]

Also: TypeAlias = Callable[[Any], Any]
"""Queues one more command on a pipeline (``p``) and returns what the call returned."""
ClaimMode: TypeAlias = Literal["lone", "bundle", "again"]
"""How ``JobBook.claim_calls`` claims: a call's own message, a bundle's calls, or a
bundle's claims checked again."""


def pipelined(conn: RedisConn, action: str, build: Any) -> list[Any]:
    """Run the commands ``build`` queues on a pipeline, in one round trip; their replies.

    ``build(p)`` returns what each of its calls returned, in order. On Redis Cluster,
    whose pipelines refuse scripts, ``p`` is the client itself (one call at a time).
    """
    def go(client: Any) -> list[Any]:
        if isinstance(client, RedisCluster):
            return list(build(client))
        pipe = client.pipeline(transaction=False)
        build(pipe)
        return conn.execute(pipe)
    return conn.call(action, go)


def queue_end(conn: RedisConn, prefix: str, p: Any, job: tuple[str, str],
              idle_ttl: float) -> Any:
    """Queue ``JobBook.end`` of ``job`` (job key, thread id) on ``p`` (see ``pipelined``),
    a pipeline that also carries other commands (a commit, a run's close)."""
    key, thread_id = job
    return conn.script("END_JOB")(keys=jobs_of(prefix, thread_id).ordered(),
                                  args=[key, thread_id, int(idle_ttl * 1000)], client=p)


_ViewCall = tuple[list[str], list[str], list[JobKeys | None]]
"""One ``VIEW`` script call: its keys, the kind of each, the job bucket of each."""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class Finished:
    """An ``Also``: which of ``task_ids`` have an outcome in ``writes`` (a checkpoint's
    writes hash), the ``FINISHED`` read (``RedisSaver.finished``).

    Its reply is the ids that finished (as bytes). A claim on one Redis folds the read
    of one id into its own script (``JobBook.claim_renewing``, ``CLAIM_CALLS``).
    """

    conn: RedisConn
    writes: str
    task_ids: tuple[str, ...]

    def __call__(self, p: Any) -> Any:
        return self.conn.script("FINISHED")(keys=[self.writes], args=list(self.task_ids),
                                            client=p)


@dataclass(frozen=True)
class Expired:
    """A member of a deadline index whose deadline passed."""

    member: str
    """A job key, thread id or worker id."""
    score: float
    """Its deadline (or, in the due index, when it was sent), ms."""
    bucket: JobKeys | None = None
    """The job bucket it was found in (None for worker heartbeats)."""


@dataclass(frozen=True)
class Reclaimed:
    """A job taken from a dead worker process."""

    action: str
    """``requeue`` (send ``message`` again) or ``fail`` (it died ``deaths`` times)."""
    message: str
    """The job's signed message, as its dispatcher sealed it."""
    deaths: int
    """Executions of the job that ended with their process dying."""
    why: str
    """How the process died, when its worker saw it ('' if unknown)."""


@dataclass(frozen=True)
class View:
    """What expired, as one sweep sees it."""

    now: int
    """The Redis server's time (ms)."""
    dead: list[str]
    """Worker processes whose heartbeat expired."""
    head: int
    """Time (ms) of the newest probe a worker received: the queue moved past it."""
    probe_sent: int
    """Time (ms) of the probe in flight (0: none)."""
    lost: list[Expired]
    """Unclaimed jobs sent before the time asked for: lost by the broker."""
    oldest: float | None
    """When the oldest unclaimed job was sent (ms), None if every job is claimed."""
    idle: list[Expired]
    """Running threads that owed no job for their whole idle TTL."""


class JobBook:
    """Job liveness records of one key prefix (see the module docstring)."""

    def __init__(self, conn: RedisConn, prefix: str) -> None:
        self.conn, self.prefix = conn, prefix
        self._views: dict[str, list[_ViewCall]] = {}

    def _script(self, name: str) -> Script:
        return self.conn.script(name)

    def _run(self, name: str, keys: Sequence[str], args: Sequence[Any], action: str) -> Any:
        with self.conn.errors(action):
            return self._script(name)(keys=list(keys), args=list(args))

    def _pipe(self, action: str, build: Any) -> list[Any]:
        """The replies of the commands ``build(p)`` queues, in one round trip.

        ``build`` returns what each call returned, in order: on Redis Cluster, whose
        pipelines cannot run scripts, it gets the client itself and those are the replies.
        """
        return pipelined(self.conn, action, build)

    # -- a job's life ----------------------------------------------------------------

    def register_sent(self, jobs: Iterable[tuple[str, str, str]]) -> Callable[[], None]:
        """Record (job key, thread id, signed message) as owed and due: written to Redis
        now, confirmed by calling what it returns.

        The caller publishes the jobs in between: the registration is on the server
        before the broker even has the messages, so it costs the publish no round trip
        of its own. (A claim can only come after a worker received a message; were the
        registration ever late, the claim drops that copy and the lost-message probe
        sends the job again.) On Redis Cluster, or if sending fails, it registers
        synchronously instead.
        """
        by_bucket: dict[JobKeys, list[str]] = defaultdict(list)
        for key, thread_id, message in jobs:
            by_bucket[jobs_of(self.prefix, thread_id)].extend((key, thread_id, message))
        client = self.conn.client
        if not isinstance(client, redis.Redis):
            for bucket, args in by_bucket.items():
                self._run("REGISTER_JOBS", bucket.ordered(), args, "register jobs")
            return lambda: None
        pool = client.connection_pool
        with self.conn.errors("register jobs"):
            sha = self.conn.loaded("REGISTER_JOBS")
            conn = checkout(pool)
            try:
                for bucket, args in by_bucket.items():
                    conn.send_command("EVALSHA", sha, 6, *bucket.ordered(), *args)
            except BaseException:
                pool.release(conn)
                raise

        def confirm() -> None:
            with self.conn.errors("register jobs"):
                for bucket in self._read_registered(pool, conn, by_bucket):
                    self._run("REGISTER_JOBS", bucket.ordered(), by_bucket[bucket],
                              "register jobs")
        return confirm

    @staticmethod
    def _read_registered(pool: Any, conn: Any, sent: dict[JobKeys, list[str]]) -> list[JobKeys]:
        """Read the replies of ``register_sent``'s scripts on ``conn``, then release it; the
        buckets whose script the server had lost since it was loaded (a restart, ``SCRIPT
        FLUSH``): NOSCRIPT changed nothing, so the caller registers them again, late (a
        claim before that drops its copy, and the lost-message probe sends it again)."""
        lost: list[JobKeys] = []
        try:
            for bucket in sent:
                try:
                    conn.read_response()
                except redis.exceptions.NoScriptError:
                    lost.append(bucket)
        except BaseException:
            conn.disconnect()  # replies may be left unread: never hand it out so
            raise
        finally:
            pool.release(conn)
        return lost

    def queue_register(self, p: Any, key: str, thread_id: str, message: str) -> Any:
        """Queue ``register_sent``'s record of one job on ``p``, a pipeline shared with
        other commands (a producer's commit: see ``worker/firstjob``)."""
        return self._script("REGISTER_JOBS")(keys=jobs_of(self.prefix, thread_id).ordered(),
                                             args=[key, thread_id, message], client=p)

    def adopt(
        self, key: str, thread_id: str, message: str, worker: str, *, also: Also | None = None,
        ends: tuple[str, str, float] | None = None,
    ) -> Any:
        """Record a job ``worker`` runs itself, unpublished, as owed and claimed by it:
        if ``worker`` dies, a sweep sends ``message`` like any dead process's job.

        In the same round trip, after it: ``ends`` (job key, thread id, idle ttl), the
        ``end`` of the job that adopted it, and ``also(p)``, one more read, whose reply
        is returned.
        """
        def build(p: Any) -> list[Any]:
            out = self.queue_adopt(p, key, thread_id, message, worker, ends=ends)
            return [*out, *([also(p)] if also else [])]

        replies = self._pipe("adopt job", build)
        return replies[-1] if also else None

    def queue_adopt(
        self, p: Any, key: str, thread_id: str, message: str, worker: str, *,
        ends: tuple[str, str, float] | None = None,
    ) -> list[Any]:
        """Queue ``adopt``'s record and ``ends``, the end of the job that adopted it (no
        read), on ``p``, a pipeline shared with other commands (see ``pipelined``); what
        the calls returned. An end of the same thread's job (a chain's next step: the
        same job bucket) goes in the adoption's own script."""
        args: list[Any] = [key, thread_id, message, worker]
        if ends is not None and ends[1] == thread_id:
            args += [ends[0], int(ends[2] * 1000)]
        adopted = self._script("ADOPT_JOB")(keys=jobs_of(self.prefix, thread_id).ordered(),
                                             args=args, client=p)
        if ends is None or ends[1] == thread_id:
            return [adopted]
        return [adopted, self.queue_end(p, *ends)]

    def queue_end(self, p: Any, key: str, thread_id: str, idle_ttl: float) -> Any:
        """Queue ``end`` on ``p``, a pipeline shared with other commands."""
        return queue_end(self.conn, self.prefix, p, (key, thread_id), idle_ttl)

    def claim(self, key: str, thread_id: str, worker: str) -> tuple[str, str]:
        """(``ok``, '') to run the job; (``gone``, '') or (``held``, holder) to drop it."""
        reply = self._run("CLAIM_JOB", jobs_of(self.prefix, thread_id).ordered(),
                          [key, worker], "claim job")
        return _text(reply[0]), _text(reply[1]) if len(reply) > 1 else ""

    def claim_renewing(
        self, key: str, thread_id: str, worker: str, lease: tuple[str, int, float],
        also: Also | None = None,
    ) -> tuple[str, str, bool, Any]:
        """``claim``, and renew the thread's lease (owner, generation, ttl) in the same
        round trip; the third item says whether the lease is still this job's, the
        fourth is the reply to ``also(p)``, one more read queued on the same round trip
        (None without one). On one Redis the claim and the renewal are one script
        (``CLAIM_RENEWING``), and a ``Finished`` read of one call's result rides it too
        (``claim_calls``): a ``@task`` call's job starts with one script call instead of
        a pipeline of three."""
        owner, gen, ttl = lease
        lease_args = [owner, gen, max(1, int(ttl * 1000))]
        if isinstance(also, Finished) and len(also.task_ids) == 1:  # one script, not three
            claims = self.claim_calls([key], thread_id, worker, lease, also)
            if claims is not None:
                return claims[0]
        bucket = jobs_of(self.prefix, thread_id).ordered()
        lease_key = ThreadKeys(self.prefix, thread_id).lease
        one = isinstance(self.conn.client, redis.Redis)  # Cluster: another slot, two calls

        def build(p: Any) -> list[Any]:
            if one:
                first = [self._script("CLAIM_RENEWING")(
                    keys=[*bucket, lease_key], args=[key, worker, *lease_args], client=p)]
            else:
                first = [self._script("CLAIM_JOB")(keys=bucket, args=[key, worker], client=p),
                         self.conn.script("RENEW")(keys=[lease_key], args=lease_args,
                                                   client=p)]
            return [*first, *([also(p)] if also else [])]

        replies = self._pipe("claim job", build)
        (claimed, renewed), more = (replies[0], replies[1:]) if one else (replies[:2],
                                                                          replies[2:])
        holder = _text(claimed[1]) if len(claimed) > 1 else ""
        return _text(claimed[0]), holder, bool(renewed[0]), more[0] if more else None

    def claim_calls(
        self, keys: Sequence[str], thread_id: str, worker: str, lease: tuple[str, int, float],
        finished: Finished, *, mode: ClaimMode = "lone", heartbeat_ttl: float = 0.0,
    ) -> list[tuple[str, str, bool, Any]] | None:
        """``claim_renewing`` of the jobs ``keys`` of the calls ``finished.task_ids`` (in
        that order, all of one checkpoint), in one script: the lease renewed once, each
        call claimed as its own job, with its ``Finished`` reply. None on Redis Cluster
        (claim them one by one).

        ``mode`` ``bundle``: the calls of a bundle, where a call that a dead process held
        before is left to its own message (the sweep sent it): (``died``, ''), so a crash
        loop counts its deaths against the call that crashes alone. ``again``: the same,
        checked again by the bundle that claimed them (a claim of ``worker`` stands, unless
        a death was counted to it since). Both extend ``worker``'s heartbeat by
        ``heartbeat_ttl`` when it is alive, so the bundle is not found dead before its next
        check is due."""
        if not isinstance(self.conn.client, redis.Redis):
            return None
        owner, gen, ttl = lease
        pairs = [x for key, call in zip(keys, finished.task_ids, strict=True) for x in (key, call)]
        renewed, claims = self._run(
            "CLAIM_CALLS", [*jobs_of(self.prefix, thread_id).ordered(),
                            ThreadKeys(self.prefix, thread_id).lease, finished.writes,
                            live_key(self.prefix)],
            [worker, owner, gen, max(1, int(ttl * 1000)), mode, int(heartbeat_ttl * 1000),
             *pairs], "claim jobs")
        out = []
        for (claimed, done), call in zip(claims, finished.task_ids, strict=True):
            holder = _text(claimed[1]) if len(claimed) > 1 else ""
            out.append((_text(claimed[0]), holder, bool(renewed[0]),
                        [call.encode()] if done else []))
        return out

    def release_many(self, jobs: Sequence[tuple[str, str]], worker: str) -> None:
        """``release`` of several (job key, thread id) ``worker`` holds, in one round trip."""
        script = self._script("RELEASE_JOB")
        self._pipe("release jobs", lambda p: [
            script(keys=jobs_of(self.prefix, t).ordered(), args=[k, worker], client=p)
            for k, t in jobs])

    def end(self, key: str, thread_id: str, idle_ttl: float) -> None:
        """The job ended: owed no more; a thread left owing nothing starts its idle TTL."""
        self.end_many([(key, thread_id)], idle_ttl)

    def end_many(self, jobs: Sequence[tuple[str, str]], idle_ttl: float) -> None:
        """``end`` of several (job key, thread id), in one round trip."""
        self._pipe("end jobs", lambda p: [self.queue_end(p, k, t, idle_ttl) for k, t in jobs])

    def release(self, key: str, thread_id: str, worker: str) -> None:
        """Give an unfinished job back (its broker delivers it again)."""
        self._run("RELEASE_JOB", jobs_of(self.prefix, thread_id).ordered(), [key, worker],
                  "release job")

    def drop_claim(self, bucket: JobKeys, key: str, holder: str) -> None:
        """Forget ``holder``'s claim of ``key``, the job left owed but not due: a job failed
        for its deaths (``reclaim``) whose message does not open, so that nothing can end
        it by its thread, is not taken back by every sweep after."""
        self._run("RELEASE_JOB", bucket.ordered(), [key, holder, "undue"], "drop claim")

    def note_death(self, key: str, thread_id: str, worker_prefix: str, why: str) -> str:
        """Record how the process running ``key`` died; its claimant ('' if another)."""
        return self.note_deaths([key], thread_id, worker_prefix, why)[0]

    def note_deaths(self, keys: Sequence[str], thread_id: str, worker_prefix: str,
                    why: str) -> list[str]:
        """``note_death`` of each of ``keys`` (a bundle's calls), in one round trip."""
        script = self._script("NOTE_DEATH")
        bucket = jobs_of(self.prefix, thread_id).ordered()
        return [_text(r) for r in self._pipe("note job deaths", lambda p: [
            script(keys=bucket, args=[key, worker_prefix, why], client=p) for key in keys])]

    # -- what a sweep reads and does -------------------------------------------------

    def heartbeat(self, worker: str, ttl: float) -> None:
        """``worker`` is alive for ``ttl`` more seconds."""
        self._run("HEARTBEAT", [live_key(self.prefix)], [worker, int(ttl * 1000)],
                  "heartbeat")

    def declare_dead(self, worker: str) -> None:
        """``worker`` is known dead now (its parent saw it exit)."""
        key = live_key(self.prefix)
        self.conn.call("declare worker dead", lambda c: c.zadd(key, {worker: 0}, xx=True))

    def view(self, queue: str, lost_before: float, limit: int = 100) -> View:
        """What a sweep must look at, read in one round trip (see ``View``).

        ``lost_before``: unclaimed jobs sent before this server time (ms) count as
        lost (the caller derives it from the probe head of its previous sweep). One
        script reads every deadline index; on Redis Cluster it runs once per slot.
        """
        now, head, sent, oldest = 0, 0, 0, None
        dead: list[str] = []
        idle: list[Expired] = []
        lost: list[Expired] = []
        for keys, kinds, buckets in self._view_calls(queue):
            reply = self._run("VIEW", keys, [limit, lost_before, *kinds], "read what expired")
            now, head, sent = (max(now, int(reply[0])), max(head, int(reply[1])),
                               max(sent, int(reply[2])))
            if reply[3]:
                found = float(reply[3])
                oldest = found if oldest is None else min(oldest, found)
            dead += [_text(m) for m in reply[4]]
            for out, flat in ((idle, reply[5]), (lost, reply[6])):
                out += [Expired(_text(flat[i + 1]), float(flat[i + 2]), buckets[int(flat[i]) - 1])
                        for i in range(0, len(flat), 3)]
        return View(now, dead, head, sent, lost, oldest, idle)

    def _view_calls(self, queue: str) -> list[_ViewCall]:
        """The ``VIEW`` calls of a sweep of ``queue``: one, or one per slot on Redis
        Cluster (heartbeats, probe, each bucket's pair). Built once per queue."""
        found = self._views.get(queue)
        if found is None:
            parts: list[tuple[str, str, JobKeys | None]] = [
                (live_key(self.prefix), "live", None), (probe_key(self.prefix, queue), "probe",
                                                        None)]
            for b in job_buckets(self.prefix):
                parts += [(b.idle, "idle", b), (b.due, "due", b)]
            slots = ([parts] if isinstance(self.conn.client, redis.Redis) else
                     [parts[:1], parts[1:2]] + [parts[i:i + 2] for i in range(2, len(parts), 2)])
            found = self._views[queue] = [
                ([k for k, _, _ in slot], [kind for _, kind, _ in slot], [b for _, _, b in slot])
                for slot in slots]
        return found

    def forget_workers(self, workers: Sequence[str]) -> None:
        """Drop dead workers whose jobs were all reclaimed."""
        if workers:
            key = live_key(self.prefix)
            self.conn.call("forget workers", lambda c: c.zrem(key, *workers))

    def claims(self) -> list[tuple[JobKeys, str, str]]:
        """Every claimed job as (bucket, job key, claimant): few, one per busy process."""
        buckets = job_buckets(self.prefix)
        replies = self._pipe("read claims", lambda p: [p.hgetall(b.claim) for b in buckets])
        return [(b, _text(k), _text(v)) for b, found in zip(buckets, replies, strict=True)
                for k, v in found.items()]

    def claimed_of(self, thread_id: str) -> list[tuple[str, str]]:
        """(claimant, signed message) of every claimed job of ``thread_id``: what it runs
        now, published jobs and adopted ones (``worker/eager``) alike. Two round trips."""
        bucket = jobs_of(self.prefix, thread_id)
        claims = self.conn.call("read claims", lambda c: c.hgetall(bucket.claim))
        if not claims:
            return []
        keys = list(claims)
        messages = self.conn.call("read owed jobs", lambda c: c.hmget(bucket.owed, keys))
        return [(_text(claims[k]), _text(m)) for k, m in zip(keys, messages, strict=True)
                if m is not None]

    def reclaim(self, bucket: JobKeys, key: str, dead: str, max_deaths: int) -> Reclaimed | None:
        """Take ``key`` from the dead process ``dead``; None if it moved on or ended."""
        reply = self._run("RECLAIM_JOB", bucket.ordered(), [key, dead, max_deaths, ""],
                          "reclaim job")
        if _text(reply[0]) == "no":
            return None
        return Reclaimed(_text(reply[0]), _text(reply[1]), int(reply[2]), _text(reply[3]))

    def arm_idle(self, thread_id: str, ttl: float, *, only_if_idle: bool) -> None:
        """Watch ``thread_id``: recovered if it still owes no job ``ttl`` seconds from now."""
        self._run("ARM_IDLE", jobs_of(self.prefix, thread_id).ordered(),
                  [thread_id, int(ttl * 1000), "1" if only_if_idle else ""], "arm idle")

    def disarm_idle(self, bucket: JobKeys, thread_id: str) -> None:
        """Stop watching a thread whose run ended."""
        self.conn.call("disarm idle", lambda c: c.zrem(bucket.idle, thread_id))

    def sort_idle(self, idle: Sequence[Expired]) -> tuple[list[Expired], list[Expired]]:
        """(threads whose record says ``running``, ended threads whose lease was never
        released: their ender died before telling the producer). The other ended ones,
        the usual case, are no longer watched. Two round trips in all."""
        def read(p: Any) -> list[Any]:
            out = []
            for found in idle:
                keys = ThreadKeys(self.prefix, found.member)
                out += [p.hget(keys.record, "status"), p.hget(keys.lease, "owner")]
            return out

        replies = self._pipe("read idle threads", read) if idle else []
        running, unreleased, done = [], [], []
        for n, found in enumerate(idle):
            status, owner = replies[2 * n], replies[2 * n + 1]
            if status == b"running":
                running.append(found)
            elif status and owner:
                unreleased.append(found)
            else:
                done.append(found)
        if done:
            self._pipe("disarm idle", lambda p: [
                p.zrem(f.bucket.idle, f.member) for f in done if f.bucket is not None])
        return running, unreleased

    def owes(self, thread_id: str) -> bool:
        """Whether ``thread_id`` has an owed job."""
        count = jobs_of(self.prefix, thread_id).count
        return bool(self.conn.call("read owed count", lambda c: c.hexists(count, thread_id)))

    def requeue_lost(self, found: Expired) -> str | None:
        """The message of an unclaimed job to send again, or None (claimed or resent)."""
        assert found.bucket is not None
        reply = self._run("REQUEUE_LOST", found.bucket.ordered(), [found.member, found.score],
                          "requeue lost job")
        return _text(reply) if reply else None

    # -- the queue probe -------------------------------------------------------------

    def probe_send(self, queue: str, in_flight: float) -> int:
        """The time (ms) of a probe to send now, or 0 while one is in flight."""
        return int(self._run("PROBE_SEND", [probe_key(self.prefix, queue)],
                             [int(in_flight * 1000)], "send probe"))

    def probe_seen(self, queue: str, sent_ms: int) -> None:
        """A worker received the probe sent at ``sent_ms``: the queue moved past it."""
        self._run("PROBE_SEEN", [probe_key(self.prefix, queue)], [sent_ms], "probe seen")
