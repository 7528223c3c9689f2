"""The engine core, driven with plain input events: no sockets, no clock."""

from __future__ import annotations

import json
from typing import Any

from fastagent import events as ev
from fastagent.admission import AdmittingEngine
from fastagent.status import Status

MS = 1000  # µs


class Call:
    def __init__(self, **config: Any) -> None:
        self.engine = AdmittingEngine("c")
        self.log: list[ev.Event] = []
        self.now = 0
        self.feed(
            ev.SessionInitiated, config=ev.CallConfig(**config), offered_formats=("raw/mulaw",)
        )

    def feed(self, cls: type[ev.Input], at_ms: int | None = None, **fields: Any) -> list[str]:
        if at_ms is not None:
            self.now = at_ms * MS
        inp = cls(call_id="c", seq=self.engine.next_seq, at=self.now, **fields)
        out = self.engine.handle(inp)
        self.log += [inp, *out]
        return [type(d).__name__ for d in out]

    def audio(self, rid: str, n: int, at_ms: int) -> list[str]:
        names: list[str] = []
        for i in range(n):
            names += self.feed(
                ev.BotAudio,
                at_ms + i,
                response_id=rid,
                item_id=f"i-{rid}",
                chunk=i,
                nbytes=160,
                duration_us=20 * MS,
                fmt="audio/pcmu",
            )
        return names

    def request(
        self, at_ms: int, rid: str, call_id: str, name: str, arguments: str = "{}"
    ) -> list[str]:
        """The model asks for a function call in response ``rid``."""
        return self.feed(
            ev.FunctionCallRequested,
            at_ms,
            response_id=rid,
            item_id=f"item-{call_id}",
            tool_call_id=call_id,
            name=name,
            arguments=arguments,
        )

    def decisions(self, cls: type[ev.Decision]) -> list[Any]:
        return [e for e in self.log if isinstance(e, cls)]


def test_session_accepted_configured_and_greeting() -> None:
    c = Call()
    assert c.decisions(ev.SessionAccepted)[0].media_format == "raw/mulaw"
    assert c.decisions(ev.SessionAccepted)[0].model_format == "audio/pcmu"
    conf = c.decisions(ev.ModelConfigured)[0]
    assert "end_call" in conf.tool_names and conf.input_format == "audio/pcmu"
    assert c.feed(ev.CallStarted, 1) == ["ResponseRequested"]
    assert Call(greet=False).feed(ev.CallStarted, 1) == []


def test_decisions_are_numbered_after_their_input_and_carry_its_time() -> None:
    c = Call()
    assert [e.seq for e in c.log] == [1, 2, 3]
    assert {e.at for e in c.log} == {0}


def test_no_usable_format_or_unknown_agent_is_rejected() -> None:
    e = AdmittingEngine("x")
    out = e.handle(
        ev.SessionInitiated(
            call_id="x", seq=1, at=0, config=ev.CallConfig(), offered_formats=("wav/opus",)
        )
    )
    assert [type(d).__name__ for d in out] == ["SessionRejected", "CallEnded"]
    e = AdmittingEngine("y")
    out = e.handle(
        ev.SessionInitiated(
            call_id="y",
            seq=1,
            at=0,
            config=ev.CallConfig(agent="nope"),
            offered_formats=("raw/mulaw",),
        )
    )
    assert "unknown agent" in out[0].reason  # type: ignore[attr-defined]


def test_response_create_is_never_sent_while_a_response_is_active() -> None:
    c = Call()
    c.feed(ev.ResponseStarted, 1, response_id="r1")
    assert c.feed(ev.Dtmf, 2, digits="5") == ["MessageInjected"]  # response owed, not sent
    assert c.feed(ev.ResponseDone, 3, response_id="r1", status="completed") == ["ResponseRequested"]


def test_barge_in_truncates_at_what_was_heard() -> None:
    c = Call()
    c.feed(ev.ResponseStarted, 0, response_id="r1")
    assert c.audio("r1", 50, at_ms=100)[0] == "PlaybackStarted"  # 1 s of audio sent at once
    out = c.feed(ev.SpeechStarted, 100 + 430, item_id="u1")
    # VAIC is told of the caller's speech after the cut (userStream.speech.started).
    assert out == ["PlaybackStopped", "TruncateRequested", "CallerNotified"]
    assert c.decisions(ev.CallerNotified)[-1].message_type == "userStream.speech.started"
    t = c.decisions(ev.TruncateRequested)[0]
    assert t.audio_end_ms == 430 and t.item_id == "i-r1"
    # Speech after the audio has played out is no barge-in.
    c.feed(ev.ResponseDone, 600, response_id="r1", status="cancelled", reason="turn_detected")
    c.feed(ev.ResponseStarted, 700, response_id="r2")
    c.audio("r2", 5, at_ms=700)
    assert c.feed(ev.SpeechStarted, 2000, item_id="u2") == ["CallerNotified"]


