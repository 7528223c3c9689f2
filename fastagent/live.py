"""The OpenAI GPT-Live API (``/v1/live/sessions``), model side of FastAgent, sans-I/O.

GPT-Live is a separate wire protocol from the Realtime API (see
``docs/models.md`` and the protocol reference ``openai-live.md``): the model is
full duplex, decides itself when to speak and when to stop, has no response,
turn, truncate or cancel events, and hands work to a backend by *delegation*.
FastAgent uses **Responses delegation**: the agent's FSA intent and step tools
are the backend's function tools, their calls arrive nested in
``response.event``, and results go back with ``response.item.create`` then
``response.create`` (docs/models.md says why).

Three parts, none of which touches a socket:

* :func:`parse_server_event` turns one server text frame into a small msgspec
  Struct (or :class:`Ignored` / :class:`Malformed`); it never raises.
  ``session.output_audio.delta`` is the hot path: the base64 ``delta`` is kept
  as the string it arrived as.  :func:`parse_backend_event` does the same for the
  Responses stream event nested in a ``response.event``.
* builders (:func:`session_start`, :func:`append_audio`, ...) return the text
  frame in exactly the shape the openai SDK's ``openai.types.live.ClientEvent``
  accepts.  Nothing here can build a Realtime-only event (``response.cancel``,
  ``conversation.item.truncate``, ``input_audio_buffer.commit``).
* :class:`LiveProtocol` tracks the session (``session.start`` → ``session.started``
  → ``session.closed``) and gives the primary socket's anonymous audio the ids the
  engine needs: output *items* (one per stretch of bot speech) and caller *turns*
  (one per stretch of input transcript), folding transcript deltas into one text
  per item.

Source of every fact: the installed SDK (``openai/types/live/*``, 3.57) and
``/work/shared/protocols/openai-live.md``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, Union

import msgspec

from fastagent import events, wire
from fastagent.errors import LocalProtocolError
from fastagent.models import is_live_model as is_live_model  # the core decides with it

# ------------------------------------------------------------------ models and formats

MODELS: Final[frozenset[str]] = frozenset({"gpt-live-1", "gpt-live-1.1"})
DEFAULT_MODEL: Final = "gpt-live-1.1"
DEFAULT_BACKEND_MODEL: Final = "gpt-5-mini"
PRICE_PER_MINUTE_USD: Final = 0.05  # active WebSocket minute, billed per second [DOCS]


# FastAgent's names for the model-side formats: ``audio/pcm`` alone means 24 kHz
# (the Realtime format); GPT-Live's PCM also runs at 16 kHz, so the rate is named.
PCM16K: Final = "audio/pcm;rate=16000"
PCM24K: Final = "audio/pcm;rate=24000"
PCMU: Final = "audio/pcmu"


class LiveFormat(msgspec.Struct, frozen=True):
    """A VAIC format and the GPT-Live session format it is bridged to.

    ``resample_from_hz`` is the VAIC rate, ``resample_to_hz`` the model rate; equal
    for a passthrough (no transcoding, the base64 is forwarded as it came).
    """

    vaic_format: str
    model_format: str
    resample_from_hz: int
    resample_to_hz: int

    @property
    def passthrough(self) -> bool:
        return self.resample_from_hz == self.resample_to_hz


_LIVE_PASSTHROUGH: Final[dict[str, LiveFormat]] = {
    "raw/mulaw": LiveFormat("raw/mulaw", PCMU, 8000, 8000),
    "raw/lpcm16": LiveFormat("raw/lpcm16", PCM16K, 16000, 16000),
    "raw/lpcm16_24": LiveFormat("raw/lpcm16_24", PCM24K, 24000, 24000),
}
# GPT-Live PCM is 16 or 24 kHz only (8000 is rejected [SDK audio_format.py]).
_LIVE_RESAMPLED: Final[dict[str, LiveFormat]] = {
    "raw/lpcm16_8": LiveFormat("raw/lpcm16_8", PCM16K, 8000, 16000),
}


def choose_live_format(offered: Sequence[str]) -> LiveFormat | None:
    """Pick the first passthrough format in the caller's order, else the first one
    that needs resampling (soxr); None when nothing offered is usable."""
    names = [f.strip().lower() for f in (offered or ("raw/lpcm16",)) if isinstance(f, str)]
    for table in (_LIVE_PASSTHROUGH, _LIVE_RESAMPLED):
        for name in names:
            if name in table:
                return table[name]
    return None


def audio_format(model_format: str) -> dict[str, Any]:
    """The ``audio.format`` object of ``session.start`` for a model format name."""
    if model_format == PCMU:
        return {"type": "audio/pcmu", "rate": 8000}
    if model_format == "audio/pcma":
        return {"type": "audio/pcma", "rate": 8000}
    if model_format in (PCM16K, PCM24K):
        return {"type": "audio/pcm", "rate": int(model_format.rsplit("=", 1)[1])}
    raise ValueError(f"unknown GPT-Live audio format {model_format!r} ({PCMU}, {PCM16K}, {PCM24K})")


# ------------------------------------------------------------------ server events


class ServerEventBase(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    event_id: wire.Id = ""
    client_event_id: wire.Id | None = None


class AudioFormat(msgspec.Struct, frozen=True, kw_only=True):
    type: str = ""
    rate: int | None = None


class AudioOutput(msgspec.Struct, frozen=True, kw_only=True):
    voice: str | dict[str, Any] | None = None


class Audio(msgspec.Struct, frozen=True, kw_only=True):
    format: AudioFormat | None = None
    output: AudioOutput | None = None


class SessionInfo(msgspec.Struct, frozen=True, kw_only=True):
    """The resolved session (``session_resource.py``); only the fields read here."""

    id: wire.Id = ""
    model: str = ""
    expires_at: int = 0
    instructions: str | None = None
    audio: Audio | None = None
    delegation: dict[str, Any] | None = None
    store: bool | None = None


class SessionStarted(ServerEventBase, frozen=True, kw_only=True, tag="session.started"):
    session: SessionInfo


class SessionUpdated(ServerEventBase, frozen=True, kw_only=True, tag="session.updated"):
    session: SessionInfo


class OutputAudioDelta(
    ServerEventBase, frozen=True, kw_only=True, tag="session.output_audio.delta"
):
    delta: str = ""  # base64, in the session format, untouched


class InputTranscriptDelta(
    ServerEventBase, frozen=True, kw_only=True, tag="session.input_transcript.delta"
):
    delta: str = ""
    start_ms: int = 0  # on the session clock (ms of audio since the session started)
    end_ms: int = 0


class OutputTranscriptDelta(
    ServerEventBase, frozen=True, kw_only=True, tag="session.output_transcript.delta"
):
    delta: str = ""
    start_ms: int = 0
    end_ms: int = 0


class Delegation(msgspec.Struct, frozen=True, kw_only=True):
    id: wire.Id
    target: str = ""  # client | responses | decisions
    type: str = "delegation"
    response_id: wire.Id | None = None


class DelegationCreated(
    ServerEventBase, frozen=True, kw_only=True, tag="session.delegation.created"
):
    delegation: Delegation
    offset_ms: int = 0


class InstructionsAppended(
    ServerEventBase, frozen=True, kw_only=True, tag="session.instructions.appended"
):
    start_ms: int = 0
    end_ms: int = 0


class ThinkingAppended(ServerEventBase, frozen=True, kw_only=True, tag="session.thinking.appended"):
    start_ms: int = 0
    end_ms: int = 0


class CommentaryAppended(
    ServerEventBase, frozen=True, kw_only=True, tag="session.commentary.appended"
):
    start_ms: int = 0
    end_ms: int = 0


class ResponseEvent(ServerEventBase, frozen=True, kw_only=True, tag="response.event"):
    """A Responses stream event of the backend; read it with :func:`parse_backend_event`."""

    event: msgspec.Raw = msgspec.Raw(b"{}")
    delegation_id: wire.Id | None = None


class SessionUsage(msgspec.Struct, frozen=True, kw_only=True):
    seconds: float = 0.0  # cumulative billable seconds: do not add events up
    active_seconds: int | None = None
    paused_seconds: int | None = None


class ContextWindow(msgspec.Struct, frozen=True, kw_only=True):
    usage_ratio: float = 0.0


class UsageUpdated(ServerEventBase, frozen=True, kw_only=True, tag="session.usage.updated"):
    usage: SessionUsage
    context_window: ContextWindow | None = None


class SessionClosed(ServerEventBase, frozen=True, kw_only=True, tag="session.closed"):
    reason: str = ""  # close_requested | expired | content | remote_hangup | connection_lost
    usage: SessionUsage = SessionUsage()


class ErrorInfo(msgspec.Struct, frozen=True, kw_only=True):
    type: str | None = None
    code: wire.Id | None = None
    message: str | None = None
    param: wire.Id | None = None
    client_event_id: wire.Id | None = None


class Error(ServerEventBase, frozen=True, kw_only=True, tag="error"):
    error: ErrorInfo = ErrorInfo()


class Info(ServerEventBase, frozen=True, kw_only=True, tag="info"):
    code: wire.Id = ""
    message: str = ""


class Ignored(msgspec.Struct, frozen=True):
    """A well-formed event FastAgent does not act on."""

    type: str


class Malformed(msgspec.Struct, frozen=True):
    """A frame that is not a readable server event; ``message`` says why, in one line."""

    message: str


KnownEvent = Union[  # noqa: UP007 -- a runtime union for msgspec
    SessionStarted,
    SessionUpdated,
    OutputAudioDelta,
    InputTranscriptDelta,
    OutputTranscriptDelta,
    DelegationCreated,
    InstructionsAppended,
    ThinkingAppended,
    CommentaryAppended,
    ResponseEvent,
    UsageUpdated,
    SessionClosed,
    Error,
    Info,
]
ServerEvent = Union[KnownEvent, Ignored, Malformed]  # noqa: UP007

KNOWN_TYPES: Final[frozenset[str]] = frozenset(
    c.__struct_config__.tag  # type: ignore[misc]
    for c in KnownEvent.__args__  # type: ignore[attr-defined]
)


class _TypeOnly(msgspec.Struct):
    type: str


_known_decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(KnownEvent)
_type_decoder = msgspec.json.Decoder(_TypeOnly)


def _short(exc: Exception) -> str:
    return str(exc).splitlines()[0][:200]


def _parse(data: str | bytes, decoder: Any, known: frozenset[str]) -> Any:
    try:
        event = decoder.decode(data)
    except msgspec.DecodeError as exc:
        first_error: Exception = exc
    except TypeError:
        return Malformed(f"not a text frame: {type(data).__name__}")
    except UnicodeError:
        return Malformed("not UTF-8")
    except RecursionError:
        return Malformed(f"frame nested deeper than {wire.MAX_DEPTH}")
    else:
        if type(event) is OutputAudioDelta:
            # The delta goes into the caller's frame as is: strict base64 only.
            if not wire.is_base64(event.delta):
                return Malformed(
                    f"session.output_audio.delta: delta is not strict base64 "
                    f"({len(event.delta)} characters)"
                )
            if wire.flat_unique(data):
                return event
        err = wire.strict_error(data)
        if err is not None:
            return Malformed(f"bad {event.__struct_config__.tag} event: {err}")
        return event
    try:
        kind = _type_decoder.decode(data).type
    except msgspec.ValidationError:
        return Malformed("event without a string 'type'")
    except msgspec.DecodeError as exc:
        return Malformed(f"invalid JSON: {_short(exc)}")
    except RecursionError:
        return Malformed(f"frame nested deeper than {wire.MAX_DEPTH}")
    if kind not in known:
        return Ignored(kind[:200])
    err = wire.strict_error(data)
    return Malformed(f"bad {kind} event: {err or _short(first_error)}")


def _safe(data: str | bytes, decoder: Any, known: frozenset[str]) -> Any:
    try:
        return _parse(data, decoder, known)
    except Exception as exc:  # (MemoryError, anything odd): never raise
        return Malformed(f"unreadable frame: {type(exc).__name__}")


def parse_server_event(data: str | bytes) -> ServerEvent:
    """Parse one server frame of the primary WebSocket.  Never raises for bad input.

    Unknown but well-formed events give :class:`Ignored` (the sideband-only and SIP
    events among them); anything else that cannot be read gives :class:`Malformed`:
    invalid JSON or UTF-8, nesting, numbers, duplicate keys or lone surrogates (the
    checks of :mod:`fastagent.wire`, as for Realtime), wrong types, and an audio
    ``delta`` that is not strict base64.
    """
    return _safe(data, _known_decoder, KNOWN_TYPES)  # type: ignore[no-any-return]


# ------------------------------------------------------------------ backend (Responses) events


class BackendUsage(msgspec.Struct, frozen=True, kw_only=True):
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0

    def to_event_usage(self) -> events.Usage:
        return events.Usage(
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            total_tokens=self.total_tokens,
        )


class BackendError(msgspec.Struct, frozen=True, kw_only=True):
    code: wire.Id | None = None
    message: str | None = None


class IncompleteDetails(msgspec.Struct, frozen=True, kw_only=True):
    reason: str | None = None


class BackendResponse(msgspec.Struct, frozen=True, kw_only=True):
    id: wire.Id = ""
    status: str | None = None  # in_progress | completed | failed | incomplete | cancelled
    usage: BackendUsage | None = None
    error: BackendError | None = None
    incomplete_details: IncompleteDetails | None = None

    @property
    def reason(self) -> str:
        if self.error is not None:
            return self.error.code or self.error.message or ""
        if self.incomplete_details is not None:
            return self.incomplete_details.reason or ""
        return ""


class BackendEventBase(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    sequence_number: int = 0


class BackendCreated(BackendEventBase, frozen=True, kw_only=True, tag="response.created"):
    response: BackendResponse


class BackendCompleted(BackendEventBase, frozen=True, kw_only=True, tag="response.completed"):
    response: BackendResponse


class BackendFailed(BackendEventBase, frozen=True, kw_only=True, tag="response.failed"):
    response: BackendResponse


class BackendIncomplete(BackendEventBase, frozen=True, kw_only=True, tag="response.incomplete"):
    response: BackendResponse


class BackendItem(msgspec.Struct, frozen=True, kw_only=True):
    type: str = ""
    id: wire.Id | None = None
    status: str | None = None
    call_id: wire.Id | None = None
    name: wire.Id | None = None
    arguments: str | None = None


class BackendItemDone(BackendEventBase, frozen=True, kw_only=True, tag="response.output_item.done"):
    output_index: int = 0
    item: BackendItem


BackendKnown = Union[  # noqa: UP007
    BackendCreated, BackendCompleted, BackendFailed, BackendIncomplete, BackendItemDone
]
BackendEvent = Union[BackendKnown, Ignored, Malformed]  # noqa: UP007
BACKEND_TYPES: Final[frozenset[str]] = frozenset(
    c.__struct_config__.tag  # type: ignore[misc]
    for c in BackendKnown.__args__  # type: ignore[attr-defined]
)
_backend_decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(BackendKnown)
BACKEND_DONE: Final = (BackendCompleted, BackendFailed, BackendIncomplete)


def parse_backend_event(raw: msgspec.Raw | bytes | str) -> BackendEvent:
    """Parse the Responses stream event nested in a ``response.event``.  Never raises.

    Lifecycle snapshots leave ``output`` empty [SDK ``response_event.py``], so
    function calls are read from ``response.output_item.done``.
    """
    data = bytes(raw) if isinstance(raw, msgspec.Raw) else raw
    return _safe(data, _backend_decoder, BACKEND_TYPES)  # type: ignore[no-any-return]


# ------------------------------------------------------------------ client events

_enc = msgspec.json.Encoder()


def _encode(obj: Any) -> str:
    return _enc.encode(obj).decode()


def function_tool(tool: Mapping[str, Any] | events.ToolSpec) -> dict[str, Any]:
    """A Responses function tool (``function_tool.py``) from a dict or a ToolSpec."""
    if isinstance(tool, events.ToolSpec):
        src: Mapping[str, Any] = {
            "name": tool.name,
            "description": tool.description,
            "parameters": tool.parameters,
        }
    else:
        src = tool
    out: dict[str, Any] = {"type": "function", "name": src["name"]}
    if src.get("description"):
        out["description"] = src["description"]
    out["parameters"] = src.get("parameters") or {"type": "object", "properties": {}}
    return out


def responses_delegation(
    *,
    model: str = DEFAULT_BACKEND_MODEL,
    instructions: str | None = None,
    tools: Sequence[Mapping[str, Any] | events.ToolSpec] = (),
    parallel_tool_calls: bool = True,
) -> dict[str, Any]:
    """The ``delegation`` object for ``session.start``: Responses with function tools."""
    responses: dict[str, Any] = {"model": model, "parallel_tool_calls": parallel_tool_calls}
    if instructions:
        responses["instructions"] = instructions
    responses["tools"] = [function_tool(t) for t in tools]
    return {"type": "responses", "responses": responses}


def initial_items(pairs: Iterable[tuple[str, str]], *, limit: int = 128) -> list[dict[str, Any]]:
    """Text-only history for ``session.start.session.input`` (``initial_item.py``).

    ``pairs`` are ``(role, text)``; role ``user``, ``assistant`` or ``system`` (sent
    as ``developer``: GPT-Live history has no system role).  Empty texts are
    skipped.  At most ``limit`` (128, the API's cap) messages: older ones are folded
    into the first, a developer summary.
    """
    items: list[tuple[str, str]] = []
    for role, text in pairs:
        if role not in ("user", "assistant", "system", "developer"):
            raise ValueError(f"unknown role {role!r} (user, assistant, system)")
        if text:
            items.append(("developer" if role == "system" else role, text))
    if len(items) > limit:
        older, items = items[: len(items) - limit + 1], items[len(items) - limit + 1 :]
        summary = "Earlier in this call:\n" + "\n".join(f"{r}: {t}" for r, t in older)
        items.insert(0, ("developer", summary))
    out: list[dict[str, Any]] = []
    for role, text in items:
        part = {"type": "output_text" if role == "assistant" else "input_text", "text": text}
        out.append({"type": "message", "role": role, "content": [part]})
    return out


def session_start(
    *,
    model: str,
    instructions: str | None = None,
    model_format: str = PCMU,
    voice: str | None = "marin",
    delegation: Mapping[str, Any] | None = None,
    history: Sequence[Mapping[str, Any]] = (),
    store: bool = False,
    event_id: wire.Id | None = None,
) -> str:
    """``session.start``: the first frame on a new primary WebSocket.

    Model, instructions, audio and history cannot change afterwards [SDK
    ``session_update_config.py``]; only the delegation's settings can.
    """
    session: dict[str, Any] = {"model": model}
    if instructions:
        session["instructions"] = instructions
    audio: dict[str, Any] = {"format": audio_format(model_format)}
    if voice:
        audio["output"] = {"voice": voice}
    session["audio"] = audio
    session["delegation"] = dict(delegation) if delegation is not None else {"type": "client"}
    if history:
        session["input"] = [dict(i) for i in history]
    if store:
        session["store"] = True
    event: dict[str, Any] = {"type": "session.start", "session": session}
    if event_id is not None:
        event["event_id"] = event_id
    return _encode(event)


def fork_start(
    *, model_format: str | None = None, store: bool | None = None, event_id: str | None = None
) -> str:
    """``session.start`` on a stored session's fork socket (``fork_session_start_event.py``).

    An empty ``session`` inherits model, voice, instructions and conversation.
    """
    session: dict[str, Any] = {}
    if model_format is not None:
        session["audio"] = {"format": audio_format(model_format)}
    if store is not None:
        session["store"] = store
    event: dict[str, Any] = {"type": "session.start", "session": session}
    if event_id is not None:
        event["event_id"] = event_id
    return _encode(event)


def session_update(delegation: Mapping[str, Any], event_id: str | None = None) -> str:
    """``session.update`` of the delegation settings (its type cannot change)."""
    event: dict[str, Any] = {"type": "session.update", "session": {"delegation": dict(delegation)}}
    if event_id is not None:
        event["event_id"] = event_id
    return _encode(event)


_APPEND_HEAD: Final = '{"type":"session.input_audio.append","audio":"'


def append_audio(b64: str) -> str:
    """``session.input_audio.append`` around base64 the caller already has.

    Hot path: plain concatenation; base64 needs no JSON escaping.  Never acknowledged.
    """
    return _APPEND_HEAD + b64 + '"}'


ContextKind = Literal["commentary", "thinking", "instructions"]
CONTEXT_KINDS: Final[frozenset[str]] = frozenset({"commentary", "thinking", "instructions"})


def append_context(
    kind: str, content: str, delegation_id: str | None = None, event_id: str | None = None
) -> str:
    """``session.{commentary,thinking,instructions}.append``.

    ``commentary`` is context the model may say; ``thinking`` silent context;
    ``instructions`` developer instructions that survive compaction and reach
    future backend delegations.  ``delegation_id`` is "required, nullable": sent as
    ``null`` for session-wide context (non-null ids are refused under Responses
    delegation).  At most 500 tokens each [SDK].
    """
    if kind not in CONTEXT_KINDS:
        raise ValueError(f"unknown context kind {kind!r} (commentary, thinking, instructions)")
    event: dict[str, Any] = {
        "type": f"session.{kind}.append",
        "content": content,
        "delegation_id": delegation_id,
    }
    if event_id is not None:
        event["event_id"] = event_id
    return _encode(event)


def function_call_output(call_id: str, output: str, event_id: str | None = None) -> str:
    """``response.item.create`` of a ``function_call_output`` (Responses delegation)."""
    event: dict[str, Any] = {
        "type": "response.item.create",
        "item": {"type": "function_call_output", "call_id": call_id, "output": output},
    }
    if event_id is not None:
        event["event_id"] = event_id
    return _encode(event)


def response_create(event_id: str | None = None) -> str:
    """``response.create``: continue the backend once its calls are all answered."""
    if event_id is None:
        return '{"type":"response.create"}'
    return _encode({"type": "response.create", "event_id": event_id})


def session_close(event_id: str | None = None) -> str:
    """``session.close``: the server finalizes and answers ``session.closed``."""
    if event_id is None:
        return '{"type":"session.close"}'
    return _encode({"type": "session.close", "event_id": event_id})


# ------------------------------------------------------------------ state tracker

SessionState = Literal["new", "starting", "active", "closing", "closed"]


class LiveStateError(LocalProtocolError):
    """A command out of order (a bug in the caller of this module)."""


@dataclass(slots=True)
class BackendCall:
    """A completed ``function_call`` item of a backend response."""

    response_id: wire.Id
    item_id: wire.Id
    call_id: wire.Id
    name: wire.Id
    arguments: str


@dataclass(slots=True)
class Folded:
    """The final transcript of one item: what the engine records as ``Transcript``."""

    role: Literal["user", "assistant"]
    item_id: wire.Id
    text: str


MAX_TURN_TEXT = 64 * 1024  # characters of one item's transcript (about an hour of speech)


def _keep(parts: list[str], held: int, delta: str) -> int:
    """Append a transcript delta unless the item already holds MAX_TURN_TEXT
    characters: a model that streams deltas for one item without end must not
    grow the call's memory without end.  The characters held afterwards."""
    room = MAX_TURN_TEXT - held
    if room > 0 and delta:
        parts.append(delta[:room])
        held += min(len(delta), room)
    return held


@dataclass
class LiveProtocol:
    """One GPT-Live primary WebSocket session, without the socket.

    Feed every received frame to :meth:`receive`; it returns the parsed event.  The
    protocol keeps what the engine needs and the wire does not carry:

    * **output items**: ``session.output_audio.delta`` has no item id.  An item
      begins with the first output audio after the caller spoke, after a
      delegation was created or a backend response finished (the voice then says
      something about the task), or after :meth:`output_stopped` (the shell saw
      the audio stop); it is named ``{prefix}out-{n}``;
      :attr:`output_item` is the current one, :meth:`item_for_audio` names a delta.
    * **caller turns**: the first ``session.input_transcript.delta`` after bot
      output begins a turn ``{prefix}in-{n}``; :meth:`receive` then sets
      :attr:`turn_started` (the engine's ``SpeechStarted``).
    * **transcripts**: deltas are folded per item; a finished item's text is handed
      out once by :meth:`take_transcripts` (when the other side takes the floor,
      or at :meth:`flush_transcripts`).
    * **backend calls**: completed ``function_call`` items per backend response
      (:meth:`backend_calls`); :attr:`backend` is the nested event of the last
      ``response.event``, parsed once.

    ``prefix`` keeps ids unique across the sessions of one call (a model drop
    starts a new session; ``s2-out-1`` is not ``out-1``).
    """

    prefix: str = ""
    state: SessionState = "new"
    session: SessionInfo | None = None
    model_format: str = PCMU
    output_item: str = ""
    turn_started: bool = False  # set by receive() for the delta that began a caller turn
    usage_seconds: float = 0.0
    close_reason: str = ""
    _outputs: int = 0
    _turns: int = 0
    _turn: str = ""
    _new_item: bool = True
    _in_text: list[str] = field(default_factory=list)
    _out_text: list[str] = field(default_factory=list)
    _in_chars: int = 0  # in _in_text, at most MAX_TURN_TEXT
    _out_chars: int = 0
    _out_item_text: str = ""
    _ready: list[Folded] = field(default_factory=list)
    _calls: dict[str, list[BackendCall]] = field(default_factory=dict)
    delegations: dict[str, str] = field(default_factory=dict)  # delegation id -> target
    backend: BackendEvent | None = None  # the nested event of the last response.event
    _current: dict[str, str] = field(default_factory=dict)  # delegation -> backend response

    # --------------------------------------------------------------- commands

    def start(self, frame: str) -> str:
        """Mark ``session.start`` as sent (the frame from :func:`session_start`)."""
        if self.state != "new":
            raise LiveStateError(f"session.start sent twice (state {self.state})")
        self.state = "starting"
        return frame

    def close(self) -> str:
        """``session.close``; the session is closing until ``session.closed``."""
        if self.state in ("closing", "closed"):
            raise LiveStateError(f"session already {self.state}")
        self.state = "closing"
        return session_close()

    @property
    def ready(self) -> bool:
        """``session.started`` seen: audio and commands may flow [SDK]."""
        return self.state == "active"

    def output_stopped(self) -> None:
        """The shell saw the model's output stop: the next audio is a new item."""
        self._new_item = True
        self._fold_output()

    # --------------------------------------------------------------- events

    def receive(self, data: str | bytes) -> ServerEvent:
        event = parse_server_event(data)
        self.observe(event)
        return event

    def item_for_audio(self) -> str:
        """The output item an audio delta belongs to (starts a new one if due)."""
        if self._new_item:
            self._new_item = False
            self._fold_input()
            self._outputs += 1
            self.output_item = f"{self.prefix}out-{self._outputs}"
        return self.output_item

    def observe(self, event: ServerEvent) -> None:
        self.turn_started = False
        t = type(event)
        if t is OutputAudioDelta:
            self.item_for_audio()
        elif t is InputTranscriptDelta:
            if not self._turn:
                self._turns += 1
                self._turn = f"{self.prefix}in-{self._turns}"
                self.turn_started = True
                self._fold_output()
                self._new_item = True
            self._in_chars = _keep(self._in_text, self._in_chars, event.delta)  # type: ignore[union-attr]
        elif t is OutputTranscriptDelta:
            item = self.item_for_audio() if self._new_item else self.output_item
            if self._out_item_text != item:
                self._fold_output()
                self._out_item_text = item
            self._out_chars = _keep(self._out_text, self._out_chars, event.delta)  # type: ignore[union-attr]
        elif t is DelegationCreated:
            d = event.delegation  # type: ignore[union-attr]
            self.delegations[d.id] = d.target
            self._fold_input()  # the model acted on the caller's turn: it is over
            self.output_stopped()  # what it says next is about the task: a new item
        elif t is ResponseEvent:
            self._observe_backend(
                event.delegation_id or "",  # type: ignore[union-attr]
                parse_backend_event(event.event),  # type: ignore[union-attr]
            )
            if isinstance(self.backend, BACKEND_DONE):
                self.output_stopped()  # the voice says the backend's answer: a new item
        elif t is SessionStarted or t is SessionUpdated:
            self.session = event.session  # type: ignore[union-attr]
            if t is SessionStarted and self.state in ("new", "starting"):
                self.state = "active"
        elif t is UsageUpdated:
            self.usage_seconds = event.usage.seconds  # type: ignore[union-attr]
        elif t is SessionClosed:
            self.usage_seconds = event.usage.seconds or self.usage_seconds  # type: ignore[union-attr]
            self.close_reason = event.reason  # type: ignore[union-attr]
            self.state = "closed"
            self.flush_transcripts()

    def _observe_backend(self, delegation_id: str, event: BackendEvent) -> None:
        # Nested item events carry no response id: they follow their response's
        # response.created within the same delegation's stream.
        self.backend = event
        t = type(event)
        if t is BackendCreated:
            self._current[delegation_id] = event.response.id  # type: ignore[union-attr]
        elif t is BackendItemDone and event.item.type == "function_call":  # type: ignore[union-attr]
            item = event.item  # type: ignore[union-attr]
            response_id = self._current.get(delegation_id, "")
            self._calls.setdefault(response_id, []).append(
                BackendCall(
                    response_id=response_id,
                    item_id=item.id or "",
                    call_id=item.call_id or "",
                    name=item.name or "",
                    arguments=item.arguments or "",
                )
            )

    def current_response(self, delegation_id: str) -> str:
        """The backend response whose nested events a delegation is streaming now."""
        return self._current.get(delegation_id, "")

    def backend_calls(self, response_id: str) -> list[BackendCall]:
        """Hand out (once) the function calls collected for a backend response."""
        return self._calls.pop(response_id, [])

    # --------------------------------------------------------------- transcripts

    def _fold_input(self) -> None:
        if self._turn:
            text = "".join(self._in_text).strip()
            self._ready.append(Folded("user", self._turn, text))
            self._turn = ""
            self._in_text, self._in_chars = [], 0

    def _fold_output(self) -> None:
        if self._out_item_text:
            text = "".join(self._out_text).strip()
            self._ready.append(Folded("assistant", self._out_item_text, text))
            self._out_item_text = ""
            self._out_text, self._out_chars = [], 0

    def flush_transcripts(self) -> None:
        """Fold what is still open (the session ends, or the shell wants it now)."""
        self._fold_input()
        self._fold_output()

    def take_transcripts(self) -> list[Folded]:
        out, self._ready = self._ready, []
        return out
