"""Live call state: a pure fold over a call's events.

The same fold serves a live call (applied event by event as they are recorded),
a replay and a rebuild from the store; tests check that folding a whole log
equals the incrementally kept state.  The transcript grows with the call; the
engine core keeps none of it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import msgspec

from fastagent import events as ev


class FsaView(msgspec.Struct, kw_only=True):
    state: str
    slots: dict[str, object] = msgspec.field(default_factory=dict)


class Line(msgspec.Struct, frozen=True, kw_only=True):
    role: str  # user | assistant
    text: str
    at: int
    item_id: str = ""
    heard: bool = True  # False: bot audio the caller never heard (deleted after a barge-in)


class CallState(msgspec.Struct, kw_only=True):
    call_id: str = ""
    status: str = "new"  # new | active | suspended | ending | ended | rejected
    agent: str = ""
    caller: str = ""
    callee: str = ""
    media_format: str = ""
    started_at: int = 0
    ended_at: int = 0
    outcome: str = ""
    speaking: str = ""  # "" | caller | bot
    fsas: dict[str, FsaView] = msgspec.field(default_factory=dict)
    pending_tools: dict[str, str] = msgspec.field(default_factory=dict)  # tool call id -> name
    transcript: list[Line] = msgspec.field(default_factory=list)
    events: int = 0
    last_seq: int = 0
    caller_audio_ms: int = 0
    bot_audio_ms: int = 0
    barge_ins: int = 0
    tool_calls: int = 0
    tool_errors: int = 0
    total_tokens: int = 0
    model_failures: int = 0  # ModelFailureHandled decisions
    unheard: list[str] = msgspec.field(default_factory=list)  # assistant items never heard


def apply(state: CallState, e: ev.Event) -> CallState:
    """Fold one event into ``state`` (in place, for speed) and return it."""
    state.events += 1
    state.last_seq = e.seq
    t = type(e)
    if t is ev.CallerAudio:
        state.caller_audio_ms += e.duration_us // 1000  # type: ignore[attr-defined]
    elif t is ev.BotAudio:
        state.bot_audio_ms += e.duration_us // 1000  # type: ignore[attr-defined]
    elif t is ev.SessionInitiated:
        assert isinstance(e, ev.SessionInitiated)
        state.call_id = e.call_id
        state.agent = e.config.agent
        state.caller = state.caller or e.caller
        state.started_at = e.at
    elif t is ev.SessionAccepted:
        assert isinstance(e, ev.SessionAccepted)
        state.status = "active"
        state.media_format = e.media_format
    elif t is ev.SessionRejected:
        state.status = "rejected"
    elif t is ev.CallStarted:
        assert isinstance(e, ev.CallStarted)
        state.caller = e.caller or state.caller
        state.callee = e.callee
    elif t is ev.SpeechStarted:
        state.speaking = "caller"
    elif t is ev.SpeechStopped:
        state.speaking = ""
    elif t is ev.PlaybackStarted:
        state.speaking = "bot"
    elif t is ev.PlaybackStopped:
        assert isinstance(e, ev.PlaybackStopped)
        if state.speaking == "bot":
            state.speaking = ""
        if e.reason == "barge_in":
            state.barge_ins += 1
    elif t is ev.Transcript:
        assert isinstance(e, ev.Transcript)
        heard = e.role != "assistant" or e.item_id not in state.unheard
        state.transcript.append(
            Line(role=e.role, text=e.text, at=e.at, item_id=e.item_id, heard=heard)
        )
    elif t is ev.ItemDeleted:
        assert isinstance(e, ev.ItemDeleted)
        state.unheard.append(e.item_id)
        state.transcript = [
            Line(role=x.role, text=x.text, at=x.at, item_id=x.item_id, heard=False)
            if x.item_id == e.item_id
            else x
            for x in state.transcript
        ]
    elif t is ev.ModelFailureHandled:
        state.model_failures += 1
    elif t is ev.FunctionCallDispatched:
        assert isinstance(e, ev.FunctionCallDispatched)
        state.tool_calls += 1
        if e.server != "fastagent":
            state.pending_tools[e.tool_call_id] = e.name
    elif t is ev.ToolResult:
        assert isinstance(e, ev.ToolResult)
        state.pending_tools.pop(e.tool_call_id, None)
        if not e.ok:
            state.tool_errors += 1
    elif t is ev.FsaStarted:
        assert isinstance(e, ev.FsaStarted)
        state.fsas[e.fsa] = FsaView(state=e.state)
    elif t is ev.FsaTransition:
        assert isinstance(e, ev.FsaTransition)
        view = state.fsas.get(e.fsa)
        if view is not None:
            view.state = e.target
            if e.arguments and e.guard != "invalid":
                try:
                    args = json.loads(e.arguments)
                except ValueError:
                    args = {}
                if isinstance(args, dict):
                    view.slots.update((k, v) for k, v in args.items() if k != "confirmed")
    elif t is ev.FsaFinished:
        assert isinstance(e, ev.FsaFinished)
        state.fsas.pop(e.fsa, None)
    elif t is ev.ResponseDone:
        assert isinstance(e, ev.ResponseDone)
        state.total_tokens += e.usage.total_tokens
    elif t is ev.ConnectionLost:
        assert isinstance(e, ev.ConnectionLost)
        if e.side == "caller" and state.status == "active":
            state.status = "suspended"
    elif t is ev.SessionResumed:
        state.status = "active"
    elif t is ev.HangupRequested or t is ev.TransferRequested:
        state.status = "ending"
    elif t is ev.CallEnded:
        assert isinstance(e, ev.CallEnded)
        state.status = "ended"
        state.ended_at = e.at
        state.outcome = e.outcome
        state.speaking = ""
    return state


def fold(events: Iterable[ev.Event], state: CallState | None = None) -> CallState:
    state = state if state is not None else CallState()
    for e in events:
        apply(state, e)
    return state
