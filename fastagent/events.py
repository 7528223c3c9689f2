"""The event catalogue: every fact a call's log can hold, in one place.

Each event is a frozen msgspec Struct in one tagged union (``type`` is the tag).
Two kinds, visible in the type:

* :class:`Input` -- what the world told the engine (a socket frame, a tool result,
  a timer).  The shell stamps ``at`` with the time it observed it.
* :class:`Decision` -- what the engine core chose.  The core has no clock, so a
  decision carries the ``at`` of the input that caused it.

Every event carries the call id, a gapless per-call sequence number (``seq``,
from 1) and ``at`` (microseconds since the Unix epoch).  Audio is recorded as
chunk *boundaries* (sequence, bytes, duration, format), never the bytes.

Versioning: each class has a ``version``.  Stored events carry ``Type/vN`` as
their topic; older versions are upcast by functions registered in
:data:`UPCASTERS` before being converted to today's class (see docs/events.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Literal, Union

import msgspec
import msgspec.inspect

from fastagent.errors import StoreError

Side = Literal["caller", "model", "tool"]
Role = Literal["user", "assistant"]


class Event(msgspec.Struct, frozen=True, kw_only=True, tag=True, tag_field="type"):
    call_id: str
    seq: int
    at: int  # microseconds since the Unix epoch
    version: ClassVar[int] = 1
    kind: ClassVar[str] = "event"


class Input(Event, frozen=True, kw_only=True):
    kind: ClassVar[str] = "input"


class Decision(Event, frozen=True, kw_only=True):
    kind: ClassVar[str] = "decision"


# --------------------------------------------------------------------------- values


class CallConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Settings the service chose for a call; recorded so replay uses the same."""

    agent: str = "default"
    greet: bool = True
    transfer_target: str = ""
    voice: str = "marin"
    model: str = "gpt-realtime-2"
    # How long the model may take to answer a session.update or a response.create
    # (FASTAGENT_MODEL_TIMEOUT_S; None: the core's, see CallPolicy).
    model_timeout_s: float | None = None
    # How fast the caller's side plays bot audio: 1.0 on a real phone line; a
    # simulated caller may play faster than real time (the demo and tests do).
    playback_speed: float = 1.0
    # The personal-data categories sealed in the store for this call (fastagent.privacy);
    # None in calls recorded before: everything sealable is sealed.
    sealed: tuple[str, ...] | None = None
    # The operator's overrides of the call's timing and retry rules (None: the
    # core's own, see CallPolicy); the core decides the policy from them.
    grace_s: float | None = None
    tool_timeout_s: float | None = None
    model_retries: int | None = None
    history_items: int | None = None


class CallPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """The timing and retry rules of one call, decided by the core when it accepts
    the session (carried by :class:`SessionAccepted`) and followed by the shell.

    Deciding them in the core puts them in the log: a change to a rule (or to its
    default) shows in replay at the session's acceptance, and a call that moves
    to another instance keeps the rules it started with.  The defaults here are
    what calls recorded before the policy existed used.
    """

    grace_s: float = 30.0  # how long a dropped caller may take to resume (session.resume)
    tool_timeout_s: float = 10.0  # a dispatched tool call fails after this long
    model_retries: int = 5  # reconnect attempts when the model socket cannot be opened
    history_items: int = 24  # transcript items a new model session is seeded with one by one
    model_timeout_s: float = 10.0  # the model must answer session.update / response.create


class ToolSpec(msgspec.Struct, frozen=True, kw_only=True):
    """One function tool: as an MCP server listed it (:class:`ToolsListed`), or as
    the model is told it (:class:`ModelConfigured`).

    ``parameters`` is the JSON schema of the arguments, a JSON object kept in the
    key order its author wrote it (the FSA, the engine, the MCP server's listing):
    msgspec encodes a dict in that order, so the same definition is stored as the
    same bytes on every run, and replay compares it by value.
    """

    name: str
    description: str = ""
    parameters: dict[str, Any] = msgspec.field(default_factory=dict)
    server: str = ""  # MCP server that serves it ("" = the engine's own)


