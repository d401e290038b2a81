"""Waiting, after a commit, until Redis made it durable: ``WAITAOF`` or ``WAIT``.

Redis answers a write once it is in memory. With ``appendfsync everysec`` (the
common setting) the last second of writes lives only in the page cache, so a host
crash can erase a checkpoint whose run was already reported ``done``. A
``CommitWait`` makes every commit of the saver wait for one of:

- ``"aof"``: ``WAITAOF 1 0``, the server fsynced the commit to its append-only
  file (Redis >= 7.2 or Valkey, ``appendonly yes``); under ``everysec`` each commit
  waits for the server's next fsync (its cron: about 100 ms at the default ``hz 10``);
- ``"replicas:N"``: ``WAIT N``, N replicas received the commit (any Redis; it
  survives the loss of the primary's host, not of every host at once);
- ``"aof+replicas:N"``: ``WAITAOF 1 N``, the primary and N replicas fsynced it (a
  replica acknowledges its fsyncs about once a second, so each commit waits that long).

A server that cannot do it (too old, AOF off, too few replicas within the
timeout) makes the commit raise ``CheckpointStoreError`` saying what to change,
instead of the saver silently promising less. ``appendfsync always`` on the
server gives the ``"aof"`` guarantee with no option here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from durable_graph.errors import CheckpointStoreError, GraphValueError

__all__ = ["DEFAULT_WAIT_TIMEOUT", "CommitWait"]

DEFAULT_WAIT_TIMEOUT = 5.0
"""Seconds a commit waits for its fsync or replicas before it fails."""
_FORMAT = re.compile(r"^(?:(aof)|replicas:(\d+)|aof\+replicas:(\d+))$")


@dataclass(frozen=True)
class CommitWait:
    """What a commit waits for before it returns."""

    local: int
    """1: the server's own AOF fsync (``WAITAOF``); 0: not."""
    replicas: int
    """Replicas that must acknowledge (received with ``WAIT``, fsynced with ``WAITAOF``)."""
    timeout: float = DEFAULT_WAIT_TIMEOUT
    """Seconds to wait before the commit fails."""

    def __post_init__(self) -> None:
        if self.local not in (0, 1) or self.replicas < 0 or (self.local, self.replicas) == (0, 0):
            raise GraphValueError(
                f"a commit wait needs the local AOF (local=1) and/or replicas >= 1, got "
                f"local={self.local!r}, replicas={self.replicas!r}")
        if self.timeout <= 0:
            raise GraphValueError(f"commit wait timeout must be positive, got {self.timeout!r}")

    @classmethod
    def parse(cls, text: str, timeout: float = DEFAULT_WAIT_TIMEOUT) -> CommitWait | None:
        """``"aof"``, ``"replicas:N"``, ``"aof+replicas:N"``, or ``"none"``/``""`` (None)."""
        spec = text.strip().lower()
        if spec in ("", "none"):
            return None
        match = _FORMAT.match(spec)
        if match is None:
            raise GraphValueError(
                f"commit wait {text!r} is not one of 'none', 'aof', 'replicas:N' or "
                "'aof+replicas:N' (N replicas that must acknowledge each commit)")
        aof, replicas, both = match.groups()
        if aof:
            return cls(1, 0, timeout)
        if replicas is not None:
            return cls(0, int(replicas), timeout)
        return cls(1, int(both), timeout)

    @classmethod
    def of(cls, value: CommitWait | str | None) -> CommitWait | None:
        """``value`` as a CommitWait (a string is parsed)."""
        return cls.parse(value) if isinstance(value, str) else value

    def command(self) -> tuple[Any, ...]:
        """The Redis command that waits, to send right after the write on its connection."""
        timeout_ms = max(1, int(self.timeout * 1000))
        if self.local:
            return ("WAITAOF", self.local, self.replicas, timeout_ms)
        return ("WAIT", self.replicas, timeout_ms)

    def check(self, reply: Any, where: str) -> None:
        """Raise CheckpointStoreError unless ``reply`` (of ``command``) shows the wait held."""
        if isinstance(reply, Exception):
            raise CheckpointStoreError(self._cannot(str(reply), where)) from reply
        if self.local:
            local, replicas = (int(x) for x in reply)
        else:
            local, replicas = 0, int(reply)
        if local < self.local or replicas < self.replicas:
            got = f"{replicas} replica(s)" + (f", local fsync {bool(local)}" if self.local else "")
            raise CheckpointStoreError(
                f"a commit on {where} was not made durable within {self.timeout} s "
                f"(wanted {self.describe()}, got {got}); the write is in memory only. "
                "Check the replicas and the disk, or raise the commit wait timeout.")

    def describe(self) -> str:
        """What this wait guarantees, in words."""
        parts = ["fsync to the server's AOF"] if self.local else []
        if self.replicas:
            verb = "fsynced by" if self.local else "received by"
            parts.append(f"{verb} {self.replicas} replica(s)")
        return " and ".join(parts)

    def _cannot(self, error: str, where: str) -> str:
        if "unknown command" in error.lower():
            return (f"{where} has no {self.command()[0]} command: waiting for an AOF fsync "
                    "needs Redis >= 7.2 (or Valkey). Upgrade, set `appendfsync always` on "
                    "the server and drop the commit wait, or wait for replicas with "
                    f"'replicas:N' (WAIT). The server said: {error}")
        if "appendonly" in error.lower():
            return (f"{where} has the append-only file off, so it cannot fsync a commit: "
                    f"set `appendonly yes` on the server. The server said: {error}")
        return f"waiting for a durable commit on {where} failed: {error}"
