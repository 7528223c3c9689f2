"""AudioCodes VoiceAI Connect (VAIC) streaming protocol, bot side, sans-I/O.

:class:`VaicProtocol` parses the text frames VAIC sends (``receive``) and builds
the frames the bot sends (module builders and the stateful ``play_*`` methods).
It owns no socket: the shell feeds it frames and writes the bytes it returns.
See docs/audiocodes.md.

Hot path: ``userStream.chunk`` frames are decoded by msgspec straight into a
small struct; the base64 audio stays a string (it is forwarded untouched), its
alphabet is checked with one precompiled regex (about 1.4 µs for 20 ms of 24 kHz
PCM) and its decoded size is computed from its length.  ``playStream.chunk``
frames are built by joining bytes around the base64 text, never re-encoding it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Literal

import msgspec

from fastagent import events as ev
from fastagent import wire
from fastagent.errors import LocalProtocolError

DEFAULT_MAX_FRAME_BYTES = 256 * 1024

# --------------------------------------------------------------------- inbound


class _In(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    conversationId: str = ""
    participant: str | None = None  # agent-assist calls only


class ConnectionValidate(_In, frozen=True, kw_only=True, tag="connection.validate"):
    pass


class SessionInitiate(_In, frozen=True, kw_only=True, tag="session.initiate"):
    botName: str = ""
    caller: str = ""
    expectAudioMessages: bool = True
    supportedMediaFormats: list[str] = msgspec.field(default_factory=list)


class SessionResume(_In, frozen=True, kw_only=True, tag="session.resume"):
    pass


class SessionEnd(_In, frozen=True, kw_only=True, tag="session.end"):
    reasonCode: str = ""
    reason: str = ""


class UserStreamStart(_In, frozen=True, kw_only=True, tag="userStream.start"):
    pass


class UserStreamChunk(_In, frozen=True, kw_only=True, tag="userStream.chunk"):
    audioChunk: str = ""

    @property
    def nbytes(self) -> int:
        """Decoded audio size, from the base64 length and padding (no decoding)."""
        s = self.audioChunk
        return len(s) // 4 * 3 - (s[-1:] == "=") - (s[-2:-1] == "=")


class UserStreamStop(_In, frozen=True, kw_only=True, tag="userStream.stop"):
    pass


class Activity(msgspec.Struct, frozen=True, kw_only=True):
    """One VAIC activity (usually ``{"type": "event", "name": ...}``)."""

    type: str = "event"
    name: str = ""
    value: Any = None
    id: str | None = None
    timestamp: str | None = None
    language: str | None = None
    text: str | None = None
    parameters: dict[str, Any] = msgspec.field(default_factory=dict)

    @property
    def is_start(self) -> bool:
        return self.type == "event" and self.name == "start"

    @property
    def is_dtmf(self) -> bool:
        # The docs say "DTMF"; third-party code uses "dtmf": compare case-insensitively.
        return self.type == "event" and self.name.lower() == "dtmf"

    @property
    def digits(self) -> str:
        """DTMF digits of a DTMF activity, upper-cased; "" unless ``value`` is a
        string (or integer) of 1 to 32 of ``0-9*#A-D`` (see :attr:`dtmf_error`)."""
        v = self.value
        if isinstance(v, int) and not isinstance(v, bool):
            v = str(v)
        if isinstance(v, str) and _DTMF_IN_RE.fullmatch(v):
            return v.upper()
        return ""

    @property
    def dtmf_error(self) -> str | None:
        """Why a DTMF activity's value is not valid DTMF (one line), else None."""
        if not self.is_dtmf or self.digits:
            return None
        v = self.value
        if v is None:
            return "DTMF activity without a value"
        if not isinstance(v, str | int) or isinstance(v, bool):
            return f"DTMF activity value is {_json_kind(v)}, not a string of digits"
        shown = repr(v) if len(repr(v)) <= 40 else repr(v)[:37] + "..."
        return f"DTMF activity value {shown} is not 1-{MAX_DTMF_DIGITS} of 0-9*#A-D"

    @property
    def caller(self) -> str:
        v = self.parameters.get("caller")
        return v if isinstance(v, str) else ""

    @property
    def callee(self) -> str:
        v = self.parameters.get("callee")
        return v if isinstance(v, str) else ""


