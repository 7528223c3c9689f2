"""The decision executor's table and VAIC's pure translation (issue 10, point 2)."""

from __future__ import annotations

import asyncio

import msgspec

from fastagent import events as ev
from fastagent import vaic
from fastagent.service import executor
from fastagent.service.model_link import MODEL_DECISIONS

# Decisions that change nothing outside the log: made durable, nothing sent.
LOG_ONLY = {
    ev.FunctionCallSkipped,
    ev.FsaStarted,
    ev.FsaTransition,
    ev.FsaFinished,
    ev.EngineFault,
}


def _decisions() -> set[type[ev.Decision]]:
    out: set[type[ev.Decision]] = set()
    todo = [ev.Decision]
    while todo:
        cls = todo.pop()
        for sub in cls.__subclasses__():
            out.add(sub)
            todo.append(sub)
    return out


def test_every_decision_has_a_handler_or_is_log_only() -> None:
    missing = {t.__name__ for t in _decisions() if t not in executor.HANDLERS and t not in LOG_ONLY}
    assert missing == set()
    assert not (LOG_ONLY & set(executor.HANDLERS))


def test_model_decisions_go_to_the_model_link() -> None:
    handlers = {executor.HANDLERS[t] for t in MODEL_DECISIONS}
    assert len(handlers) == 1


def _parse(frame: dict) -> vaic.VaicMessage:
    proto = vaic.VaicProtocol()
    proto.receive(msgspec.json.encode({"type": "session.initiate", "conversationId": "c1"}))
    msg = proto.receive(msgspec.json.encode({"conversationId": "c1", **frame}))
    assert not isinstance(msg, vaic.ProtocolViolation), msg
    return msg


def test_inputs_of_vaic_messages() -> None:
    end = _parse({"type": "session.end", "reasonCode": "client-disconnected", "reason": "bye"})
    assert vaic.inputs_of(end) == [
        (ev.SessionEnded, {"reason_code": "client-disconnected", "reason": "bye"})
    ]
    start = _parse({"type": "userStream.start", "participant": "caller"})
    assert vaic.inputs_of(start) == [(ev.CallerStreamStarted, {"participant": "caller"})]
    stop = _parse({"type": "userStream.stop"})
    assert vaic.inputs_of(stop) == [(ev.CallerStreamStopped, {"participant": ""})]
    acts = _parse(
        {
            "type": "activities",
            "activities": [
                {"type": "event", "name": "start", "parameters": {"caller": "+1", "x": 2}},
                {"type": "event", "name": "DTMF", "value": "12#"},
                {"type": "event", "name": "dtmf", "value": [1]},
                {"type": "event", "name": "other"},
            ],
        }
    )
    found = vaic.inputs_of(acts)
    assert found[:2] == [
        (ev.CallStarted, {"caller": "+1", "callee": "", "parameters": {"caller": "+1", "x": 2}}),
        (ev.Dtmf, {"digits": "12#"}),
    ]
    assert isinstance(found[2], vaic.ProtocolViolation)
    assert "DTMF" in found[2].message
    assert len(found) == 3
    assert vaic.inputs_of(_parse({"type": "connection.validate"})) == []


def test_decision_frames() -> None:
    base = {"call_id": "c1", "seq": 3, "at": 0}
    assert vaic.decision_frame(ev.SessionRejected(reason="no", **base)) == vaic.session_error("no")
    assert vaic.decision_frame(ev.HangupRequested(reason="", **base)) == vaic.hangup("done")
    assert vaic.decision_frame(ev.DtmfSent(digits="12", **base)) == vaic.send_dtmf("12")
    assert vaic.decision_frame(ev.CallEnded(reason="x", **base)) is None
    told = ev.CallerNotified(message_type="userStream.speech.recognition", text='a"b', **base)
    assert vaic.decision_frame(told) == vaic.speech_recognition('a"b')
    proto = vaic.VaicProtocol()
    start = ev.PlaybackStarted(
        stream_id="s1", response_id="r", item_id="i", fmt="raw/mulaw", **base
    )
    assert proto.frame_of(start) == vaic.play_stream_start("s1", "raw/mulaw")
    stop = ev.PlaybackStopped(stream_id="s1", reason="done", **base)
    assert proto.frame_of(stop) == vaic.play_stream_stop("s1")
    assert proto.frame_of(stop) is None


class _Conn:
    closed = False

    async def close(self) -> None:
        self.closed = True


async def _dial() -> _Conn:
    return _Conn()


async def _refused() -> _Conn:
    raise OSError("refused")


def test_a_resume_hands_its_early_dial_to_the_model_link() -> None:
    asyncio.run(_adopt())


async def _adopt() -> None:
    """ModelLink.adopt: Realtime drives the connection dialled during the resume
    (a failed dial is left to the first configuration); a link of another
    protocol (the default, GPT-Live's) closes it and lets the call dial."""
    from fastagent.live_link import LiveLink
    from fastagent.service.realtime_link import RealtimeLink

    used: list[object] = []

    class Realtime(RealtimeLink):
        def use(self, conn: object) -> None:
            used.append(conn)

    link = Realtime(events=None, dial=_dial)  # type: ignore[arg-type]
    dialled = asyncio.create_task(_dial())
    assert await link.adopt(dialled) is True
    assert used == [dialled.result()]

    failed = asyncio.create_task(_refused())
    assert await Realtime(events=None, dial=_refused).adopt(failed) is True  # type: ignore[arg-type]
    assert len(used) == 1

    dialled = asyncio.create_task(_dial())
    await asyncio.sleep(0)
    live = object.__new__(LiveLink)  # (adopt touches no state of the link)
    assert await live.adopt(dialled) is False
    assert dialled.result().closed
