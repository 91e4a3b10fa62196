"""Who may talk to the server, and how much: host check, token, body limit, headers.

One ASGI middleware in front of everything:

- **Host check.** Without a token the server only answers requests addressed to a
  loopback name (``127.0.0.1``, ``localhost``, ``::1``). A web page on another site
  cannot read answers from ``127.0.0.1`` (no CORS headers are ever sent), but it could
  re-point its own host name at ``127.0.0.1`` ("DNS rebinding"); the browser would then
  send that name as ``Host``, and it is refused.
- **Proxies.** Without a token, a request a reverse proxy forwarded (``Forwarded``,
  ``X-Forwarded-For``, ``X-Forwarded-Host`` or ``X-Real-IP``) is refused with 403
  saying to start the server with a token: the proxy's address passes the host check,
  and everyone who reaches the proxy would reach the collection. A proxy that adds
  none of these (nginx's defaults) cannot be told from a local client.
- **Token.** With a token, every ``/api/`` request but the OpenAPI schema must carry
  it: ``Authorization: Bearer TOKEN``, or the ``searchengine_token`` cookie that
  ``POST /api/session`` sets for the page (``HttpOnly``: no script reads it;
  ``SameSite=Strict``: other sites' pages cannot make the browser send it). The page
  and its scripts load without it; they hold no data.
- **Cross-site requests.** A page on another site can still make the browser *send* a
  request to ``127.0.0.1`` (a form, an ``<img>``, a ``no-cors`` fetch) even though it
  cannot read the answer, and make the server decode a large upload or load a model for
  it. Browsers say where a request comes from: ``Sec-Fetch-Site`` (every current
  browser) and ``Origin`` (on every POST). An ``/api/`` request whose ``Sec-Fetch-Site``
  is anything but ``same-origin`` or ``none`` (typed in the address bar), or, from a
  browser that does not send it, whose ``Origin`` is not this server's own, is refused
  with 403 before any work. Tools
  such as curl send neither header and are not affected; links to the page itself
  (``/?q=...``) work from anywhere.
- **Body limit.** A request body over the limit is answered 413 before it is all
  read (from ``Content-Length``, or by counting a chunked body).
- **Headers.** Every response forbids framing, content sniffing and any script, style
  or image from elsewhere (Content-Security-Policy).
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import re
from collections.abc import Collection, MutableMapping
from typing import Any

from starlette.datastructures import Headers
from starlette.requests import cookie_parser
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from searchengine.errors import ConfigError

TOKEN_COOKIE = "searchengine_token"
# What reverse proxies add to a request they forward (Caddy and Traefik by default,
# nginx and Apache as their guides set them up): where it came from.
FORWARDING_HEADERS = ("forwarded", "x-forwarded-for", "x-forwarded-host", "x-real-ip")
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
PUBLIC_API_PATHS = frozenset({"/api/openapi.json"})
_TOKEN_RE = re.compile(r"^[A-Za-z0-9._~-]{16,256}$")
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
        b"connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    ),
]


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or address to bind to) is reachable from this machine only."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_binding(host: str, token: str | None) -> None:
    """Refuse settings that would expose the collection.

    Raises:
        ConfigError: a non-loopback address without a token, or a guessable token.
    """
    if token is not None and not _TOKEN_RE.match(token):
        raise ConfigError(
            "the token must be 16 to 256 characters from A-Z a-z 0-9 . _ ~ -; make one with "
            "python -c 'import secrets; print(secrets.token_urlsafe(24))'"
        )
    if token is None and not is_loopback(host):
        raise ConfigError(
            f"refusing to listen on {host} without --token: anyone who can reach this "
            "machine could browse and download your photos. Add --token (or set "
            "SEARCHENGINE_TOKEN), or keep the default --host 127.0.0.1"
        )


class Guard:
    """The ASGI middleware described in this module's docstring.

    Args:
        app: the application to guard.
        token: the API token, or ``None`` for none.
        allowed_hosts: host names (no port) requests may be addressed to; ``None``
            allows any.
        max_body: the largest request body accepted, in bytes.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        token: str | None,
        allowed_hosts: Collection[str] | None,
        max_body: int,
    ) -> None:
        self.app = app
        self.token = token.encode() if token else None
        self.allowed_hosts = None if allowed_hosts is None else frozenset(allowed_hosts)
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        refusal = self._refusal(scope["path"], headers) or _cross_site(scope["path"], headers)
        if refusal is not None:
            await _send_error(send, *refusal)
            return
        length = headers.get("content-length", "0")
        if not length.isdigit() or int(length) > self.max_body:
            await _send_error(send, 413, self._too_large())
            return
        state = {"received": 0, "too_large": False, "started": False}

        async def counting_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                state["received"] += len(message.get("body", b""))
                if state["received"] > self.max_body:
                    state["too_large"] = True
                    # What the app sees: the client went away. It stops reading, and
                    # its response is replaced by the 413 below.
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if state["too_large"]:
                if not state["started"]:
                    state["started"] = True
                    await _send_error(send, 413, self._too_large())
                return
            if message["type"] == "http.response.start":
                state["started"] = True
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, counting_receive, guarded_send)
        if state["too_large"] and not state["started"]:
            await _send_error(send, 413, self._too_large())

    def _refusal(self, path: str, headers: Headers) -> tuple[int, str, list[Any]] | None:
        if self.allowed_hosts is not None:
            host = _hostname(headers.get("host", ""))
            if host not in self.allowed_hosts:
                return (
                    400,
                    f"this server answers only requests to {', '.join(sorted(self.allowed_hosts))}"
                    "; start it with --token to serve other host names",
                    [],
                )
        if self.token is None and any(name in headers for name in FORWARDING_HEADERS):
            return (
                403,
                "a proxy forwards requests to this server, which has no token: anyone who "
                "reaches the proxy would reach the collection; start it with a token "
                "(SEARCHENGINE_TOKEN=... searchengine serve) and open the page once as "
                "PAGE-ADDRESS#token=TOKEN",
                [],
            )
        guarded = path.startswith("/api/") and path not in PUBLIC_API_PATHS
        if self.token is not None and guarded and not self._authorised(headers):
            return (
                401,
                "this server needs its token: send 'Authorization: Bearer TOKEN', or open "
                "the page as http://HOST:PORT/#token=TOKEN",
                [(b"www-authenticate", b"Bearer")],
            )
        return None

    def _authorised(self, headers: Headers) -> bool:
        assert self.token is not None
        offered = []
        scheme, _, value = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            offered.append(value.strip())
        offered.extend(_cookies(headers.get("cookie", ""), TOKEN_COOKIE))
        return any(hmac.compare_digest(o.encode(), self.token) for o in offered)

    def _too_large(self) -> str:
        return f"the request body is over the {self.max_body // 1_000_000} MB limit"


