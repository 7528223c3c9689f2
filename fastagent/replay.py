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

import difflib
import json
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from fastagent import events as ev
from fastagent.admission import engine_for
from fastagent.agent import Agent
from fastagent.agents import UnknownAgent, get_agent
from fastagent.core import Engine
from fastagent.errors import ReplayError

RECORDING_FORMAT = "fastagent-recording"
RECORDING_VERSION = 2  # 2: personal fields may be sealed (header "sealed": true)
CONTEXT_INPUTS = 5  # inputs shown before a divergence


class RecordingError(ReplayError):
    """A recording file that cannot be read."""


def builtin_agent(name: str) -> Agent:
    """An agent of the built-in registry; never imports code (``module:ATTR``) that
    a recording names -- that must come from the command line (:func:`agents_for`)."""
    if ":" in name:
        raise UnknownAgent(
            f"the recording names agent {name!r}: replay never imports code a recording "
            f"names; pass it on the command line: --agent {name}"
        )
    return get_agent(name)


def recorded_agent(events: Sequence[ev.Event]) -> str:
    """The agent name a call's SessionInitiated records ("" if none)."""
    first = events[0] if events else None
    return first.config.agent if isinstance(first, ev.SessionInitiated) else ""


def agents_for(events: Sequence[ev.Event], given: str | None = None) -> Callable[[str], Agent]:
    """The agents to replay ``events`` with: the built-in registry, and ``given``
    (an operator's ``--agent``, which may be ``module:ATTR``) for the agent the
    recording names.  Raises UnknownAgent (one line) if the recording names an
    import path and none is given, or the one given cannot be loaded."""
    name = recorded_agent(events)
    if given is None:
        if ":" in name:
            builtin_agent(name)  # raises, saying how to pass it
        return builtin_agent
    agent = get_agent(given)  # from the command line: may import

    def agents(wanted: str) -> Agent:
        return agent if wanted == name or wanted == given else builtin_agent(wanted)

    return agents


@dataclass
class FieldDiff:
    """One field of the diverging decision: what was recorded and what is decided now.

    ``marked`` is set for long text (instructions, tool output, JSON): only the
    changed words with a few around them, removed words as ``[-old-]`` and added
    ones as ``{+new+}`` (git's word diff), so the change is not buried.
    """

    name: str
    recorded: Any
    new: Any
    marked: str = ""

    def to_dict(self) -> dict[str, Any]:
        out = {"field": self.name, "recorded": self.recorded, "new": self.new}
        if self.marked:
            out["marked"] = self.marked
        return out


@dataclass
class Divergence:
    """The first point where today's core decides other than the recording.

    ``recorded``/``new``: the two decisions at ``position`` (None when that side
    has no decision there); ``recorded_holds``/``new_holds`` say in words what
    each side holds at that position even then (an input, the end of the log,
    nothing more for an input).  ``fields``: the fields that differ when both
    are decisions.  ``inputs_before``: the last inputs before it with the audio
    chunk boundaries left out (``audio_skipped`` counts those in between).
    """

    position: int  # seq of the first decision that differs
    recorded: ev.Decision | None
    new: ev.Decision | None
    inputs_before: list[ev.Input]
    recorded_holds: str = ""
    new_holds: str = ""
    fields: list[FieldDiff] = field(default_factory=list)
    audio_skipped: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "recorded": ev.to_builtins(self.recorded) if self.recorded else None,
            "new": ev.to_builtins(self.new) if self.new else None,
            "recorded_holds": self.recorded_holds,
            "new_holds": self.new_holds,
            "fields": [f.to_dict() for f in self.fields],
            "inputs_before": [ev.to_builtins(i) for i in self.inputs_before],
            "audio_skipped": self.audio_skipped,
        }

    def report(self, call_id: str = "") -> list[str]:
        """The divergence as lines a person reads in seconds (``fastagent replay``)."""
        of = f" of call {call_id}" if call_id else ""
        lines = [f"DIVERGED at position {self.position}{of}"]
        lines.append(f"  recorded: {self.recorded_holds}")
        lines.append(f"  now:      {self.new_holds}")
        if self.fields:
            lines.append("  fields that differ (recorded -> now):")
            for f in self.fields:
                if f.marked:
                    lines.append(f"    {f.name}: {f.marked}")
                else:
                    lines.append(f"    {f.name}: {_show(f.recorded)} -> {_show(f.new)}")
        skipped = ""
        if self.audio_skipped:
            skipped = f" ({self.audio_skipped} audio chunk boundaries left out)"
        lines.append(f"  inputs just before{skipped}:")
        lines.extend(f"    {short(i)}" for i in self.inputs_before)
        return lines


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


