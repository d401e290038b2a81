"""The web view: server-rendered pages of threads over the store the CLI reads.

Routes::

    GET  /threads                      threads, counts per status, filter, search, paging
    GET  /api/threads                  the same as JSON (the page polls it to stay live)
    GET  /threads/{id}                 graph, state, interrupts, error, running jobs, history
    GET  /threads/{id}/diff            the state diff between two checkpoints
    GET  /api/threads/{id}             status and checkpoint (the page polls it)
    POST /threads/{id}/{action}        resume, retry, cancel, fork (CSRF-checked)
    GET  /healthz                      200 when Redis answers
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from durable_graph.errors import DurableGraphError
from durable_graph.store.redis.threads import STATUSES
from durable_graph.ui.actions import ActionError, run_action
from durable_graph.ui.graphsvg import render_svg
from durable_graph.ui.read import read_diff, read_thread
from durable_graph.ui.security import Access, csrf_problem
from durable_graph.ui.store import UiStore

__all__ = ["create_ui"]

PAGE_SIZES = (25, 50, 100, 200)
_ACTIONS = ("resume", "retry", "cancel", "fork")


class _Pages:
    """The route handlers, sharing the store and the templates."""

    def __init__(self, store: UiStore, read_only: bool) -> None:
        self.store, self.read_only = store, read_only
        folder = resources.files("durable_graph.ui") / "templates"
        self.env = Environment(loader=FileSystemLoader(str(folder)),
                               autoescape=select_autoescape(default=True, default_for_string=True))

    async def _io(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run blocking store reads off the event loop."""
        return await asyncio.to_thread(fn, *args)

    def render(self, request: Request, name: str, code: int = 200, **ctx: Any) -> HTMLResponse:
        template = self.env.get_template(name)
        html = template.render(
            url=lambda route, **params: _path(request, route, **params),
            csrf=request.state.csrf, read_only=self.read_only, prefix=self.store.settings.prefix,
            q=request.query_params.get("q", ""), **ctx)
        return HTMLResponse(html, status_code=code)

    # -- the threads list ----------------------------------------------------

    def _query(self, request: Request) -> tuple[str | None, int, str | None, str]:
        params = request.query_params
        status = params.get("status") or None
        if status is not None and status not in STATUSES:
            raise ActionError(f"unknown status {status!r}: use one of {', '.join(STATUSES)}")
        try:
            limit = int(params.get("limit", "50"))
        except ValueError:
            limit = 0
        if limit not in PAGE_SIZES:
            raise ActionError(f"limit must be one of {PAGE_SIZES}")
        return status, limit, params.get("after") or None, params.get("q", "").strip()

    def _list(self, status: str | None, limit: int, after: str | None, q: str
              ) -> dict[str, Any]:
        counts = self.store.counts()
        if q:
            found = [self.store.saver.get_status(t) for t in self.store.find(q, limit)]
            rows = [{**r, "run": self.store.saver.get_run(r["thread_id"])}
                    for r in found if r is not None]
            cursor = None
        else:
            page = self.store.page(status, limit, after)
            rows, cursor = page.threads, page.next_cursor
        for r in rows:
            r["graph"] = r.get("graph") or self.store.graph_of(r["thread_id"], r.get("run"))
            r.pop("run", None)
            r.pop("error_traceback", None)
        return {"counts": counts, "total": sum(counts.values()), "rows": rows, "cursor": cursor}

    async def threads(self, request: Request) -> Response:
        try:
            status, limit, after, q = self._query(request)
        except ActionError as exc:
            return PlainTextResponse(f"400: {exc}", status_code=400)
        data = await self._io(self._list, status, limit, after, q)
        base = {k: v for k, v in (("status", status), ("limit", limit)) if v and v != 50}
        return self.render(
            request, "threads.html", status=status, after=after, **data,
            live_url=_path(request, "threads_json") + "?" + urlencode(
                {**base, **({"after": after} if after else {}), **({"q": q} if q else {})}),
            first_query="?" + urlencode(base) if base else "",
            next_query="?" + urlencode({**base, "after": data["cursor"]}) if data["cursor"]
            else "",
        )

    async def threads_json(self, request: Request) -> Response:
        try:
            status, limit, after, q = self._query(request)
        except ActionError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        data = await self._io(self._list, status, limit, after, q)
        for r in data["rows"]:
            r["href"] = _path(request, "thread", thread_id=r["thread_id"])
        return JSONResponse({"counts": data["counts"], "total": data["total"],
                             "threads": data["rows"], "next_cursor": data["cursor"]})

    # -- one thread ----------------------------------------------------------

    async def thread(self, request: Request) -> Response:
        thread_id = request.path_params["thread_id"]
        record = await self._io(self.store.saver.get_status, thread_id)
        detail = await self._io(read_thread, self.store, thread_id)
        if detail is None:
            return self.render(request, "message.html", code=404, title="no such thread",
                               kind="error", back=_path(request, "threads"),
                               text=f"no thread {thread_id!r} under prefix "
                                    f"{self.store.settings.prefix!r}")
        svg = Markup(render_svg(detail.nodes, detail.edges, detail.node_states)) \
            if detail.nodes else ""  # render_svg escapes every name it draws
        params = request.query_params
        message, kind = (params["error"], "error") if "error" in params else (
            params.get("done", ""), "ok")
        return self.render(request, "thread.html", t=detail, svg=svg, message=message,
                           message_kind=kind, version=_version(record or {}))

    async def thread_status(self, request: Request) -> Response:
        thread_id = request.path_params["thread_id"]
        record = await self._io(self.store.saver.get_status, thread_id)
        if record is None:
            return JSONResponse({"error": f"no thread {thread_id!r}"}, status_code=404)
        return JSONResponse({"thread_id": thread_id, "status": record.get("status"),
                             "last_checkpoint_id": record.get("last_checkpoint_id"),
                             "version": _version(record)})

    async def diff(self, request: Request) -> Response:
        thread_id = request.path_params["thread_id"]
        older, newer = request.query_params.get("older"), request.query_params.get("newer")
        if not older or not newer:
            return PlainTextResponse("400: pick two steps (older= and newer= checkpoint ids)",
                                     status_code=400)
        rows = await self._io(read_diff, self.store, thread_id, older, newer)
        if rows is None:
            return PlainTextResponse("404: one of the two checkpoints is not in this thread",
                                     status_code=404)
        return self.render(request, "diff.html", thread_id=thread_id, older=older,
                           newer=newer, rows=rows)

    async def action(self, request: Request) -> Response:
        thread_id, action = request.path_params["thread_id"], request.path_params["action"]
        if self.read_only:
            return PlainTextResponse("403: this view is read-only (--read-only)",
                                     status_code=403)
        if action not in _ACTIONS:
            return PlainTextResponse(f"404: no action {action!r}", status_code=404)
        form = await _form(request)
        problem = csrf_problem(request, form.pop("csrf", None))
        if problem:
            return PlainTextResponse(f"403: {problem}", status_code=403)
        try:
            text, shown = await self._io(run_action, self.store, action, thread_id, form)
            query = {"done": text}
        except (ActionError, DurableGraphError) as exc:
            shown, query = thread_id, {"error": f"{action} refused: {exc}"}
        # post, redirect, get: reloading the page shows it again instead of acting twice
        return RedirectResponse(_path(request, "thread", thread_id=shown) + "?" +
                                urlencode(query), status_code=303)

    async def healthz(self, request: Request) -> Response:
        await self._io(self.store.saver.client.ping)
        return PlainTextResponse("ok")


