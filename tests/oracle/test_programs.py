"""Every program of ``tests/oracle/programs`` runs the same on LangGraph and durable_graph."""

from __future__ import annotations

import importlib

import pytest

from tests.oracle.impls import same
from tests.oracle.programs import PROGRAMS

pytestmark = pytest.mark.oracle


@pytest.mark.parametrize("name", PROGRAMS)
def test_program_runs_the_same(name: str) -> None:
    same(importlib.import_module(f"tests.oracle.programs.{name}").program)
