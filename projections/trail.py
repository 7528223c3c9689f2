"""Decision-trail rows and per-turn latency: pure functions over a call's events."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import msgspec

from fastagent import events as ev

_HOT = (ev.CallerAudio, ev.BotAudio)


def trail_rows(events: Iterable[ev.Event]) -> list[dict[str, Any]]:
    """One row per decision: its position, type and fields (without call id and time)."""
    rows = []
    for e in events:
        if isinstance(e, ev.Decision):
            row = msgspec.to_builtins(e)
            row.pop("call_id", None)
            row.pop("at", None)
            rows.append(row)
    return rows


class TurnLatency(msgspec.Struct, frozen=True, kw_only=True):
    """Caller stops speaking -> first bot audio of the answer."""

    speech_stopped_seq: int
    first_audio_seq: int
    latency_ms: float


def turn_latencies(events: Sequence[ev.Event]) -> list[TurnLatency]:
    out: list[TurnLatency] = []
    stopped: ev.Event | None = None
    for e in events:
        if isinstance(e, ev.SpeechStopped):
            stopped = e
        elif isinstance(e, ev.BotAudio) and stopped is not None:
            out.append(
                TurnLatency(
                    speech_stopped_seq=stopped.seq,
                    first_audio_seq=e.seq,
                    latency_ms=(e.at - stopped.at) / 1000,
                )
            )
            stopped = None
    return out


def timeline(events: Sequence[ev.Event]) -> list[dict[str, Any]]:
    """The readable story of a call: who said what, tools, FSA steps, latencies.

    Times are offsets (ms) from the first event, so a recording reads the same
    wherever it is replayed.
    """
    if not events:
        return []
    t0 = events[0].at
    latency = {lat.first_audio_seq: lat.latency_ms for lat in turn_latencies(events)}
    rows: list[dict[str, Any]] = []
    for e in events:
        if isinstance(e, _HOT) and e.seq not in latency:
            continue
        text = describe(e)
        if text is None and e.seq not in latency:
            continue
        if e.seq in latency:
            text = f"first bot audio after {latency[e.seq]:.0f} ms"
        rows.append({"seq": e.seq, "ms": (e.at - t0) // 1000, "kind": e.kind, "text": text})
    return rows


def describe(e: ev.Event) -> str | None:
    """A one-line description of the events worth showing in a timeline."""
    match e:
        case ev.SessionInitiated():
            return f"call from {e.caller or 'unknown'} (agent {e.config.agent})"
        case ev.SessionAccepted():
            return f"accepted {e.media_format} <-> {e.model_format}" + (
                " (resumed)" if e.resumed else ""
            )
        case ev.SessionRejected():
            return f"rejected: {e.reason}"
        case ev.Transcript():
            who = "caller" if e.role == "user" else "bot"
            return f"{who}: {e.text}"
        case ev.Dtmf():
            return f"caller pressed {e.digits}"
        case ev.FunctionCallDispatched():
            return f"tool {e.name}({e.arguments}) via {e.server or '?'}"
        case ev.ToolResult():
            status = "ok" if e.ok else f"error: {e.error}"
            return f"tool {e.name} -> {status} in {e.duration_us / 1000:.0f} ms"
        case ev.FunctionCallSkipped():
            return f"tool {e.name} skipped: {e.reason}"
        case ev.FsaStarted():
            return f"FSA {e.fsa} started in {e.state}"
        case ev.FsaTransition() if e.source == e.target:
            # No state change: a step that runs its action (the tool line follows),
            # or the caller's answer refused by a guard.
            if not e.guard:
                return f"FSA {e.fsa} in {e.source}: {e.trigger}, {e.reason or 'no change'}"
            return f"FSA {e.fsa} stays in {e.source}: {e.trigger} [{e.guard}]"
        case ev.FsaTransition():
            guard = f" [{e.guard}]" if e.guard else ""
            return f"FSA {e.fsa}: {e.source} -> {e.target} on {e.trigger}{guard}"
        case ev.FsaFinished():
            return f"FSA {e.fsa} {e.outcome} in {e.state}"
        case ev.TruncateRequested():
            return f"barge-in: bot cut at {e.audio_end_ms} ms"
        case ev.HangupRequested():
            return f"bot hangs up: {e.reason}"
        case ev.TransferRequested():
            return f"transfer to {e.target}: {e.reason}"
        case ev.ConnectionLost():
            return f"{e.side} connection lost {e.reason}".rstrip()
        case ev.ConnectionRestored():
            return f"{e.side} connection restored"
        case ev.ResponseDone() if e.status in ("failed", "incomplete"):
            what = ", ".join(
                dict.fromkeys(x for x in (e.error_type, e.error_code or e.reason) if x)
            )
            tail = f": {e.error_message}" if e.error_message else ""
            return f"model response {e.status}" + (f" ({what})" if what else "") + tail
        case ev.ModelError():
            code = e.code or e.error_type
            return f"model error{f' {code}' if code else ''}: {e.message}".rstrip(": ")
        case ev.TranscriptionFailed():
            code = e.code or e.error_type
            return f"caller's words not transcribed ({code or 'failed'}): {e.message}".rstrip(": ")
        case ev.ModelTimeout():
            return f"model did not answer: no {e.waiting_for} within {e.seconds:g} s"
        case ev.ModelFailureHandled():
            code = f" ({e.code})" if e.code else ""
            return f"model failure {e.kind}{code} -> {e.action}"
        case ev.ItemDeleted():
            return f"bot item {e.item_id} never heard: deleted"
        case ev.ItemHeard():
            return f"barge-in: caller heard {e.heard_ms} of {e.sent_ms} ms of {e.item_id}"
        case ev.ModelSessionStarted():
            how = f"fork of {e.forked_from}" if e.forked_from else f"{e.seeded} messages seeded"
            return f"model session {e.session_id} started ({e.model}, {how})"
        case ev.ModelSessionClosed():
            return f"model session {e.session_id} closed: {e.reason} ({e.seconds:g} s billed)"
        case ev.DelegationStarted():
            return f"model delegated to {e.target} ({e.delegation_id})"
        case ev.ContextAppended() if e.kind != "commentary":
            return f"model told ({e.kind}): {e.content}"
        case ev.CallerNotified():
            return None  # VAIC's acknowledgements; a recognition repeats the Transcript line
        case ev.ProtocolError():
            return f"error: {e.message}"
        case ev.CallEnded():
            return f"call ended: {e.reason} ({e.outcome})"
    return None
