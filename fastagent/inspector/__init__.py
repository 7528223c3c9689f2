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

``POST login`` with ``{"token": ...}``
    Checks a read token the user typed and sets it as an HttpOnly, SameSite=Strict
    cookie, so the browser's later requests (and its EventSource) carry it.

Every ``api/`` request needs the read credential (:mod:`fastagent.access`): 404
while none is configured, 401 without it.  The page and its assets hold no call
data.  Personal data is masked (:mod:`fastagent.masking`, through
:mod:`projections.inspect`) before it leaves the process; the inspector has no
way to reveal it.  Errors are one-line JSON ``{"error": ...}`` with 400/401/404/503.
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
from fastagent import masking
from fastagent.access import ReadAccess, set_read_cookie
from projections import inspect as views
from projections import latency
from projections.calls import list_calls

STATIC = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}

AgentResolver = Callable[[str], Any]
"""``agent(name) -> Agent or None``: the definition behind a call, for its state
diagrams and the slots it marks sensitive."""


def poll_interval() -> float:
    """Seconds between store polls of a live view ($FASTAGENT_INSPECT_POLL_MS, 250)."""
    raw = os.environ.get("FASTAGENT_INSPECT_POLL_MS", "").strip()
    try:
        ms = float(raw) if raw else 250.0
    except ValueError:
        ms = 250.0
    return min(max(ms, 20.0), 10_000.0) / 1000


def builtin_agents(trusted: str = "") -> AgentResolver:
    """Built-in agents by name, and ``trusted`` (the agent the service runs, which
    may be an import path).  Another import path named in a log is never imported:
    its diagram is drawn from the log instead, with the default masking keys."""

    def resolve(name: str) -> Any:
        from fastagent.agents import get_agent

        if ":" in name and name != trusted:
            return None
        try:
            return get_agent(name)
        except Exception:  # unknown, or an import that fails: no definition here
            return None

    return resolve


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
    readers: ReadAccess,
    *,
    agents: AgentResolver | None = None,
    prices: latency.Prices | None = None,
) -> Starlette:
    """The inspector over ``store()`` (called per request: the service's store).

    ``readers``: the read credential (:mod:`fastagent.access`).  The page and its
    assets hold no call data and are served to anyone; every ``api/`` request needs
    the credential (bearer token, or the cookie ``POST login`` sets from a token
    the user typed) -- 401 without it, 404 while no credential is configured.
    """
    resolve = agents or builtin_agents()
    summaries = _Summaries()
    price_list = prices or latency.Prices.from_env()

    def guard(handler: Callable[[Request], Any]) -> Callable[[Request], Any]:
        async def wrapped(request: Request) -> Response:
            if not readers.enabled:
                return _error("reading calls is off: set FASTAGENT_READ_TOKEN", 404)
            if readers.reader(request.headers) is None:
                return _error("read credential required", 401)
            try:
                return await handler(request)  # type: ignore[no-any-return]
            except ValueError as exc:
                return _error(str(exc), 400)

        return wrapped

    async def page(request: Request) -> Response:
        return _static("index.html")

    async def login(request: Request) -> Response:
        """``POST login`` with ``{"token": ...}``: the read credential as an HttpOnly,
        SameSite=Strict cookie (Secure unless on plain-http loopback)."""
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            body = None
        token = body.get("token") if isinstance(body, dict) else None
        if not isinstance(token, str) or readers.check(token) is None:
            return _error("wrong read credential", 401)
        response = Response(status_code=204)
        loopback = (request.client.host if request.client else "") in ("127.0.0.1", "::1")
        set_read_cookie(response, token, secure=request.url.scheme == "https" or not loopback)
        return response

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
            listed = list(reversed(list_calls(s)))
            rows = [summaries.get(s, c.call_id, c.events) for c in listed]
            shown = [r for r in rows if views.matches(r, **filters)][:limit]
            return {
                "calls": [_public(r) for r in shown],
                "by_agent": views.agent_latency(shown),
                "total": len(rows),
                "agents": sorted({r["agent"] for r in rows if r["agent"]}),
                "outcomes": sorted({r["outcome"] for r in rows if r["outcome"]}),
                "fsa_states": sorted({s for r in rows for s in r["fsa_states"]}),
            }

        return JSONResponse(await asyncio.to_thread(work))

    async def _events(call_id: str, request: Request, what: str) -> list[ev.Event] | Response:
        """One call's events; the read is appended to the store's audit trail with the
        reader's credential (docs/privacy.md)."""
        from fastagent.store import StoreError, UnknownCall

        reader = getattr(request.state, "reader", None)
        who = reader.who if reader is not None else "inspector"

        def read() -> list[ev.Event]:
            s = store()
            evs = s.read_call(call_id)
            s.audit.record(who, what, call_id, "inspector")
            return evs

        try:
            evs = await asyncio.to_thread(read)
        except UnknownCall:
            return _error(f"no call {call_id!r} in this store", 404)
        except StoreError as exc:
            return _error(str(exc), 503)
        if not evs:
            return _error(f"no call {call_id!r} in this store", 404)
        return evs

    async def call(request: Request) -> Response:
        evs = await _events(request.path_params["call_id"], request, "timeline")
        if isinstance(evs, Response):
            return evs

        def work() -> dict[str, Any]:
            agent = _agent_of(evs, resolve)
            return views.call_view(
                evs,
                fsas=agent.fsas if agent is not None else (),
                prices=price_list,
                mask=views.make_mask(masking.sensitive_keys(agent)),
            )

        return JSONResponse(await asyncio.to_thread(work))

    async def state(request: Request) -> Response:
        raw = request.query_params.get("seq", "")
        try:
            seq = int(raw)
        except ValueError:
            return _error(f"bad seq {raw!r}: expected an event number", 400)
        evs = await _events(request.path_params["call_id"], request, "state")
        if isinstance(evs, Response):
            return evs
        keys = masking.sensitive_keys(_agent_of(evs, resolve))
        return JSONResponse(views.state_at(evs, seq, views.make_mask(keys), keys))

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
        Route("/", page),
        Route("/static/{name}", asset),
        Route("/login", login, methods=["POST"]),
        Route("/api/calls", guard(calls)),
        Route("/api/calls/{call_id}", guard(call)),
        Route("/api/calls/{call_id}/state", guard(state)),
        Route("/api/calls/{call_id}/live", guard(live)),
    ]
    return Starlette(routes=routes)


def _agent_of(evs: list[ev.Event], resolve: AgentResolver) -> Any:
    for e in evs:
        if type(e) is ev.SessionInitiated:
            return resolve(e.config.agent)  # type: ignore[attr-defined]
    return None


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


def local_app(store: Any, readers: ReadAccess) -> Starlette:
    """``fastagent inspect``'s whole app: the inspector at ``/inspect/``, ``/`` to it."""
    from starlette.responses import RedirectResponse

    async def root(request: Request) -> Response:
        return RedirectResponse("/inspect/", status_code=307)

    app = Starlette(routes=[Route("/", root)])
    mount(app, inspector_app(lambda: store, readers))
    return app
