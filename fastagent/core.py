"""The engine core: one input event in, decision events out.

Deterministic by construction: no I/O, no clock, no randomness, no globals.  A
decision carries the ``at`` of the input that caused it and the sequence numbers
that follow it; ids are derived from the call id and sequence numbers.  The
shell (``fastagent.service``) feeds it live inputs; ``fastagent.replay`` feeds it
recorded ones and compares what it decides with what was recorded.

The state here is small and bounded: counters, the current play stream, the
function calls of the response in progress, and the running FSAs.  The
transcript and other growing things belong to projections; the core keeps only
the recent turns a fresh model session's history can use (bounded by the
call's model's window: :func:`history_budget`).

What the core does not settle itself comes in as data: the agent and the audio
formats of a new call (:class:`Admission`, settled by ``fastagent.admission``
in the shell and in replay).  The call's status changes only through the table in
:mod:`fastagent.status`; the shell reads the engine through :class:`EngineView`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from fastagent import events as ev
from fastagent import fsa as fsa_mod
from fastagent import models
from fastagent.agent import Agent
from fastagent.events import response_event_id as response_event_id  # (its old home)
from fastagent.status import Status, Trigger, next_status

ENGINE_SERVER = "fastagent"  # the engine's own tools (FSA intents/steps, call control)
END_CALL = "end_call"
TRANSFER = "transfer_to_human"
SEND_DTMF = "send_dtmf"
_DTMF = re.compile(r"[0-9*#]{1,20}")
# What GPT-Live's frontend (the voice model) is told besides the agent's own
# instructions: the voice model is the frontend, the FSA's tools live in the
# backend.  Decided here, so a change to it shows in replay (ModelConfigured).
LIVE_FRONTEND_POLICY = (
    "You are the voice of this phone agent. Speak briefly and naturally. When the "
    "caller wants something done or looked up, delegate the task to your backend and "
    "keep the conversation going while it works; say what the backend answers. Never "
    "invent results. When the caller presses keys, the digits arrive as instructions: "
    "delegate with them."
)
# The timing and retry rules a call gets unless the operator overrides them
# (CallConfig); recorded in SessionAccepted, so replay sees a change to them.
POLICY = ev.CallPolicy(
    grace_s=30.0, tool_timeout_s=10.0, model_retries=5, history_items=24, model_timeout_s=10.0
)


SEED_SHARE = 4  # a fresh session's history may use 1/SEED_SHARE of the model's window
CHARS_PER_TOKEN = 4  # a conservative estimate for English text


def history_budget(model: str) -> int:
    """The characters of history a fresh session of ``model`` is told at most: a
    quarter of its context window (fastagent.models), at 4 characters a token."""
    return models.info(model).context_tokens // SEED_SHARE * CHARS_PER_TOKEN


def seed_pairs(
    pairs: list[tuple[str, str]], items: int = POLICY.history_items, budget: int = 32_000
) -> list[tuple[str, str]]:
    """What a fresh model session is told of the call so far: ``(role, text)``.

    ``pairs``: the turns the caller said or heard, oldest first (bot audio the
    caller never heard, deleted after a barge-in, is left out by the caller of
    this).  The last ``items`` turns (the call's ``CallPolicy.history_items``) go
    in as conversation items; anything older is folded into one system message,
    so a long call resumes with a few frames, not hundreds.  The whole history is
    kept within ``budget`` characters (:func:`history_budget`): the oldest part
    of the summary goes first.  Pure; the result uses only the longest suffix of
    ``pairs`` whose texts fit ``budget`` (so the core keeps no more than that).
    """
    pairs = [(role, text) for role, text in pairs if text]
    # (Not pairs[len - items:]: with fewer turns than items that index is negative.)
    recent = pairs[max(0, len(pairs) - items) :] if items else []
    while recent and sum(len(t) for _, t in recent) > budget:
        recent = recent[1:]
    older = pairs[: len(pairs) - len(recent)]
    if not older:
        return recent
    room = budget - sum(len(t) for _, t in recent)
    lines = [f"{role}: {text}" for role, text in older]
    while lines and sum(len(x) + 1 for x in lines) > room:
        lines.pop(0)
    if not lines:
        return recent
    return [("system", "Earlier in this call:\n" + "\n".join(lines)), *recent]


@dataclass(frozen=True, slots=True)
class Admission:
    """What the shell settled for a call's ``session.initiate`` before the core
    decides on it: the agent its ``CallConfig`` names and the audio formats
    negotiated for the formats the caller offered (``fastagent.admission.admit``).

    Data passed in, so the core imports neither the agent registry (which may
    import code) nor the protocols.  Replay settles it again from the recorded
    ``SessionInitiated`` with today's code, so a change to the negotiation shows
    at ``SessionAccepted``.  ``refused``: why the call cannot be taken (an unknown
    agent, no usable format), recorded as ``SessionRejected``; ``fault``: the
    agent's definition failed to load otherwise, recorded as ``EngineFault``.
    """

    agent: Agent | None = None
    media_format: str = ""  # the VAIC format chosen
    model_format: str = ""  # the model format it is bridged to
    refused: str = ""
    fault: str = ""


@dataclass(slots=True)
class Playback:
    """One play stream (one assistant audio item) as the engine sent it to the caller."""

    stream_id: str
    response_id: str
    item_id: str
    started_at: int
    speed: float = 1.0  # playback speed at the caller's side (1.0 = real time)
    sent_us: int = 0
    open: bool = True
    offset_us: int = 0  # where its first audio sits in the call's playout (PlayoutClock)
    until: int = 0  # when the caller will have heard all of it (µs since the epoch)

    def audible_until(self) -> int:
        """When the caller will have heard this stream to its end."""
        return self.until


@dataclass(slots=True)
class PlayoutClock:
    """What the caller has heard, across play streams and responses.

    VAIC plays a call's audio in real time (times ``speed``), stream after stream,
    as a queue: audio that arrives while earlier audio still plays waits its turn.
    Audio µs are counted along the call's playout (``queued_us``: everything
    forwarded so far); ``end_at`` is when the queue runs dry.  At any ``at`` not
    earlier than the last chunk, the caller has heard up to
    ``queued_us - (end_at - at) * speed`` -- the queue plays without a gap from
    ``at`` to ``end_at``.  A barge-in empties the queue (VAIC stops playing).
    """

    speed: float = 1.0
    queued_us: int = 0
    end_at: int = 0

    def add(self, at: int, duration_us: int) -> int:
        """Queue ``duration_us`` of audio forwarded at ``at``; returns its offset."""
        offset = self.queued_us
        start = max(at, self.end_at)
        self.end_at = start + int(duration_us / self.speed)
        self.queued_us += duration_us
        return offset

    def played_us(self, at: int) -> int:
        """Audio position (µs along the playout) the caller has heard by ``at``."""
        return self.queued_us - max(0, int((self.end_at - at) * self.speed))

    def heard_ms(self, offset_us: int, sent_us: int, at: int) -> int:
        """Whole ms heard by ``at`` of the audio at ``offset_us`` (``sent_us`` long)."""
        return max(0, min(self.played_us(at) - offset_us, sent_us)) // 1000

    def flush(self, at: int) -> None:
        """The caller's queue is dropped at ``at`` (barge-in, a new socket)."""
        self.queued_us = self.played_us(at)
        self.end_at = min(self.end_at, at)


