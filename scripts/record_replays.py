"""Record every demo scenario and every scripted path as a replay file in replays/.

    python scripts/record_replays.py [--out replays] [--only banking path-grace-expired ...]

Each scenario in fastagent/examples/scenarios/ is played end to end by ``run_demo`` (real
loopback sockets, fake model, simulated caller, real stdio backends) into a
temporary store, with fresh sample databases per scenario so a recording never
depends on the one before it; the call is then exported with ``write_recording``
to ``<out>/<scenario file name>.jsonl``.

Each path of ``fastagent.testing.paths`` (socket drops, resumes on another
instance, model drops, failing and slow tools, ... -- what a scenario cannot
make happen) is scripted input by input through today's core and written to
``<out>/path-<name>.jsonl``; those files are byte-identical on every run.

A call that does not end, or does not replay identically, is reported and not
written.
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
from fastagent.testing.paths import paths
from fastagent.testing.scenario import load_scenario

SCENARIOS = Path(str(resources.files("fastagent.examples") / "scenarios"))


ATTEMPTS = 6  # a barge-in is a race with the bot's audio: a loaded machine may miss it


def barge_ins(events: list[ev.Event]) -> int:
    """How many times the caller spoke while the bot's stream still came in.

    Realtime: a PlaybackStopped ``barge_in`` each.  GPT-Live stops by itself and
    the engine stops playback only once its output stopped: a SpeechStarted while
    a play stream is open (docs/models.md).
    """
    if not any(isinstance(e, ev.ModelSessionStarted) for e in events):
        return sum(isinstance(e, ev.PlaybackStopped) and e.reason == "barge_in" for e in events)
    cut, playing = 0, False
    for e in events:
        if isinstance(e, ev.PlaybackStarted):
            playing = True
        elif isinstance(e, ev.PlaybackStopped):
            playing = False
        elif isinstance(e, ev.SpeechStarted) and playing:
            cut += 1
    return cut


def record(scenario: Path, out: Path, work: Path) -> str:
    """Play ``scenario`` and write its recording; return a one-line summary.

    The scenario's barge-ins (``barge_in_after_ms``) must all have cut the bot's
    stream while it still came in (a PlaybackStopped ``barge_in`` each); on a busy
    machine the caller may speak only after the stream ended, so the call is
    played again (up to ATTEMPTS).
    """
    wanted = sum(t.barge_in_after_ms is not None for t in load_scenario(scenario).turns)
    cut = 0
    for attempt in range(1, ATTEMPTS + 1):
        data = work / f"data-{scenario.stem}-{attempt}"
        data.mkdir()
        os.environ["FASTAGENT_DATA_DIR"] = str(data)  # the stdio backends inherit it
        store = str(work / f"{scenario.stem}-{attempt}.db")
        call_id = asyncio.run(run_demo(None, scenario, store, show=False))
        with open_store(store) as s:
            events = s.read_call(call_id)
        if not events or not isinstance(events[-1], ev.CallEnded):
            raise SystemExit(f"error: {scenario.name}: the call did not end")
        result = replay(events)
        if not result.identical:
            raise SystemExit(f"error: {scenario.name}: does not replay identically")
        cut = barge_ins(events)
        if cut == wanted:
            break
        print(f"{scenario.name}: {cut} of {wanted} barge-ins cut the bot; again", flush=True)
    else:
        raise SystemExit(f"error: {scenario.name}: {cut} of {wanted} barge-ins after {ATTEMPTS}")
    path = out / f"{scenario.stem}.jsonl"
    write_recording(events, path)
    return f"{path}: {len(events)} events, {path.stat().st_size // 1024} KiB"


def record_path(name: str, out: Path) -> str:
    """Script path ``name`` through today's core and write its recording."""
    events = paths()[name]().log
    if not isinstance(events[-1], ev.CallEnded):
        raise SystemExit(f"error: path {name}: the call did not end")
    if not replay(events).identical:
        raise SystemExit(f"error: path {name}: does not replay identically")
    path = out / f"path-{name}.jsonl"
    write_recording(events, path)
    return f"{path}: {len(events)} events, {path.stat().st_size // 1024} KiB (scripted)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("replays"))
    parser.add_argument(
        "--only", nargs="*", default=[], help="recording names (file stems, path-... for paths)"
    )
    args = parser.parse_args(argv)
    scenarios = sorted(SCENARIOS.glob("*.json"))
    scripted = sorted(paths())
    if args.only:
        known = {p.stem for p in scenarios} | {f"path-{n}" for n in scripted}
        unknown = set(args.only) - known
        if unknown:
            print(f"error: unknown recording(s): {', '.join(sorted(unknown))}", file=sys.stderr)
            return 2
        scenarios = [p for p in scenarios if p.stem in args.only]
        scripted = [n for n in scripted if f"path-{n}" in args.only]
    args.out.mkdir(parents=True, exist_ok=True)
    for name in scripted:
        print(record_path(name, args.out), flush=True)
    with tempfile.TemporaryDirectory(prefix="fastagent-record-") as tmp:
        for scenario in scenarios:
            print(record(scenario, args.out, Path(tmp)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
