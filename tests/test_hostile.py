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
import contextlib
import json
import logging
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import websockets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_service import GOODBYE, TOKEN, Voice, _raw, _voice, assert_replays, scenario
from websockets.exceptions import InvalidStatus

from fastagent import events as ev
from fastagent import live, vaic, wire
from fastagent import realtime as rt
from fastagent.service import CallSession, ServiceConfig
from fastagent.service_cli import running_service
from fastagent.store import open_store
from fastagent.testing.fake_realtime import FakeRealtimeServer


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
    # Still served: a good frame gets its answer (the engine decides it).
    await ws.send(json.dumps({"type": "userStream.start", "conversationId": "nest"}))
    assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "userStream.started"
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
    assert "fails" not in service.calls and not session.model_link.connected
    assert_replays(events)


# ------------------------------------------------- ownership, timeouts, caps


@contextlib.asynccontextmanager
async def serving(
    tmp_path: Path, store: Any = None, store_path: str | None = None, **cfg: Any
) -> AsyncIterator[tuple[Any, str]]:
    """The service with some settings changed, on the fake model, on loopback."""
    async with FakeRealtimeServer(scenario([GOODBYE])) as fake:
        config = ServiceConfig(
            store=store_path or str(tmp_path / "calls.db"),
            token=TOKEN,
            realtime_url=fake.url,
            api_key="test",
            **{"grace_s": 0.5, **cfg},
        )
        async with running_service(config, store) as (app, url):
            yield app, url


def _connect(url: str, **kw: Any) -> Any:
    return websockets.connect(url, additional_headers={"Authorization": f"Bearer {TOKEN}"}, **kw)


INITIATE = {"type": "session.initiate", "supportedMediaFormats": ["raw/mulaw"]}


async def _log(app: Any, call_id: str) -> list[ev.Event]:
    return await Voice("", app, None, "").log(call_id)  # type: ignore[arg-type]


async def _closed(ws: Any, timeout: float = 5) -> int | None:
    """Read until the socket closes; its close code."""
    with pytest.raises(websockets.ConnectionClosed) as info:
        async with asyncio.timeout(timeout):
            while True:
                await ws.recv()
    return info.value.rcvd.code if info.value.rcvd else None


async def _two_initiates(url_a: str, url_b: str, call_id: str) -> tuple[list[str], Any, Any]:
    a, b = await _connect(url_a), await _connect(url_b)
    frame = json.dumps({**INITIATE, "conversationId": call_id})
    await asyncio.gather(a.send(frame), b.send(frame))
    replies = [json.loads(await asyncio.wait_for(w.recv(), 10)) for w in (a, b)]
    kinds_ = [r["type"] for r in replies]
    winner = a if kinds_[0] == "session.accepted" else b
    loser = b if winner is a else a
    return kinds_, winner, loser


@pytest.mark.anyio
async def test_a_conversation_initiated_twice_at_once_has_one_owner(tmp_path: Path) -> None:
    async with serving(tmp_path) as (app, url):
        for n in range(3):
            cid = f"twice-{n}"
            kinds_, winner, loser = await _two_initiates(url, url, cid)
            assert sorted(kinds_) == ["session.accepted", "session.error"]
            await loser.close()
            await winner.send(json.dumps({"type": "session.end", "conversationId": cid}))
            await _closed(winner)
            events = await _log(app, cid)
            assert [type(e).__name__ for e in events].count("SessionInitiated") == 1
            assert isinstance(events[-1], ev.CallEnded) and events[-1].outcome != "dropped"
            assert_replays(events)


@pytest.fixture
def pg_store_url(pg_url: str) -> Iterator[str]:
    import psycopg
    from psycopg import sql

    schema = f"hostile_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    yield f"{pg_url}{'&' if '?' in pg_url else '?'}schema={schema}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


SILENCE_MULAW = base64.b64encode(b"\xff" * 160).decode()  # 20 ms at 8 kHz


async def _stream(ws: Any, cid: str, stop: asyncio.Event) -> None:
    """A healthy VAIC caller: 20 ms of μ-law silence every 20 ms."""
    chunk = json.dumps(
        {"type": "userStream.chunk", "conversationId": cid, "audioChunk": SILENCE_MULAW}
    )
    with contextlib.suppress(websockets.ConnectionClosed):
        while not stop.is_set():
            await ws.send(chunk)
            await asyncio.sleep(0.02)


