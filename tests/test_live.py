"""The sans-I/O GPT-Live protocol and the fake GPT-Live server, checked by the SDK's own types."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st
from openai.types.live.client_event import ClientEvent
from openai.types.live.fork_client_event import ForkClientEvent
from openai.types.live.server_event import ServerEvent
from openai.types.responses.response_stream_event import ResponseStreamEvent
from pydantic import TypeAdapter, ValidationError

from fastagent import audio, events
from fastagent import live as lv
from fastagent.testing.fake_live import FakeLiveServer
from fastagent.testing.scenario import scenario_from_dict

CLIENT = TypeAdapter(ClientEvent)
FORK = TypeAdapter(ForkClientEvent)
SERVER = TypeAdapter(ServerEvent)
BACKEND = TypeAdapter(ResponseStreamEvent)


def client_ok(frame: str, adapter: TypeAdapter[Any] = CLIENT) -> dict[str, Any]:
    """The frame is a text frame the SDK's Live client event types accept."""
    assert isinstance(frame, str)
    data = json.loads(frame)
    adapter.validate_python(data)
    return data


def server_frame(**event: Any) -> str:
    """A server event, checked against the SDK's server types before we parse it."""
    if event["type"] != "session.output_audio.delta":
        event.setdefault("event_id", "event_1")
    SERVER.validate_python(event)
    return json.dumps(event)


def backend(delegation_id: str, **nested: Any) -> str:
    nested.setdefault("sequence_number", 0)
    BACKEND.validate_python(nested)
    return server_frame(type="response.event", event=nested, delegation_id=delegation_id)


RESPONSE = {
    "id": "resp_1",
    "object": "response",
    "created_at": 0,
    "model": "gpt-5-mini",
    "output": [],
    "parallel_tool_calls": True,
    "tool_choice": "auto",
    "tools": [],
    "status": "in_progress",
    "instructions": None,
    "error": None,
    "incomplete_details": None,
    "metadata": {},
    "temperature": None,
    "top_p": None,
}
USAGE = {
    "input_tokens": 120,
    "output_tokens": 30,
    "total_tokens": 150,
    "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
    "output_tokens_details": {"reasoning_tokens": 0},
}
SESSION = {"id": "sess_1", "expires_at": 1, "model": "gpt-live-1.1", "status": "active"}

# ------------------------------------------------------------------ formats


def test_formats_pass_through_where_they_match() -> None:
    mulaw = lv.choose_live_format(["raw/mulaw"])
    pcm16 = lv.choose_live_format(["raw/lpcm16"])
    assert mulaw is not None and mulaw.passthrough and mulaw.model_format == lv.PCMU
    assert pcm16 is not None and pcm16.passthrough and pcm16.model_format == lv.PCM16K
    assert lv.audio_format(lv.PCM16K) == {"type": "audio/pcm", "rate": 16000}
    # 8 kHz PCM has no GPT-Live match: resampled (soxr) to 16 kHz, only if nothing better.
    pcm8 = lv.choose_live_format(["raw/lpcm16_8"])
    assert pcm8 is not None and not pcm8.passthrough and pcm8.resample_to_hz == 16000
    assert lv.choose_live_format(["raw/lpcm16_8", "raw/mulaw"]) == mulaw
    assert lv.choose_live_format(["audio/opus"]) is None
    for fmt in (lv.PCMU, lv.PCM16K, lv.PCM24K):
        assert audio.bytes_per_ms(fmt) > 0  # durations of bot audio in every session format


# ------------------------------------------------------------------ builders


def test_session_start_is_a_valid_sdk_event() -> None:
    tools = [events.ToolSpec(name="start_card_replacement", description="Replace a card")]
    history = lv.initial_items([("user", "Hi"), ("assistant", "Hello!"), ("system", "Note")])
    data = client_ok(
        lv.session_start(
            model="gpt-live-1.1",
            instructions="Be brief.",
            model_format=lv.PCMU,
            voice="cedar",
            delegation=lv.responses_delegation(instructions="Backend", tools=tools),
            history=history,
            store=True,
            event_id="fa-1",
        )
    )
    s = data["session"]
    assert s["audio"] == {
        "format": {"type": "audio/pcmu", "rate": 8000},
        "output": {"voice": "cedar"},
    }
    assert s["delegation"]["type"] == "responses"
    assert s["delegation"]["responses"]["tools"][0]["name"] == "start_card_replacement"
    assert [i["role"] for i in s["input"]] == ["user", "assistant", "developer"]
    assert s["store"] is True and data["event_id"] == "fa-1"
    # The model goes in session.start, never in the URL; no Realtime-only fields.
    assert "tools" not in s and "turn_detection" not in json.dumps(s)


