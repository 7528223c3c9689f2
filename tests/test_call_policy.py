"""The call's timing and retry rules are the core's decision, recorded at acceptance."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from fastagent import core
from fastagent import events as ev
from fastagent.admission import AdmittingEngine
from fastagent.core import POLICY, Engine
from fastagent.replay import read_recording, replay

REPLAYS = Path(__file__).resolve().parent.parent / "replays"


def _accept(config: ev.CallConfig) -> tuple[Engine, ev.SessionAccepted]:
    engine = AdmittingEngine("c")
    first = ev.SessionInitiated(
        call_id="c", seq=1, at=0, config=config, offered_formats=("raw/mulaw",)
    )
    accepted = engine.handle(first)[0]
    assert isinstance(accepted, ev.SessionAccepted)
    return engine, accepted


def test_the_core_decides_the_rules_and_records_them() -> None:
    _, accepted = _accept(ev.CallConfig())
    assert accepted.policy == POLICY
    _, accepted = _accept(
        ev.CallConfig(grace_s=0.0, tool_timeout_s=3.5, model_retries=1, history_items=6)
    )
    assert accepted.policy == msgspec.structs.replace(
        POLICY, grace_s=0.0, tool_timeout_s=3.5, model_retries=1, history_items=6
    )


def test_an_insane_override_falls_back_to_the_cores_rule() -> None:
    _, accepted = _accept(ev.CallConfig(grace_s=-1.0, tool_timeout_s=0.0, model_retries=-3))
    assert accepted.policy == POLICY


def test_a_resumed_session_keeps_the_rules_it_started_with() -> None:
    engine, first = _accept(ev.CallConfig(grace_s=7.0))
    lost = ev.ConnectionLost(call_id="c", seq=engine.next_seq, at=1, side="caller")
    engine.handle(lost)
    resumed = engine.handle(ev.SessionResumed(call_id="c", seq=engine.next_seq, at=2))[0]
    assert isinstance(resumed, ev.SessionAccepted) and resumed.resumed
    assert resumed.policy == first.policy and resumed.policy.grace_s == 7.0


@pytest.mark.parametrize("rule", ["grace_s", "tool_timeout_s", "model_retries", "history_items"])
def test_a_changed_rule_diverges_at_the_sessions_acceptance(
    rule: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    value = getattr(POLICY, rule)
    monkeypatch.setattr(core, "POLICY", msgspec.structs.replace(POLICY, **{rule: value + 1}))
    div = replay(read_recording(REPLAYS / "banking.jsonl")).divergence
    assert div is not None and div.position == 2
    assert [f.name for f in div.fields] == ["policy"]
    assert div.fields[0].new[rule] == value + 1


def test_the_service_leaves_the_rules_to_the_core_unless_told(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from fastagent.service import ServiceConfig

    for name in ("FASTAGENT_GRACE_S", "FASTAGENT_MODEL_TIMEOUT_S"):
        monkeypatch.delenv(name, raising=False)
    cfg = ServiceConfig.from_env()
    assert cfg.grace_s is None and cfg.tool_timeout_s is None and cfg.model_retries is None
    assert "FASTAGENT_GRACE_S" not in cfg.to_env()
    monkeypatch.setenv("FASTAGENT_GRACE_S", "4")
    assert ServiceConfig.from_env().to_env()["FASTAGENT_GRACE_S"] == "4.0"


def test_the_history_window_bounds_the_seeding() -> None:
    from fastagent.core import seed_pairs

    lines = [("user", f"t{i}") for i in range(10)]
    pairs = seed_pairs(lines, 4)
    assert len(pairs) == 5 and pairs[0][0] == "system" and pairs[-1] == ("user", "t9")
    only_summary = seed_pairs(lines, 0)
    assert len(only_summary) == 1 and only_summary[0][0] == "system"
    assert "user: t0" in only_summary[0][1] and "user: t9" in only_summary[0][1]
