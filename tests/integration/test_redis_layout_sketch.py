"""``bench/redis_layout_sketch.py``: a design estimate that Redis measures. A tiny run
prints both figures, the respelled copy holds less than what the saver stored (whichever
parts it respells), and the run leaves no key behind."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import redis

pytestmark = pytest.mark.redis

SKETCH = Path(__file__).resolve().parents[2] / "bench" / "redis_layout_sketch.py"
_LINE = re.compile(r"^\s*(now|sketch): (\d+) KB, ([\d.]+)x appended", re.M)


def _run(redis_url: str, *more: str) -> dict[str, int]:
    done = subprocess.run([sys.executable, str(SKETCH), "--steps", "12", "--redis-url",
                           redis_url, *more], capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    return {name: int(kb) for name, kb, _ in _LINE.findall(done.stdout)}


def test_the_sketch_is_measured_and_leaves_nothing_behind(redis_url: str) -> None:
    for run in (_run(redis_url), _run(redis_url, "--drop-body-digest"),
                _run(redis_url, "--drop-body-digest", "--compact-records")):
        assert set(run) == {"now", "sketch"} and run["sketch"] < run["now"]
    client = redis.Redis.from_url(redis_url)
    assert list(client.scan_iter(match="*bench-sketch-*", count=1000)) == []