def _cookies(header: str, name: str) -> list[str]:
    """Every value of cookie ``name`` in a ``Cookie`` header. A browser sends one per
    path it was set for (``cookie_parser`` keeps the last): the page's own, and one an
    earlier release set for the whole host."""
    values = [cookie_parser(chunk).get(name, "") for chunk in header.split(";")]
    return [value for value in values if value]


def offered_token(headers: Headers) -> str | None:
    """The token a request carries as ``Authorization: Bearer TOKEN``, if any."""
    scheme, _, value = headers.get("authorization", "").partition(" ")
    token = value.strip()
    return token if scheme.lower() == "bearer" and _TOKEN_RE.match(token) else None


def _cross_site(path: str, headers: Headers) -> tuple[int, str, list[Any]] | None:
    """A 403 for an API request that a page on another site made the browser send."""
    if not path.startswith("/api/") or path in PUBLIC_API_PATHS:
        return None
    site = headers.get("sec-fetch-site")
    if site is not None:
        # The browser's own word, which no page can set. It is what counts where it is
        # sent: a reverse proxy may ask this server for another Host than the browser
        # asked the proxy for (nginx passes its upstream's address by default, and
        # `$host` drops the port), so the page's Origin need not match it.
        foreign = site not in ("same-origin", "none")
    else:
        origin = headers.get("origin")
        foreign = origin is not None and _authority(origin) != headers.get("host", "").lower()
    if foreign:
        return (
            403,
            "cross-site request refused: this API answers only its own page and tools "
            "such as curl, not requests another site's page makes the browser send",
            [],
        )
    return None


def _authority(origin: str) -> str:
    """``http://127.0.0.1:8765`` → ``127.0.0.1:8765``; ``null`` and junk → ``""``."""
    scheme, sep, rest = origin.strip().lower().partition("://")
    return rest.rstrip("/") if sep and scheme in ("http", "https") and "/" not in rest else ""


def _hostname(host: str) -> str:
    """``Host`` header without the port: ``[::1]:8765`` → ``::1``, ``a:1`` → ``a``."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


async def _send_error(
    send: Send, status: int, message: str, extra: list[Any] | None = None
) -> None:
    body = json.dumps({"error": message}).encode()
    headers: list[Any] = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *(extra or []),
        *SECURITY_HEADERS,
    ]
    start: MutableMapping[str, Any] = {
        "type": "http.response.start",
        "status": status,
        "headers": headers,
    }
    await send(start)
    await send({"type": "http.response.body", "body": body})
