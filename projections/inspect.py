"""The call inspector's read models: pure functions over a call's events.

:func:`call_summary` is one row of the calls list; :func:`call_view` is everything
the call page draws (speech bars, barge-ins, transcript, tool calls, FSA
transitions, turn latency, errors, cost, the event rows of the scrubber);
:func:`state_at` is the live-state projection (:mod:`projections.live`) folded up to
any event.  Times in the views are milliseconds from the call's first event
(``ms``), so a view is the same wherever and whenever it is computed.

Personal data never leaves these functions unmasked: every caller number, DTMF
digit, transcript, tool argument and result and FSA slot goes through ``mask``
(a :data:`Masker`; :func:`default_mask` unless the caller of the function passes
another).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Any

import msgspec

from fastagent import events as ev
from fastagent import masking
from fastagent.core import ENGINE_SERVER
from projections import latency, live
from projections.trail import describe

Masker = Callable[[str, str], str]
"""``mask(kind, value) -> shown value``.  Kinds: ``caller`` (a phone number),
``dtmf`` (keys pressed), ``transcript``, ``arguments`` (tool or FSA arguments,
JSON text), ``output`` (a tool result, JSON text), ``text`` (any other free text
that may quote the caller, e.g. an error message)."""


def make_mask(keys: Collection[str] = masking.DEFAULT_SENSITIVE_KEYS) -> Masker:
    """The inspector's masking (:mod:`fastagent.masking`): the caller's number and
    DTMF keys whole; JSON arguments and results key by key (``keys``: the agent's
    sensitive slots and the default personal keys masked whole, other strings as
    free text); transcripts and other text as free text (card numbers, IBANs,
    dates, e-mails, digit runs)."""

    def mask(kind: str, value: str) -> str:
        if not value:
            return value
        if kind in ("caller", "dtmf"):
            return masking.mask_value(value)  # type: ignore[no-any-return]
        if kind in ("arguments", "output"):
            return masking.mask_json_text(value, keys)
        return masking.mask_text(value)

    return mask


default_mask: Masker = make_mask()


_ERRORS = (ev.ModelError, ev.ProtocolError, ev.EngineFault, ev.TranscriptionFailed, ev.ModelTimeout)


def _ms(at: int, t0: int) -> int:
    return (at - t0) // 1000


# ------------------------------------------------------------------ calls list


def call_summary(events: Iterable[ev.Event], mask: Masker = default_mask) -> dict[str, Any]:
    """One row of the calls list: who, when, how long, how it ended, which FSA states
    it reached (``fsa_states``: ``"fsa:state"`` strings) and its latency and cost."""
    state = live.CallState()
    reached: list[str] = []
    fsas: list[str] = []
    first_at = last_at = 0
    errors = 0
    prices = latency.Prices()
    cost = latency.Cost()
    evs: list[ev.Event] = []
    for e in events:
        if not first_at:
            first_at = e.at
        last_at = e.at
        live.apply(state, e)
        t = type(e)
        if t is ev.FsaStarted:
            fsas.append(e.fsa)  # type: ignore[attr-defined]
            reached.append(f"{e.fsa}:{e.state}")  # type: ignore[attr-defined]
        elif t is ev.FsaTransition:
            reached.append(f"{e.fsa}:{e.target}")  # type: ignore[attr-defined]
        elif t in _ERRORS or (t is ev.ResponseDone and e.status == "failed"):  # type: ignore[attr-defined]
            errors += 1
        elif t is ev.ResponseDone:
            latency.add_cost(cost, latency.usage_cost(e.usage, prices))  # type: ignore[attr-defined]
        evs.append(e)
    turns = latency.turn_stages(evs)
    total = latency.stage_percentiles(turns)["total"]
    return {
        "call_id": state.call_id or (evs[0].call_id if evs else ""),
        "agent": state.agent,
        "caller": mask("caller", state.caller),
        "status": state.status,
        "outcome": state.outcome or ("live" if state.status != "ended" else ""),
        "started_at": first_at,
        "duration_ms": (last_at - first_at) // 1000,
        "events": state.events,
        "fsas": sorted(set(fsas)),
        "fsa_states": list(dict.fromkeys(reached)),
        "turns": len(turns),
        "latency_p50_ms": total["p50"],
        "latency_p95_ms": total["p95"],
        "errors": errors,
        "barge_ins": state.barge_ins,
        "cost_usd": round(cost.usd, 6),
        "_caller_raw": state.caller,  # for the caller search; never shown
        "_totals": [v for t in turns if (v := t.stage_ms()["total"]) is not None],
    }


def agent_latency(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per agent over calls-list rows: calls, turns, end of speech -> first chunk
    p50/p95 over all their turns, total cost."""
    by_agent: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_agent.setdefault(row["agent"] or "?", []).append(row)
    out = []
    for agent in sorted(by_agent):
        mine = by_agent[agent]
        totals = [v for r in mine for v in r["_totals"]]
        p50, p95 = latency.percentile(totals, 0.5), latency.percentile(totals, 0.95)
        out.append(
            {
                "agent": agent,
                "calls": len(mine),
                "turns": len(totals),
                "p50_ms": None if p50 is None else round(p50, 1),
                "p95_ms": None if p95 is None else round(p95, 1),
                "cost_usd": round(sum(r["cost_usd"] for r in mine), 6),
            }
        )
    return out