def test_every_builder_is_a_valid_sdk_client_event() -> None:
    frames = [
        lv.append_audio(base64.b64encode(b"\xff" * 160).decode()),
        lv.append_context("commentary", "Greet the caller."),
        lv.append_context("thinking", "The caller heard 1.2 s.", event_id="fa-2"),
        lv.append_context("instructions", "The caller pressed keys: 12"),
        lv.function_call_output("call_1", '{"ok": true}', event_id="fa-3"),
        lv.response_create(),
        lv.response_create("fa-4"),
        lv.session_close(),
        lv.session_update(lv.responses_delegation(instructions="Step 2", tools=[])),
    ]
    types = {client_ok(f)["type"] for f in frames}
    assert "conversation.item.truncate" not in types and "response.cancel" not in types
    # delegation_id is "required, nullable": sent as null for session-wide context.
    assert json.loads(frames[1])["delegation_id"] is None
    client_ok(lv.fork_start(), FORK)
    client_ok(lv.fork_start(model_format=lv.PCM16K, store=True), FORK)
    with pytest.raises(ValueError):
        lv.append_context("speech", "x")


def test_realtime_only_events_are_not_live_events() -> None:
    for event in (
        {
            "type": "conversation.item.truncate",
            "item_id": "x",
            "content_index": 0,
            "audio_end_ms": 1,
        },
        {"type": "response.cancel"},
        {"type": "input_audio_buffer.commit"},
    ):
        with pytest.raises(ValidationError):
            CLIENT.validate_python(event)


def test_initial_items_cap_folds_older_messages() -> None:
    pairs = [("user" if i % 2 else "assistant", f"line {i}") for i in range(300)]
    items = lv.initial_items(pairs)
    assert len(items) == 128
    assert items[0]["role"] == "developer" and "line 0" in items[0]["content"][0]["text"]
    assert items[-1]["content"][0]["text"] == "line 299"
    client_ok(lv.session_start(model="gpt-live-1.1", history=items))


# ------------------------------------------------------------------ parsing


def test_parse_known_events() -> None:
    e = lv.parse_server_event(server_frame(type="session.started", session=SESSION))
    assert isinstance(e, lv.SessionStarted) and e.session.id == "sess_1"
    e = lv.parse_server_event(server_frame(type="session.output_audio.delta", delta="AAAA"))
    assert isinstance(e, lv.OutputAudioDelta) and e.delta == "AAAA"
    e = lv.parse_server_event(
        server_frame(type="session.input_transcript.delta", delta="Hi", start_ms=20, end_ms=40)
    )
    assert isinstance(e, lv.InputTranscriptDelta) and e.start_ms == 20
    e = lv.parse_server_event(
        server_frame(
            type="session.delegation.created",
            delegation={
                "id": "d1",
                "type": "delegation",
                "target": "responses",
                "response_id": "r",
            },
            offset_ms=900,
        )
    )
    assert isinstance(e, lv.DelegationCreated) and e.delegation.response_id == "r"
    e = lv.parse_server_event(
        server_frame(
            type="session.closed",
            reason="connection_lost",
            session=SESSION,
            usage={"seconds": 61.0},
        )
    )
    assert isinstance(e, lv.SessionClosed) and e.usage.seconds == 61.0
    e = lv.parse_server_event(
        server_frame(
            type="error",
            error={
                "type": "invalid_request_error",
                "code": "x",
                "message": "m",
                "client_event_id": "fa-9",
            },
        )
    )
    assert isinstance(e, lv.Error) and e.error.client_event_id == "fa-9"
    e = lv.parse_server_event(server_frame(type="session.usage.updated", usage={"seconds": 15.0}))
    assert isinstance(e, lv.UsageUpdated) and e.usage.seconds == 15.0