def test_truncation_is_clamped_to_the_audio_sent() -> None:
    c = Call(playback_speed=4.0)
    c.feed(ev.ResponseStarted, 0, response_id="r1")
    c.audio("r1", 10, at_ms=0)  # 200 ms of audio, audible for 50 ms at 4x
    c.feed(ev.SpeechStarted, 45, item_id="u1")
    assert c.decisions(ev.TruncateRequested)[0].audio_end_ms == 180


def test_calls_of_a_response_wait_until_heard_and_die_with_a_barge_in() -> None:
    c = Call()
    c.feed(ev.ResponseStarted, 0, response_id="r1")
    c.audio("r1", 50, at_ms=0)  # audible until 1000 ms
    c.request(60, "r1", "k1", "end_call")
    assert c.feed(ev.ResponseDone, 70, response_id="r1", status="completed") == ["PlaybackStopped"]
    assert c.feed(ev.SpeechStarted, 500, item_id="u") == [
        "TruncateRequested",
        "FunctionCallSkipped",
        "CallerNotified",
    ]
    assert not c.decisions(ev.FunctionCallDispatched)

    c2 = Call()
    c2.feed(ev.ResponseStarted, 0, response_id="r1")
    c2.audio("r1", 50, at_ms=0)
    c2.request(60, "r1", "k1", "end_call")
    c2.feed(ev.ResponseDone, 70, response_id="r1", status="completed")
    out = c2.feed(ev.PlaybackDrained, 1000, stream_id="play-1", response_id="r1")
    assert out == ["FunctionCallDispatched", "FunctionOutputSent", "ResponseRequested"]


def test_cancelled_response_calls_are_skipped() -> None:
    c = Call()
    c.feed(ev.ResponseStarted, 0, response_id="r1")
    c.request(1, "r1", "k", "end_call")
    out = c.feed(ev.ResponseDone, 2, response_id="r1", status="cancelled", reason="turn_detected")
    assert out == ["FunctionCallSkipped"]


def test_end_call_says_goodbye_then_hangs_up_and_unknown_tools_are_refused() -> None:
    c = Call()
    c.feed(ev.ResponseStarted, 0, response_id="r1")
    c.request(1, "r1", "x", "launch_rockets")
    c.request(1, "r1", "k", "end_call", '{"reason": "bye"}')
    out = c.feed(ev.ResponseDone, 2, response_id="r1", status="completed")
    assert out == [
        "FunctionCallSkipped",
        "FunctionCallDispatched",
        "FunctionOutputSent",
        "FunctionOutputSent",
        "ResponseRequested",
    ]
    c.feed(ev.ResponseStarted, 3, response_id="r2")
    assert c.feed(ev.ResponseDone, 4, response_id="r2", status="completed") == ["HangupRequested"]
    assert c.feed(ev.SessionEnded, 5, reason_code="bot-disconnected") == ["CallEnded"]
    assert c.decisions(ev.CallEnded)[0].outcome == "completed"
    assert c.feed(ev.Dtmf, 6, digits="1") == []  # nothing after the end


def test_external_tool_result_goes_back_to_the_model() -> None:
    c = Call()
    c.feed(ev.ToolsListed, 0, server="weather", tools=(ev.ToolSpec(name="forecast"),))
    c.feed(ev.ResponseStarted, 1, response_id="r1")
    c.request(2, "r1", "k", "forecast", '{"city": "Oslo"}')
    assert c.feed(ev.ResponseDone, 3, response_id="r1", status="completed") == [
        "FunctionCallDispatched"
    ]
    d = c.decisions(ev.FunctionCallDispatched)[0]
    assert d.server == "weather" and d.idempotency_key == f"c:{d.seq}"
    out = c.feed(ev.ToolResult, 4, tool_call_id="k", name="forecast", ok=False, error="timeout")
    assert out == ["FunctionOutputSent", "ResponseRequested"]
    assert "timeout" in c.decisions(ev.FunctionOutputSent)[0].output


def test_caller_drop_then_grace_expiry_ends_the_call() -> None:
    c = Call()
    c.feed(ev.ConnectionLost, 1, side="caller", reason="socket closed")
    assert c.engine.status is Status.SUSPENDED
    assert c.feed(ev.GraceExpired, 30_001, seconds=30.0) == ["CallEnded"]
    assert "30 s" in c.decisions(ev.CallEnded)[0].reason


