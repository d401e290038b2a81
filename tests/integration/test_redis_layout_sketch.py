"""``bench/redis_layout_sketch.py``: a design estimate that Redis measures. A tiny run
prints both figures, the respelled copy holds less than what the saver stored (with or
without the digest in the values), and the run leaves no key behind."""

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
    plain = _run(redis_url)
    dropped = _run(redis_url, "--drop-body-digest")
    assert set(plain) == set(dropped) == {"now", "sketch"}
    assert plain["sketch"] < plain["now"] and dropped["sketch"] < dropped["now"]
    client = redis.Redis.from_url(redis_url)
    assert list(client.scan_iter(match="*bench-sketch-*", count=1000)) == []