@pytest.mark.anyio
async def test_one_owner_per_call_across_two_instances_on_postgresql(
    tmp_path: Path, pg_store_url: str
) -> None:
    stores = [open_store(pg_store_url), open_store(pg_store_url)]
    try:
        async with (
            serving(tmp_path, stores[0], instance="hostile-a") as (app_a, url_a),
            serving(tmp_path, stores[1], instance="hostile-b") as (_, url_b),
        ):
            kinds_, winner, loser = await _two_initiates(url_a, url_b, "pg-twice")
            assert sorted(kinds_) == ["session.accepted", "session.error"]
            await loser.close()
            # The owner streams; a resume of the call on either instance is refused.
            await winner.send(
                json.dumps({"type": "userStream.start", "conversationId": "pg-twice"})
            )
            stop = asyncio.Event()
            streaming = asyncio.create_task(_stream(winner, "pg-twice", stop))
            await asyncio.sleep(0.3)
            for url in (url_a, url_b):
                async with _connect(url) as thief:
                    await thief.send(
                        json.dumps({"type": "session.resume", "conversationId": "pg-twice"})
                    )
                    reply = json.loads(await asyncio.wait_for(thief.recv(), 10))
                    assert reply["type"] == "session.error", reply
            stop.set()
            await streaming
            await winner.send(json.dumps({"type": "session.end", "conversationId": "pg-twice"}))
            await _closed(winner)
            stores[0].flush()
            stores[1].flush()
            events = stores[0].read_call("pg-twice")
            assert not [e for e in events if isinstance(e, ev.ConnectionLost)], "false loss"
            assert not [e for e in events if isinstance(e, ev.SessionResumed)]
            assert sum(isinstance(e, ev.SessionInitiated) for e in events) == 1
            assert isinstance(events[-1], ev.CallEnded)
            assert_replays(events)
            del app_a
    finally:
        for s in stores:
            s.close()


@pytest.mark.anyio
async def test_a_socket_that_never_initiates_is_closed(tmp_path: Path) -> None:
    async with serving(tmp_path, initiate_timeout_s=0.3) as (_, url):
        async with _connect(url) as ws:
            await ws.send(json.dumps({"type": "connection.validate"}))  # not an initiate
            assert await _closed(ws) == 1008


@pytest.mark.anyio
async def test_a_silent_caller_is_lost_and_the_call_ends_after_grace(tmp_path: Path) -> None:
    async with serving(tmp_path, caller_idle_s=0.4) as (app, url):
        ws = await _connect(url)
        await ws.send(json.dumps({**INITIATE, "conversationId": "silent"}))
        assert json.loads(await ws.recv())["type"] == "session.accepted"
        session = app.state.service.calls["silent"]
        await _closed(ws)  # (the connection is dropped: no frame for 0.4 s)
        events = await _log(app, "silent")
        lost = [e for e in events if isinstance(e, ev.ConnectionLost)]
        assert lost and lost[0].side == "caller" and lost[0].reason == "no frame for 0.4 s"
        assert any(isinstance(e, ev.GraceExpired) for e in events)
        assert isinstance(events[-1], ev.CallEnded)
        assert "silent" not in app.state.service.calls and not session.model_link.connected
        assert_replays(events)


@pytest.mark.anyio
async def test_sockets_past_the_cap_get_503_at_the_upgrade(tmp_path: Path) -> None:
    async with serving(tmp_path, max_sockets=2) as (_, url):
        a, b = await _connect(url), await _connect(url)
        with pytest.raises(InvalidStatus) as info:
            async with _connect(url):
                pass
        assert info.value.response.status_code == 503
        await a.close()
        for _ in range(100):  # the server notices the close
            try:
                async with _connect(url) as c:
                    await c.send(json.dumps({"type": "connection.validate"}))
                    assert json.loads(await c.recv())["type"] == "connection.validated"
                    break
            except InvalidStatus:
                await asyncio.sleep(0.02)
        else:
            raise AssertionError("a freed slot was never reused")
        await b.close()


@pytest.mark.anyio
async def test_a_caller_flooding_messages_is_closed_and_takes_the_dropped_path(
    tmp_path: Path,
) -> None:
    async with serving(tmp_path, max_msgs_per_s=20) as (app, url):
        ws = await _connect(url)
        await ws.send(json.dumps({**INITIATE, "conversationId": "flood"}))
        assert json.loads(await ws.recv())["type"] == "session.accepted"
        with contextlib.suppress(websockets.ConnectionClosed):
            for _ in range(200):
                await ws.send(json.dumps({"type": "connection.validate"}))
        assert await _closed(ws) == 1008
        events = await _log(app, "flood")
        lost = [e for e in events if isinstance(e, ev.ConnectionLost)]
        assert lost and lost[0].reason == "more than 20 messages/s"
        assert isinstance(events[-1], ev.CallEnded)


