"""The floor for bench/bench_bridge.py: a bare VAIC <-> Realtime relay, no logging.

A minimal ``websockets`` server doing the same passthrough as the service and
nothing else: ``userStream.chunk`` base64 goes out untouched as
``input_audio_buffer.append``; ``response.output_audio.delta`` comes back as
``playStream.chunk``.  No store, no engine, no state beyond the play stream.

Run: python bench/bridge_relay.py --port 8090 --upstream ws://127.0.0.1:PORT/v1
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import Opcode


class _Vaic(msgspec.Struct):
    type: str
    conversationId: str = ""
    audioChunk: str = ""


class _Model(msgspec.Struct):
    type: str
    delta: str = ""


_vaic = msgspec.json.Decoder(_Vaic).decode
_model = msgspec.json.Decoder(_Model).decode
_APPEND = '{"type":"input_audio_buffer.append","audio":"'
_PLAY_START = '{"type":"playStream.start","streamId":"play-1","mediaFormat":"raw/mulaw"}'
_PLAY = '{"type":"playStream.chunk","streamId":"play-1","audioChunk":"'


SendText = Callable[[str], Awaitable[None]]


async def _pump_model(up: ClientConnection, send_text: SendText) -> None:
    started = False
    with contextlib.suppress(ConnectionClosed):
        async for frame in up:
            msg = _model(frame)
            if msg.type != "response.output_audio.delta":
                continue
            if not started:
                started = True
                await send_text(_PLAY_START)
            await send_text(_PLAY + msg.delta + '"}')


async def _relay(frames: AsyncIterator[str | bytes], send_text: SendText, upstream: str) -> None:
    """One call: VAIC frames in, model frames back through ``send_text``."""
    up: ClientConnection | None = None
    reader: asyncio.Task[None] | None = None
    try:
        async for frame in frames:
            msg = _vaic(frame)
            kind = msg.type
            if kind == "userStream.chunk":
                if up is not None:
                    await up.send(_APPEND + msg.audioChunk + '"}')
            elif kind == "session.initiate":
                url = f"{upstream}/realtime?model=gpt-realtime"
                up = await connect(url, compression=None, max_size=None)
                reader = asyncio.create_task(_pump_model(up, send_text))
                await send_text('{"type":"session.accepted","mediaFormat":"raw/mulaw"}')
            elif kind == "userStream.start":
                await send_text('{"type":"userStream.started"}')
            elif kind == "session.end":
                break
    except ConnectionClosed:
        pass
    finally:
        if reader is not None:
            reader.cancel()
        if up is not None:
            await up.close()


async def _handle(down: ServerConnection, upstream: str) -> None:
    await _relay(down, down.send, upstream)


class _CbServer(ServerConnection):
    """--callbacks: audio frames forwarded from the socket's data callback, with no
    task switch, queue or await per frame (control frames take the usual path)."""

    peer: ClientConnection | None = None

    def process_event(self, event):  # type: ignore[no-untyped-def]
        peer = self.peer
        if (
            peer is not None
            and event.opcode is Opcode.TEXT
            and b'"userStream.chunk"' in event.data[:40]
        ):
            msg = _vaic(event.data)
            peer.protocol.send_text((_APPEND + msg.audioChunk + '"}').encode())
            peer.send_data()
            return
        super().process_event(event)


class _CbClient(ClientConnection):
    peer: ServerConnection | None = None
    started = False

    def process_event(self, event):  # type: ignore[no-untyped-def]
        peer = self.peer
        if peer is not None and self.started and event.opcode is Opcode.TEXT:
            msg = _model(event.data)
            if msg.type == "response.output_audio.delta":
                peer.protocol.send_text((_PLAY + msg.delta + '"}').encode())
                peer.send_data()
                return
        super().process_event(event)


async def _handle_cb(down: _CbServer, upstream: str) -> None:
    up: _CbClient | None = None
    try:
        async for frame in down:
            msg = _vaic(frame)
            kind = msg.type
            if kind == "session.initiate":
                url = f"{upstream}/realtime?model=gpt-realtime"
                up = await connect(
                    url, compression=None, max_size=None, create_connection=_CbClient
                )
                up.peer = down
                down.peer = up
                await down.send('{"type":"session.accepted","mediaFormat":"raw/mulaw"}')
                await down.send(
                    '{"type":"playStream.start","streamId":"play-1","mediaFormat":"raw/mulaw"}'
                )
                up.started = True
            elif kind == "userStream.start":
                await down.send('{"type":"userStream.started"}')
            elif kind == "session.end":
                break
    except ConnectionClosed:
        pass
    finally:
        if up is not None:
            up.peer = None
            await up.close()


def asgi_app(upstream: str):  # type: ignore[no-untyped-def]
    """The same relay as a raw ASGI app under uvicorn (``--asgi``): what the
    framework costs on the caller's socket, everything else equal."""

    async def app(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        if scope["type"] != "websocket":
            return
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})

        async def frames() -> AsyncIterator[str | bytes]:
            while (m := await receive())["type"] == "websocket.receive":
                yield m.get("text") or m.get("bytes") or b""

        async def send_text(text: str) -> None:
            await send({"type": "websocket.send", "text": text})

        await _relay(frames(), send_text, upstream)

    return app


async def main(port: int, upstream: str) -> None:
    async with serve(
        lambda ws: _handle(ws, upstream), "127.0.0.1", port, compression=None, max_size=None
    ) as server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="Realtime base URL, ws://host:port/v1")
    parser.add_argument(
        "--callbacks", action="store_true", help="forward audio from data callbacks"
    )
    parser.add_argument("--asgi", action="store_true", help="serve callers with uvicorn (ASGI)")
    args = parser.parse_args()
    if args.callbacks:

        async def cb_main() -> None:
            async with serve(
                lambda ws: _handle_cb(ws, args.upstream),
                "127.0.0.1",
                args.port,
                compression=None,
                max_size=None,
                create_connection=_CbServer,
            ) as server:
                await server.serve_forever()

        import uvloop

        uvloop.run(cb_main())
        raise SystemExit
    if args.asgi:
        import uvicorn

        uvicorn.run(
            asgi_app(args.upstream),
            host="127.0.0.1",
            port=args.port,
            ws="websockets-sansio",
            loop="uvloop",
            log_level="warning",
        )
        raise SystemExit
    try:
        import uvloop

        uvloop.run(main(args.port, args.upstream))
    except ImportError:
        asyncio.run(main(args.port, args.upstream))
