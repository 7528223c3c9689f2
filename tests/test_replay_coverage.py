"""What the recordings in replays/ cover: every scenario and scripted path, every input
and decision type of the event catalogue, every transition of every example agent."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest

from fastagent import events as ev
from fastagent.agents import agent_names, get_agent
from fastagent.replay import read_recording
from fastagent.testing.paths import paths
from fastagent.testing.snapshots import recordings

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ROOT / "fastagent" / "examples" / "scenarios"
# A fault of the core is a bug (or an agent's guard that raised): a recording of one
# would pin the bug.  tests/test_core.py makes one and checks its replay.
NOT_RECORDED = {"EngineFault": "only a bug makes one"}


@cache
def _all_events() -> tuple[ev.Event, ...]:
    return tuple(e for p in recordings(ROOT / "replays") for e in read_recording(p))


def _seen() -> set[str]:
    return {type(e).__name__ for e in _all_events()}


def test_every_scenario_and_every_scripted_path_has_a_recording() -> None:
    expected = {p.stem for p in SCENARIOS.glob("*.json")} | {f"path-{n}" for n in paths()}
    have = {p.stem for p in recordings(ROOT / "replays")}
    assert have == expected, (
        f"missing: {sorted(expected - have)}; unexpected: {sorted(have - expected)} "
        "(run: python scripts/record_replays.py)"
    )


def test_every_input_and_decision_type_appears_in_a_recording() -> None:
    catalogue = {t.__name__ for t in (*ev.INPUT_TYPES, *ev.DECISION_TYPES)}
    missing = sorted(catalogue - _seen() - set(NOT_RECORDED))
    assert not missing, f"event types with no recording in replays/: {', '.join(missing)}"


def _transitions(agent_name: str) -> set[tuple[str, str, str, str, str]]:
    """(fsa, source, target, trigger, guard) of every transition an agent defines."""
    out = set()
    for f in get_agent(agent_name).fsas:
        for st in f.states:
            for step in st.steps:
                for go in step.go:
                    out.add((f.name, st.name, go.target, step.name, go.guard))
            for go in st.after:
                trigger = st.on_enter.tool if st.on_enter else ""
                out.add((f.name, st.name, go.target, trigger, go.guard))
    return out


@pytest.mark.parametrize("agent", [n for n in agent_names() if get_agent(n).fsas])
def test_every_transition_of_every_example_agent_is_taken(agent: str) -> None:
    taken = {
        (e.fsa, e.source, e.target, e.trigger, e.guard)
        for e in _all_events()
        if isinstance(e, ev.FsaTransition)
    }
    missing = sorted(_transitions(agent) - taken)
    assert not missing, f"{agent}: transitions no recording takes: {missing}"


def test_an_example_agent_runs_a_background_action_while_the_conversation_goes_on() -> None:
    events = read_recording(ROOT / "replays" / "path-retail-parcel-tracking-in-background.jsonl")
    start = next(
        e for e in events if isinstance(e, ev.FsaTransition) and e.target == "tracking"
    ).seq
    result = next(
        e
        for e in events
        if isinstance(e, ev.ToolResult) and e.name == "get_order_status" and e.seq > start
    ).seq
    between = [e for e in events if start < e.seq < result]
    # While the lookup ran, the bot spoke (a response with audio) and was told the state.
    assert any(isinstance(e, ev.PlaybackStarted) for e in between)
    assert any(isinstance(e, ev.FunctionOutputSent) for e in between)
    after = next(e for e in events if isinstance(e, ev.FsaTransition) and e.seq > result)
    assert (after.source, after.trigger) == ("tracking", "get_order_status")


def test_a_resume_recorded_over_real_sockets() -> None:
    # default-resume.json's `drop` turn: the simulated VAIC loses its socket and resumes.
    events = read_recording(ROOT / "replays" / "default-resume.jsonl")
    lost = next(e for e in events if isinstance(e, ev.ConnectionLost) and e.side == "caller")
    resumed = next(e for e in events if isinstance(e, ev.SessionResumed))
    accepted = events[resumed.seq]  # the decision right after the resume
    assert lost.seq < resumed.seq
    assert isinstance(accepted, ev.SessionAccepted) and accepted.resumed
    assert isinstance(events[-1], ev.CallEnded) and events[-1].outcome == "completed"
