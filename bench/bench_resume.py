"""Resume latency for a call with a ten-minute log (60k events).

Writes a synthetic 60k-event call that the caller left mid-response (the model
was talking) into the store, then resumes it N times, each time on a fresh
service instance (``running_service``, its own store connection), with a raw
VAIC socket: the time from sending ``session.resume`` to the first
``playStream.chunk`` received.  That path is: read checkpoint + tail (or the whole
log), rebuild, claim the stream (synchronous append), ``session.accepted``,
connect a new model session (the fake Realtime server on loopback), configure
and seed it, ``response.create``, first audio delta, ``playStream.start`` and
the first chunk.  After each resume the socket is dropped, so the next instance
finds the call suspended (with the checkpoint taken at the drop).

"cold" resumes delete the checkpoint first (the whole log is replayed); it is the
case of a crash before any checkpoint.  Also timed in-process: ``rebuild`` alone.

    python bench/bench_resume.py                    # SQLite file in a temp dir
    python bench/bench_resume.py --store postgresql://postgres@127.0.0.1:5432/test?schema=bench_resume
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import websockets

from fastagent import checkpoints
from fastagent import events as ev
from fastagent.replay import replay
from fastagent.service import ServiceConfig
from fastagent.service_cli import running_service
from fastagent.store import open_store
from fastagent.testing.synth import synthetic_call

CALL = "bench-resume"
LONG_GREETING = "This is a long answer that keeps the model talking for a while. " * 40


def write_call(url: str, target: int) -> int:
    """A synthetic call cut in the middle of a bot response, then the caller's drop."""
    events = synthetic_call(CALL, target_events=target)
    # Cut inside the last long response: after a BotAudio, before its ResponseDone.
    cut = max(i for i, e in enumerate(events[:-50]) if isinstance(e, ev.BotAudio)) + 1
    while not isinstance(events[cut], ev.Input):
        cut += 1
    events = events[:cut]
    result = replay(events)
    engine = result.engine
    assert engine is not None and engine.response_active
    lost = ev.ConnectionLost(
        call_id=CALL, seq=engine.next_seq, at=events[-1].at + 1, side="caller", reason="bench"
    )
    events += [lost, *engine.handle(lost)]
    with open_store(url) as store:
        store.append(events)
        store.flush()
    return len(events)


def drop_checkpoint(url: str) -> None:
    with open_store(url) as store:
        store.checkpoints.drop(CALL)


async def one_resume(config: ServiceConfig) -> tuple[float, float, float]:
    """(accepted, response.create recorded, first chunk) seconds after session.resume."""
    marks: dict[str, float] = {}

    def observe(e: ev.Event) -> None:
        if isinstance(e, ev.ResponseRequested) and "asked" not in marks:
            marks["asked"] = time.perf_counter()

    async with running_service(config) as (app, url):
        app.state.service.observers.append(observe)
        ws = await websockets.connect(url, compression=None)
        t0 = time.perf_counter()
        await ws.send(json.dumps({"type": "session.resume", "conversationId": CALL}))
        async with asyncio.timeout(20):
            while True:
                msg = json.loads(await ws.recv())
                if msg["type"] == "session.accepted":
                    marks["accepted"] = time.perf_counter()
                if msg["type"] == "playStream.chunk":
                    marks["chunk"] = time.perf_counter()
                    break
                if msg["type"] == "session.error":
                    raise RuntimeError(msg)
        ws.transport.abort()  # the caller drops: the call is suspended again
        await asyncio.sleep(0.3)  # this instance records the drop and checkpoints it
        for session in list(app.state.service.calls.values()):
            await session.close("bench: next instance")
    return marks["accepted"] - t0, marks["asked"] - t0, marks["chunk"] - t0


FAKE = """
import asyncio, sys
from fastagent.testing.fake_realtime import FakeRealtimeServer
async def main():
    sc = {"greeting": [{"say": sys.argv[1]}], "turns": []}
    async with FakeRealtimeServer(sc) as fake:
        print(fake.url, flush=True)
        await asyncio.Event().wait()
asyncio.run(main())
"""


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", default="")
    ap.add_argument("--events", type=int, default=60_000)
    ap.add_argument("-n", type=int, default=30, help="warm resumes (with a checkpoint)")
    ap.add_argument("--cold", type=int, default=5, help="cold resumes (whole log)")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench-resume-")
    url = args.store or str(Path(tmp) / "calls.db")
    t = time.perf_counter()
    n = write_call(url, args.events)
    print(f"store {url}: wrote a {n}-event call in {time.perf_counter() - t:.1f} s")

    with open_store(url) as store:  # rebuild alone, in-process
        drop_checkpoint(url)
        t = time.perf_counter()
        rb = checkpoints.rebuild(store, CALL)
        whole = time.perf_counter() - t
        assert rb.engine is not None
        data = checkpoints.take(rb.engine, rb.state)
        assert data is not None
        store.checkpoints.write(CALL, rb.engine.next_seq - 1, data)
        t = time.perf_counter()
        checkpoints.rebuild(store, CALL)
        ckpt = time.perf_counter() - t
    print(f"rebuild alone: whole log {whole * 1000:.0f} ms, checkpoint + tail {ckpt * 1000:.1f} ms")
    print(f"checkpoint size {len(data)} bytes")

    # The fake model runs in its own process, as the real one would be elsewhere.
    fake = subprocess.Popen(
        [sys.executable, "-c", FAKE, LONG_GREETING], stdout=subprocess.PIPE, text=True
    )
    try:
        assert fake.stdout is not None
        fake_url = fake.stdout.readline().strip()
        if not fake_url.startswith("ws://"):
            raise SystemExit("bench_resume: the fake Realtime server did not start")
        config = ServiceConfig(
            store=url, no_auth=True, realtime_url=fake_url, api_key="bench", grace_s=60
        )
        cold = []
        for _ in range(args.cold):
            drop_checkpoint(url)
            cold.append(await one_resume(config))
        warm = [await one_resume(config) for _ in range(args.n)]
    finally:
        fake.terminate()
    for name, runs in (("cold (whole log)", cold), ("warm (checkpoint + tail)", warm)):
        if not runs:
            continue
        print(f"{name}: n={len(runs)}")
        for i, what in enumerate(("session.accepted", "response.create", "first played chunk")):
            xs = [r[i] for r in runs]
            print(
                f"  session.resume -> {what:<19} p50 {statistics.median(xs) * 1000:6.1f} ms"
                f"  p99 {pct(xs, 99) * 1000:6.1f} ms  max {max(xs) * 1000:6.1f} ms"
            )


if __name__ == "__main__":
    asyncio.run(main())
