"""Replay benchmark: a ten-minute call (~60,000 events) read from the store and replayed.

    python bench/bench_replay.py [--events 60000] [--store PATH]

Prints the time to read the call from a SQLite store, to replay it with the
divergence check, and both together (target: at most 0.5 s), plus the
engine's memory use after the call (it holds no audio and no growing lists).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from fastagent.replay import replay
from fastagent.store import open_store
from fastagent.testing.synth import synthetic_call


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=60_000)
    ap.add_argument("--store", default=None)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    log = synthetic_call("bench-call", target_events=args.events)
    path = args.store or str(Path(tempfile.mkdtemp()) / "bench.db")
    store = open_store(path)
    store.append(log)
    store.flush()
    reads, replays, totals = [], [], []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        events = store.read_call("bench-call")
        t1 = time.perf_counter()
        result = replay(events)
        t2 = time.perf_counter()
        assert result.identical, result.divergence
        reads.append(t1 - t0)
        replays.append(t2 - t1)
        totals.append(t2 - t0)
    store.close()
    tracemalloc.start()
    result = replay(log)
    engine_bytes = _deep_size(result.engine)
    tracemalloc.stop()
    print(f"events in call:          {len(log):>9,}")
    print(f"read from SQLite:        {min(reads) * 1000:>9.1f} ms (best of {args.repeat})")
    print(f"replay + divergence chk: {min(replays) * 1000:>9.1f} ms")
    print(f"read + replay:           {min(totals) * 1000:>9.1f} ms  (target <= 500 ms)")
    print(f"engine state after call: {engine_bytes:>9,} bytes")
    sys.exit(0 if min(totals) <= 0.5 else 1)


def _deep_size(obj: object, seen: set[int] | None = None) -> int:
    seen = seen if seen is not None else set()
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    size = sys.getsizeof(obj)
    if isinstance(obj, dict):
        size += sum(_deep_size(k, seen) + _deep_size(v, seen) for k, v in obj.items())
    elif isinstance(obj, list | tuple | set):
        size += sum(_deep_size(x, seen) for x in obj)
    elif hasattr(obj, "__dict__"):
        size += _deep_size(vars(obj), seen)
    elif hasattr(obj, "__slots__"):
        size += sum(_deep_size(getattr(obj, s), seen) for s in obj.__slots__ if hasattr(obj, s))
    return size


if __name__ == "__main__":
    main()
