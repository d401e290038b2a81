"""Oracle suite setup.

Every test module imports ``tests.oracle.impls``, which calls ``pytest.importorskip("langgraph")``
first: without real LangGraph (the ``oracle`` extra) each module is skipped with that reason
instead of failing to import.
"""

from __future__ import annotations

import importlib.metadata

import pytest


def pytest_report_header(config: pytest.Config) -> str:
    try:
        return f"oracle: langgraph {importlib.metadata.version('langgraph')}"
    except importlib.metadata.PackageNotFoundError:
        return "oracle: langgraph not installed, tests/oracle is skipped"
