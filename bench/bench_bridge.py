"""Latency and CPU the voice service adds to each audio chunk, against a bare relay.

One load generator (this process, uvloop) plays both ends: N simulated VAIC
callers and a light fake Realtime model.  Both stream 20 ms μ-law chunks in real
time (each call at its own phase).  Every payload carries its call, sequence
number and the monotonic send time in its first 15 bytes, so the far end reads
the one-way latency straight from the frame it gets.  The bridge under test runs
in its own process:

* ``service``: ``fastagent serve --no-auth`` (a fresh SQLite store per run),
  ``FASTAGENT_REALTIME_URL`` pointing at the fake model;
* ``relay``: bench/bridge_relay.py, the same passthrough with no store or engine
  (the floor of docs on performance); ``relay+asgi`` serves its callers with
  uvicorn instead, ``relay+callbacks`` forwards audio from the data callbacks;
* ``pipecat``: the peer, bench/pipecat_bridge.py: one Pipecat pipeline per call
  (its FastAPI WebSocket transport, a small VAIC serializer, its OpenAI Realtime
  speech-to-speech service pointed at the same fake model);
* ``base``: the service from another source tree (``--baseline DIR``), to
  measure a change before/after in one run;
* ``service+SWITCH+...``: the service with bench-only switches (no store, other
  uvicorn ws implementation, ...; see bench/service_variant.py).

CPU is the bridge's (its process and any worker processes, all threads) over the
measurement window, per call-minute.  Targets run alternately at each level, and
each is compared with the relay run just before it.

Run:  python bench/bench_bridge.py                      (1, 50, 200 calls; ~20 s each)
      python bench/bench_bridge.py --calls 50 --window 10 --targets service
      python bench/bench_bridge.py --search             (each target's largest N with p99 <= 10 ms)
      python bench/bench_bridge.py --calls 50 --rounds 3 (paired CPU ratios, median)
      python bench/bench_bridge.py --calls 50 --targets relay,service,service+nostore
      python bench/bench_bridge.py --calls 20,50 --targets relay,service,pipecat
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import random
import resource
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

HERE = Path(__file__).resolve().parent
CHUNK_NS = 20_000_000  # 20 ms of audio per frame, both ways
NBYTES = 160  # 20 ms of 8 kHz μ-law
HEAD = struct.Struct(">HIqx")  # call, seq, send time (monotonic ns), pad: 15 bytes
FILL_B64 = base64.b64encode(b"\xff" * (NBYTES - HEAD.size)).decode()  # μ-law silence
CLK_TCK = os.sysconf("SC_CLK_TCK")
now_ns = time.monotonic_ns


def payload(call: int, seq: int, sent: int) -> str:
    """160 bytes of base64 audio whose first 20 characters say who, which and when."""
    return base64.b64encode(HEAD.pack(call, seq, sent)).decode() + FILL_B64


def read_head(frame: str, start: int) -> tuple[int, int, int]:
    return HEAD.unpack(base64.b64decode(frame[start : start + 20]))


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (``serve --workers N`` runs the calls in children)."""
    tree, i = [pid], 0
    while i < len(tree):
        try:
            for tid in os.listdir(f"/proc/{tree[i]}/task"):
                with open(f"/proc/{tree[i]}/task/{tid}/children") as f:
                    tree += [int(c) for c in f.read().split()]
        except OSError:
            pass
        i += 1
    return tree


async def send_paced(
    ws: ClientConnection | ServerConnection,
    head: str,
    call: int,
    t0: int,
    stats: Stats,
    stop: asyncio.Event,
    *,
    up: bool,
) -> None:
    """One audio frame (``head`` + stamped payload) every 20 ms after ``t0``, until
    ``stop``; each send's lateness goes to ``stats``."""
    seq = 0
    while not stop.is_set():
        seq += 1
        due = t0 + seq * CHUNK_NS
        wait = due - now_ns()
        if wait > 0:
            await asyncio.sleep(wait / 1e9)
        at = now_ns()
        await ws.send(head + payload(call, seq, at) + '"}')
        stats.sent(up, at, at - due)


