"""What taskling's two HTTP servers (`taskling serve`, `taskling ui`) share below their routes: the
loopback names they answer to by default, the name part of a Host header, a request's media type,
and the listening socket each is handed (bound before the server starts, so nothing can take the
port in between, and port 0 gives a free one whose number the caller reads back)."""
from __future__ import annotations

import errno
import socket
from urllib.parse import urlsplit

from .errors import TasklingError

LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


def host_name(value: str) -> str:
    """The name part of a Host header or an origin's authority ('[::1]:8000' -> '::1'), lower-cased;
    "\\x00" (no name anyone uses) for a malformed one."""
    try:
        return (urlsplit(f"//{value}").hostname or "").rstrip(".")
    except ValueError:  # a malformed port or bracket
        return "\x00"


def media_type(headers: dict) -> bytes:
    """The request's Content-Type without its parameters, lower-cased (b"" when absent)."""
    return headers.get(b"content-type", b"").split(b";")[0].strip().lower()


def hostport(host: str, port: int) -> str:
    """host:port as it goes in a URL (an IPv6 address in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def listen(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """A listening TCP socket on host:port (port 0: one the kernel picks); a host that does not
    resolve or a port that cannot be had is a one-line error saying what to pass instead."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    except socket.gaierror as e:
        raise TasklingError(f"cannot use host '{host}' ({e.strerror}); pass --host 127.0.0.1") from None
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
    try:
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise TasklingError(f"port {port} on {host} is in use; pass --port N (0: any free port) or stop the "
                                "other server") from None
        raise TasklingError(f"cannot listen on {hostport(host, port)} ({e.strerror}); pass --port N (0: any free "
                            "port) or --host 127.0.0.1") from None
    return sock
