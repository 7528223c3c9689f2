"""The sans-I/O Realtime protocol: parsing, builders (checked by the SDK's own types), state."""

from __future__ import annotations

import base64
import json
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st
from openai.types.realtime.realtime_client_event import RealtimeClientEvent
from openai.types.realtime.realtime_server_event import RealtimeServerEvent
from pydantic import TypeAdapter, ValidationError

from fastagent import events
from fastagent import realtime as rt

CLIENT = TypeAdapter(RealtimeClientEvent)
SERVER = TypeAdapter(RealtimeServerEvent)


def client_ok(frame: str) -> dict[str, Any]:
    """The frame is a text frame the SDK's client event types accept; returns it as a dict."""
    assert isinstance(frame, str)
    data = json.loads(frame)
    CLIENT.validate_python(data)
    return data


def server_frame(**event: Any) -> str:
    """A server event, checked against the SDK's server types before we parse it."""
    event.setdefault("event_id", "event_1")
    SERVER.validate_python(event)
    return json.dumps(event)


# ------------------------------------------------------------------ builders


def test_session_update_full_ga_shape() -> None:
    tools = [
        {"name": "lookup", "description": "Find a thing", "parameters": {"type": "object"}},
        events.ToolSpec(name="hangup", server="mcp-x"),
    ]
    data = client_ok(
        rt.session_update(
            instructions="Be brief.",
            tools=tools,
            voice="cedar",
            input_format="audio/pcmu",
            output_format="audio/pcm",
        )
    )
    s = data["session"]
    assert s["type"] == "realtime"
    assert s["instructions"] == "Be brief."
    assert s["output_modalities"] == ["audio"]
    assert s["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    assert s["audio"]["output"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert s["audio"]["output"]["voice"] == "cedar"
    assert s["audio"]["input"]["transcription"] == {"model": "gpt-4o-mini-transcribe"}
    vad = s["audio"]["input"]["turn_detection"]
    assert vad == {"type": "server_vad", "create_response": True, "interrupt_response": True}
    assert s["tools"][0] == {
        "type": "function",
        "name": "lookup",
        "description": "Find a thing",
        "parameters": {"type": "object"},
    }
    # a ToolSpec's MCP server name is ours, not the API's
    assert s["tools"][1] == {
        "type": "function",
        "name": "hangup",
        "parameters": {"type": "object", "properties": {}},
    }
    # no beta-era keys
    for beta in ("modalities", "voice", "input_audio_format", "turn_detection"):
        assert beta not in s


def test_session_update_partial_and_vad_off() -> None:
    data = client_ok(
        rt.session_update(
            instructions="New state.",
            tools=[],
            voice=None,
            input_format=None,
            output_format=None,
            transcription_model=None,
            vad=rt.KEEP,
        )
    )
    assert data["session"] == {
        "type": "realtime",
        "output_modalities": ["audio"],
        "instructions": "New state.",
        "tools": [],
    }
    off = client_ok(rt.session_update(vad=None))
    assert off["session"]["audio"]["input"]["turn_detection"] is None


def test_session_update_rejects_unknown_format() -> None:
    with pytest.raises(ValueError, match="unknown Realtime audio format"):
        rt.session_update(input_format="raw/mulaw")


def test_append_audio_is_plain_concatenation() -> None:
    b64 = "//////////8="
    frame = rt.append_audio(b64)
    assert client_ok(frame) == {"type": "input_audio_buffer.append", "audio": b64}
    assert frame.endswith(b64 + '"}')


def test_small_builders_validate() -> None:
    assert client_ok(rt.function_call_output("call_1", '{"ok":true}'))["item"] == {
        "type": "function_call_output",
        "call_id": "call_1",
        "output": '{"ok":true}',
    }
    assert client_ok(rt.response_create()) == {"type": "response.create"}
    assert client_ok(rt.response_create("Greet.")) == {
        "type": "response.create",
        "response": {"instructions": "Greet."},
    }
    assert client_ok(rt.response_cancel()) == {"type": "response.cancel"}
    assert client_ok(rt.response_cancel("resp_1"))["response_id"] == "resp_1"
    t = client_ok(rt.truncate("item_1", 1234.9))
    assert t == {
        "type": "conversation.item.truncate",
        "item_id": "item_1",
        "content_index": 0,
        "audio_end_ms": 1234,  # integers only: a fraction is a server error
    }
    assert client_ok(rt.truncate("item_1", -5))["audio_end_ms"] == 0


def test_messages_and_seeding() -> None:
    user = client_ok(rt.user_text("DTMF 1234"))["item"]
    assert user == {
        "type": "message",
        "role": "user",
        "content": [{"type": "input_text", "text": "DTMF 1234"}],
    }
    bot = client_ok(rt.assistant_text("Hello"))["item"]
    assert bot["role"] == "assistant" and bot["content"][0]["type"] == "output_text"
    frames = rt.seed_items(
        [("system", "Context"), ("user", "Hi"), ("assistant", ""), ("assistant", "Hello")]
    )
    roles = [client_ok(f)["item"]["role"] for f in frames]
    assert roles == ["system", "user", "assistant"]  # the empty text is skipped
    with pytest.raises(ValueError, match="unknown role"):
        rt.seed_items([("tool", "x")])


def test_beta_shapes_are_rejected_by_the_sdk_types() -> None:
    # The adapter we test against is strict enough to catch the classic mistake.
    with pytest.raises(ValidationError):
        CLIENT.validate_python({"type": "session.update", "session": {"voice": "alloy"}})


@given(st.text())
def test_user_text_escapes_anything(text: str) -> None:
    assert client_ok(rt.user_text(text))["item"]["content"][0]["text"] == text


# ------------------------------------------------------------------ parsing


def test_audio_delta_keeps_base64_untouched() -> None:
    frame = server_frame(
        type="response.output_audio.delta",
        response_id="resp_1",
        item_id="item_2",
        output_index=0,
        content_index=0,
        delta="AAEC/w==",
    )
    for data in (frame, frame.encode()):
        ev = rt.parse_server_event(data)
        assert ev == rt.AudioDelta(
            event_id="event_1",
            response_id="resp_1",
            item_id="item_2",
            output_index=0,
            content_index=0,
            delta="AAEC/w==",
        )


def test_audio_delta_with_type_not_first_still_parses() -> None:
    frame = json.dumps(
        {"event_id": "e", "delta": "AA==", "type": "response.output_audio.delta", "item_id": "i"}
    )
    ev = rt.parse_server_event(frame)
    assert isinstance(ev, rt.AudioDelta) and ev.delta == "AA==" and ev.item_id == "i"


def _response(status: str, reason: str | None, output: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": "resp_9",
        "object": "realtime.response",
        "status": status,
        "status_details": {"type": status, "reason": reason} if reason else None,
        "output": output,
        "usage": {
            "total_tokens": 30,
            "input_tokens": 10,
            "output_tokens": 20,
            "input_token_details": {"text_tokens": 4, "audio_tokens": 6, "cached_tokens": 2},
            "output_token_details": {"text_tokens": 5, "audio_tokens": 15},
        },
    }


CALL_ITEM = {
    "id": "item_7",
    "type": "function_call",
    "call_id": "call_7",
    "name": "lookup",
    "arguments": '{"q": 1}',
    "status": "completed",
}


def test_response_done_completed_with_call_and_usage() -> None:
    ev = rt.parse_server_event(
        server_frame(type="response.done", response=_response("completed", None, [CALL_ITEM]))
    )
    assert isinstance(ev, rt.ResponseDone)
    r = ev.response
    assert (r.id, r.status, r.reason) == ("resp_9", "completed", "")
    call = rt.FunctionCall(item_id="item_7", call_id="call_7", name="lookup", arguments='{"q": 1}')
    assert r.function_calls() == [call]
    assert r.runnable_calls() == [call]
    assert r.usage is not None
    assert r.usage.to_event_usage() == events.Usage(
        input_tokens=10,
        output_tokens=20,
        total_tokens=30,
        input_audio_tokens=6,
        output_audio_tokens=15,
        cached_tokens=2,
    )


def test_cancelled_response_calls_are_not_runnable() -> None:
    ev = rt.parse_server_event(
        server_frame(
            type="response.done", response=_response("cancelled", "turn_detected", [CALL_ITEM])
        )
    )
    assert isinstance(ev, rt.ResponseDone)
    assert ev.response.reason == "turn_detected"
    assert len(ev.response.function_calls()) == 1
    assert ev.response.runnable_calls() == []


@pytest.mark.parametrize(
    ("event", "cls", "check"),
    [
        (
            {
                "type": "session.created",
                "session": {
                    "type": "realtime",
                    "id": "sess_1",
                    "model": "gpt-realtime",
                    "audio": {
                        "input": {"format": {"type": "audio/pcmu"}, "turn_detection": None},
                        "output": {"format": {"type": "audio/pcm", "rate": 24000}},
                    },
                },
            },
            rt.SessionCreated,
            lambda e: (
                (e.session.input_format, e.session.output_format) == ("audio/pcmu", "audio/pcm")
            ),
        ),
        (
            {"type": "session.updated", "session": {"type": "realtime", "instructions": "x"}},
            rt.SessionUpdated,
            lambda e: e.session.instructions == "x" and e.session.input_format == "",
        ),
        (
            {"type": "input_audio_buffer.speech_started", "audio_start_ms": 40, "item_id": "i1"},
            rt.SpeechStarted,
            lambda e: (e.audio_start_ms, e.item_id) == (40, "i1"),
        ),
        (
            {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 900, "item_id": "i1"},
            rt.SpeechStopped,
            lambda e: e.audio_end_ms == 900,
        ),
        (
            {"type": "input_audio_buffer.committed", "item_id": "i1", "previous_item_id": None},
            rt.AudioCommitted,
            lambda e: e.item_id == "i1" and e.previous_item_id is None,
        ),
        (
            {
                "type": "conversation.item.input_audio_transcription.completed",
                "item_id": "i1",
                "content_index": 0,
                "transcript": "I lost my card",
                "usage": {"type": "duration", "seconds": 1.2},
            },
            rt.InputTranscriptionCompleted,
            lambda e: e.transcript == "I lost my card",
        ),
        (
            {
                "type": "response.created",
                "response": {"id": "r1", "status": "in_progress", "output": [], "usage": None},
            },
            rt.ResponseCreated,
            lambda e: e.response.id == "r1" and e.response.usage is None,
        ),
        (
            {
                "type": "response.output_audio.done",
                "response_id": "r1",
                "item_id": "i2",
                "output_index": 0,
                "content_index": 0,
            },
            rt.AudioDone,
            lambda e: e.item_id == "i2",
        ),
        (
            {
                "type": "response.output_audio_transcript.done",
                "response_id": "r1",
                "item_id": "i2",
                "output_index": 0,
                "content_index": 0,
                "transcript": "Hello there",
            },
            rt.AudioTranscriptDone,
            lambda e: e.transcript == "Hello there",
        ),
        (
            {
                "type": "response.function_call_arguments.done",
                "response_id": "r1",
                "item_id": "i3",
                "output_index": 1,
                "call_id": "c1",
                "name": "lookup",
                "arguments": "{}",
            },
            rt.FunctionCallArgumentsDone,
            lambda e: (e.call_id, e.name, e.arguments) == ("c1", "lookup", "{}"),
        ),
        (
            {
                "type": "response.output_item.added",
                "response_id": "r1",
                "output_index": 0,
                "item": {
                    "id": "i2",
                    "type": "message",
                    "role": "assistant",
                    "status": "in_progress",
                    "content": [],
                },
            },
            rt.OutputItemAdded,
            lambda e: (e.item.id, e.item.role) == ("i2", "assistant"),
        ),
        (
            {
                "type": "conversation.item.truncated",
                "item_id": "i2",
                "content_index": 0,
                "audio_end_ms": 640,
            },
            rt.ItemTruncated,
            lambda e: e.audio_end_ms == 640,
        ),
        (
            {
                "type": "rate_limits.updated",
                "rate_limits": [
                    {"name": "requests", "limit": 100, "remaining": 99, "reset_seconds": 0.5}
                ],
            },
            rt.RateLimitsUpdated,
            lambda e: e.rate_limits[0].remaining == 99,
        ),
        (
            {
                "type": "error",
                "error": {
                    "type": "invalid_request_error",
                    "code": "conversation_already_has_active_response",
                    "message": "busy",
                    "param": None,
                    "event_id": None,
                },
            },
            rt.Error,
            lambda e: e.error.code == "conversation_already_has_active_response",
        ),
    ],
)
def test_parse_each_event(event: dict[str, Any], cls: type, check: Any) -> None:
    ev = rt.parse_server_event(server_frame(**event))
    assert isinstance(ev, cls)
    assert check(ev)


def test_unknown_and_irrelevant_events_are_ignored() -> None:
    assert rt.parse_server_event('{"type":"response.content_part.added"}') == rt.Ignored(
        "response.content_part.added"
    )
    # the beta name of the audio delta is not the GA one
    assert rt.parse_server_event('{"type":"response.audio.delta","delta":"AA=="}') == rt.Ignored(
        "response.audio.delta"
    )


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ("", "invalid JSON"),
        ("{", "invalid JSON"),
        (b"\xff\xfe\x00", "invalid JSON"),
        ("[]", "without a string 'type'"),
        ('{"no_type": 1}', "without a string 'type'"),
        ('{"type": 5}', "without a string 'type'"),
        ('{"type":"response.done","response":5}', "bad response.done event"),
        ('{"type":"response.output_audio.delta","delta":7}', "bad response.output_audio.delta"),
        ('{"type":"response.output_audio.delta","delta":"AA==",', "invalid JSON"),
        (None, "not a text frame"),
        (12, "not a text frame"),
    ],
)
def test_malformed_inputs_never_raise(data: Any, fragment: str) -> None:
    ev = rt.parse_server_event(data)
    assert isinstance(ev, rt.Malformed)
    assert fragment in ev.message
    assert "\n" not in ev.message


