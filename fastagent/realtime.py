"""The OpenAI Realtime API (GA shape), model side of FastAgent, sans-I/O.

Four parts, none of which touches a socket:

* :func:`parse_server_event` turns one server text frame into a small msgspec
  Struct (or :class:`Ignored` / :class:`Malformed`; bad input never raises).
  ``response.output_audio.delta`` is the hot path: one msgspec pass into a
  five-field Struct (about 0.3 µs for a 20 ms μ-law frame), and the base64
  ``delta`` is kept as the string it arrived as.
* builders (:func:`session_update`, :func:`append_audio`, ...) return the text
  frame (``str``: websockets sends ``str`` as a text frame, ``bytes`` as binary)
  in exactly the GA shape the openai SDK's ``RealtimeClientEvent`` accepts.
* :class:`RealtimeProtocol` tracks whether a response is active and holds back
  ``response.create`` until ``response.done`` (the server rejects a second one
  with ``conversation_already_has_active_response``).
* translation, pure, used by both lanes of the call's model link:
  :func:`input_of` (a parsed server event -> the input event the engine hears),
  :func:`decision_frame` / :func:`configure_frames` (a model decision -> its
  client frames) and :func:`answer_of` (which awaited answer an event is).

No I/O here: the connection (:func:`fastagent.service.realtime_link.connect_realtime`)
and the call's use of it (:class:`~fastagent.service.realtime_link.RealtimeLink`)
live in the shell.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final, Literal, Union

import msgspec

from fastagent import events, wire
from fastagent.errors import ConfigError, LocalProtocolError

# ------------------------------------------------------------------ server events


class ServerEventBase(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    event_id: wire.Id = ""


class AudioFormat(msgspec.Struct, frozen=True, kw_only=True):
    type: str = ""
    rate: int | None = None


class AudioInputConfig(msgspec.Struct, frozen=True, kw_only=True):
    format: AudioFormat | None = None
    turn_detection: dict[str, Any] | None = None
    transcription: dict[str, Any] | None = None


class AudioOutputConfig(msgspec.Struct, frozen=True, kw_only=True):
    format: AudioFormat | None = None
    voice: str | dict[str, Any] | None = None


class AudioConfig(msgspec.Struct, frozen=True, kw_only=True):
    input: AudioInputConfig | None = None
    output: AudioOutputConfig | None = None


class SessionInfo(msgspec.Struct, frozen=True, kw_only=True):
    id: wire.Id | None = None
    model: str | None = None
    instructions: str | None = None
    audio: AudioConfig | None = None
    tools: list[dict[str, Any]] | None = None

    @property
    def input_format(self) -> str:
        a = self.audio
        return a.input.format.type if a and a.input and a.input.format else ""

    @property
    def output_format(self) -> str:
        a = self.audio
        return a.output.format.type if a and a.output and a.output.format else ""


class SessionCreated(ServerEventBase, frozen=True, kw_only=True, tag="session.created"):
    session: SessionInfo


class SessionUpdated(ServerEventBase, frozen=True, kw_only=True, tag="session.updated"):
    session: SessionInfo


class SpeechStarted(
    ServerEventBase, frozen=True, kw_only=True, tag="input_audio_buffer.speech_started"
):
    item_id: wire.Id = ""
    audio_start_ms: int = 0


class SpeechStopped(
    ServerEventBase, frozen=True, kw_only=True, tag="input_audio_buffer.speech_stopped"
):
    item_id: wire.Id = ""
    audio_end_ms: int = 0


class AudioCommitted(
    ServerEventBase, frozen=True, kw_only=True, tag="input_audio_buffer.committed"
):
    item_id: wire.Id = ""
    previous_item_id: wire.Id | None = None


class InputTranscriptionCompleted(
    ServerEventBase,
    frozen=True,
    kw_only=True,
    tag="conversation.item.input_audio_transcription.completed",
):
    item_id: wire.Id = ""
    content_index: int = 0
    transcript: str = ""


class ErrorInfo(msgspec.Struct, frozen=True, kw_only=True):
    type: str | None = None
    code: wire.Id | None = None
    message: str | None = None
    param: wire.Id | None = None
    event_id: wire.Id | None = None


class InputTranscriptionFailed(
    ServerEventBase,
    frozen=True,
    kw_only=True,
    tag="conversation.item.input_audio_transcription.failed",
):
    item_id: wire.Id = ""
    content_index: int = 0
    error: ErrorInfo = ErrorInfo()


class StatusDetails(msgspec.Struct, frozen=True, kw_only=True):
    type: str | None = None
    reason: str | None = None
    error: ErrorInfo | None = None


class InputTokenDetails(msgspec.Struct, frozen=True, kw_only=True):
    text_tokens: int | None = None
    audio_tokens: int | None = None
    cached_tokens: int | None = None


class OutputTokenDetails(msgspec.Struct, frozen=True, kw_only=True):
    text_tokens: int | None = None
    audio_tokens: int | None = None


class ResponseUsage(msgspec.Struct, frozen=True, kw_only=True):
    total_tokens: int | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    input_token_details: InputTokenDetails | None = None
    output_token_details: OutputTokenDetails | None = None

    def to_event_usage(self) -> events.Usage:
        """The usage as the event catalogue records it (``None`` read as 0)."""
        i = self.input_token_details or InputTokenDetails()
        o = self.output_token_details or OutputTokenDetails()
        return events.Usage(
            input_tokens=self.input_tokens or 0,
            output_tokens=self.output_tokens or 0,
            total_tokens=self.total_tokens or 0,
            input_audio_tokens=i.audio_tokens or 0,
            output_audio_tokens=o.audio_tokens or 0,
            cached_tokens=i.cached_tokens or 0,
        )


class ContentPart(msgspec.Struct, frozen=True, kw_only=True):
    type: str | None = None
    text: str | None = None
    transcript: str | None = None


class OutputItem(msgspec.Struct, frozen=True, kw_only=True):
    """Any conversation item; only the fields FastAgent reads."""

    type: str = ""
    id: wire.Id | None = None
    status: str | None = None
    role: str | None = None
    content: list[ContentPart] | None = None
    call_id: wire.Id | None = None
    name: wire.Id | None = None
    arguments: str | None = None


class FunctionCall(msgspec.Struct, frozen=True, kw_only=True):
    item_id: wire.Id
    call_id: wire.Id
    name: wire.Id
    arguments: str


class Response(msgspec.Struct, frozen=True, kw_only=True):
    id: wire.Id = ""
    status: str | None = None
    status_details: StatusDetails | None = None
    output: list[OutputItem] | None = None
    usage: ResponseUsage | None = None

    @property
    def reason(self) -> str:
        d = self.status_details
        return (d.reason or "") if d else ""

    @property
    def error(self) -> ErrorInfo:
        """``status_details.error`` of a failed response (empty fields otherwise)."""
        d = self.status_details
        return (d.error if d else None) or ErrorInfo()

    def function_calls(self) -> list[FunctionCall]:
        """All ``function_call`` items in the output, whatever the status."""
        return [
            FunctionCall(
                item_id=it.id or "",
                call_id=it.call_id or "",
                name=it.name or "",
                arguments=it.arguments or "",
            )
            for it in self.output or ()
            if it.type == "function_call"
        ]

    def runnable_calls(self) -> list[FunctionCall]:
        """The calls that may run: only those of a *completed* response.

        A cancelled (barge-in) or failed response may still list a function call
        it emitted before the cancel; it must never be executed.
        """
        return self.function_calls() if self.status == "completed" else []


class ResponseCreated(ServerEventBase, frozen=True, kw_only=True, tag="response.created"):
    response: Response


class ResponseDone(ServerEventBase, frozen=True, kw_only=True, tag="response.done"):
    response: Response


class AudioDelta(ServerEventBase, frozen=True, kw_only=True, tag="response.output_audio.delta"):
    response_id: wire.Id = ""
    item_id: wire.Id = ""
    output_index: int = 0
    content_index: int = 0
    delta: str = ""  # base64, untouched


class AudioDone(ServerEventBase, frozen=True, kw_only=True, tag="response.output_audio.done"):
    response_id: wire.Id = ""
    item_id: wire.Id = ""


class AudioTranscriptDelta(
    ServerEventBase, frozen=True, kw_only=True, tag="response.output_audio_transcript.delta"
):
    response_id: wire.Id = ""
    item_id: wire.Id = ""
    delta: str = ""


class AudioTranscriptDone(
    ServerEventBase, frozen=True, kw_only=True, tag="response.output_audio_transcript.done"
):
    response_id: wire.Id = ""
    item_id: wire.Id = ""
    transcript: str = ""


class FunctionCallArgumentsDone(
    ServerEventBase, frozen=True, kw_only=True, tag="response.function_call_arguments.done"
):
    response_id: wire.Id = ""
    item_id: wire.Id = ""
    output_index: int = 0
    call_id: wire.Id = ""
    name: wire.Id = ""
    arguments: str = ""


class OutputItemAdded(ServerEventBase, frozen=True, kw_only=True, tag="response.output_item.added"):
    response_id: wire.Id = ""
    output_index: int = 0
    item: OutputItem


class ItemTruncated(ServerEventBase, frozen=True, kw_only=True, tag="conversation.item.truncated"):
    item_id: wire.Id = ""
    content_index: int = 0
    audio_end_ms: int = 0


class RateLimit(msgspec.Struct, frozen=True, kw_only=True):
    name: wire.Id | None = None
    limit: int | None = None
    remaining: int | None = None
    reset_seconds: float | None = None


class RateLimitsUpdated(ServerEventBase, frozen=True, kw_only=True, tag="rate_limits.updated"):
    rate_limits: list[RateLimit] = msgspec.field(default_factory=list)


class Error(ServerEventBase, frozen=True, kw_only=True, tag="error"):
    error: ErrorInfo = ErrorInfo()


class Ignored(msgspec.Struct, frozen=True):
    """A well-formed event FastAgent does not act on."""

    type: str


class Malformed(msgspec.Struct, frozen=True):
    """A frame that is not a readable server event; ``message`` says why, in one line."""

    message: str


KnownEvent = Union[  # noqa: UP007 -- a runtime union for msgspec
    SessionCreated,
    SessionUpdated,
    SpeechStarted,
    SpeechStopped,
    AudioCommitted,
    InputTranscriptionCompleted,
    InputTranscriptionFailed,
    ResponseCreated,
    ResponseDone,
    AudioDelta,
    AudioDone,
    AudioTranscriptDelta,
    AudioTranscriptDone,
    FunctionCallArgumentsDone,
    OutputItemAdded,
    ItemTruncated,
    RateLimitsUpdated,
    Error,
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


def parse_server_event(data: str | bytes) -> ServerEvent:
    """Parse one server frame.  Never raises, whatever the bytes.

    Unknown but well-formed events give :class:`Ignored`; anything else that
    cannot be read gives :class:`Malformed`: invalid JSON or UTF-8, nesting,
    numbers, duplicate keys or lone surrogates (see :mod:`fastagent.wire`), wrong
    types, and an audio ``delta`` that is not strict base64.
    """
    try:
        return _parse(data)
    except Exception as exc:  # (RecursionError, MemoryError ...): never raise
        return Malformed(f"unreadable frame: {type(exc).__name__}")


def _parse(data: str | bytes) -> ServerEvent:
    # Hot path: one msgspec pass straight into the tagged Struct.  msgspec
    # dispatches on the tag as it reads, so this costs what a decoder for
    # AudioDelta alone costs (measured in bench/bench_realtime_parse.py).
    try:
        event = _known_decoder.decode(data)
    except msgspec.DecodeError as exc:
        first_error: Exception = exc
    except TypeError:
        return Malformed(f"not a text frame: {type(data).__name__}")
    except RecursionError:
        return Malformed(f"frame nested deeper than {wire.MAX_DEPTH}")
    else:
        if type(event) is AudioDelta:
            # The delta goes into the caller's frame as is: strict base64 only.
            if not wire.is_base64(event.delta):
                return Malformed(
                    f"response.output_audio.delta: delta is not strict base64 "
                    f"({len(event.delta)} characters)"
                )
            # Strict as it is: byte for byte the compact form msgspec writes, which is
            # the API's own (same key order); one memcmp.  Else look closer.
            if data == _enc.encode(event) or wire.flat_unique(data):
                return event  # type: ignore[no-any-return]
        err = wire.strict_error(data)
        if err is not None:
            return Malformed(f"bad {event.__struct_config__.tag} event: {err}")
        return event  # type: ignore[no-any-return]
    try:
        kind = _type_decoder.decode(data).type
    except msgspec.ValidationError:
        return Malformed("server event without a string 'type'")
    except msgspec.DecodeError as exc:
        return Malformed(f"invalid JSON: {_short(exc)}")
    except RecursionError:
        return Malformed(f"frame nested deeper than {wire.MAX_DEPTH}")
    if kind not in KNOWN_TYPES:
        return Ignored(kind[:200])  # well-formed enough, and never acted on
    err = wire.strict_error(data)
    return Malformed(f"bad {kind} event: {err or _short(first_error)}")


_DELTA_TYPE: Final = b'"response.output_audio.delta"'


def audio_delta_now(data: bytes | bytearray | memoryview, sample_bytes: int) -> AudioDelta | None:
    """The audio fast lane's reading of a model frame: an ``AudioDelta`` whose
    ``delta`` is strict base64 of whole ``sample_bytes``-byte samples, or None for
    anything else, which the slow lane then reads with :func:`parse_server_event`
    and :func:`audio_delta_error`.  Never raises.

    As strict as those two, and cheaper: the same decoder and checks as
    :func:`parse_server_event`'s audio path (the frame byte for byte the compact
    form of its event, or one flat object with no escape and no repeated key), but
    no :class:`Malformed` to build, one base64 check instead of two, and frames
    without the delta's type written out are not decoded at all (they take the slow
    lane, which reads them anyway).  tests/test_fast_delta.py checks, on arbitrary
    input, that every frame accepted here is one the strict parser accepts as the
    same event.
    """
    t = type(data)
    if t is not bytes and t is not bytearray:  # (websockets' frames hold either)
        if t is not memoryview:
            return None
        data = bytes(data)
    if _DELTA_TYPE not in data:
        return None
    try:
        event = _known_decoder.decode(data)
        if type(event) is not AudioDelta:
            return None
        delta = event.delta
        if not wire.is_base64(delta):
            return None
        if sample_bytes > 1 and wire.b64_nbytes(delta) % sample_bytes:
            return None
        if data != _enc.encode(event) and not wire.flat_unique(data):
            return None
    except Exception:  # (msgspec.DecodeError, RecursionError ...): the slow lane says why
        return None
    return event


def audio_delta_error(event: AudioDelta, sample_bytes: int) -> str | None:
    """Why ``event``'s delta is not audio of ``sample_bytes``-byte samples, else
    None.  (:func:`parse_server_event` already checked it is strict base64.)"""
    err = wire.audio_error(event.delta, sample_bytes)
    return f"response.output_audio.delta: {err}" if err else None


# ------------------------------------------------------------------ client events

_enc = msgspec.json.Encoder()

InputFormat = Literal["audio/pcm", "audio/pcmu", "audio/pcma"]

SERVER_VAD: Final[Mapping[str, Any]] = {
    "type": "server_vad",
    "create_response": True,
    "interrupt_response": True,
}


class _Keep:
    """Sentinel: leave this session field as it is (do not send it)."""

    def __repr__(self) -> str:
        return "KEEP"


KEEP: Final = _Keep()


def _encode(obj: Any) -> str:
    return _enc.encode(obj).decode()


def audio_format(fmt: str) -> dict[str, Any]:
    """The GA format object: PCM is 24 kHz only; G.711 is 8 kHz by definition."""
    if fmt == "audio/pcm":
        return {"type": "audio/pcm", "rate": 24000}
    if fmt in ("audio/pcmu", "audio/pcma"):
        return {"type": fmt}
    raise ValueError(f"unknown Realtime audio format {fmt!r} (audio/pcm, audio/pcmu, audio/pcma)")


def function_tool(tool: Mapping[str, Any] | events.ToolSpec) -> dict[str, Any]:
    """A flat GA function tool from a dict or a :class:`fastagent.events.ToolSpec`."""
    if isinstance(tool, events.ToolSpec):
        src: Mapping[str, Any] = {
            "name": tool.name,
            "description": tool.description,
            "parameters": tool.parameters or {"type": "object", "properties": {}},
        }
    else:
        src = tool
    out: dict[str, Any] = {"type": "function", "name": src["name"]}
    if src.get("description"):
        out["description"] = src["description"]
    out["parameters"] = src.get("parameters") or {"type": "object", "properties": {}}
    return out


def session_update(
    *,
    instructions: str | None = None,
    tools: Sequence[Mapping[str, Any] | events.ToolSpec] | None = None,
    voice: str | None = "marin",
    input_format: str | None = "audio/pcmu",
    output_format: str | None = "audio/pcmu",
    transcription_model: str | None = "gpt-4o-mini-transcribe",
    vad: Mapping[str, Any] | None | _Keep = SERVER_VAD,
    tool_choice: str | None = None,
    reasoning_effort: str | None = None,
) -> str:
    """``session.update``.  ``None`` (or :data:`KEEP` for ``vad``) leaves a field unsent,
    so a mid-call update can change only instructions and tools (the voice is
    locked after the first audio).  ``vad=None`` turns server VAD off."""
    session: dict[str, Any] = {"type": "realtime", "output_modalities": ["audio"]}
    if instructions is not None:
        session["instructions"] = instructions
    audio_in: dict[str, Any] = {}
    if input_format is not None:
        audio_in["format"] = audio_format(input_format)
    if transcription_model is not None:
        audio_in["transcription"] = {"model": transcription_model}
    if not isinstance(vad, _Keep):
        audio_in["turn_detection"] = dict(vad) if vad is not None else None
    audio_out: dict[str, Any] = {}
    if output_format is not None:
        audio_out["format"] = audio_format(output_format)
    if voice is not None:
        audio_out["voice"] = voice
    audio: dict[str, Any] = {}
    if audio_in:
        audio["input"] = audio_in
    if audio_out:
        audio["output"] = audio_out
    if audio:
        session["audio"] = audio
    if tools is not None:
        session["tools"] = [function_tool(t) for t in tools]
    if tool_choice is not None:
        session["tool_choice"] = tool_choice
    if reasoning_effort:  # gpt-realtime-2 and later: minimal | low | medium | high | xhigh
        session["reasoning"] = {"effort": reasoning_effort}
    return _encode({"type": "session.update", "session": session})


_APPEND_HEAD: Final = '{"type":"input_audio_buffer.append","audio":"'


def append_audio(b64: str) -> str:
    """``input_audio_buffer.append`` around base64 the caller already has.

    Hot path: plain concatenation; base64 needs no JSON escaping.
    """
    return _APPEND_HEAD + b64 + '"}'


def function_call_output(call_id: str, output: str) -> str:
    item = {"type": "function_call_output", "call_id": call_id, "output": output}
    return _encode({"type": "conversation.item.create", "item": item})


def response_create(instructions: str | None = None, event_id: str | None = None) -> str:
    """``response.create``; ``event_id`` lets a rejection (``error.event_id``) be matched."""
    if instructions is None and event_id is None:
        return '{"type":"response.create"}'
    event: dict[str, Any] = {"type": "response.create"}
    if event_id is not None:
        event["event_id"] = event_id
    if instructions is not None:
        event["response"] = {"instructions": instructions}
    return _encode(event)


def response_cancel(response_id: str | None = None) -> str:
    if response_id is None:
        return '{"type":"response.cancel"}'
    return _encode({"type": "response.cancel", "response_id": response_id})


def truncate(item_id: str, audio_end_ms: int | float) -> str:
    """``conversation.item.truncate``; ms must be a non-negative integer on the wire."""
    ms = max(0, int(audio_end_ms))
    return _encode(
        {
            "type": "conversation.item.truncate",
            "item_id": item_id,
            "content_index": 0,
            "audio_end_ms": ms,
        }
    )


def item_delete(item_id: str) -> str:
    """``conversation.item.delete``: drop an item (e.g. assistant audio never heard)."""
    return _encode({"type": "conversation.item.delete", "item_id": item_id})


def _message(role: str, content_type: str, text: str) -> str:
    item = {
        "type": "message",
        "role": role,
        "content": [{"type": content_type, "text": text}],
    }
    return _encode({"type": "conversation.item.create", "item": item})


def user_text(text: str) -> str:
    """A user message (e.g. DTMF digits forwarded as text)."""
    return _message("user", "input_text", text)


def assistant_text(text: str) -> str:
    """An assistant message; in GA its content type is ``output_text``."""
    return _message("assistant", "output_text", text)


def system_text(text: str) -> str:
    return _message("system", "input_text", text)


def seed_items(transcript: Iterable[tuple[str, str]]) -> list[str]:
    """Frames that rebuild a conversation on a fresh model session.

    ``transcript`` is ``(role, text)`` pairs, role ``user``/``assistant``/``system``;
    empty texts are skipped.
    """
    builders = {"user": user_text, "assistant": assistant_text, "system": system_text}
    out: list[str] = []
    for role, text in transcript:
        build = builders.get(role)
        if build is None:
            raise ValueError(f"unknown role {role!r} (user, assistant, system)")
        if text:
            out.append(build(text))
    return out


# ------------------------------------------------------------------ state tracker


class ResponseActiveError(LocalProtocolError):
    """``response.create`` was requested while a response is active."""


class RealtimeProtocol:
    """Tracks response state for one Realtime session; no I/O.

    Feed every received frame to :meth:`receive`; ask :meth:`response_create`
    for a ``response.create`` frame.  While a response is active (from our
    request or the server's ``response.created`` until ``response.done``) it
    returns ``None`` and remembers the request; after ``response.done``,
    :meth:`data_to_send` hands out the held-back frame once.
    """

    def __init__(self) -> None:
        self.response_id: str = ""  # current (or last) response id
        self.requested = False  # sent response.create, response.created not yet seen
        self.in_progress = False  # between response.created and response.done
        self.session: SessionInfo | None = None
        self.item_audio_bytes: dict[str, int] = {}  # assistant item -> audio bytes
        self._queued: tuple[str | None] | None = None
        self._last_request: tuple[str | None] = (None,)
        self._requests = 0  # numbers our response.create event ids
        self._outbox: list[str] = []

    @property
    def response_active(self) -> bool:
        return self.requested or self.in_progress

    @property
    def has_queued_response(self) -> bool:
        return self._queued is not None

    def response_create(self, instructions: str | None = None, *, queue: bool = True) -> str | None:
        """A ``response.create`` frame to send now, or ``None`` if it was queued.

        With ``queue=False`` a request while a response is active raises
        :class:`ResponseActiveError` instead.
        """
        if self.response_active:
            if not queue:
                raise ResponseActiveError(f"response {self.response_id or '(pending)'} is active")
            self._queued = (instructions,)  # the latest request wins
            return None
        return self._request(instructions)

    def _request(self, instructions: str | None) -> str:
        self.requested = True
        self._requests += 1
        self._last_request = (instructions,)
        return response_create(instructions, event_id=self.request_event_id)

    @property
    def request_event_id(self) -> str:
        """The ``event_id`` of our latest ``response.create`` (deterministic)."""
        return f"fa_response_create_{self._requests}"

    def data_to_send(self) -> list[str]:
        """Frames the protocol wants sent now (a queued ``response.create``)."""
        out, self._outbox = self._outbox, []
        return out

    def receive(self, data: str | bytes) -> ServerEvent:
        event = parse_server_event(data)
        self.observe(event)
        return event

    def observe(self, event: ServerEvent) -> None:
        if type(event) is AudioDelta:  # hot path first
            d = event.delta
            nbytes = len(d) // 4 * 3 - (d[-1:] == "=") - (d[-2:-1] == "=")
            self.item_audio_bytes[event.item_id] = (
                self.item_audio_bytes.get(event.item_id, 0) + nbytes
            )
        elif isinstance(event, ResponseCreated):
            self.requested = False
            self.in_progress = True
            self.response_id = event.response.id
        elif isinstance(event, ResponseDone):
            self.requested = False
            self.in_progress = False
            self.response_id = event.response.id or self.response_id
            if self._queued is not None:
                (instructions,) = self._queued
                self._queued = None
                self._outbox.append(self._request(instructions))
        elif isinstance(event, SessionCreated | SessionUpdated):
            self.session = event.session
        elif isinstance(event, Error):
            self._on_error(event.error)

    def _on_error(self, err: ErrorInfo) -> None:
        ours = err.event_id == self.request_event_id
        if err.event_id and not ours:
            return  # about some other client event
        if err.code == "conversation_already_has_active_response":
            # Raced a response the server started itself (VAD, a function output):
            # that response is the reply wanted, so nothing is asked again after it
            # (asking again made the model speak a second, unrequested reply).
            self.requested = False
        elif ours or (self.requested and not self.in_progress):
            # A rejected response.create never produces response.created.
            self.requested = False

    def audio_ms_received(self, item_id: str) -> int:
        """Milliseconds of assistant audio received for ``item_id`` (for truncate)."""
        nbytes = self.item_audio_bytes.get(item_id, 0)
        fmt = self.session.output_format if self.session else "audio/pcm"
        per_ms = 48 if fmt in ("audio/pcm", "") else 8
        return nbytes // per_ms

    def truncate(self, item_id: str, played_ms: int | float) -> str:
        """``conversation.item.truncate`` clamped to the audio actually received."""
        return truncate(item_id, min(int(played_ms), self.audio_ms_received(item_id)))


# ------------------------------------------------------------------ translation
#
# Pure, used by both lanes of the model link (fastagent.service.realtime_link): what
# a parsed server event means to the engine, and what a model decision means on
# the wire.  The shell stamps call_id, seq and at, and writes the frames.

# What a sent frame expects the model to answer: (waiting_for, event_id), or None
# (fastagent.service.model_link times it).
Awaited = tuple[str, str] | None


def input_of(e: Any) -> tuple[type[events.Input], dict[str, Any]] | None:
    """The input event a parsed Realtime server event stands for, as
    ``(class, fields)`` (the call adds call_id, seq and at), or None.

    Audio deltas, ``session.updated`` and malformed frames are not inputs (see
    :meth:`fastagent.service.realtime_link.RealtimeLink.on_frame`).  Missing
    optional fields become "" / 0.
    """
    t = type(e)
    if t is SpeechStarted:
        return events.SpeechStarted, {
            "item_id": e.item_id or "",
            "audio_start_ms": e.audio_start_ms or 0,
        }
    if t is SpeechStopped:
        return events.SpeechStopped, {
            "item_id": e.item_id or "",
            "audio_end_ms": e.audio_end_ms or 0,
        }
    if t is AudioCommitted:
        return events.SpeechCommitted, {"item_id": e.item_id or ""}
    if t is InputTranscriptionCompleted:
        return events.Transcript, {
            "role": "user",
            "item_id": e.item_id or "",
            "text": e.transcript or "",
        }
    if t is ResponseCreated:
        return events.ResponseStarted, {"response_id": e.response.id}
    if t is InputTranscriptionFailed:
        err = e.error
        return events.TranscriptionFailed, {
            "item_id": e.item_id or "",
            "error_type": err.type or "",
            "code": err.code or "",
            "message": (err.message or "")[:500],
        }
    if t is AudioTranscriptDone:
        return events.Transcript, {
            "role": "assistant",
            "item_id": e.item_id or "",
            "text": e.transcript or "",
            "response_id": e.response_id or "",
        }
    if t is FunctionCallArgumentsDone:
        return events.FunctionCallRequested, {
            "response_id": e.response_id or "",
            "item_id": e.item_id or "",
            "tool_call_id": e.call_id or "",
            "name": e.name or "",
            "arguments": e.arguments or "",
        }
    if t is ResponseDone:
        r = e.response
        err = r.error
        return events.ResponseDone, {
            "response_id": r.id,
            "status": r.status or "",
            "reason": r.reason,
            "usage": r.usage.to_event_usage() if r.usage else events.Usage(),
            "error_type": err.type or "",
            "error_code": err.code or "",
            "error_message": (err.message or "")[:500],
        }
    if t is ItemTruncated:
        return events.ItemTruncated, {"item_id": e.item_id, "audio_end_ms": e.audio_end_ms}
    if t is RateLimitsUpdated:
        limits = tuple(
            events.RateLimit(
                name=x.name or "",
                limit=int(x.limit or 0),
                remaining=int(x.remaining or 0),
                reset_seconds=float(x.reset_seconds or 0),
            )
            for x in e.rate_limits or ()
        )
        return events.RateLimitsUpdated, {"limits": limits}
    if t is Error:
        err = e.error
        return events.ModelError, {
            "error_type": err.type or "",
            "code": err.code or "",
            "message": (err.message or "")[:500],
            "event_id": err.event_id or "",
            "param": err.param or "",
        }
    return None


def answer_of(e: Any) -> str | None:
    """Which awaited answer a server event is (see :data:`Awaited`)."""
    t = type(e)
    if t is ResponseCreated:
        return "response.created"
    if t is SessionCreated:
        return "session.created"
    if t is SessionUpdated:
        return "session.updated"
    if t is Error and (e.error.event_id or "").startswith("fa-response-"):
        return "response.created"  # refused: that is an answer too
    return None


def decision_frame(d: events.Decision) -> tuple[str, Awaited]:
    """The client frame of a model decision and the answer it awaits.

    Raises TypeError for a decision that is not one of MODEL_DECISIONS.
    """
    if isinstance(d, events.TruncateRequested):
        return truncate(d.item_id, d.audio_end_ms), None
    if isinstance(d, events.ResponseRequested):
        event_id = events.response_event_id(d.seq)
        frame = response_create(d.instructions or None, event_id=event_id)
        return frame, ("response.created", event_id)
    if isinstance(d, events.ItemDeleted):
        return item_delete(d.item_id), None
    if isinstance(d, events.FunctionOutputSent):
        return function_call_output(d.tool_call_id, d.output), None
    if isinstance(d, events.MessageInjected):
        build = user_text if d.role == "user" else system_text
        return build(d.text), None
    raise TypeError(f"not a model decision: {type(d).__name__}")


def configure_frames(d: events.ModelConfigured) -> list[str]:
    """``session.update`` for a ModelConfigured (built from the decision alone: its
    instructions, tool specs, voice, formats), then its ``history`` as conversation
    items (a fresh session's; exactly what the log says it was told)."""
    frame = session_update(
        instructions=d.instructions,
        tools=d.tools,
        voice=d.voice or None,
        input_format=d.input_format,
        output_format=d.output_format,
        reasoning_effort=d.reasoning_effort or None,  # reasoning models only (the core)
    )
    return [frame, *seed_items([(h.role, h.text) for h in d.history])]


# ------------------------------------------------------------------ connection

DEFAULT_MODEL: Final = "gpt-realtime-2"  # see fastagent.models


class RealtimeConfigError(ConfigError):
    """Missing or bad Realtime connection settings."""
