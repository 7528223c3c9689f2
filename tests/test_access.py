"""The read credential over real loopback sockets: /mcp and the API docs need
FASTAGENT_READ_TOKEN, are off without it, and the VAIC token does not open them."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import httpx2
import pytest
import websockets
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from fastagent import events as ev
from fastagent.access import COOKIE, AccessError, ReadAccess, presented_token
from fastagent.service import ConfigError, Service, ServiceConfig
from fastagent.service_cli import running_service
from fastagent.store import open_store

VAIC = "vaic-token-0123456789abcdef"
READ = "read-token-0123456789abcdef"
AUDIT = "audit-token-0123456789abcdef"


def test_parse_labels_and_refusals() -> None:
    access = ReadAccess.parse(f"alice:{READ}, {AUDIT}")
    assert access.check(READ).who == "alice"  # type: ignore[union-attr]
    assert access.check(AUDIT).who.startswith("read-token#")  # type: ignore[union-attr]
    assert AUDIT not in access.check(AUDIT).who  # type: ignore[union-attr]
    assert access.check("nope") is None and access.check("") is None
    assert not ReadAccess.parse("").enabled
    for bad, needle in [
        ("short", "at least 16"),
        (f"bad label!:{READ}", "label"),
        (f"{READ},{READ}", "twice"),
    ]:
        with pytest.raises(AccessError, match=needle):
            ReadAccess.parse(bad)
    with pytest.raises(AccessError, match="must differ"):
        ReadAccess.parse(VAIC, vaic_token=VAIC)
    with pytest.raises(ConfigError, match="must differ"):
        Service(ServiceConfig(token=VAIC, read_token=VAIC, store="sqlite://:memory:"))


def test_presented_token_never_raises() -> None:
    assert presented_token([(b"authorization", b"Bearer abc")]) == "abc"
    assert presented_token([(b"cookie", f"x=1; {COOKIE}=tok".encode())]) == "tok"
    assert presented_token([(b"authorization", b"Basic abc")]) is None
    assert presented_token([(b"cookie", b'\xff\x00;;=="')]) is None
    assert presented_token({"authorization": "bearer  xyz "}) == "xyz"


async def _mcp_timeline(url: str, token: str) -> dict[str, Any]:
    client = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"})
    async with client, streamable_http_client(url, http_client=client) as streams:
        async with ClientSession(streams[0], streams[1]) as session:
            await session.initialize()
            result = await session.call_tool("call_timeline", {"call_id": "c1"})
            return json.loads(result.content[0].text)  # type: ignore[union-attr]


def _store() -> Any:
    store = open_store("sqlite://:memory:")
    store.append(
        [
            ev.SessionInitiated(
                call_id="c1", seq=1, at=10, config=ev.CallConfig(agent="banking"), caller="+4412345"
            ),
            ev.Transcript(
                call_id="c1", seq=2, at=20, role="user", item_id="i", text="my number is 123456"
            ),
        ]
    )
    store.flush()
    return store


def test_endpoints_over_sockets(loop: asyncio.AbstractEventLoop) -> None:
    store = _store()

    async def run(config: ServiceConfig) -> dict[str, Any]:
        out: dict[str, Any] = {}
        async with running_service(config, store) as (_app, ws_url):
            base = ws_url.replace("ws://", "http://").removesuffix("/audiocodes")
            async with httpx.AsyncClient(base_url=base) as http:
                for path in ("/docs", "/redoc", "/openapi.json", "/mcp/"):
                    for name, tok in (("none", None), ("vaic", VAIC), ("read", READ)):
                        headers = {"Authorization": f"Bearer {tok}"} if tok else {}
                        r = await http.get(path, headers=headers)
                        out[f"{path} {name}"] = r.status_code
                r = await http.get("/openapi.json", headers={"Cookie": f"{COOKIE}={READ}"})
                out["/openapi.json cookie"] = r.status_code
                out["healthz"] = (await http.get("/healthz")).status_code
            if config.read_token:
                out["timeline"] = await _mcp_timeline(f"{base}/mcp/", READ)
            # The read token does not admit a call.
            try:
                async with websockets.connect(
                    ws_url, additional_headers={"Authorization": f"Bearer {READ}"}
                ):
                    out["vaic with read"] = "accepted"
            except websockets.InvalidStatus as exc:
                out["vaic with read"] = exc.response.status_code
        return out

    try:
        off = loop.run_until_complete(run(ServiceConfig(token=VAIC)))
        on = loop.run_until_complete(
            run(ServiceConfig(token=VAIC, read_token=f"ops:{READ}", api_docs=True))
        )
        docs_off = loop.run_until_complete(run(ServiceConfig(token=VAIC, read_token=READ)))
    finally:
        store.close()
    # No read token configured: everything that reads is off, whatever is presented.
    for path in ("/docs", "/redoc", "/openapi.json", "/mcp/"):
        for name in ("none", "vaic", "read"):
            assert off[f"{path} {name}"] == 404, (path, name)
    assert off["healthz"] == 200
    # Configured: the VAIC token is refused, the read token admitted.
    for path in ("/docs", "/redoc", "/openapi.json", "/mcp/"):
        assert on[f"{path} none"] == 401 and on[f"{path} vaic"] == 401, path
    assert on["/openapi.json read"] == 200 and on["/docs read"] == 200
    assert on["/openapi.json cookie"] == 200
    assert on["/mcp/ read"] not in (401, 404)  # the MCP app answers (a bare GET is 4xx)
    # Docs stay off unless enabled, even for a reader.
    assert docs_off["/openapi.json read"] == 404 and docs_off["/docs read"] == 404
    timeline = on["timeline"]
    assert [e["type"] for e in timeline["timeline"]] == ["SessionInitiated", "Transcript"]
    # Masked by default: the caller's number and the digits said.
    assert timeline["timeline"][0]["caller"] == "***"
    assert timeline["timeline"][1]["text"] == "my number is [number]"
    assert on["vaic with read"] == 401
