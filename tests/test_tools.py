"""ToolHub against the real stdio backends, and the "fastagent" MCP server over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI

from fastagent import events as ev
from fastagent.agent import McpServer
from fastagent.agents import get_agent
from fastagent.mcp_server import build_mcp_server, make_mcp_app
from fastagent.store import open_store
from fastagent.tools import ToolHub, ToolOutcome

ORDER = {"customer_id": "123456", "card_last4": "4242", "reason": "lost"}


@pytest.fixture(scope="module")
def hub(loop: asyncio.AbstractEventLoop, data_dir: Path) -> Iterator[ToolHub]:
    h = ToolHub(get_agent("banking"))
    loop.run_until_complete(h.start())
    yield h
    loop.run_until_complete(h.aclose())


def call(
    loop: asyncio.AbstractEventLoop, hub: ToolHub, name: str, args: Any, **kw: Any
) -> ToolOutcome:
    text = args if isinstance(args, str) else json.dumps(args)
    return loop.run_until_complete(hub.call(kw.pop("server", "bank"), name, text, **kw))


def test_lists_the_backend_tools(loop: asyncio.AbstractEventLoop, hub: ToolHub) -> None:
    tools = loop.run_until_complete(hub.list_tools())
    names = {t.name for t in tools["bank"]}
    assert {"find_customer", "verify_customer", "get_balance", "order_replacement_card"} <= names
    order = next(t for t in tools["bank"] if t.name == "order_replacement_card")
    assert order.server == "bank"
    assert "title" not in order.parameters
    assert order.parameters["properties"]["reason"]["enum"] == ["lost", "stolen", "damaged"]
    assert hub.errors() == {}


def test_call_ok_and_business_answers(loop: asyncio.AbstractEventLoop, hub: ToolHub) -> None:
    out = call(loop, hub, "find_customer", {"customer_id": "123456"})
    assert out.ok and out.error == ""
    assert json.loads(out.output) == {"ok": True, "found": True, "first_name": "Ada"}
    assert out.duration_us > 0
    missing = call(loop, hub, "find_customer", {"customer_id": "999999"})
    assert missing.ok and json.loads(missing.output)["found"] is False
    wrong = call(
        loop,
        hub,
        "verify_customer",
        {"customer_id": "123456", "date_of_birth": "1985-12-11", "card_last4": "4242"},
    )
    assert wrong.ok and json.loads(wrong.output)["verified"] is False
    # The server is resolved from the listed tools when the decision has none.
    assert call(loop, hub, "find_customer", {"customer_id": "123456"}, server="").ok


def test_tool_errors_are_outcomes_not_exceptions(
    loop: asyncio.AbstractEventLoop, hub: ToolHub
) -> None:
    bad = call(loop, hub, "find_customer", {"customer_id": "12x"})
    assert not bad.ok and "malformed" in bad.error
    assert not call(loop, hub, "find_customer", {}).ok  # missing argument
    assert "not valid JSON" in call(loop, hub, "find_customer", "{nope").error
    assert "JSON object" in call(loop, hub, "find_customer", "[1]").error
    unknown = call(loop, hub, "no_such_tool", {})
    assert not unknown.ok and "no_such_tool" in unknown.error
    assert not call(loop, hub, "find_customer", {}, server="nowhere").ok
    assert "engine tool" in call(loop, hub, "end_call", {}, server="fastagent").error


def test_timeout_then_the_connection_still_works(
    loop: asyncio.AbstractEventLoop, hub: ToolHub
) -> None:
    began = time.monotonic()
    slow = call(loop, hub, "ping", {"delay_ms": 5000}, timeout_s=0.3)
    assert not slow.ok and "timed out after 0.3 s" in slow.error
    assert time.monotonic() - began < 2.0
    assert call(loop, hub, "ping", {}).ok


def test_a_crashed_server_fails_the_call_then_reconnects(
    loop: asyncio.AbstractEventLoop, hub: ToolHub
) -> None:
    pid = json.loads(call(loop, hub, "ping", {}).output)["pid"]
    os.kill(pid, signal.SIGKILL)  # the backend this hub started
    loop.run_until_complete(asyncio.sleep(0.1))
    down = call(loop, hub, "ping", {})
    assert not down.ok and "closed the connection" in down.error
    again = call(loop, hub, "ping", {})
    assert again.ok and json.loads(again.output)["pid"] != pid


def test_same_idempotency_key_orders_one_card(
    loop: asyncio.AbstractEventLoop, hub: ToolHub, data_dir: Path
) -> None:
    first = call(loop, hub, "order_replacement_card", ORDER, idempotency_key="call-1:17")
    second = call(loop, hub, "order_replacement_card", ORDER, idempotency_key="call-1:17")
    assert first.ok and second.ok
    assert json.loads(first.output) == json.loads(second.output)
    assert json.loads(first.output)["already_ordered"] is False
    # Another key for the same card (a second call) finds the open order: never two cards.
    other = call(loop, hub, "order_replacement_card", ORDER, idempotency_key="call-2:9")
    assert json.loads(other.output)["order_id"] == json.loads(first.output)["order_id"]
    assert json.loads(other.output)["already_ordered"] is True
    con = sqlite3.connect(data_dir / "bank.sqlite")
    try:
        orders = con.execute("SELECT COUNT(*) FROM card_orders").fetchone()[0]
        keys = con.execute("SELECT key FROM idempotency ORDER BY key").fetchall()
    finally:
        con.close()
    assert orders == 1
    assert keys == [("call-1:17",), ("call-2:9",)]


def test_server_command_that_does_not_exist(
    loop: asyncio.AbstractEventLoop, data_dir: Path
) -> None:
    servers = [
        McpServer("ghost", command=("/nonexistent/fastagent-backend",)),
        McpServer("quitter", command=(sys.executable, "-c", "raise SystemExit(3)")),
    ]

    async def run() -> tuple[dict[str, Any], dict[str, str], ToolOutcome, ToolOutcome]:
        async with ToolHub(servers, connect_timeout_s=5.0) as hub:
            tools = await hub.list_tools()
            ghost = await hub.call("ghost", "anything", "{}")
            quitter = await hub.call("quitter", "anything", "{}")
            return tools, hub.errors(), ghost, quitter

    tools, errors, ghost, quitter = loop.run_until_complete(run())
    assert tools == {"ghost": (), "quitter": ()}
    assert "command not found" in errors["ghost"]
    assert not ghost.ok and "command not found" in ghost.error
    assert not quitter.ok and "quitter" in quitter.error


# ----------------------------------------------------------- the "fastagent" server


@contextlib.asynccontextmanager
async def serve_mcp(store: Any) -> AsyncIterator[str]:
    """The service's way: a FastAPI app with the MCP app mounted at /mcp, on loopback."""
    server = build_mcp_server(lambda: store)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with server.session_manager.run():
            yield

    app = FastAPI(lifespan=lifespan)
    app.mount("/mcp", make_mcp_app(server))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    uv = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    task = asyncio.create_task(uv.serve(sockets=[sock]))
    while not uv.started:
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}/mcp/"
    finally:
        uv.should_exit = True
        await task
        sock.close()


