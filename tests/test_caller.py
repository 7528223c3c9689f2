"""The simulated VAIC caller against a tiny bot over real loopback WebSockets.

The bot below uses the real sans-I/O VaicProtocol and detects the caller's
speech from the audio energy, so these tests exercise both ends.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from fastagent import audio, vaic
from fastagent.testing.caller import SimulatedCaller, run_scenario
from fastagent.testing.scenario import (
    Scenario,
    ScenarioError,
    Turn,
    expected_play_streams,
    load_scenario,
    response_segments,
    scenario_from_dict,
)
from fastagent.vaic import (
    Activities,
    ProtocolViolation,
    SessionEnd,
    SessionInitiate,
    SessionResume,
    UserStreamChunk,
    UserStreamStart,
    VaicProtocol,
)

pytestmark = pytest.mark.anyio

TOKEN = "s3cret"
FAST = 0.05  # caller pace: 20x real time


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Bot:
    """A minimal bot: greets, answers each utterance or DTMF, hangs up after N answers."""

    greeting_ms: int = 400
    reply_ms: int = 400
    hangup_after: int = 2  # answers before hanging up (0: never)
    transfer: bool = False
    silent: bool = False  # accept, then do nothing
    misbehave: bool = False
    burst: bool = False  # send play audio as fast as possible (VAIC buffers it)
    speech_at_ms: list[int] = field(default_factory=list)  # caller audio clock
    seen: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    activities: list[dict[str, Any]] = field(default_factory=list)
    ends: list[str] = field(default_factory=list)
    barge_ins: int = 0
    resumed: int = 0
    conversations: set[str] = field(default_factory=set)

    async def handle(self, ws: ServerConnection) -> None:
        conn = _BotConnection(self, ws)
        try:
            async for raw in ws:
                await conn.on_frame(raw)
        except ConnectionClosed:
            pass  # the caller dropped the socket (resume tests)
        finally:
            for task in conn.playing:
                task.cancel()


class _BotConnection:
    def __init__(self, bot: Bot, ws: ServerConnection) -> None:
        self.bot = bot
        self.ws = ws
        self.proto = VaicProtocol()
        self.fmt = "raw/mulaw"
        self.speech = False
        self.quiet_ms = 0
        self.answers = 0
        self.streams = 0
        self.heard_ms = 0
        self.playing: list[asyncio.Task[None]] = []

    async def send(self, frame: bytes) -> None:
        await self.ws.send(frame, text=True)  # VAIC frames are text frames

    async def play(self, ms: int) -> None:
        self.streams += 1
        await self.send(self.proto.play_start(f"play-{self.streams}", self.fmt))
        b64 = base64.b64encode(audio.tone(20, self.fmt, freq=300)).decode()
        try:
            for _ in range(ms // 20):
                await self.send(self.proto.play_chunk(b64))
                await asyncio.sleep(0 if self.bot.burst else 0.003)
        finally:
            stop = self.proto.play_stop()
            if stop is not None:
                with contextlib.suppress(ConnectionClosed):
                    await self.send(stop)

    async def answer(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            await self.play(self.bot.reply_ms)
            self.answers += 1
            if self.bot.hangup_after and self.answers >= self.bot.hangup_after:
                if self.bot.transfer:
                    await self.send(vaic.transfer("tel:+15550123", "caller asked"))
                else:
                    await self.send(vaic.hangup("done"))

    def start(self, coro: Any) -> None:
        self.playing.append(asyncio.create_task(coro))

    async def on_frame(self, raw: str | bytes) -> None:
        bot, msg = self.bot, self.proto.receive(raw)
        if isinstance(msg, ProtocolViolation):
            bot.violations.append(msg.message)
            if msg.reply:
                await self.send(msg.reply)
            return
        if isinstance(msg, UserStreamChunk):
            if not bot.silent:
                await self.on_audio(base64.b64decode(msg.audioChunk))
            return
        bot.seen.append(type(msg).__struct_config__.tag)  # type: ignore[attr-defined]
        if isinstance(msg, SessionInitiate):
            chosen = vaic.choose_format(msg.supportedMediaFormats)
            if chosen is None:
                await self.send(
                    vaic.session_error(vaic.no_format_reason(msg.supportedMediaFormats))
                )
                return
            self.fmt = chosen.vaic_format
            bot.conversations.add(msg.conversationId)
            await self.send(self.proto.accept(chosen.vaic_format))
            if bot.misbehave:
                await self.ws.send("{nope")
                await self.ws.send('{"type":"warp.drive"}')
                await self.send(vaic.play_stream_chunk("ghost", "AAAA"))
                await self.send(vaic.play_stream_start("a", "raw/mulaw"))
                await self.send(vaic.play_stream_start("b", "raw/mulaw"))
                await self.send(vaic.play_stream_chunk("b", "A!A="))
                await self.send(vaic.hangup())
        elif isinstance(msg, SessionResume):
            if msg.conversationId not in bot.conversations:
                await self.send(vaic.session_error("conversation not found"))
                return
            bot.resumed += 1
            await self.send(self.proto.accept(self.fmt))
        elif isinstance(msg, UserStreamStart):
            await self.send(vaic.user_stream_started())
        elif isinstance(msg, Activities):
            for act in msg.activities:
                bot.activities.append(
                    {
                        "name": act.name,
                        "value": act.value,
                        "caller": act.caller,
                        "callee": act.callee,
                    }
                )
                if bot.silent:
                    continue
                if act.is_start:
                    self.start(self.play(bot.greeting_ms))
                elif act.is_dtmf:
                    self.start(self.answer())
        elif isinstance(msg, SessionEnd):
            bot.ends.append(msg.reasonCode)

    async def on_audio(self, pcm: bytes) -> None:
        self.heard_ms += 20
        if audio.is_speech(pcm, self.fmt):
            self.quiet_ms = 0
            if not self.speech:
                self.speech = True
                self.bot.speech_at_ms.append(self.heard_ms - 20)
                await self.send(vaic.speech_started())
                if self.proto.play_stream_id is not None:  # barge-in: cut the bot short
                    self.bot.barge_ins += 1
                    for task in self.playing:
                        task.cancel()
        elif self.speech:
            self.quiet_ms += 20
            if self.quiet_ms >= 200:
                self.speech = False
                await self.send(vaic.speech_stopped())
                await self.send(vaic.speech_recognition("something", 0.9))
                self.start(self.answer())


@contextlib.asynccontextmanager
async def running(bot: Bot) -> AsyncIterator[str]:
    def check_token(conn: ServerConnection, request: Request) -> Response | None:
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return conn.respond(401, "bad token\n")
        return None

    async with serve(bot.handle, "127.0.0.1", 0, process_request=check_token) as server:
        port = server.sockets[0].getsockname()[1]
        yield f"ws://127.0.0.1:{port}/audiocodes"


def scenario(**over: Any) -> Scenario:
    d: dict[str, Any] = {
        "name": "t",
        "caller": {"from": "+15550100", "to": "+15550199", "formats": ["raw/mulaw"]},
        "greeting": [{"say": "Hello"}],
        "turns": [
            {"caller": "I need help", "model": [{"say": "Sure."}]},
            {"dtmf": "12#", "model": [{"say": "Thanks."}]},
        ],
    }
    d.update(over)
    return scenario_from_dict(d)


async def test_full_call_until_the_bot_hangs_up() -> None:
    bot = Bot()
    async with running(bot) as url:
        report = await run_scenario(url, scenario(), TOKEN, timeout=10, pace=FAST)
    assert report.errors == []
    assert report.media_format == "raw/mulaw"
    assert [s.ms for s in report.play_streams] == [400, 400, 400]
    assert all(s.stopped and not s.interrupted for s in report.play_streams)
    assert report.recognitions == ["something"]
    assert report.speech == ["started", "stopped"]
    assert report.activities[0]["activityParams"] == {"hangupReason": "done"}
    assert report.ended == "bot-disconnected" and report.turns_done == 2
    assert report.messages["playStream.chunk"] == 60
    # the bot side saw a well-formed call
    assert bot.violations == []
    assert bot.seen[:3] == ["session.initiate", "activities", "userStream.start"]
    assert bot.activities[0] == {
        "name": "start",
        "value": None,
        "caller": "+15550100",
        "callee": "+15550199",
    }
    assert bot.activities[1]["name"] == "DTMF" and bot.activities[1]["value"] == "12#"
    assert bot.ends == ["bot-disconnected"]


async def test_transfer_ends_with_transferred() -> None:
    bot = Bot(hangup_after=1, transfer=True)
    async with running(bot) as url:
        report = await run_scenario(
            url, scenario(turns=[{"dtmf": "0"}]), TOKEN, timeout=10, pace=FAST
        )
    assert report.ended == "transferred" and bot.ends == ["transferred"]
    assert report.activities[0]["activityParams"]["transferTarget"] == "tel:+15550123"


async def test_barge_in_cuts_the_bot_stream() -> None:
    bot = Bot(reply_ms=3000, hangup_after=1)  # the cut answer does not count
    turns = [
        {"caller": "Tell me everything", "model": [{"say": "A very long answer " * 10}]},
        {"caller": "Stop", "barge_in_after_ms": 300, "model": [{"say": "Sure."}]},
    ]
    async with running(bot) as url:
        report = await run_scenario(url, scenario(turns=turns), TOKEN, timeout=10, pace=FAST)
    assert report.errors == []
    assert bot.barge_ins == 1
    long = report.play_streams[1]
    assert long.interrupted and long.stopped
    assert 300 <= long.ms < 3000
    assert report.play_streams[2].ms == 3000 and not report.play_streams[2].interrupted
    assert report.ended == "bot-disconnected"


async def test_caller_waits_until_buffered_bot_audio_has_played() -> None:
    # The bot sends 1 s of greeting in a burst; VAIC would play it in real time, so
    # the caller speaks only after 1 s (+ the quiet moment) of its own audio clock.
    bot = Bot(greeting_ms=1000, burst=True)
    async with running(bot) as url:
        caller = SimulatedCaller(url, TOKEN, pace=FAST, quiet_ms=300)
        report = await caller.play(scenario(), timeout=10)
    assert report.errors == []
    greeting = report.play_streams[0]
    assert bot.speech_at_ms[0] >= greeting.started_at_ms + 1000 + 300


async def test_caller_hangs_up() -> None:
    bot = Bot(hangup_after=0)
    turns = [{"silence_ms": 200}, {"hangup": True}]
    async with running(bot) as url:
        report = await run_scenario(url, scenario(turns=turns), TOKEN, timeout=10, pace=FAST)
        await asyncio.sleep(0.05)  # let the bot read session.end
    assert report.ended == "client-disconnected" and report.errors == []
    assert report.sent_ms >= 200 + 300  # quiet moment after the greeting, then the silence
    assert bot.ends == ["client-disconnected"]


async def test_no_usable_format_is_rejected() -> None:
    bot = Bot()
    sc = scenario(caller={"formats": ["raw/alaw"]})
    async with running(bot) as url:
        report = await run_scenario(url, sc, TOKEN, timeout=5, pace=FAST)
    assert report.ended == "rejected"
    assert report.session_error == "no supported media format offered (offered: raw/alaw)"


async def test_bad_token_is_reported_not_raised() -> None:
    async with running(Bot()) as url:
        report = await run_scenario(url, scenario(), "wrong", timeout=5, pace=FAST)
    assert report.ended == "not connected"
    assert "401" in report.errors[0]


async def test_unreachable_bot_is_reported() -> None:
    report = await run_scenario("ws://127.0.0.1:9/audiocodes", scenario(), timeout=5)
    assert report.ended == "not connected" and report.errors


async def test_a_silent_bot_never_hangs_the_caller() -> None:
    bot = Bot(silent=True)
    t0 = time.monotonic()
    async with running(bot) as url:
        caller = SimulatedCaller(url, TOKEN, pace=FAST, turn_timeout=0.3)
        report = await caller.play(scenario(), timeout=5)
    assert time.monotonic() - t0 < 3
    assert any("finish playing" in e for e in report.errors)
    assert any("the bot to end the call" in e for e in report.errors)
    assert report.ended == "client-disconnected"


async def test_overall_timeout() -> None:
    bot = Bot(silent=True)
    async with running(bot) as url:
        caller = SimulatedCaller(url, TOKEN, pace=FAST, turn_timeout=30)
        report = await caller.play(scenario(), timeout=1.5)
    assert report.ended == "timeout", report.errors
    assert report.errors == ["scenario timed out after 1.5 s"]


async def test_bot_misbehaviour_is_reported() -> None:
    bot = Bot(misbehave=True)
    async with running(bot) as url:
        report = await run_scenario(url, scenario(turns=[]), TOKEN, timeout=5, pace=FAST)
    text = "\n".join(report.errors)
    assert "malformed JSON" in text
    assert "unknown message type 'warp.drive'" in text
    assert "'ghost', which is not playing" in text
    assert "while 'a' is playing" in text
    assert "invalid base64" in text
    assert report.ended == "bot-disconnected"


async def test_drop_and_resume_during_a_call() -> None:
    bot = Bot(greeting_ms=2000, reply_ms=200, hangup_after=1)
    async with running(bot) as url:
        caller = SimulatedCaller(url, TOKEN, pace=FAST)
        turns = [{"silence_ms": 400}, {"caller": "Are you there", "model": [{"say": "Yes."}]}]
        play = asyncio.create_task(caller.play(scenario(turns=turns), timeout=10))
        for _ in range(400):  # drop while the greeting plays
            await asyncio.sleep(0.005)
            if caller.report.play_streams and caller.report.play_streams[0].chunks:
                break
        assert await caller.drop_and_resume()
        report = await play
    assert report.resumes == 1 and bot.resumed == 1
    assert report.errors == []
    greeting = report.play_streams[0]
    assert greeting.lost and not greeting.stopped and greeting.ms < 2000
    assert report.ended == "bot-disconnected"
    assert report.recognitions == ["something"]
    assert bot.seen.count("session.resume") == 1
    assert bot.ends == ["bot-disconnected"]


async def test_low_level_api_and_unknown_resume() -> None:
    async with running(Bot()) as url:
        caller = SimulatedCaller(url, TOKEN, formats=["raw/lpcm16_24"])
        await caller.connect()
        await caller.send_json({"type": "connection.validate"})
        await caller.initiate()
        assert await caller.recv() == {"type": "session.accepted", "mediaFormat": "raw/lpcm16_24"}
        await caller.close()

        stranger = SimulatedCaller(url, TOKEN)
        await stranger.connect()
        assert await stranger.drop_and_resume()
        msg = await stranger.recv()
        assert msg == {"type": "session.error", "reason": "conversation not found"}
        await stranger.close()


async def test_timing_hooks() -> None:
    async with running(Bot()) as url:
        caller = SimulatedCaller(url, TOKEN, pace=FAST, record_timing=True)
        report = await caller.play(scenario(), timeout=10)
    t = report.timings
    assert t is not None
    assert len(t.chunk_sent) == report.sent_chunks > 0
    assert len(t.play_received) == report.messages["playStream.chunk"]
    assert t.play_received[0][:2] == (0, 0)
    assert all(a <= b for a, b in zip(t.chunk_sent, t.chunk_sent[1:], strict=False))


async def test_pace_is_respected() -> None:
    bot = Bot(hangup_after=0)
    turns = [{"silence_ms": 400}, {"hangup": True}]
    async with running(bot) as url:
        t0 = time.monotonic()
        caller = SimulatedCaller(url, TOKEN, pace=0.5)
        report = await caller.play(scenario(greeting=[], turns=turns), timeout=10)
        elapsed = time.monotonic() - t0
    # 300 ms quiet + 400 ms silence of audio at half real time: at least 0.35 s
    assert report.sent_ms >= 700 and elapsed >= 0.35
    assert json.dumps(report.messages)


# ------------------------------------------------------------------ scenarios


def test_docs_example_scenario_loads(tmp_path: Path) -> None:
    doc = (Path(__file__).parent.parent / "docs" / "scenarios.md").read_text()
    example = doc.split("```json\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "example.json"
    path.write_text(example)
    sc = load_scenario(path)
    assert sc.name == "banking-card-replacement" and sc.agent == "banking"
    assert sc.caller.from_ == "+15550100" and sc.caller.formats == ("raw/mulaw",)
    assert [t.kind for t in sc.turns] == ["caller", "dtmf", "caller", "silence", "hangup"]
    steps = sc.turns[0].model
    assert [s.kind for s in steps] == ["say", "call", "say"]
    assert expected_play_streams(steps) == 2
    assert sc.turns[2].barge_in_after_ms == 400
    assert sc.turns[0].speech_ms == 600  # 10 words x 60 ms
    assert Turn(caller="Hi").speech_ms == 400


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("{", "not valid JSON"),
        ("[]", "a scenario is a JSON object"),
        ('{"turns": []}', "missing required field `name`"),
        ('{"name": "x", "turns": [{"caler": "hi"}]}', "unknown field `caler`"),
        ('{"name": "x", "turns": [{"caller": "hi", "dtmf": "1"}]}', "exactly one of"),
        ('{"name": "x", "turns": [{}]}', "got none"),
        ('{"name": "x", "turns": [{"hangup": true}, {"dtmf": "1"}]}', "must be the last"),
        ('{"name": "x", "turns": [{"dtmf": "12x"}]}', "'dtmf' must be"),
        ('{"name": "x", "turns": [{"silence_ms": 0}]}', "must be > 0"),
        ('{"name": "x", "turns": [{"dtmf": "1", "barge_in_after_ms": 5}]}', "needs a 'caller'"),
        ('{"name": "x", "turns": [{"silence_ms": 5, "model": [{"say": "a"}]}]}', "only 'caller'"),
        ('{"name": "x", "greeting": [{"say": "a", "call": "f"}]}', "greeting step 1"),
        ('{"name": "x", "greeting": [{"say": "a", "args": {"k": 1}}]}', "belong to a 'call'"),
        ('{"name": "x", "caller": {"formats": []}}', "caller.formats is empty"),
        ('{"name": "x", "turns": [{"caller": 5}]}', "Expected `str | null`, got `int`"),
    ],
)
def test_bad_scenario_files(tmp_path: Path, content: str, needle: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    message = str(info.value)
    assert message.startswith(str(path)) and needle in message and "\n" not in message


def test_missing_scenario_file(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="cannot read"):
        load_scenario(tmp_path / "nope.json")


def test_response_segments() -> None:
    steps = scenario_from_dict(
        {"name": "x", "greeting": [{"say": "a"}, {"call": "f", "expect_output": "ok"}]}
    ).greeting
    assert [len(seg) for seg in response_segments(steps)] == [2, 0]
    assert expected_play_streams(steps) == 1
    assert steps[1].expect_output == "ok" and steps[1].args == {}
