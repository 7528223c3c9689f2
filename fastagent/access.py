"""Who may read calls: the read credential, separate from the token that admits calls.

Two credentials, two jobs (see docs/privacy.md):

* ``FASTAGENT_VAIC_TOKEN`` admits calls on ``/audiocodes`` and nothing else.
* ``FASTAGENT_READ_TOKEN`` admits readers of call data: ``/mcp``, the web views,
  ``--reveal``.  Without it configured, every endpoint that reads call data is
  **off** (404), not open.  It must differ from the VAIC token.

``FASTAGENT_READ_TOKEN`` holds one token, or several as ``label:token`` pairs
separated by commas (``alice:...,audit-bot:...``), so that the audit trail can
say which credential read what.  A token is at least 16 characters.  An unlabelled
token is named ``read-token#<8 hex of its SHA-256>`` in the audit trail (never the
token itself).

A request presents the credential as ``Authorization: Bearer <token>`` or, for a
browser, as the cookie :data:`COOKIE` (HttpOnly, SameSite=Strict; set it with
:func:`set_read_cookie` after checking a token the user typed in).

Reuse, for any endpoint that reads call data::

    access = ReadAccess.from_env()            # or app.state.read_access in the service
    app.mount("/inspect", access.guard(inspector_app))        # ASGI sub-app
    @app.get("/calls/{call_id}")                              # FastAPI route
    async def one(call_id: str, reader: Reader = Depends(require_reader)): ...

``/docs``, ``/redoc`` and ``/openapi.json`` are served only when
``FASTAGENT_API_DOCS=1`` (:func:`api_docs_enabled`), and then also behind the read
credential (:func:`docs_kwargs` and :meth:`ReadAccess.guard_paths`).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie
from typing import Any

from fastagent.errors import ConfigError

__all__ = [
    "COOKIE",
    "DOCS_PATHS",
    "AccessError",
    "ReadAccess",
    "Reader",
    "api_docs_enabled",
    "docs_kwargs",
    "require_reader",
    "set_read_cookie",
]

ENV_READ = "FASTAGENT_READ_TOKEN"
ENV_DOCS = "FASTAGENT_API_DOCS"
COOKIE = "fastagent_read"
MIN_TOKEN = 16
DOCS_PATHS = ("/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json")
_LABEL = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")

ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]


class AccessError(ConfigError):
    """A malformed read-credential setting (one line)."""


@dataclass(frozen=True)
class Reader:
    """Who is reading: the label of the credential presented (never the token)."""

    who: str


def _fingerprint(token: str) -> str:
    return "read-token#" + hashlib.sha256(token.encode()).hexdigest()[:8]


class ReadAccess:
    """The configured read credentials; :attr:`enabled` is False when there are none."""

    def __init__(self, tokens: Mapping[str, str] | None = None) -> None:
        # token -> label; compared in constant time, one by one.
        self._tokens: dict[bytes, str] = {t.encode(): who for t, who in (tokens or {}).items()}

    @classmethod
    def parse(cls, raw: str | None, *, vaic_token: str | None = None) -> ReadAccess:
        """Parse a ``FASTAGENT_READ_TOKEN`` value; raises AccessError (one line)."""
        tokens: dict[str, str] = {}
        for part in (raw or "").split(","):
            part = part.strip()
            if not part:
                continue
            label, sep, token = part.partition(":")
            if not sep:
                label, token = "", part
            elif not _LABEL.match(label):
                raise AccessError(
                    f"bad {ENV_READ}: label {label[:20]!r} must be letters, digits, _ . @ -"
                )
            if len(token) < MIN_TOKEN:
                raise AccessError(
                    f"bad {ENV_READ}: a token must be at least {MIN_TOKEN} characters "
                    "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')"
                )
            if vaic_token and hmac.compare_digest(token.encode(), vaic_token.encode()):
                raise AccessError(
                    f"{ENV_READ} must differ from FASTAGENT_VAIC_TOKEN: "
                    "the VAIC token admits calls only"
                )
            if token in tokens:
                raise AccessError(f"bad {ENV_READ}: the same token is given twice")
            tokens[token] = label or _fingerprint(token)
        return cls(tokens)

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, *, vaic_token: str | None = None
    ) -> ReadAccess:
        env = os.environ if env is None else env
        return cls.parse(env.get(ENV_READ), vaic_token=vaic_token)

    @classmethod
    def ephemeral(cls, label: str = "local") -> tuple[ReadAccess, str]:
        """A fresh random credential (e.g. for a local inspector): (access, token)."""
        token = secrets.token_urlsafe(32)
        return cls({token: label}), token

    def labels(self) -> list[str]:
        """The credentials' labels, in the order configured."""
        return list(self._tokens.values())

    @property
    def enabled(self) -> bool:
        return bool(self._tokens)

    def check(self, token: str | None) -> Reader | None:
        """The reader holding ``token``, or None.  Constant time per configured token."""
        if not token:
            return None
        given = token.encode()
        found = None
        for known, who in self._tokens.items():
            if hmac.compare_digest(given, known):
                found = who
        return Reader(found) if found is not None else None

    def reader(self, headers: Mapping[str, str] | list[tuple[bytes, bytes]]) -> Reader | None:
        """The reader a request's headers authenticate (bearer token, else the cookie)."""
        return self.check(presented_token(headers))

    # ------------------------------------------------------------------ ASGI

    def guard(self, app: ASGIApp, *, realm: str = "fastagent") -> ASGIApp:
        """Wrap an ASGI app that reads call data: 404 while no read credential is
        configured, 401 without a valid one; else the app runs with
        ``scope["state"]["reader"]`` set to the :class:`Reader`."""

        async def guarded(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] not in ("http", "websocket"):
                await app(scope, receive, send)  # lifespan
                return
            reader = self.reader(scope.get("headers") or [])
            if not self.enabled or reader is None:
                await _deny(scope, receive, send, 404 if not self.enabled else 401, realm)
                return
            scope.setdefault("state", {})["reader"] = reader
            await app(scope, receive, send)

        return guarded

    def guard_paths(self, app: ASGIApp, paths: tuple[str, ...] | Callable[[str], bool]) -> ASGIApp:
        """Like :meth:`guard`, for the requests whose path (without the root path)
        is in ``paths`` (or for which ``paths(path)`` is true); others pass."""
        wrapped = self.guard(app)

        def match(path: str) -> bool:
            return paths(path) if callable(paths) else path in paths

        async def selective(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] in ("http", "websocket"):
                path = scope.get("path", "").removeprefix(scope.get("root_path", ""))
                if match(path):
                    await wrapped(scope, receive, send)
                    return
            await app(scope, receive, send)

        return selective