def cpu_seconds(pid: int) -> float:
    """CPU time of a bridge: its process and any worker processes under it."""
    return sum(_cpu_seconds(p) for p in process_tree(pid))


def _cpu_seconds(pid: int) -> float:
    """CPU time of a process, all its threads: ns-precise schedstat where the
    kernel has it (a 1-call level uses a few hundred ms), else utime+stime."""
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        return total / 1e9
    except (OSError, ValueError, IndexError):
        pass
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mb(pid: int) -> float:
    """Resident memory of a bridge: its process and any worker processes (MB)."""
    total = 0
    for p in process_tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except (OSError, ValueError, IndexError):
            pass
    return total / 1024


def loop_seconds(pid: int) -> float:
    """CPU time of the main thread alone (the event loop: what saturates first)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/schedstat") as f:
            return int(f.read().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        return float("nan")


def machine_busy() -> float:
    """CPU seconds the whole machine has been busy (all cores, /proc/stat)."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
    return (sum(ticks[:8]) - idle) / CLK_TCK


def self_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


# ------------------------------------------------------------------ measuring


@dataclass
class Stats:
    """Latencies (ns) of frames sent inside the window, per direction."""

    start: int = 1 << 62
    end: int = 1 << 62
    up: array[int] = field(default_factory=lambda: array("q"))  # caller -> model
    down: array[int] = field(default_factory=lambda: array("q"))  # model -> caller
    sent_up: int = 0
    sent_down: int = 0
    late: array[int] = field(default_factory=lambda: array("q"))  # sender lateness
    crossed: int = 0  # frames that reached the wrong call (must stay 0)

    def sent(self, up: bool, at: int, lateness: int) -> None:
        if self.start <= at < self.end:
            if up:
                self.sent_up += 1
            else:
                self.sent_down += 1
            self.late.append(lateness)

    def got(self, up: bool, sent: int, at: int) -> None:
        if self.start <= sent < self.end:
            (self.up if up else self.down).append(at - sent)


def pct(values: array[int], q: float) -> float:
    """The q-quantile in ms (nearest rank)."""
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] / 1e6


# ------------------------------------------------------------- the fake model


_DELTA_HEAD = (
    '{"type":"response.output_audio.delta","event_id":"event_1","response_id":"resp_1",'
    '"item_id":"item_1","output_index":0,"content_index":0,"delta":"'
)


_FORMAT = '{"format":{"type":"audio/pcmu"}}'
_SESSION = (
    '{"type":"%s","event_id":"event_0","session":{"type":"realtime",'
    '"object":"realtime.session","id":"sess_bench","model":"gpt-realtime-2",'
    f'"audio":{{"input":{_FORMAT},"output":{_FORMAT}}}}}}}'
)
_RESPONSE_CREATED = (
    '{"type":"response.created","event_id":"event_2","response":{"id":"resp_1",'
    '"object":"realtime.response","status":"in_progress","output":[]}}'
)