@dataclass(slots=True)
class Queued:
    """An assistant audio item that may still be playing at the caller."""

    item_id: str
    response_id: str
    offset_us: int
    sent_us: int = 0


@dataclass(slots=True)
class ResponseLife:
    """The model's turn, owned in one place: is a response active, who started it,
    and what reply is still owed.

    FastAgent asks with ``response.create`` (``requested``: the seq of the
    ResponseRequested, its ``event_id`` on the wire); the server also starts
    responses itself (server VAD, the idle timeout, and -- racing ours -- right
    after a function output).  A ``response.created`` while a request of ours is
    waiting is taken as the answer to it; if the server then rejects that request
    with ``conversation_already_has_active_response``, the response under way was
    the server's, and it *is* the reply that was wanted: the debt is settled, not
    asked again after it (which made the model speak a second, unrequested reply).
    """

    requested: int = 0  # seq of our response.create not yet answered (0: none)
    requested_reason: str = ""
    requested_instructions: str = ""
    last_request: int = 0  # seq of our latest response.create (matches error.event_id)
    active: str = ""  # id of the response in progress ("" = none)
    origin: str = ""  # who started the active (or last) response: fastagent | server
    reason: str = ""  # what the active response answers (our request's reason)
    instructions: str = ""  # the instructions it was requested with
    owed: str = ""  # reason of a reply owed once no response is active
    failures: int = 0  # failed replies in a row (reset by a completed response)
    limited: bool = False  # a rate limit is at 0 (noted once until it recovers)

    @property
    def busy(self) -> bool:
        return bool(self.requested or self.active)


@dataclass(slots=True)
class InFlight:
    """A dispatched tool call whose result is awaited."""

    name: str
    model_call_id: str  # the model's function call to answer ("" = tell by message)
    fsa: str = ""  # the FSA run waiting for it


