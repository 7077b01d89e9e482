"""taskling ui under attack (issue 23): DNS rebinding on every GET (the page carries the session token,
the API the documents), cross-site requests, a non-loopback --host, and clients on other machines that
must bring the token; `start` returns only once it listens, on the socket it was handed or bound."""
from __future__ import annotations

import asyncio
import socket

import httpx
import pytest
from rich.console import Console

from conftest import write_workspace
from taskling.core.config import load_config
from taskling.core.errors import TasklingError
from taskling.core.workspace import Context
from taskling.ui import create_app, start
from taskling.ui.app import serve


@pytest.fixture(scope="module")
def ctx(tmp_path_factory, tiny_model_dir):
    from taskling.stages import ingest

    root = tmp_path_factory.mktemp("ui-sec")
    path = write_workspace(root, tiny_model_dir, ingest__embed=False)
    c = Context(load_config(path, []), console=Console(stderr=True, quiet=True))
    ingest.run(c)
    return c


@pytest.fixture(scope="module")
def ui(ctx):
    server, url, token = start(ctx)
    yield url, token
    server.should_exit = True


def test_every_get_refuses_a_rebound_host(ui):
    url, token = ui
    port = url.rsplit(":", 1)[1]
    for path in ("/", "/api/search?q=sqlite", "/api/state", "/api/topics", "/api/runs", "/api/progress?once=1"):
        r = httpx.get(url + path, headers={"Host": f"rebind.attacker.example:{port}"})
        assert r.status_code == 403, path
        assert token not in r.text and "sqlite" not in r.text.lower().replace("127.0.0.1", "")
    page = httpx.get(url + "/")  # the same page to this machine, by its loopback name
    assert page.status_code == 200 and token in page.text
    assert httpx.get(url + "/api/search", params={"q": "json_extract"}).json()["hits"]


def test_cross_site_requests_and_non_json_posts_are_refused(ui):
    url, token = ui
    r = httpx.get(url + "/api/state", headers={"Origin": "http://attacker.example"})
    assert r.status_code == 403
    r = httpx.post(url + "/api/review", content=b'{"id": "x", "decision": "accept"}',
                   headers={"Content-Type": "text/plain", "X-Taskling-Token": token})
    assert r.status_code == 415
    r = httpx.post(url + "/api/review", json={"id": "x", "decision": "accept"},
                   headers={"X-Taskling-Token": token, "Origin": url})  # its own page: past the guard, to the route
    assert r.status_code == 404 and "not a current candidate" in r.text


def test_a_non_loopback_host_needs_allow_remote(ctx):
    with pytest.raises(TasklingError, match="--allow-remote"):
        serve(ctx, host="0.0.0.0", port=0)


def asgi_get(app, path: str, client_ip: str, **headers) -> httpx.Response:
    async def go():
        transport = httpx.ASGITransport(app=app, client=(client_ip, 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://192.0.2.10:8765") as c:
            return await c.get(path, headers=headers)
    return asyncio.run(go())


def test_with_allow_remote_other_machines_get_nothing_without_the_token(ctx):
    app, token = create_app(ctx, remote=True)
    page = asgi_get(app, "/", "192.0.2.77")
    assert page.status_code == 401 and token not in page.text
    assert asgi_get(app, "/api/search?q=sqlite", "192.0.2.77").status_code == 401
    assert asgi_get(app, "/api/search?q=sqlite", "192.0.2.77", **{"X-Taskling-Token": "wrong"}).status_code == 401
    assert asgi_get(app, "/static/app.js", "192.0.2.77").status_code == 200  # shipped code, no data
    with_token = asgi_get(app, f"/?token={token}", "192.0.2.77")
    assert with_token.status_code == 200 and token in with_token.text
    assert asgi_get(app, "/api/state", "192.0.2.77", **{"X-Taskling-Token": token}).status_code == 200
    # a browser on this machine that a rebinding page drives is no more trusted than a stranger
    assert asgi_get(app, "/", "127.0.0.1", Host="rebind.attacker.example:8765").status_code == 401


def test_start_serves_the_socket_it_is_handed_and_is_up_when_it_returns(ctx):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    server, url, _ = start(ctx, sock=sock)
    try:
        assert url.endswith(f":{sock.getsockname()[1]}")
        assert httpx.get(url + "/api/state", timeout=5).status_code == 200  # no retry loop: it listens already
    finally:
        server.should_exit = True
    server2, url2, _ = start(ctx, port=0)
    try:
        assert int(url2.rsplit(":", 1)[1]) > 0 and httpx.get(url2 + "/api/state", timeout=5).status_code == 200
    finally:
        server2.should_exit = True
