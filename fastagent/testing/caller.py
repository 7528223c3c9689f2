"""A simulated AudioCodes VoiceAI Connect caller: a real WebSocket client.

It dials the bot like VAIC does (``Authorization: Bearer``), initiates a session,
streams 20 ms audio chunks continuously (a tone while "speaking", silence
otherwise) and reads the bot's frames at the same time.  :meth:`SimulatedCaller.play`
runs a :class:`~fastagent.testing.scenario.Scenario`; the low-level methods
(``connect``, ``send_json``, ``recv``, ``initiate``, ``drop_and_resume``) serve
protocol tests.

Every wait has a timeout and the whole scenario has one too: a misbehaving bot
shows up as ``errors`` in the :class:`CallerReport`, never as a hang.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from fastagent import audio
from fastagent.testing.scenario import Scenario, expected_play_streams
from fastagent.vaic import is_base64

CHUNK_MS = 20
DEFAULT_PACE = 0.25  # wall seconds per second of audio: 4x real time


class PlayStream(msgspec.Struct, kw_only=True):
    """One bot play stream as the caller received it."""

    stream_id: str
    media_format: str
    chunks: int = 0
    nbytes: int = 0
    stopped: bool = False
    interrupted: bool = False  # the caller barged in while it played
    lost: bool = False  # the socket dropped while it played (no playStream.stop)
    started_at_ms: int = 0  # caller audio clock (ms of audio sent) at playStream.start
    # Playout at the caller (VAIC plays streams back to back, in real time): each
    # chunk's (start, duration) on the playout clock (ms, see SimulatedCaller.clock_ms),
    # and when a barge-in stopped playback (None: never).
    segments: list[tuple[float, float]] = msgspec.field(default_factory=list)
    cut_at_ms: float | None = None

    @property
    def ms(self) -> int:
        try:
            return audio.duration_ms(self.nbytes, self.media_format)
        except audio.AudioFormatError:
            return 0

    def heard_ms_at(self, clock_ms: float) -> float:
        """How much of this stream the caller had heard at ``clock_ms`` (playout clock)."""
        if self.cut_at_ms is not None:
            clock_ms = min(clock_ms, self.cut_at_ms)
        return sum(max(0.0, min(clock_ms - start, dur)) for start, dur in self.segments)

    @property
    def heard_ms(self) -> float:
        """What the caller heard of this stream in the end (all of it, unless cut)."""
        return self.heard_ms_at(float("inf"))


class Timings(msgspec.Struct, kw_only=True):
    """Optional latency hooks (``perf_counter`` seconds)."""

    chunk_sent: list[float] = msgspec.field(default_factory=list)  # by caller chunk index
    play_received: list[tuple[int, int, float]] = msgspec.field(
        default_factory=list
    )  # (stream index, chunk index, time)


class CallerReport(msgspec.Struct, kw_only=True):
    conversation_id: str
    media_format: str | None = None
    messages: dict[str, int] = msgspec.field(default_factory=dict)
    play_streams: list[PlayStream] = msgspec.field(default_factory=list)
    hypotheses: list[str] = msgspec.field(default_factory=list)
    recognitions: list[str] = msgspec.field(default_factory=list)
    speech: list[str] = msgspec.field(default_factory=list)  # started / stopped / committed
    activities: list[dict[str, Any]] = msgspec.field(default_factory=list)
    errors: list[str] = msgspec.field(default_factory=list)
    session_error: str | None = None
    ended: str = ""  # reasonCode the caller sent, or rejected / closed / timeout
    sent_chunks: int = 0
    sent_ms: int = 0
    turns_done: int = 0
    resumes: int = 0
    timings: Timings | None = None

    @property
    def played_ms(self) -> int:
        return sum(s.ms for s in self.play_streams)


class _CallOver(Exception):
    """The call ended (bot hangup/transfer, socket closed, session.error)."""


_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode


class SimulatedCaller:
    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        conversation_id: str | None = None,
        formats: Sequence[str] = ("raw/mulaw",),
        pace: float = DEFAULT_PACE,
        realtime: bool = False,
        turn_timeout: float = 10.0,
        quiet_ms: int = 300,
        record_timing: bool = False,
        on_drop: Callable[[], Awaitable[str | None]] | None = None,
    ) -> None:
        self.url = url
        # Awaited when the socket closes while the call is not over (the bot died, say):
        # the URL to send session.resume to, as VAIC does after a drop, or None to give
        # up.  Audio the caller would have sent meanwhile is lost, as on a real line.
        self.on_drop = on_drop
        self.token = token
        self.conversation_id = conversation_id or str(uuid.uuid4())
        self.formats = tuple(formats)
        self.pace = 1.0 if realtime else max(0.0, pace)
        self.turn_timeout = turn_timeout
        self.quiet_ms = quiet_ms
        self.ws: ClientConnection | None = None
        self.report = CallerReport(
            conversation_id=self.conversation_id,
            timings=Timings() if record_timing else None,
        )
        self._changed = asyncio.Event()
        self._accepted = 0
        self._user_stream_started = False
        self._active: PlayStream | None = None
        self._stops = 0
        self._played_until = 0.0  # playout clock (ms) when queued bot audio ends
        self._t0: float | None = None  # loop time the playout clock starts from
        self._bot_end: str | None = None  # session.end reasonCode the bot's activity implies
        self._closed = False
        self._resuming = False
        self._reconnected = asyncio.Event()
        self._speech_left_ms = 0
        self._tasks: list[asyncio.Task[None]] = []
        # Sees each bot frame as (type, message) and each caller turn as
        # ("turn", {"kind", "caller" | "dtmf" | "silence_ms"}) as it starts: for live views.
        self.observer: Callable[[str, dict[str, Any]], None] | None = None

    # ------------------------------------------------------------ low level

    async def connect(self, url: str | None = None) -> ClientConnection:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        self.ws = await connect(
            url or self.url,
            additional_headers=headers,
            open_timeout=self.turn_timeout,
            close_timeout=2,
            compression=None,
            proxy=None,  # loopback only: never route through an environment proxy
        )
        return self.ws

    async def send_json(self, obj: Any) -> None:
        """Send one text frame (VAIC sends JSON text frames only)."""
        assert self.ws is not None, "connect() first"
        await self.ws.send(_encode(obj).decode())

    async def recv(self, timeout: float | None = None) -> dict[str, Any]:
        """Next frame as a dict (only when :meth:`play` is not reading)."""
        assert self.ws is not None, "connect() first"
        async with asyncio.timeout(timeout or self.turn_timeout):
            raw = await self.ws.recv()
        msg = _decode(raw)
        if not isinstance(msg, dict):
            raise ValueError(f"bot sent a JSON {type(msg).__name__}, not an object")
        return msg

    async def initiate(self, bot_name: str = "fastagent", caller: str = "+15550100") -> None:
        await self.send_json(
            {
                "type": "session.initiate",
                "conversationId": self.conversation_id,
                "botName": bot_name,
                "caller": caller,
                "expectAudioMessages": True,
                "supportedMediaFormats": list(self.formats),
            }
        )

    async def close(self) -> None:
        ws, self.ws = self.ws, None
        if ws is not None:
            await ws.close()

    async def hang_up(self, reason: str = "caller hung up") -> None:
        """End the call now as a caller hanging up does (``session.end``, then close)."""
        if self.ws is not None and not self.report.ended:
            await self._end("client-disconnected", reason)

    def clock_ms(self) -> float:
        """The playout clock: ms of real (paced) time since the call's audio began.

        VAIC plays bot audio in real time whatever its own sending does, so playout
        runs on the wall clock scaled by the pace, not on the count of chunks sent
        (which lags when the machine is busy).
        """
        if self._t0 is None or not self.pace:
            return float(self.report.sent_ms)
        return (asyncio.get_running_loop().time() - self._t0) / self.pace * 1000

    async def drop_and_resume(self, url: str | None = None) -> bool:
        """Lose the socket abruptly (no close handshake), dial again and send
        ``session.resume`` with the same conversationId.

        During :meth:`play` streaming goes on on the new socket and this returns
        whether the bot answered ``session.accepted`` (False: rejected, call over
        or timed out, with the reason in ``report.errors``).  Outside play() it
        returns True once the resume is sent; read the answer with :meth:`recv`.
        Connection failures raise (OSError, websockets.InvalidHandshake)."""
        old = self.ws
        self._resuming = True
        self._reconnected.clear()
        accepted_before = self._accepted
        if self._active is not None:  # a stream in flight dies with its socket
            self._active.lost = True
            self._active = None
            self._stops += 1
        self._cut_playout()  # what the old socket had queued is not played
        try:
            if old is not None:
                old.transport.abort()
            await self.connect(url)
            await self.send_json({"type": "session.resume", "conversationId": self.conversation_id})
            self.report.resumes += 1
        finally:
            self._resuming = False
            self._reconnected.set()
        if not self._tasks:
            return True
        try:  # play() is reading: wait for its session.accepted
            await self._wait_for(lambda: self._accepted > accepted_before, "session.accepted")
        except TimeoutError as exc:
            self.report.errors.append(f"resume: timed out waiting for {exc}")
            return False
        except _CallOver:
            self.report.errors.append(f"resume refused: {self.report.session_error or 'closed'}")
            return False
        return True

    def _call_live(self) -> bool:
        r = self.report
        return self._accepted > 0 and self._bot_end is None and not r.ended and not r.session_error

    async def _auto_resume(self) -> None:
        """The socket dropped mid-call: ask ``on_drop`` where to, then resume there."""
        assert self.on_drop is not None
        try:
            url = await self.on_drop()
            if url is None:
                self.report.errors.append("socket dropped; not resumed")
                return
            await self.drop_and_resume(url)
        except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as exc:
            self.report.errors.append(f"resume failed: {type(exc).__name__}: {exc}")
        finally:
            self._resuming = False
            self._reconnected.set()

    # ------------------------------------------------------------- scenario

    async def play(self, scenario: Scenario, timeout: float = 60.0) -> CallerReport:
        """Run the caller side of ``scenario``; always returns a report."""
        r = self.report
        try:
            async with asyncio.timeout(timeout):
                await self._play(scenario)
        except TimeoutError:
            r.errors.append(f"scenario timed out after {timeout:g} s")
            r.ended = r.ended or "timeout"
        except (OSError, InvalidHandshake, InvalidURI) as exc:
            r.errors.append(f"cannot connect to {self.url}: {exc}")
            r.ended = r.ended or "not connected"
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self._tasks.clear()
            try:
                await self.close()
            except Exception:  # closing a dead socket: nothing worth reporting
                pass
        return r

    async def _play(self, scenario: Scenario) -> None:
        r = self.report
        self.formats = scenario.caller.formats or self.formats
        if self.ws is None:
            await self.connect()
        self._tasks.append(asyncio.create_task(self._reader()))
        await self.initiate(caller=scenario.caller.from_)
        try:
            await self._wait_for(lambda: self._accepted > 0, "session.accepted")
        except _CallOver:
            r.ended = r.ended or ("rejected" if r.session_error is not None else "closed")
            return
        fmt = r.media_format or ""
        if fmt not in audio.BYTES_PER_MS:
            r.errors.append(f"bot accepted unusable media format {fmt!r}")
            await self._end("client-disconnected", "unusable media format")
            return
        try:
            await self._start_call(scenario)
            self._tasks.append(asyncio.create_task(self._pump(fmt)))
            await self._run_turns(scenario)
        except _CallOver:
            pass
        await self._finish()

    async def _start_call(self, scenario: Scenario) -> None:
        await self.send_json(
            {
                "type": "activities",
                "conversationId": self.conversation_id,
                "activities": [
                    {
                        "type": "event",
                        "name": "start",
                        "id": f"{self.conversation_id}-start",
                        "language": "en-US",
                        "parameters": {
                            "vaigConversationId": self.conversation_id,
                            "caller": scenario.caller.from_,
                            "callee": scenario.caller.to,
                        },
                    }
                ],
            }
        )
        await self.send_json({"type": "userStream.start", "conversationId": self.conversation_id})
        try:
            await self._wait_for(lambda: self._user_stream_started, "userStream.started")
        except TimeoutError as exc:
            self.report.errors.append(str(exc))

    async def _run_turns(self, scenario: Scenario) -> None:
        expected = expected_play_streams(scenario.greeting)
        reply = 0  # index of the first play stream of the bot's latest reply
        for i, turn in enumerate(scenario.turns):
            kind = turn.kind
            try:
                if kind == "hangup":
                    await self._end("client-disconnected", "caller hung up")
                    self.report.turns_done += 1
                    return
                if turn.barge_in_after_ms is not None:
                    await self._wait_barge_in(turn.barge_in_after_ms, expected, reply)
                    expected = len(self.report.play_streams)  # the rest was cut off
                else:
                    await self._wait_quiet(expected)
                if self.observer is not None:
                    self.observer("turn", {"kind": kind, **msgspec.to_builtins(turn)})
                if kind == "caller":
                    self._speech_left_ms += turn.speech_ms
                    await self._wait_for(lambda: self._speech_left_ms <= 0, "speech sent")
                elif kind == "silence":
                    until = self.report.sent_ms + (turn.silence_ms or 0)
                    await self._wait_for(lambda u=until: self.report.sent_ms >= u, "silence sent")
                elif kind == "dtmf":
                    await self._send_dtmf(turn.dtmf or "", i)
                elif kind == "drop" and not await self.drop_and_resume():
                    return  # refused or timed out: the reason is in report.errors
            except TimeoutError as exc:
                self.report.errors.append(f"turn {i + 1} ({kind}): {exc}")
            reply = expected
            expected += expected_play_streams(turn.model)
            self.report.turns_done += 1

    async def _finish(self) -> None:
        """After the script: wait for the bot to end the call, then end it."""
        r = self.report
        if r.ended:
            return
        try:
            await self._wait_for(lambda: False, "the bot to end the call (hangup or transfer)")
        except TimeoutError as exc:
            r.errors.append(f"timed out waiting for {exc}")
            await self._end("client-disconnected", "caller gave up")
        except _CallOver:
            if self._bot_end is not None:
                reason = "transferred" if self._bot_end == "transferred" else "bot ended the call"
                await self._end(self._bot_end, reason)
            elif r.session_error is not None:
                r.ended = "rejected"
            else:
                r.errors.append("bot closed the socket without a hangup activity")
                r.ended = "closed"

    async def _end(self, reason_code: str, reason: str) -> None:
        self.report.ended = reason_code
        try:
            await self.send_json(
                {
                    "type": "session.end",
                    "conversationId": self.conversation_id,
                    "reasonCode": reason_code,
                    "reason": reason,
                }
            )
        except ConnectionClosed:
            pass
        for task in self._tasks:
            task.cancel()
        await self.close()

    async def _send_dtmf(self, digits: str, turn: int) -> None:
        await self.send_json(
            {
                "type": "activities",
                "conversationId": self.conversation_id,
                "activities": [
                    {"type": "event", "name": "DTMF", "value": digits, "id": f"dtmf-{turn}"}
                ],
            }
        )

    # ---------------------------------------------------------------- waits

    async def _wait_for(self, pred: Callable[[], bool], what: str) -> None:
        """Wait until ``pred()``; TimeoutError(what) after turn_timeout; _CallOver
        as soon as the call is over."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.turn_timeout
        while True:
            if pred():
                return
            if self._bot_end is not None or self._closed or self.report.session_error is not None:
                raise _CallOver
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError(what)
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await self._changed.wait()

    def _idle(self, expected: int) -> bool:
        return self._active is None and self._stops >= expected

    async def _wait_quiet(self, expected: int) -> None:
        """The bot played what it should, the caller heard it (real-time playback on
        the caller's audio clock) and ``quiet_ms`` of silence followed."""
        while True:
            await self._wait_for(lambda: self._idle(expected), "the bot to finish playing")
            # The quiet moment is counted in audio the caller sent (which lags the
            # playout clock on a busy machine): never shorter than it should be.
            mark = max(self.clock_ms(), self._played_until) + self.quiet_ms
            streams = len(self.report.play_streams)
            await self._wait_for(
                lambda m=mark, n=streams: (
                    self.report.sent_ms >= m or len(self.report.play_streams) != n
                ),
                "a quiet moment",
            )
            if len(self.report.play_streams) == streams:
                return

    async def _wait_barge_in(self, after_ms: int, expected: int, first: int) -> None:
        """Start speaking once ``after_ms`` of the bot's reply have been *heard*: its
        play streams from index ``first`` on, played back to back (a spoken preamble
        and then the answer are two streams of one reply)."""

        def heard() -> float:
            now = self.clock_ms()
            return sum(s.heard_ms_at(now) for s in self.report.play_streams[first:])

        def ready() -> bool:
            if len(self.report.play_streams) > first and heard() >= after_ms:
                return True
            return self._idle(expected) and self.clock_ms() >= self._played_until

        await self._wait_for(ready, f"{after_ms} ms of bot audio to barge in on")
        now = self.clock_ms()
        playing = [
            s
            for s in self.report.play_streams[first:]
            if s is self._active or s.heard_ms_at(now) < s.ms
        ]
        if playing:
            playing[0].interrupted = True
        else:
            self.report.errors.append(
                f"barge-in: the bot's reply ended before {after_ms} ms; spoke after it"
            )

    # ---------------------------------------------------------------- tasks

    async def _pump(self, fmt: str) -> None:
        """Stream 20 ms chunks forever: tone while speech is owed, else silence."""
        cid = _encode(self.conversation_id).decode()
        head = '{"type":"userStream.chunk","conversationId":' + cid + ',"audioChunk":"'

        def frame(pcm: bytes) -> str:
            return head + base64.b64encode(pcm).decode("ascii") + '"}'

        quiet = frame(audio.silence(CHUNK_MS, fmt))
        # 440 Hz repeats exactly every 100 ms: five chunks make a seamless loop.
        per = audio.sample_rate(fmt) * CHUNK_MS // 1000
        tones = [frame(audio.tone(CHUNK_MS, fmt, offset_samples=i * per)) for i in range(5)]
        r = self.report
        timings = r.timings
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        if self._t0 is None:
            self._t0 = t0 - self.report.sent_ms / 1000 * self.pace
        step = CHUNK_MS / 1000 * self.pace
        k = 0
        while True:
            if self._speech_left_ms > 0:
                data = tones[k % 5]
                self._speech_left_ms -= CHUNK_MS
            else:
                data = quiet
            ws = self.ws
            if ws is None:
                return
            try:
                await ws.send(data)
            except ConnectionClosed:
                if self.on_drop is not None:
                    # The reader notices the drop too and decides whether to resume.
                    while self.ws is ws and not self._closed and not self._resuming:
                        await asyncio.sleep(0.01)
                if self._resuming:
                    await self._reconnected.wait()
                if self.ws is not None and ws is not self.ws:
                    if step and self.on_drop is not None:
                        # What the caller said while the line was down is lost: the
                        # audio clock goes on (turn waits count audio sent).
                        k = max(k, int((loop.time() - t0) / step))
                    continue  # resumed on a new socket: this chunk is lost, as on a real drop
                return
            if timings is not None:
                timings.chunk_sent.append(time.perf_counter())
            k += 1
            r.sent_chunks = k
            r.sent_ms = k * CHUNK_MS
            self._changed.set()
            if step:
                delay = t0 + k * step - loop.time()
                await asyncio.sleep(delay if delay > 0 else 0)
            else:
                await asyncio.sleep(0)

    async def _reader(self) -> None:
        while True:
            ws = self.ws
            if ws is None:
                break
            try:
                async for raw in ws:
                    self._handle(raw)
                    self._changed.set()
            except ConnectionClosed:
                pass
            if not self._resuming and self.on_drop is not None and self._call_live():
                if self.ws is ws:  # (not already resumed by a drop turn)
                    self._resuming = True
                    self._reconnected.clear()
                    self._tasks.append(asyncio.create_task(self._auto_resume()))
            if self._resuming:
                await self._reconnected.wait()
            if self.ws is not None and ws is not self.ws:
                continue  # resumed: read the new socket
            break
        self._closed = True
        self._changed.set()

    def _handle(self, raw: str | bytes) -> None:
        r = self.report
        if isinstance(raw, bytes):
            r.errors.append("bot sent a binary frame (VAIC expects text)")
        try:
            msg = _decode(raw)
        except msgspec.DecodeError as exc:
            r.errors.append(f"bot sent malformed JSON: {exc}")
            return
        if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
            r.errors.append("bot sent a frame without a type")
            return
        kind: str = msg["type"]
        r.messages[kind] = r.messages.get(kind, 0) + 1
        if self.observer is not None:
            self.observer(kind, msg)
        handler = _HANDLERS.get(kind)
        if handler is None:
            r.errors.append(f"bot sent unknown message type {kind!r}")
            return
        try:
            handler(self, msg)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            r.errors.append(f"bot sent an invalid {kind}: {exc!r}")

    # ------------------------------------------------------ message handlers

    def _on_accepted(self, msg: dict[str, Any]) -> None:
        fmt = msg.get("mediaFormat")
        if fmt is not None:
            if fmt not in self.formats:
                self.report.errors.append(f"session.accepted with unoffered format {fmt!r}")
            self.report.media_format = fmt
        elif self.report.media_format is None:
            self.report.errors.append("session.accepted without mediaFormat")
        self._accepted += 1

    def _on_session_error(self, msg: dict[str, Any]) -> None:
        self.report.session_error = str(msg.get("reason", ""))

    def _on_user_stream_started(self, msg: dict[str, Any]) -> None:
        self._user_stream_started = True

    def _on_user_stream_stopped(self, msg: dict[str, Any]) -> None:
        self._user_stream_started = False

    def _on_speech(self, msg: dict[str, Any]) -> None:
        kind = msg["type"].rsplit(".", 1)[1]
        self.report.speech.append(kind)
        if kind == "started":
            self._cut_playout()  # VAIC's barge-in: playback stops where it is

    def _cut_playout(self) -> None:
        now = self.clock_ms()
        if self._played_until <= now:
            return
        for s in self.report.play_streams:
            if s.cut_at_ms is None and s.segments and s.segments[-1][0] + s.segments[-1][1] > now:
                s.cut_at_ms = now
        self._played_until = now

    def _on_hypothesis(self, msg: dict[str, Any]) -> None:
        self.report.hypotheses.append(str(msg["alternatives"][0]["text"]))

    def _on_recognition(self, msg: dict[str, Any]) -> None:
        self.report.recognitions.append(str(msg["alternatives"][0]["text"]))

    def _on_play_start(self, msg: dict[str, Any]) -> None:
        r = self.report
        if self._active is not None:
            r.errors.append(
                f"playStream.start {msg.get('streamId')!r} while "
                f"{self._active.stream_id!r} is playing"
            )
            self._active.stopped = True
            self._stops += 1
        fmt = msg["mediaFormat"]
        if fmt not in audio.BYTES_PER_MS:
            r.errors.append(f"playStream.start with unknown mediaFormat {fmt!r}")
        stream = PlayStream(
            stream_id=str(msg["streamId"]), media_format=str(fmt), started_at_ms=r.sent_ms
        )
        r.play_streams.append(stream)
        self._active = stream

    def _on_play_chunk(self, msg: dict[str, Any]) -> None:
        s = self._active
        sid = msg["streamId"]
        if s is None or s.stream_id != sid:
            self.report.errors.append(f"playStream.chunk for {sid!r}, which is not playing")
            return
        b64 = msg["audioChunk"]
        if not isinstance(b64, str) or not is_base64(b64):
            self.report.errors.append(f"playStream.chunk with invalid base64 in {sid!r}")
            return
        nbytes = audio.b64_decoded_len(b64)
        s.chunks += 1
        s.nbytes += nbytes
        # VAIC plays what it receives in real time, one chunk after another: on the
        # playout clock, a chunk starts at the later of its arrival and the queue end.
        per_ms = audio.BYTES_PER_MS.get(s.media_format)
        if per_ms:
            start = max(self._played_until, self.clock_ms())
            s.segments.append((start, nbytes / per_ms))
            self._played_until = start + nbytes / per_ms
        timings = self.report.timings
        if timings is not None:
            timings.play_received.append(
                (len(self.report.play_streams) - 1, s.chunks - 1, time.perf_counter())
            )

    def _on_play_stop(self, msg: dict[str, Any]) -> None:
        s = self._active
        sid = msg["streamId"]
        if s is None or s.stream_id != sid:
            self.report.errors.append(f"playStream.stop for {sid!r}, which is not playing")
            return
        s.stopped = True
        self._active = None
        self._stops += 1

    def _on_activities(self, msg: dict[str, Any]) -> None:
        for act in msg["activities"]:
            self.report.activities.append(act)
            name = act.get("name")
            if name == "hangup":
                self._bot_end = "bot-disconnected"
            elif name == "transfer":
                self._bot_end = "transferred"