@dataclass
class Engine:
    """One call's core: ``handle(input) -> [decisions]``.

    ``Engine(call_id, admission=...)`` for a new call (the admission is what the
    shell settled for its ``session.initiate``; without one the call is
    rejected); a call restored from a checkpoint gets its ``agent`` instead.
    """

    call_id: str
    admission: Admission | None = None  # for session.initiate (the shell's, or replay's)
    agent: Agent | None = None
    media_format: str = ""
    model_format: str = ""
    model: str = ""  # CallConfig.model
    status: Status = Status.NEW  # changed only by _to (fastagent.status.TRANSITIONS)
    config_transfer: str = ""  # from CallConfig: overrides the agent's target
    greet: bool = True
    playback_speed: float = 1.0  # the caller side's, from CallConfig
    policy: ev.CallPolicy = POLICY  # decided at the session's acceptance
    next_seq: int = 1
    streams: int = 0
    play: Playback | None = None
    clock: PlayoutClock = field(default_factory=PlayoutClock)
    queue: list[Queued] = field(default_factory=list)  # items maybe still playing
    resp: ResponseLife = field(default_factory=ResponseLife)
    interrupted_response: str = ""
    failed: bool = False  # the model failed the call: its outcome is "failed"
    committed: str = ""  # caller item committed whose transcript has not arrived
    calls_in_response: list[ev.FunctionCallRequested] = field(default_factory=list)
    held_calls: list[ev.FunctionCallRequested] = field(default_factory=list)
    held_response: str = ""
    pending_end: tuple[str, str] = ("", "")  # CallEnded owed once running tools finish
    in_flight: dict[str, InFlight] = field(default_factory=dict)
    queued: list[tuple[str, str]] = field(default_factory=list)  # (model call id | "", text)
    control: tuple[str, str] = ("", "")  # (hangup | transfer, reason) after the next response
    runs: dict[str, fsa_mod.Run] = field(default_factory=dict)
    external: dict[str, ev.ToolSpec] = field(default_factory=dict)
    # GPT-Live (docs/models.md): no responses of the voice model, only of its
    # Responses backend, several at once (one per delegation); no truncate.
    live: bool = False
    live_calls: dict[str, list[ev.FunctionCallRequested]] = field(default_factory=dict)
    live_active: list[str] = field(default_factory=list)  # backend responses under way
    live_outputs: bool = False  # function outputs sent that no response.create continued
    barged: bool = False  # the caller talked over the output item still playing
    caller_away: bool = False  # the caller's socket dropped and no resume came yet
    barge_told: bool = False  # GPT-Live: VAIC was told of this caller turn's barge-in
    control_after: int = -1  # GPT-Live: call control once a stream after this one ends
    # The turns the caller said or heard (item id, role, text), oldest first: the
    # longest suffix within the history budget (seed_pairs needs no more), and the
    # assistant items deleted unheard whose transcript has not arrived (the last 64).
    heard: list[tuple[str, str, str]] = field(default_factory=list)
    heard_chars: int = 0
    unheard: list[str] = field(default_factory=list)
    _out: list[ev.Decision] = field(default_factory=list)
    _at: int = 0

    # ----------------------------------------------------------------- entry

    def handle(self, event: ev.Input) -> list[ev.Decision]:
        """Decide what ``event`` calls for.  Decisions are numbered after it."""
        self.next_seq = event.seq + 1
        self._at = event.at
        self._out = []
        handler = _HANDLERS.get(type(event))
        # (Module constants: an Enum class attribute costs ~60 ns, on every chunk.)
        if handler is None or self.status is _ENDED:
            return self._out
        try:
            if self.status is _CLOSING:
                if type(event) is ev.ToolResult:
                    self._close_after_tool(event)  # type: ignore[arg-type]
                return self._out
            handler(self, event)
        except Exception as exc:  # never leave a half-decided input without a trace
            self._out = []
            self.next_seq = event.seq + 1
            self._emit(
                ev.EngineFault,
                input_type=type(event).__name__,
                error=f"{type(exc).__name__}: {exc}"[:300],
            )
        return self._out

    @cached_property
    def view(self) -> EngineView:
        """The read-only window the shell reads the engine through."""
        return EngineView(self)

    @property
    def response_active(self) -> bool:
        """A response is under way or requested (no ``response.create`` may go now)."""
        return self.resp.busy

    # -------------------------------------------------------------- helpers

    def _to(self, trigger: Trigger) -> None:
        """Change status by ``trigger``: the one place it changes.  An illegal change
        raises IllegalTransition, which :meth:`handle` records as an EngineFault."""
        self.status = next_status(self.status, trigger)

    def _emit(self, cls: type[ev.Decision], **fields: Any) -> None:
        self._out.append(cls(call_id=self.call_id, seq=self.next_seq, at=self._at, **fields))
        self.next_seq += 1

    def _notify(self, message_type: ev.CallerNotice, text: str = "", participant: str = "") -> None:
        """Tell the caller's VAIC side about its own stream (a ``CallerNotified``),
        while a caller socket is attached (not before acceptance, nor while
        suspended, nor once the call is closing)."""
        if self.status in (Status.ACTIVE, Status.ENDING):
            self._emit(
                ev.CallerNotified, message_type=message_type, text=text, participant=participant
            )

    def _pci_state(self) -> tuple[str, str] | None:
        """(fsa, state) of the first FSA run in a state that collects payment-card
        data (``State(pci=True)``), or None."""
        for name, run in self.runs.items():
            f = self.agent.fsa(name) if self.agent is not None else None
            st = f.state_by_name.get(run.state) if f is not None else None
            if st is not None and st.pci:
                return name, run.state
        return None

    def _pci_changed(self, before: tuple[str, str] | None) -> None:
        """Decide pause/resume of the call recording if the payment-card state changed."""
        now = self._pci_state()
        if now is not None and before is None:
            self._emit(ev.CallRecordingPaused, fsa=now[0], state=now[1])
        elif now is None and before is not None:
            self._emit(ev.CallRecordingResumed, fsa=before[0], state=before[1])

    def _control_tools(self) -> list[ev.ToolSpec]:
        tools = [
            ev.ToolSpec(
                name=END_CALL,
                description="End the call after the caller said goodbye or is done.",
                parameters={"type": "object", "properties": {"reason": {"type": "string"}}},
            )
        ]
        if self._transfer_target():
            tools.append(
                ev.ToolSpec(
                    name=TRANSFER,
                    description="Transfer the caller to a human agent.",
                    parameters={"type": "object", "properties": {"reason": {"type": "string"}}},
                )
            )
        assert self.agent is not None
        if self.agent.send_dtmf:
            tools.append(
                ev.ToolSpec(
                    name=SEND_DTMF,
                    description="Send DTMF keys on the line (0-9, * and #, up to 20).",
                    parameters={
                        "type": "object",
                        "properties": {"digits": {"type": "string"}},
                        "required": ["digits"],
                    },
                )
            )
        return tools

    def _transfer_target(self) -> str:
        assert self.agent is not None
        return self.config_transfer or self.agent.transfer_target

    def _configure(self, fresh: bool = False) -> None:
        """Decide what the model is told now: the agent's instructions with those of
        each running FSA's state, and the full specs of the tools it may call; for a
        ``fresh`` model session, also the call so far (:meth:`_history`)."""
        agent = self.agent
        assert agent is not None
        parts = [agent.instructions]
        tools = self._control_tools()
        effort = ""
        for f in agent.fsas:
            run = self.runs.get(f.name)
            if run is None:
                tools.append(_spec(f.intent_tool()))
                continue
            st = f.state(run.state)
            effort = effort or st.reasoning_effort
            parts.append(f"[Task {f.name}, step {st.name}] {st.instructions}")
            tools.extend(_spec(t) for t in f.step_tools(st.name))
        for name in agent.tools:
            spec = self.external.get(name)
            if spec is not None:
                tools.append(_spec(spec))
        self._emit(
            ev.ModelConfigured,
            instructions="\n\n".join(parts),
            tools=tuple(tools),
            voice=agent.voice,
            input_format=self.model_format,
            output_format=self.model_format,
            # Only reasoning models take it (the older ones refuse the field).
            reasoning_effort=(effort or agent.reasoning_effort)
            if models.info(self.model).reasoning
            else "",
            frontend_instructions=f"{agent.instructions}\n\n{LIVE_FRONTEND_POLICY}"
            if self.live
            else "",
            model=self.model if self.live else "",
            history=self._history() if fresh else (),
        )

    def _history(self) -> tuple[ev.HistoryItem, ...]:
        """The call so far, for a fresh model session: :func:`seed_pairs` of the
        turns the caller heard, within the call's model's budget (CallConfig.model)."""
        pairs = [(role, text) for _, role, text in self.heard]
        seed = seed_pairs(pairs, self.policy.history_items, history_budget(self.model))
        return tuple(ev.HistoryItem(role=role, text=text) for role, text in seed)

    def _hear(self, e: ev.Transcript) -> None:
        """Keep a transcript line for the history (unless its item was deleted unheard)."""
        if e.role == "assistant" and e.item_id in self.unheard:
            self.unheard.remove(e.item_id)
            return
        if not e.text:
            return
        self.heard.append((e.item_id, e.role, e.text))
        self.heard_chars += len(e.text)
        budget = history_budget(self.model)
        drop = 0
        while self.heard_chars > budget:
            self.heard_chars -= len(self.heard[drop][2])
            drop += 1
        if drop:
            del self.heard[:drop]

    def _deleted(self, item_id: str) -> None:
        """An assistant item the caller never heard: out of the history."""
        kept = [h for h in self.heard if h[0] != item_id]
        if len(kept) != len(self.heard):
            self.heard = kept
            self.heard_chars = sum(len(h[2]) for h in kept)
            return
        self.unheard.append(item_id)  # its transcript may still come
        del self.unheard[:-64]

    def _request(self, reason: str, instructions: str = "") -> None:
        if self.live and not (self.live_outputs or reason == "retry"):
            # GPT-Live has no response.create for its voice: it speaks when it
            # chooses.  What FastAgent wants said goes in as commentary; only the
            # Responses backend takes response.create (to go on after tool results).
            if instructions:
                self._emit(ev.ContextAppended, kind="commentary", content=instructions)
            return
        r = self.resp
        if r.busy:
            r.owed = r.owed or reason
            return
        self.live_outputs = False
        r.owed = ""
        r.requested = r.last_request = self.next_seq
        r.requested_reason, r.requested_instructions = reason, instructions
        self._emit(ev.ResponseRequested, reason=reason, instructions=instructions)

    def _pay_owed(self) -> None:
        r = self.resp
        if r.owed and not r.busy and self.status is Status.ACTIVE:
            reason, r.owed = r.owed, ""
            self._request(reason)

    def _tell(self, model_call_id: str, payload: dict[str, Any] | str) -> None:
        text = payload if isinstance(payload, str) else json.dumps(payload, sort_keys=True)
        self.queued.append((model_call_id, text))

    def _flush(self, reason: str) -> None:
        """Send what the model must hear, then ask for a response, never mid-response.

        While a call the model is waiting on still runs (parallel function calls of
        one response), the outputs wait for it: all go out, then exactly one
        ``response.create``."""
        if self.resp.busy or not self.queued:
            return
        if any(f.model_call_id for f in self.in_flight.values()):
            return
        for model_call_id, text in self.queued:
            if model_call_id:
                self._emit(ev.FunctionOutputSent, tool_call_id=model_call_id, output=text)
                self.live_outputs = self.live
            elif self.live:
                # Instructions reach the backend's future delegations too.
                self._emit(ev.ContextAppended, kind="instructions", content=text)
            else:
                self._emit(ev.MessageInjected, role="system", text=text)
        self.queued.clear()
        self._request(reason)

    def _stop_playback(self, reason: str) -> None:
        pb = self.play
        if pb is not None and pb.open:
            pb.open = False
            self._emit(
                ev.PlaybackStopped,
                stream_id=pb.stream_id,
                reason=reason,
                played_ms=pb.sent_us // 1000,
            )

    def _end(self, reason: str, outcome: str) -> None:
        # Refused by the table before anything changes (raises IllegalTransition).
        next_status(self.status, Trigger.WAIT_TOOLS if self.in_flight else Trigger.END)
        if self.failed and outcome != "rejected":
            outcome = "failed"  # the model failed the call: never "completed"
        self._stop_playback("ended")
        assert self.agent is not None or not self.runs
        pci = self._pci_state()
        for name, run in list(self.runs.items()):
            self._emit(
                ev.FsaFinished, fsa=name, state=run.state, outcome="abandoned", reason=reason
            )
        self.runs.clear()
        self._pci_changed(pci)
        self._skip_held("the call ended before the caller heard the response")
        if self.committed:
            self._transcript_missing()
        if self.in_flight:
            # A side effect that started has its result recorded before the log
            # closes: wait for the tool calls still running (they all time out).
            self._to(Trigger.WAIT_TOOLS)
            self.pending_end = (reason, outcome)
            return
        self._to(Trigger.END)
        self._emit(ev.CallEnded, reason=reason, outcome=outcome)

    # ------------------------------------------------------------- sessions

    def _on_initiated(self, e: ev.SessionInitiated) -> None:
        a = self.admission
        if a is not None and a.fault:
            # The agent's definition failed to load: the fault is the decision.
            self._emit(ev.EngineFault, input_type=type(e).__name__, error=a.fault[:300])
            return
        if a is None or a.refused:
            self._to(Trigger.REJECT)
            reason = a.refused if a is not None else "no agent was resolved for the call"
            self._emit(ev.SessionRejected, reason=reason)
            self._emit(ev.CallEnded, reason="rejected", outcome="rejected")
            return
        self._to(Trigger.ACCEPT)
        self.agent = a.agent
        self.live = models.is_live_model(e.config.model)
        self.media_format, self.model_format = a.media_format, a.model_format
        self.config_transfer = e.config.transfer_target
        self.model = e.config.model
        self.greet = e.config.greet
        self.playback_speed = e.config.playback_speed if e.config.playback_speed > 0 else 1.0
        self.policy = _policy(e.config)
        self._emit(
            ev.SessionAccepted,
            media_format=self.media_format,
            model_format=self.model_format,
            policy=self.policy,
        )
        self._configure()

    def _on_call_started(self, e: ev.CallStarted) -> None:
        if self.status is not Status.ACTIVE:
            return  # e.g. the model already failed the call: the fallback is under way
        if self.agent is not None and self.agent.session_params:
            self._emit(ev.SessionParamsSent, params=dict(self.agent.session_params))
        if self.agent is not None and self.greet:
            self._request("greeting", self.agent.greeting)

    def _on_resumed(self, e: ev.SessionResumed) -> None:
        if self.agent is None:
            self._emit(ev.SessionRejected, reason="conversation not found")
            return
        self._to(Trigger.RESUME)
        self.caller_away = False
        self._emit(
            ev.SessionAccepted,
            media_format=self.media_format,
            model_format=self.model_format,
            resumed=True,
            policy=self.policy,
        )
        if self.held_response:  # no barge-in happened before the drop
            calls, self.held_calls, self.held_response = self.held_calls, [], ""
            self._run_calls(calls, e, interrupted=False)

    def _on_session_ended(self, e: ev.SessionEnded) -> None:
        outcome = {"transfer": "transferred", "hangup": "completed"}.get(self.control[0], "")
        if not outcome:
            outcome = "transferred" if e.reason_code == "transferred" else "caller_hangup"
        self._end(e.reason or e.reason_code or "session ended", outcome)

    def _on_connection_lost(self, e: ev.ConnectionLost) -> None:
        if e.side == "caller":
            if self.status is Status.ENDING:
                self._end("caller left after hangup", "completed")
                return
            self._to(Trigger.CALLER_LOST)  # first: an illegal drop changes nothing
            self.caller_away = True
            self._stop_playback("connection_lost")
            self.play = None
            self.clock.flush(e.at)  # what the old socket still had queued is gone
            self.queue.clear()
        elif e.side == "model" and self.live:
            # A GPT-Live session cannot be resumed: its delegations die with it.
            for calls in self.live_calls.values():
                for call in calls:
                    self._emit(
                        ev.FunctionCallSkipped,
                        tool_call_id=call.tool_call_id,
                        name=call.name,
                        reason="model disconnected",
                    )
            self.live_calls.clear()
            self.live_active.clear()
            self._stop_playback("model_lost")
            self.play = None
            self.resp.requested = 0
            self.resp.active = ""
            self.live_outputs = False
        elif e.side == "model" and self.resp.busy:
            # The response in progress is gone with the socket: none of its calls run.
            for call in self.calls_in_response:
                self._emit(
                    ev.FunctionCallSkipped,
                    tool_call_id=call.tool_call_id,
                    name=call.name,
                    reason="model disconnected",
                )
            self.calls_in_response.clear()
            self._stop_playback("model_lost")
            r = self.resp
            r.requested = 0
            r.active = ""
            r.owed = r.owed or "resume after model reconnect"

    def _on_connection_restored(self, e: ev.ConnectionRestored) -> None:
        if e.side == "model" and self.agent is not None:
            # A new model session knows none of the old one's function call ids:
            # results still owed to them are told as messages instead.
            for flight in self.in_flight.values():
                flight.model_call_id = ""
            self.queued = [("", text) for _, text in self.queued]
            self._configure(fresh=True)  # a new session: told the call so far
            if self.live:
                # A new GPT-Live session, seeded with the call so far, does not speak
                # by itself: ask it to go on, and hand over what it must know.
                self.resp.owed = ""
                if self.status is Status.ACTIVE:
                    self._emit(
                        ev.ContextAppended,
                        kind="commentary",
                        content="The line dropped for a moment and is back. Carry on "
                        "the conversation where it was; do not greet the caller again.",
                    )
                self._flush("tool results")
                return
            if self.resp.owed:
                reason, self.resp.owed = self.resp.owed, ""
                self._request(reason)

    def _on_grace_expired(self, e: ev.GraceExpired) -> None:
        if self.status is Status.SUSPENDED:
            self._end(f"caller did not return within {e.seconds:g} s", "dropped")
        elif self.status is Status.ENDING and self.caller_away:
            # A hangup or transfer decided while the caller was away, and no socket
            # came back to carry it: end the call, or it would stay open for good.
            # A goodbye decided is a completed call; a transfer that never reached
            # the line is a drop.
            outcome = "dropped" if self.control[0] == "transfer" else "completed"
            self._end(f"caller did not return within {e.seconds:g} s", outcome)

    # ---------------------------------------------------------------- audio

    def _on_caller_stream_started(self, e: ev.CallerStreamStarted) -> None:
        self._notify("userStream.started", participant=e.participant)

    def _on_caller_stream_stopped(self, e: ev.CallerStreamStopped) -> None:
        self._notify("userStream.stopped", participant=e.participant)

    def _on_caller_audio(self, e: ev.CallerAudio) -> None:
        pass  # forwarded by the shell untouched; recorded for replay and analytics

    def _on_bot_audio(self, e: ev.BotAudio) -> None:
        pb = self.play
        clock = self.clock
        if pb is None or pb.item_id != e.item_id:
            if e.response_id == self.interrupted_response or self.status is not Status.ACTIVE:
                return  # late audio of an interrupted response: not played
            if self.live and self.barged:
                self._live_cut(e.at)  # GPT-Live moved on after the caller talked over it
            self._stop_playback("next")
            self.streams += 1
            clock.speed = self.playback_speed
            pb = self.play = Playback(
                stream_id=f"play-{self.streams}",
                response_id=e.response_id,
                item_id=e.item_id,
                started_at=e.at,
                speed=self.playback_speed,
                offset_us=clock.queued_us,
            )
            # Items the caller has heard out need no tracking any more.
            played = clock.played_us(e.at)
            self.queue = [q for q in self.queue if q.offset_us + q.sent_us > played]
            if len(self.queue) >= 64:  # bounded: a queue that long is heard out
                del self.queue[0]
            self.queue.append(Queued(e.item_id, e.response_id, clock.queued_us))
            self._emit(
                ev.PlaybackStarted,
                stream_id=pb.stream_id,
                response_id=e.response_id,
                item_id=e.item_id,
                fmt=self.media_format,
            )
        if pb.open:
            clock.add(e.at, e.duration_us)
            pb.sent_us += e.duration_us
            pb.until = clock.end_at
            self.queue[-1].sent_us = pb.sent_us

    def _on_speech_started(self, e: ev.SpeechStarted) -> None:
        if self.live:
            # VAIC hears of a GPT-Live barge-in when the engine cuts its playback.
            self._live_speech_started(e)
            return
        self._barge_in(e)
        self._notify("userStream.speech.started")

    def _on_speech_stopped(self, e: ev.SpeechStopped) -> None:
        if not self.live:  # GPT-Live's are its transcript deltas' ends: not VAD
            self._notify("userStream.speech.stopped")

    def _barge_in(self, e: ev.SpeechStarted) -> None:
        clock = self.clock
        played = clock.played_us(e.at)
        unheard = [q for q in self.queue if q.offset_us + q.sent_us > played]
        pb = self.play
        if not unheard:
            return  # nothing is playing: the caller just speaks
        # VAIC stops playing (barge-in): the item being heard is cut at what the
        # caller heard of it, items queued behind it were never heard at all.
        if pb is not None and pb.open:
            pb.open = False
            heard = clock.heard_ms(pb.offset_us, pb.sent_us, e.at)
            self._emit(
                ev.PlaybackStopped, stream_id=pb.stream_id, reason="barge_in", played_ms=heard
            )
        for q in unheard:
            heard = clock.heard_ms(q.offset_us, q.sent_us, e.at)
            if heard > 0:
                self._emit(ev.TruncateRequested, item_id=q.item_id, audio_end_ms=heard)
            else:
                self._emit(ev.ItemDeleted, item_id=q.item_id, reason="never heard (barge-in)")
                self._deleted(q.item_id)
            if self.held_response == q.response_id:
                self._skip_held("caller interrupted the response before the call ran")
        self.interrupted_response = unheard[-1].response_id
        clock.flush(e.at)
        self.queue.clear()
        self.play = None
        if self.control[0]:
            self.control = ("", "")  # the caller interrupted the goodbye: stay on the line
            if self.status is Status.ENDING:
                self._to(Trigger.STAY)

    # ------------------------------------------------------------ responses

    def _on_response_started(self, e: ev.ResponseStarted) -> None:
        r = self.resp
        if r.requested:  # the answer to our response.create (unless it is rejected)
            r.origin, r.reason = "fastagent", r.requested_reason
            r.instructions, r.requested = r.requested_instructions, 0
        else:  # server VAD, the idle timeout, or the server going on by itself
            r.origin, r.reason, r.instructions = "server", "server", ""
        r.active = e.response_id
        self.calls_in_response.clear()
        if self.live and e.response_id not in self.live_active:
            if len(self.live_active) >= 16:  # bounded: the oldest is long gone
                del self.live_active[0]
            self.live_active.append(e.response_id)

    def _on_function_call(self, e: ev.FunctionCallRequested) -> None:
        if self.live:
            # Per backend response: several delegations may be in flight at once.
            calls = self.live_calls.setdefault(e.response_id, [])
            if len(calls) < 32 and len(self.live_calls) <= 16:
                calls.append(e)
            else:
                self._emit(
                    ev.FunctionCallSkipped,
                    tool_call_id=e.tool_call_id,
                    name=e.name,
                    reason="too many",
                )
            return
        # Held until the response is done: a call of an interrupted response never runs.
        if len(self.calls_in_response) < 32:
            self.calls_in_response.append(e)
        else:
            self._emit(
                ev.FunctionCallSkipped, tool_call_id=e.tool_call_id, name=e.name, reason="too many"
            )

    def _on_response_done(self, e: ev.ResponseDone) -> None:
        if self.live:
            self._live_response_done(e)
            return
        r = self.resp
        if e.response_id == r.active or not r.active:
            r.active = ""
        calls, self.calls_in_response = self.calls_in_response, []
        pb = self.play
        if pb is not None and pb.response_id == e.response_id:
            self._stop_playback("done")
        if e.status == "completed":
            r.failures = 0
        elif e.status == "failed" or (e.status == "incomplete" and calls):
            # None of its calls run, so the reply the caller is owed did not come.
            self._skip_calls(calls, e)
            kind = "response_failed" if e.status == "failed" else "response_incomplete"
            code = e.error_code or e.error_type or e.reason
            self._reply_failed(kind, code, e.error_message, e.response_id)
            return
        elif e.status == "incomplete":  # cut short (max_output_tokens, content_filter)
            self._note(
                kind="response_incomplete",
                action="none",
                code=e.reason,
                message=e.error_message,
                response_id=e.response_id,
            )
        interrupted = e.status != "completed" or e.response_id == self.interrupted_response
        audible = pb is not None and pb.response_id == e.response_id and e.at < pb.audible_until()
        if audible and not interrupted and (calls or self.control[0]):
            # The caller is still hearing this response: its calls (and a hangup or
            # transfer after it) wait until they have heard it out (PlaybackDrained),
            # and a barge-in before that cancels them.
            self.held_calls, self.held_response = calls, e.response_id
            return
        self._run_calls(calls, e, interrupted)

    def _skip_calls(self, calls: list[ev.FunctionCallRequested], e: ev.ResponseDone) -> None:
        why = f"response {e.status}" + (f" ({e.reason})" if e.reason else "")
        if e.response_id == self.interrupted_response and e.status == "completed":
            why = "response interrupted by the caller"
        for call in calls:
            self._emit(
                ev.FunctionCallSkipped, tool_call_id=call.tool_call_id, name=call.name, reason=why
            )

    def _run_calls(
        self, calls: list[ev.FunctionCallRequested], e: ev.Input, interrupted: bool
    ) -> None:
        if interrupted:
            assert isinstance(e, ev.ResponseDone)
            self._skip_calls(calls, e)
        else:
            for call in calls:
                self._run_call(call)
        kind, reason = self.control
        if kind and not interrupted and not self.queued:
            if self.live:
                # GPT-Live says the goodbye *after* its backend finished: the call
                # ends when the next output item stops (ModelOutputStopped).
                self.control_after = self.streams
                return
            self._do_control()
            return
        self._flush("tool results")
        self._pay_owed()

    def _do_control(self) -> None:
        kind, reason = self.control
        if kind == "hangup":
            self._emit(ev.HangupRequested, reason=reason)
        else:
            self._emit(ev.TransferRequested, target=self._transfer_target(), reason=reason)
        self._to(Trigger.HANG_UP)

    def _on_playback_drained(self, e: ev.PlaybackDrained) -> None:
        # While the caller is away, the decision waits for the resume.
        if self.status is Status.ACTIVE and e.response_id == self.held_response:
            calls, self.held_calls, self.held_response = self.held_calls, [], ""
            self._run_calls(calls, e, interrupted=False)

    def _skip_held(self, reason: str) -> None:
        for call in self.held_calls:
            self._emit(
                ev.FunctionCallSkipped,
                tool_call_id=call.tool_call_id,
                name=call.name,
                reason=reason,
            )
        self.held_calls, self.held_response = [], ""

    # ------------------------------------------------------------- GPT-Live

    def _live_response_done(self, e: ev.ResponseDone) -> None:
        """A backend (Responses) response of a delegation finished.

        Speech never interrupts backend work on GPT-Live [DOCS], so its calls run
        unless the response itself failed; the caller talking over the voice
        changes nothing here (the FSA's confirmation states guard side effects).
        """
        r = self.resp
        if e.response_id in self.live_active:
            self.live_active.remove(e.response_id)
        # Busy while any delegation's backend response runs: response.create goes
        # only when none does (which waiting response it continues is the server's).
        r.active = self.live_active[-1] if self.live_active else ""
        calls = self.live_calls.pop(e.response_id, [])
        if e.status == "completed":
            r.failures = 0
            self._run_calls(calls, e, interrupted=False)
            return
        self._skip_calls(calls, e)
        kind = "response_failed" if e.status == "failed" else "response_incomplete"
        code = e.error_code or e.error_type or e.reason
        if calls or e.status == "failed":
            self._reply_failed(kind, code, e.error_message, e.response_id)
        else:
            self._note(kind=kind, action="none", code=code, message=e.error_message)
            self._pay_owed()

    def _live_speech_started(self, e: ev.SpeechStarted) -> None:
        """The caller talks over what they still hear.  GPT-Live stops by itself (or
        goes on: it is full duplex); FastAgent waits for its output to stop."""
        self.barge_told = False  # a new caller turn
        played = self.clock.played_us(e.at)
        if not any(q.offset_us + q.sent_us > played for q in self.queue):
            return  # nothing is playing: the caller just speaks
        pb = self.play
        if pb is not None and pb.open:
            self.barged = True  # settled at ModelOutputStopped
            return
        # The model's output had stopped already; VAIC still played its queue.
        self._live_cut(e.at)

    def _live_cut(self, at: int) -> None:
        """VAIC stops playing (barge-in): record what the caller heard of each item."""
        clock = self.clock
        played = clock.played_us(at)
        pb = self.play
        if pb is not None and pb.open:
            pb.open = False
            heard = clock.heard_ms(pb.offset_us, pb.sent_us, at)
            self._emit(
                ev.PlaybackStopped, stream_id=pb.stream_id, reason="barge_in", played_ms=heard
            )
        for q in self.queue:
            if q.offset_us + q.sent_us > played:
                if not self.barge_told:
                    # VAIC's barge-in: it stops playing what it has queued (once a turn).
                    self.barge_told = True
                    self._notify("userStream.speech.started")
                heard = clock.heard_ms(q.offset_us, q.sent_us, at)
                self._emit(
                    ev.ItemHeard, item_id=q.item_id, heard_ms=heard, sent_ms=q.sent_us // 1000
                )
        clock.flush(at)
        self.queue.clear()
        self.play = None
        self.barged = False
        if self.control[0]:
            self.control = ("", "")  # the caller interrupted the goodbye: stay on the line
            self.control_after = -1
            if self.status is Status.ENDING:
                self._to(Trigger.STAY)

    def _on_output_stopped(self, e: ev.ModelOutputStopped) -> None:
        pb = self.play
        if not self.live or pb is None or pb.item_id != e.item_id or not pb.open:
            return
        if self.barged and e.at < pb.audible_until():
            self._live_cut(e.at)
            return
        self.barged = False
        self._stop_playback("done")
        self.play = None
        if self.control[0] and 0 <= self.control_after < self.streams:
            self.control_after = -1
            self._do_control()

    # ------------------------------------------------------------- failures

    def _note(self, **fields: Any) -> None:
        self._emit(ev.ModelFailureHandled, attempt=self.resp.failures, **fields)

    def _reply_failed(self, kind: str, code: str, message: str, response_id: str = "") -> None:
        """A reply the caller is owed did not come: retry once, then apologise, then
        the agent's fallback (transfer or hang-up; the call's outcome is failed)."""
        r = self.resp
        r.failures += 1
        fields = dict(kind=kind, code=code, message=message[:300], response_id=response_id)
        if self.status is not Status.ACTIVE:
            self._note(action="none", **fields)
            return
        if r.failures == 1:
            self._note(action="retry", **fields)
            self._request(r.reason if r.reason != "server" else "retry", r.instructions)
        elif r.failures == 2:
            self._note(action="apology", **fields)
            assert self.agent is not None
            self._request("apology", self.agent.apology)
        else:
            self._note(action="fallback", **fields)
            self._fallback(f"the voice model failed ({kind}{': ' + code if code else ''})")

    def _fallback(self, why: str) -> None:
        """The agent's fallback when the model cannot carry the call on."""
        if self.status is not Status.ACTIVE:
            return
        self.failed = True
        self._stop_playback("failed")
        self._skip_held("the voice model failed")
        target = self._transfer_target()
        assert self.agent is not None
        if target and self.agent.fallback != "hangup":
            self._emit(ev.TransferRequested, target=target, reason=why)
        else:
            self._emit(ev.HangupRequested, reason=why)
        self._to(Trigger.HANG_UP)

    def _on_model_error(self, e: ev.ModelError) -> None:
        r = self.resp
        fields = dict(code=e.code or e.error_type, message=e.message[:300])
        if e.error_type in ("connection", "protocol"):
            # No model to talk to (or one the shell cut off: a flood, too many bad
            # frames): no dead air -- the fallback, and the log says why.
            if self.status is Status.ACTIVE:
                r.failures += 1
                kind = "unreachable" if e.error_type == "connection" else "protocol"
                self._note(kind=kind, action="fallback", **fields)
                self._fallback("the voice model is unavailable")
            return
        ours = bool(e.event_id) and e.event_id == response_event_id(r.last_request)
        if e.code == "conversation_already_has_active_response" and (ours or not e.event_id):
            # The reply we asked for is already coming: the server started it itself.
            if r.requested:
                r.requested = 0
                if not r.active:  # its response.created has not reached us: it will
                    r.owed = ""
            if r.active:
                r.origin = "server"
                r.owed = ""
            self._note(kind="active_response", action="settled", **fields)
            return
        if e.code == "session_expired":
            # The session is over: a new one, told the call so far (the shell reconnects).
            self._note(kind="session_expired", action="reconnect", **fields)
            return
        limited = "rate_limit" in e.code or "rate_limit" in e.error_type
        kind = "rate_limited" if limited else "request_refused" if ours else "error"
        if ours and r.requested == r.last_request:
            # Our response.create was refused: no response is coming for it.
            r.requested = 0
            r.reason, r.instructions = r.requested_reason, r.requested_instructions
            self._reply_failed(kind, **fields)
            return
        self._note(kind=kind, action="none", **fields)

    def _on_model_timeout(self, e: ev.ModelTimeout) -> None:
        r = self.resp
        if e.waiting_for == "response.created":
            if not r.requested or e.event_id != response_event_id(r.requested):
                return  # answered after all (the timer lost the race)
            r.requested = 0
        if self.status is not Status.ACTIVE:
            return
        r.failures += 1
        self._note(
            kind="timeout",
            action="fallback",
            code=e.waiting_for,
            message=f"no {e.waiting_for} within {e.seconds:g} s",
        )
        self._fallback(f"the voice model did not answer ({e.waiting_for})")

    def _on_rate_limits(self, e: ev.RateLimitsUpdated) -> None:
        r = self.resp
        hit = [x for x in e.limits if x.limit and x.remaining <= 0]
        if hit and not r.limited:
            r.limited = True
            names = ", ".join(f"{x.name} (resets in {x.reset_seconds:g} s)" for x in hit)
            self._note(kind="rate_limited", action="none", message=f"at 0: {names}")
        elif not hit:
            r.limited = False

    def _on_transcript(self, e: ev.Transcript) -> None:
        self._hear(e)
        if e.role != "user":
            return
        if e.item_id == self.committed:
            self.committed = ""
        if e.text:  # the model's words, encoded into the frame (vaic.notification)
            self._notify("userStream.speech.recognition", text=e.text)

    def _on_committed(self, e: ev.SpeechCommitted) -> None:
        if self.committed:
            self._transcript_missing()
        self.committed = e.item_id
        self._notify("userStream.speech.committed")

    def _transcript_missing(self) -> None:
        item, self.committed = self.committed, ""
        self._note(
            kind="transcription_missing",
            action="none",
            item_id=item,
            message="no transcript of the caller's words arrived before the next turn",
        )

    def _on_transcription_failed(self, e: ev.TranscriptionFailed) -> None:
        # The model heard the audio and answers it; only the caller's words are missing.
        if e.item_id == self.committed:
            self.committed = ""
        self._note(
            kind="transcription_failed",
            action="none",
            code=e.code or e.error_type,
            message=e.message[:300],
            item_id=e.item_id,
        )

    def _on_dtmf(self, e: ev.Dtmf) -> None:
        if self.status is not Status.ACTIVE:
            return
        if self.live:
            # Instructions, not commentary: the backend's next delegation needs them.
            self._emit(
                ev.ContextAppended,
                kind="instructions",
                content=f"The caller pressed keys on the phone keypad: {e.digits}",
            )
            return
        self._emit(ev.MessageInjected, role="user", text=f"[The caller pressed keys: {e.digits}]")
        self._request("dtmf")

    # ---------------------------------------------------------------- tools

    def _on_tools_listed(self, e: ev.ToolsListed) -> None:
        for spec in e.tools:
            if spec.server != e.server:
                spec = ev.ToolSpec(
                    name=spec.name,
                    description=spec.description,
                    parameters=spec.parameters,
                    server=e.server,
                )
            self.external[spec.name] = spec
        agent = self.agent
        if agent and self.status is Status.ACTIVE and any(s.name in agent.tools for s in e.tools):
            self._configure()  # the model may now call them in open conversation

    def _run_call(self, call: ev.FunctionCallRequested) -> None:
        agent = self.agent
        assert agent is not None
        try:
            args = json.loads(call.arguments or "{}")
            if not isinstance(args, dict):
                raise ValueError("arguments are not an object")
        except ValueError:
            self._dispatch_engine(call)
            self._tell(call.tool_call_id, {"ok": False, "error": "arguments are not valid JSON"})
            return
        if call.name == SEND_DTMF and agent.send_dtmf:
            self._dispatch_engine(call)
            digits = str(args.get("digits", ""))
            if _DTMF.fullmatch(digits):
                self._emit(ev.DtmfSent, digits=digits)
                self._tell(call.tool_call_id, {"ok": True, "sent": digits})
            else:
                self._tell(call.tool_call_id, {"ok": False, "error": "digits: 1-20 of 0-9 * #"})
            return
        if call.name in (END_CALL, TRANSFER):
            self._dispatch_engine(call)
            reason = str(args.get("reason") or ("caller is done" if call.name == END_CALL else ""))
            if call.name == TRANSFER and not self._transfer_target():
                self._tell(
                    call.tool_call_id, {"ok": False, "error": "no transfer target configured"}
                )
                return
            self.control = ("hangup" if call.name == END_CALL else "transfer", reason)
            then = "Say a brief goodbye." if call.name == END_CALL else "Say you are transferring."
            self._tell(call.tool_call_id, {"ok": True, "next": then + " The call then ends."})
            return
        for f in agent.fsas:
            run = self.runs.get(f.name)
            if run is None and call.name == f.intent:
                self._dispatch_engine(call)
                pci = self._pci_state()
                run, outcome = fsa_mod.start(f)
                self.runs[f.name] = run
                self._emit(ev.FsaStarted, fsa=f.name, state=run.state, trigger=call.name)
                self._apply(f, run, outcome, call.tool_call_id, started=True, pci=pci)
                return
            if run is not None and (
                call.name == f.cancel_tool
                or any(s.name == call.name for s in f.state(run.state).steps)
            ):
                self._dispatch_engine(call)
                pci = self._pci_state()  # before the step moves the run
                self._apply(
                    f,
                    run,
                    fsa_mod.call_step(f, run, call.name, args),
                    call.tool_call_id,
                    arguments=call.arguments,
                    pci=pci,
                )
                return
        spec = self.external.get(call.name)
        if spec is None:
            self._emit(
                ev.FunctionCallSkipped,
                tool_call_id=call.tool_call_id,
                name=call.name,
                reason="unknown tool",
            )
            self._tell(
                call.tool_call_id, {"ok": False, "error": f"{call.name} is not available now"}
            )
            return
        self._dispatch(call.tool_call_id, call.name, call.arguments, spec.server)
        self.in_flight[call.tool_call_id] = InFlight(
            name=call.name, model_call_id=call.tool_call_id
        )

    def _dispatch_engine(self, call: ev.FunctionCallRequested) -> None:
        self._dispatch(call.tool_call_id, call.name, call.arguments, ENGINE_SERVER)

    def _dispatch(self, call_id: str, name: str, arguments: str, server: str) -> None:
        self._emit(
            ev.FunctionCallDispatched,
            tool_call_id=call_id,
            name=name,
            arguments=arguments,
            server=server,
            idempotency_key=f"{self.call_id}:{self.next_seq}",
        )

    def _apply(
        self,
        f: fsa_mod.FSA,
        run: fsa_mod.Run,
        out: fsa_mod.Outcome,
        model_call_id: str,
        started: bool = False,
        arguments: str = "",
        pci: tuple[str, str] | None = None,
    ) -> None:
        """Turn an FSA outcome into decisions: transition, dispatch, tell, finish.

        ``pci``: the payment-card state (:meth:`_pci_state`) before the outcome
        moved the run, to pause or resume the call recording on a change."""
        if not started or out.source:
            self._emit(
                ev.FsaTransition,
                fsa=f.name,
                source=out.source,
                target=out.target,
                trigger=out.trigger,
                arguments=arguments,
                guard=out.guard,
                reason=out.reason,
            )
        # Recording paused before anything is said in a payment-card state, resumed
        # once no FSA is in one (decided here, so replay sees it).
        self._pci_changed(pci)
        pci = self._pci_state()
        if out.dispatch is not None:
            action_id = f"act-{self.next_seq}"
            spec = self.external.get(out.dispatch.tool)
            self._dispatch(
                action_id,
                out.dispatch.tool,
                json.dumps(out.dispatch_args, sort_keys=True),
                spec.server if spec else "",
            )
            run.waiting_id = action_id
            waiting_on_model = bool(model_call_id) and not out.output
            self.in_flight[action_id] = InFlight(
                name=out.dispatch.tool,
                model_call_id=model_call_id if waiting_on_model else "",
                fsa=f.name,
            )
            if waiting_on_model:
                return  # the model hears the outcome when the action's result arrives
        finished = out.finished
        if finished:
            del self.runs[f.name]
            self._emit(
                ev.FsaFinished, fsa=f.name, state=out.target, outcome=finished, reason=out.reason
            )
            self._pci_changed(pci)
            st = f.state(out.target) if out.target in f.state_by_name else None
            if st is not None and st.transfer and self._transfer_target():
                self.control = ("transfer", f"{f.name}: {out.reason}")
        if out.output:
            self._tell(model_call_id, out.output)
        if started or finished or out.target != out.source:
            self._configure()

    def _close_after_tool(self, e: ev.ToolResult) -> None:
        self.in_flight.pop(e.tool_call_id, None)
        if not self.in_flight:
            reason, outcome = self.pending_end
            self._to(Trigger.END)
            self._emit(ev.CallEnded, reason=reason, outcome=outcome)

    def _on_tool_result(self, e: ev.ToolResult) -> None:
        flight = self.in_flight.pop(e.tool_call_id, None)
        if flight is None:
            return
        if e.ok:
            try:
                result = json.loads(e.output) if e.output else {}
            except ValueError:
                result = {"text": e.output}
            if not isinstance(result, dict):
                result = {"value": result}
        else:
            result = {"ok": False, "error": e.error}
        if flight.fsa:
            run = self.runs.get(flight.fsa)
            # Only the action the run waits for moves it: a result for a cancelled
            # or restarted run is recorded, and changes nothing.
            if run is not None and run.waiting_id == e.tool_call_id:
                assert self.agent is not None
                f = self.agent.fsa(flight.fsa)
                pci = self._pci_state()  # before the result moves the run
                out = fsa_mod.after_action(f, run, result)
                self._apply(f, run, out, flight.model_call_id, pci=pci)
        else:  # a tool the model called: answer the call, or by message if it is gone
            outcome = e.output if e.ok else {"ok": False, "error": e.error}
            if not flight.model_call_id:
                outcome = {"tool": e.name, "result": outcome}
            self._tell(flight.model_call_id, outcome)
        self._flush("tool result")