def test_model_drop_mid_response_skips_its_calls_and_asks_again_after_reconnect() -> None:
    c = Call()
    c.feed(ev.ResponseStarted, 1, response_id="r1")
    c.request(2, "r1", "k", "end_call")
    assert c.feed(ev.ConnectionLost, 3, side="model") == ["FunctionCallSkipped"]
    assert c.feed(ev.ConnectionRestored, 4, side="model") == [
        "ModelConfigured",
        "ResponseRequested",
    ]


def test_engine_state_stays_small_over_a_long_call() -> None:
    from fastagent.replay import replay
    from fastagent.testing.synth import synthetic_call

    engine = replay(synthetic_call(target_events=20_000)).engine
    assert engine is not None
    assert not engine.calls_in_response and not engine.queued and not engine.in_flight
    assert engine.play is None or engine.play.sent_us < 10 * 60 * 1_000_000


def test_the_log_closes_only_after_running_tools_report() -> None:
    c = Call()
    c.feed(ev.ToolsListed, 0, server="bank", tools=(ev.ToolSpec(name="order"),))
    c.feed(ev.ResponseStarted, 1, response_id="r1")
    c.request(2, "r1", "k", "order")
    c.feed(ev.ResponseDone, 3, response_id="r1", status="completed")
    assert c.feed(ev.SessionEnded, 4, reason_code="client-disconnected") == []
    assert c.engine.status is Status.CLOSING
    assert c.feed(ev.Dtmf, 5, digits="1") == []  # nothing else is decided meanwhile
    out = c.feed(ev.ToolResult, 6, tool_call_id="k", name="order", ok=True, output="{}")
    assert out == ["CallEnded"]
    assert c.decisions(ev.CallEnded)[0].outcome == "caller_hangup"


def test_send_dtmf_tool_and_session_params() -> None:
    from fastagent.agent import Agent

    ivr = Agent(name="ivr", instructions="x", send_dtmf=True, session_params={"sendDTMF": True})
    engine = AdmittingEngine("d", agents=lambda name: ivr)
    seq = 1

    def feed(cls: type[ev.Input], **kw: Any) -> list[ev.Decision]:
        nonlocal seq
        out = engine.handle(cls(call_id="d", seq=engine.next_seq, at=seq, **kw))
        seq += 1
        return out

    out = feed(
        ev.SessionInitiated, config=ev.CallConfig(agent="ivr"), offered_formats=("raw/mulaw",)
    )
    assert "send_dtmf" in out[-1].tool_names  # type: ignore[attr-defined]
    out = feed(ev.CallStarted)
    assert isinstance(out[0], ev.SessionParamsSent) and out[0].params == {"sendDTMF": True}
    feed(ev.ResponseStarted, response_id="r1")
    for i, digits in enumerate(("12#", "12345678901234567890X")):
        feed(
            ev.FunctionCallRequested,
            response_id="r1",
            item_id=f"f{i}",
            tool_call_id=f"k{i}",
            name="send_dtmf",
            arguments=json.dumps({"digits": digits}),
        )
    out = feed(ev.ResponseDone, response_id="r1", status="completed")
    sent = [d for d in out if isinstance(d, ev.DtmfSent)]
    assert [d.digits for d in sent] == ["12#"]
    outputs = [d.output for d in out if isinstance(d, ev.FunctionOutputSent)]
    assert '"ok": false' in outputs[1]


def _goodbye_response(c: Call, rid: str, at_ms: int) -> list[str]:
    c.feed(ev.ResponseStarted, at_ms, response_id=rid)
    c.audio(rid, 50, at_ms=at_ms)  # 1 s of goodbye, audible until at_ms + 1000
    return c.feed(ev.ResponseDone, at_ms + 60, response_id=rid, status="completed")


def test_hangup_waits_for_the_goodbye_and_a_barge_in_keeps_the_call() -> None:
    c = Call()
    c.feed(ev.ResponseStarted, 0, response_id="r1")
    c.request(1, "r1", "k", "end_call")
    c.feed(ev.ResponseDone, 2, response_id="r1", status="completed")  # -> goodbye requested
    assert _goodbye_response(c, "bye", 100) == ["PlaybackStopped"]  # no hangup yet
    assert c.feed(ev.SpeechStarted, 500, item_id="u") == ["TruncateRequested", "CallerNotified"]
    assert c.engine.status is Status.ACTIVE and c.engine.control == ("", "")
    # The same goodbye heard out: now the bot hangs up.
    c2 = Call()
    c2.feed(ev.ResponseStarted, 0, response_id="r1")
    c2.request(1, "r1", "k", "end_call")
    c2.feed(ev.ResponseDone, 2, response_id="r1", status="completed")
    _goodbye_response(c2, "bye", 100)
    out = c2.feed(ev.PlaybackDrained, 1100, stream_id="play-1", response_id="bye")
    assert out == ["HangupRequested"]


