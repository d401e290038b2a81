"""Shared machinery of the store and cache contract suites: one backend per FACTORIES entry.

A contract module declares ``FACTORIES = {"name": pytest.param(factory, marks=...)}``
where ``factory(folder, **options)`` builds a backend in its own folder (or Redis
prefix), then builds its fixtures with ``backend_kind`` and ``backend_maker``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

__all__ = ["backend_maker", "kind_params", "wait_until"]


def kind_params(factories: dict[str, Any]) -> dict[str, Any]:
    """``pytest.fixture`` arguments that parametrize over the factories' names and marks."""
    return {
        "params": [pytest.param(name, marks=p.marks) for name, p in factories.items()],
        "ids": list(factories),
    }


def backend_maker(factory: Callable[..., Any], tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Yield a builder of backends (each in a fresh folder); close every one afterwards."""
    made: list[Any] = []

    def make(**options: Any) -> Any:
        folder = tmp_path / f"backend{len(made)}"
        folder.mkdir()
        made.append(factory(folder, **options))
        return made[-1]

    yield make
    for backend in made:
        close = getattr(backend, "close", None)
        if close is not None:
            close()


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``condition`` until true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(0.05)