def matches(
    row: dict[str, Any],
    *,
    agent: str = "",
    outcome: str = "",
    since_us: int | None = None,
    until_us: int | None = None,
    min_ms: int | None = None,
    max_ms: int | None = None,
    fsa_state: str = "",
    q: str = "",
    caller: str = "",
) -> bool:
    """The calls-list filters.  ``fsa_state`` is ``state`` or ``fsa:state``; ``q``
    matches a call id prefix or substring; ``caller`` the caller's (unmasked)
    number as given by the searcher, compared on its digits."""
    if agent and row["agent"] != agent:
        return False
    if outcome and row["outcome"] != outcome:
        return False
    if since_us is not None and row["started_at"] < since_us:
        return False
    if until_us is not None and row["started_at"] >= until_us:
        return False
    if min_ms is not None and row["duration_ms"] < min_ms:
        return False
    if max_ms is not None and row["duration_ms"] > max_ms:
        return False
    if fsa_state:
        wanted = fsa_state if ":" in fsa_state else None
        if not any(s == wanted or s.split(":", 1)[1] == fsa_state for s in row["fsa_states"]):
            return False
    if q and q.lower() not in row["call_id"].lower():
        return False
    if caller:
        digits = re.sub(r"\D", "", caller)
        if not digits or digits not in re.sub(r"\D", "", row.get("_caller_raw", "")):
            return False
    return True


# ------------------------------------------------------------------- call page


def fsa_graph(fsa: Any) -> dict[str, Any]:
    """An FSA definition (:class:`fastagent.fsa.FSA`) as nodes and labelled edges."""
    edges = []
    for st in fsa.states:
        for step in st.steps:
            for g in step.go:
                edges.append({"source": st.name, "target": g.target, "label": step.name})
        for g in st.after:
            label = st.on_enter.tool if st.on_enter else "after"
            edges.append({"source": st.name, "target": g.target, "label": label})
    return {
        "name": fsa.name,
        "intent": fsa.intent,
        "initial": fsa.initial,
        "states": [
            {"name": st.name, "terminal": st.terminal, "outcome": st.outcome if st.terminal else ""}
            for st in fsa.states
        ],
        "edges": edges,
    }


