"""The sans-I/O VAIC protocol object, fed plain lists of frames."""

from __future__ import annotations

import base64
import json

import msgspec
import pytest

from fastagent import vaic
from fastagent.vaic import (
    Activities,
    Negotiated,
    ProtocolViolation,
    SessionEnd,
    SessionInitiate,
    UserStreamChunk,
    VaicProtocol,
    VaicStateError,
    choose_format,
)

CID = "6d1f0c5e-2a3b-4c5d-8e9f-0a1b2c3d4e5f"


def frame(type_: str, **fields: object) -> str:
    return msgspec.json.encode({"type": type_, "conversationId": CID, **fields}).decode()


def chunk(b64: str) -> str:
    return frame("userStream.chunk", audioChunk=b64)


def started() -> VaicProtocol:
    p = VaicProtocol()
    assert isinstance(
        p.receive(frame("session.initiate", supportedMediaFormats=["raw/mulaw"])), SessionInitiate
    )
    assert not isinstance(p.receive(frame("userStream.start")), ProtocolViolation)
    return p


def violation(p: VaicProtocol, data: str | bytes) -> ProtocolViolation:
    out = p.receive(data)
    assert isinstance(out, ProtocolViolation), out
    return out


# ------------------------------------------------------------------ good frames


def test_full_call_flow_parses_typed_messages() -> None:
    p = VaicProtocol()
    assert isinstance(p.receive('{"type":"connection.validate"}'), vaic.ConnectionValidate)
    assert p.validated
    init = p.receive(
        frame(
            "session.initiate",
            botName="bank",
            caller="+15550100",
            expectAudioMessages=True,
            supportedMediaFormats=["raw/lpcm16", "raw/mulaw"],
            someFutureField={"x": 1},
        )
    )
    assert isinstance(init, SessionInitiate)
    assert init.supportedMediaFormats == ["raw/lpcm16", "raw/mulaw"]
    assert (init.botName, init.caller, p.conversation_id) == ("bank", "+15550100", CID)

    start = p.receive(
        frame(
            "activities",
            activities=[
                {
                    "type": "event",
                    "name": "start",
                    "id": "a1",
                    "parameters": {"caller": "+15550100", "callee": "+15550199"},
                }
            ],
        )
    )
    assert isinstance(start, Activities)
    act = start.activities[0]
    assert act.is_start and not act.is_dtmf
    assert (act.caller, act.callee) == ("+15550100", "+15550199")

    assert p.receive(frame("userStream.start")) is not None
    assert p.user_stream == "started"
    audio = base64.b64encode(bytes(160)).decode()
    msg = p.receive(chunk(audio).encode())  # bytes frames work too
    assert isinstance(msg, UserStreamChunk)
    assert msg.audioChunk == audio  # untouched
    assert msg.nbytes == 160

    dtmf = p.receive(
        frame("activities", activities=[{"type": "event", "name": "dtmf", "value": "42#"}])
    )
    assert isinstance(dtmf, Activities)
    assert dtmf.activities[0].is_dtmf and dtmf.activities[0].digits == "42#"
    upper = p.receive(
        frame("activities", activities=[{"type": "event", "name": "DTMF", "value": 7}])
    )
    assert isinstance(upper, Activities) and upper.activities[0].digits == "7"

    assert p.receive(frame("userStream.stop")) is not None
    assert p.user_stream == "stopped"
    end = p.receive(frame("session.end", reasonCode="client-disconnected", reason="Caller hung up"))
    assert isinstance(end, SessionEnd) and end.reasonCode == "client-disconnected"
    assert p.ended


@pytest.mark.parametrize(
    ("size", "expected"), [(0, 0), (1, 1), (2, 2), (3, 3), (160, 160), (961, 961)]
)
def test_chunk_byte_count_without_decoding(size: int, expected: int) -> None:
    p = started()
    msg = p.receive(chunk(base64.b64encode(bytes(size)).decode()))
    assert isinstance(msg, UserStreamChunk) and msg.nbytes == expected


def test_participant_is_kept() -> None:
    p = started()
    msg = p.receive(frame("userStream.chunk", audioChunk="AAAA", participant="agent"))
    assert isinstance(msg, UserStreamChunk) and msg.participant == "agent"


def test_resume_accepts_chunks_without_new_user_stream_start() -> None:
    p = VaicProtocol()
    assert not isinstance(p.receive(frame("session.resume")), ProtocolViolation)
    assert p.resumed and p.conversation_id == CID
    assert isinstance(p.receive(chunk("AAAA")), UserStreamChunk)


