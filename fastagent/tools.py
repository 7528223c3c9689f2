"""The MCP client side: one agent's tool servers, connected once, called many times.

The shell owns a :class:`ToolHub` per service process (or per call): it lists
the servers' tools (recorded as ``ToolsListed`` inputs) and runs the
``FunctionCallDispatched`` decisions the core makes for backend tools, turning
each into a ``ToolResult`` input.  ``call`` never raises: a tool error, a server
that is down or crashed, a timeout or bad arguments all come back as
``ToolOutcome(ok=False, error=...)`` with a one-line reason.

Each server connection lives in its own task (anyio cancel scopes must be
entered and left in one task); calls from any task of the same loop share it.
A connection that broke is opened again on the next call.  The idempotency key
of a dispatched call goes to the server in the request's ``_meta``
(``idempotency_key``) and, when the tool's input schema declares an
``idempotency_key`` property, as that argument too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, TextIO

from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from fastagent.agent import Agent, McpServer
from fastagent.events import ToolSpec

IDEMPOTENCY_KEY = "idempotency_key"
ENGINE_SERVER = "fastagent"  # the engine's own tools; run by the core, never by the hub
_PASSED_ENV_PREFIX = "FASTAGENT_"  # the SDK gives stdio servers a minimal environment


@dataclass(frozen=True, slots=True)
class ToolOutcome:
    ok: bool
    output: str = ""
    error: str = ""
    duration_us: int = 0


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _squeeze(text: str, limit: int = 300) -> str:
    """A tool's error text on one line (validation errors span several)."""
    flat = " ".join(line.strip() for line in text.splitlines() if line.strip())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _spec(server: str, tool: Any) -> ToolSpec:
    schema = {k: v for k, v in (tool.input_schema or {}).items() if k != "title"}
    return ToolSpec(
        name=tool.name, description=tool.description or "", parameters=schema, server=server
    )


MAX_TOOL_OUTPUT = 32 * 1024  # characters of a tool's result kept (~8 k tokens)


def _output_text(result: Any) -> str:
    """A tool's result as the text the log records and the model is told: at
    most MAX_TOOL_OUTPUT characters (a tool is no more trusted to be small than
    either socket; a longer result is cut, and says so)."""
    if result.structured_content is not None:
        text = json.dumps(result.structured_content, separators=(",", ":"), sort_keys=True)
    else:
        parts: list[str] = []
        for block in result.content:
            t = getattr(block, "text", None)
            parts.append(t if isinstance(t, str) else f"[{block.type} content]")
        text = "\n".join(parts)
    if len(text) <= MAX_TOOL_OUTPUT:
        return text
    note = f" [... {len(text) - MAX_TOOL_OUTPUT + 64:,} characters cut]"
    return text[: MAX_TOOL_OUTPUT - 64] + note


@dataclass
class _Connection:
    """One live MCP session, owned by its own task."""

    server: McpServer
    errlog: TextIO
    session: ClientSession | None = None
    error: str = ""
    tools: tuple[ToolSpec, ...] = ()
    _ready: asyncio.Event = field(default_factory=asyncio.Event)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._own(), name=f"mcp:{self.server.name}")

    async def wait_ready(self, timeout_s: float) -> None:
        try:
            async with asyncio.timeout(timeout_s):
                await self._ready.wait()
        except TimeoutError:
            self.error = f"server {self.server.name!r} did not answer within {timeout_s:g} s"
            await self.close()

    @property
    def alive(self) -> bool:
        return self.session is not None and not self._stop.is_set()

    def _transport(self) -> contextlib.AbstractAsyncContextManager[Any]:
        srv = self.server
        if srv.url:
            return streamable_http_client(srv.url)
        env = {k: v for k, v in os.environ.items() if k.startswith(_PASSED_ENV_PREFIX)}
        params = StdioServerParameters(
            command=srv.command[0], args=list(srv.command[1:]), env=env | dict(srv.env)
        )
        return stdio_client(params, errlog=self.errlog)

    async def _own(self) -> None:
        try:
            if not self.server.url and not self.server.command:
                raise ValueError("no command and no url configured")
            async with self._transport() as streams:
                async with ClientSession(streams[0], streams[1]) as session:
                    await session.initialize()
                    self.tools = await _list(self.server.name, session)
                    self.session = session
                    self._ready.set()
                    await self._stop.wait()
        except asyncio.CancelledError:
            pass
        except BaseException as exc:  # noqa: BLE001 -- any failure is reported, not raised
            if not self.error:
                self.error = _describe_failure(self.server, exc)
        finally:
            self.session = None
            self._stop.set()
            self._ready.set()

    async def close(self) -> None:
        self._stop.set()
        task = self._task
        if task is not None and not task.done():
            try:
                async with asyncio.timeout(5.0):
                    await asyncio.shield(task)
            except (TimeoutError, asyncio.CancelledError):
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task