_HANDLERS: dict[str, Callable[[SimulatedCaller, dict[str, Any]], None]] = {
    "session.accepted": SimulatedCaller._on_accepted,
    "session.error": SimulatedCaller._on_session_error,
    "connection.validated": lambda c, m: None,
    "userStream.started": SimulatedCaller._on_user_stream_started,
    "userStream.stopped": SimulatedCaller._on_user_stream_stopped,
    "userStream.speech.started": SimulatedCaller._on_speech,
    "userStream.speech.stopped": SimulatedCaller._on_speech,
    "userStream.speech.committed": SimulatedCaller._on_speech,
    "userStream.speech.hypothesis": SimulatedCaller._on_hypothesis,
    "userStream.speech.recognition": SimulatedCaller._on_recognition,
    "playStream.start": SimulatedCaller._on_play_start,
    "playStream.chunk": SimulatedCaller._on_play_chunk,
    "playStream.stop": SimulatedCaller._on_play_stop,
    "activities": SimulatedCaller._on_activities,
}


async def run_scenario(
    url: str, scenario: Scenario, token: str | None = None, timeout: float = 60.0, **kw: Any
) -> CallerReport:
    """Dial ``url`` and play ``scenario``; convenience for tests and the demo."""
    caller = SimulatedCaller(url, token, formats=scenario.caller.formats, **kw)
    return await caller.play(scenario, timeout=timeout)