class FakeModel:
    """Just enough Realtime: session.created on connect, session.updated and
    response.created when asked, reads appends (timestamps them), streams audio deltas."""

    def __init__(self, stats: Stats, stop: asyncio.Event, rng: random.Random) -> None:
        self.stats = stats
        self.stop = stop
        self.rng = rng
        self.url = ""
        self.tasks: set[asyncio.Task[None]] = set()

    async def handle(self, ws: ServerConnection) -> None:
        stats = self.stats
        streamer: asyncio.Task[None] | None = None
        call_of_socket = -1
        try:
            await ws.send(_SESSION % "session.created")
            async for frame in ws:
                at = now_ns()
                if type(frame) is not str:
                    continue
                k = frame.find('"audio":"')
                if k < 0:
                    k = frame.find('"audio": "') + 1  # json.dumps' default spacing (Pipecat)
                    if k <= 0:
                        # Answer what a bridge waits for (both time out without it).
                        if '"session.update"' in frame:
                            await ws.send(_SESSION % "session.updated")
                        elif '"response.create"' in frame:
                            await ws.send(_RESPONSE_CREATED)
                        continue
                call, _seq, sent = read_head(frame, k + 9)
                stats.got(True, sent, at)
                if streamer is None:
                    call_of_socket = call
                    streamer = asyncio.create_task(self.stream(ws, call))
                elif call != call_of_socket:
                    stats.crossed += 1
        except ConnectionClosed:
            pass
        finally:
            if streamer is not None:
                streamer.cancel()

    async def stream(self, ws: ServerConnection, call: int) -> None:
        """Bot audio in real time: one delta every 20 ms, starting at a random phase."""
        t0 = now_ns() + int(self.rng.random() * CHUNK_NS)
        with contextlib.suppress(ConnectionClosed):
            await send_paced(ws, _DELTA_HEAD, call, t0, self.stats, self.stop, up=False)


# ------------------------------------------------------------------ a caller


@dataclass
class Caller:
    index: int
    url: str
    stats: Stats
    stop: asyncio.Event
    phase: float
    ws: ClientConnection | None = None
    error: str = ""

    async def expect(self, kind: str) -> None:
        assert self.ws is not None
        needle = f'"type":"{kind}"'
        while True:
            frame = await asyncio.wait_for(self.ws.recv(), 30)
            if needle in frame:
                return
            if '"session.error"' in frame:
                raise RuntimeError(f"call {self.index}: {frame[:200]}")

    async def setup(self, run: str) -> None:
        self.ws = ws = await connect(self.url, compression=None, max_size=None, open_timeout=30)
        cid = f"bench-{run}-{self.index}"
        self.cid_json = f'"{cid}"'
        await ws.send(
            json.dumps(
                {
                    "type": "session.initiate",
                    "conversationId": cid,
                    "botName": "bench",
                    "caller": "+15550100",
                    "expectAudioMessages": True,
                    "supportedMediaFormats": ["raw/mulaw"],
                }
            )
        )
        await self.expect("session.accepted")
        start = {"type": "event", "name": "start", "parameters": {"caller": "+15550100"}}
        await ws.send(
            json.dumps({"type": "activities", "conversationId": cid, "activities": [start]})
        )
        await ws.send(json.dumps({"type": "userStream.start", "conversationId": cid}))
        await self.expect("userStream.started")

    async def run(self) -> None:
        """Read bot audio (timestamping it) while sending caller audio in real time."""
        assert self.ws is not None
        reader = asyncio.create_task(self.read())
        ws, stats, stop, call = self.ws, self.stats, self.stop, self.index
        head = '{"type":"userStream.chunk","conversationId":' + self.cid_json + ',"audioChunk":"'
        t0 = now_ns() + int(self.phase * CHUNK_NS)
        try:
            await send_paced(ws, head, call, t0, stats, stop, up=True)
        except ConnectionClosed as exc:
            self.error = f"caller socket closed: {exc}"
        finally:
            reader.cancel()

    async def read(self) -> None:
        assert self.ws is not None
        stats, call = self.stats, self.index
        with contextlib.suppress(ConnectionClosed):
            async for frame in self.ws:
                at = now_ns()
                k = frame.find('"audioChunk":"')
                if k < 0:
                    continue
                who, _seq, sent = read_head(frame, k + 14)
                if who != call:
                    stats.crossed += 1
                stats.got(False, sent, at)

    async def close(self) -> None:
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.ws.close(), 2)


