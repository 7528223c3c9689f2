"""The fast lane writes its text frames itself (fastagent.sockets): byte for byte
what websockets would write, masked on the client side with fresh keys, and read
back whole by a real peer over loopback at every length class of RFC 6455."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import pytest
import uvicorn
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.frames import OP_TEXT, Frame

from fastagent import sockets

LENGTHS = [0, 1, 125, 126, 127, 65535, 65536, 70000]


@settings(max_examples=300, deadline=None)
@given(n=st.integers(0, 70000) | st.sampled_from(LENGTHS), masked=st.booleans())
def test_the_header_is_websockets_own(n: int, masked: bool) -> None:
    payload = b"x" * n
    key = b"\x01\x02\x03\x04"
    theirs = Frame(OP_TEXT, payload, True)
    original = secrets.token_bytes
    secrets.token_bytes = lambda k=4: key  # type: ignore[assignment]
    try:
        expected = theirs.serialize(mask=masked, extensions=[])
    finally:
        secrets.token_bytes = original
    head = sockets.text_frame_head(n, masked)
    body = key + sockets.apply_mask(payload, key) if masked else payload
    assert head + body == expected


def test_mask_keys_are_fresh_and_come_in_fours() -> None:
    keys = sockets.MaskKeys()
    got = [keys.next() for _ in range(3000)]  # crosses two refills
    assert all(len(k) == 4 for k in got)
    assert len(set(got)) > 2990  # 32-bit random keys: a repeat or two at most


pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


TEXTS = ["é" * (n // 2) + "a" * (n % 2) for n in LENGTHS]


async def test_model_connection_writes_what_the_server_reads() -> None:
    got: list[str] = []
    done = asyncio.Event()

    async def server(ws: ServerConnection) -> None:
        async for msg in ws:
            got.append(msg)  # type: ignore[arg-type]
            if len(got) == len(TEXTS):
                done.set()

    async with serve(server, "127.0.0.1", 0, max_size=None) as srv:
        port = srv.sockets[0].getsockname()[1]
        async with connect(
            f"ws://127.0.0.1:{port}", create_connection=sockets.ModelConnection, max_size=None
        ) as ws:
            assert isinstance(ws, sockets.ModelConnection)
            for text in TEXTS:
                ws.write_now(text)
            await asyncio.wait_for(done.wait(), 10)
            await ws.send("after")  # the library's own path still follows
            await asyncio.sleep(0.05)
    assert got[: len(TEXTS)] == TEXTS


async def test_caller_protocol_writes_what_the_client_reads() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        sock = sockets.caller_protocol_of(receive)
        assert sock is not None and sock.can_write_now()
        for text in TEXTS:
            sock.write_now(text.encode())
        await send({"type": "websocket.send", "text": "after"})
        await receive()

    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=0,
            ws=sockets.CallerProtocol,
            log_level="warning",
            lifespan="off",
            ws_max_size=1 << 20,
        )
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        async with connect(f"ws://127.0.0.1:{port}/", max_size=None) as ws:
            got = [await asyncio.wait_for(ws.recv(), 10) for _ in range(len(TEXTS) + 1)]
    finally:
        server.should_exit = True
        await task
    assert got == [*TEXTS, "after"]
