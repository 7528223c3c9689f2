"""The engine core with a GPT-Live model: plain input events, no sockets, no clock.

GPT-Live has no response events for its voice, cannot truncate, and delegates
work to a Responses backend whose calls run the agent's FSA (docs/models.md).
"""

from __future__ import annotations

from typing import Any

from fastagent import events as ev
from fastagent.admission import AdmittingEngine

MS = 1000  # µs


class LiveCall:
    def __init__(self, agent: str = "banking", formats: tuple[str, ...] = ("raw/mulaw",)) -> None:
        self.engine = AdmittingEngine("c")
        self.log: list[ev.Event] = []
        self.now = 0
        self.out = self.feed(
            ev.SessionInitiated,
            config=ev.CallConfig(agent=agent, model="gpt-live-1.1"),
            offered_formats=formats,
        )

    def feed(self, cls: type[ev.Input], at_ms: int | None = None, **fields: Any) -> list[str]:
        if at_ms is not None:
            self.now = at_ms * MS
        inp = cls(call_id="c", seq=self.engine.next_seq, at=self.now, **fields)
        out = self.engine.handle(inp)
        self.log += [inp, *out]
        return [type(d).__name__ for d in out]

    def speak(self, item: str, n: int, at_ms: int) -> list[str]:
        """``n`` chunks of 20 ms bot audio in output item ``item``, 1 ms apart."""
        names: list[str] = []
        for i in range(n):
            names += self.feed(
                ev.BotAudio,
                at_ms + i,
                response_id=item,
                item_id=item,
                chunk=i,
                nbytes=160,
                duration_us=20 * MS,
                fmt="audio/pcmu",
            )
        return names

    def call(self, at_ms: int, rid: str, call_id: str, name: str, args: str = "{}") -> list[str]:
        return self.feed(
            ev.FunctionCallRequested,
            at_ms,
            response_id=rid,
            item_id=f"fc-{call_id}",
            tool_call_id=call_id,
            name=name,
            arguments=args,
        )

    def last(self, cls: type[ev.Decision]) -> Any:
        return [e for e in self.log if isinstance(e, cls)][-1]

    def all(self, cls: type[ev.Event]) -> list[Any]:
        return [e for e in self.log if isinstance(e, cls)]


def test_formats_pass_through_and_greeting_is_commentary() -> None:
    c = LiveCall(formats=("raw/lpcm16",))
    accepted = c.last(ev.SessionAccepted)
    assert (accepted.media_format, accepted.model_format) == ("raw/lpcm16", "audio/pcm;rate=16000")
    assert c.feed(ev.CallStarted, 0)[-1] == "ContextAppended"
    greeting = c.last(ev.ContextAppended)
    assert greeting.kind == "commentary" and "Demo Bank" in greeting.content
    assert not c.engine.response_active  # nothing waits for a response that never comes


def test_dtmf_goes_in_as_instructions_for_the_backend() -> None:
    c = LiveCall()
    assert c.feed(ev.Dtmf, 0, digits="123456") == ["ContextAppended"]
    d = c.last(ev.ContextAppended)
    assert d.kind == "instructions" and "123456" in d.content
    assert c.all(ev.ResponseRequested) == [] and c.all(ev.MessageInjected) == []


def test_delegated_call_runs_the_fsa_and_continues_the_backend() -> None:
    c = LiveCall()
    c.feed(ev.DelegationStarted, 0, delegation_id="d1", target="responses", response_id="r1")
    c.feed(ev.ResponseStarted, 1, response_id="r1")
    c.call(2, "r1", "k1", "start_card_replacement")
    out = c.feed(ev.ResponseDone, 3, response_id="r1", status="completed")
    assert (
        out[:3] == ["FunctionCallDispatched", "FsaStarted", "FsaTransition"] or "FsaStarted" in out
    )
    assert "ModelConfigured" in out  # the backend gets the step's tools (session.update)
    assert out[-2:] == ["FunctionOutputSent", "ResponseRequested"]
    assert c.engine.response_active
    c.feed(ev.ResponseStarted, 4, response_id="r2")
    assert c.feed(ev.ResponseDone, 5, response_id="r2", status="completed") == []
    assert not c.engine.response_active


def test_several_delegations_in_flight_keep_their_calls_apart() -> None:
    c = LiveCall()
    c.feed(ev.ResponseStarted, 1, response_id="rA")
    c.feed(ev.ResponseStarted, 1, response_id="rB")
    c.call(2, "rA", "kA", "start_card_replacement")
    c.call(2, "rB", "kB", "launch_rockets")
    outB = c.feed(ev.ResponseDone, 3, response_id="rB", status="completed")
    assert outB[0] == "FunctionCallSkipped"  # unknown tool, answered with an error
    outA = c.feed(ev.ResponseDone, 4, response_id="rA", status="completed")
    assert "FsaStarted" in outA
    sent = [d.tool_call_id for d in c.all(ev.FunctionOutputSent)]
    assert sorted(sent) == ["kA", "kB"]
    assert len(c.all(ev.ResponseRequested)) == 1  # one response.create continues both