MAX_CONVERSATION_ID = 128  # characters; VAIC's are UUIDs or similar
MAX_DTMF_DIGITS = 32  # per activity; keys pressed by a person, not a data channel
_DTMF_IN_RE = re.compile(rf"[0-9*#A-Da-d]{{1,{MAX_DTMF_DIGITS}}}")


def _json_kind(value: object) -> str:
    """The JSON name of a decoded value's type, for error messages."""
    kinds = {dict: "an object", list: "an array", float: "a number", bool: "a boolean"}
    return kinds.get(type(value), f"a {type(value).__name__}")


class Activities(_In, frozen=True, kw_only=True, tag="activities"):
    activities: list[Activity] = msgspec.field(default_factory=list)


VaicMessage = (
    ConnectionValidate
    | SessionInitiate
    | SessionResume
    | SessionEnd
    | UserStreamStart
    | UserStreamChunk
    | UserStreamStop
    | Activities
)
MESSAGE_TYPES: dict[str, type] = {
    c.__struct_config__.tag: c  # type: ignore[attr-defined]
    for c in (
        ConnectionValidate,
        SessionInitiate,
        SessionResume,
        SessionEnd,
        UserStreamStart,
        UserStreamChunk,
        UserStreamStop,
        Activities,
    )
}


class ProtocolViolation(msgspec.Struct, frozen=True):
    """A frame that was rejected.  ``reply``, when set, should be sent back
    (a ``session.error``: the session cannot go on); otherwise log and ignore."""

    message: str
    reply: bytes | None = None


# -------------------------------------------------------------------- outbound


class _Out(msgspec.Struct, kw_only=True, omit_defaults=True, tag_field="type"):
    participant: str | None = None


class _ConnectionValidated(_Out, kw_only=True, tag="connection.validated"):
    success: bool  # required, so omit_defaults keeps it


class _SessionAccepted(_Out, kw_only=True, tag="session.accepted"):
    mediaFormat: str | None = None


class _SessionError(_Out, kw_only=True, tag="session.error"):
    reason: str


class _UserStreamStarted(_Out, kw_only=True, tag="userStream.started"):
    pass


class _UserStreamStopped(_Out, kw_only=True, tag="userStream.stopped"):
    pass


class _SpeechStarted(_Out, kw_only=True, tag="userStream.speech.started"):
    pass


class _SpeechStopped(_Out, kw_only=True, tag="userStream.speech.stopped"):
    pass


class _SpeechCommitted(_Out, kw_only=True, tag="userStream.speech.committed"):
    pass


class Alternative(msgspec.Struct, kw_only=True, omit_defaults=True):
    text: str
    confidence: float | None = None


class _SpeechHypothesis(_Out, kw_only=True, tag="userStream.speech.hypothesis"):
    alternatives: list[Alternative]


class _SpeechRecognition(_Out, kw_only=True, tag="userStream.speech.recognition"):
    alternatives: list[Alternative]


class _PlayStreamStart(_Out, kw_only=True, tag="playStream.start"):
    streamId: str
    mediaFormat: str
    altText: str | None = None


class _PlayStreamStop(_Out, kw_only=True, tag="playStream.stop"):
    streamId: str


class BotActivity(msgspec.Struct, kw_only=True, omit_defaults=True):
    type: str  # "event" (required, so omit_defaults keeps it)
    name: str
    activityParams: dict[str, Any] | None = None
    sessionParams: dict[str, Any] | None = None


class _Activities(_Out, kw_only=True, tag="activities"):
    activities: list[BotActivity]


_encode = msgspec.json.Encoder().encode


def _event(name: str, **params: Any) -> BotActivity:
    return BotActivity(type="event", name=name, **params)


_DTMF_RE = re.compile(r"[0-9*#]{1,20}")


def connection_validated() -> bytes:
    return _encode(_ConnectionValidated(success=True))


def session_accepted(media_format: str | None) -> bytes:
    return _encode(_SessionAccepted(mediaFormat=media_format))


def session_error(reason: str) -> bytes:
    return _encode(_SessionError(reason=reason))


def user_stream_started(participant: str | None = None) -> bytes:
    return _encode(_UserStreamStarted(participant=participant))


def user_stream_stopped(participant: str | None = None) -> bytes:
    return _encode(_UserStreamStopped(participant=participant))


def speech_started(participant: str | None = None) -> bytes:
    return _encode(_SpeechStarted(participant=participant))


def speech_stopped(participant: str | None = None) -> bytes:
    return _encode(_SpeechStopped(participant=participant))


