"""The caller receives only frames the engine decided, each one well-formed JSON
(issue 11, point 1), and a recognition only once the log holds it (point 4).

Over real loopback sockets: a simulated VAIC caller records every frame it
receives during a whole call (greeting, a barge-in, DTMF, a dropped socket and
its resume, the bot's hang-up); each non-audio frame must be the translation of a
decision in the call's log, in the log's order.  The exceptions are the two kinds
of frame the protocol sends on its own before a session exists (the handshake:
``connection.validated``, and the ``session.error`` refusing a session) and
``playStream.chunk`` audio, which is recorded as ``BotAudio`` boundaries.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from test_service import GOODBYE, TOKEN, _voice, assert_replays, scenario

from fastagent import events as ev
from fastagent.service import CallSession
from fastagent.store import StoreError
from fastagent.testing.caller import SimulatedCaller


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class RecordingCaller(SimulatedCaller):
    """A simulated VAIC caller that keeps every frame it receives, as received."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.frames: list[str | bytes] = []

    def _handle(self, raw: str | bytes) -> None:
        self.frames.append(raw)
        super()._handle(raw)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    assert len(keys) == len(set(keys)), f"duplicate key in {keys}"
    return dict(pairs)


def strict_json(raw: str | bytes) -> dict[str, Any]:
    """The frame as a JSON object: a text frame, valid UTF-8, one JSON value with no
    duplicate key (a last-key-wins parser must read what the first key said)."""
    assert isinstance(raw, str), f"binary frame {raw!r:.80}"
    msg = json.loads(raw, object_pairs_hook=_no_duplicates)
    assert isinstance(msg, dict) and isinstance(msg.get("type"), str), raw[:200]
    return msg


def _activity(name: str, **params: Any) -> dict[str, Any]:
    act: dict[str, Any] = {"type": "event", "name": name, **params}
    return {"type": "activities", "activities": [act]}


def frame_of(d: ev.Decision) -> dict[str, Any] | None:
    """The VAIC frame a decision sends the caller (None: it goes to the model, a
    tool or nowhere), written out here from docs/audiocodes.md, not borrowed from
    the translation under test."""
    match d:
        case ev.SessionAccepted():
            return {"type": "session.accepted", "mediaFormat": d.media_format}
        case ev.SessionRejected():
            return {"type": "session.error", "reason": d.reason}
        case ev.PlaybackStarted():
            return {"type": "playStream.start", "streamId": d.stream_id, "mediaFormat": d.fmt}
        case ev.PlaybackStopped():
            return {"type": "playStream.stop", "streamId": d.stream_id}
        case ev.CallerNotified() if d.message_type == "userStream.speech.recognition":
            return {"type": d.message_type, "alternatives": [{"text": d.text}]}
        case ev.CallerNotified():
            return {"type": d.message_type} | (
                {"participant": d.participant} if d.participant else {}
            )
        case ev.HangupRequested():
            return _activity("hangup", activityParams={"hangupReason": d.reason or "done"})
        case ev.TransferRequested():
            params = {"transferTarget": d.target} | (
                {"handoverReason": d.reason} if d.reason else {}
            )
            return _activity("transfer", activityParams=params)
        case ev.SessionParamsSent():
            return _activity("config", sessionParams=d.params)
        case ev.DtmfSent():
            return _activity("sendDtmf", activityParams={"dtmfDigits": d.digits})
        case ev.CallRecordingPaused():
            return _activity("pauseCallRecording")
        case ev.CallRecordingResumed():
            return _activity("resumeCallRecording")
    return None


# Call-control activities go out once the caller has heard the goodbye (a timer):
# later decisions' frames may overtake them.
_AFTER_PLAYBACK = ("hangup", "transfer")
# The play stream's framing runs ahead of the log (CallSession.execute): it may
# overtake a frame still waiting for the log to be durable.  Each lane keeps the
# log's order.
_AHEAD_OF_LOG = ("playStream.start", "playStream.stop")


