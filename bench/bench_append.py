"""Sustained append throughput: EventStore (group commit) vs the bare eventsourcing recorder.

Usage: python bench/bench_append.py [--events 300000] [--calls 50] [--batch 4] [--pg URL]

Both runs use a fresh store (SQLite file in a temporary directory, or a fresh
PostgreSQL schema that is dropped afterwards) in the SAME process, so the ratio
is meaningful.  "ours" = the live-service path: ``EventStore.append`` in small
batches (interleaved calls, as the audio hot path produces them), group commit
by the flusher thread, then ``flush()`` at the end.  "bare" = pre-built
StoredEvent rows inserted with the recorder's ``insert_events`` in batches of 1000.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from fastagent import events as ev  # noqa: E402
from fastagent.store import EventStore, open_store  # noqa: E402

T0 = 1_767_225_600_000_000  # a fixed epoch (µs): no wall clock in the data


def make_events(n: int, calls: int) -> list[ev.Event]:
    """Realistic audio boundaries: 20 ms caller chunks, bot chunks in responses, interleaved."""
    out: list[ev.Event] = []
    seq = [0] * calls
    for i in range(n):
        c = i % calls
        seq[c] += 1
        s = seq[c]
        call_id = f"call-{c:04d}-7f3a9c2e"
        at = T0 + c * 1_000 + s * 10_000
        if s % 3:
            out.append(
                ev.CallerAudio(
                    call_id=call_id,
                    seq=s,
                    at=at,
                    chunk=s,
                    nbytes=160,
                    duration_us=20_000,
                    fmt="audio/pcmu",
                )
            )
        else:
            out.append(
                ev.BotAudio(
                    call_id=call_id,
                    seq=s,
                    at=at,
                    response_id=f"resp_{s // 300:05d}",
                    item_id=f"item_{s // 300:05d}",
                    chunk=s // 3,
                    nbytes=4_800,
                    duration_us=100_000,
                    fmt="audio/pcmu",
                )
            )
    return out


@contextmanager
def fresh_url(pg: str | None, tag: str) -> Iterator[str]:
    if not pg:
        with tempfile.TemporaryDirectory() as d:
            yield os.path.join(d, f"{tag}.db")
        return
    import psycopg
    from psycopg import sql

    schema = f"bench_{tag}_{uuid.uuid4().hex[:8]}"
    sep = "&" if "?" in pg else "?"
    try:
        yield f"{pg}{sep}schema={schema}"
    finally:
        base = pg.split("?")[0]
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def run_ours(url: str, evs: list[ev.Event], batch: int) -> tuple[float, EventStore]:
    store = open_store(url)
    append = store.append
    t = time.perf_counter()
    for i in range(0, len(evs), batch):
        append(evs[i : i + batch])
    store.flush()
    return time.perf_counter() - t, store


def run_bare(url: str, evs: list[ev.Event]) -> float:
    store = open_store(url)
    recorder = store._recorder  # the stock eventsourcing application recorder
    rows = store._mapper.to_stored_events(evs)  # pre-built: not timed
    t = time.perf_counter()
    for i in range(0, len(rows), 1000):
        recorder.insert_events(rows[i : i + 1000])
    dt = time.perf_counter() - t
    store.close()
    return dt


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=300_000)
    p.add_argument("--calls", type=int, default=50)
    p.add_argument("--batch", type=int, default=4, help="events per append() call")
    p.add_argument("--pg", metavar="URL", help="PostgreSQL URL instead of an SQLite file")
    a = p.parse_args()
    if a.events < 1 or a.calls < 1 or a.batch < 1:
        print("error: --events, --calls and --batch must be positive", file=sys.stderr)
        return 2
    evs = make_events(a.events, a.calls)
    backend = "postgresql" if a.pg else "sqlite file"
    try:
        with fresh_url(a.pg, "bare") as url:
            bare = run_bare(url, evs)
        with fresh_url(a.pg, "ours") as url:
            ours, store = run_ours(url, evs, a.batch)
            stored = store.max_position()
            store.close()
    except Exception as exc:  # one line, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if stored < a.events:
        print(f"error: only {stored} of {a.events} events stored", file=sys.stderr)
        return 1
    n = a.events
    print(f"{n:,} events, {a.calls} calls, backend: {backend}")
    print(f"{'path':<52} {'seconds':>8} {'events/s':>10}")
    label = f"EventStore.append (batch {a.batch}) + group commit"
    print(f"{label:<52} {ours:8.2f} {n / ours:10,.0f}")
    print(f"{'bare recorder.insert_events (batch 1000)':<52} {bare:8.2f} {n / bare:10,.0f}")
    print(f"{'ratio ours / bare':<52} {'':>8} {bare / ours:10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