def speech_committed(participant: str | None = None) -> bytes:
    return _encode(_SpeechCommitted(participant=participant))


def speech_hypothesis(text: str, participant: str | None = None) -> bytes:
    return _encode(
        _SpeechHypothesis(alternatives=[Alternative(text=text)], participant=participant)
    )


def speech_recognition(
    text: str, confidence: float | None = None, participant: str | None = None
) -> bytes:
    alt = Alternative(text=text, confidence=confidence)
    return _encode(_SpeechRecognition(alternatives=[alt], participant=participant))


def notification(message_type: str, text: str = "", participant: str = "") -> bytes:
    """The frame of one notification about the caller's own stream (the engine's
    ``CallerNotified`` decision): ``userStream.started`` / ``.stopped`` (with
    ``participant`` echoed when not empty), ``userStream.speech.started`` /
    ``.stopped`` / ``.committed``, or ``userStream.speech.recognition`` of
    ``text``.  Every value goes through the JSON encoder (the text is the model's
    transcript: never pasted).  Raises ValueError for any other message type."""
    who = participant or None
    if message_type == "userStream.speech.recognition":
        return speech_recognition(text, participant=who)
    build = _NOTICES.get(message_type)
    if build is None:
        raise ValueError(f"not a VAIC notification: {message_type!r}")
    return build(who)


_NOTICES = {
    "userStream.started": user_stream_started,
    "userStream.stopped": user_stream_stopped,
    "userStream.speech.started": speech_started,
    "userStream.speech.stopped": speech_stopped,
    "userStream.speech.committed": speech_committed,
}


def play_stream_start(stream_id: str, media_format: str, alt_text: str | None = None) -> bytes:
    return _encode(_PlayStreamStart(streamId=stream_id, mediaFormat=media_format, altText=alt_text))


def _chunk_prefix(stream_id: str) -> bytes:
    return b'{"type":"playStream.chunk","streamId":' + _encode(stream_id) + b',"audioChunk":"'


def play_stream_chunk(stream_id: str, b64: str | bytes) -> bytes:
    """The base64 text is inserted as is: it must be valid base64 (no JSON escaping)."""
    if isinstance(b64, str):
        b64 = b64.encode("ascii")
    return b"".join((_chunk_prefix(stream_id), b64, b'"}'))


def play_stream_stop(stream_id: str) -> bytes:
    return _encode(_PlayStreamStop(streamId=stream_id))


def activities(*items: BotActivity) -> bytes:
    return _encode(_Activities(activities=list(items)))


def hangup(reason: str = "done") -> bytes:
    return activities(_event("hangup", activityParams={"hangupReason": reason}))


def transfer(
    target: str,
    handover_reason: str | None = None,
    sip_headers: Sequence[tuple[str, str]] = (),
) -> bytes:
    params: dict[str, Any] = {"transferTarget": target}
    if handover_reason:
        params["handoverReason"] = handover_reason
    if sip_headers:
        params["transferSipHeaders"] = [{"name": n, "value": v} for n, v in sip_headers]
    return activities(_event("transfer", activityParams=params))


def send_dtmf(digits: str) -> bytes:
    """Raises ValueError unless ``digits`` is 1 to 20 of ``0-9*#``."""
    if not _DTMF_RE.fullmatch(digits):
        raise ValueError(f"DTMF digits must be 1-20 of 0-9*#, got {digits!r}")
    return activities(_event("sendDtmf", activityParams={"dtmfDigits": digits}))


def config(session_params: dict[str, Any]) -> bytes:
    return activities(_event("config", sessionParams=session_params))


def pause_call_recording() -> bytes:
    """``pauseCallRecording``: the platform stops recording (payment-card data is said)."""
    return activities(_event("pauseCallRecording"))


def resume_call_recording() -> bytes:
    """``resumeCallRecording``: the platform records again."""
    return activities(_event("resumeCallRecording"))


# ------------------------------------------------------------ format negotiation

ModelFormat = Literal["audio/pcm", "audio/pcmu"]


class Negotiated(msgspec.Struct, frozen=True):
    """The caller-side VAIC format and the OpenAI format it is bridged to.

    ``resample_from_hz`` is the VAIC rate, ``resample_to_hz`` the model rate;
    they are equal for a passthrough.  Bot audio goes the other way.
    """

    vaic_format: str
    model_format: ModelFormat
    resample_from_hz: int
    resample_to_hz: int

    @property
    def passthrough(self) -> bool:
        return self.resample_from_hz == self.resample_to_hz


