"""Benchmark: analytics sync, report and no-op re-sync on a large generated log.

    python bench/bench_analytics.py                 # 10M events, ~1000 calls
    python bench/bench_analytics.py --events 1000000 --keep /tmp/bench-store.db

Generates realistic calls (caller audio every 20 ms for the whole call, bot audio
in 40 ms chunks while the bot speaks, dialogue, tool calls, FSA transitions,
barge-ins), interleaved by time in waves of concurrent calls, and writes them as
the store's rows (rows built with the real mapper's topic and msgspec state)
directly into the SQLite store file in big transactions.  Then it measures
``sync`` (events/s), the ``report`` queries, and a re-sync with nothing new.
"""

from __future__ import annotations

import argparse
import heapq
import os
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterator

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fastagent import events as ev  # noqa: E402
from fastagent.analytics_cli import REPORT_SECTIONS  # noqa: E402
from fastagent.store import open_store  # noqa: E402
from projections import analytics  # noqa: E402

T0 = 1_767_225_600_000_000  # 2026-01-01 UTC, in microseconds
AGENTS = ("banking", "insurance", "default")
TOOLS = (("lookup_customer", 0.05), ("replace_card", 0.15), ("check_balance", 0.02))
FSA_STATES = ("identify", "verify", "choose_card", "confirm", "done")


