"""Thread leases: who may commit to a thread, with a fencing token.

A coordinator acquires a thread's lease before running it and puts the lease's
generation in ``config["configurable"]["fence"]``; every commit checks that token
against the generation stored beside the thread, in the same script that writes.
When a lease expires (its owner paused, crashed or was partitioned), another
owner takes it over and the generation goes up, so the late owner's next commit is
rejected with ``FencingError`` and changes nothing. Expiry uses the Redis server's
clock, so owners whose clocks disagree still agree on it. The generation is
never reset (not by release, not by ``delete_thread``), so tokens only grow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis

from durable_graph.errors import FencingError, GraphValueError, LeaseReleasedError
from durable_graph.store.redis.connection import RedisConn
from durable_graph.store.redis.jobbook import Also, pipelined
from durable_graph.store.redis.keys import ThreadKeys, jobs_of

__all__ = ["Lease", "RedisLeases"]


@dataclass(frozen=True)
class Lease:
    """A held lease on one thread."""

    thread_id: str
    """The thread it covers."""
    owner: str
    """Who holds it; must be unique per coordinator (e.g. host, pid and a uuid)."""
    generation: int
    """Fencing token: grows by one at every takeover; pass it as ``fence``."""
    expires_at_ms: int
    """Expiry on the Redis server's clock, in milliseconds since the epoch."""

    def fence(self, config: dict[str, Any]) -> dict[str, Any]:
        """``config`` with this lease's generation as the fencing token of its commits."""
        configurable = {**(config.get("configurable") or {}), "fence": self.generation}
        return {**config, "configurable": configurable}


def _ttl_ms(ttl: float) -> int:
    """Lease TTL in milliseconds; a non-positive TTL is a caller bug."""
    if ttl <= 0:
        raise GraphValueError(f"a lease TTL must be positive, got {ttl!r}")
    return max(1, int(ttl * 1000))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisLeases:
    """Acquire, renew and release thread leases stored beside the thread's keys."""

    def __init__(self, conn: RedisConn, prefix: str) -> None:
        self._conn = conn
        self._prefix = prefix

    def _key(self, thread_id: str) -> str:
        return ThreadKeys(self._prefix, thread_id).lease

    def acquire(
        self, thread_id: str, owner: str, ttl: float, *, watch_idle: bool = False
    ) -> Lease | None:
        """Take the lease for ``ttl`` seconds; None while another owner holds a live one.

        A free, released or expired lease is taken with a new, higher generation.
        The owner that already holds a live lease gets it back extended, same generation.
        ``watch_idle`` (a distributed run's producer): in the same round trip, have the
        recovery sweep look at the thread if it still owes no job one TTL from now.
        """
        return self.acquire_reading(thread_id, owner, ttl, watch_idle=watch_idle)[0]

    def acquire_reading(
        self, thread_id: str, owner: str, ttl: float, *, watch_idle: bool = False,
        also: Also | None = None,
    ) -> tuple[Lease | None, Any]:
        """``acquire``, and the reply to ``also(p)``, one more command queued in the same
        round trip, after it (None without one)."""
        if not owner:
            raise GraphValueError("a lease needs a non-empty owner")
        ttl_ms, lease, jobs = _ttl_ms(ttl), self._key(thread_id), jobs_of(self._prefix, thread_id)
        one = watch_idle and isinstance(self._conn.client, redis.Redis)

        def both(p: Any) -> list[Any]:
            if one:  # one script, not two
                out = [self._conn.script("ACQUIRE_WATCHED")(
                    keys=[*jobs.ordered(), lease], args=[owner, ttl_ms, thread_id], client=p)]
            else:  # Redis Cluster: the job bucket is in another slot
                out = [self._conn.script("ACQUIRE")(keys=[lease], args=[owner, ttl_ms], client=p)]
                if watch_idle:
                    out.append(self._conn.script("ARM_IDLE")(
                        keys=jobs.ordered(), args=[thread_id, ttl_ms, "1"], client=p))
            return out + ([also(p)] if also else [])

        replies = pipelined(self._conn, "acquire lease", both)
        ok, gen, holder, until = replies[0]
        early = replies[-1] if also else None
        if not ok:
            return None, early
        return Lease(str(thread_id), _text(holder), int(gen), int(until)), early

    def take_over(self, thread_id: str, owner: str, ttl: float) -> Lease | None:
        """Take a lease whose holder let it expire; None if it is live or was released.

        A released lease means its run ended (or never ran here): there is nothing
        of it to recover, so a recovering scheduler must not take it.
        """
        ok, gen, holder, until = self._conn.run(
            "ACQUIRE", [self._key(thread_id)], [owner, _ttl_ms(ttl), "1"], "take over lease"
        )
        if not ok:
            return None
        return Lease(str(thread_id), _text(holder), int(gen), int(until))

    def revoke(self, thread_id: str, owner: str, ttl: float) -> Lease:
        """Take the lease whoever holds it, with a new generation (cancelling a run).

        Every job and commit fenced with an older generation is refused from now on.
        """
        if not owner:
            raise GraphValueError("a lease needs a non-empty owner")
        _, gen, holder, until = self._conn.run(
            "ACQUIRE", [self._key(thread_id)], [owner, _ttl_ms(ttl), "2"], "revoke lease"
        )
        return Lease(str(thread_id), _text(holder), int(gen), int(until))

    def renew(self, lease: Lease, ttl: float) -> Lease:
        """Extend a lease; FencingError if another owner took it over meanwhile
        (``LeaseReleasedError`` if its owner released it and nobody took it since).

        A lease that expired but that nobody took over can still be renewed: its
        generation is still the current one, so no other owner has committed.
        """
        ok, gen, holder, until = self._conn.run(
            "RENEW",
            [self._key(lease.thread_id)],
            [lease.owner, lease.generation, _ttl_ms(ttl)],
            "renew lease",
        )
        if not ok and not _text(holder) and int(gen) == lease.generation:
            raise LeaseReleasedError(
                f"lease on thread {lease.thread_id!r} (generation {gen}) was released by "
                f"its owner {lease.owner!r}; nobody took it since"
            )
        if not ok:
            raise FencingError(
                f"lease on thread {lease.thread_id!r} was lost: generation {lease.generation} "
                f"of {lease.owner!r} is now generation {gen} held by {_text(holder)!r}"
            )
        return Lease(lease.thread_id, lease.owner, int(gen), int(until))

    def release(self, lease: Lease) -> bool:
        """Give the lease up now; False if it was already taken over (nothing changes)."""
        released = self._conn.run(
            "RELEASE",
            [self._key(lease.thread_id)],
            [lease.owner, lease.generation],
            "release lease",
        )
        return bool(released)

    def generation(self, thread_id: str) -> int:
        """The thread's current lease generation (0 if no lease was ever taken)."""
        key = self._key(thread_id)
        raw = self._conn.call("read lease", lambda c: c.hget(key, "gen"))
        return int(raw) if raw else 0
