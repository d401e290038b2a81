"""Who may look and who may act: the access token, CSRF checks and security headers.

- **Token.** Bound off the loopback address, the server refuses to start without
  ``DURABLE_GRAPH_UI_TOKEN``; with a token set (anywhere), every request must carry
  it: ``Authorization: Bearer <token>``, or ``?token=<token>`` once, which sets an
  HttpOnly, SameSite=Strict cookie for the pages that follow.
- **CSRF.** Actions are POSTs whose form carries the value of the ``dg_csrf``
  cookie (double submit; the cookie is SameSite=Strict) and whose ``Origin``, when
  the browser sends one, is this server.
- **Headers.** A Content-Security-Policy that allows only this server's own
  scripts and styles (no inline script), no framing, no MIME sniffing.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from urllib.parse import urlencode, urlsplit

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from durable_graph.errors import DurableGraphError

__all__ = ["CSRF_COOKIE", "Access", "check_bind", "csrf_problem", "is_loopback"]

TOKEN_COOKIE = "dg_token"
CSRF_COOKIE = "dg_csrf"
_HEADERS = {
    "content-security-policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
}


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) only accepts local connections."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse to serve off loopback without a token (a clear error says what to set)."""
    if not is_loopback(host) and not token:
        raise DurableGraphError(
            f"refusing to serve the web view on {host!r} without a token: anyone who can "
            "reach it could resume or cancel threads. Set DURABLE_GRAPH_UI_TOKEN to a long "
            "random secret, or bind to 127.0.0.1."
        )
    if token is not None and len(token) < 16:
        raise DurableGraphError(
            "DURABLE_GRAPH_UI_TOKEN is too short: use at least 16 random characters "
            "(python -c 'import secrets; print(secrets.token_urlsafe(32))')."
        )


class Access:
    """ASGI middleware: the token check, the CSRF cookie and the security headers."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app, self.token = app, token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        if self.token is not None:
            given = self._given_token(request)
            if given is None or not hmac.compare_digest(given.encode(), self.token.encode()):
                response = PlainTextResponse(
                    "401: this durable-graph view needs its token (DURABLE_GRAPH_UI_TOKEN): "
                    "open it with ?token=... or send 'Authorization: Bearer ...'.",
                    status_code=401, headers={"www-authenticate": "Bearer"})
                await response(scope, receive, send)
                return
            if "token" in request.query_params:  # keep the token out of history and logs
                redirect = RedirectResponse(_without_token(request), status_code=303)
                redirect.set_cookie(TOKEN_COOKIE, self.token, httponly=True, samesite="strict")
                await redirect(scope, receive, send)
                return
        csrf = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(24)
        scope.setdefault("state", {})["csrf"] = csrf
        fresh = CSRF_COOKIE not in request.cookies

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in _HEADERS.items():
                    headers.setdefault(name, value)
                if fresh:
                    headers.append("set-cookie", f"{CSRF_COOKIE}={csrf}; Path=/; HttpOnly; "
                                                 "SameSite=Strict")
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _given_token(self, request: Request) -> str | None:
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[7:].strip()
        return request.query_params.get("token") or request.cookies.get(TOKEN_COOKIE)


def _without_token(request: Request) -> str:
    query = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "token"])
    return request.url.path + (f"?{query}" if query else "")


def csrf_problem(request: Request, form_value: object) -> str | None:
    """Why a POST fails the CSRF check, or None when it passes."""
    cookie = request.cookies.get(CSRF_COOKIE)
    if not cookie or not isinstance(form_value, str) or not hmac.compare_digest(
        cookie.encode(), form_value.encode()
    ):
        return "the form's CSRF token does not match this browser's: reload the page and retry"
    origin = request.headers.get("origin")
    if origin and origin != "null" and urlsplit(origin).netloc != request.headers.get("host"):
        return f"the request came from another site ({origin}); refused"
    return None
