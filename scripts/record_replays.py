"""Record every demo scenario as a portable replay file in replays/.

    python scripts/record_replays.py [--out replays] [--only banking ...]

Each scenario in fastagent/scenarios/ is played end to end by ``run_demo`` (real
loopback sockets, fake model, simulated caller, real stdio backends) into a
temporary store, with fresh sample databases per scenario so a recording never
depends on the one before it; the call is then exported with ``write_recording``
to ``<out>/<scenario file name>.jsonl``.  A call that does not end, or does not
replay identically, is reported and not written.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from importlib import resources
from pathlib import Path

from fastagent import events as ev
from fastagent.replay import replay, write_recording
from fastagent.service_cli import run_demo
from fastagent.store import open_store

SCENARIOS = Path(str(resources.files("fastagent") / "scenarios"))


def record(scenario: Path, out: Path, work: Path) -> str:
    """Play ``scenario`` and write its recording; return a one-line summary."""
    data = work / f"data-{scenario.stem}"
    data.mkdir()
    os.environ["FASTAGENT_DATA_DIR"] = str(data)  # the stdio backends inherit it
    store = str(work / f"{scenario.stem}.db")
    call_id = asyncio.run(run_demo(None, scenario, store, show=False))
    with open_store(store) as s:
        events = s.read_call(call_id)
    if not events or not isinstance(events[-1], ev.CallEnded):
        raise SystemExit(f"error: {scenario.name}: the call did not end")
    result = replay(events)
    if not result.identical:
        raise SystemExit(f"error: {scenario.name}: does not replay identically")
    path = out / f"{scenario.stem}.jsonl"
    write_recording(events, path)
    return f"{path}: {len(events)} events, {path.stat().st_size // 1024} KiB"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("replays"))
    parser.add_argument("--only", nargs="*", default=[], help="scenario names (file stems)")
    args = parser.parse_args(argv)
    scenarios = sorted(SCENARIOS.glob("*.json"))
    if args.only:
        unknown = set(args.only) - {p.stem for p in scenarios}
        if unknown:
            print(f"error: unknown scenario(s): {', '.join(sorted(unknown))}", file=sys.stderr)
            return 2
        scenarios = [p for p in scenarios if p.stem in args.only]
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fastagent-record-") as tmp:
        for scenario in scenarios:
            print(record(scenario, args.out, Path(tmp)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