def test_a_result_for_a_cancelled_run_changes_nothing() -> None:
    from fastagent.examples.banking import AGENT

    engine = AdmittingEngine("b", agents=lambda name: AGENT)
    n = 0

    def feed(cls: type[ev.Input], **kw: Any) -> list[ev.Decision]:
        nonlocal n
        n += 1
        return engine.handle(cls(call_id="b", seq=engine.next_seq, at=n, **kw))

    def respond(*calls: tuple[str, dict[str, Any]]) -> list[ev.Decision]:
        rid = f"r{n}"
        feed(ev.ResponseStarted, response_id=rid)
        for i, (name, args) in enumerate(calls):
            feed(
                ev.FunctionCallRequested,
                response_id=rid,
                item_id=f"i{n}{i}",
                tool_call_id=f"c{n}{i}",
                name=name,
                arguments=json.dumps(args),
            )
        return feed(ev.ResponseDone, response_id=rid, status="completed")

    feed(ev.SessionInitiated, config=ev.CallConfig(agent="banking"), offered_formats=("raw/mulaw",))
    feed(ev.ToolsListed, server="bank", tools=(ev.ToolSpec(name="find_customer"),))
    respond(("start_card_replacement", {}))
    out = respond(
        ("provide_customer_number", {"customer_id": "123456"}), ("cancel_card_replacement", {})
    )
    action = next(
        d for d in out if isinstance(d, ev.FunctionCallDispatched) and d.name == "find_customer"
    )
    respond(("start_card_replacement", {}))
    out = feed(
        ev.ToolResult,
        tool_call_id=action.tool_call_id,
        name="find_customer",
        ok=True,
        output='{"found": true}',
    )
    assert not any(isinstance(d, ev.EngineFault | ev.FsaTransition) for d in out)
    assert engine.runs["card_replacement"].state == "identify"


def test_a_guard_that_raises_is_an_engine_fault_not_a_crash() -> None:
    from fastagent.agent import Agent
    from fastagent.fsa import FSA, Go, State, Step

    def broken(ctx: Any) -> bool:
        raise RuntimeError("guard bug")

    fsa = FSA(
        name="t",
        intent="start_t",
        description="x",
        initial="a",
        states=(
            State("a", "x", steps=(Step("s", "x", go=(Go("b", when=broken),)),)),
            State("b", "x", terminal=True),
        ),
    )
    agent = Agent(name="t", instructions="x", fsas=(fsa,))
    engine = AdmittingEngine("g", agents=lambda name: agent)
    n = 0

    def feed(cls: type[ev.Input], **kw: Any) -> list[ev.Decision]:
        nonlocal n
        n += 1
        return engine.handle(cls(call_id="g", seq=engine.next_seq, at=n, **kw))

    feed(ev.SessionInitiated, config=ev.CallConfig(agent="t"), offered_formats=("raw/mulaw",))
    for name in ("start_t", "s"):
        feed(ev.ResponseStarted, response_id=name)
        feed(
            ev.FunctionCallRequested,
            response_id=name,
            item_id=name,
            tool_call_id=name,
            name=name,
            arguments="{}",
        )
        before = engine.next_seq
        out = feed(ev.ResponseDone, response_id=name, status="completed")
    assert [type(d).__name__ for d in out] == ["EngineFault"]
    assert "guard bug" in out[0].error  # type: ignore[attr-defined]
    assert out[0].seq == before + 1 and engine.next_seq == before + 2  # no gap in the log


def test_model_unreachable_falls_back_and_a_refused_response_is_retried() -> None:
    c = Call()
    assert c.feed(ev.ModelError, 1, error_type="connection", message="refused") == [
        "ModelFailureHandled",
        "TransferRequested",
    ]
    assert c.engine.failed
    c.feed(ev.SessionEnded, 2, reason_code="transferred")
    assert c.decisions(ev.CallEnded)[-1].outcome == "failed"
    c2 = Call()
    c2.feed(ev.CallStarted, 1)  # greeting requested
    req = c2.decisions(ev.ResponseRequested)[0]
    from fastagent.core import response_event_id

    out = c2.feed(ev.ModelError, 2, code="invalid_value", event_id=response_event_id(req.seq))
    assert out == ["ModelFailureHandled", "ResponseRequested"]  # no response coming: retry
    assert c2.decisions(ev.ModelFailureHandled)[0].kind == "request_refused"
    assert c2.decisions(ev.ResponseRequested)[-1].instructions == req.instructions