# ------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ("{not json", "malformed JSON"),
        ("", "malformed JSON"),
        ("[1, 2]", "not an object"),
        ('"text"', "not an object"),
        ('{"conversationId": "x"}', "no type"),
        ('{"type": 5}', "not a string"),
        ('{"type": "userStream.teleport"}', "unknown message type"),
        ('{"type": "userStream.chunk", "audioChunk": 12}', "invalid userStream.chunk"),
        ('{"type": "activities", "activities": "nope"}', "invalid activities"),
    ],
)
def test_bad_frames_are_violations_without_reply(data: str, needle: str) -> None:
    p = started()
    v = violation(p, data)
    assert needle in v.message
    assert v.reply is None
    # the session goes on
    assert isinstance(p.receive(chunk("AAAA")), UserStreamChunk)


@pytest.mark.parametrize("b64", ["AAA", "AAAAA", "AA!A", "AA=A", "A===", "ÄAAA", "AA\\nA"])
def test_invalid_base64_audio(b64: str) -> None:
    v = violation(started(), chunk(b64))
    assert "invalid base64" in v.message


def test_chunk_before_user_stream_start_and_after_stop() -> None:
    p = VaicProtocol()
    p.receive(frame("session.initiate"))
    assert "before userStream.start" in violation(p, chunk("AAAA")).message
    p.receive(frame("userStream.start"))
    p.receive(frame("userStream.stop"))
    assert "after userStream.stop" in violation(p, chunk("AAAA")).message


def test_messages_before_initiate() -> None:
    p = VaicProtocol()
    assert "before session.initiate" in violation(p, frame("userStream.start")).message
    assert "before userStream.start" in violation(p, chunk("AAAA")).message


def test_frame_size_limit() -> None:
    p = VaicProtocol(max_frame_bytes=1000)
    p.receive(frame("session.initiate"))
    p.receive(frame("userStream.start"))
    assert isinstance(p.receive(chunk("A" * 800)), UserStreamChunk)
    v = violation(p, chunk("A" * 1000))
    assert "exceeds the limit of 1000" in v.message
    assert VaicProtocol().max_frame_bytes == 256 * 1024


def test_messages_after_session_end() -> None:
    p = started()
    p.receive(frame("session.end", reasonCode="client-disconnected"))
    assert "after session.end" in violation(p, chunk("AAAA")).message
    assert "after session.end" in violation(p, frame("userStream.stop")).message


def test_session_level_violations_reply_session_error() -> None:
    v = violation(VaicProtocol(), '{"type":"session.initiate"}')
    assert v.reply == b'{"type":"session.error","reason":"missing conversationId"}'
    v = violation(VaicProtocol(), '{"type":"session.initiate","conversationId":"c","botName":1}')
    assert v.reply == b'{"type":"session.error","reason":"invalid session.initiate"}'
    p = started()
    assert "duplicate" in violation(p, frame("session.initiate")).message
    v = violation(p, '{"type":"session.resume","conversationId":"other"}')
    assert v.reply == b'{"type":"session.error","reason":"conversation id mismatch"}'


def test_other_conversation_id_is_rejected() -> None:
    p = started()
    v = violation(p, '{"type":"userStream.chunk","conversationId":"zzz","audioChunk":"AAAA"}')
    assert "zzz" in v.message


# --------------------------------------------------------------------- builders


