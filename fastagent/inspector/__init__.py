"""The call inspector: a web page over the log, served by FastAgent itself.

:func:`inspector_app` builds an ASGI app (Starlette) over an event store.  It is
mounted at ``/inspect`` by ``fastagent serve`` (behind the read credential) and
served alone on 127.0.0.1 by ``fastagent inspect``.  Every asset is in
``fastagent/inspector/static`` (hand-written HTML, CSS and JavaScript): the page
loads nothing from anywhere else and works with no internet.

HTTP API (all JSON; times in µs since the epoch or ms from the call's start):

``GET api/calls``
    The calls list, newest first.  Filters (query string): ``agent``, ``outcome``,
    ``since`` and ``until`` (ISO date or date-time, UTC), ``min_s`` and ``max_s``
    (duration), ``fsa_state`` (``state`` or ``fsa:state`` reached), ``q`` (call id
    substring), ``caller`` (digits of the caller's number), ``limit`` (default 200).
``GET api/calls/{id}``
    The call page's data (:func:`projections.inspect.call_view`).
``GET api/calls/{id}/state?seq=N``
    The live-state projection folded from the log up to event ``N``.
``GET api/calls/{id}/live``
    Server-sent events while the call runs: ``event: events`` with
    ``{"last_seq", "status", "new"}`` whenever the log grew, ``event: end`` once
    the call ended.  The store is polled (``FASTAGENT_INSPECT_POLL_MS``), so a
    call driven by another instance on the same store is live here too.

Personal data is masked by :mod:`projections.inspect` before it leaves the
process.  Errors are one-line JSON ``{"error": ...}`` with 400/404/503.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from fastagent import events as ev
from projections import inspect as views
from projections import latency

STATIC = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}

Authorize = Callable[[Request], bool]
"""``authorize(request) -> bool``: may this request read calls?"""

FsaResolver = Callable[[str], tuple[Any, ...]]
"""``fsas(agent_name) -> FSA definitions`` for the state diagrams (may be empty)."""


def poll_interval() -> float:
    """Seconds between store polls of a live view ($FASTAGENT_INSPECT_POLL_MS, 250)."""
    raw = os.environ.get("FASTAGENT_INSPECT_POLL_MS", "").strip()
    try:
        ms = float(raw) if raw else 250.0
    except ValueError:
        ms = 250.0
    return min(max(ms, 20.0), 10_000.0) / 1000


def builtin_fsas(trusted: str = "") -> FsaResolver:
    """FSA definitions of built-in agents by name, and of ``trusted`` (the agent the
    service runs, which may be an import path).  Another import path named in a
    log is never imported: its diagram is drawn from the log instead."""

    def resolve(name: str) -> tuple[Any, ...]:
        from fastagent.agents import UnknownAgent, get_agent

        if ":" in name and name != trusted:
            return ()
        try:
            return tuple(get_agent(name).fsas)
        except (UnknownAgent, Exception):
            return ()

    return resolve


def token_guard(token: str) -> Authorize:
    """Accept ``Authorization: Bearer <token>`` (API clients, scrapers) or HTTP Basic
    with ``<token>`` as the password (a browser's own credential prompt; any user
    name).  Compared in constant time."""
    import base64
    import hmac

    want = token.encode()

    def authorize(request: Request) -> bool:
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer":
            given = value.strip().encode()
        elif scheme == "basic":
            try:
                given = base64.b64decode(value.strip(), validate=True).partition(b":")[2]
            except ValueError:
                return False
        else:
            return False
        return hmac.compare_digest(given, want)

    return authorize


def _error(message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _parse_time(raw: str, name: str) -> int | None:
    if not raw:
        return None
    try:
        dt = datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"bad {name} {raw!r}: expected an ISO date like 2026-01-31") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1_000_000)


def _parse_float(raw: str, name: str) -> float | None:
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"bad {name} {raw!r}: expected a number") from None
    if not (0 <= value < 1e12):
        raise ValueError(f"bad {name} {raw!r}: out of range")
    return value


class _Summaries:
    """Calls-list rows, cached per call and recomputed only when its log grew."""

    def __init__(self) -> None:
        self.rows: dict[str, tuple[int, dict[str, Any]]] = {}

    def get(self, store: Any, call_id: str, events: int) -> dict[str, Any]:
        hit = self.rows.get(call_id)
        if hit is not None and hit[0] == events:
            return hit[1]
        row = views.call_summary(store.read_call(call_id))
        self.rows[call_id] = (events, row)
        return row


def inspector_app(
    store: Callable[[], Any],
    *,
    authorize: Authorize | None = None,
    fsas: FsaResolver | None = None,
    prices: latency.Prices | None = None,
) -> Starlette:
    """The inspector over ``store()`` (called per request: the service's store).

    ``authorize``: None lets every request in (``fastagent inspect`` on loopback).
    A request it refuses gets 401 with a ``WWW-Authenticate: Basic`` challenge, so a
    browser asks for the credential (user name ignored, password = the read token).
    """
    resolve = fsas or builtin_fsas()
    summaries = _Summaries()
    price_list = prices or latency.Prices.from_env()

    def guard(handler: Callable[[Request], Any]) -> Callable[[Request], Any]:
        async def wrapped(request: Request) -> Response:
            if authorize is not None and not authorize(request):
                return Response(
                    "read credential required\n",
                    status_code=401,
                    media_type="text/plain",
                    headers={"WWW-Authenticate": 'Basic realm="fastagent inspector"'},
                )
            try:
                return await handler(request)  # type: ignore[no-any-return]
            except ValueError as exc:
                return _error(str(exc), 400)

        return wrapped

    async def page(request: Request) -> Response:
        return _static("index.html")

    async def asset(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC or name == "index.html":
            return _error("not found", 404)
        return _static(name)

    async def calls(request: Request) -> Response:
        p = request.query_params
        filters = dict(
            agent=p.get("agent", ""),
            outcome=p.get("outcome", ""),
            since_us=_parse_time(p.get("since", ""), "since"),
            until_us=_parse_time(p.get("until", ""), "until"),
            fsa_state=p.get("fsa_state", ""),
            q=p.get("q", "").strip(),
            caller=p.get("caller", ""),
        )
        lo, hi = (
            _parse_float(p.get("min_s", ""), "min_s"),
            _parse_float(p.get("max_s", ""), "max_s"),
        )
        filters["min_ms"] = None if lo is None else int(lo * 1000)
        filters["max_ms"] = None if hi is None else int(hi * 1000)
        limit = int(_parse_float(p.get("limit", ""), "limit") or 200)

        def work() -> dict[str, Any]:
            s = store()
            listed = list(reversed(s.list_calls()))
            rows = [summaries.get(s, c.call_id, c.events) for c in listed]
            shown = [r for r in rows if views.matches(r, **filters)][:limit]
            return {
                "calls": [_public(r) for r in shown],
                "total": len(rows),
                "agents": sorted({r["agent"] for r in rows if r["agent"]}),
                "outcomes": sorted({r["outcome"] for r in rows if r["outcome"]}),
                "fsa_states": sorted({s for r in rows for s in r["fsa_states"]}),
            }

        return JSONResponse(await asyncio.to_thread(work))

    async def _events(call_id: str) -> list[ev.Event] | Response:
        from fastagent.store import StoreError, UnknownCall

        try:
            evs = await asyncio.to_thread(store().read_call, call_id)
        except UnknownCall:
            return _error(f"no call {call_id!r} in this store", 404)
        except StoreError as exc:
            return _error(str(exc), 503)
        if not evs:
            return _error(f"no call {call_id!r} in this store", 404)
        return evs

    async def call(request: Request) -> Response:
        evs = await _events(request.path_params["call_id"])
        if isinstance(evs, Response):
            return evs

        def work() -> dict[str, Any]:
            agent = next(
                (e.config.agent for e in evs if type(e) is ev.SessionInitiated),  # type: ignore[attr-defined]
                "",
            )
            return views.call_view(evs, fsas=resolve(agent) if agent else (), prices=price_list)

        return JSONResponse(await asyncio.to_thread(work))

    async def state(request: Request) -> Response:
        raw = request.query_params.get("seq", "")
        try:
            seq = int(raw)
        except ValueError:
            return _error(f"bad seq {raw!r}: expected an event number", 400)
        evs = await _events(request.path_params["call_id"])
        if isinstance(evs, Response):
            return evs
        return JSONResponse(views.state_at(evs, seq))

    async def live(request: Request) -> Response:
        from fastagent.store import StoreError

        call_id = request.path_params["call_id"]
        interval = poll_interval()

        async def stream() -> Any:
            last = -1
            quiet = 0.0
            while True:
                try:
                    seq = await asyncio.to_thread(store().last_seq, call_id)
                    ended = False
                    if seq != last:
                        tail = await asyncio.to_thread(store().read_call, call_id, max(last, 0))
                        ended = any(type(e) is ev.CallEnded for e in tail)
                        data = {
                            "last_seq": seq,
                            "new": len(tail) if last >= 0 else seq,
                            "status": "ended" if ended else "live",
                        }
                        last = seq
                        quiet = 0.0
                        yield f"event: events\ndata: {json.dumps(data)}\n\n"
                    if ended:
                        yield f"event: end\ndata: {json.dumps({'last_seq': seq})}\n\n"
                        return
                except StoreError as exc:
                    yield f"event: error\ndata: {json.dumps({'error': str(exc)})}\n\n"
                    return
                await asyncio.sleep(interval)
                quiet += interval
                if quiet >= 15:  # a comment line keeps proxies from closing the stream
                    quiet = 0.0
                    yield ": keep-alive\n\n"

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    routes = [
        Route("/", guard(page)),
        Route("/static/{name}", guard(asset)),
        Route("/api/calls", guard(calls)),
        Route("/api/calls/{call_id}", guard(call)),
        Route("/api/calls/{call_id}/state", guard(state)),
        Route("/api/calls/{call_id}/live", guard(live)),
    ]
    return Starlette(routes=routes)


def _public(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if not k.startswith("_")}


def _static(name: str) -> Response:
    data = (resources.files("fastagent.inspector") / "static" / name).read_bytes()
    return Response(
        data,
        media_type=STATIC[name],
        headers={
            "Cache-Control": "no-cache",
            # Nothing but this origin: no CDN, no inline script, no outside connection.
            "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
            "style-src 'self'; script-src 'self'; connect-src 'self'",
        },
    )


def mount(app: Any, inspector: Starlette, prefix: str = "/inspect") -> None:
    """Mount ``inspector`` on a Starlette/FastAPI ``app`` at ``prefix`` (the page's
    URLs are relative, so any prefix works); ``prefix`` alone redirects to ``prefix/``."""
    from starlette.responses import RedirectResponse
    from starlette.routing import Mount

    async def to_slash(request: Request) -> Response:
        return RedirectResponse(request.url.path + "/", status_code=308)

    app.router.routes.append(Route(prefix, to_slash))
    app.router.routes.append(Mount(prefix, app=inspector))


def local_app(store: Any, *, authorize: Authorize | None = None) -> Starlette:
    """``fastagent inspect``'s whole app: the inspector at ``/inspect/``, ``/`` to it."""
    from starlette.responses import RedirectResponse

    async def root(request: Request) -> Response:
        return RedirectResponse("/inspect/", status_code=307)

    app = Starlette(routes=[Route("/", root)])
    mount(app, inspector_app(lambda: store, authorize=authorize))
    return app
