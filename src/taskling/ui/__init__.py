"""taskling ui: a local web app over the workspace (the pile, the examples and their review).

    taskling ui [--port 8765]        # prints http://127.0.0.1:8765/

Everything it serves is in this package (no network). It binds 127.0.0.1 by default and answers
only requests addressed to a loopback name from no other site (`guard`: DNS rebinding, CSRF);
every state-changing request must carry the session token the page was served with, and with
--allow-remote a client on another machine gets nothing without that token. Nothing outside the
workspace can be read through it. Data from documents is shown as text, never as HTML: the page
builds its DOM with textContent, and a strict Content-Security-Policy forbids inline scripts.
"""
from __future__ import annotations

from .app import create_app, serve, start

__all__ = ["create_app", "serve", "start"]