def test_builders_exact_json() -> None:
    assert vaic.connection_validated() == b'{"type":"connection.validated","success":true}'
    assert vaic.session_accepted("raw/mulaw") == (
        b'{"type":"session.accepted","mediaFormat":"raw/mulaw"}'
    )
    assert vaic.session_error("boom") == b'{"type":"session.error","reason":"boom"}'
    assert vaic.user_stream_started() == b'{"type":"userStream.started"}'
    assert vaic.user_stream_started("caller") == (
        b'{"type":"userStream.started","participant":"caller"}'
    )
    assert vaic.user_stream_stopped() == b'{"type":"userStream.stopped"}'
    assert vaic.speech_started() == b'{"type":"userStream.speech.started"}'
    assert vaic.speech_stopped() == b'{"type":"userStream.speech.stopped"}'
    assert vaic.speech_committed() == b'{"type":"userStream.speech.committed"}'
    assert vaic.speech_hypothesis("hel") == (
        b'{"type":"userStream.speech.hypothesis","alternatives":[{"text":"hel"}]}'
    )
    assert vaic.speech_recognition("hello", 0.9) == (
        b'{"type":"userStream.speech.recognition",'
        b'"alternatives":[{"text":"hello","confidence":0.9}]}'
    )
    assert vaic.play_stream_start("s-1", "raw/lpcm16_24") == (
        b'{"type":"playStream.start","streamId":"s-1","mediaFormat":"raw/lpcm16_24"}'
    )
    assert vaic.play_stream_chunk("s-1", "AAAA") == (
        b'{"type":"playStream.chunk","streamId":"s-1","audioChunk":"AAAA"}'
    )
    assert vaic.play_stream_stop("s-1") == b'{"type":"playStream.stop","streamId":"s-1"}'
    assert vaic.hangup("done") == (
        b'{"type":"activities","activities":[{"type":"event","name":"hangup",'
        b'"activityParams":{"hangupReason":"done"}}]}'
    )
    assert vaic.transfer("tel:+123", "agent requested", [("X-Case", "42")]) == (
        b'{"type":"activities","activities":[{"type":"event","name":"transfer",'
        b'"activityParams":{"transferTarget":"tel:+123","handoverReason":"agent requested",'
        b'"transferSipHeaders":[{"name":"X-Case","value":"42"}]}}]}'
    )
    assert vaic.send_dtmf("12*#") == (
        b'{"type":"activities","activities":[{"type":"event","name":"sendDtmf",'
        b'"activityParams":{"dtmfDigits":"12*#"}}]}'
    )
    assert vaic.config({"bargeIn": True}) == (
        b'{"type":"activities","activities":[{"type":"event","name":"config",'
        b'"sessionParams":{"bargeIn":true}}]}'
    )


def test_builders_are_valid_json() -> None:
    for data in (vaic.play_stream_chunk('we"ird', "AAAA"), vaic.session_error('a "quote"')):
        assert isinstance(msgspec.json.decode(data), dict)


@pytest.mark.parametrize("digits", ["", "12a", "1" * 21, "1 2"])
def test_send_dtmf_validates(digits: str) -> None:
    with pytest.raises(ValueError, match="DTMF"):
        vaic.send_dtmf(digits)


def test_one_play_stream_at_a_time() -> None:
    p = started()
    assert p.play_stop() is None
    with pytest.raises(VaicStateError):
        p.play_chunk("AAAA")
    assert p.play_start("p1", "raw/mulaw") == vaic.play_stream_start("p1", "raw/mulaw")
    with pytest.raises(VaicStateError, match="p1"):
        p.play_start("p2", "raw/mulaw")
    b64 = base64.b64encode(bytes(161)).decode()
    assert p.play_chunk(b64) == vaic.play_stream_chunk("p1", b64)
    assert p.play_chunk(b64.encode()) == vaic.play_stream_chunk("p1", b64)
    assert (p.play_chunks, p.play_bytes) == (2, 322)
    assert p.play_stop() == b'{"type":"playStream.stop","streamId":"p1"}'
    assert p.play_stream_id is None
    assert p.play_start("p2", "raw/mulaw")  # now allowed


# ---------------------------------------------------------------- negotiation


@pytest.mark.parametrize(
    ("offered", "expected"),
    [
        (["raw/lpcm16_24"], Negotiated("raw/lpcm16_24", "audio/pcm", 24000, 24000)),
        (["raw/mulaw"], Negotiated("raw/mulaw", "audio/pcmu", 8000, 8000)),
        (["raw/mulaw", "raw/lpcm16_24"], Negotiated("raw/mulaw", "audio/pcmu", 8000, 8000)),
        (["raw/lpcm16_24", "raw/mulaw"], Negotiated("raw/lpcm16_24", "audio/pcm", 24000, 24000)),
        (["raw/lpcm16", "raw/mulaw"], Negotiated("raw/mulaw", "audio/pcmu", 8000, 8000)),
        (["raw/lpcm16"], Negotiated("raw/lpcm16", "audio/pcm", 16000, 24000)),
        (["raw/lpcm16_8", "raw/lpcm16"], Negotiated("raw/lpcm16_8", "audio/pcm", 8000, 24000)),
        (["wav/lpcm16", "raw/lpcm16"], Negotiated("raw/lpcm16", "audio/pcm", 16000, 24000)),
        ([], Negotiated("raw/lpcm16", "audio/pcm", 16000, 24000)),
        (["wav/mulaw", "raw/alaw"], None),
    ],
)
def test_choose_format(offered: list[str], expected: Negotiated | None) -> None:
    assert choose_format(offered) == expected


