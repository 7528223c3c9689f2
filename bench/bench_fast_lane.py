"""CPU the service adds per audio frame on its fast lane, without the sockets' noise.

bench/bench_bridge.py measures the whole bridge in real time, where other work on
the machine moves the figures by tens of percent.  This script isolates what the
service adds to a relay: it runs the real service in this process (its app under
uvicorn on loopback, a fresh SQLite store, metrics on), sets up ``--calls`` calls
over real sockets against a small fake model until each call's bot audio stream is
open, then stops the traffic and calls the two fast-lane hooks directly, the way
the sockets' data callbacks do: the VAIC socket's with a ``userStream.chunk``, the
model socket's with a ``response.output_audio.delta``, alternating over the calls.
The hooks' socket writes are replaced by no-ops, so what is timed is the service's
own work per frame: parse and checks, the event, the engine, the live state,
observers and metrics, the row for the log, the frame to forward.  The store's
flusher thread writes the rows to SQLite meanwhile; the CPU of the threads other
than the event loop's (the flusher, a final flush) is reported apart as "store".

Works on any source tree whose sockets have the ``on_text`` hooks (run it with
``PYTHONPATH=<tree>``), so a change can be compared with the code before it.

Run: PYTHONPATH=$PWD python bench/bench_fast_lane.py [--calls 50] [--frames 20000] [--repeat 5]

Instructions instead of time (deterministic, whatever else runs on the machine):
the last repeat runs inside ``operator.call``, so

  PYTHONPATH=$PWD valgrind --tool=callgrind --toggle-collect=_operator_call \
      --separate-threads=yes --callgrind-out-file=/tmp/cg.%p \
      python bench/bench_fast_lane.py --calls 20 --frames 4000 --repeat 1

counts the event loop thread's instructions for those frames alone (main thread's
file; ``callgrind_annotate`` it, divide by the frames).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import operator
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any

import uvicorn
from websockets.asyncio.server import ServerConnection, serve

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_bridge as bb  # noqa: E402  (its fake model's frames, its caller)

from fastagent import sockets  # noqa: E402
from fastagent.service import ServiceConfig, create_app, tune_gc  # noqa: E402


class QuietModel:
    """The fake model of bench_bridge, answering what the service waits for; it
    sends a few audio deltas after the first append (which opens the call's bot
    audio stream) and then nothing, so only the direct hook calls run."""

    async def handle(self, ws: ServerConnection) -> None:
        sent = False
        await ws.send(bb._SESSION % "session.created")
        async for frame in ws:
            if type(frame) is not str:
                continue
            if '"session.update"' in frame:
                await ws.send(bb._SESSION % "session.updated")
            elif '"response.create"' in frame:
                await ws.send(bb._RESPONSE_CREATED)
            elif '"input_audio_buffer.append"' in frame and not sent:
                sent = True
                for seq in range(3):
                    await ws.send(bb._DELTA_HEAD + bb.payload(0, seq, 0) + '"}')


async def run(args: argparse.Namespace) -> dict[str, list[float]]:
    model = QuietModel()
    server = await serve(model.handle, "127.0.0.1", 0, compression=None, max_size=None)
    model_port = next(iter(server.sockets)).getsockname()[1]
    tmp = tempfile.mkdtemp(prefix="bench-fast-lane-")
    kwargs: dict[str, Any] = dict(
        store=str(Path(tmp) / "calls.db"),
        no_auth=True,
        realtime_url=f"ws://127.0.0.1:{model_port}/v1",
        api_key="bench",
    )
    names = {f.name for f in dataclasses.fields(ServiceConfig)}
    if "max_msgs_per_s" in names:
        kwargs["max_msgs_per_s"] = 1e9  # the direct calls come far faster than VAIC's 50/s
    for name in ("caller_idle_s", "model_timeout_s", "initiate_timeout_s"):
        if name in names:  # (under valgrind everything takes 50x longer)
            kwargs[name] = 1e6
    app = create_app(ServiceConfig(**kwargs))
    tune_gc()  # as `fastagent serve` does
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        ws=sockets.CallerProtocol,
        log_level="warning",
        ws_per_message_deflate=False,
    )
    uv = uvicorn.Server(config)
    uv_task = asyncio.create_task(uv.serve())
    while not uv.started:
        await asyncio.sleep(0.01)
    port = uv.servers[0].sockets[0].getsockname()[1]
    url = f"ws://127.0.0.1:{port}/audiocodes"
    stats, stop = bb.Stats(), asyncio.Event()
    callers = [bb.Caller(i, url, stats, stop, 0.0) for i in range(args.calls)]
    results: dict[str, list[float]] = {}
    try:
        for c in callers:
            await c.setup("fastlane")
            head = '{"type":"userStream.chunk","conversationId":' + c.cid_json + ',"audioChunk":"'
            assert c.ws is not None
            await c.ws.send(head + bb.payload(c.index, 0, 0) + '"}')
            await c.expect("playStream.start")
        service = app.state.service
        await asyncio.sleep(0.5)  # the last deltas and their records settle
        caller_socks, model_socks = [], []
        for obj in gc.get_objects():
            if isinstance(obj, sockets.CallerProtocol) and obj.on_text is not None:
                caller_socks.append(obj)
            elif isinstance(obj, sockets.ModelConnection) and obj.on_text is not None:
                model_socks.append(obj)
        assert len(caller_socks) == len(model_socks) == args.calls, (
            len(caller_socks),
            len(model_socks),
        )
        written = [0]

        def sink(data: Any) -> None:
            written[0] += 1

        for s in caller_socks + model_socks:
            s.write_now = sink  # type: ignore[method-assign]
        # Each caller socket with its frame (its call's id), each model socket with a delta.
        caller_frames = []
        for s in caller_socks:
            session = next(x for x in service.calls.values() if x.caller_sock is s)
            cid = session.call_id
            head = f'{{"type":"userStream.chunk","conversationId":"{cid}","audioChunk":"'
            caller_frames.append((s.on_text, (head + bb.payload(0, 1, 0) + '"}').encode()))
        delta = (bb._DELTA_HEAD + bb.payload(0, 1, 0) + '"}').encode()
        model_frames = [(s.on_text, delta) for s in model_socks]
        pairs = list(zip(caller_frames, model_frames, strict=True))
        ablate(args.ablate, service)
        rounds = max(1, args.frames // (2 * len(pairs)))
        for rep in range(args.repeat + 1):
            await asyncio.to_thread(service.store.flush)
            written[0] = 0
            t0, p0 = time.thread_time(), time.process_time()

            def frames() -> int:
                ok = 0
                for _ in range(rounds):
                    for (ch, cf), (mh, mf) in pairs:
                        ok += ch(cf)
                        ok += mh(mf)
                return ok

            # Under valgrind --toggle-collect=_operator_call only this call is counted.
            if args.cprofile and rep == args.repeat:
                import cProfile

                prof = cProfile.Profile()
                ok = prof.runcall(frames)
                prof.dump_stats(args.cprofile)
            else:
                ok = operator.call(frames) if rep == args.repeat else frames()
            t1 = time.thread_time()
            await asyncio.to_thread(service.store.flush)
            p1 = time.process_time()
            n = rounds * len(pairs) * 2
            if ok != n or written[0] != n:
                raise SystemExit(
                    f"only {ok} of {n} frames took the fast lane ({written[0]} written)"
                )
            if rep == 0:
                continue  # warm-up
            results.setdefault("loop", []).append((t1 - t0) / n * 1e6)
            # Other threads: the store's flusher, and the flush above (a pool thread).
            results.setdefault("store", []).append(((p1 - p0) - (t1 - t0)) / n * 1e6)
            await asyncio.sleep(0.05)
    finally:
        for c in callers:
            await c.close()
        uv.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(uv_task, 10)
        server.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return results


def ablate(switches: str, service: Any) -> None:
    """Take one piece out (never in a product path: this process only), to read its
    marginal cost: ``metrics`` (relay timings), ``observers``, ``live`` (the live
    state), ``store`` (append), ``b64`` (strict base64 checks)."""
    for s in filter(None, switches.split("+")):
        if s == "metrics":
            service.metrics.relay_to_model = service.metrics.relay_to_caller = lambda at: None
        elif s == "observers":
            service.observers.clear()
        elif s == "live":
            from projections import live

            live.apply = lambda state, e: state
        elif s == "store":
            service.store.append = lambda batch: None
        elif s == "b64":
            from fastagent import wire

            wire.is_base64 = lambda s: True
        else:
            raise SystemExit(f"unknown switch {s!r}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=50)
    ap.add_argument("--frames", type=int, default=20000, help="frames per repeat (both ways)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--cprofile", default="", help="cProfile the last repeat into this file")
    ap.add_argument("--ablate", default="", help="metrics+observers+live+store+b64 (see ablate)")
    args = ap.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    res = asyncio.run(run(args))
    import fastagent

    print(f"tree: {os.path.dirname(os.path.dirname(fastagent.__file__))}")
    print(
        f"{args.calls} calls, {args.frames} frames per repeat (half each way), "
        f"{args.repeat} repeats"
    )
    for k, v in res.items():
        print(
            f"  {k:6s} µs per frame: min {min(v):6.2f}  median {median(v):6.2f}  "
            f"(all: {' '.join(f'{x:.2f}' for x in v)})"
        )
    total = [a + b for a, b in zip(res["loop"], res["store"], strict=True)]
    print(f"  total  µs per frame: min {min(total):6.2f}  median {median(total):6.2f}")


if __name__ == "__main__":
    main()
