"""Recorded calls as regression tests: replay them and snapshot what they decided.

A snapshot view of a call holds its decision trail and transcript with no
wall-clock time and no random id: ids are renamed ``<name-1>``, ``<name-2>`` in
order of first appearance, so cross-references survive and re-recording the
same conversation gives the same snapshot.  What depends on timing is left out
too: ``seq`` (how many audio chunks came between two decisions; the list order
remains) and how much of the bot's audio the caller heard before barging in
(``<heard>``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec

from fastagent import events as ev
from fastagent.agent import Agent
from fastagent.agents import get_agent
from fastagent.core import Engine
from fastagent.replay import read_recording, replay
from projections.trail import trail_rows

_ID_FIELDS = {
    "response_id": "response",
    "item_id": "item",
    "tool_call_id": "call",
    "idempotency_key": "key",
    "stream_id": "stream",
}
_ACTION = re.compile(r"^act-\d+$")  # an FSA action's call id: "act-<seq>"
_HEARD = "<heard>"  # ms heard before a barge-in: set by the caller's timing


class _Ids:
    def __init__(self) -> None:
        self.seen: dict[tuple[str, str], str] = {}
        self.count: dict[str, int] = {}

    def __call__(self, kind: str, value: str) -> str:
        if not value:
            return value
        key = (kind, value)
        if key not in self.seen:
            self.count[kind] = self.count.get(kind, 0) + 1
            self.seen[key] = f"<{kind}-{self.count[kind]}>"
        return self.seen[key]


def snapshot_view(events: Sequence[ev.Event]) -> dict[str, Any]:
    """The stable, comparable view of a call: decisions and transcript."""
    ids = _Ids()
    trail = []
    for row in trail_rows(events):
        del row["seq"]
        for name, kind in _ID_FIELDS.items():
            if name in row:
                value = str(row[name])
                row[name] = ids("action" if _ACTION.match(value) else kind, value)
        if row["type"] == "TruncateRequested":
            row["audio_end_ms"] = _HEARD
        elif row["type"] == "PlaybackStopped" and row["reason"] == "barge_in":
            row["played_ms"] = _HEARD
        trail.append(row)
    transcript = [{"role": e.role, "text": e.text} for e in events if isinstance(e, ev.Transcript)]
    return {"decisions": trail, "transcript": transcript}


def replay_for_snapshot(
    path: str | Path, agents: Callable[[str], Agent] = get_agent
) -> dict[str, Any]:
    """Replay a recording file; the view plus whether the replay was identical.

    The view's decisions are today's: every recorded input goes through today's
    core, past any divergence, so an intended change to an agent or the core
    shows up as a reviewable snapshot diff (accept it with --snapshot-update).
    """
    events = read_recording(path)
    result = replay(events, agents=agents)
    view = snapshot_view(redecide(events, agents))
    view["identical"] = result.identical
    view["divergence"] = result.divergence.to_dict() if result.divergence else None
    return view


def redecide(
    events: Sequence[ev.Event], agents: Callable[[str], Agent] = get_agent
) -> list[ev.Event]:
    """The recorded inputs, each followed by what today's core decides for it."""
    engine = Engine(events[0].call_id if events else "", agents=agents)
    out: list[ev.Event] = []
    for e in events:
        if isinstance(e, ev.Input):
            # Renumber so the engine sees a gapless log whatever it decided before.
            e = msgspec.structs.replace(e, seq=engine.next_seq)
            out.append(e)
            out.extend(engine.handle(e))
    return out


def recordings(directory: str | Path) -> list[Path]:
    """The recording files in ``directory`` (``*.jsonl``), sorted: for parametrize."""
    return sorted(Path(directory).glob("*.jsonl"))