def test_passthrough_flag_and_reason() -> None:
    assert choose_format(["raw/mulaw"]).passthrough  # type: ignore[union-attr]
    assert not choose_format(["raw/lpcm16"]).passthrough  # type: ignore[union-attr]
    assert vaic.no_format_reason(["raw/alaw"]) == (
        "no supported media format offered (offered: raw/alaw)"
    )


def test_is_base64() -> None:
    assert vaic.is_base64("AAAA") and vaic.is_base64("AA==") and vaic.is_base64("")
    assert not vaic.is_base64("AAA") and not vaic.is_base64("A=AA")


# ------------------------------------------------------------------ activity values


def dtmf_activity(value: object) -> vaic.Activity:
    """A DTMF activity as parsed from a real frame."""
    msg = started().receive(
        frame("activities", activities=[{"type": "event", "name": "DTMF", "value": value}])
    )
    assert isinstance(msg, Activities)
    return msg.activities[0]


@pytest.mark.parametrize(
    ("value", "digits"),
    [("42#", "42#"), ("*0", "*0"), ("abcd", "ABCD"), ("D9", "D9"), (7, "7"), ("1" * 32, "1" * 32)],
)
def test_valid_dtmf_values(value: object, digits: str) -> None:
    act = dtmf_activity(value)
    assert act.digits == digits
    assert act.dtmf_error is None


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ({"a": 1}, "DTMF activity value is an object, not a string of digits"),
        ([1, 2], "DTMF activity value is an array, not a string of digits"),
        (True, "DTMF activity value is a boolean, not a string of digits"),
        (1.5, "DTMF activity value is a number, not a string of digits"),
        (None, "DTMF activity without a value"),
        ("", "DTMF activity value '' is not 1-32 of 0-9*#A-D"),
        ("1 2", "DTMF activity value '1 2' is not 1-32 of 0-9*#A-D"),
        ("12E", "DTMF activity value '12E' is not 1-32 of 0-9*#A-D"),
        (-1, "DTMF activity value -1 is not 1-32 of 0-9*#A-D"),
        ("1" * 33, "DTMF activity value '111111111111111111111111111111111' is not"),
        ("9" * 100, "DTMF activity value '" + "9" * 36 + "... is not"),  # shortened
    ],
)
def test_invalid_dtmf_values_give_no_digits_and_a_reason(value: object, reason: str) -> None:
    act = dtmf_activity(value)
    assert act.digits == ""
    assert act.dtmf_error is not None and act.dtmf_error.startswith(reason)
    assert "\n" not in act.dtmf_error and len(act.dtmf_error) < 120


def test_dtmf_error_only_for_dtmf_activities() -> None:
    act = vaic.Activity(name="start", value={"a": 1})
    assert act.dtmf_error is None and act.digits == ""


@pytest.mark.parametrize("bad", [None, 15550100, {"n": 1}, ["+1"]])
def test_non_string_caller_and_callee_are_empty(bad: object) -> None:
    act = vaic.Activity(name="start", parameters={"caller": bad, "callee": bad})
    assert (act.caller, act.callee) == ("", "")
    assert vaic.Activity(name="start").caller == ""


def test_notifications_encode_whatever_text_the_model_gave() -> None:
    assert vaic.notification("userStream.started", participant="caller") == (
        b'{"type":"userStream.started","participant":"caller"}'
    )
    assert vaic.notification("userStream.speech.committed") == (
        b'{"type":"userStream.speech.committed"}'
    )
    hostile = 'hi","type":"activities","activities":[{"name":"transfer"}],"x":"'
    frame = vaic.notification("userStream.speech.recognition", hostile)
    msg = json.loads(frame)
    assert list(msg) == ["type", "alternatives"] and msg["alternatives"] == [{"text": hostile}]
    with pytest.raises(ValueError):
        vaic.notification("activities")


def test_after_acceptance_the_protocol_answers_nothing_itself() -> None:
    """Before a session the protocol answers the handshake itself; once it is
    accepted every frame to the caller is an engine decision, so a violation
    carries no reply and a connection.validate is a violation."""
    p = started()
    assert isinstance(p.receive(frame("connection.validate")), vaic.ConnectionValidate)
    p.accept("raw/mulaw")
    v = violation(p, frame("connection.validate"))
    assert v.message == "connection.validate during a session" and v.reply is None
    v = violation(p, '{"type":"session.resume","conversationId":"other"}')
    assert "other" in v.message and v.reply is None
    assert violation(p, '{"type":"session.initiate"}').reply is None