_AUDIO = (ev.CallerAudio, ev.BotAudio)


def replay(
    events: Sequence[ev.Event],
    agents: Callable[[str], Agent] = builtin_agent,
    *,
    engine: Engine | None = None,
) -> ReplayResult:
    """Replay ``events`` (one call, in seq order) and find the first divergence.

    ``engine``: go on from an engine restored from a checkpoint (``events`` is then
    the log after it) instead of a fresh one.  ``agents`` defaults to the built-in
    registry: code a recording names is never imported (see :func:`agents_for`).
    A fresh engine is admitted (agent, formats: :func:`fastagent.admission.admit`)
    for the recorded ``SessionInitiated`` with today's code, as the shell was.
    """
    call_id = engine.call_id if engine is not None else (events[0].call_id if events else "")
    if engine is None:
        first = events[0] if events else None
        if isinstance(first, ev.SessionInitiated):
            engine = engine_for(first, agents)
        else:  # a log that does not begin with its session: nothing to admit
            engine = Engine(call_id)
    expected: deque[ev.Decision] = deque()
    ctx = _Context()
    inputs = decisions = 0
    handle = engine.handle
    for e in events:
        if isinstance(e, ev.Input):
            if expected:  # the core decided more than was recorded
                holds = f"{ctx.no_more()}; the log goes on with input {short(e, 100)}"
                div = _divergence(expected[0], None, ctx, recorded_holds=holds)
                return ReplayResult(call_id, len(events), inputs, decisions, div)
            inputs += 1
            ctx.add(e)
            expected.extend(handle(e))
        else:
            decisions += 1
            new = expected.popleft() if expected else None
            if new != e:
                div = _divergence(new, e, ctx, new_holds="" if new else ctx.no_more())
                return ReplayResult(call_id, len(events), inputs, decisions, div)
    if expected:
        holds = f"the end of the log ({len(events)} events)"
        div = _divergence(expected[0], None, ctx, recorded_holds=holds)
        return ReplayResult(call_id, len(events), inputs, decisions, div)
    return ReplayResult(call_id, len(events), inputs, decisions, engine=engine)


class _Context:
    """The last inputs (audio chunk boundaries counted, not kept) before a position."""

    def __init__(self) -> None:
        self.recent: deque[ev.Input] = deque(maxlen=CONTEXT_INPUTS)
        self.audio: deque[int] = deque(maxlen=CONTEXT_INPUTS)  # audio chunks before each
        self.skipped = 0
        self.last: ev.Input | None = None

    def add(self, e: ev.Input) -> None:
        self.last = e
        if type(e) in _AUDIO:
            self.skipped += 1
        else:
            self.recent.append(e)
            self.audio.append(self.skipped)
            self.skipped = 0

    def no_more(self) -> str:
        last = self.last
        return f"no more decisions for input #{last.seq} {type(last).__name__}" if last else ""


def _divergence(
    new: ev.Decision | None,
    recorded: ev.Decision | None,
    ctx: _Context,
    recorded_holds: str = "",
    new_holds: str = "",
) -> Divergence:
    position = recorded.seq if recorded is not None else new.seq if new is not None else 0
    return Divergence(
        position,
        recorded,
        new,
        list(ctx.recent),
        recorded_holds=recorded_holds or short(recorded),
        new_holds=new_holds or short(new),
        fields=field_diffs(recorded, new) if recorded is not None and new is not None else [],
        audio_skipped=sum(ctx.audio) - (ctx.audio[0] if ctx.audio else 0) + ctx.skipped,
    )


_LONG = 72  # longer values get a word diff
_CONTEXT_WORDS = 4


def short(e: ev.Event | None, limit: int = 120) -> str:
    """``#seq Type {fields}``: an event on one line, fields at their default left out."""
    if e is None:
        return "(nothing)"
    body = json.dumps(_fields_of(e), sort_keys=True, ensure_ascii=False)
    if len(body) > limit:
        body = body[: limit - 1] + "\u2026"
    return f"#{e.seq} {type(e).__name__} {body}"


def _fields_of(e: ev.Event) -> dict[str, Any]:
    out: dict[str, Any] = ev.lean(e)
    for name in ("type", "call_id", "seq", "at"):
        out.pop(name, None)
    return out


