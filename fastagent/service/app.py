"""The ASGI app: ``/audiocodes`` (VAIC), ``/healthz``, ``/mcp``, the inspector and API docs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, WebSocket
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from fastagent import access, models, observe, redact, sockets
from fastagent.errors import StoreError
from fastagent.service.config import ServiceConfig, read_access
from fastagent.service.gc_tuning import tune_gc
from fastagent.service.process import Service
from fastagent.service.vaic_socket import serve_caller
from fastagent.store import EventStore

log = logging.getLogger("fastagent.service")


VAIC_PATH = "/audiocodes"
READY_STORE_TIMEOUT_S = 2.0  # /readyz: a store slower than this is not ready


class _App(FastAPI):
    """FastAPI, with the VAIC socket taken before the middleware stack.

    Starlette wraps ``send`` and ``receive`` in every middleware (exceptions, exit
    stacks, body limits, telemetry): each audio frame then went through six nested
    coroutines each way, the service's largest framework cost (bench_bridge at 50
    calls). The call socket needs none of them, so it gets the server's own
    ``receive``/``send``; every other request goes through FastAPI as usual.
    """

    vaic_handler: Callable[[WebSocket], Awaitable[None]] | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        handler = self.vaic_handler
        if (
            handler is not None
            and scope["type"] == "websocket"
            and scope["path"].removeprefix(scope.get("root_path", "")) == VAIC_PATH
        ):
            await handler(WebSocket(scope, receive, send))
            return
        await super().__call__(scope, receive, send)


def create_app(config: ServiceConfig, store: EventStore | None = None) -> FastAPI:
    """The FastAPI app: ``/audiocodes`` (VAIC token), ``/healthz``; ``/mcp``, the call
    inspector's ``/inspect/api/`` and, with
    ``api_docs``, ``/docs``, ``/redoc``, ``/openapi.json`` behind the read credential
    (404 while none is configured; see fastagent.access)."""
    holder: dict[str, Service] = {}
    readers = read_access(config)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        service = Service(config, store)
        redact.install(
            [
                config.token,
                config.api_key,
                # The read credentials and master keys never reach a log line either.
                *(part.rpartition(":")[2] for part in (config.read_token or "").split(",")),
                *os.environ.get("FASTAGENT_MASTER_KEY", "").split(","),
            ]
        )
        warning = models.shutdown_warning(config.model)
        if warning:
            log.warning(warning)
        holder["service"] = service
        app.state.service = service
        await asyncio.to_thread(service.openai_client)  # built once, off the event loop
        mcp_ctx = getattr(app.state, "mcp_lifespan", None)
        if mcp_ctx is not None:
            async with mcp_ctx():
                yield
        else:
            yield
        await service.aclose()
        if store is None:
            service.store.close()

    async def audiocodes(ws: WebSocket) -> None:
        service = holder.get("service")
        if service is None:  # the lifespan has not run: nothing to serve the call with
            await ws.close(code=1011)
            return
        source = ws.client.host if ws.client else "unknown"
        if not service.authorized(ws.headers.get("authorization")):
            service.rejected(source, 401, "missing or wrong token")
            await ws.send_denial_response(PlainTextResponse("unauthorized", status_code=401))
            return
        if service.draining:  # VAIC tries again; the proxy sends it to another instance
            service.rejected(source, 503, "draining")
            await ws.send_denial_response(PlainTextResponse("draining", status_code=503))
            return
        if service.sockets >= service.config.max_sockets:
            service.rejected(source, 503, f"{service.sockets} sockets open (FASTAGENT_MAX_SOCKETS)")
            await ws.send_denial_response(PlainTextResponse("busy", status_code=503))
            return
        service.sockets += 1
        try:
            await ws.accept()
            await serve_caller(service, ws)
        except Exception as exc:  # one bad call must never take the service down
            log.error("VAIC socket failed: %s: %s", type(exc).__name__, exc)
            with contextlib.suppress(Exception):
                await ws.close(code=1011)
        finally:  # also when cancelled: no frame goes to a finished handler's hook
            service.sockets -= 1
            sock = sockets.caller_protocol_of(ws._receive)
            if sock is not None:
                sock.on_text = None

    app = _App(title="FastAgent", lifespan=lifespan, **access.docs_kwargs(config.api_docs))
    app.vaic_handler = audiocodes
    app.state.read_access = readers  # for access.require_reader in other routes

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        """Alive: the process answers (a liveness probe)."""
        service = holder.get("service")
        calls = len(service.calls) if service else 0
        return JSONResponse({"ok": True, "calls": calls})

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        """Ready for calls: started, not draining, and the store answers within
        READY_STORE_TIMEOUT_S (a readiness probe; 503 otherwise, with the reason)."""
        service = holder.get("service")
        if service is None:
            return JSONResponse({"ready": False, "reason": "starting"}, status_code=503)
        calls = len(service.calls)
        if service.draining:
            body = {"ready": False, "reason": "draining", "calls": calls}
            return JSONResponse(body, status_code=503)
        try:
            async with asyncio.timeout(READY_STORE_TIMEOUT_S):
                await asyncio.to_thread(service.store.max_position)
        except (StoreError, TimeoutError) as exc:
            reason = f"store unreachable: {exc}" if str(exc) else "store unreachable: timeout"
            return JSONResponse({"ready": False, "reason": reason}, status_code=503)
        return JSONResponse({"ready": True, "calls": calls})

    @app.get("/metrics")
    async def metrics() -> Response:
        """Prometheus exposition of this process's metrics (404 with FASTAGENT_METRICS=0)."""
        service = holder.get("service")
        if service is None or not isinstance(service.metrics, observe.Metrics):
            return PlainTextResponse("metrics are off\n", status_code=404)
        body, ctype = service.metrics.render()
        return Response(body, media_type=ctype)

    _mount_mcp(app, readers, holder)
    _mount_inspector(app, readers, holder, config)
    if config.api_docs:
        app.add_middleware(_DocsGuard, readers=readers)
    return app


