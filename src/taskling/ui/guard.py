"""Who may talk to `taskling ui`, checked on every request before any route runs (GETs included).

The UI serves the organisation's documents, so a request must be addressed to this server and
come from it or from someone holding the session token:

* Host: by default the UI listens on loopback and answers only requests addressed to a loopback
  name (127.0.0.1, localhost, [::1]); a web page that rebinds its own DNS name to 127.0.0.1 sends
  its own name and gets 403 (DNS rebinding).
* Origin: a request that carries another site's Origin is 403 (cross-site requests).
* Content-Type: a POST must be application/json (415), which no cross-site form can send.
* The session token: a client on this machine using a loopback name is trusted with the page and
  what it reads, and the page carries the token that every POST needs (session.py). With
  `taskling ui --host 0.0.0.0 --allow-remote`, any other client must present the token itself
  (in the address `taskling ui` prints, `?token=...`, or the X-Taskling-Token header) for every
  page and API call: the token is never handed to a client that did not bring it.
"""
from __future__ import annotations

import ipaddress
import secrets
from urllib.parse import parse_qs, urlsplit

from fastapi.responses import JSONResponse, PlainTextResponse

from ..core.net import LOOPBACK, host_name, media_type

OPEN = ("/static/app.js", "/static/app.css")  # the shipped assets: no data, nothing to protect


def loopback_peer(scope) -> bool:
    client = scope.get("client")
    if not client:  # a Unix socket or an in-process client: nobody from the network
        return True
    try:
        return ipaddress.ip_address(client[0].split("%")[0]).is_loopback
    except ValueError:
        return False


class Guard:
    """ASGI middleware: host, origin, content type and the token for clients that are not trusted."""

    def __init__(self, app, token: str, remote: bool = False):
        self.app, self.token, self.remote = app, token, remote

    def __getattr__(self, name):  # .state and friends of the app behind
        return getattr(self.app, name)

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        refusal = self.refuse(scope)
        if refusal is not None:
            if scope["type"] == "http":
                return await refusal(scope, receive, send)
            return await send({"type": "websocket.close", "code": 1008})
        return await self.app(scope, receive, send)

    def refuse(self, scope):
        headers = dict(scope["headers"])
        host = headers.get(b"host", b"").decode("latin-1")
        name = host_name(host) if host else "127.0.0.1"
        if not self.remote and name not in LOOPBACK:
            return refused(403, f"this UI answers requests to 127.0.0.1 or localhost only, not to '{host[:80]}'")
        origin = headers.get(b"origin", b"").decode("latin-1")
        if origin and urlsplit(origin).netloc.lower() != host.lower():
            return refused(403, f"requests from pages of {origin[:80]} are not allowed")
        if scope.get("method") == "POST" and media_type(headers) != b"application/json":
            return refused(415, "send JSON with 'Content-Type: application/json'")
        trusted = loopback_peer(scope) and name in LOOPBACK
        if trusted or scope["path"] in OPEN or self.has_token(scope, headers):
            return None
        if scope["path"] == "/":
            return PlainTextResponse("taskling ui: open the address 'taskling ui' printed (it ends in ?token=...); "
                                     "this page is only given to clients that bring the session token.\n",
                                     status_code=401)
        return refused(401, "this client is not on this machine: send the session token (X-Taskling-Token)")

    def has_token(self, scope, headers: dict) -> bool:
        given = headers.get(b"x-taskling-token", b"").decode("latin-1")
        if not given:
            given = (parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token") or [""])[0]
        return bool(given) and secrets.compare_digest(given.encode(), self.token.encode())


def refused(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message, "detail": message}, status_code=status,
                        headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"})
