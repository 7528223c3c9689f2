"""The fake Realtime server, driven by the real openai SDK client over loopback."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import pytest
import websockets
from openai import AsyncOpenAI
from websockets.exceptions import ConnectionClosedError, InvalidStatus

from fastagent import audio
from fastagent import realtime as rt
from fastagent.service.realtime_link import connect_realtime
from fastagent.testing.fake_realtime import FakeRealtimeServer, FakeServerBug
from fastagent.testing.scenario import scenario_from_dict

SCENARIO = scenario_from_dict(
    {
        "name": "fake-realtime-test",
        "greeting": [{"say": "Welcome to Demo Bank."}],
        "turns": [
            {
                "caller": "I lost my card",
                "model": [
                    {"say": "I can help with that."},
                    {
                        "call": "start_card_replacement",
                        "args": {"reason": "lost"},
                        "expect_output": "ticket",
                    },
                    {"say": "Your ticket is ready."},
                ],
            },
            {"silence_ms": 300},
            {"dtmf": "1234", "model": [{"say": "Thanks for the digits."}]},
            {"caller": "Stop, wait", "barge_in_after_ms": 100, "model": [{"say": "Sure."}]},
        ],
    }
)
LONG = "This is a long answer that goes on and on so that the caller can interrupt it. " * 3

FMT = "audio/pcmu"


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 15))


class Client:
    """The SDK connection, with raw frames both ways and a record of what came back."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.events: list[dict[str, Any]] = []

    async def send(self, frame: str) -> None:
        await self.conn.send_raw(frame)

    async def next(self, timeout: float = 3.0) -> dict[str, Any]:
        event: dict[str, Any] = json.loads(await asyncio.wait_for(self.conn.recv_bytes(), timeout))
        self.events.append(event)
        return event

    async def until(self, type_: str, timeout: float = 3.0) -> list[dict[str, Any]]:
        got: list[dict[str, Any]] = []
        while True:
            event = await self.next(timeout)
            got.append(event)
            if event["type"] == type_:
                return got

    async def quiet(self, seconds: float) -> list[dict[str, Any]]:
        """Whatever arrives within ``seconds`` (expected: nothing)."""
        got: list[dict[str, Any]] = []
        try:
            while True:
                got.append(await self.next(seconds))
        except TimeoutError:
            return got

    async def setup(self, **kw: Any) -> None:
        created = await self.next()
        assert created["type"] == "session.created"
        await self.send(rt.session_update(instructions="Test.", **kw))
        updated = await self.until("session.updated")
        assert len(updated) == 1

    async def speak(self, tone_ms: int = 500, silence_ms: int = 400, fmt: str = FMT) -> None:
        pcm = audio.tone(tone_ms, fmt) + audio.silence(silence_ms, fmt)
        step = 20 * audio.bytes_per_ms(fmt)
        for i in range(0, len(pcm), step):
            await self.send(rt.append_audio(base64.b64encode(pcm[i : i + step]).decode()))


@asynccontextmanager
async def sdk(server: FakeRealtimeServer) -> AsyncIterator[Client]:
    client = AsyncOpenAI(api_key="test", websocket_base_url=server.url)
    async with client.realtime.connect(model="gpt-realtime") as conn:
        yield Client(conn)


def types(events: list[dict[str, Any]]) -> list[str]:
    skip = {"response.output_audio.delta", "response.output_audio_transcript.delta"}
    return [e["type"] for e in events if e["type"] not in skip]


SAY_FLOW = [
    "response.output_item.added",
    "conversation.item.added",
    "response.content_part.added",
    "response.output_audio.done",
    "response.output_audio_transcript.done",
    "response.content_part.done",
    "conversation.item.done",
    "response.output_item.done",
]
CALL_FLOW = [
    "response.output_item.added",
    "conversation.item.added",
    "response.function_call_arguments.delta",
    "response.function_call_arguments.done",
    "conversation.item.done",
    "response.output_item.done",
]


def transcript(events: list[dict[str, Any]]) -> str:
    return " ".join(
        e["transcript"] for e in events if e["type"] == "response.output_audio_transcript.done"
    )


# ------------------------------------------------------------------ session set-up