class HistoryItem(msgspec.Struct, frozen=True, kw_only=True):
    """One item of the conversation a fresh model session is told
    (:attr:`ModelConfigured.history`): ``role`` "user" or "assistant" (a turn the
    caller said or heard), or "system" (older turns folded into one summary)."""

    role: str
    text: str


class Usage(msgspec.Struct, frozen=True, kw_only=True):
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    input_audio_tokens: int = 0
    output_audio_tokens: int = 0
    cached_tokens: int = 0


class RateLimit(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    limit: int
    remaining: int
    reset_seconds: float


# --------------------------------------------------------------------------- inputs


class SessionInitiated(Input, frozen=True, kw_only=True):
    """VAIC ``session.initiate``: a call begins."""

    config: CallConfig
    caller: str = ""
    bot_name: str = ""
    offered_formats: tuple[str, ...] = ()
    expect_audio: bool = True
    instance: str = ""


class SessionResumed(Input, frozen=True, kw_only=True):
    """VAIC ``session.resume`` on a new socket (maybe another instance)."""

    instance: str = ""


class SessionEnded(Input, frozen=True, kw_only=True):
    """VAIC ``session.end``: the platform ended the call."""

    reason_code: str = ""
    reason: str = ""


class CallStarted(Input, frozen=True, kw_only=True):
    """VAIC ``start`` activity, with the caller/callee details."""

    caller: str = ""
    callee: str = ""
    parameters: dict[str, Any] = msgspec.field(default_factory=dict)


class CallerStreamStarted(Input, frozen=True, kw_only=True):
    """VAIC ``userStream.start``; ``participant`` is its optional field (agent-assist
    calls), echoed in the ``userStream.started`` the engine decides."""

    participant: str = ""


class CallerStreamStopped(Input, frozen=True, kw_only=True):
    """VAIC ``userStream.stop`` (``participant`` as in :class:`CallerStreamStarted`)."""

    participant: str = ""


class CallerAudio(Input, frozen=True, kw_only=True):
    """Boundary of one caller audio chunk (``userStream.chunk``)."""

    chunk: int
    nbytes: int
    duration_us: int
    fmt: str


class BotAudio(Input, frozen=True, kw_only=True):
    """Boundary of one model audio chunk (``response.output_audio.delta``)."""

    response_id: str
    item_id: str
    chunk: int
    nbytes: int
    duration_us: int
    fmt: str


class SpeechStarted(Input, frozen=True, kw_only=True):
    item_id: str = ""
    audio_start_ms: int = 0


class SpeechStopped(Input, frozen=True, kw_only=True):
    item_id: str = ""
    audio_end_ms: int = 0


class SpeechCommitted(Input, frozen=True, kw_only=True):
    item_id: str = ""


class Transcript(Input, frozen=True, kw_only=True):
    """Final transcript of one conversation item (deltas are folded)."""

    role: Role
    item_id: str
    text: str
    response_id: str = ""


class Dtmf(Input, frozen=True, kw_only=True):
    digits: str


class ResponseStarted(Input, frozen=True, kw_only=True):
    response_id: str


class ResponseDone(Input, frozen=True, kw_only=True):
    """``response.done``; a failed response carries ``status_details.error``."""

    response_id: str
    status: str  # completed | cancelled | failed | incomplete
    reason: str = ""  # status_details.reason: turn_detected, max_output_tokens, ...
    usage: Usage = Usage()
    error_type: str = ""  # status_details.error.type, e.g. server_error
    error_code: str = ""  # status_details.error.code
    error_message: str = ""


class FunctionCallRequested(Input, frozen=True, kw_only=True):
    """The model asked for a function call (``function_call_arguments.done``)."""

    response_id: str
    item_id: str
    tool_call_id: str
    name: str
    arguments: str  # JSON text, as the model produced it


class ToolResult(Input, frozen=True, kw_only=True):
    """A dispatched tool call finished (or failed, or timed out)."""

    tool_call_id: str
    name: str
    ok: bool
    output: str = ""
    error: str = ""
    duration_us: int = 0


class ToolsListed(Input, frozen=True, kw_only=True):
    """An MCP server listed its tools for this call."""

    server: str
    tools: tuple[ToolSpec, ...] = ()


class ItemTruncated(Input, frozen=True, kw_only=True):
    item_id: str
    audio_end_ms: int


class RateLimitsUpdated(Input, frozen=True, kw_only=True):
    limits: tuple[RateLimit, ...] = ()


class ModelError(Input, frozen=True, kw_only=True):
    """A Realtime ``error`` event, or the model socket could not be opened."""

    # "connection" when the model cannot be reached at all; "protocol" when the
    # service failed its socket (past a message-rate or violation cap).
    error_type: str = ""
    code: str = ""  # free-form (the SDK enumerates none): session_expired, ...
    message: str = ""
    event_id: str = ""  # the client event the error is about, when the server says
    param: str = ""


class TranscriptionFailed(Input, frozen=True, kw_only=True):
    """``conversation.item.input_audio_transcription.failed``: the model heard the
    caller, but the caller's words have no transcript."""

    item_id: str
    error_type: str = ""
    code: str = ""
    message: str = ""


class ModelTimeout(Input, frozen=True, kw_only=True):
    """The model did not answer a client event in time (the shell's timer).

    ``waiting_for`` is the server event that never came: ``session.created`` once
    a Realtime socket is connected, ``session.updated`` after a ``session.update``,
    ``response.created`` after a ``response.create``;
    ``event_id`` names the request (``fa-response-<seq>``); ``seconds`` is the
    setting the timer ran with (FASTAGENT_MODEL_TIMEOUT_S).
    """

    waiting_for: str
    seconds: float
    event_id: str = ""


class ProtocolError(Input, frozen=True, kw_only=True):
    """A frame that could not be understood (malformed, unknown, out of order)."""

    side: Side
    message: str


class ConnectionLost(Input, frozen=True, kw_only=True):
    side: Side
    reason: str = ""


class ConnectionRestored(Input, frozen=True, kw_only=True):
    side: Side
    instance: str = ""


class GraceExpired(Input, frozen=True, kw_only=True):
    """The caller did not come back within the resume grace period."""

    seconds: float = 0.0


class PlaybackDrained(Input, frozen=True, kw_only=True):
    """The caller has heard a finished play stream to its end (the shell's timer)."""

    stream_id: str
    response_id: str


class ModelSessionStarted(Input, frozen=True, kw_only=True):
    """GPT-Live ``session.started``: a model session is up (a new one after a drop).

    ``seeded`` is how many conversation messages the session was started with (its
    ``input`` history); ``forked_from`` the stored session it was forked from.
    """

    session_id: str
    model: str = ""
    expires_at: int = 0  # Unix seconds
    seeded: int = 0
    forked_from: str = ""


class ModelSessionClosed(Input, frozen=True, kw_only=True):
    """GPT-Live ``session.closed``: ``reason`` close_requested | expired | content |
    remote_hangup | connection_lost; ``seconds`` the final billable duration."""

    session_id: str = ""
    reason: str = ""
    seconds: float = 0.0


class ModelUsage(Input, frozen=True, kw_only=True):
    """GPT-Live ``session.usage.updated``: cumulative billable seconds (per-minute
    pricing) and how full the context window is."""

    seconds: float
    context_ratio: float = 0.0


class DelegationStarted(Input, frozen=True, kw_only=True):
    """GPT-Live ``session.delegation.created``: the model handed work to its backend
    (``target`` responses) at ``offset_ms`` on the session clock (ms of input audio
    since the session started)."""

    delegation_id: str
    target: str
    response_id: str = ""
    offset_ms: int = 0


class ModelOutputStopped(Input, frozen=True, kw_only=True):
    """GPT-Live stopped speaking: no output audio for the shell's idle interval.

    GPT-Live has no response or turn events; it stops by itself (at its end, or
    because the caller talked over it).  ``item_id`` is the output item whose
    audio stopped (``fastagent.live.LiveProtocol`` names them).
    """

    item_id: str
    idle_ms: int = 0


# ------------------------------------------------------------------------ decisions


class SessionAccepted(Decision, frozen=True, kw_only=True):
    media_format: str
    model_format: str  # the OpenAI format the audio is bridged to
    resumed: bool = False
    policy: CallPolicy = CallPolicy()  # the call's timing and retry rules


class SessionRejected(Decision, frozen=True, kw_only=True):
    reason: str


class ModelConfigured(Decision, frozen=True, kw_only=True):
    """``session.update``: instructions and the tools the model may call now.

    Self-contained: the shell builds the model's configuration frame from this
    decision alone, so the log holds exactly what the model was told -- the full
    instructions and every tool's name, description and parameter schema (a
    changed description shows in replay here).  ``frontend_instructions``: what a
    GPT-Live call's voice model (the frontend) is told when its session starts;
    ``instructions`` and ``tools`` then go to its Responses backend, and ``model``
    is the call's GPT-Live model (both "" for a Realtime call, whose one model
    takes ``instructions``).

    ``history``: what a fresh model session (a reconnect, a resume on another
    instance) is told of the call so far, after the configuration -- decided by the
    core from the turns the caller heard, trimmed to the call's recorded model's
    context window (``fastagent.core.seed_pairs``); empty on every other
    configuration.  Sealed like transcripts (``fastagent.personal_data``).

    Version 2: ``tools`` holds full :class:`ToolSpec`s (version 1 held names only;
    the upcaster turns each name into a spec with only its name).  Version 3:
    ``history`` (version 2 did not record it: it reads as empty).
    """

    version: ClassVar[int] = 3

    instructions: str
    tools: tuple[ToolSpec, ...] = ()
    voice: str = ""
    input_format: str = ""
    output_format: str = ""
    reasoning_effort: str = ""  # session.reasoning.effort ("" = not sent)
    frontend_instructions: str = ""  # GPT-Live: the voice model's session.start
    model: str = ""  # GPT-Live: the model session.start names (Realtime's is dialled)
    history: tuple[HistoryItem, ...] = ()  # a fresh session: the call so far

    @property
    def tool_names(self) -> tuple[str, ...]:
        """The names of :attr:`tools`, in order."""
        return tuple(t.name for t in self.tools)


class ResponseRequested(Decision, frozen=True, kw_only=True):
    """``response.create``."""

    reason: str
    instructions: str = ""


class PlaybackStarted(Decision, frozen=True, kw_only=True):
    stream_id: str
    response_id: str
    item_id: str
    fmt: str


class PlaybackStopped(Decision, frozen=True, kw_only=True):
    stream_id: str
    reason: str  # done | barge_in | hangup | transfer | ended
    played_ms: int = 0


class TruncateRequested(Decision, frozen=True, kw_only=True):
    """Cut the assistant item at what the caller actually heard."""

    item_id: str
    audio_end_ms: int


class FunctionCallDispatched(Decision, frozen=True, kw_only=True):
    """Run a tool.  Durable before the tool starts; the key makes retries safe."""

    tool_call_id: str
    name: str
    arguments: str
    server: str = ""
    idempotency_key: str = ""


class FunctionCallSkipped(Decision, frozen=True, kw_only=True):
    """A requested call that must not run (interrupted response, unknown tool)."""

    tool_call_id: str
    name: str
    reason: str


class FunctionOutputSent(Decision, frozen=True, kw_only=True):
    """``conversation.item.create`` of a ``function_call_output``."""

    tool_call_id: str
    output: str


class FsaStarted(Decision, frozen=True, kw_only=True):
    fsa: str
    state: str
    trigger: str = ""


class FsaTransition(Decision, frozen=True, kw_only=True):
    fsa: str
    source: str
    target: str
    trigger: str
    arguments: str = ""
    guard: str = ""
    reason: str = ""


class FsaFinished(Decision, frozen=True, kw_only=True):
    fsa: str
    state: str
    outcome: str  # completed | abandoned | failed | transferred
    reason: str = ""


class MessageInjected(Decision, frozen=True, kw_only=True):
    """``conversation.item.create`` of a message: DTMF keys, a finished background task."""

    role: str  # user | system
    text: str


class HangupRequested(Decision, frozen=True, kw_only=True):
    reason: str


class TransferRequested(Decision, frozen=True, kw_only=True):
    target: str
    reason: str


class DtmfSent(Decision, frozen=True, kw_only=True):
    digits: str


class SessionParamsSent(Decision, frozen=True, kw_only=True):
    """The VAIC ``config`` activity: change session settings (e.g. DTMF collection)."""

    params: dict[str, Any]


class ModelFailureHandled(Decision, frozen=True, kw_only=True):
    """The core's reading of a model-side failure and what it does about it.

    ``kind``: response_failed | response_incomplete | request_refused |
    active_response | rate_limited | session_expired | error | timeout |
    unreachable | protocol | transcription_failed | transcription_missing.
    ``action``: retry | apology | fallback | settled | reconnect | none -- the
    decisions that carry it out follow this one.  ``attempt`` counts the failed
    replies in a row (the policy: 1 -> retry, 2 -> apology, 3 -> fallback).
    """

    kind: str
    action: str
    code: str = ""
    message: str = ""
    response_id: str = ""
    item_id: str = ""
    attempt: int = 0


class ItemDeleted(Decision, frozen=True, kw_only=True):
    """``conversation.item.delete`` of an assistant item the caller never heard."""

    item_id: str
    reason: str = ""


class ContextAppended(Decision, frozen=True, kw_only=True):
    """GPT-Live ``session.{commentary,thinking,instructions}.append``.

    ``commentary``: something for the model to say (the greeting, an apology);
    ``thinking``: silent context (what the caller heard after a barge-in);
    ``instructions``: developer context that survives compaction and reaches the
    backend's future delegations (DTMF digits, a result whose call is gone).
    """

    kind: str  # commentary | thinking | instructions
    content: str


class ItemHeard(Decision, frozen=True, kw_only=True):
    """What the caller heard of a GPT-Live output item cut short by a barge-in.

    GPT-Live cannot truncate: the model stopped itself at ``sent_ms`` of audio; the
    caller heard ``heard_ms`` of it (VAIC had the rest queued and dropped it).
    """

    item_id: str
    heard_ms: int
    sent_ms: int


CallerNotice = Literal[
    "userStream.started",
    "userStream.stopped",
    "userStream.speech.started",
    "userStream.speech.stopped",
    "userStream.speech.committed",
    "userStream.speech.recognition",
]


class CallerNotified(Decision, frozen=True, kw_only=True):
    """A VAIC notification about the caller's own stream: ``message_type`` is the
    VAIC message sent, ``text`` the recognised words of a
    ``userStream.speech.recognition`` (the user's final transcript), ``participant``
    the echo of ``userStream.start``/``stop``'s (agent-assist calls).

    One decision for the six notifications, not one each: they change nothing
    in the engine, differ only by VAIC's message type (and the recognition's
    text), and are all answers to what the caller side did (its stream, its
    speech as the model heard it).  Their names are VAIC's own, so the decision
    trail reads as the wire did, and every table keyed by event type (privacy,
    masking, projections) has one entry.  They are decisions at all because the
    caller receives only frames the engine decided, each durable before it is
    sent (docs/architecture.md, "What the caller receives").
    """

    message_type: CallerNotice
    text: str = ""
    participant: str = ""


class CallRecordingPaused(Decision, frozen=True, kw_only=True):
    """AudioCodes ``pauseCallRecording``: the FSA entered a state that collects
    payment-card data (``State(pci=True)``), so the platform's recording stops."""

    fsa: str
    state: str


class CallRecordingResumed(Decision, frozen=True, kw_only=True):
    """AudioCodes ``resumeCallRecording``: no FSA is in a payment-card state any more."""

    fsa: str
    state: str


class EngineFault(Decision, frozen=True, kw_only=True):
    """The core failed on an input (a bug, or an agent's guard that raised).

    The input stays in the log; nothing else was decided for it.  Replay
    reproduces the fault, so a fix shows up as a divergence here.
    """

    input_type: str
    error: str


class CallEnded(Decision, frozen=True, kw_only=True):
    """The engine closed the call's log: nothing follows."""

    reason: str
    outcome: str = ""


# ------------------------------------------------------------------- the union


def _subclasses(base: type) -> list[type]:
    out: list[type] = []
    for sub in base.__subclasses__():
        out.append(sub)
        out.extend(_subclasses(sub))
    return out


INPUT_TYPES: tuple[type[Input], ...] = tuple(_subclasses(Input))
DECISION_TYPES: tuple[type[Decision], ...] = tuple(_subclasses(Decision))
EVENT_TYPES: dict[str, type[Event]] = {c.__name__: c for c in (*INPUT_TYPES, *DECISION_TYPES)}

AnyEvent = Event  # for annotations; concrete values are always one of EVENT_TYPES

# Upcasters: (type name, from version) -> function(dict) -> dict of version+1.
UPCASTERS: dict[tuple[str, int], Callable[[dict[str, Any]], dict[str, Any]]] = {}


def _model_configured_v1(raw: dict[str, Any]) -> dict[str, Any]:
    """ModelConfigured v1 recorded tool names only: each becomes a spec holding
    just its name (what the model was told beyond it is not in such a log, so
    today's core, which records full specs, diverges at this decision)."""
    tools = raw.get("tools")
    if isinstance(tools, list):
        raw["tools"] = [{"name": t} if isinstance(t, str) else t for t in tools]
    return raw


UPCASTERS[("ModelConfigured", 1)] = _model_configured_v1


def _model_configured_v2(raw: dict[str, Any]) -> dict[str, Any]:
    """ModelConfigured v2 did not record the history the shell gave a fresh model
    session: it reads as empty (today's core, which decides it, diverges at a
    reconnect's configuration)."""
    return raw


UPCASTERS[("ModelConfigured", 2)] = _model_configured_v2


class EventFormatError(StoreError, ValueError):
    """A stored event this code cannot read (corrupt, unknown type or newer version)."""


_encoder = msgspec.json.Encoder()
_union_decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(
    Union[tuple(EVENT_TYPES.values())]  # noqa: UP007 -- a runtime union of all event types
)


def topic_of(event: Event) -> str:
    cls = type(event)
    return f"{cls.__name__}/v{cls.version}"


def encode(event: Event) -> bytes:
    return _encoder.encode(event)


def decode(topic: str, data: bytes) -> Event:
    """Decode one stored event, upcasting an older version to today's class."""
    name, _, v = topic.partition("/v")
    cls = EVENT_TYPES.get(name)
    if cls is None:
        raise EventFormatError(f"unknown event type {name!r}")
    try:
        version = int(v) if v else 1
    except ValueError:
        raise EventFormatError(f"bad event topic {topic!r}") from None
    try:
        if version == cls.version:
            return _union_decoder.decode(data)
        if version > cls.version:
            raise EventFormatError(
                f"event {name} is version {version}; this FastAgent reads up to {cls.version}"
            )
        raw = msgspec.json.decode(data)
        if not isinstance(raw, dict):
            raise EventFormatError(f"event {name} is not an object")
        for from_v in range(version, cls.version):
            upcast = UPCASTERS.get((name, from_v))
            if upcast is None:
                raise EventFormatError(f"no upcaster for {name} v{from_v}")
            raw = upcast(raw)
        raw["type"] = name
        return msgspec.convert(raw, cls)
    except msgspec.ValidationError as exc:
        raise EventFormatError(f"corrupt {name} event: {exc}") from None
    except msgspec.DecodeError as exc:
        raise EventFormatError(f"corrupt {name} event: {exc}") from None


def lean(value: Any) -> Any:
    """``value`` as plain data with every struct field at its default left out.

    A struct becomes a dict (an event's ``type`` first); lists, tuples and dicts
    are walked.  Two events that differ only by fields left at their defaults
    give the same result: this is how a field added with a default stays
    invisible to snapshots and reports until something sets it.
    """
    if isinstance(value, msgspec.Struct):
        out: dict[str, Any] = {}
        if isinstance(value, Event):
            out["type"] = type(value).__name__
        for f in msgspec.structs.fields(value):
            v = getattr(value, f.name)
            if f.default is not msgspec.NODEFAULT and v == f.default:
                continue
            if f.default_factory is not msgspec.NODEFAULT and v == f.default_factory():
                continue
            out[f.name] = lean(v)
        return out
    if isinstance(value, (list, tuple)):
        return [lean(v) for v in value]
    if isinstance(value, dict):
        return {k: lean(v) for k, v in value.items()}
    return value


def unknown_fields(topic: str, data: bytes) -> list[str]:
    """The fields of a stored event body that today's class does not declare.

    Paths name the event and the nesting (``SessionInitiated.config.tone``); the
    ``type`` tag is not a field.  An older version is upcast first: a field that
    version declared is consumed (renamed, dropped) by its upcaster, so only
    fields no version declares remain.  For a topic :func:`decode` refuses, or a
    body that is not an object, the answer is ``[]`` (``decode`` says why).
    """
    name, _, v = topic.partition("/v")
    cls = EVENT_TYPES.get(name)
    try:
        raw = msgspec.json.decode(data)
        version = int(v) if v else 1
    except (msgspec.DecodeError, ValueError):
        return []
    if cls is None or not isinstance(raw, dict):
        return []
    for from_v in range(version, cls.version):
        upcast = UPCASTERS.get((name, from_v))
        if upcast is None:
            return []
        raw = upcast(raw)
    raw.pop("type", None)
    out: list[str] = []
    info = _TYPE_INFO.get(cls)
    if info is None:
        info = _TYPE_INFO[cls] = msgspec.inspect.type_info(cls)
    _walk(info, raw, name, out)
    return out


_TYPE_INFO: dict[type, Any] = {}


def _walk(t: Any, value: Any, path: str, out: list[str]) -> None:
    """Collect the keys of ``value`` that the msgspec type ``t`` does not declare."""
    insp = msgspec.inspect
    if isinstance(t, insp.StructType) and isinstance(value, dict):
        fields = {f.encode_name: f for f in t.fields}
        for key, item in value.items():
            if key == t.tag_field:
                continue
            f = fields.get(key)
            if f is None:
                out.append(f"{path}.{key}")
            else:
                _walk(f.type, item, f"{path}.{key}", out)
    elif isinstance(t, (insp.ListType, insp.VarTupleType)) and isinstance(value, list):
        for i, item in enumerate(value):
            _walk(t.item_type, item, f"{path}[{i}]", out)
    elif isinstance(t, insp.TupleType) and isinstance(value, list):
        for i, (sub, item) in enumerate(zip(t.item_types, value, strict=False)):
            _walk(sub, item, f"{path}[{i}]", out)
    elif isinstance(t, insp.UnionType):
        for sub in t.types:
            if isinstance(sub, insp.StructType):
                _walk(sub, value, path, out)
                return
    elif isinstance(t, insp.DictType) and isinstance(value, dict):
        for key, item in value.items():
            _walk(t.value_type, item, f"{path}.{key}", out)


def to_builtins(event: Event) -> dict[str, Any]:
    """The event as a plain dict (``type`` first), for JSON output and snapshots."""
    return msgspec.to_builtins(event)  # type: ignore[no-any-return]