@dataclass(frozen=True, slots=True)
class Playing:
    """The play stream the caller hears now (a copy: the engine's own stays inside)."""

    stream_id: str
    response_id: str
    item_id: str
    open: bool  # still taking audio (not stopped)
    until: int  # when the caller will have heard all of it sent so far (µs since the epoch)


class EngineView:
    """The read-only window the shell reads an engine through (``engine.view``).

    Only what acting on decisions needs: the status, the next sequence number,
    the call's formats and rules as accepted, and what is playing.  Nothing here
    changes the engine; everything else about it is the core's business.
    """

    __slots__ = ("_e",)

    def __init__(self, engine: Engine) -> None:
        self._e = engine

    @property
    def call_id(self) -> str:
        return self._e.call_id

    @property
    def status(self) -> Status:
        return self._e.status

    @property
    def ended(self) -> bool:
        """CallEnded is in the log: nothing may follow it."""
        return self._e.status is Status.ENDED

    @property
    def next_seq(self) -> int:
        """The ``seq`` the next input takes."""
        return self._e.next_seq

    @property
    def agent(self) -> Agent | None:
        """The call's agent (None before the session is accepted)."""
        return self._e.agent

    @property
    def live(self) -> bool:
        """The call's model is a GPT-Live model."""
        return self._e.live

    @property
    def model(self) -> str:
        """The call's model as its session was accepted (``CallConfig.model``): the
        one to dial, whatever this instance's own setting (a call may resume on an
        instance configured with another)."""
        return self._e.model

    @property
    def media_format(self) -> str:
        return self._e.media_format

    @property
    def model_format(self) -> str:
        return self._e.model_format

    @property
    def policy(self) -> ev.CallPolicy:
        return self._e.policy

    @property
    def tools_listed(self) -> bool:
        """Some MCP server's tools are known (ToolsListed is in the log)."""
        return bool(self._e.external)

    @property
    def response_active(self) -> bool:
        return self._e.resp.busy

    @property
    def held_response(self) -> str:
        """The response whose calls wait until the caller heard it out ("" = none)."""
        return self._e.held_response

    def plays(self, item_id: str) -> bool:
        """Audio of ``item_id`` goes to the caller (its play stream is open).  Hot path."""
        pb = self._e.play
        return pb is not None and pb.open and pb.item_id == item_id

    @property
    def playing(self) -> Playing | None:
        """The current play stream, or None."""
        pb = self._e.play
        if pb is None:
            return None
        return Playing(pb.stream_id, pb.response_id, pb.item_id, pb.open, pb.until)

    @property
    def playout_end(self) -> int:
        """When the caller's playout queue runs dry (µs since the epoch)."""
        return self._e.clock.end_at