def _describe_failure(server: McpServer, exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    where = server.url or " ".join(server.command) or "(nothing)"
    if isinstance(exc, FileNotFoundError):
        return f"server {server.name!r}: command not found: {server.command[0]!r}"
    return f"server {server.name!r} ({where}) is not available: {_one_line(exc)}"


async def _list(server: str, session: ClientSession) -> tuple[ToolSpec, ...]:
    specs: list[ToolSpec] = []
    cursor: str | None = None
    while True:
        page = await session.list_tools(cursor=cursor) if cursor else await session.list_tools()
        specs.extend(_spec(server, t) for t in page.tools)
        cursor = page.next_cursor
        if not cursor:
            return tuple(specs)


class ToolHub:
    """An agent's MCP servers: ``async with ToolHub(agent) as hub: await hub.call(...)``."""

    def __init__(
        self,
        servers: Agent | Iterable[McpServer],
        *,
        connect_timeout_s: float = 15.0,
        errlog: TextIO | None = None,
    ) -> None:
        found = servers.servers if isinstance(servers, Agent) else tuple(servers)
        self.servers: dict[str, McpServer] = {s.name: s for s in found}
        self.connect_timeout_s = connect_timeout_s
        self.errlog = errlog or sys.stderr
        self._conns: dict[str, _Connection] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def __aenter__(self) -> ToolHub:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Connect every server at once; a server that fails is reported, not raised."""
        await asyncio.gather(*(self._connect(name) for name in self.servers))

    def errors(self) -> dict[str, str]:
        """Servers that are not connected, with the reason."""
        return {n: c.error or "not connected" for n, c in self._conns.items() if not c.alive}

    async def list_tools(self) -> dict[str, tuple[ToolSpec, ...]]:
        """Every server's tools (an unavailable server lists none; see :meth:`errors`)."""
        out: dict[str, tuple[ToolSpec, ...]] = {}
        for name in self.servers:
            conn = await self._connect(name)
            if conn.alive and conn.session is not None:
                try:
                    async with asyncio.timeout(self.servers[name].timeout_s):
                        conn.tools = await _list(name, conn.session)
                except Exception as exc:  # noqa: BLE001
                    conn.error = _describe_failure(self.servers[name], exc)
                    await conn.close()
            out[name] = conn.tools if conn.alive else ()
        return out

    def server_of(self, tool: str) -> str:
        """The server that listed ``tool`` ("" if none did)."""
        for name, conn in self._conns.items():
            if any(t.name == tool for t in conn.tools):
                return name
        return ""

    async def call(
        self,
        server: str,
        name: str,
        arguments_json: str,
        idempotency_key: str = "",
        timeout_s: float | None = None,
    ) -> ToolOutcome:
        """Run one tool.  Never raises: every failure is ``ok=False`` with a reason."""
        began = time.perf_counter_ns()

        def done(ok: bool, output: str = "", error: str = "") -> ToolOutcome:
            took = (time.perf_counter_ns() - began) // 1000
            return ToolOutcome(ok=ok, output=output, error=error, duration_us=took)

        try:
            args = json.loads(arguments_json or "{}")
        except ValueError as exc:
            return done(False, error=f"arguments of {name} are not valid JSON: {exc}")
        if not isinstance(args, dict):
            return done(False, error=f"arguments of {name} must be a JSON object")
        if server == ENGINE_SERVER:
            return done(False, error=f"{name} is an engine tool; the core runs it, not the hub")
        server = server if server in self.servers else self.server_of(name) or server
        if server not in self.servers:
            return done(False, error=f"no MCP server {server!r} for tool {name!r}")
        cfg = self.servers[server]
        timeout = cfg.timeout_s if timeout_s is None else timeout_s
        try:
            async with asyncio.timeout(timeout):
                conn = await self._connect(server)
        except TimeoutError:
            return done(False, error=f"server {server!r} did not connect within {timeout:g} s")
        session = conn.session
        if not conn.alive or session is None:
            return done(False, error=conn.error or f"server {server!r} is not connected")
        spec = next((t for t in conn.tools if t.name == name), None)
        meta: dict[str, Any] | None = None
        if idempotency_key:
            meta = {IDEMPOTENCY_KEY: idempotency_key}
            props = (spec.parameters.get("properties") or {}) if spec else {}
            if IDEMPOTENCY_KEY in props:
                args.setdefault(IDEMPOTENCY_KEY, idempotency_key)
        try:
            # The outer timeout also bounds a server that stops reading.
            async with asyncio.timeout(timeout + 1.0):
                result = await session.call_tool(
                    name,
                    args,
                    read_timeout_seconds=timeout,  # type: ignore[arg-type]
                    meta=meta,
                )
        except TimeoutError:
            return done(False, error=f"{name} timed out after {timeout:g} s")
        except MCPError as exc:
            if exc.error.code == -32001:  # REQUEST_TIMEOUT: the connection is still fine
                return done(False, error=f"{name} timed out after {timeout:g} s")
            if exc.error.code == -32000:  # CONNECTION_CLOSED: crashed; reconnect next time
                conn.error = f"server {server!r} closed the connection"
                await conn.close()
                return done(False, error=f"{name} failed: server {server!r} closed the connection")
            return done(False, error=f"{name} failed: {exc.error.message}")
        except Exception as exc:  # noqa: BLE001 -- transport failures, schema mismatches
            return done(False, error=f"{name} failed: {_one_line(exc)}")
        output = _output_text(result)
        if result.is_error:
            return done(False, output=output, error=_squeeze(output) or f"{name} failed")
        return done(True, output=output)

    async def _connect(self, name: str) -> _Connection:
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            conn = self._conns.get(name)
            if conn is not None and conn.alive:
                return conn
            if conn is not None:
                await conn.close()
            conn = _Connection(self.servers[name], self.errlog)
            self._conns[name] = conn
            conn.start()
            await conn.wait_ready(self.connect_timeout_s)
            return conn

    async def aclose(self) -> None:
        conns, self._conns = list(self._conns.values()), {}
        await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)
