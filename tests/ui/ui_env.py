"""Helpers of the web view tests: the ``durable-graph ui`` server and worker they run,
plain HTTP to them, screenshots and waiting (the fixtures are in ``conftest``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
for path in (HERE, HERE.parent / "distributed", HERE.parent / "integration"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from dg_workers import WorkerPool, wait_until  # noqa: E402

from tests.keys_left import delete_prefix  # noqa: E402

SECRET = "ui-test-secret-not-for-production"
TOKEN = "ui-test-token-0123456789abcdef"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
_SCRIPT = Path(sys.executable).with_name("durable-graph")
CLI = [str(_SCRIPT)] if _SCRIPT.exists() else [
    sys.executable, "-c", "from durable_graph.cli import main; raise SystemExit(main())"]
ARTIFACTS = Path(os.environ.get("DG_UI_ARTIFACTS")
                 or Path(tempfile.gettempdir()) / "durable-graph-artifacts")


@dataclass
class UiServer:
    """One ``durable-graph ui`` subprocess."""

    proc: subprocess.Popen[bytes]
    base: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
        """GET ``path``: (status, body), without following redirects."""
        return http(self.base + path, headers=headers)


@dataclass
class Deployment:
    """Worker, UI server and the environment they share."""

    url: str
    prefix: str
    queue: str
    env: dict[str, str]
    pool: WorkerPool
    metrics_port: int
    log_dir: Path
    ports: Any
    """The session's RedisSpawner: its ``free_port`` and ``stop`` serve here too."""
    ui: UiServer | None = None
    extra: list[UiServer] = field(default_factory=list)

    def start_ui(self, *args: str, env: dict[str, str] | None = None, wait: bool = True
                 ) -> UiServer:
        """Start ``durable-graph ui ARGS`` (its port picked here) and wait for it to serve."""
        port = self.ports.free_port()
        full_env = {**os.environ, **self.env, **(env or {})}
        full_env["PYTHONPATH"] = graph_path()
        log_path = self.log_dir / f"ui-{port}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen([*CLI, "ui", "--port", str(port), *args], env=full_env,
                                    stdout=log, stderr=subprocess.STDOUT)
        host = "127.0.0.1"
        server = UiServer(proc, f"http://{host}:{port}", log_path)
        self.extra.append(server)
        if wait:
            headers = {"Authorization": f"Bearer {full_env.get('DURABLE_GRAPH_UI_TOKEN', '')}"}

            def up() -> bool:
                if proc.poll() is not None:
                    raise RuntimeError(f"ui server exited {proc.returncode}:\n{server.log()}")
                return server.get("/healthz", headers)[0] == 200

            wait_until(up, 30, "the ui server to answer")
        return server

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """``durable-graph ARGS`` in a new process, as an operator would run it."""
        env = {**os.environ, **self.env, "PYTHONPATH": graph_path()}
        return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True,
                              check=False, timeout=60)

    def logs(self) -> str:
        parts = [self.pool.log_tails()]
        parts += [f"----- ui {s.base} -----\n{s.log()[-3000:]}" for s in self.extra]
        return "\n".join(parts)


def graph_path() -> str:
    """PYTHONPATH of the processes that load the test graphs (workers, ui servers)."""
    dirs = (str(HERE), str(HERE.parent / "integration"), os.environ.get("PYTHONPATH", ""))
    return os.pathsep.join(p for p in dirs if p)


def http(url: str, *, method: str = "GET", data: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, str]:
    """One HTTP request to a server of this test (loopback only); redirects not followed."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with opener.open(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except (urllib.error.URLError, ConnectionError):
        return 0, ""


def delete_keys(url: str, base: str, queue: str) -> None:
    """The deployment's keys: its prefix's, its queue's and kombu's bindings of it."""
    for prefix in dict.fromkeys((base, queue)):
        delete_prefix(url, prefix)


def ensure_chromium() -> None:
    """Debian's chromium and chromium-driver, installed when missing; fail loudly if not."""
    if os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER):
        return
    if shutil.which("apt-get") and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, check=False)
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium", "chromium-driver"],
                       env=env, capture_output=True, check=False)
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.fail(f"the browser tests need {CHROMIUM} and {CHROMEDRIVER} (Debian packages "
                    "chromium and chromium-driver); they could not be installed here")


def screenshot(driver: Any, name: str) -> Path:
    """Save a screenshot of the page as a test artifact; its path."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    driver.save_screenshot(str(path))
    return path


def wait_for(condition: Any, timeout: float = 20.0, what: str = "the page",
             show: Any = None) -> None:
    """Poll ``condition`` (exceptions count as not yet) until it is truthy; on timeout the
    error says what it waited for and what ``show()`` saw last."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except Exception as exc:  # the element is not there yet
            last = exc
        time.sleep(0.1)
    seen = ""
    if show is not None:
        try:
            seen = f"; last seen: {show()!r}"[:2000]
        except Exception as exc:
            seen = f"; cannot show the page ({exc!r})"[:500]
    raise TimeoutError(f"timed out after {timeout} s waiting for {what} ({last!r}){seen}")