def check_frames(frames: list[str | bytes], events: list[ev.Event]) -> list[str]:
    """Match every received frame to the decision it translates; returns the
    non-audio frame types in the order received.  Fails on a frame no decision
    explains, or one that overtakes a later decision's frame of its lane (the play
    stream's framing, which may run ahead of the log; everything else, which waits
    for it)."""
    expected = [
        (d.seq, f) for d in events if isinstance(d, ev.Decision) and (f := frame_of(d)) is not None
    ]
    matched = [False] * len(expected)
    at = {False: 0, True: 0}  # each lane's position in `expected`
    session = False
    stream: str | None = None
    seen: list[str] = []
    for raw in frames:
        msg = strict_json(raw)
        kind = msg["type"]
        if kind == "playStream.chunk":  # audio: its boundary is a BotAudio input
            assert msg["streamId"] == stream, f"chunk of {msg['streamId']}, not {stream}"
            continue
        if not session and kind in ("connection.validated", "session.error"):
            continue  # the protocol's own handshake, before any call or log exists
        session = session or kind == "session.accepted"
        seen.append(kind)
        deferred = kind == "activities" and msg["activities"][0]["name"] in _AFTER_PLAYBACK
        lane = kind in _AHEAD_OF_LOG
        start = 0 if deferred else at[lane]
        for j in range(start, len(expected)):
            if not matched[j] and expected[j][1] == msg:
                matched[j] = True
                if not deferred:
                    at[lane] = j + 1
                break
        else:
            pytest.fail(
                f"frame {raw!r:.200} is no decision's, or comes out of order "
                f"(next decisions: {[f for _, f in expected[at[lane] : at[lane] + 5]]})"
            )
        if kind == "playStream.start":
            stream = msg["streamId"]
        elif kind == "playStream.stop":
            stream = None
    return seen


@pytest.mark.anyio
async def test_every_frame_the_caller_receives_is_a_decision_of_the_log_in_order(
    tmp_path: Path,
) -> None:
    sc = scenario(
        [
            {
                "caller": "What are your opening hours?",
                "model": [{"say": "We are open from eight in the morning until eight at night."}],
            },
            {
                "caller": "Only weekdays please",
                "barge_in_after_ms": 300,
                "model": [{"say": "Weekdays eight to eight."}],
            },
            {"drop": True},
            {"dtmf": "42", "model": [{"say": "You pressed four two."}]},
            GOODBYE,
        ]
    )
    async for v in _voice(tmp_path, sc):
        caller = RecordingCaller(v.url, TOKEN, formats=sc.caller.formats)
        report = await caller.play(sc, timeout=60)
        events = await v.log(caller.conversation_id)
    assert report.ended == "bot-disconnected", report.errors
    assert report.resumes == 1 and not report.errors, report.errors
    seen = check_frames(caller.frames, events)
    assert seen.count("session.accepted") == 2  # the initiate and the resume
    for kind in (
        "userStream.started",
        "userStream.speech.started",
        "userStream.speech.stopped",
        "userStream.speech.committed",
        "userStream.speech.recognition",
        "playStream.start",
        "playStream.stop",
        "activities",
    ):
        assert kind in seen, (kind, seen)
    # Every recognition the engine decided reached the caller, with the model's words.
    decided = [e.text for e in events if isinstance(e, ev.CallerNotified) and e.text]
    assert decided and decided == report.recognitions
    assert "What are your opening hours?" in decided
    assert_replays(events)