_ENDED, _CLOSING = Status.ENDED, Status.CLOSING

_HANDLERS: dict[type[ev.Input], Callable[[Engine, Any], None]] = {
    ev.SessionInitiated: Engine._on_initiated,
    ev.SessionResumed: Engine._on_resumed,
    ev.SessionEnded: Engine._on_session_ended,
    ev.CallStarted: Engine._on_call_started,
    ev.CallerAudio: Engine._on_caller_audio,
    ev.BotAudio: Engine._on_bot_audio,
    ev.CallerStreamStarted: Engine._on_caller_stream_started,
    ev.CallerStreamStopped: Engine._on_caller_stream_stopped,
    ev.SpeechStarted: Engine._on_speech_started,
    ev.SpeechStopped: Engine._on_speech_stopped,
    ev.ResponseStarted: Engine._on_response_started,
    ev.ResponseDone: Engine._on_response_done,
    ev.PlaybackDrained: Engine._on_playback_drained,
    ev.FunctionCallRequested: Engine._on_function_call,
    ev.ToolResult: Engine._on_tool_result,
    ev.ToolsListed: Engine._on_tools_listed,
    ev.ModelError: Engine._on_model_error,
    ev.ModelTimeout: Engine._on_model_timeout,
    ev.RateLimitsUpdated: Engine._on_rate_limits,
    ev.Transcript: Engine._on_transcript,
    ev.SpeechCommitted: Engine._on_committed,
    ev.TranscriptionFailed: Engine._on_transcription_failed,
    ev.Dtmf: Engine._on_dtmf,
    ev.ConnectionLost: Engine._on_connection_lost,
    ev.ConnectionRestored: Engine._on_connection_restored,
    ev.GraceExpired: Engine._on_grace_expired,
    ev.ModelOutputStopped: Engine._on_output_stopped,
}


