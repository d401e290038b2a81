"""Fixtures of the web view tests: a real worker, a real ``durable-graph ui`` server and a
real headless Chromium driven by Selenium.

``deployment`` (module) starts one ``celery worker`` subprocess running ``ui_graphs``
with ``DURABLE_GRAPH_METRICS_PORT`` set (so its ``/metrics`` can be scraped) and a
``durable-graph ui`` subprocess over the same prefix. ``browser`` is a headless
Chromium from Debian's ``chromium`` + ``chromium-driver`` packages (installed with
apt-get when missing; no browser is ever downloaded). If it cannot be had, the
tests fail: they never skip. Screenshots go to ``$DG_UI_ARTIFACTS`` (default
``<tmp>/durable-graph-artifacts``), never into the repository.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
for path in (HERE, HERE.parent / "distributed", HERE.parent / "integration"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from dg_workers import WorkerPool  # noqa: E402
from ui_env import (  # noqa: E402
    CHROMEDRIVER,
    CHROMIUM,
    SECRET,
    Deployment,
    delete_keys,
    ensure_chromium,
    graph_path,
)


class UiWorkers(WorkerPool):
    """Workers whose node names are unique on the shared broker: replies to ``inspect``
    are keyed by node name, so another session's ``w0@host`` must not hide ours."""

    def command(self, name: str) -> list[str]:
        argv = super().command(name)
        argv[argv.index("-n") + 1] = f"ui-{self.pool_key.split(':')[0][-8:]}-{name}@%h"
        return argv


@pytest.fixture(scope="module")
def deployment(redis_server: str, spawn_redis: Any, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[Deployment]:
    """A worker (with /metrics) and a ``durable-graph ui`` on a prefix and queue of their own."""
    base = f"t-ui-{uuid.uuid4().hex}"
    queue, pool_key = f"{base}.q", f"{base}:pool"
    metrics_port = spawn_redis.free_port()
    env = {
        "DURABLE_GRAPH_REDIS_URL": redis_server,
        "DURABLE_GRAPH_PREFIX": base,
        "DURABLE_GRAPH_QUEUE": queue,
        "DURABLE_GRAPH_SECRET_KEY": SECRET,
        "DG_UI_POOL_KEY": pool_key,
        "PYTHONPATH": graph_path(),
    }
    log_dir = tmp_path_factory.mktemp("ui-deployment")
    pool = UiWorkers(
        module="ui_graphs", module_dir=HERE, queue=queue, log_dir=log_dir,
        env={**env, "DURABLE_GRAPH_METRICS_PORT": str(metrics_port),
             "DURABLE_GRAPH_METRICS_ADDR": "127.0.0.1"},
        redis_url=redis_server, pool_key=pool_key,
    )
    pool.start(1)
    dep = Deployment(redis_server, base, queue, env, pool, metrics_port, log_dir, spawn_redis)
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # ui_graphs' app (the producer's) reads the same settings
    try:
        dep.ui = dep.start_ui()
        yield dep
    finally:
        for server in dep.extra:
            spawn_redis.stop(server.proc)
        pool.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        delete_keys(redis_server, base, queue)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A headless Chromium (Selenium), with a fresh profile; quit after the module."""
    ensure_chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                 "--window-size=1400,1000",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Any:
    """A failed test shows the worker's and the servers' log tails."""
    report = yield
    found = getattr(item, "funcargs", {}).get("deployment")
    if report.failed and isinstance(found, Deployment):
        report.sections.append(("worker and ui logs", found.logs()))
    return report