@given(st.one_of(st.binary(max_size=200), st.text(max_size=200)))
def test_parse_total_on_garbage(data: bytes | str) -> None:
    ev = rt.parse_server_event(data)
    assert isinstance(ev, rt.Ignored | rt.Malformed | msgspec.Struct)


# ------------------------------------------------------------------ state tracker


def _created(rid: str) -> str:
    return server_frame(type="response.created", response={"id": rid, "status": "in_progress"})


def _done(rid: str, status: str = "completed") -> str:
    return server_frame(type="response.done", response={"id": rid, "status": status})


def test_protocol_holds_back_response_create_until_done() -> None:
    p = rt.RealtimeProtocol()
    assert not p.response_active
    first = p.response_create()
    assert first is not None
    assert client_ok(first) == {"type": "response.create", "event_id": "fa_response_create_1"}
    assert p.response_active  # requested, not yet created
    assert p.response_create("again") is None  # queued, not sent
    assert p.has_queued_response
    with pytest.raises(rt.ResponseActiveError):
        p.response_create(queue=False)
    p.receive(_created("r1"))
    assert p.in_progress and p.response_id == "r1"
    assert p.data_to_send() == []
    p.receive(_done("r1"))
    out = p.data_to_send()
    assert [client_ok(f) for f in out] == [
        {
            "type": "response.create",
            "event_id": "fa_response_create_2",
            "response": {"instructions": "again"},
        }
    ]
    assert p.data_to_send() == []  # handed out once
    assert p.response_active  # the queued one is now requested
    p.receive(_created("r2"))
    p.receive(_done("r2", "cancelled"))
    assert not p.response_active
    assert p.response_create() is not None


