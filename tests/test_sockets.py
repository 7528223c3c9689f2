"""The audio fast lane (fastagent.sockets) over real loopback sockets: hooks see
complete text frames from the data callback, what they leave keeps its order on the
slow lane, and a whole call recorded through either lane replays identically."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from test_service import GOODBYE, _voice, kinds, scenario
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

from fastagent import sockets
from fastagent.replay import replay
from fastagent.service import CallSession
from fastagent.service.realtime_link import RealtimeLink

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_model_connection_hook_takes_frames_until_one_waits_in_the_queue() -> None:
    go = asyncio.Event()
    got: list[str] = []

    async def server(ws: ServerConnection) -> None:
        await go.wait()
        for text in ("fast 1", "fast 2", "slow 3", "fast 4"):
            await ws.send(text)
        got.append(await ws.recv())  # type: ignore[arg-type]

    async with serve(server, "127.0.0.1", 0) as srv:
        port = srv.sockets[0].getsockname()[1]
        async with connect(
            f"ws://127.0.0.1:{port}", create_connection=sockets.ModelConnection
        ) as ws:
            assert isinstance(ws, sockets.ModelConnection)
            fast: list[bytes] = []

            def hook(data: bytes) -> bool:
                # The service's rule: nothing fast while earlier frames wait.
                if ws.backlog or not data.startswith(b"fast"):
                    return False
                fast.append(data)
                return True

            ws.on_text = hook
            go.set()
            assert await asyncio.wait_for(ws.recv(), 5) == "slow 3"
            assert await asyncio.wait_for(ws.recv(), 5) == "fast 4"  # kept behind "slow 3"
            assert fast == [b"fast 1", b"fast 2"]
            assert ws.backlog == 2  # counted as queued; the reader decrements
            assert ws.can_write_now()
            ws.write_now("written from a callback")
            for _ in range(500):
                if got:
                    break
                await asyncio.sleep(0.01)
    assert got == ["written from a callback"]


@contextlib.asynccontextmanager
async def uvicorn_on_loopback(app: Any, ws: Any) -> AsyncIterator[str]:
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, ws=ws, log_level="warning", lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"ws://127.0.0.1:{port}/"
    finally:
        server.should_exit = True
        await task


async def test_caller_protocol_hook_answers_from_the_callback() -> None:
    found: list[object] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "websocket"
        await receive()
        await send({"type": "websocket.accept"})
        sock = sockets.caller_protocol_of(receive)
        found.append(sock)
        if sock is not None:

            def hook(data: bytes) -> bool:
                if sock.backlog() or not data.startswith(b"fast"):
                    return False
                assert sock.can_write_now()
                sock.write_now(b"callback: " + data)
                return True

            sock.on_text = hook
        while True:
            m = await receive()
            if m["type"] != "websocket.receive":
                return
            await send({"type": "websocket.send", "text": "queue: " + m["text"]})

    async with uvicorn_on_loopback(app, sockets.CallerProtocol) as url:
        async with connect(url) as ws:
            replies = []
            for text in ("fast 1", "slow 2", "fast 3"):
                await ws.send(text)
                replies.append(await asyncio.wait_for(ws.recv(), 5))
    assert replies == ["callback: fast 1", "queue: slow 2", "callback: fast 3"]
    assert isinstance(found[0], sockets.CallerProtocol)

    async with uvicorn_on_loopback(app, "websockets-sansio") as url:  # stock protocol
        async with connect(url) as ws:
            await ws.send("fast 1")
            assert await asyncio.wait_for(ws.recv(), 5) == "queue: fast 1"
    assert found[1] is None


async def test_a_failing_hook_is_dropped_and_frames_take_the_queue() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        sock = sockets.caller_protocol_of(receive)
        assert sock is not None

        def hook(data: bytes) -> bool:
            raise RuntimeError("a bug in the fast lane")

        sock.on_text = hook
        while True:
            m = await receive()
            if m["type"] != "websocket.receive":
                return
            await send({"type": "websocket.send", "text": f"queue: {m['text']} {sock.on_text}"})

    async with uvicorn_on_loopback(app, sockets.CallerProtocol) as url:
        async with connect(url) as ws:
            await ws.send("fast 1")
            assert await asyncio.wait_for(ws.recv(), 5) == "queue: fast 1 None"
            await ws.send("fast 2")  # the socket lives on
            assert await asyncio.wait_for(ws.recv(), 5) == "queue: fast 2 None"


def count_fast(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    counts = {"caller": 0, "model": 0}
    caller_now, model_now = CallSession.caller_audio_now, CallSession.model_audio_now

    def caller(self: CallSession, msg: Any) -> bool:
        ok = caller_now(self, msg)
        counts["caller"] += ok
        return ok

    def model(self: CallSession, chunk: Any) -> bool:
        ok = model_now(self, chunk)
        counts["model"] += ok
        return ok

    monkeypatch.setattr(CallSession, "caller_audio_now", caller)
    monkeypatch.setattr(CallSession, "model_audio_now", model)
    return counts


TURNS = [
    {"caller": "What are your opening hours?", "model": [{"say": "Eight to eight, every day."}]},
    {
        "caller": "Only weekdays please",
        "barge_in_after_ms": 300,
        # Long (about 4 s of audio), so it is still playing when the barge-in reaches
        # the model and comes back, however loaded the machine (a short one could
        # have played out by then: nothing to truncate).
        "model": [
            {"say": "On weekdays we are open from eight to eight, and on Saturdays too. " * 4}
        ],
    },
    GOODBYE,
]


async def test_a_whole_call_goes_through_the_fast_lane_and_replays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    counts = count_fast(monkeypatch)
    sc = scenario(TURNS)
    async for v in _voice(tmp_path, sc):
        report, events = await v.call(sc)
    assert report.ended == "bot-disconnected", report.errors
    names = kinds(events)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    # Most audio took the fast lane, both ways; all of it is in the log.
    assert counts["caller"] > names.count("CallerAudio") // 2 > 10
    assert counts["model"] > names.count("BotAudio") // 2 > 10
    assert "TruncateRequested" in names and names[-1] == "CallEnded"
    result = replay(events)
    assert result.identical, result.divergence and result.divergence.to_dict()


async def test_the_slow_lane_alone_records_the_same_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no fast lane (another ASGI server, another websockets client), a call
    is recorded the same way: the fast lane is an optimisation, not a behaviour."""
    counts = count_fast(monkeypatch)
    monkeypatch.setattr(sockets, "caller_protocol_of", lambda receive: None)
    monkeypatch.setattr(RealtimeLink, "frame_now", lambda self, data: False)
    sc = scenario(TURNS)
    async for v in _voice(tmp_path, sc):
        report, events = await v.call(sc)
    assert report.ended == "bot-disconnected", report.errors
    assert counts["caller"] == 0
    names = kinds(events)
    assert names.count("CallerAudio") > 10 and names.count("BotAudio") > 10
    assert "TruncateRequested" in names and names[-1] == "CallEnded"
    assert replay(events).identical


async def test_the_vaic_path_skips_fastapi_middleware_under_a_root_path(tmp_path: Path) -> None:
    from fastagent.service import ServiceConfig, create_app

    app = create_app(ServiceConfig(store=str(tmp_path / "calls.db"), no_auth=True))
    seen: list[str] = []

    async def handler(ws: Any) -> None:
        seen.append(ws.scope["path"])

    app.vaic_handler = handler  # type: ignore[attr-defined]

    async def nothing(*args: Any) -> Any:
        raise AssertionError("the handler is called before any I/O")

    for root in ("", "/voice"):
        scope = {"type": "websocket", "path": f"{root}/audiocodes", "root_path": root}
        await app(scope, nothing, nothing)
    assert seen == ["/audiocodes", "/voice/audiocodes"]