def _graph_from_log(name: str, transitions: list[dict[str, Any]]) -> dict[str, Any]:
    """The part of an FSA a call walked, when its definition is not available here."""
    states: dict[str, dict[str, Any]] = {}
    edges: dict[tuple[str, str], dict[str, Any]] = {}
    initial = ""
    for tr in transitions:
        if tr["fsa"] != name:
            continue
        if tr["kind"] == "started":
            initial = initial or tr["target"]
        for s in (tr["source"], tr["target"]):
            if s:
                states.setdefault(s, {"name": s, "terminal": False, "outcome": ""})
        if tr["kind"] == "finished":
            states[tr["source"]].update(terminal=True, outcome=tr["outcome"])
        if tr["kind"] == "transition":
            edges.setdefault(
                (tr["source"], tr["target"]),
                {"source": tr["source"], "target": tr["target"], "label": tr["trigger"]},
            )
    return {
        "name": name,
        "intent": "",
        "initial": initial,
        "states": list(states.values()),
        "edges": list(edges.values()),
        "from_log": True,
    }


def _arguments(text: str, mask: Masker) -> str:
    return mask("arguments", text)


def call_view(
    events: Sequence[ev.Event],
    *,
    fsas: Iterable[Any] = (),
    prices: latency.Prices | None = None,
    mask: Masker = default_mask,
) -> dict[str, Any]:
    """Everything the call page draws.  ``fsas``: the agent's FSA definitions, for
    the state diagrams (FSAs the call used but ``fsas`` lacks are drawn from the log)."""
    if not events:
        raise ValueError("a call with no events")
    t0 = events[0].at
    state = live.CallState()
    speed = 1.0
    caller_bars: list[dict[str, Any]] = []
    bot_bars: list[dict[str, Any]] = []
    open_speech: dict[str, Any] | None = None
    streams: dict[str, dict[str, Any]] = {}  # stream id -> bar
    item_text: dict[str, str] = {}
    barge_ins: list[dict[str, Any]] = []
    transcript: list[dict[str, Any]] = []
    tools: dict[str, dict[str, Any]] = {}
    transitions: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    rows: list[dict[str, Any]] = []
    audio_rows = 0
    for e in events:
        live.apply(state, e)
        t = type(e)
        ms = _ms(e.at, t0)
        if t is ev.CallerAudio or t is ev.BotAudio:
            audio_rows += 1
            continue
        text = describe(e)
        if t is ev.SessionInitiated:
            speed = e.config.playback_speed or 1.0  # type: ignore[attr-defined]
            text = f"call from {mask('caller', e.caller) or 'unknown'} (agent {e.config.agent})"  # type: ignore[attr-defined]
        elif t is ev.SpeechStarted:
            open_speech = {"start_ms": ms, "end_ms": None, "item_id": e.item_id}  # type: ignore[attr-defined]
            caller_bars.append(open_speech)
        elif t is ev.SpeechStopped:
            if open_speech is not None:
                open_speech["end_ms"] = ms
                open_speech = None
        elif t is ev.PlaybackStarted:
            bar = {
                "start_ms": ms,
                "end_ms": None,
                "item_id": e.item_id,  # type: ignore[attr-defined]
                "response_id": e.response_id,  # type: ignore[attr-defined]
                "cut": False,
            }
            streams[e.stream_id] = bar  # type: ignore[attr-defined]
            bot_bars.append(bar)
        elif t is ev.PlaybackStopped:
            bar = streams.get(e.stream_id)  # type: ignore[attr-defined]
            if bar is not None:
                # What the caller heard: played_ms of audio at the caller's playback speed.
                heard = int(e.played_ms / speed)  # type: ignore[attr-defined]
                bar["end_ms"] = bar["start_ms"] + heard if heard else ms
                bar["cut"] = e.reason == "barge_in"  # type: ignore[attr-defined]
                if e.reason == "barge_in":  # type: ignore[attr-defined]
                    barge_ins.append(
                        {
                            "seq": e.seq,
                            "ms": ms,
                            "played_ms": e.played_ms,
                            "item_id": bar["item_id"],
                        }  # type: ignore[attr-defined]
                    )
        elif t is ev.Transcript:
            shown = mask("transcript", e.text)  # type: ignore[attr-defined]
            text = ("caller: " if e.role == "user" else "bot: ") + shown  # type: ignore[attr-defined]
            transcript.append({"seq": e.seq, "ms": ms, "role": e.role, "text": shown})  # type: ignore[attr-defined]
            item_text[e.item_id] = shown  # type: ignore[attr-defined]
        elif t is ev.Dtmf:
            text = f"caller pressed {mask('dtmf', e.digits)}"  # type: ignore[attr-defined]
        elif t is ev.DtmfSent:
            text = f"bot sent DTMF {mask('dtmf', e.digits)}"  # type: ignore[attr-defined]
        elif t is ev.CallStarted:
            text = f"call started: {mask('caller', e.caller)} -> {e.callee}"  # type: ignore[attr-defined]
        elif t is ev.FunctionCallRequested:
            tools[e.tool_call_id] = {  # type: ignore[attr-defined]
                "tool_call_id": e.tool_call_id,  # type: ignore[attr-defined]
                "name": e.name,  # type: ignore[attr-defined]
                "seq": e.seq,
                "ms": ms,
                "arguments": _arguments(e.arguments, mask),  # type: ignore[attr-defined]
                "server": "",
                "status": "requested",
            }
            text = f"model calls {e.name}"  # type: ignore[attr-defined]
        elif t is ev.FunctionCallDispatched:
            tool = tools.setdefault(
                e.tool_call_id,  # type: ignore[attr-defined]
                {"tool_call_id": e.tool_call_id, "name": e.name, "seq": e.seq, "ms": ms},  # type: ignore[attr-defined]
            )
            # The engine's own tools (ENGINE_SERVER) act through decisions, not a result.
            engine = e.server == ENGINE_SERVER  # type: ignore[attr-defined]
            tool.update(
                server=e.server,  # type: ignore[attr-defined]
                arguments=_arguments(e.arguments, mask),  # type: ignore[attr-defined]
                status="engine" if engine else "running",
                dispatched_ms=ms,
            )
            text = f"tool {e.name} via {e.server or '?'}"  # type: ignore[attr-defined]
        elif t is ev.FunctionCallSkipped:
            tool = tools.setdefault(
                e.tool_call_id,  # type: ignore[attr-defined]
                {"tool_call_id": e.tool_call_id, "name": e.name, "seq": e.seq, "ms": ms},  # type: ignore[attr-defined]
            )
            tool.update(status="skipped", reason=e.reason, end_ms=ms)  # type: ignore[attr-defined]
        elif t is ev.ToolResult:
            tool = tools.setdefault(
                e.tool_call_id,  # type: ignore[attr-defined]
                {"tool_call_id": e.tool_call_id, "name": e.name, "seq": e.seq, "ms": ms},  # type: ignore[attr-defined]
            )
            tool.update(
                status="ok" if e.ok else "error",  # type: ignore[attr-defined]
                output=mask("output", e.output),  # type: ignore[attr-defined]
                error=mask("text", e.error),  # type: ignore[attr-defined]
                duration_ms=round(e.duration_us / 1000, 1),  # type: ignore[attr-defined]
                end_ms=ms,
                result_seq=e.seq,
            )
            status = "ok" if e.ok else "error"  # type: ignore[attr-defined]
            text = f"tool {e.name} -> {status} in {e.duration_us / 1000:.0f} ms"  # type: ignore[attr-defined]
        elif t is ev.FsaStarted:
            transitions.append(
                {
                    "seq": e.seq,
                    "ms": ms,
                    "kind": "started",
                    "fsa": e.fsa,  # type: ignore[attr-defined]
                    "source": "",
                    "target": e.state,  # type: ignore[attr-defined]
                    "trigger": e.trigger,  # type: ignore[attr-defined]
                    "guard": "",
                    "reason": "",
                    "outcome": "",
                }
            )
        elif t is ev.FsaTransition:
            transitions.append(
                {
                    "seq": e.seq,
                    "ms": ms,
                    "kind": "transition",
                    "fsa": e.fsa,  # type: ignore[attr-defined]
                    "source": e.source,  # type: ignore[attr-defined]
                    "target": e.target,  # type: ignore[attr-defined]
                    "trigger": e.trigger,  # type: ignore[attr-defined]
                    "guard": e.guard,  # type: ignore[attr-defined]
                    "reason": mask("text", e.reason),  # type: ignore[attr-defined]
                    "arguments": _arguments(e.arguments, mask),  # type: ignore[attr-defined]
                    "outcome": "",
                }
            )
        elif t is ev.FsaFinished:
            transitions.append(
                {
                    "seq": e.seq,
                    "ms": ms,
                    "kind": "finished",
                    "fsa": e.fsa,  # type: ignore[attr-defined]
                    "source": e.state,  # type: ignore[attr-defined]
                    "target": "",
                    "trigger": "",
                    "guard": "",
                    "reason": mask("text", e.reason),  # type: ignore[attr-defined]
                    "outcome": e.outcome,  # type: ignore[attr-defined]
                }
            )
        elif t is ev.ModelError:
            errors.append(
                {
                    "seq": e.seq,
                    "ms": ms,
                    "type": "ModelError",
                    "kind": e.error_type or "model",  # type: ignore[attr-defined]
                    "code": e.code,  # type: ignore[attr-defined]
                    "message": mask("text", e.message),  # type: ignore[attr-defined]
                }
            )
            text = f"model error {e.error_type} {e.code}: {mask('text', e.message)}"  # type: ignore[attr-defined]
        elif t is ev.ResponseDone and e.status == "failed":  # type: ignore[attr-defined]
            errors.append(
                {
                    "seq": e.seq,
                    "ms": ms,
                    "type": "ResponseFailed",
                    "kind": e.error_type or "failed",  # type: ignore[attr-defined]
                    "code": e.error_code,  # type: ignore[attr-defined]
                    "message": mask("text", e.error_message or e.reason),  # type: ignore[attr-defined]
                }
            )
            text = f"response {e.response_id} failed: {errors[-1]['message']}"  # type: ignore[attr-defined]
        elif t is ev.TranscriptionFailed:
            errors.append(
                {
                    "seq": e.seq,
                    "ms": ms,
                    "type": "TranscriptionFailed",
                    "kind": e.error_type or "transcription",  # type: ignore[attr-defined]
                    "code": e.code,  # type: ignore[attr-defined]
                    "message": mask("text", e.message),  # type: ignore[attr-defined]
                }
            )
            text = f"caller's words not transcribed: {errors[-1]['message']}"
        elif t is ev.ModelTimeout:
            errors.append(
                {
                    "seq": e.seq,
                    "ms": ms,
                    "type": "ModelTimeout",
                    "kind": "timeout",
                    "code": e.event_id,  # type: ignore[attr-defined]
                    "message": f"no {e.waiting_for} within {e.seconds:g} s",  # type: ignore[attr-defined]
                }
            )
            text = f"model timeout: {errors[-1]['message']}"
        elif t is ev.ProtocolError:
            errors.append(
                {
                    "seq": e.seq,
                    "ms": ms,
                    "type": "ProtocolError",
                    "kind": e.side,  # type: ignore[attr-defined]
                    "code": "",
                    "message": mask("text", e.message),  # type: ignore[attr-defined]
                }
            )
            text = f"protocol violation ({e.side}): {mask('text', e.message)}"  # type: ignore[attr-defined]
        elif t is ev.EngineFault:
            errors.append(
                {
                    "seq": e.seq,
                    "ms": ms,
                    "type": "EngineFault",
                    "kind": e.input_type,  # type: ignore[attr-defined]
                    "code": "",
                    "message": mask("text", e.error),  # type: ignore[attr-defined]
                }
            )
            text = f"engine fault on {e.input_type}: {mask('text', e.error)}"  # type: ignore[attr-defined]
        elif t is ev.CallerNotified:
            # VAIC's message only: a recognition's words are the Transcript row's.
            text = f"to the caller: {e.message_type}"  # type: ignore[attr-defined]
        elif t is ev.FunctionOutputSent or t is ev.MessageInjected:
            text = None
        elif text is None:
            text = t.__name__
        rows.append(
            {
                "seq": e.seq,
                "ms": ms,
                "type": t.__name__,
                "kind": e.kind,
                "text": mask("text", text or ""),
            }
        )
    end_ms = _ms(events[-1].at, t0)
    for bar in caller_bars:
        if bar["end_ms"] is None:
            bar["end_ms"] = end_ms
    for bar in bot_bars:
        bar["text"] = item_text.get(bar["item_id"], "")
        if bar["end_ms"] is None:
            bar["end_ms"] = end_ms
    for bar in caller_bars:
        bar["text"] = item_text.get(bar["item_id"], "")
    turns = latency.turn_stages(events)
    turn_rows = []
    for turn in turns:
        stages = turn.stage_ms()
        turn_rows.append(
            {
                "seq": turn.speech_stopped_seq,
                "ms": _ms(turn.speech_stopped_at, t0),
                "response_id": turn.response_id,
                **{k: None if v is None else round(v, 1) for k, v in stages.items()},
            }
        )
    known = {f.name: fsa_graph(f) for f in fsas}
    used = list(dict.fromkeys(tr["fsa"] for tr in transitions))
    diagrams = [known.get(name) or _graph_from_log(name, transitions) for name in used]
    cost = latency.call_cost(events, prices or latency.Prices())
    return {
        "call_id": events[0].call_id,
        "agent": state.agent,
        "caller": mask("caller", state.caller),
        "callee": state.callee,
        "status": state.status,
        "outcome": state.outcome,
        "started_at": t0,
        "duration_ms": end_ms,
        "last_seq": events[-1].seq,
        "events": len(events),
        "audio_events": audio_rows,
        "playback_speed": speed,
        "caller_speech": caller_bars,
        "bot_speech": bot_bars,
        "barge_ins": barge_ins,
        "transcript": transcript,
        "tools": sorted(tools.values(), key=lambda x: x["seq"]),
        "transitions": transitions,
        "diagrams": diagrams,
        "errors": errors,
        "turns": turn_rows,
        "latency": latency.stage_percentiles(turns),
        "cost": msgspec.to_builtins(cost),
        "rows": rows,
    }


def state_at(
    events: Iterable[ev.Event],
    seq: int,
    mask: Masker = default_mask,
    keys: Collection[str] = masking.DEFAULT_SENSITIVE_KEYS,
) -> dict[str, Any]:
    """The live call state (:class:`projections.live.CallState`) folded from the
    log up to and including event ``seq``, masked, as plain JSON-able data."""
    state = live.CallState()
    for e in events:
        if e.seq > seq:
            break
        live.apply(state, e)
    out = msgspec.to_builtins(state)
    out["caller"] = mask("caller", state.caller)
    out["transcript"] = [
        {"role": line.role, "text": mask("transcript", line.text), "at": line.at}
        for line in state.transcript
    ]
    out["fsas"] = {
        name: {
            "state": view.state,
            "slots": {
                k: masking.mask_value(v)
                if k.lower() in keys and not isinstance(v, bool)
                else _mask_value(v, mask)
                for k, v in view.slots.items()
            },
        }
        for name, view in state.fsas.items()
    }
    return out


def _mask_value(value: Any, mask: Masker) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, str):
        return mask("arguments", value)
    return mask("arguments", json.dumps(value))