def test_session_created_first_and_update_merges() -> None:
    async def main() -> None:
        async with FakeRealtimeServer(SCENARIO) as server, sdk(server) as c:
            created = await c.next()
            assert created["type"] == "session.created"
            s = created["session"]
            assert s["model"] == "gpt-realtime" and s["type"] == "realtime"
            assert s["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
            assert s["audio"]["input"]["turn_detection"]["type"] == "server_vad"
            # the SDK's typed helper, not just raw frames
            await c.conn.session.update(session={"type": "realtime", "instructions": "One."})
            one = (await c.until("session.updated"))[-1]["session"]
            assert one["instructions"] == "One."
            assert one["audio"]["output"]["format"]["type"] == "audio/pcm"
            await c.send(rt.session_update(tools=[{"name": "lookup"}], voice="cedar"))
            two = (await c.until("session.updated"))[-1]["session"]
            assert two["instructions"] == "One."  # only the fields sent change
            assert two["audio"]["input"]["format"] == {"type": "audio/pcmu"}
            assert two["audio"]["output"]["voice"] == "cedar"
            assert two["tools"][0]["name"] == "lookup"
            vad = two["audio"]["input"]["turn_detection"]
            assert vad["create_response"] and vad["interrupt_response"]
            assert vad["silence_duration_ms"] == 500  # defaults filled in
        assert server.violations == []
        assert [e["type"] for e in server.received] == ["session.update", "session.update"]

    run(main())


def test_wrong_path_is_404() -> None:
    async def main() -> None:
        async with FakeRealtimeServer() as server:
            with pytest.raises(InvalidStatus) as info:
                async with websockets.connect(f"ws://127.0.0.1:{server.port}/v1/other"):
                    pass
            assert info.value.response.status_code == 404

    run(main())


# ------------------------------------------------------------------ turns


def test_greeting_then_speech_turn_then_function_call() -> None:
    async def main() -> None:
        async with FakeRealtimeServer(SCENARIO, speed=50) as server, sdk(server) as c:
            await c.setup()
            await c.send(rt.response_create())
            greeting = await c.until("response.done")
            assert types(greeting) == ["response.created", "rate_limits.updated", *SAY_FLOW] + [
                "response.done"
            ]
            assert transcript(greeting) == "Welcome to Demo Bank."
            deltas = [e for e in greeting if e["type"] == "response.output_audio.delta"]
            sizes = {len(base64.b64decode(e["delta"])) for e in deltas}
            assert sizes == {160}  # 20 ms of μ-law, the session's output format
            assert len(deltas) == round(15 * len("Welcome to Demo Bank.") / 20)

            await c.speak()
            turn = await c.until("response.done")
            assert types(turn) == [
                "input_audio_buffer.speech_started",
                "input_audio_buffer.speech_stopped",
                "input_audio_buffer.committed",
                "conversation.item.added",
                "conversation.item.done",
                "conversation.item.input_audio_transcription.completed",
                "response.created",
                "rate_limits.updated",
                *SAY_FLOW,
                *CALL_FLOW,
                "response.done",
            ]
            started, stopped = turn[0], turn[1]
            assert started["audio_start_ms"] == 0
            assert stopped["audio_end_ms"] == 500  # the tone's end, in audio time
            heard = turn[5]
            assert heard["transcript"] == "I lost my card"
            assert transcript(turn) == "I can help with that."
            done = rt.parse_server_event(json.dumps(turn[-1]))
            assert isinstance(done, rt.ResponseDone)
            assert done.response.status == "completed"
            assert done.response.usage is not None and done.response.usage.total_tokens
            (call,) = done.response.runnable_calls()
            assert call.name == "start_card_replacement"
            assert json.loads(call.arguments) == {"reason": "lost"}

            # the output does not make the model speak by itself
            await c.send(rt.function_call_output(call.call_id, "ticket 42"))
            ack = await c.quiet(0.2)
            assert types(ack) == ["conversation.item.added", "conversation.item.done"]
            await c.send(rt.response_create())
            after = await c.until("response.done")
            assert transcript(after) == "Your ticket is ready."

            # DTMF forwarded as a user message, then response.create
            await c.send(rt.user_text("1234"))
            await c.send(rt.response_create())
            dtmf = await c.until("response.done")
            assert transcript(dtmf) == "Thanks for the digits."

            # nothing scripted is left: a short default reply
            await c.send(rt.response_create())
            assert transcript(await c.until("response.done")) == "Okay."
        assert server.violations == []
        assert server.mismatches == []
        assert server.function_outputs == [("start_card_replacement", "ticket 42")]

    run(main())


def test_expect_output_mismatch_and_unknown_call_id() -> None:
    async def main() -> None:
        async with FakeRealtimeServer(SCENARIO, speed=50) as server, sdk(server) as c:
            await c.setup()
            await c.speak()
            done = rt.parse_server_event(json.dumps((await c.until("response.done"))[-1]))
            assert isinstance(done, rt.ResponseDone)
            (call,) = done.response.runnable_calls()
            await c.send(rt.function_call_output("call_nope", "x"))
            err = (await c.until("error"))[-1]["error"]
            assert err["type"] == "invalid_request_error" and err["param"] == "item.call_id"
            await c.send(rt.function_call_output(call.call_id, "no luck"))
            await c.until("conversation.item.done")
        assert len(server.mismatches) == 1
        assert "start_card_replacement" in server.mismatches[0]

    run(main())


def test_vad_on_pcm16_input() -> None:
    async def main() -> None:
        async with FakeRealtimeServer(SCENARIO, speed=50) as server, sdk(server) as c:
            await c.setup(input_format="audio/pcm", output_format="audio/pcm")
            await c.speak(fmt="audio/pcm")
            turn = await c.until("response.done")
            heard = [e for e in turn if e["type"].endswith("transcription.completed")]
            assert heard[0]["transcript"] == "I lost my card"
            delta = next(e for e in turn if e["type"] == "response.output_audio.delta")
            assert len(base64.b64decode(delta["delta"])) == 960  # 20 ms at 24 kHz
        assert server.violations == []

    run(main())


# ------------------------------------------------------------------ interruptions


def test_barge_in_cancels_with_turn_detected_and_truncate() -> None:
    scenario = {"greeting": [{"say": LONG}], "turns": [{"caller": "Stop", "model": []}]}

    async def main() -> None:
        async with FakeRealtimeServer(scenario, speed=5) as server, sdk(server) as c:
            await c.setup()
            await c.send(rt.response_create())
            got = await c.until("response.output_audio.delta")
            item_id = got[-1]["item_id"]
            for _ in range(5):
                await c.until("response.output_audio.delta")
            await c.speak(tone_ms=200, silence_ms=0)
            cut = await c.until("response.done")
            kinds = types(cut)
            assert kinds[0] == "input_audio_buffer.speech_started"
            assert kinds[1:] == [*SAY_FLOW[3:], "response.done"]
            assert cut[-1]["response"]["status"] == "cancelled"
            assert cut[-1]["response"]["status_details"]["reason"] == "turn_detected"
            said = transcript(cut)
            assert said and LONG.startswith(said) and len(said) < len(LONG) / 2

            # truncate: within what was sent is fine, beyond it is an error
            await c.send(rt.truncate(item_id, 60))
            ok = (await c.until("conversation.item.truncated"))[-1]
            assert (ok["item_id"], ok["audio_end_ms"]) == (item_id, 60)
            await c.send(rt.truncate(item_id, 60_000))
            assert (await c.until("error"))[-1]["error"]["param"] == "audio_end_ms"

            # the utterance then completes as the next caller turn
            await c.speak(tone_ms=0, silence_ms=400)
            rest = await c.until("response.done")
            heard = [e for e in rest if e["type"].endswith("transcription.completed")]
            assert heard[0]["transcript"] == "Stop"
            user_item = heard[0]["item_id"]
            await c.send(rt.truncate(user_item, 10))
            assert (await c.until("error"))[-1]["error"]["param"] == "item_id"
        assert server.sessions[0].truncations == [(item_id, 60)]
        assert server.violations == []

    run(main())


def test_response_create_while_active_and_cancel() -> None:
    async def main() -> None:
        async with FakeRealtimeServer({"greeting": [{"say": LONG}]}, speed=5) as server:
            async with sdk(server) as c:
                await c.setup()
                await c.send(rt.response_cancel())
                err = (await c.until("error"))[-1]["error"]
                assert err["code"] == "response_cancel_not_active"
                await c.send(rt.response_create())
                await c.send(rt.response_create())  # at once: the first is active
                err = (await c.until("error"))[-1]["error"]
                assert err["code"] == "conversation_already_has_active_response"
                await c.until("response.output_audio.delta")
                await c.send(rt.response_cancel())
                done = (await c.until("response.done"))[-1]["response"]
                assert (done["status"], done["status_details"]["reason"]) == (
                    "cancelled",
                    "client_cancelled",
                )
                # the session goes on
                await c.send(rt.response_create())
                assert (await c.until("response.done"))[-1]["response"]["status"] == "completed"
            assert server.violations == []

    run(main())


def test_cancel_after_function_call_was_emitted() -> None:
    scenario = {"greeting": [{"call": "transfer_call", "args": {"to": "agent"}}]}

    async def main() -> None:
        async with FakeRealtimeServer(scenario, speed=10, call_done_delay_ms=3000) as server:
            async with sdk(server) as c:
                await c.setup()
                await c.send(rt.response_create())
                await c.until("response.function_call_arguments.done")
                await c.send(rt.response_cancel())
                raw = (await c.until("response.done"))[-1]
            done = rt.parse_server_event(json.dumps(raw))
            assert isinstance(done, rt.ResponseDone)
            assert done.response.status == "cancelled"
            assert [f.name for f in done.response.function_calls()] == ["transfer_call"]
            assert done.response.runnable_calls() == []  # the engine must not run it

    run(main())


# ------------------------------------------------------------------ honesty and failures


def test_invalid_client_events_are_errors_and_violations() -> None:
    async def main() -> None:
        async with FakeRealtimeServer(SCENARIO) as server, sdk(server) as c:
            await c.next()
            bad = [
                '{"type":"session.update","session":{"instructions":"no type"}}',
                '{"type":"input_audio_buffer.append"}',
                '{"type":"response.audio.delta"}',
                "not json",
                '{"type":"input_audio_buffer.append","audio":"@@@"}',  # valid shape, bad base64
            ]
            for frame in bad:
                await c.send(frame)
                err = (await c.until("error"))[-1]["error"]
                assert err["type"] == "invalid_request_error"
        assert len(server.violations) == 4
        assert server.violations[0].startswith("session.update")
        assert "invalid JSON" in server.violations[3]

    run(main())


def test_abrupt_close_mid_response() -> None:
    async def main() -> None:
        async with FakeRealtimeServer(SCENARIO, fail_after_audio_chunks=3) as server:
            async with sdk(server) as c:
                await c.setup()
                await c.send(rt.response_create())
                deltas = 0
                with pytest.raises(ConnectionClosedError) as info:
                    async for event in c.conn:  # the SDK's typed iteration
                        deltas += event.type == "response.output_audio.delta"
                assert info.value.rcvd is not None and info.value.rcvd.code == 1011
                assert deltas == 3

    run(main())


def test_error_on_and_rate_limited() -> None:
    async def main() -> None:
        async with FakeRealtimeServer(SCENARIO, error_on={"response.create"}) as server:
            async with sdk(server) as c:
                await c.setup()
                await c.send(rt.response_create())
                err = (await c.until("error"))[-1]["error"]
                assert err["code"] == "simulated"
                assert await c.quiet(0.1) == []
        async with FakeRealtimeServer(SCENARIO, rate_limited=True) as server:
            async with sdk(server) as c:
                await c.setup()
                await c.send(rt.response_create())
                got = await c.until("response.done")
                assert got[1]["rate_limits"][0]["remaining"] == 0
                assert got[-1]["response"]["status"] == "failed"

    run(main())


def test_concurrent_sessions_play_independently() -> None:
    async def one(server: FakeRealtimeServer) -> str:
        async with sdk(server) as c:
            await c.setup()
            await c.send(rt.response_create())
            return transcript(await c.until("response.done"))

    async def main() -> None:
        async with FakeRealtimeServer(SCENARIO, speed=50) as server:
            said = await asyncio.gather(*(one(server) for _ in range(3)))
            assert said == ["Welcome to Demo Bank."] * 3
            assert len(server.sessions) == 3

    run(main())


def test_thread_mode_and_connect_realtime() -> None:
    with FakeRealtimeServer(SCENARIO, speed=50) as server:

        async def main() -> None:
            conn = await connect_realtime(server.url, api_key="test", model="gpt-realtime")
            try:
                p = rt.RealtimeProtocol()
                assert isinstance(p.receive(await conn.recv_bytes()), rt.SessionCreated)
                await conn.send_raw(rt.session_update())
                frame = p.response_create()
                assert frame is not None
                await conn.send_raw(frame)
                while not isinstance(ev := p.receive(await conn.recv_bytes()), rt.ResponseDone):
                    pass
                assert ev.response.status == "completed" and not p.response_active
            finally:
                await conn.close()

        run(main())
    assert server.sessions[0].model == "gpt-realtime"


def test_fake_validates_what_it_sends(tmp_path: Any) -> None:
    path = tmp_path / "s.json"
    path.write_text(json.dumps({"name": "p", "greeting": [{"say": "From a file."}]}))

    async def main() -> None:
        async with FakeRealtimeServer(path, speed=50) as server, sdk(server) as c:
            await c.setup()
            await c.send(rt.response_create())
            assert transcript(await c.until("response.done")) == "From a file."
            with pytest.raises(FakeServerBug, match="invalid error"):
                await server.sessions[0].send("error", error={"message": "no type"})

    run(main())