# ------------------------------------------------------------------ the bridges


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_bridge(
    target: str, model_url: str, port: int, work: Path, baseline: str
) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    log = open(work / f"{target}-{port}.log", "wb")
    if target == "pipecat":  # the peer (bench/pipecat_bridge.py; the bench extra)
        cmd = [sys.executable, str(HERE / "pipecat_bridge.py"), "--port", str(port)]
        cmd += ["--upstream", model_url]
    elif target == "relay" or target.startswith("relay+"):
        cmd = [sys.executable, str(HERE / "bridge_relay.py"), "--port", str(port)]
        cmd += ["--upstream", model_url] + [f"--{opt}" for opt in target.split("+")[1:]]
    else:
        env.update(FASTAGENT_REALTIME_URL=model_url, OPENAI_API_KEY="bench")
        env.pop("FASTAGENT_VAIC_TOKEN", None)
        if target == "base":
            env["PYTHONPATH"] = baseline
        store = work / f"{target}-{port}.db"
        cmd = [sys.executable, "-c", "from fastagent.cli import main; main()", "serve"]
        if target.startswith("service+"):  # bench-only switches (bench/service_variant.py)
            env["FASTAGENT_BENCH_VARIANT"] = target.partition("+")[2]
            cmd[1:3] = [str(HERE / "service_variant.py")]
        cmd += ["--no-auth", "--port", str(port), "--store", str(store)]
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=work)


async def wait_listening(proc: subprocess.Popen[bytes], port: int) -> None:
    for _ in range(300):
        if proc.poll() is not None:
            raise RuntimeError(f"bridge exited with {proc.returncode} before listening")
        with contextlib.suppress(OSError):
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return
        await asyncio.sleep(0.05)
    raise RuntimeError("bridge did not listen within 15 s")