def test_protocol_server_started_response_blocks_create() -> None:
    p = rt.RealtimeProtocol()
    p.receive(_created("auto_1"))  # VAD created it, not us
    assert p.response_create() is None
    p.receive(_done("auto_1"))
    assert len(p.data_to_send()) == 1


def test_protocol_rejected_create_clears_request() -> None:
    p = rt.RealtimeProtocol()
    assert p.response_create() is not None
    p.receive(
        server_frame(
            type="error", error={"type": "invalid_request_error", "message": "bad", "code": "x"}
        )
    )
    assert not p.response_active


def test_protocol_settles_a_create_that_raced_a_server_response() -> None:
    p = rt.RealtimeProtocol()
    assert p.response_create("digits") is not None
    p.receive(_created("vad_1"))  # the server's own response got there first
    p.receive(
        server_frame(
            type="error",
            error={
                "type": "invalid_request_error",
                "code": "conversation_already_has_active_response",
                "message": "busy",
                "event_id": p.request_event_id,
            },
        )
    )
    # The server's response is the reply: nothing is asked again after it.
    assert not p.has_queued_response
    p.receive(_done("vad_1"))
    assert p.data_to_send() == []


def test_protocol_ignores_errors_about_other_events() -> None:
    p = rt.RealtimeProtocol()
    assert p.response_create() is not None
    p.receive(
        server_frame(
            type="error",
            error={"type": "invalid_request_error", "message": "bad", "event_id": "truncate_1"},
        )
    )
    assert p.response_active


