"""GPT-Live calls end to end: real loopback sockets, the fake GPT-Live server, the
simulated AudioCodes caller and the example agents' real stdio MCP backends.

The same agents and FSAs as for Realtime; the model is ``gpt-live-1.1`` with
Responses delegation: every FSA intent and step call is a delegated backend call.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from fastagent import events as ev
from fastagent.live import KNOWN_TYPES  # noqa: F401  (the module under test loads)
from fastagent.replay import replay
from fastagent.service import ServiceConfig
from fastagent.service_cli import running_service
from fastagent.testing.caller import DEFAULT_PACE, CallerReport, SimulatedCaller
from fastagent.testing.fake_live import FakeLiveServer
from fastagent.testing.scenario import Scenario, load_scenario, scenario_from_dict

SCENARIOS = Path(str(resources.files("fastagent.examples") / "scenarios"))
LIVE_CLIENT_TYPES = {
    "session.start",
    "session.update",
    "session.input_audio.append",
    "session.commentary.append",
    "session.thinking.append",
    "session.instructions.append",
    "response.item.create",
    "response.create",
    "session.close",
}


@dataclass
class Played:
    events: list[ev.Event]
    report: CallerReport
    fake: FakeLiveServer

    def of(self, cls: type[ev.Event]) -> list[Any]:
        return [e for e in self.events if isinstance(e, cls)]


async def _play(
    scenario: Scenario, data_dir: Path, tmp: Path, fake_opts: dict[str, Any], **cfg: Any
) -> Played:
    store = str(tmp / "calls.db")
    async with FakeLiveServer(scenario, speed=1 / DEFAULT_PACE, **fake_opts) as fake:
        config = ServiceConfig.from_env(
            store=store,
            agent=scenario.agent,
            no_auth=True,
            realtime_url=fake.url,
            api_key="test",
            model="gpt-live-1.1",
        )
        config.token = None
        config.playback_speed = 1 / DEFAULT_PACE
        for key, value in cfg.items():
            setattr(config, key, value)
        async with running_service(config) as (app, url):
            service = app.state.service
            caller = SimulatedCaller(url, formats=scenario.caller.formats)
            report = await caller.play(scenario, timeout=90)
            for _ in range(500):
                if not service.calls:
                    break
                await asyncio.sleep(0.01)
            service.store.flush()
            events = service.store.read_call(caller.conversation_id)
    return Played(events, report, fake)


def play(scenario: Scenario, data_dir: Path, tmp: Path, **kw: Any) -> Played:
    """Play ``scenario`` with fresh sample databases (the backends' $FASTAGENT_DATA_DIR)."""
    import os

    fake_opts = {k: kw.pop(k) for k in list(kw) if k in _FAKE_OPTS}
    fresh = tmp / "data"
    fresh.mkdir()
    old = os.environ.get("FASTAGENT_DATA_DIR")
    os.environ["FASTAGENT_DATA_DIR"] = str(fresh)  # the stdio backends inherit it
    try:
        return asyncio.run(_play(scenario, fresh, tmp, fake_opts, **kw))
    finally:
        if old is None:
            os.environ.pop("FASTAGENT_DATA_DIR", None)
        else:
            os.environ["FASTAGENT_DATA_DIR"] = old


_FAKE_OPTS = {"fail_after_audio_chunks", "continue_script", "delegation_per_call", "ignore"}


def _check_common(p: Played) -> None:
    assert p.report.errors == [], p.report.errors
    assert p.fake.violations == [] and p.fake.mismatches == [] and p.fake.bugs == []
    sent = {e["type"] for e in p.fake.received}
    assert sent <= LIVE_CLIENT_TYPES, sent - LIVE_CLIENT_TYPES  # nothing Realtime-only
    for cls in (ev.TruncateRequested, ev.ItemDeleted, ev.MessageInjected):
        assert p.of(cls) == []
    assert isinstance(p.events[-1], ev.CallEnded)
    result = replay(p.events)
    assert result.identical, result.divergence and result.divergence.to_dict()


@pytest.mark.parametrize(
    ("name", "fsa", "model_format"),
    [
        ("live-banking", "card_replacement", {"type": "audio/pcmu", "rate": 8000}),
        ("live-healthcare", "book_appointment", {"type": "audio/pcm", "rate": 16000}),
        ("live-retail", "return_order", {"type": "audio/pcmu", "rate": 8000}),
    ],
)
def test_the_example_agents_over_gpt_live(
    name: str, fsa: str, model_format: dict[str, Any], data_dir: Path, tmp_path: Path
) -> None:
    scenario = load_scenario(SCENARIOS / f"{name}.json")
    p = play(scenario, data_dir, tmp_path)
    _check_common(p)
    assert p.events[-1].outcome == "completed"  # type: ignore[attr-defined]
    finished = p.of(ev.FsaFinished)
    assert finished and finished[0].outcome == "completed"
    # Every FSA call was delegated: a delegation, a backend response, a function call.
    assert p.of(ev.DelegationStarted) and p.of(ev.FunctionCallRequested)
    dispatched = {d.name for d in p.of(ev.FunctionCallDispatched)}
    assert dispatched & {s.call for t in scenario.turns for s in t.model if s.call}
    # Audio passes through: the session format is the caller's format's match.
    start = next(e for e in p.fake.received if e["type"] == "session.start")
    assert start["session"]["audio"]["format"] == model_format
    assert start["session"]["delegation"]["type"] == "responses"
    started = p.of(ev.ModelSessionStarted)
    assert len(started) == 1 and started[0].seeded == 0
    accepted = p.of(ev.SessionAccepted)[0]
    bot = p.of(ev.BotAudio)
    assert bot and all(b.fmt == accepted.model_format for b in bot)
    heard = sum(s.nbytes for s in p.report.play_streams)
    assert heard == sum(b.nbytes for b in bot)  # byte for byte: nothing transcoded
    # The greeting went in as commentary; DTMF (banking) as instructions.
    kinds = [k for k, _ in p.fake.appended]
    assert kinds[0] == "commentary"
    if name == "live-banking":
        assert any(k == "instructions" and "123456" in c for k, c in p.fake.appended)


def test_barge_in_stops_playback_never_truncates(data_dir: Path, tmp_path: Path) -> None:
    scenario = load_scenario(SCENARIOS / "live-banking-barge-in.json")
    p = play(scenario, data_dir, tmp_path)
    _check_common(p)
    assert p.events[-1].outcome == "completed"  # type: ignore[attr-defined]
    assert len(p.of(ev.SpeechStarted)) >= 5
    assert [f.outcome for f in p.of(ev.FsaFinished)] == ["completed"]
    # The model stopped itself: its spoken text ends early where the caller spoke.
    said = [t.text for t in p.of(ev.Transcript) if t.role == "assistant"]
    assert not any(t.endswith("has it changed since you last told us?") for t in said)
    stops = p.of(ev.ModelOutputStopped)
    assert stops and all(s.item_id.startswith("s1-out-") for s in stops)


def test_a_live_model_that_never_starts_the_session_ends_in_the_fallback(
    data_dir: Path, tmp_path: Path
) -> None:
    """GPT-Live never answers ``session.start``: within FASTAGENT_MODEL_TIMEOUT_S a
    recorded model timeout, then the agent's fallback (transfer; outcome failed)."""
    scenario = load_scenario(SCENARIOS / "live-banking.json")
    p = play(scenario, data_dir, tmp_path, ignore=["session.start"], model_timeout_s=1.0)
    assert p.fake.violations == [] and p.fake.bugs == []
    (timeout,) = p.of(ev.ModelTimeout)
    assert (timeout.waiting_for, timeout.seconds) == ("session.updated", 1.0)
    assert timeout.at - p.events[0].at < 3_000_000
    handled = p.of(ev.ModelFailureHandled)
    assert (handled[-1].kind, handled[-1].action) == ("timeout", "fallback")
    assert p.of(ev.TransferRequested) and p.report.ended == "transferred"
    end = p.events[-1]
    assert isinstance(end, ev.CallEnded) and end.outcome == "failed"
    result = replay(p.events)
    assert result.identical, result.divergence and result.divergence.to_dict()


def test_model_drop_starts_a_new_session_seeded_with_the_call(
    data_dir: Path, tmp_path: Path
) -> None:
    scenario = load_scenario(SCENARIOS / "live-banking.json")
    p = play(scenario, data_dir, tmp_path, fail_after_audio_chunks=60, continue_script=True)
    _check_common(p)
    assert p.events[-1].outcome == "completed"  # type: ignore[attr-defined]
    lost = [e for e in p.of(ev.ConnectionLost) if e.side == "model"]
    assert len(lost) == 1
    started = p.of(ev.ModelSessionStarted)
    assert [s.session_id for s in started] == ["sess_1", "sess_2"]
    assert started[1].seeded > 0 and started[1].forked_from == ""
    history = p.fake.histories[1]
    assert history[0]["role"] == "assistant"  # the greeting, as conversation so far
    assert any("lost my debit card" in i["content"][0]["text"] for i in history)
    # The new session's item ids do not collide with the old one's.
    assert any(b.item_id.startswith("s2-out-") for b in p.of(ev.BotAudio))
    assert p.fake.paths == ["/v1/live/sessions", "/v1/live/sessions"]


def test_model_drop_forks_the_stored_session(data_dir: Path, tmp_path: Path) -> None:
    scenario = load_scenario(SCENARIOS / "live-banking.json")
    p = play(scenario, data_dir, tmp_path, fail_after_audio_chunks=60, live_store=True)
    _check_common(p)
    assert p.events[-1].outcome == "completed"  # type: ignore[attr-defined]
    start = next(e for e in p.fake.received if e["type"] == "session.start")
    assert start["session"]["store"] is True
    started = p.of(ev.ModelSessionStarted)
    assert len(started) == 2 and started[1].forked_from == "sess_1" and started[1].seeded == 0
    assert p.fake.paths[1] == "/v1/live/sessions/sess_1/fork"


SEVERAL = {
    "name": "several-delegations",
    "agent": "banking",
    "model": "gpt-live-1.1",
    "greeting": [{"say": "Welcome to Demo Bank."}],
    "turns": [
        {
            "caller": "I lost my card and also launch the rockets",
            "model": [
                {"call": "start_card_replacement", "args": {}, "expect_output": "identify"},
                {"call": "launch_rockets", "args": {}, "expect_output": "not available"},
                {"say": "I can replace the card. Rockets I cannot do."},
            ],
        },
        {"silence_ms": 500},
        {"hangup": True},
    ],
}


def test_several_delegations_in_flight(data_dir: Path, tmp_path: Path) -> None:
    p = play(scenario_from_dict(SEVERAL), data_dir, tmp_path, delegation_per_call=True)
    _check_common(p)
    delegations = p.of(ev.DelegationStarted)
    assert len(delegations) == 2 and len({d.delegation_id for d in delegations}) == 2
    calls = p.of(ev.FunctionCallRequested)
    assert {c.response_id for c in calls} == {d.response_id for d in delegations}
    outputs = {o.tool_call_id for o in p.of(ev.FunctionOutputSent)}
    assert outputs == {c.tool_call_id for c in calls}  # both answered
    assert [s.reason for s in p.of(ev.FunctionCallSkipped)] == ["unknown tool"]
    assert p.of(ev.FsaStarted)
