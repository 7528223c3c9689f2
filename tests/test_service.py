"""The voice service end to end: real sockets on loopback, the fake Realtime model,
the simulated AudioCodes caller, a real SQLite store; every call replays identically."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import websockets
from websockets.exceptions import InvalidStatus

from fastagent import events as ev
from fastagent.replay import replay
from fastagent.service import ConfigError, Service, ServiceConfig
from fastagent.service_cli import running_service
from fastagent.store import open_store
from fastagent.testing.caller import DEFAULT_PACE, CallerReport, SimulatedCaller
from fastagent.testing.fake_realtime import FakeRealtimeServer
from fastagent.testing.scenario import Scenario, scenario_from_dict

pytestmark = pytest.mark.anyio
TOKEN = "s3cret-token"
SPEED = 1 / DEFAULT_PACE  # the simulated caller plays bot audio this much faster


def scenario(turns: list[dict[str, Any]], **kw: Any) -> Scenario:
    return scenario_from_dict(
        {
            "name": kw.pop("name", "test"),
            "agent": kw.pop("agent", "default"),
            "greeting": kw.pop("greeting", [{"say": "Hello, how can I help?"}]),
            "turns": turns,
            **kw,
        }
    )


GOODBYE = {
    "caller": "Thanks, goodbye",
    "model": [
        {"say": "Bye."},
        {"call": "end_call", "args": {"reason": "done"}},
        {"say": "Goodbye!"},
    ],
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Voice:
    url: str
    app: Any
    fake: FakeRealtimeServer
    store_path: str

    async def call(self, sc: Scenario, **kw: Any) -> tuple[CallerReport, list[ev.Event]]:
        caller = SimulatedCaller(self.url, TOKEN, formats=sc.caller.formats, **kw)
        report = await caller.play(sc, timeout=30)
        events = await self.log(caller.conversation_id)
        return report, events

    async def log(self, call_id: str) -> list[ev.Event]:
        service = self.app.state.service
        for _ in range(300):
            session = service.calls.get(call_id)
            if session is None:
                break
            await asyncio.sleep(0.01)
        service.store.flush()
        return service.store.read_call(call_id)


@pytest.fixture
async def voice(tmp_path: Path) -> AsyncIterator[Voice]:
    yield_voice = None
    async for v in _voice(tmp_path, scenario([GOODBYE])):
        yield_voice = v
        yield v
    assert yield_voice is not None


async def _voice(
    tmp_path: Path,
    sc: Scenario,
    playback_speed: float = SPEED,
    service_kw: dict[str, Any] | None = None,
    **fake_kw: Any,
) -> AsyncIterator[Voice]:
    store_path = str(tmp_path / "calls.db")
    async with FakeRealtimeServer(sc, **fake_kw) as fake:
        config = ServiceConfig(
            store=store_path,
            token=TOKEN,
            realtime_url=fake.url,
            api_key="test",
            transfer_target="tel:+15550000",
            playback_speed=playback_speed,
            grace_s=0.5,
            **(service_kw or {}),
        )
        async with running_service(config) as (app, url):
            yield Voice(url, app, fake, store_path)
        assert not fake.violations, fake.violations


def kinds(events: list[ev.Event]) -> list[str]:
    return [type(e).__name__ for e in events]


def assert_replays(events: list[ev.Event]) -> None:
    result = replay(events)
    assert result.identical, result.divergence and result.divergence.to_dict()


# ------------------------------------------------------------------ whole calls


async def test_whole_call_greeting_turns_barge_in_dtmf_and_bot_hangup(tmp_path: Path) -> None:
    sc = scenario(
        [
            {
                "caller": "What are your opening hours?",
                "model": [
                    {
                        "say": "We are open from eight in the morning until eight in the evening, "
                        "every day of the week."
                    }
                ],
            },
            {
                "caller": "Only weekdays please",
                "barge_in_after_ms": 300,
                "model": [{"say": "Weekdays eight to eight."}],
            },
            {"dtmf": "42", "model": [{"say": "You pressed four two."}]},
            GOODBYE,
        ]
    )
    async for v in _voice(tmp_path, sc):
        report, events = await v.call(sc)
    assert report.ended == "bot-disconnected", report.errors
    names = kinds(events)
    assert names[0] == "SessionInitiated" and names[-1] == "CallEnded"
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    texts = [(e.role, e.text) for e in events if isinstance(e, ev.Transcript)]
    assert ("assistant", "Hello, how can I help?") in texts
    assert ("user", "What are your opening hours?") in texts
    # Barge-in: playback stopped and the item truncated at what was heard.
    trunc = [e for e in events if isinstance(e, ev.TruncateRequested)]
    assert len(trunc) == 1
    stop = next(e for e in events if isinstance(e, ev.PlaybackStopped) and e.reason == "barge_in")
    assert 0 < trunc[0].audio_end_ms == stop.played_ms
    assert any(isinstance(e, ev.ItemTruncated) for e in events)
    assert any(isinstance(e, ev.Dtmf) and e.digits == "42" for e in events)
    assert any(isinstance(e, ev.MessageInjected) and "42" in e.text for e in events)
    assert any(isinstance(e, ev.HangupRequested) for e in events)
    assert events[-1].outcome == "completed"  # type: ignore[attr-defined]
    # Audio boundaries both ways, never the bytes.
    assert names.count("CallerAudio") > 20 and names.count("BotAudio") > 20
    assert report.activities[-1]["name"] == "hangup"
    assert "What are your opening hours?" in report.recognitions
    assert_replays(events)


async def test_caller_hangs_up(voice: Voice) -> None:
    sc = scenario([{"caller": "Hello there", "model": [{"say": "Hi!"}]}, {"hangup": True}])
    report, events = await voice.call(sc)
    assert report.ended == "client-disconnected"
    end = events[-1]
    assert isinstance(end, ev.CallEnded) and end.outcome == "caller_hangup"
    assert any(isinstance(e, ev.SessionEnded) for e in events)
    assert_replays(events)


async def test_transfer_to_human(tmp_path: Path) -> None:
    sc = scenario(
        [
            {
                "caller": "I want a person",
                "model": [
                    {"call": "transfer_to_human", "args": {"reason": "asked for a person"}},
                    {"say": "Transferring you now."},
                ],
            }
        ]
    )
    async for v in _voice(tmp_path, sc):
        report, events = await v.call(sc)
    assert report.ended == "transferred", report.errors
    t = next(e for e in events if isinstance(e, ev.TransferRequested))
    assert t.target == "tel:+15550000"
    act = report.activities[-1]
    assert act["name"] == "transfer"
    assert act["activityParams"]["transferTarget"] == "tel:+15550000"
    assert events[-1].outcome == "transferred"  # type: ignore[attr-defined]
    assert_replays(events)


async def test_tool_call_of_an_interrupted_response_never_runs(tmp_path: Path) -> None:
    sc = scenario(
        [
            {
                "caller": "Please end the call",
                "model": [
                    {"say": "One moment."},
                    {"call": "end_call", "args": {"reason": "asked"}},
                ],
            },
            {
                "caller": "No wait, stay",
                "barge_in_after_ms": 150,
                "model": [{"say": "Sure, I am still here."}],
            },
            GOODBYE,
        ]
    )
    # Real time on both sides: the call is emitted, then the caller barges in
    # before the response is done.
    async for v in _voice(tmp_path, sc, playback_speed=1.0, realtime=True, call_done_delay_ms=600):
        report, events = await v.call(sc, realtime=True)
    requested = [e for e in events if isinstance(e, ev.FunctionCallRequested)]
    assert len(requested) >= 1
    first = requested[0]
    skipped = [e for e in events if isinstance(e, ev.FunctionCallSkipped)]
    dispatched = [e for e in events if isinstance(e, ev.FunctionCallDispatched)]
    assert first.tool_call_id in {e.tool_call_id for e in skipped}
    assert first.tool_call_id not in {e.tool_call_id for e in dispatched}
    assert report.ended == "bot-disconnected", report.errors
    assert_replays(events)


# -------------------------------------------------------------- authentication


async def test_missing_or_wrong_token_gets_401(voice: Voice) -> None:
    for headers in (None, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        with pytest.raises(InvalidStatus) as info:
            async with websockets.connect(voice.url, additional_headers=headers):
                pass
        assert info.value.response.status_code == 401


async def test_service_refuses_to_start_without_token(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--no-auth"):
        Service(ServiceConfig(store=str(tmp_path / "x.db")))


# ------------------------------------------------------------------- bad input


async def _raw(voice: Voice, call_id: str) -> Any:
    ws = await websockets.connect(
        voice.url, additional_headers={"Authorization": f"Bearer {TOKEN}"}
    )
    await ws.send(
        json.dumps(
            {
                "type": "session.initiate",
                "conversationId": call_id,
                "supportedMediaFormats": ["raw/mulaw"],
                "caller": "+1",
            }
        )
    )
    msg = json.loads(await ws.recv())
    assert msg["type"] == "session.accepted" and msg["mediaFormat"] == "raw/mulaw"
    return ws


async def test_bad_frames_are_recorded_and_the_call_goes_on(voice: Voice) -> None:
    ws = await _raw(voice, "bad-frames")
    await ws.send("{not json")
    await ws.send(json.dumps({"type": "no.such.message", "conversationId": "bad-frames"}))
    await ws.send(
        json.dumps(
            {"type": "userStream.chunk", "conversationId": "bad-frames", "audioChunk": "AAAA"}
        )
    )  # before userStream.start
    await ws.send(json.dumps({"type": "userStream.start", "conversationId": "bad-frames"}))
    await ws.send(
        json.dumps(
            {
                "type": "userStream.chunk",
                "conversationId": "bad-frames",
                "audioChunk": "!!not base64!!",
            }
        )
    )
    await ws.send(
        json.dumps(
            {
                "type": "userStream.chunk",
                "conversationId": "bad-frames",
                "audioChunk": "A" * 400_000,
            }
        )
    )  # oversized frame
    await ws.send(
        json.dumps(
            {"type": "userStream.chunk", "conversationId": "bad-frames", "audioChunk": "/////w=="}
        )
    )  # a good one still flows
    await ws.send(
        json.dumps(
            {
                "type": "session.end",
                "conversationId": "bad-frames",
                "reasonCode": "client-disconnected",
            }
        )
    )
    with pytest.raises(websockets.ConnectionClosed):
        for _ in range(200):
            await asyncio.wait_for(ws.recv(), 5)
    events = await voice.log("bad-frames")
    errors = [e.message for e in events if isinstance(e, ev.ProtocolError)]
    assert any("malformed JSON" in m for m in errors)
    assert any("unknown message type" in m for m in errors)
    assert any("before userStream.start" in m for m in errors)
    assert any("invalid base64" in m for m in errors)
    assert any("exceeds the limit" in m for m in errors)
    assert sum(isinstance(e, ev.CallerAudio) for e in events) == 1
    assert isinstance(events[-1], ev.CallEnded)
    assert_replays(events)


async def test_messages_after_session_end_are_not_recorded(voice: Voice) -> None:
    ws = await _raw(voice, "after-end")
    await ws.send(
        json.dumps(
            {
                "type": "session.end",
                "conversationId": "after-end",
                "reasonCode": "client-disconnected",
            }
        )
    )
    try:
        await ws.send(json.dumps({"type": "userStream.start", "conversationId": "after-end"}))
    except websockets.ConnectionClosed:
        pass
    await ws.close()
    events = await voice.log("after-end")
    assert isinstance(events[-1], ev.CallEnded)
    assert_replays(events)


async def test_unknown_resume_and_no_usable_format(voice: Voice) -> None:
    async with websockets.connect(
        voice.url, additional_headers={"Authorization": f"Bearer {TOKEN}"}
    ) as ws:
        await ws.send(json.dumps({"type": "session.resume", "conversationId": "never-seen"}))
        msg = json.loads(await ws.recv())
        assert msg == {"type": "session.error", "reason": "conversation not found"}
        await ws.send(json.dumps({"type": "connection.validate"}))
        assert json.loads(await ws.recv())["type"] == "connection.validated"
    async with websockets.connect(
        voice.url, additional_headers={"Authorization": f"Bearer {TOKEN}"}
    ) as ws:
        await ws.send(
            json.dumps(
                {
                    "type": "session.initiate",
                    "conversationId": "fmt",
                    "supportedMediaFormats": ["wav/opus"],
                }
            )
        )
        msg = json.loads(await ws.recv())
        assert msg["type"] == "session.error" and "wav/opus" in msg["reason"]
    events = await voice.log("fmt")
    assert kinds(events) == ["SessionInitiated", "SessionRejected", "CallEnded"]


async def test_a_broken_call_leaves_other_calls_unaffected(voice: Voice) -> None:
    sc = scenario([{"caller": "Hello", "model": [{"say": "Hi."}]}, GOODBYE])

    async def broken() -> None:
        ws = await _raw(voice, "broken")
        for _ in range(20):
            await ws.send(b"\xff\xfe garbage")
            await ws.send("[1, 2, 3]")
        await ws.close()

    (report, events), _ = await asyncio.gather(voice.call(sc), broken())
    assert report.ended == "bot-disconnected", report.errors
    assert_replays(events)


async def test_model_closes_socket_mid_response_then_call_goes_on(tmp_path: Path) -> None:
    sc = scenario(
        [
            {
                "caller": "Tell me a long story",
                "model": [
                    {
                        "say": "Once upon a time there was a very long story "
                        "that went on and on and on for a long while."
                    }
                ],
            },
            GOODBYE,
        ]
    )
    async for v in _voice(tmp_path, sc, fail_after_audio_chunks=30, continue_script=True):
        report, events = await v.call(sc)
        sessions = len(v.fake.sessions)
    lost = [e for e in events if isinstance(e, ev.ConnectionLost) and e.side == "model"]
    restored = [e for e in events if isinstance(e, ev.ConnectionRestored) and e.side == "model"]
    assert lost and restored and sessions >= 2
    assert report.ended == "bot-disconnected", report.errors
    assert_replays(events)


async def test_store_opened_by_service_keeps_everything(tmp_path: Path) -> None:
    path = str(tmp_path / "s.db")
    with open_store(path) as s:
        s.append([ev.Dtmf(call_id="x", seq=1, at=1, digits="1")])
    with open_store(path) as s:
        assert len(s.read_call("x")) == 1


async def test_seeding_folds_old_turns_into_one_summary() -> None:
    from fastagent.core import POLICY, seed_pairs

    assert seed_pairs([("user", "hi"), ("assistant", "")]) == [("user", "hi")]
    long = [("user" if i % 2 else "assistant", f"t{i}") for i in range(100)]
    pairs = seed_pairs(long)
    assert len(pairs) == POLICY.history_items + 1
    assert pairs[0][0] == "system" and "t0" in pairs[0][1] and "t75" in pairs[0][1]
    assert pairs[-1] == ("user", "t99") and ("assistant", "t76") in pairs


async def test_invalid_dtmf_is_a_protocol_error(voice: Voice) -> None:
    ws = await _raw(voice, "dtmf")
    for value in ({"a": 1}, "12#"):
        act = {"type": "event", "name": "DTMF", "value": value}
        await ws.send(
            json.dumps({"type": "activities", "conversationId": "dtmf", "activities": [act]})
        )
    await ws.send(
        json.dumps(
            {"type": "session.end", "conversationId": "dtmf", "reasonCode": "client-disconnected"}
        )
    )
    with pytest.raises(websockets.ConnectionClosed):
        for _ in range(200):
            await asyncio.wait_for(ws.recv(), 5)
    events = await voice.log("dtmf")
    assert [e.digits for e in events if isinstance(e, ev.Dtmf)] == ["12#"]
    assert any(isinstance(e, ev.ProtocolError) and "DTMF" in e.message for e in events)


class _KeepGone(dict):  # type: ignore[type-arg]
    """service.calls that remembers the sessions it let go."""

    gone: dict[str, Any]

    def __delitem__(self, key: str) -> None:
        self.gone[key] = self[key]
        super().__delitem__(key)


async def test_live_state_kept_during_the_call_equals_a_fold_of_its_log(voice: Voice) -> None:
    import msgspec

    from projections import live

    service = voice.app.state.service
    calls = _KeepGone()
    calls.gone = {}
    service.calls = calls
    sc = scenario([{"caller": "Hello", "model": [{"say": "Hi."}]}, {"dtmf": "7"}, GOODBYE])
    report, events = await voice.call(sc)
    assert report.ended == "bot-disconnected", report.errors
    (session,) = calls.gone.values()
    kept = msgspec.to_builtins(session.state)
    assert kept == msgspec.to_builtins(live.fold(events))
    assert kept["status"] == "ended" and kept["events"] == len(events)


async def test_a_resume_overtaking_the_close_of_the_old_socket(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """VAIC resumes the moment its socket fails.  The instance may still be busy
    with the old socket's last frame (here a DTMF whose commit is slow), its close
    queued behind it, when the resume arrives: a socket whose connection is gone is
    not alive however recently it spoke, so the resume is not refused."""
    from fastagent.service import CallSession

    slow: list[float] = []
    durable = CallSession.durable

    async def uneven(self: CallSession) -> bool:
        ok = await durable(self)
        if slow:
            await asyncio.sleep(slow.pop())
        return ok

    monkeypatch.setattr(CallSession, "durable", uneven)
    async for v in _voice(tmp_path, scenario([GOODBYE])):
        old = await _raw(v, "overtaken")
        start = {"type": "event", "name": "start", "id": "overtaken-start"}
        await old.send(
            json.dumps({"type": "activities", "conversationId": "overtaken", "activities": [start]})
        )
        while json.loads(await asyncio.wait_for(old.recv(), 30))["type"] != "playStream.stop":
            pass  # the greeting was sent: the model is there
        slow.append(2.0)
        dtmf = {"type": "event", "name": "DTMF", "value": "1", "id": "overtaken-dtmf"}
        await old.send(
            json.dumps({"type": "activities", "conversationId": "overtaken", "activities": [dtmf]})
        )
        async with asyncio.timeout(30):
            while slow:  # the old socket's reader waits in the slow commit
                await asyncio.sleep(0.01)
        old.transport.abort()
        new = await websockets.connect(
            v.url, additional_headers={"Authorization": f"Bearer {TOKEN}"}
        )
        await new.send(json.dumps({"type": "session.resume", "conversationId": "overtaken"}))
        got = json.loads(await asyncio.wait_for(new.recv(), 30))
        assert got == {"type": "session.accepted", "mediaFormat": "raw/mulaw"}, got
        await new.send(
            json.dumps(
                {
                    "type": "session.end",
                    "conversationId": "overtaken",
                    "reasonCode": "client-disconnected",
                }
            )
        )
        await new.close()
        events = await v.log("overtaken")
    resumed = [e for e in events if isinstance(e, ev.SessionResumed)]
    assert len(resumed) == 1
    assert any(isinstance(e, ev.Dtmf) for e in events[: events.index(resumed[0])])
    assert isinstance(events[-1], ev.CallEnded)
    assert_replays(events)


async def test_resume_while_the_old_socket_still_hangs_open(tmp_path: Path) -> None:
    """A caller whose old socket never closed (half-open TCP) resumes on a new one.
    While the old socket is healthy (a frame within resume_stale_s) the resume is
    refused and the old socket keeps the call; once it has been silent past that,
    the old one is recorded as lost first, so the bot's speech goes on on the new
    socket in a new play stream, with no model reconnect."""
    # The greeting is produced at real time (~13 s of audio), so it is still playing
    # when the resume lands however slow the machine is; the waits are generous for
    # the same reason (a loaded machine, not a slow service, is what they absorb).
    long = "Welcome to the bank. " * 40
    sc = scenario([GOODBYE], greeting=[{"say": long}])
    stale_s = 4.0  # room for a stall between the old socket's frame and the resume
    async for v in _voice(tmp_path, sc, realtime=True, service_kw={"resume_stale_s": stale_s}):
        old = await _raw(v, "half-open")
        start = {"type": "event", "name": "start", "id": "half-open-start"}
        await old.send(
            json.dumps({"type": "activities", "conversationId": "half-open", "activities": [start]})
        )
        chunks = 0
        while chunks < 5:  # the greeting is playing on the old socket
            if json.loads(await asyncio.wait_for(old.recv(), 30))["type"] == "playStream.chunk":
                chunks += 1
        new = await websockets.connect(
            v.url, additional_headers={"Authorization": f"Bearer {TOKEN}"}
        )
        # A healthy old socket (a connection.validate would be a violation in a session).
        await old.send(json.dumps({"type": "userStream.start", "conversationId": "half-open"}))
        # Its answer means the service has seen the frame: only then is the resume sent
        # (the two sockets are read concurrently, so no order holds otherwise).
        while json.loads(await asyncio.wait_for(old.recv(), 30))["type"] != ("userStream.started"):
            pass
        await new.send(json.dumps({"type": "session.resume", "conversationId": "half-open"}))
        refused = json.loads(await asyncio.wait_for(new.recv(), 30))
        assert refused == {"type": "session.error", "reason": "call is active on another socket"}
        await asyncio.sleep(stale_s + 0.2)  # the old socket goes silent: now it is stale
        await new.send(json.dumps({"type": "session.resume", "conversationId": "half-open"}))
        seen: list[str] = []
        while "playStream.chunk" not in seen:
            seen.append(json.loads(await asyncio.wait_for(new.recv(), 30))["type"])
        assert seen[0] == "session.accepted" and "playStream.start" in seen
        await new.close()
        await old.close()
        events = await v.log("half-open")
    lost = [e for e in events if isinstance(e, ev.ConnectionLost)]
    assert lost[0].side == "caller" and lost[0].reason == "replaced by session.resume"
    resumed = next(e for e in events if isinstance(e, ev.SessionResumed))
    assert resumed.seq == lost[0].seq + 2  # lost, its PlaybackStopped, then resumed
    assert not [e for e in lost if e.side == "model"]
    starts = [e for e in events if isinstance(e, ev.PlaybackStarted)]
    assert len(starts) >= 2 and starts[1].seq > resumed.seq
    assert_replays(events)


async def test_seeding_fits_the_context_window() -> None:
    from fastagent.core import history_budget, seed_pairs

    long = [("user", "x" * 1000 + str(i)) for i in range(400)]
    assert history_budget("gpt-realtime-2") == 128_000  # 32k tokens of history, ~128k chars
    big = seed_pairs(long, budget=history_budget("gpt-realtime-2"))
    small = seed_pairs(long, budget=32_000)
    size = lambda pairs: sum(len(t) for _, t in pairs)  # noqa: E731
    assert 120_000 < size(big) <= 128_000 and 28_000 < size(small) <= 32_000
    assert big[-1][1].endswith("399") and big[0][0] == "system"