async def _form(request: Request) -> dict[str, str]:
    """An urlencoded form (the page's forms are; no multipart parser needed)."""
    body = (await request.body()).decode("utf-8", errors="replace")
    return {k: v[-1] for k, v in parse_qs(body, keep_blank_values=True).items()}


def _path(request: Request, route: str, **params: Any) -> str:
    """The path of a route; thread ids are percent-quoted (they may hold any character)."""
    if "thread_id" in params:
        params["thread_id"] = quote(str(params["thread_id"]), safe="")
    return str(request.app.url_path_for(route, **params))


def _version(record: dict[str, Any]) -> str:
    """Changes whenever the thread's page would: its status, checkpoint and update time."""
    return "|".join(str(record.get(k) or "") for k in
                    ("status", "last_checkpoint_id", "updated_at"))


def create_ui(store: UiStore, *, token: str | None = None, read_only: bool = False
              ) -> Starlette:
    """The ASGI app of the web view over ``store`` (``uvicorn`` serves it)."""
    pages = _Pages(store, read_only)
    static = StaticFiles(directory=str(resources.files("durable_graph.ui") / "static"))
    routes = [
        Route("/", lambda request: Response(status_code=307, headers={"location": "/threads"})),
        Route("/threads", pages.threads, name="threads"),
        Route("/api/threads", pages.threads_json, name="threads_json"),
        Route("/threads/{thread_id:path}/diff", pages.diff, name="diff"),
        Route("/api/threads/{thread_id:path}", pages.thread_status, name="thread_status"),
        Route("/threads/{thread_id:path}/{action:str}", pages.action, methods=["POST"],
              name="action"),
        Route("/threads/{thread_id:path}", pages.thread, name="thread"),
        Route("/healthz", pages.healthz),
        Mount("/static", static, name="static"),
    ]
    return Starlette(routes=routes, middleware=[Middleware(Access, token=token)])
