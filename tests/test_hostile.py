"""Hostile and faulty input on both sockets (issue 11).

Property tests: both parsers take any bytes and give a message or a violation,
never an exception, and what they let through can always be encoded again.
Socket tests over loopback: a model that injects JSON through an audio delta, a
caller that sends deep nesting, duplicate keys, huge numbers and lone surrogates,
and a caller socket whose handling fails.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import websockets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_service import GOODBYE, TOKEN, Voice, _raw, _voice, assert_replays, scenario

from fastagent import events as ev
from fastagent import realtime as rt
from fastagent import vaic, wire
from fastagent.service import CallSession


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def voice(tmp_path: Path) -> AsyncIterator[Voice]:
    async for v in _voice(tmp_path, scenario([GOODBYE])):
        yield v


# --------------------------------------------------------------- strategies

VAIC_TYPES = [*vaic.MESSAGE_TYPES, "bogus", ""]
VAIC_CLASSES = set(vaic.MESSAGE_TYPES.values())
RT_TYPES = [*sorted(rt.KNOWN_TYPES), "response.content_part.added", "bogus"]
KEYS = [
    "type",
    "conversationId",
    "audioChunk",
    "activities",
    "name",
    "value",
    "parameters",
    "supportedMediaFormats",
    "delta",
    "item_id",
    "response_id",
    "response",
    "session",
    "error",
    "transcript",
    "rate_limits",
    "audio_start_ms",
    "status",
    "output",
]
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.sampled_from(["AAAA", "/////w==", "AA=A", '","type":"activities","x":"', "\ud800"])
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(KEYS), inner),
    max_leaves=20,
)


def _frame(kind: str, body: dict[str, Any], dup: tuple[str, Any] | None) -> bytes:
    text = json.dumps({"type": kind, **body}, ensure_ascii=False)
    if dup is not None:  # json.dumps cannot write a duplicate key: splice one in
        text = text[:-1] + ", " + json.dumps(dup[0]) + ": " + json.dumps(dup[1]) + "}"
    return text.encode("utf-8", "surrogatepass")


def frames(types: list[str]) -> st.SearchStrategy[bytes]:
    return st.builds(
        _frame,
        st.sampled_from(types),
        st.dictionaries(st.sampled_from(KEYS), json_values, max_size=5),
        st.none() | st.tuples(st.sampled_from(KEYS), json_values),
    )


any_bytes = st.binary(max_size=300) | st.text(max_size=300).map(
    lambda s: s.encode("utf-8", "surrogatepass")
)


def _vaic_protocols() -> list[vaic.VaicProtocol]:
    fresh = vaic.VaicProtocol()
    streaming = vaic.VaicProtocol()
    streaming.receive(b'{"type":"session.initiate","conversationId":"c"}')
    streaming.accept("raw/lpcm16")
    streaming.receive(b'{"type":"userStream.start","conversationId":"c"}')
    return [fresh, streaming]


def _encodable(obj: Any) -> None:
    msgspec.json.encode(obj)  # raises if a value could not be written back out


# --------------------------------------------------------- property tests

PROPS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPS
@given(data=any_bytes | frames(VAIC_TYPES))
def test_vaic_parser_never_raises_and_what_it_passes_can_be_written(data: bytes) -> None:
    for proto in _vaic_protocols():
        for form in (data, bytearray(data)):
            out = proto.receive(form)
            assert isinstance(out, vaic.ProtocolViolation) or type(out) in VAIC_CLASSES
            _encodable(out)
            if isinstance(out, vaic.UserStreamChunk):
                assert wire.is_base64(out.audioChunk)
                assert wire.b64_nbytes(out.audioChunk) % proto.sample_bytes == 0


@PROPS
@given(data=any_bytes | frames(RT_TYPES))
def test_realtime_parser_never_raises_and_what_it_passes_can_be_written(data: bytes) -> None:
    for form in (data, bytearray(data), data.decode("utf-8", "replace")):
        out = rt.parse_server_event(form)
        assert isinstance(out, rt.Ignored | rt.Malformed) or type(out).__struct_config__.tag in (
            rt.KNOWN_TYPES
        )
        _encodable(out)
        if isinstance(out, rt.AudioDelta):
            assert wire.is_base64(out.delta)


@PROPS
@given(
    chunk=st.text(alphabet='AB+/="\\{}[]:, ', max_size=24),
    cid=st.sampled_from(["c", "d", "", 'c", "type": "session.end']),
    extra=st.sampled_from(
        ["", ', "audioChunk": "AAAA"', ', "x": [1]', ' , "type" :"userStream.stop"']
    ),
)
def test_fast_and_slow_lane_agree_on_every_chunk(chunk: str, cid: str, extra: str) -> None:
    data = (
        '{"type":"userStream.chunk","conversationId":'
        + json.dumps(cid)
        + ',"audioChunk":"'
        + chunk
        + '"'
        + extra
        + "}"
    ).encode()
    fast_proto, slow_proto = _vaic_protocols()[1], _vaic_protocols()[1]
    fast = fast_proto.receive_chunk(data)
    slow = slow_proto.receive(data)
    if fast is not None:  # the fast lane lets through only what the slow lane would
        assert slow == fast


def test_each_class_of_bad_frame_is_a_violation_on_both_sockets() -> None:
    deep = b"[" * 2000 + b"]" * 2000
    values = {
        "nesting": deep,
        "nesting 40": b"[" * 40 + b"]" * 40,
        "huge integer": b"1" + b"0" * 400,
        "infinity": b"1e999",
        "NaN": b"NaN",
        "lone surrogate": b'"\\ud800"',
        "invalid UTF-8": b'"\xff"',
        "wrong type": b"7",
    }
    for name, value in values.items():
        frames = [
            b'{"type":"activities","activities":[{"name":"x","value":' + value + b"}]}",
            b'{"type":"session.initiate","conversationId":' + value + b"}",
        ]
        for data in frames:
            out = vaic.VaicProtocol().receive(data)
            assert isinstance(out, vaic.ProtocolViolation), (name, data[:60])
        for key in (b"transcript", b"item_id"):
            data = (
                b'{"type":"conversation.item.input_audio_transcription.completed","'
                + key
                + b'":'
                + value
                + b"}"
            )
            assert isinstance(rt.parse_server_event(data), rt.Malformed), (name, key)
    for data in (deep, b'{"type":"error","error":{"message":' + deep + b"}}"):
        assert isinstance(rt.parse_server_event(data), rt.Malformed)
        assert isinstance(vaic.VaicProtocol().receive(data), vaic.ProtocolViolation)
    dups = [
        b'{"type":"session.initiate","conversationId":"a","conversationId":"b"}',
        b'{"type":"session.initiate","type":"session.resume","conversationId":"a"}',
    ]
    for data in dups:
        out = vaic.VaicProtocol().receive(data)
        assert isinstance(out, vaic.ProtocolViolation) and "duplicate key" in out.message
    dup = b'{"type":"response.output_audio.delta","item_id":"a","delta":"AAAA","delta":"AAAA"}'
    out = rt.parse_server_event(dup)
    assert isinstance(out, rt.Malformed) and "duplicate key" in out.message


INJECTED = 'AAAA","type":"activities","activities":[{"type":"event","name":"transfer"}],"x":"'


def test_an_audio_delta_that_injects_json_is_malformed() -> None:
    frame = json.dumps(
        {
            "type": "response.output_audio.delta",
            "item_id": "i",
            "response_id": "r",
            "delta": INJECTED,
        }
    )
    out = rt.parse_server_event(frame)
    assert isinstance(out, rt.Malformed) and "not strict base64" in out.message
    # Odd-sized PCM is not whole samples: rejected by the same rule in both lanes.
    odd = rt.AudioDelta(delta=base64.b64encode(b"abc").decode())
    assert rt.audio_delta_error(odd, 2) and rt.audio_delta_error(odd, 1) is None


# -------------------------------------------------------------- over sockets


async def _frames_until(ws: Any, stop: str, timeout: float = 10) -> list[str]:
    got: list[str] = []
    async with asyncio.timeout(timeout):
        while True:
            text = await ws.recv()
            got.append(text)
            if json.loads(text).get("type") == stop:
                return got


START = {"type": "activities", "activities": [{"type": "event", "name": "start"}]}


@pytest.mark.anyio
async def test_a_model_that_injects_json_through_an_audio_delta_is_dropped(tmp_path: Path) -> None:
    sent = {"n": 0}

    def tamper(event: dict[str, Any]) -> str | None:
        if event["type"] != "response.output_audio.delta":
            return None
        sent["n"] += 1
        if sent["n"] == 2:  # the attack, as the wire would carry it
            return json.dumps({**event, "delta": INJECTED})
        if sent["n"] == 3:  # and odd-sized PCM, and a duplicate key
            return json.dumps({**event, "delta": base64.b64encode(b"abc").decode()})
        if sent["n"] == 4:
            return json.dumps(event)[:-1] + ', "delta": "AAAA"}'
        return None

    sc = scenario([GOODBYE], greeting=[{"say": "Hello there, how can I help you today?"}])
    async for v in _voice(tmp_path, sc, tamper=tamper):
        ws = await websockets.connect(
            v.url, additional_headers={"Authorization": f"Bearer {TOKEN}"}
        )
        await ws.send(
            json.dumps(
                {
                    "type": "session.initiate",
                    "conversationId": "inject",
                    "supportedMediaFormats": ["raw/lpcm16_24"],
                }
            )
        )
        assert json.loads(await ws.recv())["mediaFormat"] == "raw/lpcm16_24"
        await ws.send(json.dumps({**START, "conversationId": "inject"}))
        frames = await _frames_until(ws, "playStream.stop")
        for text in frames:
            assert wire.strict_error(text) is None, text
            msg = json.loads(text)
            assert msg["type"] != "activities", text
            if msg["type"] == "playStream.chunk":
                assert set(msg) == {"type", "streamId", "audioChunk"}
                assert wire.is_base64(msg["audioChunk"])
        await ws.close()
        events = await v.log("inject")
        errors = [e.message for e in events if isinstance(e, ev.ProtocolError)]
        assert any("not strict base64" in m for m in errors), errors
        assert any("not whole 2-byte samples" in m for m in errors), errors
        assert any("duplicate key" in m for m in errors), errors
        chunks = sum(json.loads(t)["type"] == "playStream.chunk" for t in frames)
        assert chunks == sum(isinstance(e, ev.BotAudio) for e in events) == sent["n"] - 3
        assert_replays(events)


@pytest.mark.anyio
async def test_deep_nesting_and_other_bad_frames_leave_the_caller_socket_open(voice: Voice) -> None:
    ws = await _raw(voice, "nest")
    bad = [
        '{"type":"activities","conversationId":"nest","activities":[{"name":"x","value":'
        + "[" * 2000
        + "]" * 2000
        + "}]}",
        "[" * 5000,
        '{"type":"userStream.start","conversationId":"nest","conversationId":"other"}',
        '{"type":"activities","conversationId":"nest","activities":[{"name":"x","value":1'
        + "0" * 5000
        + "}]}",
        '{"type":"activities","conversationId":"nest","activities":[{"name":"\\udc00"}]}',
    ]
    for frame in bad:
        await ws.send(frame)
    await ws.send(b'{"type":"activities","activities":[{"name":"\xff"}]}')
    await ws.send(json.dumps({"type": "connection.validate"}))
    assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "connection.validated"
    await ws.send(json.dumps({"type": "session.end", "conversationId": "nest"}))
    with pytest.raises(websockets.ConnectionClosed):
        for _ in range(50):
            await asyncio.wait_for(ws.recv(), 5)
    events = await voice.log("nest")
    errors = [e.message for e in events if isinstance(e, ev.ProtocolError)]
    assert len(errors) == len(bad) + 1, errors
    assert isinstance(events[-1], ev.CallEnded)
    assert_replays(events)


@pytest.mark.anyio
async def test_a_caller_socket_that_fails_takes_the_dropped_socket_path(
    voice: Voice, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def boom(self: CallSession, msg: Any) -> None:
        raise RuntimeError("handler bug")

    monkeypatch.setattr(CallSession, "on_caller_audio", boom)
    monkeypatch.setattr(CallSession, "caller_audio_now", lambda self, msg: False)
    ws = await _raw(voice, "fails")
    service = voice.app.state.service
    session = service.calls["fails"]
    await ws.send(json.dumps({"type": "userStream.start", "conversationId": "fails"}))
    await ws.send(
        json.dumps({"type": "userStream.chunk", "conversationId": "fails", "audioChunk": "AAAA"})
    )
    with pytest.raises(websockets.ConnectionClosed) as info:
        for _ in range(50):
            await asyncio.wait_for(ws.recv(), 5)
    assert info.value.rcvd is not None and info.value.rcvd.code == 1011
    events = await voice.log("fails")  # waits for the grace (0.5 s) to end the call
    lost = [e for e in events if isinstance(e, ev.ConnectionLost)]
    assert lost and lost[0].side == "caller" and "RuntimeError" in lost[0].reason
    assert any(isinstance(e, ev.GraceExpired) for e in events)
    assert isinstance(events[-1], ev.CallEnded)
    assert "fails" not in service.calls and session.model is None
    assert_replays(events)