_PASSTHROUGH: dict[str, Negotiated] = {
    "raw/lpcm16_24": Negotiated("raw/lpcm16_24", "audio/pcm", 24000, 24000),
    "raw/mulaw": Negotiated("raw/mulaw", "audio/pcmu", 8000, 8000),
}
_RESAMPLED: dict[str, Negotiated] = {
    "raw/lpcm16": Negotiated("raw/lpcm16", "audio/pcm", 16000, 24000),
    "raw/lpcm16_8": Negotiated("raw/lpcm16_8", "audio/pcm", 8000, 24000),
}
# VAIC versions that send no list are assumed to stream the SDK default [I].
DEFAULT_OFFER: tuple[str, ...] = ("raw/lpcm16",)


def choose_format(offered: Sequence[str]) -> Negotiated | None:
    """Pick the first passthrough format in the caller's order, else the first
    resampled one; None when nothing offered is usable."""
    names = [f.strip().lower() for f in (offered or DEFAULT_OFFER) if isinstance(f, str)]
    for table in (_PASSTHROUGH, _RESAMPLED):
        for name in names:
            if name in table:
                return table[name]
    return None


def no_format_reason(offered: Sequence[str]) -> str:
    listed = ", ".join(offered) if offered else "none"
    return f"no supported media format offered (offered: {listed})"


# -------------------------------------------------------------------- protocol


class VaicStateError(LocalProtocolError):
    """The bot side tried something out of order (a bug in the caller)."""


UserStreamState = Literal["idle", "started", "stopped"]

_decoder = msgspec.json.Decoder(VaicMessage)

_generic = msgspec.json.Decoder()