def truncation_errors(
    events: Sequence[Any], report: CallerReport, tolerance_ms: int = 40, speed: float = 1.0
) -> list[str]:
    """Check the engine's barge-in decisions against what the simulated caller heard.

    Every ``TruncateRequested`` must cut its item within ``tolerance_ms`` of real
    time of what the caller heard of that item's play stream (a caller playing at
    ``speed`` 4 hears 4 ms of audio per ms); a stream the caller heard less than
    all of (by more than the tolerance) must have been truncated or deleted; an
    ``ItemDeleted`` item must not have been heard (beyond the tolerance).  Returns
    one line per problem (empty: the engine's playout clock agreed with the caller).
    """
    from fastagent import events as ev

    tolerance_ms = int(tolerance_ms * speed)

    stream_of = {e.item_id: e.stream_id for e in events if isinstance(e, ev.PlaybackStarted)}
    heard = {s.stream_id: s.heard_ms for s in report.play_streams}
    problems: list[str] = []
    cut: set[str] = set()
    for e in events:
        if isinstance(e, ev.TruncateRequested | ev.ItemDeleted):
            sid = stream_of.get(e.item_id, "")
            cut.add(sid)
            said = e.audio_end_ms if isinstance(e, ev.TruncateRequested) else 0
            got = heard.get(sid)
            if got is None:
                problems.append(f"{type(e).__name__} {e.item_id}: the caller got no stream {sid!r}")
            elif abs(got - said) > tolerance_ms:
                problems.append(
                    f"{type(e).__name__} {e.item_id} at {said} ms, "
                    f"but the caller heard {got:.0f} ms of {sid}"
                )
    for s in report.play_streams:
        if s.stream_id not in cut and s.ms - s.heard_ms > tolerance_ms:
            problems.append(
                f"{s.stream_id}: the caller heard {s.heard_ms:.0f} of {s.ms} ms, nothing truncated"
            )
    return problems