def stop_bridge(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ------------------------------------------------------------------ one level


@dataclass
class Result:
    target: str
    calls: int
    up: tuple[float, float, float]  # p50, p99, p99.9 ms
    down: tuple[float, float, float]
    cpu_per_call_min: float
    cores: float
    loop_cores: float  # the bridge's main thread (its event loop) alone
    gen_cores: float
    other_cores: float  # everything else on the machine meanwhile (noise)
    late_p99: float
    lost: float  # fraction of window frames that never arrived
    failed: int
    crossed: int
    rss: float = 0.0  # MB at the end of the window

    @property
    def worst_p99(self) -> float:
        return max(self.up[1], self.down[1])


async def run_level(
    target: str,
    calls: int,
    window: float,
    warmup: float,
    work: Path,
    baseline: str,
    seed: int,
    profile: str = "",
) -> Result:
    rng = random.Random(seed)
    stats, stop = Stats(), asyncio.Event()
    model = FakeModel(stats, stop, rng)
    server = await serve(model.handle, "127.0.0.1", 0, compression=None, max_size=None)
    model_port = next(iter(server.sockets)).getsockname()[1]
    port = free_port()
    proc = start_bridge(target, f"ws://127.0.0.1:{model_port}/v1", port, work, baseline)
    callers: list[Caller] = []
    tasks: list[asyncio.Task[None]] = []
    try:
        await wait_listening(proc, port)
        url = f"ws://127.0.0.1:{port}/audiocodes"
        callers = [Caller(i, url, stats, stop, rng.random()) for i in range(calls)]
        run_id = f"{target}{calls}-{seed}"
        sem = asyncio.Semaphore(20)  # ramp: at most 20 handshakes at a time

        async def setup(c: Caller) -> bool:
            async with sem:
                try:
                    await c.setup(run_id)
                    return True
                except Exception as exc:
                    c.error = f"setup: {exc}"
                    return False

        ok = await asyncio.gather(*(setup(c) for c in callers))
        live = [c for c, good in zip(callers, ok, strict=True) if good]
        tasks = [asyncio.create_task(c.run()) for c in live]
        await asyncio.sleep(warmup)
        spy = None
        if profile:  # sample the bridge during the window (py-spy, collapsed stacks)
            out = Path(profile) / f"{target}-{calls}.txt"
            spy = subprocess.Popen(
                ["py-spy", "record", "--pid", str(proc.pid), "--duration", str(int(window)),
                 "--rate", "200", "--nonblocking", "--format", "raw", "-o", str(out)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
        loop0 = loop_seconds(proc.pid)
        cpu0, gen0, busy0, t0 = cpu_seconds(proc.pid), self_cpu(), machine_busy(), now_ns()
        stats.start = t0
        await asyncio.sleep(window)
        t1 = now_ns()
        stats.end = t1
        cpu1, gen1, busy1 = cpu_seconds(proc.pid), self_cpu(), machine_busy()
        loop1 = loop_seconds(proc.pid)
        rss = rss_mb(proc.pid)
        await asyncio.sleep(0.5)  # frames in flight at the end of the window arrive
        stop.set()
        if spy is not None:
            await asyncio.to_thread(spy.wait)
    finally:
        stop.set()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(c.close() for c in callers), return_exceptions=True)
        server.close()
        stop_bridge(proc)
    errs = [c.error for c in callers if c.error]
    if errs:
        print(f"{target}: {len(errs)} failed, e.g. {errs[0][:300]}", file=sys.stderr)
    secs = (t1 - t0) / 1e9
    cpu = cpu1 - cpu0
    n = max(1, len(live))
    sent = stats.sent_up + stats.sent_down
    got = len(stats.up) + len(stats.down)
    return Result(
        target=target,
        calls=calls,
        up=(pct(stats.up, 0.5), pct(stats.up, 0.99), pct(stats.up, 0.999)),
        down=(pct(stats.down, 0.5), pct(stats.down, 0.99), pct(stats.down, 0.999)),
        cpu_per_call_min=cpu / (n * secs / 60),
        cores=cpu / secs,
        loop_cores=(loop1 - loop0) / secs,
        gen_cores=(gen1 - gen0) / secs,
        other_cores=max(0.0, (busy1 - busy0 - cpu - (gen1 - gen0)) / secs),
        late_p99=pct(stats.late, 0.99),
        lost=(sent - got) / sent if sent else 1.0,
        failed=calls - len(live) + sum(1 for c in live if c.error),
        crossed=stats.crossed,
        rss=rss,
    )


# ------------------------------------------------------------------ report


def row(r: Result) -> str:
    return (
        f"| {r.target:7} | {r.calls:5} | {r.up[0]:5.2f} | {r.up[1]:6.2f} | {r.up[2]:6.2f} "
        f"| {r.down[0]:5.2f} | {r.down[1]:6.2f} | {r.down[2]:6.2f} | {r.cpu_per_call_min:6.3f} "
        f"| {r.cores:5.2f} | {r.loop_cores:4.2f} | {r.gen_cores:4.2f} | {r.other_cores:4.2f} "
        f"| {r.late_p99:5.2f} | {r.lost:6.2%} | {r.failed} | {r.rss:5.0f} |"
    )


HEADER = (
    "| target  | calls | up p50 | up p99 | up p99.9 | down p50 | down p99 | down p99.9 "
    "| CPU s/call-min | cores | loop cores | gen cores | other cores | send late p99 | lost "
    "| failed | RSS MB |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def ratios(results: list[Result]) -> list[str]:
    """Each result against the relay run just before it at the same call count
    (targets alternate, so the pair shares the machine's state); with several
    rounds, the median of the paired ratios too."""
    lines = []
    paired: dict[tuple[str, int], list[tuple[float, float]]] = {}
    floor: dict[int, Result] = {}
    for r in results:
        if r.target == "relay":
            floor[r.calls] = r
            continue
        f = floor.get(r.calls)
        if f is None:
            continue
        x = r.cpu_per_call_min / f.cpu_per_call_min
        added = max(r.up[1] - f.up[1], r.down[1] - f.down[1])
        paired.setdefault((r.target, r.calls), []).append((x, added))
        lines.append(
            f"{r.target} vs relay at {r.calls} calls: CPU x{x:.2f} ({x - 1:+.0%}), added p99 up "
            f"{r.up[1] - f.up[1]:+.2f} ms, down {r.down[1] - f.down[1]:+.2f} ms"
        )
    # Against the service without metrics and traces, where it ran (same round).
    bare: dict[int, Result] = {}
    for r in results:
        if r.target == "service+nometrics":
            bare[r.calls] = r
        elif r.target in ("service", "service+traces") and r.calls in bare:
            b = bare[r.calls]
            x = r.cpu_per_call_min / b.cpu_per_call_min
            paired.setdefault((f"{r.target} vs service+nometrics", r.calls), []).append((x, 0.0))
            lines.append(
                f"{r.target} vs service+nometrics at {r.calls} calls: CPU x{x:.3f} ({x - 1:+.1%})"
            )
    for (target, calls), pairs in paired.items():
        if len(pairs) > 1:
            xs, adds = sorted(p[0] for p in pairs), sorted(p[1] for p in pairs)
            versus = target if " vs " in target else f"{target} vs relay"
            lines.append(
                f"{versus} at {calls} calls over {len(pairs)} rounds: "
                f"CPU x{median(xs):.2f} median (x{xs[0]:.2f}..x{xs[-1]:.2f}), "
                f"added p99 {median(adds):+.2f} ms median "
                f"({adds[0]:+.2f}..{adds[-1]:+.2f})"
            )
    return lines


async def main_async(args: argparse.Namespace) -> None:
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    if args.baseline:
        targets.append("base")
    levels = [int(x) for x in args.calls.split(",")]
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="bench-bridge-") as tmp:
        work = Path(tmp)

        async def measure(target: str, calls: int) -> Result:
            r = await run_level(
                target, calls, args.window, args.warmup, work, args.baseline, calls, args.profile
            )
            print(row(r), flush=True)
            results.append(r)
            return r

        print(HEADER, flush=True)
        for calls in levels:
            for _ in range(args.rounds):
                for target in targets:
                    await measure(target, calls)
        if args.search:
            for target in targets:
                done = [r for r in results if r.target == target]
                await search(measure, target, done, args.limit_ms, args.search_max)
    print()
    for line in ratios(results):
        print(line)


async def search(measure: object, target: str, done: list[Result], limit: float, most: int) -> None:
    """Step ``target``'s call count to the largest that keeps both p99s within limit."""
    ok = {r.calls: r.worst_p99 <= limit and r.lost < 0.001 for r in done}
    passing = [n for n, good in ok.items() if good]
    failing = [n for n, good in ok.items() if not good]
    lo, hi = max(passing, default=0), min(failing, default=0)
    step = 50
    while hi == 0 and lo < most:  # grow until something fails
        n = lo + step
        r = await measure(target, n)  # type: ignore[operator]
        if r.worst_p99 <= limit and r.lost < 0.001:
            lo = n
        else:
            hi = n
    while hi - lo > 25:
        n = (lo + hi) // 2 // 25 * 25
        if not lo < n < hi:
            n = (lo + hi) // 2
        r = await measure(target, n)  # type: ignore[operator]
        if r.worst_p99 <= limit and r.lost < 0.001:
            lo = n
        else:
            hi = n
    print(f"\n{target}: largest call count with both p99 <= {limit:g} ms: {lo} (fails at {hi})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", default="1,50,200", help="comma-separated call counts")
    parser.add_argument(
        "--targets",
        default="relay,service",
        help="relay,service; service+SWITCH[+SWITCH] runs bench/service_variant.py",
    )
    parser.add_argument("--baseline", default="", help="a source tree to run as target 'base'")
    parser.add_argument("--rounds", type=int, default=1, help="alternations per call count")
    parser.add_argument("--window", type=float, default=20.0, help="seconds measured per level")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before measuring")
    parser.add_argument(
        "--search", action="store_true", help="each target's largest N within --limit-ms"
    )
    parser.add_argument("--profile", default="", help="py-spy each bridge into this directory")
    parser.add_argument("--limit-ms", type=float, default=10.0)
    parser.add_argument("--search-max", type=int, default=400, help="stop growing at this N")
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.run(main_async(args))
    except ImportError:
        asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
