"""Which web pages may use the service: the ``Origin`` and ``Host`` checks.

Browsers let any page open a WebSocket to any address and send it a form POST without asking the
server first; what they do say is where the page comes from (``Origin``). Unless the service
refuses requests from other origins, any page its user visits could take every stream and send
uploads. And a page whose domain is later made to resolve to 127.0.0.1 (DNS rebinding) becomes
same-origin with a local server: only the ``Host`` header, that domain, tells it apart.

:class:`OriginCheck` refuses (before the route runs) a request whose ``Host`` is not allowed, and
one with an ``Origin`` other than the service's own address or an allowed origin. Requests
without an ``Origin`` header (curl, scripts, same-origin page loads) pass the origin check.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["LOOPBACK_HOSTS", "OriginCheck", "host_name"]

#: the names of this machine that no other site can use (the default allowed hosts)
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
#: default ports by scheme, so that ``http://a`` and ``http://a:80`` are one origin
_DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}
#: WebSocket close code for a policy violation (sent as HTTP 403 before the handshake)
_CLOSE_POLICY = 1008


def host_name(netloc: str) -> str:
    """The host of ``host[:port]`` (IPv6 in brackets), lower case, without the port."""
    host = netloc.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _origin(url: str) -> tuple[str, str, int] | None:
    """``(scheme, host, port)`` of an origin, :obj:`None` when it is not one."""
    try:
        parts = urlsplit(url.strip().lower())
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme)
    except ValueError:
        return None
    if not parts.scheme or not parts.hostname or port is None:
        return None
    return parts.scheme, parts.hostname, port


class OriginCheck:
    """ASGI middleware refusing requests from other sites (see the module description).

    Args:
        app: The application it guards.
        allowed_origins (Iterable[str], optional): Origins allowed besides the service's own
            (``"https://example.org"``, ``"http://localhost:3000"``); ``"*"`` allows any.
        allowed_hosts (Sequence[str], optional): Host names the requests may be addressed to
            (the ``Host`` header, without the port); the hosts of :obj:`allowed_origins` are
            added. :obj:`None` allows any. (default: :data:`LOOPBACK_HOSTS`)
    """

    def __init__(
        self,
        app: ASGIApp,
        allowed_origins: Iterable[str] = (),
        allowed_hosts: Sequence[str] | None = LOOPBACK_HOSTS,
    ) -> None:
        self.app = app
        origins = [o for o in allowed_origins if o != "*"]
        self.any_origin = "*" in allowed_origins
        self.origins = {parsed for o in origins if (parsed := _origin(o)) is not None}
        self.hosts = None
        if allowed_hosts is not None:
            self.hosts = {host_name(h) for h in allowed_hosts} | {h for _, h, _ in self.origins}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            reason = self.refusal(Headers(scope=scope), scope)
            if reason is not None:
                await self._refuse(reason, scope, receive, send)
                return
        await self.app(scope, receive, send)

    def refusal(self, headers: Headers, scope: Scope) -> str | None:
        """Why a request with these headers is refused; :obj:`None` when it is allowed."""
        host = headers.get("host", "")
        if self.hosts is not None and host_name(host) not in self.hosts:
            return (
                f"host {host!r} is not served here (allowed: {sorted(self.hosts)}); a page "
                "reaching this server under another name is refused"
            )
        origin = headers.get("origin")
        if origin is None or self.any_origin:
            return None
        parsed = _origin(origin)
        scheme = scope.get("scheme", "http").replace("ws", "http")
        own = _origin(f"{scheme}://{host}")
        if parsed is not None and (parsed in self.origins or _same_site(parsed, own)):
            return None
        return (
            f"origin {origin[:100]!r} may not use this service (only pages it serves itself); "
            "start it with --allow-origin ORIGIN to allow another"
        )

    @staticmethod
    async def _refuse(reason: str, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":  # closed, so that the client stops sending a body
            response = JSONResponse({"error": reason}, 403, headers={"Connection": "close"})
            await response(scope, receive, send)
        else:  # a WebSocket closed before its handshake is answered with HTTP 403
            await send({"type": "websocket.close", "code": _CLOSE_POLICY, "reason": reason[:120]})


def _same_site(origin: tuple[str, str, int], own: tuple[str, str, int] | None) -> bool:
    """Whether the origin is the service's own address (``ws``/``wss`` as ``http``/``https``)."""
    if own is None:
        return False
    scheme = origin[0].replace("ws", "http")
    return (scheme, *origin[1:]) == own
