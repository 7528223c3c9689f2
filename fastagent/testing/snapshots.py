"""Recorded calls as regression tests: what *today's* core decides for them, snapshotted.

:func:`decisions_view` feeds a recording's inputs through today's core
(:func:`redecide`) and returns what it decides, with the read models built from
those decisions: so a snapshot test fails exactly when behaviour changes, and
its diff shows every decision that changed, not only the first (replay reports
the first, with its position).

The view is stable across re-recordings of the same conversation:

* no wall-clock time, no ``seq`` (how many audio chunks came between two
  decisions; the list order remains), no call id;
* a loopback port in a message (the fake model's, chosen by the OS) reads
  ``<port>``;
* ids are renamed ``<name-1>``, ``<name-2>`` in order of first appearance, so
  cross-references survive;
* how much of the bot's audio the caller heard before barging in reads
  ``<heard>`` (it depends on the caller's timing; replay still compares it);
* **a field whose value is its declared default is left out** (nested values
  too).  Adding a field with a default to an event -- which needs no new
  version (docs/events.md) -- therefore changes no snapshot while the core
  leaves it at its default; the first call that sets it shows up as a diff.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec

from fastagent import events as ev
from fastagent.admission import engine_for
from fastagent.agent import Agent
from fastagent.core import Engine
from fastagent.replay import builtin_agent, read_recording, replay
from projections import live

lean = ev.lean  # kept here for users of this module

_ID_FIELDS = {
    "response_id": "response",
    "item_id": "item",
    "tool_call_id": "call",
    "idempotency_key": "key",
    "stream_id": "stream",
}
_ACTION = re.compile(r"^act-\d+$")  # an FSA action's call id: "act-<seq>"
# A loopback address in an error message: its port is the OS's choice per run.
_LOOPBACK = re.compile(r"(127\.0\.0\.1'?,? ?:?)\d+")
_HEARD = "<heard>"  # ms heard before a barge-in: set by the caller's timing
_NOT_IN_VIEW = ("call_id", "seq", "at")
# Live-state fields that count audio or time: they vary between re-recordings.
_TIMING = ("call_id", "started_at", "ended_at", "events", "last_seq", "transcript")
_TIMING += ("caller_audio_ms", "bot_audio_ms")


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
    """The stable, comparable view of ``events``: decisions, transcript, live state.

    It shows whatever decisions ``events`` holds; :func:`decisions_view` is the
    one that snapshots today's core.
    """
    ids = _Ids()
    trail = []
    for e in events:
        if not isinstance(e, ev.Decision):
            continue
        row = lean(e)
        for name in _NOT_IN_VIEW:
            row.pop(name, None)
        for name, kind in _ID_FIELDS.items():
            if name in row:
                value = str(row[name])
                row[name] = ids("action" if _ACTION.match(value) else kind, value)
        for name in ("message", "error", "reason"):
            value = row.get(name)
            if isinstance(value, str) and "127.0.0.1" in value:
                row[name] = _LOOPBACK.sub(r"\1<port>", value)
        if row["type"] == "TruncateRequested":
            row["audio_end_ms"] = _HEARD
        elif row["type"] == "PlaybackStopped" and row.get("reason") == "barge_in":
            row["played_ms"] = _HEARD
        elif row["type"] == "ItemHeard":  # GPT-Live's record of a barge-in
            row["heard_ms"] = _HEARD
        trail.append(row)
    transcript = [{"role": e.role, "text": e.text} for e in events if isinstance(e, ev.Transcript)]
    state = lean(live.fold(events))
    for name in _TIMING:
        state.pop(name, None)
    if "pending_tools" in state:
        state["pending_tools"] = {ids("call", k): v for k, v in state["pending_tools"].items()}
    return {"decisions": trail, "transcript": transcript, "live": state}


def decisions_view(
    events: Sequence[ev.Event], agents: Callable[[str], Agent] = builtin_agent
) -> dict[str, Any]:
    """The snapshot view of what today's core decides for ``events``' inputs,
    plus whether that is what was recorded (``identical``) and, if not, the
    first divergence (``divergence``, as :meth:`Divergence.to_dict`)."""
    result = replay(events, agents=agents)
    view = snapshot_view(redecide(events, agents))
    view["identical"] = result.identical
    view["divergence"] = result.divergence.to_dict() if result.divergence else None
    return view


def replay_for_snapshot(
    path: str | Path, agents: Callable[[str], Agent] = builtin_agent
) -> dict[str, Any]:
    """Read a recording file and return its :func:`decisions_view`.

    Every recorded input goes through today's core, past any divergence, so an
    intended change to an agent or the core shows up as a reviewable snapshot
    diff (accept it with ``--snapshot-update``, then re-record the file).
    """
    return decisions_view(read_recording(path), agents)


def redecide(
    events: Sequence[ev.Event], agents: Callable[[str], Agent] = builtin_agent
) -> list[ev.Event]:
    """The recorded inputs, each followed by what today's core decides for it."""
    engine = Engine(events[0].call_id if events else "")
    out: list[ev.Event] = []
    for e in events:
        if isinstance(e, ev.Input):
            # Renumber so the engine sees a gapless log whatever it decided before.
            e = msgspec.structs.replace(e, seq=engine.view.next_seq)
            if isinstance(e, ev.SessionInitiated):
                engine = engine_for(e, agents)  # agent and formats, as the shell settles them
            out.append(e)
            out.extend(engine.handle(e))
    return out


def recordings(directory: str | Path) -> list[Path]:
    """The recording files in ``directory`` (``*.jsonl``), sorted: for parametrize."""
    return sorted(Path(directory).glob("*.jsonl"))