def presented_token(headers: Mapping[str, str] | list[tuple[bytes, bytes]]) -> str | None:
    """The token a request presents: ``Authorization: Bearer <t>``, else cookie :data:`COOKIE`.

    ``headers``: ASGI raw header pairs, or a case-insensitive mapping (Starlette's).
    Malformed headers count as no token (never raise).
    """
    auth = cookie = ""
    if isinstance(headers, list):
        for k, v in headers:
            name = k.lower()
            if name == b"authorization" and not auth:
                auth = v.decode("latin-1")
            elif name == b"cookie":
                cookie += ("; " if cookie else "") + v.decode("latin-1")
    else:
        auth = headers.get("authorization", "") or ""
        cookie = headers.get("cookie", "") or ""
    scheme, _, value = auth.strip().partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if cookie:
        try:
            jar: SimpleCookie = SimpleCookie()
            jar.load(cookie)
        except CookieError:
            return None
        morsel = jar.get(COOKIE)
        if morsel is not None and morsel.value:
            return morsel.value
    return None


async def _deny(scope: Any, receive: Any, send: Any, status: int, realm: str) -> None:
    from starlette.responses import PlainTextResponse

    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 4404 if status == 404 else 4401})
        return
    if status == 404:
        response = PlainTextResponse("not found", status_code=404)
    else:
        response = PlainTextResponse(
            "read credential required",
            status_code=401,
            headers={"WWW-Authenticate": f'Bearer realm="{realm}"'},
        )
    await response(scope, receive, send)


# ---------------------------------------------------------------------- FastAPI


def require_reader(request: Any) -> Reader:
    """FastAPI dependency: the :class:`Reader` of this request, from
    ``request.app.state.read_access`` (the service sets it); 404 while reading is
    off, 401 without a valid credential.  Use as ``Depends(require_reader)``."""
    from fastapi import HTTPException

    access: ReadAccess | None = getattr(request.app.state, "read_access", None)
    if access is None or not access.enabled:
        raise HTTPException(status_code=404, detail="not found")
    reader = access.reader(request.headers)
    if reader is None:
        raise HTTPException(
            status_code=401,
            detail="read credential required",
            headers={"WWW-Authenticate": 'Bearer realm="fastagent"'},
        )
    return reader


# FastAPI inspects the annotation: give it the real Request type when available.
try:  # pragma: no branch
    from starlette.requests import Request as _Request

    require_reader.__annotations__["request"] = _Request
except ImportError:  # pragma: no cover - starlette comes with fastapi
    pass


def set_read_cookie(response: Any, token: str, *, secure: bool = True) -> None:
    """Give a browser the read credential as an HttpOnly, SameSite=Strict cookie.

    Call only after :meth:`ReadAccess.check` accepted ``token``.  ``secure=False``
    only for plain-http loopback (``fastagent inspect``)."""
    response.set_cookie(COOKIE, token, httponly=True, samesite="strict", secure=secure, path="/")


def api_docs_enabled(env: Mapping[str, str] | None = None) -> bool:
    """``FASTAGENT_API_DOCS=1``: serve /docs, /redoc and /openapi.json (behind the read
    credential).  Off by default: the API description helps an attacker more than a
    phone platform."""
    env = os.environ if env is None else env
    return env.get(ENV_DOCS, "").strip().lower() in ("1", "true", "yes", "on")


def docs_kwargs(enabled: bool) -> dict[str, Any]:
    """FastAPI constructor arguments that switch the API docs on or off."""
    if enabled:
        return {}
    return {"docs_url": None, "redoc_url": None, "openapi_url": None}