@pytest.mark.anyio
async def test_refused_upgrades_log_one_warning_per_source_and_never_a_token(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "query-SECRET-123"
    async with serving(tmp_path) as (_, url):
        for name in ("uvicorn.error", "uvicorn"):
            logging.getLogger(name).addHandler(caplog.handler)
            logging.getLogger(name).setLevel(logging.INFO)
        caplog.set_level(logging.INFO)
        try:
            for headers in (
                None,
                {"Authorization": "Bearer wrong-SECRET"},
                {"Authorization": TOKEN},
            ):
                for _ in range(3):
                    with pytest.raises(InvalidStatus):
                        async with websockets.connect(
                            f"{url}?token={secret}", additional_headers=headers
                        ):
                            pass
            async with _connect(f"{url}?token={secret}&api_key=sk-abcdefghijklmnop") as ws:
                await ws.send(json.dumps({"type": "connection.validate"}))
                await ws.recv()
        finally:
            for name in ("uvicorn.error", "uvicorn"):
                logging.getLogger(name).removeHandler(caplog.handler)
        lines = [r.getMessage() for r in caplog.records]
        refusals = [r for r in caplog.records if "refused with HTTP 401" in r.getMessage()]
        assert len(refusals) == 1 and refusals[0].levelno == logging.WARNING, lines
        for line in lines:
            for bad in (secret, "wrong-SECRET", TOKEN, "sk-abcdefghijklmnop"):
                assert bad not in line, line
        assert not [x for x in lines if "without completing handshake" in x], lines
        # Nor a line per refusal from the libraries underneath (uvicorn, websockets).
        said = [x for x in lines if "rejected" in x or "refused" in x or '" 401' in x]
        assert len(said) == 1, lines


# ------------------------------------------------------- durability boundary


@pytest.mark.anyio
async def test_non_audio_frames_leave_only_once_the_log_holds_their_decision(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every function output, message and other non-audio client event the model
    gets, and every recognition, speech event and activity the caller gets, is in
    the durable log (read back from the database, not the write buffer) when it is
    sent."""
    from fastagent.service.realtime_link import RealtimeLink

    checked: list[str] = []
    notices: list[str] = []
    holder: dict[str, Any] = {}
    send_frame, to_vaic = RealtimeLink.send_frame, CallSession.to_vaic

    def durable_kinds(call_id: str) -> list[str]:
        return [type(e).__name__ for e in holder["store"].read_call(call_id)]

    async def checked_send_frame(self: RealtimeLink, frame: str) -> None:
        kind = json.loads(frame)["type"]
        if kind != "input_audio_buffer.append":
            durable = durable_kinds(self.call_id)
            if '"function_call_output"' in frame:
                assert "FunctionOutputSent" in durable, frame
            checked.append(kind)
            assert durable, frame
        await send_frame(self, frame)

    async def checked_to_vaic(self: CallSession, frame: bytes) -> None:
        kind = json.loads(frame)["type"]
        if kind.startswith("userStream."):  # the n-th notification: n CallerNotified durable
            notices.append(kind)
            assert durable_kinds(self.call_id).count("CallerNotified") >= len(notices), frame
            checked.append(kind)
        elif kind == "activities":
            name = json.loads(frame)["activities"][0]["name"]
            want = {"hangup": "HangupRequested", "transfer": "TransferRequested"}.get(name)
            assert want is None or want in durable_kinds(self.call_id), frame
            checked.append(name)
        await to_vaic(self, frame)

    monkeypatch.setattr(RealtimeLink, "send_frame", checked_send_frame)
    monkeypatch.setattr(CallSession, "to_vaic", checked_to_vaic)
    sc = scenario([{"caller": "What time is it?", "model": [{"say": "Noon."}]}, GOODBYE])
    async for v in _voice(tmp_path, sc):
        holder["store"] = v.app.state.service.store
        report, events = await v.call(sc)
        assert report.ended == "bot-disconnected", report.errors
    assert {"session.update", "response.create", "conversation.item.create"} <= set(checked)
    assert "userStream.speech.recognition" in checked and "hangup" in checked
    assert_replays(events)


@pytest.mark.anyio
async def test_a_text_frame_that_is_not_utf8_fails_the_socket_with_one_line(
    voice: Voice, caplog: pytest.LogCaptureFixture
) -> None:
    ws = await _raw(voice, "utf8")
    await ws.send(b'{"type":"activities","conversationId":"utf8","x":"\xff"}', text=True)
    assert await _closed(ws) == 1007  # RFC 6455: invalid UTF-8 fails the connection
    events = await voice.log("utf8")
    lost = [e for e in events if isinstance(e, ev.ConnectionLost)]
    assert lost and lost[0].side == "caller"
    assert isinstance(events[-1], ev.CallEnded)  # after the grace
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    assert any("invalid UTF-8" in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------ log injection


FORGED = "\n2026-12-01T00:00:00.000Z ERROR fastagent.service call=victim forged\r\u2028x"


@pytest.mark.anyio
async def test_no_peer_value_can_forge_a_log_line(tmp_path: Path) -> None:
    """A newline (or any control character) from either socket -- here a
    ``session.end`` reason and a model ``error.message`` -- never starts a line of
    its own in the service's text log."""
    from fastagent.observe import TextFormatter

    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = Collect()
    handler.setFormatter(TextFormatter())
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)

    def tamper(event: dict[str, Any]) -> list[str] | None:
        if event["type"] != "session.updated":
            return None
        err = {"type": "error", "error": {"type": "server_error", "message": "m" + FORGED}}
        return [json.dumps(event), json.dumps(err)]

    try:
        async for v in _voice(tmp_path, scenario([GOODBYE]), tamper=tamper):
            ws = await _raw(v, "forge")
            await asyncio.sleep(0.5)  # the model's error arrives
            await ws.send(
                json.dumps({"type": "session.end", "conversationId": "forge", "reason": FORGED})
            )
            await _closed(ws)
            events = await v.log("forge")
            assert any(isinstance(e, ev.ModelFailureHandled) for e in events)
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    text = "\n".join(lines)
    assert "forged" in text  # the values were logged...
    for line in lines:  # ...each within its own record's one line
        assert line.isprintable(), repr(line)


# ------------------------------------- what a parser lets through is strict JSON

hostile_raw = st.sampled_from(
    [
        b"1e999",
        b"-1E+400",
        b"1" + b"0" * 40,
        b"0.5",
        b'"\xff"',
        b'"\xed\xa0\x80"',  # a UTF-8-encoded lone surrogate
        b'"\xc3"',
        b'"ok"',
        b"true",
        b"null",
        b"[]",
        b'"\\ud800"',
    ]
)
hostile_key = st.sampled_from([b"x", b"\xff", b"\xed\xa0\x80", b"event_id", b"k\xc3"])


def _with_extras(head: bytes, extras: list[tuple[bytes, bytes]]) -> bytes:
    body = b"".join(b',"' + k + b'":' + v for k, v in extras)
    return head + body + b"}"


@PROPS
@given(
    extras=st.lists(st.tuples(hostile_key, hostile_raw), min_size=1, max_size=3),
    cid=st.sampled_from([b',"conversationId":"c"', b""]),
)
def test_an_audio_frame_with_hostile_extras_is_accepted_only_if_strict(
    extras: list[tuple[bytes, bytes]], cid: bytes
) -> None:
    """Audio frames skip the full strict check for speed (both lanes): what they
    let through must still be strict JSON -- UTF-8, finite numbers, bounded ints."""
    chunk = _with_extras(b'{"type":"userStream.chunk"' + cid + b',"audioChunk":"AAAAAAAA"', extras)
    proto = _vaic_protocols()[1]
    fast, slow = proto.receive_chunk(chunk), proto.receive(chunk)
    for out in (fast, slow):
        if isinstance(out, vaic.UserStreamChunk):
            assert wire.strict_error(chunk) is None, chunk
    for kind, parse in (
        (b"response.output_audio.delta", rt.parse_server_event),
        (b"session.output_audio.delta", live.parse_server_event),
    ):
        head = b'{"type":"' + kind + b'","response_id":"r","item_id":"i","delta":"AAAA"'
        frame = _with_extras(head, extras)
        out = parse(frame)
        if not isinstance(out, rt.Malformed | rt.Ignored | live.Malformed | live.Ignored):
            assert wire.strict_error(frame) is None, frame


# ------------------------------------------------- before the upgrade (slowloris)


async def _eof_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    """True if the server closes the connection within ``seconds``."""
    try:
        async with asyncio.timeout(seconds):
            while await reader.read(4096):
                pass
        return True
    except TimeoutError:
        return False


@pytest.mark.anyio
async def test_a_connection_that_never_completes_its_request_is_closed(tmp_path: Path) -> None:
    """Silent, trickling and kept-alive-then-trickling connections are all closed
    within the initiate timeout: none holds a descriptor for good."""
    async with serving(tmp_path, initiate_timeout_s=0.5) as (app, url):
        port = int(url.split(":")[2].split("/")[0])
        silent = await asyncio.open_connection("127.0.0.1", port)
        partial = await asyncio.open_connection("127.0.0.1", port)
        partial[1].write(b"GET /audiocodes HTTP/1.1\r\nHost: x\r\n")
        kept = await asyncio.open_connection("127.0.0.1", port)
        kept[1].write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b"200" in await asyncio.wait_for(kept[0].readline(), 5)
        kept[1].write(b"GET /healthz HTTP/1.1\r\n")

        async def trickle(w: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                for _ in range(40):
                    await asyncio.sleep(0.1)
                    w.write(b"X-a: b\r\n")

        trickling = [asyncio.create_task(trickle(w)) for w in (partial[1], kept[1])]
        closed = await asyncio.gather(*(_eof_within(r, 3) for r, _ in (silent, partial, kept)))
        for t in trickling:
            t.cancel()
        assert closed == [True, True, True]
        async with _connect(url) as ws:  # a real caller is served as before
            await ws.send(json.dumps({"type": "connection.validate"}))
            assert json.loads(await ws.recv())["type"] == "connection.validated"


@pytest.mark.anyio
async def test_activities_packed_in_one_frame_count_against_the_message_rate(
    tmp_path: Path,
) -> None:
    """2,000 DTMF activities in one 70 kB frame are 2,000 messages, not one: the
    rate cap closes the socket instead of the model getting 2,000 items."""
    async with FakeRealtimeServer(scenario([GOODBYE])) as fake:
        config = ServiceConfig(
            store=str(tmp_path / "calls.db"),
            token=TOKEN,
            realtime_url=fake.url,
            api_key="test",
            grace_s=0.5,
            max_msgs_per_s=50,
        )
        async with running_service(config) as (app, url):
            ws = await _connect(url)
            await ws.send(json.dumps({**INITIATE, "conversationId": "packed"}))
            assert json.loads(await ws.recv())["type"] == "session.accepted"
            dtmf = [{"type": "event", "name": "DTMF", "value": "1"}] * 2000
            await ws.send(json.dumps({"type": "activities", "activities": dtmf}))
            assert await _closed(ws) == 1008
            events = await _log(app, "packed")
            lost = [e for e in events if isinstance(e, ev.ConnectionLost)]
            assert lost and lost[0].reason == "more than 50 messages/s"
            assert sum(isinstance(e, ev.Dtmf) for e in events) <= 100
            items = [m for m in fake.received if m.get("type") == "conversation.item.create"]
            assert len(items) <= 100, len(items)


@pytest.mark.anyio
async def test_a_gpt_live_recognition_reaches_the_caller_only_once_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The durability boundary holds on the GPT-Live link too: a recognition is in
    the durable log (read back from the database) when the caller gets it."""
    from fastagent.testing.caller import DEFAULT_PACE, SimulatedCaller
    from fastagent.testing.fake_live import FakeLiveServer

    checked: list[bool] = []  # per recognition sent: was it durable?
    holder: dict[str, Any] = {}
    to_vaic = CallSession.to_vaic

    async def checked_to_vaic(self: CallSession, frame: bytes) -> None:
        msg = json.loads(frame)
        if msg["type"] == "userStream.speech.recognition":
            durable = holder["store"].read_call(self.call_id)
            texts = [e.text for e in durable if isinstance(e, ev.Transcript)]
            checked.append(msg["alternatives"][0]["text"] in texts)
        await to_vaic(self, frame)

    monkeypatch.setattr(CallSession, "to_vaic", checked_to_vaic)
    sc = scenario([{"caller": "What time is it?", "model": [{"say": "Noon."}]}, GOODBYE])
    async with FakeLiveServer(sc, speed=1 / DEFAULT_PACE) as fake:
        config = ServiceConfig(
            store=str(tmp_path / "calls.db"),
            token=TOKEN,
            realtime_url=fake.url,
            api_key="test",
            model="gpt-live-1.1",
            playback_speed=1 / DEFAULT_PACE,
            grace_s=0.5,
        )
        async with running_service(config) as (app, url):
            holder["store"] = app.state.service.store
            caller = SimulatedCaller(url, TOKEN, formats=sc.caller.formats)
            report = await caller.play(sc, timeout=60)
            assert report.ended == "bot-disconnected", report.errors
    assert checked and all(checked), checked


@pytest.mark.anyio
async def test_a_resume_storm_for_unknown_or_ended_calls_dials_no_model(tmp_path: Path) -> None:
    """A resume that is refused costs no model connection: a storm of them (on one
    socket, or many) is not turned into a storm of model sessions."""
    async with FakeRealtimeServer(scenario([GOODBYE])) as fake:
        config = ServiceConfig(
            store=str(tmp_path / "calls.db"),
            token=TOKEN,
            realtime_url=fake.url,
            api_key="test",
            grace_s=0.5,
        )
        async with running_service(config) as (app, url):
            async with _connect(url) as ws:
                await ws.send(json.dumps({**INITIATE, "conversationId": "ended-x"}))
                assert json.loads(await ws.recv())["type"] == "session.accepted"
                await ws.send(json.dumps({"type": "session.end", "conversationId": "ended-x"}))
                await _closed(ws)
            await _log(app, "ended-x")
            await asyncio.sleep(0.3)
            dialled = len(fake.sessions)
            for cid in ("ended-x", "nobody"):
                async with _connect(url) as ws:
                    for _ in range(10):
                        await ws.send(json.dumps({"type": "session.resume", "conversationId": cid}))
                        reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
                        assert reply["type"] == "session.error", reply
            await asyncio.sleep(0.5)
            assert len(fake.sessions) == dialled, len(fake.sessions) - dialled


@pytest.mark.anyio
async def test_a_model_that_drops_every_session_is_not_redialled_forever(
    tmp_path: Path,
) -> None:
    """A model socket that fails right after each (re)connect (here a 2 MB frame,
    past FASTAGENT_MODEL_MAX_FRAME_BYTES) is redialled ``model_retries`` times
    with backoff, then the call takes the agent's fallback (outcome failed)."""

    def tamper(event: dict[str, Any]) -> str | None:
        return "x" * (2 * 1024 * 1024) if event["type"] == "session.updated" else None

    async for v in _voice(
        tmp_path, scenario([GOODBYE]), service_kw={"model_retries": 2}, tamper=tamper
    ):
        ws = await _raw(v, "drops")
        frames = await _frames_until(ws, "activities", timeout=15)
        assert json.loads(frames[-1])["activities"][0]["name"] == "transfer"  # (its fallback)
        await ws.close()
        events = await v.log("drops")
        assert len(v.fake.sessions) == 3, len(v.fake.sessions)  # the first and 2 retries
        assert sum(isinstance(e, ev.ConnectionLost) and e.side == "model" for e in events) == 3
        handled = [e for e in events if isinstance(e, ev.ModelFailureHandled)]
        assert handled and handled[-1].kind == "unreachable", handled
        ended = events[-1]
        assert isinstance(ended, ev.CallEnded) and ended.outcome == "failed", ended
        assert_replays(events)


async def _resume_storm(urls: list[str], cid: str) -> tuple[list[str], list[Any]]:
    """Six ``session.resume`` of ``cid`` at once over ``urls``; a socket that is
    accepted streams audio at once, as VAIC does.  (replies, sockets)"""
    socks = [await _connect(urls[i % len(urls)]) for i in range(6)]
    stop = asyncio.Event()
    streams: list[asyncio.Task[None]] = []

    async def one(ws: Any) -> str:
        await ws.send(json.dumps({"type": "session.resume", "conversationId": cid}))
        try:
            reply = json.loads(await asyncio.wait_for(ws.recv(), 15))
        except (TimeoutError, websockets.ConnectionClosed) as exc:
            return f"no reply: {type(exc).__name__}"
        if reply["type"] == "session.accepted":
            streams.append(asyncio.create_task(_stream(ws, cid, stop)))
        return str(reply["type"])

    replies = list(await asyncio.gather(*(one(ws) for ws in socks)))
    await asyncio.sleep(2.5)  # past FASTAGENT_RESUME_STALE_S: the winner keeps the call
    stop.set()
    await asyncio.gather(*streams)
    return replies, socks


async def _end_storm(replies: list[str], socks: list[Any], cid: str) -> None:
    for reply, ws in zip(replies, socks, strict=True):
        if reply == "session.accepted":
            await ws.send(json.dumps({"type": "session.end", "conversationId": cid}))
            with contextlib.suppress(Exception):
                await _closed(ws)
        else:
            await ws.close()


def _assert_one_resume(replies: list[str], events: list[ev.Event]) -> None:
    assert sorted(replies) == ["session.accepted"] + ["session.error"] * 5, replies
    assert sum(isinstance(e, ev.SessionResumed) for e in events) == 1
    reasons = [e.reason for e in events if isinstance(e, ev.ConnectionLost)]
    assert not [r for r in reasons if r.startswith("no event for")], reasons  # no false loss
    assert isinstance(events[-1], ev.CallEnded)


# A storm is six resumes within the grace: a grace the storm cannot outlast on a
# loaded machine (connecting six sockets took more than 0.5 s in CI, the call
# ended first, and every resume was rightly refused).
STORM_GRACE_S = 30.0


@pytest.mark.anyio
async def test_a_resume_storm_gives_the_call_to_one_socket(tmp_path: Path) -> None:
    async with serving(tmp_path, grace_s=STORM_GRACE_S) as (app, url):
        for n in range(2):
            cid = f"storm-{n}"
            ws = await _connect(url)
            await ws.send(json.dumps({**INITIATE, "conversationId": cid}))
            assert json.loads(await ws.recv())["type"] == "session.accepted"
            ws.transport.abort()
            await asyncio.sleep(0.1)
            replies, socks = await _resume_storm([url], cid)
            await _end_storm(replies, socks, cid)
            events = await _log(app, cid)
            _assert_one_resume(replies, events)
            assert_replays(events)


@pytest.mark.anyio
async def test_a_resume_storm_across_two_instances_on_postgresql(
    tmp_path: Path, pg_store_url: str
) -> None:
    stores = [open_store(pg_store_url), open_store(pg_store_url)]
    try:
        async with (
            serving(tmp_path, stores[0], instance="storm-a", grace_s=STORM_GRACE_S) as (_, url_a),
            serving(tmp_path, stores[1], instance="storm-b", grace_s=STORM_GRACE_S) as (_, url_b),
        ):
            for n in range(2):
                cid = f"pg-storm-{n}"
                ws = await _connect(url_a)
                await ws.send(json.dumps({**INITIATE, "conversationId": cid}))
                assert json.loads(await ws.recv())["type"] == "session.accepted"
                ws.transport.abort()
                await asyncio.sleep(0.1)
                replies, socks = await _resume_storm([url_a, url_b], cid)
                await _end_storm(replies, socks, cid)
                await asyncio.sleep(0.5)
                for s in stores:
                    s.flush()
                events = stores[0].read_call(cid)
                _assert_one_resume(replies, events)
                assert_replays(events)
    finally:
        for s in stores:
            s.close()


@pytest.mark.anyio
async def test_a_resume_as_the_grace_runs_out_gets_an_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A resume that reaches the instance just after the grace ended the call, before
    the close its CallEnded spawned has run (a busy loop), gets session.error
    "conversation has ended": not silence on a socket attached to an ended call,
    and nothing in the log after the CallEnded.  (Seen in CI: "call ended: dropped"
    then, 5 ms later, "call resumed on storm-a", and no reply for 15 s.)"""
    close = CallSession.close

    async def late(self: CallSession, why: str) -> None:
        if why == "call ended":
            await asyncio.sleep(1.0)  # the loop is busy: the spawned close runs late
        await close(self, why)

    monkeypatch.setattr(CallSession, "close", late)
    async with serving(tmp_path, grace_s=0.3) as (app, url):
        service = app.state.service
        cid = "grace-race"
        ws = await _connect(url)
        await ws.send(json.dumps({**INITIATE, "conversationId": cid}))
        assert json.loads(await ws.recv())["type"] == "session.accepted"
        session = service.calls[cid]
        ws.transport.abort()
        async with asyncio.timeout(10):  # the grace ends the call; its close waits
            while not session.engine.view.ended:
                await asyncio.sleep(0.01)
        assert not session.closing
        again = await _connect(url)
        await again.send(json.dumps({"type": "session.resume", "conversationId": cid}))
        reply = json.loads(await asyncio.wait_for(again.recv(), 10))
        assert reply == {**reply, "type": "session.error", "reason": "conversation has ended"}
        await again.close()
        events = await _log(app, cid)
    assert isinstance(events[-1], ev.CallEnded), events[-3:]
    assert not any(isinstance(e, ev.SessionResumed) for e in events)
    assert_replays(events)


@pytest.mark.anyio
async def test_model_ids_are_bounded_before_they_reach_the_log(tmp_path: Path) -> None:
    """A model's ids (item, response, call, event ids, a function's name) are
    short by nature: a 100 kB one is a malformed event, not 100 kB in each of the
    call's events (every BotAudio carries its item and response ids)."""
    long_id = "i" * 100_000

    def tamper(event: dict[str, Any]) -> str | None:
        if event["type"] == "response.output_audio.delta":
            return json.dumps({**event, "item_id": long_id})
        if event["type"] == "input_audio_buffer.speech_started":
            return json.dumps({**event, "event_id": long_id})
        return None

    async for v in _voice(tmp_path, scenario([GOODBYE]), tamper=tamper):
        ws = await _raw(v, "long-ids")
        await ws.send(json.dumps({**START, "conversationId": "long-ids"}))
        await asyncio.sleep(1.5)
        await ws.send(json.dumps({"type": "session.end", "conversationId": "long-ids"}))
        await _closed(ws)
        events = await v.log("long-ids")
        biggest = max(len(msgspec.json.encode(e)) for e in events)
        assert biggest < 20_000, biggest
        errors = [e.message for e in events if isinstance(e, ev.ProtocolError)]
        assert errors and all("1000" in m or "length" in m for m in errors), errors[:3]
    for data in (
        json.dumps({"type": "response.done", "response": {"id": long_id}}),
        json.dumps({"type": "error", "error": {"event_id": long_id}}),
        json.dumps(
            {
                "type": "response.function_call_arguments.done",
                "call_id": "c",
                "name": long_id,
                "arguments": "{}",
            }
        ),
    ):
        assert isinstance(rt.parse_server_event(data), rt.Malformed), data[:80]
    live_data = json.dumps({"type": "session.started", "session": {"id": long_id}})
    assert isinstance(live.parse_server_event(live_data), live.Malformed)


def test_a_gpt_live_model_streaming_one_transcript_without_end_is_bounded() -> None:
    """Transcript deltas are folded per item in memory: a model that streams them
    for one item without end holds at most MAX_TURN_TEXT characters of it."""
    proto = live.LiveProtocol()
    chunk = "w" * 1000
    for kind in ("session.input_transcript.delta", "session.output_transcript.delta"):
        for _ in range(300):  # 300 kB of one item's text
            proto.receive(json.dumps({"type": kind, "delta": chunk}))
        proto.receive(json.dumps({"type": "session.output_audio.delta", "delta": "AAAA"}))
    proto.flush_transcripts()
    folded = proto.take_transcripts()
    assert {f.role for f in folded} == {"user", "assistant"}, folded
    assert all(0 < len(f.text) <= live.MAX_TURN_TEXT for f in folded)


HUGE_TOOL = '''
from mcp.server.mcpserver import MCPServer

mcp = MCPServer("huge", log_level="WARNING")


@mcp.tool()
def dump() -> str:
    """Return far too much."""
    return "row;" * 500_000


mcp.run()
'''


@pytest.mark.anyio
async def test_a_tool_result_is_bounded_before_the_log_and_the_model(tmp_path: Path) -> None:
    """An MCP tool that answers 2 MB (a real stdio server) gives at most
    MAX_TOOL_OUTPUT characters, marked as cut: that is what the log records and
    the model is told."""
    import sys

    from fastagent.agent import McpServer
    from fastagent.tools import MAX_TOOL_OUTPUT, ToolHub

    script = tmp_path / "huge_tool.py"
    script.write_text(HUGE_TOOL)
    hub = ToolHub([McpServer(name="huge", command=(sys.executable, str(script)))])
    await hub.start()
    try:
        out = await hub.call("huge", "dump", "{}", timeout_s=30)
    finally:
        await hub.aclose()
    assert out.ok, out.error
    assert len(out.output) <= MAX_TOOL_OUTPUT and "row;row;" in out.output[:40]
    assert "characters cut" in out.output[-80:], out.output[-80:]


LIVE_TYPES = [*sorted(live.KNOWN_TYPES), "bogus"]
LIVE_KEYS = ["delta", "session", "delegation", "response", "error", "usage", "event"]


@PROPS
@given(
    data=st.lists(
        any_bytes
        | st.builds(
            _frame,
            st.sampled_from(LIVE_TYPES),
            st.dictionaries(st.sampled_from(KEYS + LIVE_KEYS), json_values, max_size=5),
            st.none(),
        ),
        max_size=8,
    )
)
def test_the_gpt_live_protocol_object_never_raises_on_any_frames(data: list[bytes]) -> None:
    """The real entry of the GPT-Live socket is ``LiveProtocol.receive`` (parse,
    then the state it keeps): any sequence of frames gives events, never an
    exception, and its transcripts can always be taken."""
    proto = live.LiveProtocol()
    for frame in data:
        out = proto.receive(frame)
        _encodable(out)
    proto.flush_transcripts()
    for folded in proto.take_transcripts():
        assert isinstance(folded.text, str)
