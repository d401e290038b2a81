"""Closable: ``close()`` and context-manager use for objects that own a lazily opened backend."""

from __future__ import annotations

from types import TracebackType
from typing import Protocol, Self

__all__ = ["Closable"]


class _SupportsClose(Protocol):
    def close(self) -> None: ...


class Closable:
    """Mixin: ``close()`` stops a TTL sweeper and closes ``self._backend``; ``with obj:``
    closes it on exit."""

    _backend: _SupportsClose

    def close(self) -> None:
        """Stop a store's TTL sweeper (it would reopen the connection), then close the
        connection if this object opened it (it reopens on next use)."""
        stop_sweeper = getattr(self, "stop_ttl_sweeper", None)
        if stop_sweeper is not None:
            stop_sweeper()
        self._backend.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