def test_parse_backend_events() -> None:
    frame = backend("d1", type="response.created", response=RESPONSE)
    e = lv.parse_server_event(frame)
    assert isinstance(e, lv.ResponseEvent) and e.delegation_id == "d1"
    inner = lv.parse_backend_event(e.event)
    assert isinstance(inner, lv.BackendCreated) and inner.response.id == "resp_1"
    item = {
        "type": "function_call",
        "id": "fc_1",
        "call_id": "call_1",
        "name": "verify_identity",
        "arguments": '{"card_last4": "4242"}',
        "status": "completed",
    }
    e = lv.parse_server_event(
        backend("d1", type="response.output_item.done", output_index=0, item=item)
    )
    inner = lv.parse_backend_event(e.event)  # type: ignore[union-attr]
    assert isinstance(inner, lv.BackendItemDone) and inner.item.call_id == "call_1"
    done = {**RESPONSE, "status": "completed", "usage": USAGE}
    e = lv.parse_server_event(backend("d1", type="response.completed", response=done))
    inner = lv.parse_backend_event(e.event)  # type: ignore[union-attr]
    assert isinstance(inner, lv.BackendCompleted)
    assert (
        inner.response.usage is not None
        and inner.response.usage.to_event_usage().total_tokens == 150
    )
    assert lv.parse_backend_event(b'{"type":"response.output_text.delta"}') == lv.Ignored(
        "response.output_text.delta"
    )
    assert isinstance(lv.parse_backend_event(b'{"type":"response.completed"}'), lv.Malformed)


def test_unknown_and_sideband_events_are_ignored() -> None:
    assert lv.parse_server_event('{"type":"session.paused","event_id":"e"}') == lv.Ignored(
        "session.paused"
    )
    assert lv.parse_server_event('{"type":"transport.ringing"}') == lv.Ignored("transport.ringing")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not json",
        b"[]",
        b'{"type": 5}',
        b'{"type":"session.started"}',
        b'{"type":"session.output_audio.delta","delta":7}',
        b'{"type":"session.delegation.created","delegation":{}}',
        b"[" * 100_000,
        "\udcff",
        1234,
    ],
)
def test_parse_never_raises(data: Any) -> None:
    e = lv.parse_server_event(data)
    assert isinstance(e, lv.Malformed | lv.Ignored)


@given(st.binary(max_size=300))
def test_parse_never_raises_on_random_bytes(data: bytes) -> None:
    assert lv.parse_server_event(data) is not None
    assert lv.parse_backend_event(data) is not None


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=5),
        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
        max_leaves=10,
    ),
    st.sampled_from(sorted(lv.KNOWN_TYPES)),
)
def test_parse_never_raises_on_random_fields(value: Any, kind: str) -> None:
    frame = json.dumps({"type": kind, "session": value, "delta": value, "event": value})
    assert lv.parse_server_event(frame) is not None


# ------------------------------------------------------------------ protocol state


def test_protocol_items_turns_and_transcripts() -> None:
    p = lv.LiveProtocol(prefix="s1-")
    p.start(lv.session_start(model="gpt-live-1.1"))
    assert not p.ready
    p.receive(server_frame(type="session.started", session=SESSION))
    assert p.ready
    p.receive(
        server_frame(type="session.output_transcript.delta", delta="Hello ", start_ms=0, end_ms=0)
    )
    p.receive(server_frame(type="session.output_audio.delta", delta="AAAA"))
    assert p.output_item == "s1-out-1"
    p.receive(
        server_frame(type="session.output_transcript.delta", delta="there", start_ms=0, end_ms=0)
    )
    p.receive(server_frame(type="session.output_audio.delta", delta="AAAA"))
    assert p.output_item == "s1-out-1"
    p.receive(
        server_frame(type="session.input_transcript.delta", delta="Stop ", start_ms=5, end_ms=9)
    )
    assert p.turn_started
    assert p.take_transcripts() == [lv.Folded("assistant", "s1-out-1", "Hello there")]
    p.receive(
        server_frame(type="session.input_transcript.delta", delta="please", start_ms=9, end_ms=20)
    )
    assert not p.turn_started
    p.receive(server_frame(type="session.output_audio.delta", delta="AAAA"))
    assert p.output_item == "s1-out-2"
    assert p.take_transcripts() == [lv.Folded("user", "s1-in-1", "Stop please")]
    p.output_stopped()
    p.receive(server_frame(type="session.output_audio.delta", delta="AAAA"))
    assert p.output_item == "s1-out-3"