def test_results_owed_to_a_dead_model_session_are_told_as_messages() -> None:
    c = Call()
    c.feed(ev.ToolsListed, 0, server="weather", tools=(ev.ToolSpec(name="forecast"),))
    c.feed(ev.ResponseStarted, 1, response_id="r1")
    c.request(2, "r1", "old-session-call", "forecast")
    c.feed(ev.ResponseDone, 3, response_id="r1", status="completed")
    c.feed(ev.ConnectionLost, 4, side="model", reason="dropped")
    c.feed(ev.ConnectionRestored, 5, side="model")
    out = c.feed(
        ev.ToolResult,
        6,
        tool_call_id="old-session-call",
        name="forecast",
        ok=True,
        output='{"sky": "clear"}',
    )
    assert out == ["MessageInjected", "ResponseRequested"]
    assert "clear" in c.decisions(ev.MessageInjected)[-1].text


def test_calls_held_when_the_caller_never_comes_back_are_recorded_as_skipped() -> None:
    c = Call()
    c.feed(ev.ResponseStarted, 0, response_id="r1")
    c.audio("r1", 50, at_ms=0)
    c.request(60, "r1", "k", "end_call")
    c.feed(ev.ResponseDone, 70, response_id="r1", status="completed")
    c.feed(ev.ConnectionLost, 200, side="caller", reason="socket closed")
    assert c.feed(ev.PlaybackDrained, 1000, stream_id="play-1", response_id="r1") == []
    assert c.feed(ev.GraceExpired, 31_000, seconds=30.0) == ["FunctionCallSkipped", "CallEnded"]


def test_the_caller_is_told_of_its_own_stream_and_speech_by_decisions() -> None:
    """Every VAIC notification the caller gets is a CallerNotified, with VAIC's own
    message type; a recognition carries the model's words for the caller's item."""
    c = Call()
    assert c.feed(ev.CallerStreamStarted, 1, participant="caller") == ["CallerNotified"]
    (n,) = c.decisions(ev.CallerNotified)
    assert (n.message_type, n.participant) == ("userStream.started", "caller")
    for cls in (ev.SpeechStarted, ev.SpeechStopped, ev.SpeechCommitted):
        assert c.feed(cls, 2, item_id="u1") == ["CallerNotified"]
    assert c.feed(ev.Transcript, 3, role="user", item_id="u1", text="hello") == ["CallerNotified"]
    assert c.feed(ev.Transcript, 3, role="user", item_id="u2", text="") == []
    assert c.feed(ev.Transcript, 3, role="assistant", item_id="a1", text="Hi") == []
    assert [(n.message_type, n.text) for n in c.decisions(ev.CallerNotified)[1:]] == [
        ("userStream.speech.started", ""),
        ("userStream.speech.stopped", ""),
        ("userStream.speech.committed", ""),
        ("userStream.speech.recognition", "hello"),
    ]
    # No caller socket while the call is suspended: nothing to tell it.
    c.feed(ev.ConnectionLost, 4, side="caller")
    assert c.feed(ev.Transcript, 5, role="user", item_id="u3", text="still there?") == []
    c.feed(ev.SessionResumed, 6)
    assert c.feed(ev.CallerStreamStopped, 7) == ["CallerNotified"]


def test_a_hangup_decided_while_the_caller_is_away_ends_the_call_at_grace() -> None:
    # The goodbye's response ends while the caller's socket is down: the hangup is
    # decided (ENDING) but no socket carries it; grace must still end the call.
    c = Call()
    c.feed(ev.ResponseStarted, 0, response_id="r1")
    c.request(1, "r1", "k", "end_call")
    c.feed(ev.ResponseDone, 2, response_id="r1", status="completed")
    c.feed(ev.ResponseStarted, 3, response_id="bye")
    c.feed(ev.ConnectionLost, 4, side="caller", reason="socket closed")
    assert c.feed(ev.ResponseDone, 5, response_id="bye", status="completed") == ["HangupRequested"]
    assert c.engine.status is Status.ENDING
    assert c.feed(ev.GraceExpired, 30_005, seconds=30.0) == ["CallEnded"]
    assert c.decisions(ev.CallEnded)[0].outcome == "completed"
    # A caller back in time keeps the call: grace then changes nothing.
    c2 = Call()
    c2.feed(ev.ConnectionLost, 1, side="caller", reason="socket closed")
    c2.feed(ev.SessionResumed, 2)
    assert c2.feed(ev.GraceExpired, 30_001, seconds=30.0) == []