def test_protocol_tracks_audio_for_truncate() -> None:
    p = rt.RealtimeProtocol()
    p.receive(
        server_frame(
            type="session.updated",
            session={"type": "realtime", "audio": {"output": {"format": {"type": "audio/pcmu"}}}},
        )
    )
    chunk = base64.b64encode(b"\xff" * 160).decode()  # 20 ms of μ-law, padded
    assert chunk.endswith("=")
    for _ in range(10):
        p.receive(
            server_frame(
                type="response.output_audio.delta",
                response_id="r",
                item_id="i",
                output_index=0,
                content_index=0,
                delta=chunk,
            )
        )
    assert p.audio_ms_received("i") == 200
    assert client_ok(p.truncate("i", 99_999))["audio_end_ms"] == p.audio_ms_received("i")
    assert client_ok(p.truncate("i", 100.7))["audio_end_ms"] == 100
    assert p.audio_ms_received("other") == 0


def test_connect_realtime_config_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    from fastagent.service.realtime_link import connect_realtime

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(rt.RealtimeConfigError, match="OPENAI_API_KEY"):
        asyncio.run(connect_realtime("ws://127.0.0.1:1/v1"))
    with pytest.raises(rt.RealtimeConfigError, match="ws://"):
        asyncio.run(connect_realtime("http://x/v1", api_key="k"))


# ------------------------------------------------------------------ pure translation


def test_translation_is_pure() -> None:
    """Server events -> input events and decisions -> frames, with no link or socket."""
    e = rt.parse_server_event(
        b'{"type":"input_audio_buffer.speech_started","item_id":"u1","audio_start_ms":40}'
    )
    assert rt.input_of(e) == (events.SpeechStarted, {"item_id": "u1", "audio_start_ms": 40})
    assert rt.input_of(rt.parse_server_event(b"{")) is None
    created = rt.parse_server_event(b'{"type":"session.created","session":{}}')
    assert rt.answer_of(created) == "session.created"
    asked = events.ResponseRequested(call_id="c", seq=5, at=0, reason="tool")
    frame, awaited = rt.decision_frame(asked)
    assert json.loads(frame)["event_id"] == "fa-response-5"
    assert awaited == ("response.created", "fa-response-5")
    with pytest.raises(TypeError):
        rt.decision_frame(events.CallEnded(call_id="c", seq=6, at=0, reason="x"))