@pytest.mark.anyio
async def test_a_recognition_is_never_sent_when_the_log_cannot_be_made_durable(
    tmp_path: Path,
) -> None:
    """The store's flush fails from the moment the engine decides the first
    recognition: it is recorded, but the shell cannot make the log durable and
    never sends it (one ERROR line says so).  Once the store is back, the next
    turns' recognitions go out as usual."""
    sc = scenario(
        [
            {"caller": "What are your opening hours?", "model": [{"say": "Eight to eight."}]},
            {"caller": "Thanks", "model": [{"say": "You are welcome."}]},
            GOODBYE,
        ]
    )
    failing = asyncio.Event()  # set: every flush of the log fails
    received: list[tuple[str, bool]] = []  # (frame type, received while the store failed)

    class GaveUp(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "CallerNotified not sent" in record.getMessage():
                failing.clear()  # the shell gave up on that frame: the store comes back

    def first_recognition(e: ev.Event) -> None:
        if isinstance(e, ev.CallerNotified) and e.text and not received_any_recognition():
            failing.set()

    def received_any_recognition() -> bool:
        return any(k == "userStream.speech.recognition" for k, _ in received) or bool(gave_up)

    gave_up: list[bool] = []
    handler = GaveUp()
    service_log = logging.getLogger("fastagent.service")
    service_log.addHandler(handler)
    try:
        async for v in _voice(tmp_path, sc):
            service = v.app.state.service
            store = service.store
            flush_async = store.flush_async

            async def flaky_flush(*args: Any, _flush: Any = flush_async, **kw: Any) -> None:
                if failing.is_set():
                    gave_up.append(True)
                    raise StoreError("store unavailable (test)")
                await _flush(*args, **kw)

            store.flush_async = flaky_flush
            service.observers.append(first_recognition)
            caller = RecordingCaller(v.url, TOKEN, formats=sc.caller.formats)
            caller.observer = lambda kind, msg: received.append((kind, failing.is_set()))
            report = await caller.play(sc, timeout=60)
            events = await v.log(caller.conversation_id)
    finally:
        service_log.removeHandler(handler)
    assert report.ended == "bot-disconnected", report.errors
    assert gave_up, "the store never failed"
    # (A frame sent just before the store failed may arrive after: only the
    # recognition, decided while it failed, is known never to be sent.)
    during = [k for k, failed in received if failed and k == "userStream.speech.recognition"]
    assert during == [], during
    recognitions = [e.text for e in events if isinstance(e, ev.CallerNotified) and e.text]
    # The first turn's recognition is in the log (decided) but was never sent; the
    # later ones, decided once the store was back, reached the caller.
    assert recognitions[0] == "What are your opening hours?"
    assert report.recognitions == recognitions[1:] and "Thanks" in report.recognitions
    assert_replays(events)


@pytest.mark.anyio
async def test_caller_frames_leave_in_log_order_when_durability_ends_out_of_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two batches for the caller, recorded one after the other by different tasks:
    the first one's wait for the log is slow, the second one's quick.  The caller
    still gets their frames in log order (executor.caller_turn)."""
    slow: list[float] = []
    durable = CallSession.durable

    async def uneven(self: CallSession) -> bool:
        ok = await durable(self)
        if slow:
            await asyncio.sleep(slow.pop())
        return ok

    monkeypatch.setattr(CallSession, "durable", uneven)
    sc = scenario([{"silence_ms": 3000}, GOODBYE])
    async for v in _voice(tmp_path, sc):
        caller = RecordingCaller(v.url, TOKEN, formats=sc.caller.formats)
        play = asyncio.create_task(caller.play(sc, timeout=30))
        service = v.app.state.service
        session = None
        for _ in range(1000):  # the greeting played: the call waits in silence
            session = service.calls.get(caller.conversation_id)
            if session is not None and caller.report.play_streams and not caller._active:
                break
            await asyncio.sleep(0.01)
        assert session is not None
        slow.append(0.3)
        first = asyncio.create_task(session.input(ev.CallerStreamStarted, participant="first"))
        await asyncio.sleep(0)  # recorded; waiting for the log to be durable
        second = asyncio.create_task(session.input(ev.CallerStreamStarted, participant="second"))
        await asyncio.gather(first, second)
        report = await play
        events = await v.log(caller.conversation_id)
    assert report.ended == "bot-disconnected", report.errors
    told = [m.get("participant") for m in map(strict_json, caller.frames) if "participant" in m]
    assert told == ["first", "second"]
    check_frames(caller.frames, events)