def test_protocol_collects_backend_calls_per_response() -> None:
    p = lv.LiveProtocol()
    item = {"type": "function_call", "status": "completed", "arguments": "{}"}
    p.receive(backend("d1", type="response.created", response=RESPONSE))
    p.receive(backend("d2", type="response.created", response={**RESPONSE, "id": "resp_2"}))
    p.receive(
        backend(
            "d1",
            type="response.output_item.done",
            output_index=0,
            item={**item, "id": "a", "call_id": "c1", "name": "x"},
        )
    )
    p.receive(
        backend(
            "d2",
            type="response.output_item.done",
            output_index=0,
            item={**item, "id": "b", "call_id": "c2", "name": "y"},
        )
    )
    assert [c.call_id for c in p.backend_calls("resp_1")] == ["c1"]
    assert [c.call_id for c in p.backend_calls("resp_2")] == ["c2"]
    assert p.backend_calls("resp_1") == []


def test_protocol_state_errors() -> None:
    p = lv.LiveProtocol()
    p.start("{}")
    with pytest.raises(lv.LiveStateError):
        p.start("{}")
    p.close()
    with pytest.raises(lv.LiveStateError):
        p.close()


# ------------------------------------------------------------------ the fake server

SCRIPT = {
    "name": "t",
    "agent": "banking",
    "greeting": [{"say": "Welcome to the bank."}],
    "turns": [
        {
            "caller": "I lost my card",
            "model": [
                {"say": "Sorry to hear."},
                {"call": "start_card_replacement", "args": {}, "expect_output": "identify"},
                {"say": "Your customer number?"},
            ],
        },
        {
            "dtmf": "123456",
            "model": [
                {"call": "provide_customer_number", "args": {"customer_id": "123456"}},
                {"say": "Thanks."},
            ],
        },
    ],
}


async def _recv_until(
    conn: Any, kind: str, seen: list[dict[str, Any]], limit: int = 2000
) -> dict[str, Any]:
    for _ in range(limit):
        data = json.loads(await asyncio.wait_for(conn.recv_bytes(), 5))
        SERVER.validate_python(data)
        seen.append(data)
        if data["type"] == kind:
            return data
    raise AssertionError(f"no {kind}")


def test_fake_server_with_the_sdk_client() -> None:
    """The official SDK connects; a greeting, a caller turn, a delegation, a result."""

    async def run() -> None:
        from openai import AsyncOpenAI

        scenario = scenario_from_dict(SCRIPT)
        async with FakeLiveServer(scenario, speed=50) as fake:
            client = AsyncOpenAI(api_key="sk-test", websocket_base_url=fake.url)
            conn = await client.live.connect().enter()
            seen: list[dict[str, Any]] = []
            try:
                delegation = lv.responses_delegation(tools=[{"name": "start_card_replacement"}])
                await conn.send_raw(
                    lv.session_start(model="gpt-live-1.1", delegation=delegation, event_id="fa-1")
                )
                started = await _recv_until(conn, "session.started", seen)
                assert started["client_event_id"] == "fa-1"
                await conn.send_raw(lv.append_context("commentary", "Greet the caller."))
                await _recv_until(conn, "session.commentary.appended", seen)
                await _recv_until(conn, "session.output_audio.delta", seen)
                # The caller speaks (a tone) then is quiet: the turn plays.
                tone = base64.b64encode(audio.tone(20, "raw/mulaw")).decode()
                quiet = base64.b64encode(audio.silence(20, "raw/mulaw")).decode()
                for b64 in [tone] * 30 + [quiet] * 20:
                    await conn.send_raw(lv.append_audio(b64))
                created = await _recv_until(conn, "session.delegation.created", seen)
                did = created["delegation"]["id"]
                call = None
                while call is None:
                    e = await _recv_until(conn, "response.event", seen)
                    inner = e["event"]
                    BACKEND.validate_python(inner)
                    if inner["type"] == "response.output_item.done":
                        call = inner["item"]
                assert e["delegation_id"] == did and call["name"] == "start_card_replacement"
                await conn.send_raw(
                    lv.function_call_output(call["call_id"], '{"state": "identify"}')
                )
                await conn.send_raw(lv.response_create())
                await _recv_until(conn, "session.output_transcript.delta", seen)
                await conn.send_raw(lv.session_close())
                closed = await _recv_until(conn, "session.closed", seen)
                assert closed["reason"] == "close_requested"
            finally:
                await conn.close()
            assert fake.violations == [] and fake.mismatches == []
            assert fake.function_outputs == [("start_card_replacement", '{"state": "identify"}')]
            assert fake.paths == ["/v1/live/sessions"]
            assert fake.headers[0]["authorization"] == "Bearer sk-test"
            kinds = [e["type"] for e in seen]
            assert "session.input_transcript.delta" in kinds

    asyncio.run(run())


