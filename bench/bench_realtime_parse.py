"""Cost of reading one ``response.output_audio.delta`` frame (the model-audio hot path).

Compares, on the same frames in one run:
  * fastagent.realtime.parse_server_event (dedicated msgspec decoder, delta kept as str)
  * the same through RealtimeProtocol.receive (parse + state tracking)
  * json.loads (a dict; no types, no validation)
  * the openai SDK's own parse (json.loads + construct_type_unchecked into its models),
    i.e. what AsyncRealtimeConnection.recv() does per frame
and, for the other direction, building ``input_audio_buffer.append``
(string concatenation vs json.dumps of a dict).

With ``--send`` it also times sending one append frame over loopback through the
SDK connection: the public ``conn.send_raw(str)`` vs the private websockets
``conn._connection.send(str)`` (to a sink server; includes the socket write).

Run: python bench/bench_realtime_parse.py [--frames N] [--chunk-ms MS] [--pcm] [--send]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import time
import timeit
from typing import Any, cast

import msgspec
from openai._models import construct_type_unchecked
from openai.types.realtime.realtime_server_event import RealtimeServerEvent

from fastagent import realtime as rt


def delta_frame(i: int, nbytes: int) -> bytes:
    # Field order as the GA server sends it: type first.
    event = {
        "type": "response.output_audio.delta",
        "event_id": f"event_{i:08d}",
        "response_id": "resp_C1a2b3c4d5e6f7",
        "item_id": "item_C1a2b3c4d5e6f8",
        "output_index": 0,
        "content_index": 0,
        "delta": base64.b64encode(bytes((i * 7 + k) & 0xFF for k in range(nbytes))).decode(),
    }
    return json.dumps(event, separators=(",", ":")).encode()


def per_frame_us(fn: Any, frames: list[bytes], repeat: int) -> float:
    def loop() -> None:
        for f in frames:
            fn(f)

    best = min(timeit.repeat(loop, number=1, repeat=repeat))
    return best / len(frames) * 1e6


async def _send_costs(frame: str, n: int) -> dict[str, float]:
    from openai import AsyncOpenAI
    from websockets.asyncio.server import ServerConnection, serve

    async def sink(ws: ServerConnection) -> None:
        async for _ in ws:
            pass

    out: dict[str, list[float]] = {}
    async with serve(sink, "127.0.0.1", 0, compression=None, max_size=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        client = AsyncOpenAI(api_key="bench", websocket_base_url=f"ws://127.0.0.1:{port}/v1")
        async with client.realtime.connect(model="gpt-realtime") as conn:
            ways = {
                "SDK conn.send_raw(str)": conn.send_raw,
                "conn._connection.send(str)": conn._connection.send,
            }
            for _ in range(3):  # alternate, keep the best of each
                for name, send in ways.items():
                    t0 = time.perf_counter()
                    for _ in range(n):
                        await send(frame)
                    out.setdefault(name, []).append((time.perf_counter() - t0) / n * 1e6)
    return {k: min(v) for k, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=2000)
    ap.add_argument("--chunk-ms", type=int, default=20)
    ap.add_argument("--pcm", action="store_true", help="24 kHz PCM instead of μ-law")
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--send", action="store_true", help="also time sending over loopback")
    args = ap.parse_args()
    bytes_per_ms = 48 if args.pcm else 8
    nbytes = args.chunk_ms * bytes_per_ms
    frames = [delta_frame(i, nbytes) for i in range(args.frames)]

    assert isinstance(rt.parse_server_event(frames[0]), rt.AudioDelta)
    sdk_event = construct_type_unchecked(
        value=json.loads(frames[0]), type_=cast(Any, RealtimeServerEvent)
    )
    assert type(sdk_event).__name__ == "ResponseAudioDeltaEvent"

    proto = rt.RealtimeProtocol()
    results = {
        "fastagent parse_server_event": per_frame_us(rt.parse_server_event, frames, args.repeat),
        "fastagent RealtimeProtocol.receive": per_frame_us(proto.receive, frames, args.repeat),
        "msgspec.json.decode (dict)": per_frame_us(msgspec.json.decode, frames, args.repeat),
        "json.loads (dict)": per_frame_us(json.loads, frames, args.repeat),
        "openai SDK parse (json + construct)": per_frame_us(
            lambda f: construct_type_unchecked(
                value=json.loads(f), type_=cast(Any, RealtimeServerEvent)
            ),
            frames,
            args.repeat,
        ),
    }
    b64s = [base64.b64encode(bytes(nbytes)).decode()] * args.frames

    def dumps_append(b: str) -> str:
        return json.dumps({"type": "input_audio_buffer.append", "audio": b})

    build = {
        "fastagent append_audio (concat)": per_frame_us(rt.append_audio, b64s, args.repeat),
        "json.dumps append dict": per_frame_us(dumps_append, b64s, args.repeat),
    }
    fmt = "pcm16 24 kHz" if args.pcm else "μ-law"
    print(f"{args.frames} frames of {args.chunk_ms} ms {fmt} ({len(frames[0])} bytes per frame)")
    base = results["fastagent parse_server_event"]
    print("parse one response.output_audio.delta:")
    for name, us in results.items():
        print(f"  {name:38s} {us:8.2f} µs/frame  ({us / base:5.1f}x ours)")
    base = build["fastagent append_audio (concat)"]
    print("build one input_audio_buffer.append:")
    for name, us in build.items():
        print(f"  {name:38s} {us:8.2f} µs/frame  ({us / base:5.1f}x ours)")
    if args.send:
        sends = asyncio.run(_send_costs(rt.append_audio(b64s[0]), args.frames * 5))
        base = sends["SDK conn.send_raw(str)"]
        print("send one append frame over loopback:")
        for name, us in sends.items():
            print(f"  {name:38s} {us:8.2f} µs/frame  ({us / base:5.1f}x send_raw)")


if __name__ == "__main__":
    main()