class VaicProtocol:
    """Bot side of one VAIC WebSocket.  Feed it each text frame with
    :meth:`receive`; send what the builders and ``play_*`` methods return.

    What the bot may send on its own: before a session exists (until
    :meth:`accept`) there is no call and no log, so the protocol answers the
    handshake itself, as wsproto answers a ping: ``connection.validated`` to a
    :class:`ConnectionValidate` and the ``session.error`` a violation carries as
    its ``reply``.  Once the session is accepted every frame the caller receives
    is the consequence of an engine decision recorded in the call's log (the
    shell translates it), so ``receive`` gives no more replies: a
    ``connection.validate`` or a bad ``session.*`` frame is then a violation,
    recorded, with no answer (docs/architecture.md, "What the caller receives").
    """

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        self.max_frame_bytes = max_frame_bytes
        self.conversation_id = ""
        self.validated = False
        self.initiated = False
        self.accepted = False  # a session exists: replies are the engine's only
        self.resumed = False
        self.ended = False
        self.user_stream: UserStreamState = "idle"
        self.media_format: str | None = None
        self.sample_bytes = 1  # of media_format: chunks must be whole samples
        self._cid = ""  # conversationId of the last chunk, and its frames' head
        self._chunk_head = b""
        self.play_stream_id: str | None = None
        self.play_format = ""
        self.play_chunks = 0
        self.play_bytes = 0  # of the current (or last) play stream, decoded size
        self._play_prefix = b""

    # ----------------------------------------------------------------- inbound

    def receive(self, data: str | bytes) -> VaicMessage | ProtocolViolation:
        """The frame as a message, or a :class:`ProtocolViolation`.  Never raises,
        whatever the bytes: size, nesting, numbers, encoding, duplicate keys and
        types are all checked (see :mod:`fastagent.wire`)."""
        try:
            out = self._receive(data)
        except Exception as exc:  # a parser that raises would kill the socket
            return ProtocolViolation(f"unreadable frame: {type(exc).__name__}")
        if self.accepted and type(out) is ProtocolViolation and out.reply is not None:
            return ProtocolViolation(out.message)  # the engine alone answers in a session
        return out

    def _receive(self, data: str | bytes) -> VaicMessage | ProtocolViolation:
        if not isinstance(data, str | bytes):
            return ProtocolViolation(f"not a text frame: {type(data).__name__}")
        if len(data) > self.max_frame_bytes:
            return ProtocolViolation(
                f"frame of {len(data)} bytes exceeds the limit of {self.max_frame_bytes}"
            )
        try:
            msg = _decoder.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:
            return self._diagnose(data, exc)
        if self.ended:
            return ProtocolViolation(f"{_type_of(msg)} after session.end")
        if type(msg) is UserStreamChunk:  # hot path first
            out = self._chunk(msg)
            if type(out) is UserStreamChunk and not self._plain_chunk(data, msg):
                err = wire.strict_error(data)
                if err is not None:
                    return ProtocolViolation(f"invalid userStream.chunk: {err}")
            return out
        err = wire.strict_error(data)  # control frames are rare: check them fully
        if err is not None:
            return self._violation(_type_of(msg), err)
        return self._control(msg)

    def receive_chunk(self, data: bytes) -> UserStreamChunk | None:
        """The frame as a valid ``userStream.chunk``, or None (anything else, or a
        chunk :meth:`receive` would reject or would have to check further).
        Changes no state, so a None frame can go through :meth:`receive`
        afterwards.  Never raises."""
        if len(data) > self.max_frame_bytes or self.ended:
            return None
        try:
            msg = _decoder.decode(data)
            if type(msg) is not UserStreamChunk:
                return None
            ok = self._chunk(msg)
            return ok if type(ok) is UserStreamChunk and self._plain_chunk(data, msg) else None
        except Exception:  # (RecursionError, and anything else: the slow lane decides)
            return None

    def _plain_chunk(self, data: str | bytes, msg: UserStreamChunk) -> bool:
        """The chunk frame has no duplicate key and nothing nested.

        Fast: a frame that is ``{"type":"userStream.chunk","conversationId":CID,
        "audioChunk":"`` + the validated base64 + ``"}``, checked by its two ends and
        its length (a duplicate key or an escape would make it longer); otherwise
        :func:`fastagent.wire.flat_unique`."""
        cid = msg.conversationId
        if cid and msg.participant is None:
            if cid != self._cid:
                self._cid = cid
                self._chunk_head = b'{"type":"userStream.chunk","conversationId":' + (
                    _encode(cid) + b',"audioChunk":"'
                )
            head = self._chunk_head
            b = data.encode() if type(data) is str else data
            if (
                len(b) == len(head) + len(msg.audioChunk) + 2
                and b.startswith(head)  # type: ignore[arg-type]
                and b.endswith(b'"}')  # type: ignore[arg-type]
            ):
                return True
        return wire.flat_unique(data)

    def _chunk(self, msg: UserStreamChunk) -> UserStreamChunk | ProtocolViolation:
        if self.user_stream != "started":
            return ProtocolViolation(
                "userStream.chunk before userStream.start"
                if self.user_stream == "idle"
                else "userStream.chunk after userStream.stop"
            )
        b64 = msg.audioChunk
        if not wire.is_base64(b64):
            return ProtocolViolation(f"invalid base64 in audioChunk ({len(b64)} characters)")
        if self.sample_bytes > 1 and wire.b64_nbytes(b64) % self.sample_bytes:
            return ProtocolViolation(
                f"audioChunk of {wire.b64_nbytes(b64)} bytes is not whole "
                f"{self.sample_bytes}-byte samples of {self.media_format}"
            )
        if msg.conversationId and msg.conversationId != self.conversation_id:
            return ProtocolViolation(
                f"userStream.chunk for another conversation {_show(msg.conversationId)}"
            )
        return msg

    def _violation(self, kind: str, why: str) -> ProtocolViolation:
        reply = None
        if kind in ("session.initiate", "session.resume") and not self.initiated:
            reply = session_error(f"invalid {kind}")
        return ProtocolViolation(f"invalid {kind}: {why}", reply)

    def _control(self, msg: VaicMessage) -> VaicMessage | ProtocolViolation:
        kind = type(msg)
        if kind is ConnectionValidate:
            if self.accepted:  # a validation probe opens a socket of its own
                return ProtocolViolation("connection.validate during a session")
            self.validated = True
            return msg
        if kind is SessionInitiate or kind is SessionResume:
            return self._session(msg)  # type: ignore[arg-type]
        if kind is SessionEnd:
            self.ended = True
            return msg
        if not self.initiated:
            return ProtocolViolation(f"{_type_of(msg)} before session.initiate")
        if msg.conversationId and msg.conversationId != self.conversation_id:
            return ProtocolViolation(
                f"{_type_of(msg)} for another conversation {_show(msg.conversationId)}"
            )
        if kind is UserStreamStart:
            self.user_stream = "started"
        elif kind is UserStreamStop:
            self.user_stream = "stopped"
        return msg

    def _session(self, msg: SessionInitiate | SessionResume) -> VaicMessage | ProtocolViolation:
        name = _type_of(msg)
        if not msg.conversationId:
            return ProtocolViolation(
                f"{name} without conversationId", session_error("missing conversationId")
            )
        cid = msg.conversationId
        if len(cid) > MAX_CONVERSATION_ID or not cid.isprintable():
            return ProtocolViolation(
                f"{name} with a conversationId of {len(cid)} characters, not 1-"
                f"{MAX_CONVERSATION_ID} printable ones",
                session_error("invalid conversationId"),
            )
        if self.initiated and msg.conversationId != self.conversation_id:
            return ProtocolViolation(
                f"{name} for {_show(msg.conversationId)} "
                f"on the socket of {_show(self.conversation_id)}",
                session_error("conversation id mismatch"),
            )
        if type(msg) is SessionInitiate:
            if self.initiated:
                return ProtocolViolation("duplicate session.initiate")
        else:
            # VAIC may go on streaming on the new socket without a new
            # userStream.start [I]: accept chunks after a resume.
            self.resumed = True
            self.user_stream = "started"
        self.initiated = True
        self.conversation_id = msg.conversationId
        return msg

    def _diagnose(self, data: str | bytes, exc: Exception) -> ProtocolViolation:
        """Slow path: say precisely what is wrong with a frame that failed to decode."""
        if isinstance(exc, RecursionError):
            return ProtocolViolation(f"frame nested deeper than {wire.MAX_DEPTH}")
        err = wire.strict_error(data)
        if err is not None and not err.startswith("duplicate key"):
            return ProtocolViolation(err)
        raw = _generic.decode(data)  # valid and shallow: strict_error said so
        if not isinstance(raw, dict):
            return ProtocolViolation(f"frame is a JSON {_json_kind(raw)}, not an object")
        kind = raw.get("type")
        if kind is None:
            return ProtocolViolation("frame has no type")
        if not isinstance(kind, str):
            return ProtocolViolation(f"frame type is {_json_kind(kind)}, not a string")
        if kind not in MESSAGE_TYPES:
            return ProtocolViolation(f"unknown message type {_show(kind)} ignored")
        return self._violation(kind, err or _first_line(exc))

    # ---------------------------------------------------------------- outbound

    def accept(self, media_format: str | None) -> bytes:
        """``session.accepted``; on a resume, send the format again (safer).
        From now on every ``audioChunk`` must be whole samples of that format."""
        self.media_format = media_format
        self.sample_bytes = 1 if media_format in (None, "raw/mulaw") else 2
        self.accepted = True
        return session_accepted(media_format)

    def play_start(self, stream_id: str, media_format: str, alt_text: str | None = None) -> bytes:
        if self.play_stream_id is not None:
            raise VaicStateError(
                f"play stream {self.play_stream_id!r} is active; stop it before {stream_id!r}"
            )
        self.play_stream_id = stream_id
        self.play_format = media_format
        self.play_chunks = 0
        self.play_bytes = 0
        self._play_prefix = _chunk_prefix(stream_id)
        return play_stream_start(stream_id, media_format, alt_text)

    def play_chunk(self, b64: str | bytes) -> bytes:
        """One ``playStream.chunk`` around ``b64`` (valid base64, not re-encoded)."""
        if self.play_stream_id is None:
            raise VaicStateError("playStream.chunk with no active play stream")
        data = b64.encode("ascii") if type(b64) is str else b64
        self.play_chunks += 1
        self.play_bytes += (len(data) >> 2) * 3 - data.endswith(b"=") - data.endswith(b"==")
        return self._play_prefix + data + b'"}'

    def play_stop(self) -> bytes | None:
        """``playStream.stop`` for the active stream; None when none is active."""
        if self.play_stream_id is None:
            return None
        sid, self.play_stream_id = self.play_stream_id, None
        return play_stream_stop(sid)

    def frame_of(self, d: ev.Decision) -> bytes | None:
        """The frame of a caller-side decision, updating the protocol state:
        SessionAccepted -> :meth:`accept`, PlaybackStarted -> :meth:`play_start`,
        PlaybackStopped -> :meth:`play_stop` (None when no stream is active), the
        rest -> :func:`decision_frame`.  Raises VaicStateError for a play stream
        started while one is active."""
        if isinstance(d, ev.PlaybackStarted):
            return self.play_start(d.stream_id, d.fmt)
        if isinstance(d, ev.PlaybackStopped):
            return self.play_stop()
        if isinstance(d, ev.SessionAccepted):
            return self.accept(d.media_format)
        return decision_frame(d)


