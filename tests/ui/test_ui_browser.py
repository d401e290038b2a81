"""The web view in a real headless Chromium, over threads run by a real Celery worker.

The test process is the producer (``CeleryExecutor``); one ``celery worker``
subprocess runs the jobs; ``durable-graph ui`` runs as a third process, as an
operator would start it. Screenshots of the thread list and of a thread page are
saved as artifacts (see ``conftest.screenshot``).
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import cli_graphs
import pytest
import ui_graphs
from selenium.webdriver.common.by import By
from selenium.webdriver.support.expected_conditions import staleness_of
from selenium.webdriver.support.wait import WebDriverWait
from ui_env import SECRET, TOKEN, Deployment, http, screenshot, wait_for

from durable_graph import RedisSaver
from durable_graph.worker import CeleryExecutor, create_app

pytestmark = [pytest.mark.celery, pytest.mark.redis]

RUN_TIMEOUT = 30.0


def compile_on(deployment: Deployment, builder: Any) -> Any:


    app = create_app(deployment.url, prefix=deployment.prefix, queue=deployment.queue,
                     secret_key=SECRET)
    saver = RedisSaver.from_url(deployment.url, prefix=deployment.prefix)
    return builder.compile(checkpointer=saver, executor=CeleryExecutor(app))


def config_of(thread_id: str) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread_id}}


def open_page(browser: Any, deployment: Deployment, path: str) -> None:
    assert deployment.ui is not None
    browser.get(deployment.ui.base + path)


def text_of(browser: Any, css: str) -> str:
    return str(browser.find_element(By.CSS_SELECTOR, css).text)


def act(browser: Any, button: str, flash: str) -> None:
    """Press an action's button, accept its confirmation, and wait for the page it leads
    to to say ``flash``."""
    page = browser.find_element(By.TAG_NAME, "html")
    browser.find_element(By.ID, button).click()
    browser.switch_to.alert.accept()
    WebDriverWait(browser, RUN_TIMEOUT).until(staleness_of(page))
    wait_for(lambda: flash in text_of(browser, "#flash"), what=f"the page to say {flash!r}",
             show=lambda: text_of(browser, "body"))


def node_classes(browser: Any) -> dict[str, str]:
    """The CSS class of each node of the drawn graph, by node name."""
    return {g.get_attribute("data-node"): g.get_attribute("class")
            for g in browser.find_elements(By.CSS_SELECTOR, "#graph g.node")}


def test_an_interrupted_run_is_listed_drawn_and_resumed_from_the_page(
    deployment: Deployment, browser: Any
) -> None:
    graph = compile_on(deployment, ui_graphs.build_review())
    thread_id = f"review-{uuid.uuid4().hex[:8]}"
    out = graph.submit({"topic": "launch"}, config_of(thread_id)).result(timeout=RUN_TIMEOUT)
    assert [i.value for i in out["__interrupt__"]] == [ui_graphs.QUESTION]

    # the list: the thread appears with its status, and the counts say so
    open_page(browser, deployment, "/threads")
    wait_for(lambda: thread_id in text_of(browser, "#threads"), what="the thread in the list")
    row = browser.find_element(By.XPATH, f"//tr[td/a[text()='{thread_id}']]")
    assert "interrupted" in row.text
    counts = text_of(browser, "#counts")
    assert re.search(r"interrupted\s+1\b", counts), counts
    screenshot(browser, "threads-list")

    # the thread: graph drawn with the waiting node highlighted, state, interrupt, history
    row.find_element(By.TAG_NAME, "a").click()
    wait_for(lambda: text_of(browser, "#status") == "interrupted", what="the thread page")
    nodes = node_classes(browser)
    assert set(nodes) >= {"write", "review", "publish", "__start__", "__end__"}
    assert "waiting" in nodes["review"] and "idle" in nodes["write"]
    assert browser.find_elements(By.CSS_SELECTOR, "#graph path.edge")
    interrupts = text_of(browser, "#interrupts")
    assert "ship it?" in interrupts and "<b>low</b>" in interrupts  # shown as text
    steps = browser.find_elements(By.CSS_SELECTOR, "#history li.step")
    assert len(steps) >= 3
    assert "LAUNCH" in text_of(browser, "#history")  # write's recorded update
    screenshot(browser, "thread-page")

    # a diff between the two newest steps
    browser.find_element(By.ID, "diff").click()
    wait_for(lambda: browser.find_element(By.ID, "diff-table"), what="the diff page")
    assert "draft" in text_of(browser, "#diff-table") or "no difference" in text_of(
        browser, "#diff-table")
    browser.back()

    # a value that is not JSON is refused with a message, and nothing runs
    value = browser.find_element(By.ID, "resume-value")
    value.send_keys("approved")
    browser.find_element(By.ID, "resume").click()
    browser.switch_to.alert.accept()
    wait_for(lambda: "not valid JSON" in text_of(browser, "#flash"), what="the refusal")
    assert text_of(browser, "#status") == "interrupted"

    # resume from the page with a value and an update, confirmed in a dialog
    wait_for(lambda: browser.find_element(By.ID, "resume-value"), what="the resume form")
    value = browser.find_element(By.ID, "resume-value")
    value.clear()
    value.send_keys('"approved"')
    browser.find_element(By.ID, "resume-update").send_keys('{"reviewer": "ann"}')
    browser.find_element(By.ID, "resume").click()
    alert = browser.switch_to.alert
    assert thread_id in alert.text
    alert.accept()
    wait_for(lambda: "resumed thread" in text_of(browser, "#flash"), what="the resume",
             show=lambda: text_of(browser, "body"))
    wait_for(lambda: text_of(browser, "#status") == "done", RUN_TIMEOUT,
             what="the resumed run to finish")
    state = graph.get_state(config_of(thread_id))
    assert state.values["published"] == "LAUNCH approved by ann"
    assert "LAUNCH approved by ann" in text_of(browser, "#values")


def test_a_failed_thread_shows_its_traceback(deployment: Deployment, browser: Any) -> None:
    graph = compile_on(deployment, cli_graphs.build_boom())
    thread_id = f"boom-{uuid.uuid4().hex[:8]}"
    with pytest.raises(ValueError):
        graph.submit({"value": 1}, config_of(thread_id)).result(timeout=RUN_TIMEOUT)

    open_page(browser, deployment, f"/threads/{thread_id}")
    wait_for(lambda: text_of(browser, "#status") == "failed", what="the failed thread")
    traceback = text_of(browser, "#traceback")
    assert "Traceback" in traceback and "in explode" in traceback
    assert f"ValueError: {cli_graphs.BOOM}" in traceback
    nodes = node_classes(browser)
    assert "failed" in nodes["explode"]

    # retry runs it again from the failed step: prepare's committed step is not redone
    steps = len(browser.find_elements(By.CSS_SELECTOR, "#history li.step"))
    act(browser, "retry", "retrying thread")
    wait_for(lambda: text_of(browser, "#status") == "failed" and "ValueError" in text_of(
        browser, "#traceback"), RUN_TIMEOUT, what="the retried run to fail again")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#history li.step")) == steps
    assert graph.get_state(config_of(thread_id)).values == {"value": 2}


def test_markup_in_the_state_is_shown_as_text(deployment: Deployment, browser: Any) -> None:
    graph = compile_on(deployment, ui_graphs.build_note())
    thread_id = f"note-<i>{uuid.uuid4().hex[:6]}</i>"
    graph.submit({"note": ui_graphs.MARKUP}, config_of(thread_id)).result(timeout=RUN_TIMEOUT)

    open_page(browser, deployment, "/threads")
    wait_for(lambda: thread_id in text_of(browser, "#threads"), what="the thread in the list")
    browser.find_element(By.LINK_TEXT, thread_id).click()
    wait_for(lambda: text_of(browser, "#status") == "done", what="the note thread")
    assert text_of(browser, "#thread-id") == thread_id
    assert ui_graphs.MARKUP in text_of(browser, "#values").replace("\\", "")
    assert browser.execute_script("return window.__pwned === undefined")
    assert not browser.find_elements(By.CSS_SELECTOR, "#values img, #values script, h1 i")


def test_the_token_is_required_off_loopback(deployment: Deployment) -> None:


    refused = deployment.start_ui("--host", "0.0.0.0", wait=False)
    assert refused.proc.wait(timeout=30) == 2
    assert "DURABLE_GRAPH_UI_TOKEN" in refused.log()

    server = deployment.start_ui("--host", "0.0.0.0", env={"DURABLE_GRAPH_UI_TOKEN": TOKEN})
    assert server.get("/threads")[0] == 401
    assert server.get("/threads", {"Authorization": "Bearer wrong-token-wrong-token"})[0] == 401
    status, body = server.get("/threads", {"Authorization": f"Bearer {TOKEN}"})
    assert status == 200 and "threads" in body
    status, _ = http(f"{server.base}/threads?token={TOKEN}")
    assert status == 303  # sets the cookie, drops the token from the address


def test_actions_need_the_csrf_token_and_read_only_refuses_them(deployment: Deployment) -> None:


    assert deployment.ui is not None
    status, body = http(f"{deployment.ui.base}/threads/anything/cancel", method="POST",
                        data=b"csrf=forged", headers={"Cookie": "dg_csrf=other"})
    assert status == 403 and "CSRF" in body

    read_only = deployment.start_ui("--read-only")
    status, body = read_only.get("/threads")
    assert status == 200 and "read-only" in body
    status, body = http(f"{read_only.base}/threads/anything/cancel", method="POST",
                        data=b"csrf=x", headers={"Cookie": "dg_csrf=x"})
    assert status == 403 and "read-only" in body


def test_the_list_pages_and_counts_over_the_api(deployment: Deployment) -> None:
    assert deployment.ui is not None
    status, body = deployment.ui.get("/api/threads?limit=25")
    assert status == 200
    data = json.loads(body)
    assert data["total"] == sum(data["counts"].values()) >= 1
    assert deployment.ui.get("/api/threads?status=sleeping")[0] == 400
    assert deployment.ui.get("/api/threads?limit=7")[0] == 400


# last: its node keeps the module's only worker process busy after the cancel
def test_a_running_thread_shows_its_worker_and_is_cancelled_then_forked(
    deployment: Deployment, browser: Any
) -> None:
    graph = compile_on(deployment, ui_graphs.build_slow())
    thread_id = f"slow-{uuid.uuid4().hex[:8]}"
    handle = graph.submit({}, config_of(thread_id))
    assert deployment.ui is not None
    wait_for(lambda: deployment.ui.get(f"/api/threads/{thread_id}")[0] == 200,
             what="the thread's record")
    open_page(browser, deployment, f"/threads/{thread_id}")
    # the page reloads itself as the thread moves on: read it whole once it shows linger
    wait_for(lambda: re.search(r"task\s+linger\s+\S+\s+ui-\w+-w0@", text_of(browser, "#jobs"))
             and "running" in node_classes(browser)["linger"], 35,
             what="the worker running linger, highlighted")
    screenshot(browser, "thread-running")

    act(browser, "cancel", "cancelled thread")
    wait_for(lambda: text_of(browser, "#status") == "cancelled", what="the cancel")
    assert handle.status() == "cancelled"

    # fork the cancelled thread from its first checkpoint into a new thread
    options = browser.find_elements(By.CSS_SELECTOR, "#fork-checkpoint option")
    options[-1].click()
    browser.find_element(By.ID, "fork-thread").send_keys(f"{thread_id}-copy")
    browser.find_element(By.ID, "fork").click()
    browser.switch_to.alert.accept()
    wait_for(lambda: text_of(browser, "#thread-id") == f"{thread_id}-copy", what="the fork")
    assert "forked thread" in text_of(browser, "#flash")
    assert text_of(browser, "#status") == "interrupted"