class _DocsGuard:
    """ASGI middleware: the API docs paths only for holders of the read credential."""

    def __init__(self, app: Any, readers: access.ReadAccess) -> None:
        self.app = readers.guard_paths(app, access.DOCS_PATHS)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


def _mount_inspector(
    app: FastAPI, readers: access.ReadAccess, holder: dict[str, Service], config: ServiceConfig
) -> None:
    """The call inspector at ``/inspect/`` (see fastagent.inspector): its API behind
    the read credential, off (404) while none is configured."""
    from fastagent.inspector import builtin_agents, inspector_app, mount

    inspector = inspector_app(
        lambda: holder["service"].store, readers, agents=builtin_agents(config.agent)
    )
    mount(app, inspector)


def _mount_mcp(app: FastAPI, readers: access.ReadAccess, holder: dict[str, Service]) -> None:
    """Serve the "fastagent" MCP server at ``/mcp``, behind the read credential (not
    the VAIC token, which admits calls only); off (404) while none is configured."""
    # mcp is a dependency: a failing import is a bug to see, not a server to hide.
    from fastagent.mcp_server import build_mcp_server, make_mcp_app

    server = build_mcp_server(lambda: holder["service"].store, access=readers)
    mcp_app = make_mcp_app(server)
    # Mounted sub-app lifespans do not run: the service's lifespan runs its sessions.
    app.state.mcp_lifespan = server.session_manager.run

    app.mount("/mcp", readers.guard(mcp_app))


def app_from_env() -> FastAPI:
    """The app of one worker process of ``fastagent serve --workers N``."""
    no_auth = os.environ.get("FASTAGENT_NO_AUTH") == "1"
    observe.configure_logging()  # a spawned worker does not inherit the parent's logging
    app = create_app(ServiceConfig.from_env(no_auth=no_auth or None))
    tune_gc()
    return app