# ------------------------------------------------------------------ translation
#
# Pure, in the manner of realtime_link.input_of / decision_frame: what a parsed
# VAIC message means to the engine, and what a caller-side decision means on the
# wire.  The shell stamps call_id, seq and at, and writes the bytes.

Translation = tuple[type[ev.Input], dict[str, Any]] | ProtocolViolation


def inputs_of(msg: VaicMessage) -> list[Translation]:
    """The input events a parsed VAIC message stands for, in order, each as
    ``(class, fields)``, or a :class:`ProtocolViolation` for a part that is not
    valid (a DTMF activity whose value is not digits); [] for a message that is
    no input (docs/audiocodes.md, "Messages from VAIC").

    ``session.end`` -> SessionEnded; ``userStream.start``/``.stop`` ->
    CallerStreamStarted/Stopped; ``activities`` -> CallStarted per ``start``
    event, Dtmf per DTMF event (others ignored).  ``connection.validate``,
    ``session.initiate``/``.resume`` (the shell's ownership) and
    ``userStream.chunk`` (the audio lanes: :class:`fastagent.events.CallerAudio`)
    are not translated here.  Never raises.
    """
    t = type(msg)
    if t is SessionEnd:
        assert isinstance(msg, SessionEnd)
        return [(ev.SessionEnded, {"reason_code": msg.reasonCode, "reason": msg.reason})]
    if t is UserStreamStart:  # the engine answers it (a CallerNotified decision)
        return [(ev.CallerStreamStarted, {"participant": msg.participant or ""})]
    if t is UserStreamStop:
        return [(ev.CallerStreamStopped, {"participant": msg.participant or ""})]
    if t is Activities:
        assert isinstance(msg, Activities)
        out: list[Translation] = []
        for act in msg.activities:
            if act.is_start:
                fields = {
                    "caller": act.caller,
                    "callee": act.callee,
                    "parameters": dict(act.parameters),
                }
                out.append((ev.CallStarted, fields))
            elif act.is_dtmf:
                err = act.dtmf_error
                if err:
                    out.append(ProtocolViolation(err))
                else:
                    out.append((ev.Dtmf, {"digits": act.digits}))
        return out
    return []


