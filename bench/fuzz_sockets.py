"""Fuzz both sockets of a running ``fastagent serve`` and report what is left.

The service runs as a subprocess (a fresh SQLite store, grace 1 s, idle 2 s,
initiate timeout 2 s) against the fake Realtime model, whose ``tamper`` hook turns
it hostile: before each valid event it sends ``--model-junk`` fuzzed frames, and
it corrupts some events themselves.  Callers open ``--connections`` sockets,
``--parallel`` at a time; each initiates, starts its stream and sends
``--frames`` frames, a mix of valid audio and the fault classes of issue 11
(invalid JSON and UTF-8, deep nesting, huge numbers and strings, duplicate keys,
lone surrogates, wrong types, bad base64, odd-sized PCM, injections, random
bytes), then ends the call, drops the connection, falls silent, or sends a
text frame that is not UTF-8.

Reported: frames sent each way, tracebacks in the service's log, calls the
service still holds once every grace is over (``/healthz``), and the service's
RSS and open file descriptors after a warm-up round and after the fuzz.

    PYTHONPATH=$PWD python bench/fuzz_sockets.py                # 120 x 1200 frames
    PYTHONPATH=$PWD python bench/fuzz_sockets.py --connections 20 --frames 200  # quick
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import websockets

from fastagent.testing.fake_realtime import FakeRealtimeServer
from fastagent.testing.scenario import scenario_from_dict

TOKEN = "fuzz-token"
SCENARIO = {
    "name": "fuzz",
    "agent": "default",
    "greeting": [{"say": "Hello, thanks for calling, how can I help you today?"}],
    "turns": [{"caller": "Hello", "model": [{"say": "Sure, one moment please."}]}],
}


def fuzz_values(rng: random.Random) -> Any:
    return rng.choice(
        [
            None,
            True,
            10 ** rng.randint(1, 40),
            -1.5e308,
            "x" * rng.randint(0, 3000),
            "\ud800",
            "é\u2028\x00",
            [],
            {"type": "event", "name": "transfer"},
            [[[[[]]]]],
        ]
    )


def caller_junk(rng: random.Random, cid: str, pcm: bool) -> bytes | str:
    """One hostile or faulty VAIC frame."""
    good = base64.b64encode(bytes(320 if pcm else 160)).decode()
    kind = rng.randrange(16)
    if kind == 0:
        return good  # not JSON at all
    if kind == 1:
        return bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 200)))
    if kind == 2:
        depth = rng.choice([40, 500, 2000, 20000])
        return (
            '{"type":"activities","activities":[{"name":"x","value":'
            + "[" * depth
            + "]" * depth
            + "}]}"
        )
    chunk = '{"type":"userStream.chunk","conversationId":"' + cid + '","audioChunk":'
    if kind == 3:  # a duplicate key
        return chunk + '"' + good + '","audioChunk":"' + good + '"}'
    if kind == 4:  # an injection through the audio string
        return chunk + '"' + good[:-4] + '","type":"session.end","x":"' + '"}'
    if kind == 5 and pcm:
        return json.dumps({"type": "userStream.chunk", "conversationId": cid, "audioChunk": "AAAA"})
    if kind == 6:
        acts = '"activities":[{"name":"dtmf","value":"\\udc00"}]}'
        return '{"type":"activities","conversationId":"' + cid + '",' + acts
    if kind == 7:
        return '{"type":"activities","activities":[{"name":"start","value":1' + "0" * 5000 + "}]}"
    if kind == 8:
        msg = {
            "type": rng.choice(
                [
                    "session.initiate",
                    "session.resume",
                    "userStream.start",
                    "userStream.stop",
                    "activities",
                    "session.end",
                    "nope",
                    7,
                ]
            )
        }
        for _ in range(rng.randint(0, 4)):
            msg[rng.choice(["conversationId", "activities", "audioChunk", "value", "type"])] = (
                fuzz_values(rng)
            )
        text = json.dumps(msg, ensure_ascii=rng.random() < 0.5)
        return text.encode("utf-8", "surrogatepass")
    if kind == 9:
        return b'{"type":"userStream.chunk","audioChunk":"\xff\xfe"}'
    if kind == 10:
        value = json.dumps(fuzz_values(rng))
        return '{"type":"activities","activities":[{"name":"dtmf","value":' + value + "}]}"
    return json.dumps({"type": "userStream.chunk", "conversationId": cid, "audioChunk": good})


def model_junk(rng: random.Random, event: dict[str, Any]) -> list[str | bytes]:
    """Fuzzed frames from a hostile model, around the event it was about to send."""
    out: list[str | bytes] = []
    for _ in range(MODEL_JUNK):
        kind = rng.randrange(8)
        if kind == 0:
            out.append(bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 100))))
        elif kind == 1:
            out.append('{"type":"error","error":{"message":' + "[" * 3000 + "]" * 3000 + "}}")
        elif kind == 2:
            out.append(json.dumps({**event, "delta": 'AAAA","type":"activities","x":"'}))
        elif kind == 3:
            out.append(
                json.dumps({"type": "rate_limits.updated", "rate_limits": [{"limit": 10**60}]})
            )
        elif kind == 4:
            out.append(
                '{"type":"conversation.item.input_audio_transcription.completed",'
                '"item_id":"i","transcript":"\\ud800"}'
            )
        elif kind == 5:
            out.append(json.dumps(event)[:-1] + ', "type": "error"}')
        elif kind == 6:
            out.append(json.dumps({"type": event["type"], "item_id": 7, "response": []}))
        else:
            out.append(json.dumps({"type": "response.output_audio.delta", "delta": "AAA"}))
    if event["type"] == "response.output_audio.delta" and rng.random() < 0.1:
        out.append(json.dumps({**event, "delta": event["delta"][:-1]}))  # odd, not base64
    else:
        out.append(json.dumps(event))
    return out


MODEL_JUNK = 4
sent = {"caller": 0, "model": 0}


async def one_caller(url: str, n: int, frames: int, rng: random.Random) -> None:
    cid = f"fuzz-{n}"
    pcm = rng.random() < 0.5
    fmt = "raw/lpcm16_24" if pcm else "raw/mulaw"
    try:
        async with websockets.connect(
            url, additional_headers={"Authorization": f"Bearer {TOKEN}"}, max_size=None
        ) as ws:
            reader = asyncio.create_task(_drain(ws))
            await ws.send(
                json.dumps(
                    {
                        "type": "session.initiate",
                        "conversationId": cid,
                        "supportedMediaFormats": [fmt],
                        "caller": "+1",
                    }
                )
            )
            await ws.send(json.dumps({"type": "userStream.start", "conversationId": cid}))
            await ws.send(
                json.dumps(
                    {
                        "type": "activities",
                        "conversationId": cid,
                        "activities": [{"type": "event", "name": "start"}],
                    }
                )
            )
            sent["caller"] += 3
            for i in range(frames):
                await ws.send(caller_junk(rng, cid, pcm))
                sent["caller"] += 1
                if i % 8 == 7:
                    await asyncio.sleep(0.025)  # ~300 frames/s: under the rate cap
            end = rng.randrange(4)
            if end == 3:  # a text frame that is not UTF-8: the connection fails (1007)
                await ws.send(b'{"type":"activities","x":"\xff"}', text=True)
                await asyncio.sleep(0.1)
            elif end == 0:
                await ws.send(json.dumps({"type": "session.end", "conversationId": cid}))
            elif end == 1:
                ws.transport.abort()  # the network drops it
            else:
                await asyncio.sleep(2.5)  # silent past FASTAGENT_CALLER_IDLE_S
            reader.cancel()
    except (websockets.ConnectionClosed, OSError):
        pass


async def _drain(ws: Any) -> None:
    with contextlib.suppress(Exception):
        async for _ in ws:
            pass


def proc_stats(pid: int) -> tuple[int, int, list[str]]:
    """(RSS in kB, open file descriptors, what they are) of a process."""
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    kinds = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            kinds.append(target.split(":[")[0] if ":[" in target else target)
    return rss, len(kinds), sorted(kinds)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def settle(port: int, limit_s: float = 10.0) -> int:
    """Wait until the service holds no call, at most ``limit_s`` (idle 2 s, grace
    1 s and initiate 2 s with room to spare); the calls still held then."""
    deadline = time.monotonic() + limit_s
    while (held := await asyncio.to_thread(calls_held, port)) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    await asyncio.sleep(1.0)  # sockets and tasks of the last calls wind down
    return held


def calls_held(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
        return int(json.loads(r.read())["calls"])


async def run(args: argparse.Namespace) -> dict[str, Any]:
    global MODEL_JUNK
    MODEL_JUNK = args.model_junk
    rng = random.Random(args.seed)
    model_rng = random.Random(args.seed + 1)

    def tamper(event: dict[str, Any]) -> list[str | bytes]:
        out = model_junk(model_rng, event)
        sent["model"] += len(out)
        return out

    fake = FakeRealtimeServer(scenario_from_dict(SCENARIO), tamper=tamper, speed=20)
    fake.start_in_thread()
    work = Path(tempfile.mkdtemp(prefix="fuzz-"))
    port = free_port()
    env = dict(os.environ)
    env.update(
        FASTAGENT_VAIC_TOKEN=TOKEN,
        OPENAI_API_KEY="fuzz",
        FASTAGENT_REALTIME_URL=fake.url,
        FASTAGENT_GRACE_S="1",
        FASTAGENT_CALLER_IDLE_S="2",
        FASTAGENT_INITIATE_TIMEOUT_S="2",
    )
    log_path = work / "service.log"
    cmd = [
        sys.executable,
        "-c",
        "from fastagent.cli import main; main()",
        "serve",
        "--port",
        str(port),
        "--store",
        str(work / "calls.db"),
    ]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=work)
    try:
        for _ in range(300):
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            time.sleep(0.05)
        url = f"ws://127.0.0.1:{port}/audiocodes"
        warm = max(2 * args.parallel, 10)  # fills the thread pool (a store connection each)

        async def batch(first: int, count: int) -> None:
            sem = asyncio.Semaphore(args.parallel)

            async def guarded(n: int) -> None:
                async with sem:
                    await one_caller(url, n, args.frames, random.Random(rng.random()))

            await asyncio.gather(*(guarded(n) for n in range(first, first + count)))

        await batch(0, warm)  # warm-up: imports, caches, the store's first pages
        await settle(port)
        before = proc_stats(proc.pid)
        started = time.perf_counter()
        await batch(warm, args.connections)
        elapsed = time.perf_counter() - started
        held = await settle(port)
        after = proc_stats(proc.pid)
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
        if proc.poll() is None:
            proc.kill()
        fake.stop_thread()
    text = log_path.read_text(errors="replace")
    return {
        "connections": args.connections + warm,
        "caller_frames": sent["caller"],
        "model_frames": sent["model"],
        "seconds": round(elapsed, 1),
        "tracebacks": text.count("Traceback"),
        "error_lines": sum(line.startswith("ERROR") for line in text.splitlines()),
        "calls_left_after_grace": held,
        "rss_kb_before_after": before[0:1] + after[0:1],
        "fds_before_after": (before[1], after[1]),
        "fds_added": sorted((Counter(after[2]) - Counter(before[2])).elements()),
        "log": str(log_path),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--connections", type=int, default=120)
    p.add_argument("--frames", type=int, default=1200, help="caller frames per connection")
    p.add_argument("--model-junk", type=int, default=24, help="fuzzed model frames per event")
    p.add_argument("--parallel", type=int, default=20)
    p.add_argument("--seed", type=int, default=11)
    args = p.parse_args()
    result = asyncio.run(run(args))
    print(json.dumps(result, indent=2))
    rss = result["rss_kb_before_after"]
    fds = result["fds_before_after"]
    ok = (
        result["tracebacks"] == 0
        and result["calls_left_after_grace"] == 0
        and rss[1] <= rss[0] * 1.1
        and fds[1] <= fds[0] * 1.1
    )
    print("PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
