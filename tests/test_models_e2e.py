"""Real models as they behave, over real sockets: the fake Realtime server with its
failure switches, the service on loopback, the simulated VAIC caller.

One test per situation of the model scenarios in fastagent/examples/scenarios/model-*.json;
each call must also replay identically through today's core.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import pytest

from fastagent import events as ev
from fastagent.replay import replay
from fastagent.service import ServiceConfig
from fastagent.service_cli import _dead_url, running_service
from fastagent.testing.caller import DEFAULT_PACE, CallerReport, SimulatedCaller, truncation_errors
from fastagent.testing.fake_realtime import FakeRealtimeServer
from fastagent.testing.scenario import load_scenario
from projections.trail import timeline

SCENARIOS = Path(__file__).resolve().parent.parent / "fastagent" / "examples" / "scenarios"
pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Played:
    events: list[ev.Event]
    report: CallerReport
    fake: FakeRealtimeServer

    def of(self, cls: type[ev.Event]) -> list[ev.Event]:
        return [e for e in self.events if isinstance(e, cls)]

    def failures(self) -> list[tuple[str, str]]:
        return [(d.kind, d.action) for d in self.of(ev.ModelFailureHandled)]  # type: ignore[attr-defined]

    @property
    def outcome(self) -> str:
        end = self.events[-1]
        assert isinstance(end, ev.CallEnded)
        return end.outcome


async def play(name: str, tmp: Path, realtime: bool = False) -> Played:
    """Play a scenario; ``realtime``: the caller plays bot audio at 1x (a phone line)
    while the model produces it at 3x, as gpt-realtime-2 does."""
    sc = load_scenario(SCENARIOS / f"{name}.json")
    sw = sc.fake_model
    async with FakeRealtimeServer(
        sc,
        speed=3.0 if realtime else 10.0,
        ignore=sw.ignore,
        error_on=sw.error_on,
        no_session_created=sw.no_session_created,
        expire_after_responses=sw.expire_after_responses,
        continue_script=sw.expire_after_responses is not None,
    ) as fake:
        config = ServiceConfig(
            store=str(tmp / f"{name}.db"),
            no_auth=True,
            agent=sc.agent,
            realtime_url=await _dead_url() if sw.unreachable else fake.url,
            api_key="test",
            playback_speed=1.0 if realtime else 1 / DEFAULT_PACE,
            model_retries=1 if sw.unreachable else 5,
            model_timeout_s=sw.model_timeout_s,
        )
        async with running_service(config) as (app, url):
            service = app.state.service
            caller = SimulatedCaller(url, formats=sc.caller.formats, realtime=realtime)
            report = await caller.play(sc, timeout=60)
            for _ in range(500):
                if caller.conversation_id not in service.calls:
                    break
                await asyncio.sleep(0.01)
            service.store.flush()
            events = service.store.read_call(caller.conversation_id)
    assert fake.violations == [] and fake.mismatches == [] and fake.bugs == []
    assert isinstance(events[-1], ev.CallEnded), "the call did not end"
    result = replay(events)
    assert result.identical, result.divergence and result.divergence.to_dict()
    return Played(events, report, fake)


async def test_a_reply_the_server_starts_itself_is_heard_once(tmp_path: Path) -> None:
    p = await play("model-server-reply", tmp_path)
    assert p.report.errors == []
    # Twice the server went on by itself after a function output; FastAgent's
    # response.create lost the race both times, and asked for nothing more.
    assert p.failures() == [("active_response", "settled")] * 2
    rejected = [
        e for e in p.of(ev.ModelError) if e.code == "conversation_already_has_active_response"
    ]
    assert len(rejected) == 2
    sessions = p.fake.sessions
    assert len(sessions) == 1
    # greeting, turn 1 (call), its follow-up, turn 2 (call), its follow-up, goodbye x2
    assert len(sessions[0].responses) == 7
    # The caller heard each reply once: one play stream per spoken step, no extra one
    # (greeting, "Let me check", "It has shipped", "Goodbye!").
    assert len(p.report.play_streams) == 4
    said = [e.text for e in p.of(ev.Transcript) if e.role == "assistant"]  # type: ignore[attr-defined]
    assert said.count("It has shipped with FedEx and is on its way. Anything else?") == 1
    assert p.outcome == "completed"


async def test_a_failed_response_with_no_output_is_retried_and_repeated_failure_falls_back(
    tmp_path: Path,
) -> None:
    p = await play("model-failed-response", tmp_path)
    assert p.report.errors == []
    failed = [e for e in p.of(ev.ResponseDone) if e.status == "failed"]  # type: ignore[attr-defined]
    assert len(failed) == 4
    assert {(e.error_type, e.error_message) for e in failed[:1]} == {  # type: ignore[attr-defined]
        ("server_error", "The server had an error while processing your request.")
    }
    assert p.failures() == [
        ("transcription_failed", "none"),
        ("response_failed", "retry"),
        ("transcription_missing", "none"),
        ("response_failed", "retry"),
        ("response_failed", "apology"),
        ("response_failed", "fallback"),
    ]
    # The retry answered the caller (no silence until they speak again).
    said = [e.text for e in p.of(ev.Transcript) if e.role == "assistant"]  # type: ignore[attr-defined]
    assert "We are open every day from eight to eight." in said
    apology = [d for d in p.of(ev.ResponseRequested) if d.reason == "apology"]  # type: ignore[attr-defined]
    assert len(apology) == 1
    assert p.of(ev.TransferRequested) and p.report.ended == "transferred"
    assert p.outcome == "failed"
    rows = [r["text"] for r in timeline(p.events)]
    assert "model response failed (server_error): " + failed[0].error_message in rows  # type: ignore[attr-defined]
    assert any(r.startswith("caller's words not transcribed (transcription_failed)") for r in rows)


async def test_two_audio_items_and_a_barge_in_during_the_second(tmp_path: Path) -> None:
    p = await play("model-preamble-barge-in", tmp_path, realtime=True)
    assert p.report.errors == []
    starts = p.of(ev.PlaybackStarted)
    reply = [s for s in starts if s.response_id == starts[1].response_id]  # type: ignore[attr-defined]
    assert len(reply) == 2  # the preamble and the answer: two items, two play streams
    pre, answer = (s.item_id for s in reply)  # type: ignore[attr-defined]
    (cut,) = p.of(ev.TruncateRequested)
    assert cut.item_id == answer  # type: ignore[attr-defined]
    streams = {s.stream_id: s for s in p.report.play_streams}
    heard_pre = streams[reply[0].stream_id].heard_ms  # type: ignore[attr-defined]
    heard_answer = streams[reply[1].stream_id].heard_ms  # type: ignore[attr-defined]
    assert heard_pre == streams[reply[0].stream_id].ms  # all of the preamble  # type: ignore[attr-defined]
    # What the caller heard of the answer, within 40 ms, not what was sent.
    assert abs(cut.audio_end_ms - heard_answer) <= 40, (cut, heard_answer)  # type: ignore[attr-defined]
    assert 1000 < cut.audio_end_ms < 3000  # type: ignore[attr-defined]
    assert truncation_errors(p.events, p.report) == []
    # Both items are in the transcript, each its own line; the answer cut short.
    said = [e.item_id for e in p.of(ev.Transcript) if e.role == "assistant"]  # type: ignore[attr-defined]
    assert pre in said and answer in said
    assert p.fake.sessions[0].truncations == [(answer, cut.audio_end_ms)]  # type: ignore[attr-defined]


async def test_parallel_calls_all_run_and_one_reply_follows(tmp_path: Path) -> None:
    p = await play("model-parallel-calls", tmp_path)
    assert p.report.errors == []
    outputs = p.of(ev.FunctionOutputSent)
    assert [o.seq for o in outputs[:2]] == [outputs[0].seq, outputs[0].seq + 1]
    after = [d for d in p.of(ev.ResponseRequested) if d.seq > outputs[1].seq]
    assert after and after[0].seq == outputs[1].seq + 1  # both outputs, then one request
    assert [n for n, _ in p.fake.function_outputs[:2]] == ["start_order_status", "start_return"]
    # greeting, the preamble, one answer after both outputs, goodbye: no second reply
    assert len(p.report.play_streams) == 4


@pytest.mark.parametrize(
    ("name", "kind", "waiting_for"),
    [
        ("model-timeout", "timeout", "response.created"),
        ("model-no-session-created", "timeout", "session.created"),
        ("model-no-session-updated", "timeout", "session.updated"),
        ("model-unreachable", "unreachable", None),
        ("model-refused", "request_refused", None),
    ],
)
async def test_a_model_that_does_not_answer_ends_in_the_fallback(
    tmp_path: Path, name: str, kind: str, waiting_for: str | None
) -> None:
    p = await play(name, tmp_path)
    assert p.failures()[-1] == (kind, "fallback")
    assert p.report.ended == "transferred"
    assert p.outcome == "failed"
    if waiting_for is not None:
        (timeout,) = p.of(ev.ModelTimeout)
        assert timeout.waiting_for == waiting_for  # type: ignore[attr-defined]
        # Within the setting (1 s in these scenarios) of the call's start, not later.
        assert timeout.seconds == 1.0  # type: ignore[attr-defined]
        assert timeout.at - p.events[0].at < 3_000_000, timeout.at - p.events[0].at


async def test_session_expiry_opens_a_new_session_and_the_call_goes_on(tmp_path: Path) -> None:
    p = await play("model-session-expired", tmp_path)
    assert p.report.errors == []
    assert ("session_expired", "reconnect") in p.failures()
    assert len(p.fake.sessions) == 2
    assert p.of(ev.ConnectionRestored)
    # The new session was told the call so far.
    seeded = [
        e
        for e in p.fake.sessions[1].log
        if e[0] == "in" and e[1]["type"] == "conversation.item.create"
    ]
    assert any("eight to eight" in str(item) for _, item in seeded)
    assert p.outcome == "completed"