def test_fastagent_mcp_server_over_streamable_http(loop: asyncio.AbstractEventLoop) -> None:
    store = open_store("sqlite://:memory:")
    store.append(
        [
            ev.SessionInitiated(call_id="c1", seq=1, at=10, config=ev.CallConfig(agent="banking")),
            ev.CallerAudio(
                call_id="c1", seq=2, at=20, chunk=1, nbytes=160, duration_us=20_000, fmt="raw/mulaw"
            ),
            ev.CallEnded(call_id="c1", seq=3, at=30, reason="caller said bye", outcome="completed"),
        ]
    )
    store.flush()

    async def run() -> dict[str, ToolOutcome]:
        async with serve_mcp(store) as url:
            async with ToolHub([McpServer("fastagent-http", url=url)]) as hub:
                listed = await hub.list_tools()
                assert {t.name for t in listed["fastagent-http"]} == {
                    "list_agents",
                    "describe_agent",
                    "fsa_diagram",
                    "list_calls",
                    "call_timeline",
                }
                asks = {
                    "agents": ("list_agents", {}),
                    "describe": ("describe_agent", {"name": "banking"}),
                    "diagram": ("fsa_diagram", {"name": "banking", "fsa": "card_replacement"}),
                    "calls": ("list_calls", {}),
                    "timeline": ("call_timeline", {"call_id": "c1"}),
                    "no_call": ("call_timeline", {"call_id": "nope"}),
                    "no_agent": ("describe_agent", {"name": "nope"}),
                }
                return {
                    k: await hub.call("fastagent-http", n, json.dumps(a))
                    for k, (n, a) in asks.items()
                }

    try:
        out = loop.run_until_complete(run())
    finally:
        store.close()
    agents = json.loads(out["agents"].output)["agents"]
    assert [a["name"] for a in agents] == ["default", "banking", "healthcare", "retail"]
    described = json.loads(out["describe"].output)
    card = next(f for f in described["fsas"] if f["name"] == "card_replacement")
    assert card["intent"] == "start_card_replacement"
    assert "confirm_replacement" in [s["name"] for s in card["states"]]
    diagram = json.loads(out["diagram"].output)["result"]
    assert "verify --> locked: verify_identity [three failed attempts]" in diagram
    assert json.loads(out["calls"].output)["calls"][0]["outcome"] == "completed"
    timeline = json.loads(out["timeline"].output)
    assert [e["type"] for e in timeline["timeline"]] == ["SessionInitiated", "CallEnded"]
    assert not out["no_call"].ok and "unknown call 'nope'" in out["no_call"].error
    assert not out["no_agent"].ok and "unknown agent 'nope'" in out["no_agent"].error