def test_speech_never_cancels_backend_work() -> None:
    c = LiveCall()
    c.speak("out-1", 50, 0)
    c.feed(ev.ResponseStarted, 10, response_id="r1")
    c.call(11, "r1", "k1", "start_card_replacement")
    c.feed(ev.SpeechStarted, 12, item_id="in-1")  # the caller talks over the bot
    out = c.feed(ev.ResponseDone, 13, response_id="r1", status="completed")
    assert "FsaStarted" in out and "FunctionCallSkipped" not in out


def test_barge_in_stops_playback_when_the_model_stops_and_never_truncates() -> None:
    c = LiveCall()
    assert c.speak("out-1", 100, 0)[0] == "PlaybackStarted"  # 2 s of audio, sent in 0.1 s
    assert c.feed(ev.SpeechStarted, 500, item_id="in-1") == []  # wait for the model
    out = c.feed(ev.ModelOutputStopped, 800, item_id="out-1", idle_ms=250)
    # VAIC hears of the barge-in now (userStream.speech.started), once a turn.
    assert out == ["PlaybackStopped", "CallerNotified", "ItemHeard"]
    assert c.last(ev.CallerNotified).message_type == "userStream.speech.started"
    stop, heard = c.last(ev.PlaybackStopped), c.last(ev.ItemHeard)
    assert stop.reason == "barge_in" and stop.played_ms == 800
    assert (heard.item_id, heard.heard_ms, heard.sent_ms) == ("out-1", 800, 2000)
    assert c.all(ev.TruncateRequested) == [] and c.all(ev.ItemDeleted) == []
    # The model goes on (full duplex): its next audio is a new item and stream.
    assert c.speak("out-2", 1, 900) == ["PlaybackStarted"]


def test_output_that_ends_by_itself_is_done_and_heard_whole() -> None:
    c = LiveCall()
    c.speak("out-1", 10, 0)
    assert c.feed(ev.ModelOutputStopped, 300, item_id="out-1") == ["PlaybackStopped"]
    assert c.last(ev.PlaybackStopped).reason == "done"
    assert c.last(ev.PlaybackStopped).played_ms == 200
    # The caller speaks over audio VAIC still plays (output already stopped): cut now.
    c.speak("out-2", 100, 400)
    c.feed(ev.ModelOutputStopped, 700, item_id="out-2")
    assert c.feed(ev.SpeechStarted, 900, item_id="in-1") == ["CallerNotified", "ItemHeard"]
    assert c.last(ev.ItemHeard).heard_ms == 500


def test_a_stale_output_stopped_changes_nothing() -> None:
    c = LiveCall()
    c.speak("out-1", 10, 0)
    assert c.feed(ev.ModelOutputStopped, 300, item_id="out-9") == []


def test_goodbye_is_said_before_the_hangup() -> None:
    c = LiveCall()
    c.feed(ev.ResponseStarted, 0, response_id="r1")
    c.call(1, "r1", "k", "end_call", '{"reason": "bye"}')
    out = c.feed(ev.ResponseDone, 2, response_id="r1", status="completed")
    assert out[-2:] == ["FunctionOutputSent", "ResponseRequested"]
    c.feed(ev.ResponseStarted, 3, response_id="r2")
    assert c.feed(ev.ResponseDone, 4, response_id="r2", status="completed") == []
    c.speak("out-1", 10, 5)  # "Goodbye!"
    assert c.feed(ev.ModelOutputStopped, 300, item_id="out-1") == [
        "PlaybackStopped",
        "HangupRequested",
    ]


def test_model_drop_skips_delegated_calls_and_the_new_session_is_told_results() -> None:
    c = LiveCall()
    c.feed(ev.ResponseStarted, 0, response_id="r1")
    c.call(1, "r1", "k1", "start_card_replacement")
    c.speak("out-1", 5, 2)
    out = c.feed(ev.ConnectionLost, 10, side="model", reason="socket closed")
    assert out == ["FunctionCallSkipped", "PlaybackStopped"]
    out = c.feed(ev.ConnectionRestored, 20, side="model")
    assert out == ["ModelConfigured", "ContextAppended"]
    assert c.last(ev.ContextAppended).kind == "commentary"
    assert not c.engine.response_active


def test_failed_backend_response_retries_then_apologises() -> None:
    c = LiveCall()
    c.feed(ev.ResponseStarted, 0, response_id="r1")
    c.call(1, "r1", "k1", "start_card_replacement")
    out = c.feed(ev.ResponseDone, 2, response_id="r1", status="failed", error_code="server_error")
    assert out == ["FunctionCallSkipped", "ModelFailureHandled", "ResponseRequested"]
    c.feed(ev.ResponseStarted, 3, response_id="r2")
    out = c.feed(ev.ResponseDone, 4, response_id="r2", status="failed", error_code="server_error")
    assert out == ["ModelFailureHandled", "ContextAppended"]  # the apology, spoken


def test_realtime_calls_are_unchanged() -> None:
    e = AdmittingEngine("c")
    first = ev.SessionInitiated(
        call_id="c", seq=1, at=0, config=ev.CallConfig(), offered_formats=("raw/lpcm16",)
    )
    names = [type(d).__name__ for d in e.handle(first)]
    assert names == ["SessionAccepted", "ModelConfigured"] and not e.live
    assert e.model_format == "audio/pcm"  # 24 kHz for Realtime (resampled)
