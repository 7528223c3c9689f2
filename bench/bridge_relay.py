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

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed


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
_PLAY = '{"type":"playStream.chunk","streamId":"play-1","audioChunk":"'


async def _pump_model(up: ClientConnection, down: ServerConnection) -> None:
    started = False
    with contextlib.suppress(ConnectionClosed):
        async for frame in up:
            msg = _model(frame)
            if msg.type != "response.output_audio.delta":
                continue
            if not started:
                started = True
                await down.send(
                    '{"type":"playStream.start","streamId":"play-1","mediaFormat":"raw/mulaw"}'
                )
            await down.send(_PLAY + msg.delta + '"}')


async def _handle(down: ServerConnection, upstream: str) -> None:
    up: ClientConnection | None = None
    reader: asyncio.Task[None] | None = None
    try:
        async for frame in down:
            msg = _vaic(frame)
            kind = msg.type
            if kind == "userStream.chunk":
                if up is not None:
                    await up.send(_APPEND + msg.audioChunk + '"}')
            elif kind == "session.initiate":
                url = f"{upstream}/realtime?model=gpt-realtime"
                up = await connect(url, compression=None, max_size=None)
                reader = asyncio.create_task(_pump_model(up, down))
                await down.send('{"type":"session.accepted","mediaFormat":"raw/mulaw"}')
            elif kind == "userStream.start":
                await down.send('{"type":"userStream.started"}')
            elif kind == "session.end":
                break
    except ConnectionClosed:
        pass
    finally:
        if reader is not None:
            reader.cancel()
        if up is not None:
            await up.close()


async def main(port: int, upstream: str) -> None:
    async with serve(
        lambda ws: _handle(ws, upstream), "127.0.0.1", port, compression=None, max_size=None
    ) as server:
        await server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="Realtime base URL, ws://host:port/v1")
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.run(main(args.port, args.upstream))
    except ImportError:
        asyncio.run(main(args.port, args.upstream))
