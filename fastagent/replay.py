"""Deterministic replay: feed a recorded call's inputs through today's core.

The log holds each input followed by the decisions the engine made for it.
Replay hands every input to a fresh :class:`~fastagent.core.Engine` and compares
what it decides now with what was recorded, decision by decision.  The first
difference is a divergence, reported with its position, the recorded and the
new decision, and the inputs just before it (Temporal's non-determinism error
is the model).  Nothing external is called: tool results, model output and
times all come from the log.

Recordings travel as one portable file (:func:`write_recording`): a JSON-lines
file whose first line is a versioned header and whose other lines are the
stored events (topic + body), so old recordings upcast like stored events.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from fastagent import events as ev
from fastagent.agent import Agent
from fastagent.agents import get_agent
from fastagent.core import Engine

RECORDING_FORMAT = "fastagent-recording"
RECORDING_VERSION = 1
CONTEXT_INPUTS = 5  # inputs shown before a divergence


class RecordingError(ValueError):
    """A recording file that cannot be read."""


@dataclass
class Divergence:
    position: int  # seq of the first decision that differs
    recorded: ev.Decision | None
    new: ev.Decision | None
    inputs_before: list[ev.Input]

    def to_dict(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "recorded": ev.to_builtins(self.recorded) if self.recorded else None,
            "new": ev.to_builtins(self.new) if self.new else None,
            "inputs_before": [ev.to_builtins(i) for i in self.inputs_before],
        }


@dataclass
class ReplayResult:
    call_id: str
    events: int
    inputs: int
    decisions: int
    divergence: Divergence | None = None
    engine: Engine | None = field(default=None, repr=False)

    @property
    def identical(self) -> bool:
        return self.divergence is None


def replay(
    events: Sequence[ev.Event],
    agents: Callable[[str], Agent] = get_agent,
    *,
    engine: Engine | None = None,
) -> ReplayResult:
    """Replay ``events`` (one call, in seq order) and find the first divergence.

    ``engine``: go on from an engine restored from a snapshot (``events`` is then
    the log after it) instead of a fresh one.
    """
    call_id = engine.call_id if engine is not None else (events[0].call_id if events else "")
    if engine is None:
        engine = Engine(call_id, agents=agents)
    expected: deque[ev.Decision] = deque()
    recent: deque[ev.Input] = deque(maxlen=CONTEXT_INPUTS)
    inputs = decisions = 0
    handle = engine.handle
    for e in events:
        if isinstance(e, ev.Input):
            if expected:  # the core decided more than was recorded
                pos = expected[0].seq
                return _diverged(call_id, events, inputs, decisions, pos, None, expected, recent)
            inputs += 1
            recent.append(e)
            expected.extend(handle(e))
        else:
            decisions += 1
            new = expected.popleft() if expected else None
            if new != e:
                return _diverged(call_id, events, inputs, decisions, e.seq, e, [new], recent)
    if expected:
        first = expected[0]
        return _diverged(call_id, events, inputs, decisions, first.seq, None, expected, recent)
    return ReplayResult(call_id, len(events), inputs, decisions, engine=engine)


def _diverged(
    call_id: str,
    events: Sequence[ev.Event],
    inputs: int,
    decisions: int,
    position: int,
    recorded: ev.Decision | None,
    new: Any,
    recent: deque[ev.Input],
) -> ReplayResult:
    first_new = next(iter(new), None)
    div = Divergence(position, recorded, first_new, list(recent))
    return ReplayResult(call_id, len(events), inputs, decisions, divergence=div)


# --------------------------------------------------------------- recordings


class _Header(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    format: str
    version: int
    call_id: str
    events: int


class _Line(msgspec.Struct, forbid_unknown_fields=True):
    topic: str
    event: msgspec.Raw


class _Tagged(msgspec.Struct):
    """Only the ``type`` of an event body (the rest is skipped unparsed)."""

    type: str = ""


_header_decoder = msgspec.json.Decoder(_Header)
_line_decoder = msgspec.json.Decoder(_Line)
_tag_decoder = msgspec.json.Decoder(_Tagged)
_encoder = msgspec.json.Encoder()


def write_recording(events: Sequence[ev.Event], path: str | Path) -> None:
    if not events:
        raise RecordingError("nothing to export: the call has no events")
    header = _Header(
        format=RECORDING_FORMAT,
        version=RECORDING_VERSION,
        call_id=events[0].call_id,
        events=len(events),
    )
    with open(path, "wb") as out:
        out.write(_encoder.encode(header) + b"\n")
        for e in events:
            line = _Line(ev.topic_of(e), msgspec.Raw(ev.encode(e)))
            out.write(_encoder.encode(line) + b"\n")


def read_recording(path: str | Path) -> list[ev.Event]:
    """Read a recording file strictly; raise :class:`RecordingError` (one line) if it
    is not exactly what :func:`write_recording` writes.

    Strict means: the header and each line hold only their known keys, and every
    event body only the fields its class declares (nested values included) --
    after upcasting, so a field an older version declared and its upcaster
    consumes is fine.  A field this code does not know is an error naming it
    (``Transcript.confidence``): silently dropping it would replay a call that is
    not the one recorded.  Trailing blank lines are allowed; a blank line in the
    middle is not.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise RecordingError(f"cannot read recording {path}: {exc.strerror}") from None
    lines = data.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()  # trailing blank lines: an editor's or a shell's newline
    if not lines:
        raise RecordingError(f"{path}: empty file, not a FastAgent recording")
    try:
        header = _header_decoder.decode(lines[0])
    except msgspec.ValidationError as exc:
        raise RecordingError(f"{path}: not a FastAgent recording (bad header: {exc})") from None
    except msgspec.DecodeError:
        raise RecordingError(f"{path}: not a FastAgent recording (bad header)") from None
    if header.format != RECORDING_FORMAT:
        raise RecordingError(f"{path}: not a FastAgent recording (format {header.format!r})")
    if header.version > RECORDING_VERSION:
        raise RecordingError(
            f"{path}: recording format version {header.version} is newer than this "
            f"FastAgent reads ({RECORDING_VERSION}); upgrade FastAgent"
        )
    if header.events < 1:
        raise RecordingError(f"{path}: recording of call {header.call_id!r} has no events")
    out: list[ev.Event] = []
    for n, raw in enumerate(lines[1:], start=2):
        if not raw.strip():
            raise RecordingError(f"{path}:{n}: blank line inside the recording")
        try:
            line = _line_decoder.decode(raw)
        except msgspec.ValidationError as exc:
            raise RecordingError(f"{path}:{n}: corrupt line ({exc})") from None
        except msgspec.DecodeError:
            raise RecordingError(f"{path}:{n}: corrupt line") from None
        body = bytes(line.event)
        try:
            out.append(ev.decode(line.topic, body))
            tag = _tag_decoder.decode(body).type
        except (ev.EventFormatError, msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise RecordingError(f"{path}:{n}: {exc}") from None
        # Today's version decodes by the body's tag, an old one by the topic: both must
        # agree (an old body without a tag is upcast by its topic alone).
        name = line.topic.partition("/")[0]
        if (tag and tag != name) or type(out[-1]).__name__ != name:
            raise RecordingError(
                f"{path}:{n}: topic {line.topic!r} does not match the event's type {tag!r}"
            )
        unknown = ev.unknown_fields(line.topic, body)
        if unknown:
            raise RecordingError(
                f"{path}:{n}: unknown field {unknown[0]} in a {line.topic} event "
                "(not in this FastAgent's event catalogue)"
            )
    if len(out) != header.events:
        raise RecordingError(f"{path}: truncated ({len(out)} of {header.events} events)")
    for i, e in enumerate(out, start=1):
        if e.seq != i or e.call_id != header.call_id:
            raise RecordingError(f"{path}: event {i} is out of order or from another call")
    return out