def _show(value: Any) -> str:
    return "(absent)" if value is None else json.dumps(value, ensure_ascii=False)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def field_diffs(recorded: ev.Decision, new: ev.Decision) -> list[FieldDiff]:
    """The fields in which two decisions differ (``type`` first, if that differs)."""
    out: list[FieldDiff] = []
    if type(recorded) is not type(new):
        out.append(FieldDiff("type", type(recorded).__name__, type(new).__name__))
    a, b = msgspec.to_builtins(recorded), msgspec.to_builtins(new)
    for name in [*a, *(k for k in b if k not in a)]:
        if name in ("type", "call_id") or a.get(name) == b.get(name):
            continue
        x, y = a.get(name), b.get(name)
        marked = ""
        if x is not None and y is not None and max(len(_text(x)), len(_text(y))) > _LONG:
            marked = word_diff(_text(x), _text(y))
        out.append(FieldDiff(name, x, y, marked))
    return out


def word_diff(old: str, new: str, context: int = _CONTEXT_WORDS) -> str:
    """The changed words of ``old`` -> ``new`` as ``[-removed-]{+added+}``, with
    ``context`` unchanged words either side and ``…`` for the rest."""
    a, b = old.split(), new.split()
    ops = difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes()
    if all(tag == "equal" for tag, *_ in ops):
        return f"(whitespace only) {json.dumps(old)} -> {json.dumps(new)}"
    parts: list[str] = []
    for n, (tag, i1, i2, j1, j2) in enumerate(ops):
        if tag == "equal":
            words = a[i1:i2]
            head = words[:context] if n > 0 else []
            tail = words[-context:] if n < len(ops) - 1 else []
            if len(head) + len(tail) >= len(words):
                parts.extend(words)
            else:
                parts.extend([*head, "\u2026", *tail])
            continue
        if i2 > i1:
            parts.append("[-" + " ".join(a[i1:i2]) + "-]")
        if j2 > j1:
            parts.append("{+" + " ".join(b[j1:j2]) + "+}")
    return " ".join(parts)


# --------------------------------------------------------------- recordings


class _Header(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    format: str
    version: int
    call_id: str
    events: int
    # Personal fields sealed with the call's data key, as in the store: the file
    # opens only with that store's keys (and never once the call is forgotten).
    sealed: bool = False


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


def write_recording(events: Sequence[ev.Event], path: str | Path, *, sealer: Any = None) -> None:
    """Write ``events`` as a recording file.  With a ``sealer`` (a store's
    :class:`fastagent.privacy.Sealer`) personal fields are sealed as in the store
    (version 2, ``"sealed": true``); without one, everything is in clear (version 1,
    readable by older FastAgents)."""
    if not events:
        raise RecordingError("nothing to export: the call has no events")
    header = _Header(
        format=RECORDING_FORMAT,
        version=RECORDING_VERSION if sealer is not None else 1,
        call_id=events[0].call_id,
        events=len(events),
        sealed=sealer is not None,
    )
    with open(path, "wb") as out:
        out.write(_encoder.encode(header) + b"\n")
        for e in events:
            body = sealer.seal(e) if sealer is not None else ev.encode(e)
            line = _Line(ev.topic_of(e), msgspec.Raw(body))
            out.write(_encoder.encode(line) + b"\n")


def recording_is_sealed(path: str | Path) -> bool:
    """True if the recording file's header says its personal fields are sealed
    (False for anything unreadable: :func:`read_recording` then says why)."""
    try:
        with open(path, "rb") as f:
            first = f.readline(4096)
        return bool(_header_decoder.decode(first).sealed)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError):
        return False


Opener = Callable[..., bytes]  # Sealer.open(call_id, seq, type name, body) -> body


def read_recording(path: str | Path, *, opener: Opener | None = None) -> list[ev.Event]:
    """Read a recording file strictly; raise :class:`RecordingError` (one line) if it
    is not exactly what :func:`write_recording` writes.

    Strict means: the header and each line hold only their known keys, and every
    event body only the fields its class declares (nested values included) --
    after upcasting, so a field an older version declared and its upcaster
    consumes is fine.  A field this code does not know is an error naming it
    (``Transcript.confidence``): silently dropping it would replay a call that is
    not the one recorded.  Trailing blank lines are allowed; a blank line in the
    middle is not.

    A sealed recording needs ``opener`` (the exporting store's ``sealer.open``);
    its errors (a forgotten call, a key not in that store) propagate.
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
    if header.sealed and opener is None:
        raise RecordingError(
            f"{path}: call {header.call_id!r}'s personal data is sealed; replay it with "
            "--store <the store it was exported from>"
        )
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
        if header.sealed and opener is not None:
            seq = len(out) + 1
            body = opener(header.call_id, seq, line.topic.partition("/")[0], body)
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
