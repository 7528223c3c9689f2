"""Sustained appends to one PostgreSQL store from several instances (processes).

Each process opens its own EventStore (group commit, as ``fastagent serve`` does)
and drives ``--calls`` synthetic calls: every round appends one audio-chunk
boundary event per call through ``EventStore.append``, as fast as it can, for
``--seconds``; then flushes (appends outrun the writers, so the flush at the end
waits for the backlog).  Reported: durable events per second over all
processes (counted in the database), and what a real-time call needs (100
events/s: 50 caller + 50 bot chunks of 20 ms).

    python bench/bench_pg_scale.py --url postgresql://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time
import uuid

from fastagent import events as ev
from fastagent.store import open_store


def worker(url: str, n: int, calls: int, seconds: float, start_at: float, out: mp.Queue) -> None:
    store = open_store(url)
    ids = [f"scale-{n}-{i}-{uuid.uuid4().hex[:6]}" for i in range(calls)]
    seq = [0] * calls
    while time.time() < start_at:
        time.sleep(0.001)
    t0 = time.perf_counter()
    appended = 0
    while time.perf_counter() - t0 < seconds:
        batch = []
        for i, call_id in enumerate(ids):
            seq[i] += 1
            batch.append(
                ev.CallerAudio(
                    call_id=call_id,
                    seq=seq[i],
                    at=1_750_000_000_000_000 + seq[i] * 20_000,
                    chunk=seq[i],
                    nbytes=160,
                    duration_us=20_000,
                    fmt="raw/mulaw",
                )
            )
        store.append(batch)
        appended += len(batch)
        time.sleep(0)  # let the flusher thread take the GIL
    store.flush()
    elapsed = time.perf_counter() - t0
    store.close()
    out.put((appended, elapsed))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/test")
    ap.add_argument("--instances", type=int, default=4)
    ap.add_argument("--calls", type=int, default=50, help="calls per instance")
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    schema = f"bench_scale_{uuid.uuid4().hex[:8]}"
    url = f"{args.url}{'&' if '?' in args.url else '?'}schema={schema}"
    open_store(url).close()  # create schema and table once
    q: mp.Queue = mp.Queue()
    start_at = time.time() + 2.0  # all processes start appending together
    procs = [
        mp.Process(target=worker, args=(url, n, args.calls, args.seconds, start_at, q))
        for n in range(args.instances)
    ]
    for p in procs:
        p.start()
    results = [q.get() for _ in procs]
    for p in procs:
        p.join()
    with open_store(url) as store:
        durable = store.max_position()
        rows = store.select("SELECT COUNT(*) FROM {events}")
    appended = sum(r[0] for r in results)
    wall = max(r[1] for r in results)
    calls = args.instances * args.calls
    rate = appended / wall
    print(
        f"{args.instances} instances x {args.calls} calls, {args.seconds:g} s: "
        f"{appended} events appended, {rows[0][0]} durable (last position {durable})"
    )
    print(
        f"  {rate:,.0f} events/s sustained = {rate / calls:,.0f} events/s per call "
        f"(a real-time call needs ~100: headroom x{rate / calls / 100:.1f}, "
        f"~{rate / 100:,.0f} real-time calls)"
    )
    import psycopg
    from psycopg import sql

    with psycopg.connect(args.url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


if __name__ == "__main__":
    main()