def _policy(config: ev.CallConfig) -> ev.CallPolicy:
    """The call's rules: the operator's overrides where given and sane, else POLICY."""

    def pick(value: Any, default: Any, ok: Callable[[Any], bool]) -> Any:
        return value if value is not None and ok(value) else default

    return ev.CallPolicy(
        grace_s=pick(config.grace_s, POLICY.grace_s, lambda v: 0 <= v < 86_400),
        tool_timeout_s=pick(config.tool_timeout_s, POLICY.tool_timeout_s, lambda v: 0 < v < 3_600),
        model_retries=pick(config.model_retries, POLICY.model_retries, lambda v: 0 <= v <= 100),
        history_items=pick(config.history_items, POLICY.history_items, lambda v: 0 <= v <= 1_000),
        model_timeout_s=pick(config.model_timeout_s, POLICY.model_timeout_s, lambda v: 0 < v < 600),
    )


def _spec(tool: dict[str, Any] | ev.ToolSpec) -> ev.ToolSpec:
    """A tool as the model is told it: no parameters means an object with none."""
    if isinstance(tool, ev.ToolSpec):
        name, description, parameters = tool.name, tool.description, tool.parameters
        server = tool.server
    else:
        name, description = tool["name"], tool.get("description", "")
        parameters, server = tool.get("parameters"), ""
    return ev.ToolSpec(
        name=name,
        description=description,
        parameters=parameters or {"type": "object", "properties": {}},
        server=server,
    )
