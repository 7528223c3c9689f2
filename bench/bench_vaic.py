"""Micro-benchmark of the VAIC hot path: parse a caller chunk, build a bot chunk.

Run: python bench/bench_vaic.py
Prints µs per operation; the ratios against the naive stdlib-json way are
what matters (measured in the same run).
"""

from __future__ import annotations

import base64
import json
import os
import timeit

import msgspec

from fastagent import audio, vaic

CID = "6d1f0c5e-2a3b-4c5d-8e9f-0a1b2c3d4e5f"
N = 100_000


def per_op(fn: object, n: int = N) -> float:
    best = min(timeit.repeat(fn, number=n, repeat=5))  # type: ignore[arg-type]
    return best / n * 1e6


def bench_format(fmt: str, rows: list[tuple[str, float]]) -> None:
    raw = os.urandom(audio.bytes_per_ms(fmt) * 20)
    b64 = base64.b64encode(raw).decode()
    frame = json.dumps({"type": "userStream.chunk", "conversationId": CID, "audioChunk": b64})
    p = vaic.VaicProtocol()
    p.receive(json.dumps({"type": "session.initiate", "conversationId": CID}))
    p.receive(json.dumps({"type": "userStream.start", "conversationId": CID}))
    assert isinstance(p.receive(frame), vaic.UserStreamChunk)
    tag = fmt.split("/")[1]
    rows.append((f"receive userStream.chunk {tag} 20ms", per_op(lambda: p.receive(frame))))
    rows.append((f"  json.loads of the same frame {tag}", per_op(lambda: json.loads(frame))))
    rows.append((f"  base64 regex check {tag}", per_op(lambda: vaic.is_base64(b64))))
    rows.append((f"  base64 full decode {tag}", per_op(lambda: base64.b64decode(b64))))

    p.play_start("play-1", fmt)
    rows.append((f"play_chunk (bytes join) {tag}", per_op(lambda: p.play_chunk(b64))))
    enc = msgspec.json.Encoder()
    obj = {"type": "playStream.chunk", "streamId": "play-1", "audioChunk": b64}
    rows.append((f"  msgspec encode of a dict {tag}", per_op(lambda: enc.encode(obj))))
    rows.append((f"  json.dumps of a dict {tag}", per_op(lambda: json.dumps(obj).encode())))
    p.play_stop()


def main() -> None:
    rows: list[tuple[str, float]] = []
    for fmt in ("raw/mulaw", "raw/lpcm16_24"):
        bench_format(fmt, rows)
    pcm16 = audio.tone(20, "raw/lpcm16")
    r = audio.Resampler(16000, 24000)
    rows.append(("Resampler 16k->24k, 20 ms chunk", per_op(lambda: r.process(pcm16), 20_000)))
    pcm8 = audio.tone(20, "raw/lpcm16_8")
    mu = audio.pcm16_to_mulaw(pcm8)
    rows.append(("pcm16 -> mulaw, 20 ms", per_op(lambda: audio.pcm16_to_mulaw(pcm8))))
    rows.append(("mulaw -> pcm16, 20 ms", per_op(lambda: audio.mulaw_to_pcm16(mu))))
    rows.append(("is_speech mulaw, 20 ms", per_op(lambda: audio.is_speech(mu, "raw/mulaw"))))

    for name, us in rows:
        print(f"{name:44s} {us:8.3f} µs")
    parse = {n: u for n, u in rows}
    for tag in ("mulaw", "lpcm16_24"):
        ours = parse[f"receive userStream.chunk {tag} 20ms"]
        naive = parse[f"  json.loads of the same frame {tag}"]
        build = parse[f"play_chunk (bytes join) {tag}"]
        dumps = parse[f"  json.dumps of a dict {tag}"]
        print(
            f"{tag}: receive is {naive / ours:.1f}x faster than json.loads alone; "
            f"play_chunk is {dumps / build:.1f}x faster than json.dumps"
        )
    # CPU per call-minute for the VAIC side of the hot path (3000 chunks each way).
    for tag in ("mulaw", "lpcm16_24"):
        us = parse[f"receive userStream.chunk {tag} 20ms"] + parse[f"play_chunk (bytes join) {tag}"]
        print(f"{tag}: VAIC parse+build per call-minute: {us * 3000 / 1e3:.2f} ms CPU")


if __name__ == "__main__":
    main()