def test_fake_server_refuses_realtime_events_and_commands_before_start() -> None:
    async def run() -> None:
        from websockets.asyncio.client import connect

        async with FakeLiveServer() as fake:
            async with connect(fake.url + "/live/sessions") as ws:
                await ws.send(lv.append_context("thinking", "early"))
                err = json.loads(await ws.recv())
                assert err["type"] == "error" and err["error"]["code"] == "session_not_started"
                await ws.send(lv.session_start(model="gpt-live-1.1"))
                assert json.loads(await ws.recv())["type"] == "session.started"
                await ws.send(
                    json.dumps(
                        {
                            "type": "conversation.item.truncate",
                            "item_id": "x",
                            "content_index": 0,
                            "audio_end_ms": 10,
                        }
                    )
                )
                err = json.loads(await ws.recv())
                assert err["type"] == "error"
                await ws.send(lv.response_create())  # client delegation: refused
                err = json.loads(await ws.recv())
                assert "Responses delegation" in err["error"]["message"]
            assert any("conversation.item.truncate" in v for v in fake.violations)

    asyncio.run(run())


def test_fake_server_stores_and_forks() -> None:
    async def run() -> None:
        from websockets.asyncio.client import connect

        async with FakeLiveServer(scenario_from_dict(SCRIPT)) as fake:
            async with connect(fake.url + "/live/sessions") as ws:
                await ws.send(lv.session_start(model="gpt-live-1.1", store=True))
                sid = json.loads(await ws.recv())["session"]["id"]
            await asyncio.sleep(0.05)
            async with connect(f"{fake.url}/live/sessions/{sid}/fork") as ws:
                await ws.send(lv.fork_start())
                started = json.loads(await ws.recv())
                assert started["type"] == "session.started" and started["session"]["store"] is True
            async with connect(f"{fake.url}/live/sessions/sess_404/fork") as ws:
                await ws.send(lv.fork_start())
                assert json.loads(await ws.recv())["error"]["code"] == "session_not_found"

    asyncio.run(run())


def test_struct_roundtrip_is_cheap_for_audio() -> None:
    frame = server_frame(type="session.output_audio.delta", delta="/////w==")
    e = lv.parse_server_event(frame)
    assert isinstance(e, lv.OutputAudioDelta)
    assert msgspec.json.encode(e)  # a plain struct, nothing lazy inside


# ------------------------------------------------------------------ pure translation


def test_decision_frames_are_pure_translation() -> None:
    """Decisions -> GPT-Live frames with no link, no socket (fastagent.live)."""
    base = {"call_id": "c", "at": 0}
    asked = events.ResponseRequested(seq=7, reason="tool", **base)
    (frame,) = lv.decision_frames(asked)
    assert json.loads(frame) == {"type": "response.create", "event_id": "fa-response-7"}
    assert lv.awaited_answer(asked) == ("response.created", events.response_event_id(7))
    heard = events.ItemHeard(seq=8, item_id="i", heard_ms=500, sent_ms=3000, **base)
    (thinking,) = lv.decision_frames(heard)
    assert json.loads(thinking)["type"] == "session.thinking.append"
    assert "0.5 s" in thinking and "3.0 s" in thinking
    # Heard (almost) all of it: nothing to tell; Realtime-only decisions: no frame.
    assert (
        lv.decision_frames(
            events.ItemHeard(seq=9, item_id="i", heard_ms=2900, sent_ms=3000, **base)
        )
        == []
    )
    assert lv.decision_frames(events.ItemDeleted(seq=10, item_id="i", **base)) == []
    assert lv.awaited_answer(events.ItemDeleted(seq=10, item_id="i", **base)) is None


def test_input_of_maps_standalone_server_events() -> None:
    err = lv.parse_server_event(
        json.dumps(
            {
                "type": "error",
                "event_id": "e1",
                "error": {"type": "invalid_request_error", "code": "bad", "message": "x" * 600},
            }
        )
    )
    cls, fields = lv.input_of(err)  # type: ignore[misc]
    assert cls is events.ModelError
    assert fields["code"] == "bad" and len(fields["message"]) == 500
    assert lv.input_of(lv.parse_server_event(b"not json")) is None