def decision_frame(d: ev.Decision) -> bytes | None:
    """The VAIC frame of a caller-side decision that needs no protocol state, or
    None if ``d`` is not one (docs/audiocodes.md, "Messages to VAIC").

    SessionRejected -> ``session.error``; HangupRequested -> a ``hangup``
    activity; TransferRequested -> a ``transfer`` activity; SessionParamsSent ->
    ``config``; DtmfSent -> a ``sendDtmf`` activity; CallRecordingPaused/Resumed
    -> their activities; CallerNotified -> its ``userStream.*`` notification
    (:func:`notification`: the recognition's text JSON-encoded).  The stateful
    ones (SessionAccepted, PlaybackStarted, PlaybackStopped) go through
    :meth:`VaicProtocol.frame_of`.  Raises ValueError only where a builder
    refuses its value (DTMF digits, a message type that is no notification).
    """
    if isinstance(d, ev.SessionRejected):
        return session_error(d.reason)
    if isinstance(d, ev.HangupRequested):
        return hangup(d.reason or "done")
    if isinstance(d, ev.TransferRequested):
        return transfer(d.target, handover_reason=d.reason)
    if isinstance(d, ev.SessionParamsSent):
        return config(d.params)
    if isinstance(d, ev.DtmfSent):
        return send_dtmf(d.digits)
    if isinstance(d, ev.CallRecordingPaused):
        return pause_call_recording()
    if isinstance(d, ev.CallRecordingResumed):
        return resume_call_recording()
    if isinstance(d, ev.CallerNotified):
        return notification(d.message_type, d.text, d.participant)
    return None


def _type_of(msg: VaicMessage) -> str:
    return type(msg).__struct_config__.tag  # type: ignore[return-value]


def is_base64(s: str) -> bool:
    return wire.is_base64(s)


def _show(s: str) -> str:
    """A peer's string in a log line: quoted, escaped, at most 40 characters."""
    r = repr(s)
    return r if len(r) <= 40 else r[:37] + "..."


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