def call_events(idx: int, seconds: float, rnd: random.Random) -> list[tuple[int, ev.Event]]:
    """One call's events as (at, event) in time order, seq assigned after merging audio."""
    cid = f"call-{idx:06d}"
    start = T0 + idx * 2_000_000 + rnd.randrange(1_000_000)
    end = start + int(seconds * 1e6)
    out: list[tuple[int, object]] = []  # (at, factory kwargs) pairs resolved below

    def add(at: int, cls: type, **kw: object) -> None:
        out.append((at, (cls, kw)))

    agent = AGENTS[idx % len(AGENTS)]
    add(start, ev.SessionInitiated, config=ev.CallConfig(agent=agent), caller=f"+1555{idx:07d}")
    add(start + 1000, ev.SessionAccepted, media_format="raw/mulaw", model_format="audio/pcmu")
    add(start + 2000, ev.CallStarted, caller=f"+1555{idx:07d}", callee="+15550199")
    add(start + 3000, ev.ModelConfigured, instructions="You are a helpful bank agent.")
    bot_chunks: list[tuple[int, str, str, int]] = []
    t = start + 10_000
    r = 0

    def respond(t: int, talk_s: float, barge: bool) -> int:
        nonlocal r
        r += 1
        rid, iid = f"resp_{idx}_{r}", f"item_{idx}_{r}"
        add(t, ev.ResponseStarted, response_id=rid)
        add(
            t + 1,
            ev.PlaybackStarted,
            stream_id=f"s{r}",
            response_id=rid,
            item_id=iid,
            fmt="raw/mulaw",
        )
        n = max(1, int(talk_s / 0.04))
        if barge:
            n = max(1, n // 2)
        for k in range(n):
            bot_chunks.append((t + 2 + k * 40_000, rid, iid, k))
        t_end = t + n * 40_000
        if barge:
            add(t_end, ev.SpeechStarted, item_id=f"u{r}", audio_start_ms=0)
            add(
                t_end + 1,
                ev.PlaybackStopped,
                stream_id=f"s{r}",
                reason="barge_in",
                played_ms=n * 40,
            )
            add(t_end + 2, ev.TruncateRequested, item_id=iid, audio_end_ms=n * 40)
        else:
            add(t_end, ev.PlaybackStopped, stream_id=f"s{r}", reason="done", played_ms=n * 40)
        add(
            t_end + 3,
            ev.Transcript,
            role="assistant",
            item_id=iid,
            text="Sure, let me help.",
            response_id=rid,
        )
        usage = ev.Usage(input_tokens=900 + r * 50, output_tokens=120, total_tokens=1020 + r * 50)
        add(
            t_end + 4,
            ev.ResponseDone,
            response_id=rid,
            status="cancelled" if barge else "completed",
            usage=usage,
        )
        return t_end + 5

    t = respond(t, 2.5, False)
    fsa_started = False
    state_i = 0
    finish = rnd.random() < 0.7
    while t < end - 8_000_000:
        t += int(rnd.uniform(0.3, 1.0) * 1e6)
        add(t, ev.SpeechStarted, item_id=f"u{t}", audio_start_ms=0)
        t += int(rnd.uniform(1.0, 4.0) * 1e6)
        add(t, ev.SpeechStopped, item_id=f"u{t}", audio_end_ms=0)
        add(
            t + 1,
            ev.Transcript,
            role="user",
            item_id=f"u{t}",
            text="I lost my card, can you help me?",
        )
        t += int(rnd.lognormvariate(-0.6, 0.35) * 1e6)  # response latency ~ 550 ms
        if not fsa_started:
            add(
                t,
                ev.FsaStarted,
                fsa="card_replacement",
                state=FSA_STATES[0],
                trigger="start_card_replacement",
            )
            fsa_started = True
        elif state_i < len(FSA_STATES) - 2 and (finish or rnd.random() < 0.6):
            add(
                t,
                ev.FsaTransition,
                fsa="card_replacement",
                source=FSA_STATES[state_i],
                target=FSA_STATES[state_i + 1],
                trigger="next",
                reason="caller answered",
            )
            state_i += 1
        if rnd.random() < 0.3:
            name, err = TOOLS[rnd.randrange(len(TOOLS))]
            ok = rnd.random() >= err
            tcid = f"fc_{idx}_{t}"
            add(
                t,
                ev.FunctionCallDispatched,
                tool_call_id=tcid,
                name=name,
                arguments='{"customer": 42}',
                server="bank",
            )
            t += int(rnd.uniform(0.05, 0.4) * 1e6)
            add(
                t,
                ev.ToolResult,
                tool_call_id=tcid,
                name=name,
                ok=ok,
                error="" if ok else "timeout",
                output="{}",
                duration_us=int(rnd.uniform(0.05, 0.4) * 1e6),
            )
        t = respond(t, rnd.uniform(1.5, 6.0), rnd.random() < 0.1)
    if fsa_started and finish:
        add(
            t,
            ev.FsaTransition,
            fsa="card_replacement",
            source=FSA_STATES[state_i],
            target="done",
            trigger="confirmed",
            reason="caller confirmed",
        )
        add(t + 1, ev.FsaFinished, fsa="card_replacement", state="done", outcome="completed")
    end = max(end, t + 100_000)
    add(end, ev.SessionEnded, reason_code="client-disconnected")
    add(
        end + 1,
        ev.CallEnded,
        reason="caller hung up",
        outcome="completed" if finish else "abandoned",
    )

    # Merge dialogue, bot audio and continuous caller audio by time; assign seq.
    caller = ((start + k * 20_000, k) for k in range((end - start) // 20_000))
    stream = heapq.merge(
        ((a, 0, spec) for a, spec in out),
        ((a, 1, (rid, iid, k)) for a, rid, iid, k in sorted(bot_chunks)),
        ((a, 2, k) for a, k in caller),
        key=lambda x: (x[0], x[1]),
    )
    result: list[tuple[int, ev.Event]] = []
    for seq, (at, kind, spec) in enumerate(stream, 1):
        if kind == 2:
            e: ev.Event = ev.CallerAudio(
                call_id=cid,
                seq=seq,
                at=at,
                chunk=spec,
                nbytes=160,
                duration_us=20_000,
                fmt="raw/mulaw",
            )
        elif kind == 1:
            rid, iid, k = spec
            e = ev.BotAudio(
                call_id=cid,
                seq=seq,
                at=at,
                response_id=rid,
                item_id=iid,
                chunk=k,
                nbytes=320,
                duration_us=40_000,
                fmt="raw/mulaw",
            )
        else:
            cls, kw = spec
            e = cls(call_id=cid, seq=seq, at=at, **kw)
        result.append((at, e))
    return result


def generate(path: str, total: int, calls: int, wave: int = 50, seed: int = 7) -> int:
    """Write about ``total`` events of ``calls`` calls into the SQLite store at ``path``."""
    open_store(path).close()  # let the store create its table
    db = sqlite3.connect(path)
    db.execute("PRAGMA synchronous=OFF")
    rnd = random.Random(seed)
    seconds = total / calls * 0.016  # ~62 events per second of call: --events 10M makes ~10M
    written = 0
    enc = ev.encode
    for w in range(0, calls, wave):
        per_call = [
            call_events(i, seconds * rnd.uniform(0.6, 1.4), rnd)
            for i in range(w, min(calls, w + wave))
        ]
        merged: Iterator[tuple[int, ev.Event]] = heapq.merge(*per_call, key=lambda x: x[0])
        rows = [(e.call_id, e.seq, ev.topic_of(e), enc(e)) for _, e in merged]
        db.executemany("INSERT INTO stored_events VALUES (?, ?, ?, ?)", rows)
        db.commit()
        written += len(rows)
        print(f"  generated {written:,} events ({w + wave} calls)", file=sys.stderr, end="\r")
    print(file=sys.stderr)
    db.close()
    return written


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--calls", type=int, default=1000)
    ap.add_argument("--keep", help="store path to reuse/keep (generated if missing)")
    ap.add_argument("--batch", type=int, default=analytics.DEFAULT_BATCH)
    ap.add_argument(
        "--api",
        action="store_true",
        help="read through store.read_all_raw, not the SQLite fast path",
    )
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench-analytics-")
    store = args.keep or os.path.join(tmp, "store.db")
    if not os.path.exists(store):
        t = time.perf_counter()
        n = generate(store, args.events, args.calls)
        print(f"generated {n:,} events in {time.perf_counter() - t:.1f} s -> {store}")
    db = os.path.join(tmp, "analytics.duckdb")

    with analytics.opened(store, db, fast=not args.api) as (source, con):
        total = source.max_position()
        cpu = time.process_time()
        res = analytics.sync(source, con, batch_size=args.batch)
        cpu = time.process_time() - cpu  # all threads: steadier than wall time on a busy host
        print(
            f"sync: {res.read:,} events in {res.seconds:.2f} s = "
            f"{res.read / res.seconds:,.0f} ev/s, CPU {cpu:.2f} s "
            f"({res.batches} batches, source {source.description})"
        )
        for line in res.skipped_lines():
            print("  " + line)
        t = time.perf_counter()
        for _title, sql in REPORT_SECTIONS:
            con.execute(sql).fetchall()
        print(f"report queries: {(time.perf_counter() - t) * 1000:.0f} ms")
        assert res.position == total
    t = time.perf_counter()
    with analytics.opened(store, db, fast=not args.api) as (source, con):
        res = analytics.sync(source, con)
    print(
        f"re-sync with nothing new (open both + check): {(time.perf_counter() - t) * 1000:.1f} ms"
    )
    print(f"analytics file: {os.path.getsize(db) / 1e6:.1f} MB")
    shutil.rmtree(tmp)  # the analytics file, and the store unless --keep


if __name__ == "__main__":
    main()
