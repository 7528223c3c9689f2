"""The example agents end to end: real loopback sockets, the fake Realtime model, the
simulated AudioCodes caller and the REAL stdio MCP backends over fresh sample databases.

Every scenario in fastagent/examples/scenarios/ for the banking, healthcare and retail agents is
played once per module (the three agents' lanes run side by side; each lane plays its
scenarios one after the other, since the backends share one data directory).  The tests
then check the recorded logs, the caller's view and the backend databases, and that
every log replays identically -- and that a changed FSA makes an old recording diverge
at the first decision it now takes differently.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from fastagent import events as ev
from fastagent.agent import Agent
from fastagent.agents import get_agent
from fastagent.fsa import FSA, Go
from fastagent.replay import replay
from fastagent.service import ServiceConfig
from fastagent.service_cli import running_service
from fastagent.testing.caller import (
    DEFAULT_PACE,
    CallerReport,
    SimulatedCaller,
    truncation_errors,
)
from fastagent.testing.fake_realtime import FakeRealtimeServer
from fastagent.testing.scenario import load_scenario

TOKEN = "e2e-token"
ENGINE = "fastagent"  # the server name of the engine's own tools
SCENARIOS = Path(str(resources.files("fastagent.examples") / "scenarios"))
LANES = {
    "banking": [
        "banking",
        "banking-barge-in",
        "banking-cancel",
        "banking-failed-verification",
        "banking-balance-locked",
    ],
    "healthcare": ["healthcare", "healthcare-barge-in", "healthcare-cancel"],
    "retail": ["retail-barge-in", "retail", "retail-cancel"],
}
ALL = [name for lane in LANES.values() for name in lane]


@dataclass
class Played:
    name: str
    agent: str
    report: CallerReport
    events: list[ev.Event]
    violations: list[str]


# ------------------------------------------------------------------ playing calls


async def _play(name: str, tmp: Path) -> Played:
    sc = load_scenario(SCENARIOS / f"{name}.json")
    async with FakeRealtimeServer(sc) as fake:
        config = ServiceConfig(
            store=str(tmp / f"{name}.db"),
            token=TOKEN,
            agent=sc.agent,
            realtime_url=fake.url,
            api_key="test",
            playback_speed=1 / DEFAULT_PACE,
        )
        async with running_service(config) as (app, url):
            service = app.state.service
            caller = SimulatedCaller(url, TOKEN, formats=sc.caller.formats)
            report = await caller.play(sc, timeout=60)
            for _ in range(500):  # the service closes the call's log after the socket
                if caller.conversation_id not in service.calls:
                    break
                await asyncio.sleep(0.01)
            service.store.flush()
            events = service.store.read_call(caller.conversation_id)
        violations = [*fake.violations, *fake.mismatches]
    return Played(name, sc.agent, report, events, violations)


async def _play_all(tmp: Path) -> dict[str, Played]:
    async def lane(names: list[str]) -> list[Played]:
        return [await _play(name, tmp) for name in names]

    lanes = await asyncio.gather(*(lane(names) for names in LANES.values()))
    return {p.name: p for played in lanes for p in played}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("backend-data")


@pytest.fixture(scope="module")
def calls(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Iterator[dict[str, Played]]:
    with pytest.MonkeyPatch.context() as mp:
        # The stdio backends inherit FASTAGENT_* variables: fresh sample databases.
        mp.setenv("FASTAGENT_DATA_DIR", str(data_dir))
        yield asyncio.run(_play_all(tmp_path_factory.mktemp("stores")))


def rows(data_dir: Path, db: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    con = sqlite3.connect(data_dir / f"{db}.sqlite")
    try:
        return [tuple(r) for r in con.execute(sql, params).fetchall()]
    finally:
        con.close()


# ------------------------------------------------------------------ log helpers


def of(events: list[ev.Event], cls: type[Any]) -> list[Any]:
    return [e for e in events if isinstance(e, cls)]


def moves(events: list[ev.Event], fsa: str) -> list[str]:
    """The FSA's trail: start, decided transitions ('calling X' hops left out), finish."""
    out = []
    for e in events:
        if isinstance(e, ev.FsaStarted) and e.fsa == fsa:
            out.append(f"start {e.state}")
        elif isinstance(e, ev.FsaTransition) and e.fsa == fsa:
            if not e.reason.startswith("calling "):
                guard = f" [{e.guard}]" if e.guard else ""
                out.append(f"{e.source}->{e.target} on {e.trigger}{guard}")
        elif isinstance(e, ev.FsaFinished) and e.fsa == fsa:
            out.append(f"finish {e.state} {e.outcome}")
    return out


def backend_calls(events: list[ev.Event], server: str) -> list[ev.FunctionCallDispatched]:
    return [e for e in of(events, ev.FunctionCallDispatched) if e.server == server]


def backend_tools(events: list[ev.Event], server: str) -> list[str]:
    return [e.name for e in backend_calls(events, server)]


def result_of(events: list[ev.Event], call: ev.FunctionCallDispatched) -> ev.ToolResult:
    return next(e for e in of(events, ev.ToolResult) if e.tool_call_id == call.tool_call_id)


def side_effect_tools(agent: Agent) -> dict[str, str]:
    """Backend tools with side effects -> the confirm step that may call them."""
    return {
        step.action.tool: step.name
        for f in agent.fsas
        for st in f.states
        for step in st.steps
        if step.action is not None and step.action.side_effect
    }


def ended(p: Played) -> ev.CallEnded:
    end = p.events[-1]
    assert isinstance(end, ev.CallEnded), type(end).__name__
    return end


# ------------------------------------------------------------- every call


@pytest.mark.parametrize("name", ALL)
def test_call_is_whole_and_replays_identically(calls: dict[str, Played], name: str) -> None:
    p = calls[name]
    assert not p.violations, p.violations
    assert not p.report.errors, p.report.errors
    assert [e.seq for e in p.events] == list(range(1, len(p.events) + 1))
    assert isinstance(p.events[0], ev.SessionInitiated)
    assert p.events[0].config.agent == p.agent
    ended(p)
    result = replay(p.events)
    assert result.identical, result.divergence and result.divergence.to_dict()
    assert result.decisions == sum(isinstance(e, ev.Decision) for e in p.events)


@pytest.mark.parametrize("name", ALL)
def test_backend_calls_are_keyed_and_succeed(calls: dict[str, Played], name: str) -> None:
    p = calls[name]
    agent = get_agent(p.agent)
    (server,) = [s.name for s in agent.servers]
    dispatched = of(p.events, ev.FunctionCallDispatched)
    keys = [d.idempotency_key for d in dispatched]
    assert all(keys) and len(set(keys)) == len(keys)  # every call keyed, no key reused
    for call in backend_calls(p.events, server):
        assert call.tool_call_id.startswith("act-")  # FSA actions, not model calls
        res = result_of(p.events, call)
        assert res.ok, res.error
        assert res.seq > call.seq
    assert {d.server for d in dispatched} <= {server, ENGINE}


@pytest.mark.parametrize("name", ALL)
def test_side_effects_only_behind_a_confirmed_step(calls: dict[str, Played], name: str) -> None:
    p = calls[name]
    guarded = side_effect_tools(get_agent(p.agent))
    decisions = [e for e in p.events if isinstance(e, ev.Decision)]
    for i, d in enumerate(decisions):
        if isinstance(d, ev.FunctionCallDispatched) and d.name in guarded:
            hop = decisions[i - 1]  # the step's 'calling <tool>' transition
            assert isinstance(hop, ev.FsaTransition)
            assert hop.trigger == guarded[d.name]
            assert json.loads(hop.arguments)["confirmed"] is True
            assert hop.reason == f"calling {d.name}"


# ------------------------------------------------------------------- banking

CARD = "card_replacement"
BALANCE = "balance_inquiry"


def test_banking_card_replacement_orders_exactly_one_card(
    calls: dict[str, Played], data_dir: Path
) -> None:
    p = calls["banking"]
    assert moves(p.events, CARD) == [
        "start identify",
        "identify->verify on provide_customer_number [found]",
        "verify->confirm_address on verify_identity [verified]",
        "confirm_address->confirm_replacement on confirm_delivery_address",
        "confirm_replacement->done on confirm_card_replacement [ordered]",
        "finish done completed",
    ]
    assert backend_tools(p.events, "bank") == [
        "find_customer",
        "verify_customer",
        "order_replacement_card",
    ]
    assert of(p.events, ev.Dtmf)[0].digits == "123456"  # the number came by keypad
    (order,) = [c for c in backend_calls(p.events, "bank") if c.name == "order_replacement_card"]
    assert json.loads(order.arguments) == {
        "card_last4": "4242",
        "customer_id": "123456",
        "reason": "lost",
    }
    assert json.loads(result_of(p.events, order).output)["ordered"] is True
    # The backend stored the dispatch's idempotency key with the one order row.
    key = order.idempotency_key
    assert rows(data_dir, "bank", "SELECT tool FROM idempotency WHERE key = ?", key) == [
        ("order_replacement_card",)
    ]
    assert rows(
        data_dir,
        "bank",
        "SELECT reason FROM card_orders WHERE customer_id = '123456' AND card_last4 = '4242'",
    ) == [("lost",)]
    assert ended(p).outcome == "completed"
    assert of(p.events, ev.HangupRequested) and not of(p.events, ev.TransferRequested)
    assert p.report.ended == "bot-disconnected"
    assert p.report.activities[-1]["name"] == "hangup"


def test_banking_three_failed_verifications_transfer_to_a_human(
    calls: dict[str, Played], data_dir: Path
) -> None:
    p = calls["banking-failed-verification"]
    assert moves(p.events, CARD) == [
        "start identify",
        "identify->verify on provide_customer_number [found]",
        "verify->verify on verify_identity [not verified]",
        "verify->verify on verify_identity [not verified]",
        "verify->locked on verify_identity [three failed attempts]",
        "finish locked transferred",
    ]
    assert backend_tools(p.events, "bank") == ["find_customer"] + ["verify_customer"] * 3
    assert rows(data_dir, "bank", "SELECT * FROM card_orders WHERE customer_id = '654321'") == []
    (transfer,) = of(p.events, ev.TransferRequested)
    assert transfer.target == get_agent("banking").transfer_target
    assert ended(p).outcome == "transferred"
    assert p.report.ended == "transferred"
    act = p.report.activities[-1]
    assert act["name"] == "transfer"
    assert act["activityParams"]["transferTarget"] == "tel:+15550100200"


def test_banking_balance_three_failures_lock_and_transfer(calls: dict[str, Played]) -> None:
    p = calls["banking-balance-locked"]
    assert moves(p.events, BALANCE) == [
        "start verify",
        "verify->verify on check_balance_identity [not verified]",
        "verify->verify on check_balance_identity [not verified]",
        "verify->locked on check_balance_identity [three failed attempts]",
        "finish locked transferred",
    ]
    for call in backend_calls(p.events, "bank"):
        out = json.loads(result_of(p.events, call).output)
        assert out["verified"] is False and "accounts" not in out  # nothing leaked
    assert ended(p).outcome == "transferred"
    assert p.report.ended == "transferred"
    assert p.report.activities[-1]["name"] == "transfer"


def test_banking_cancel_midway_orders_nothing_then_balance(
    calls: dict[str, Played], data_dir: Path
) -> None:
    p = calls["banking-cancel"]
    assert moves(p.events, CARD) == [
        "start identify",
        "identify->verify on provide_customer_number [found]",
        "verify->confirm_address on verify_identity [verified]",
        "confirm_address->confirm_address on cancel_card_replacement",
        "finish confirm_address abandoned",
    ]
    assert moves(p.events, BALANCE) == [
        "start verify",
        "verify->told on check_balance_identity [verified]",
        "finish told completed",
    ]
    assert "order_replacement_card" not in backend_tools(p.events, "bank")
    assert rows(data_dir, "bank", "SELECT * FROM card_orders WHERE customer_id = '246810'") == []
    assert rows(data_dir, "bank", "SELECT status FROM cards WHERE last4 = '1906'") == [("active",)]
    (balance,) = [c for c in backend_calls(p.events, "bank") if c.name == "get_balance"]
    assert json.loads(result_of(p.events, balance).output)["accounts"]
    assert ended(p).outcome == "completed"
    assert p.report.activities[-1]["name"] == "hangup"


def _barge_ins(p: Played) -> list[ev.TruncateRequested]:
    """The truncations, each checked against what the simulated caller heard.

    A barge-in truncates only audio the caller had not heard yet: on a loaded
    machine the fake model may produce audio no faster than the caller plays it,
    and the caller then has heard everything sent when it speaks (nothing to cut).
    """
    trunc = of(p.events, ev.TruncateRequested)
    stops = [e for e in of(p.events, ev.PlaybackStopped) if e.reason == "barge_in"]
    # A stream still being sent is stopped at the barge-in; one already sent in
    # full (stopped as "done") is not stopped again: VAIC's barge-in ends its
    # playout, and the item is still truncated at what the caller heard.
    assert len(stops) <= len(trunc)
    for s in stops:  # the stopped stream's item is cut at the same point, or never heard
        assert s.played_ms == 0 or any(t.audio_end_ms == s.played_ms for t in trunc)
    assert all(t.audio_end_ms > 0 for t in trunc)
    assert len(of(p.events, ev.ItemTruncated)) == len(trunc)
    # within 40 ms of real time: the caller plays at 1 / DEFAULT_PACE (4x)
    assert truncation_errors(p.events, p.report, speed=1 / DEFAULT_PACE) == []
    # (none at all when every barge-in came after the caller had heard all that
    # was sent: truncation_errors has checked that nothing unheard was kept)
    assert len(trunc) <= sum(s.interrupted for s in p.report.play_streams)
    return trunc


def _state_at(events: list[ev.Event], seq: int, fsa: str) -> str:
    """The FSA's state when the decision at ``seq`` was made."""
    state = ""
    for e in events:
        if e.seq >= seq:
            break
        if isinstance(e, ev.FsaStarted) and e.fsa == fsa:
            state = e.state
        elif isinstance(e, ev.FsaTransition) and e.fsa == fsa:
            state = e.target
    return state


def test_banking_barge_in_during_steps_still_orders_once(
    calls: dict[str, Played], data_dir: Path
) -> None:
    p = calls["banking-barge-in"]
    trunc = _barge_ins(p)
    # Both interruptions happened while the FSA waited on a step.
    assert {_state_at(p.events, t.seq, CARD) for t in trunc} <= {
        "confirm_address",
        "confirm_replacement",
    }
    assert moves(p.events, CARD)[-2:] == [
        "confirm_replacement->done on confirm_card_replacement [ordered]",
        "finish done completed",
    ]
    assert rows(
        data_dir,
        "bank",
        "SELECT reason FROM card_orders WHERE customer_id = '123456' AND card_last4 = '1881'",
    ) == [("damaged",)]
    assert ended(p).outcome == "completed"
    assert p.report.activities[-1]["name"] == "hangup"


# ---------------------------------------------------------------- healthcare

APPT = "appointment"


def test_healthcare_books_one_appointment(calls: dict[str, Played], data_dir: Path) -> None:
    p = calls["healthcare"]
    assert moves(p.events, APPT) == [
        "start identify",
        "identify->want on identify_patient [found]",
        "want->choose on search_slots [slots free]",
        "choose->confirm on choose_slot",
        "confirm->booked on confirm_booking [booked]",
        "finish booked completed",
    ]
    assert backend_tools(p.events, "clinic") == [
        "find_patient",
        "list_free_slots",
        "book_appointment",
    ]
    assert rows(
        data_dir, "clinic", "SELECT slot_id FROM appointments WHERE patient_id = 'P-1001'"
    ) == [("S101",)]
    assert ended(p).outcome == "completed"
    assert p.report.activities[-1]["name"] == "hangup"


def test_healthcare_declined_then_cancelled_books_nothing(
    calls: dict[str, Played], data_dir: Path
) -> None:
    p = calls["healthcare-cancel"]
    assert moves(p.events, APPT) == [
        "start identify",
        "identify->want on identify_patient [found]",
        "want->choose on search_slots [slots free]",
        "choose->confirm on choose_slot",
        "confirm->confirm on confirm_booking [not confirmed]",
        "confirm->confirm on cancel_appointment",
        "finish confirm abandoned",
    ]
    assert "book_appointment" not in backend_tools(p.events, "clinic")
    assert rows(data_dir, "clinic", "SELECT * FROM appointments WHERE patient_id = 'P-1003'") == []
    assert ended(p).outcome == "transferred"
    assert p.report.ended == "transferred"
    assert p.report.activities[-1]["activityParams"]["transferTarget"] == "tel:+15550100300"


def test_healthcare_not_found_then_barge_in_while_offering_slots(
    calls: dict[str, Played], data_dir: Path
) -> None:
    p = calls["healthcare-barge-in"]
    assert moves(p.events, APPT) == [
        "start identify",
        "identify->identify on identify_patient [not found]",
        "identify->want on identify_patient [found]",
        "want->choose on search_slots [slots free]",
        "choose->confirm on choose_slot",
        "confirm->booked on confirm_booking [booked]",
        "finish booked completed",
    ]
    for trunc in _barge_ins(p):
        assert _state_at(p.events, trunc.seq, APPT) == "choose"
    assert rows(
        data_dir, "clinic", "SELECT slot_id FROM appointments WHERE patient_id = 'P-1002'"
    ) == [("S103",), ("S105",)]  # S103 is from the sample data
    assert ended(p).outcome == "completed"


# -------------------------------------------------------------------- retail

STATUS = "order_status"
RETURN = "return_item"


def test_retail_status_then_return(calls: dict[str, Played], data_dir: Path) -> None:
    p = calls["retail"]
    assert moves(p.events, STATUS) == [
        "start lookup",
        "lookup->told on look_up_order [found]",
        "finish told completed",
    ]
    assert moves(p.events, RETURN) == [
        "start identify",
        "identify->choose_item on identify_return_order [found]",
        "choose_item->confirm on choose_return_item",
        "confirm->returned on confirm_return [created]",
        "finish returned completed",
    ]
    (create,) = [c for c in backend_calls(p.events, "shop") if c.name == "create_return"]
    out = json.loads(result_of(p.events, create).output)
    assert out["created"] is True
    # retail-barge-in (same lane, earlier) returned the boots already: one return row,
    # and this call got the same return back.
    assert out["already_started"] is True
    assert rows(data_dir, "shop", "SELECT order_number, sku FROM returns") == [("A1001", "BT-200")]
    assert ended(p).outcome == "completed"


def test_retail_cancel_creates_no_return(calls: dict[str, Played]) -> None:
    p = calls["retail-cancel"]
    assert moves(p.events, RETURN) == [
        "start identify",
        "identify->choose_item on identify_return_order [found]",
        "choose_item->choose_item on cancel_return_item",
        "finish choose_item abandoned",
    ]
    assert "create_return" not in backend_tools(p.events, "shop")
    assert ended(p).outcome == "completed"
    assert p.report.activities[-1]["name"] == "hangup"


def test_retail_not_found_then_barge_ins_during_steps(
    calls: dict[str, Played], data_dir: Path
) -> None:
    p = calls["retail-barge-in"]
    assert moves(p.events, STATUS) == [
        "start lookup",
        "lookup->lookup on look_up_order [not found]",
        "lookup->told on look_up_order [found]",
        "finish told completed",
    ]
    assert moves(p.events, RETURN)[-2:] == [
        "confirm->returned on confirm_return [created]",
        "finish returned completed",
    ]
    for trunc in _barge_ins(p):
        assert _state_at(p.events, trunc.seq, RETURN) in ("", "confirm")
    (create,) = [c for c in backend_calls(p.events, "shop") if c.name == "create_return"]
    assert json.loads(result_of(p.events, create).output)["already_started"] is False
    keys = rows(data_dir, "shop", "SELECT key FROM idempotency WHERE tool = 'create_return'")
    assert (create.idempotency_key,) in keys
    assert ended(p).outcome == "completed"


# ------------------------------------------------- replay against a changed FSA


def _patched(agent: Agent, fsa: str, state: str, step: str, index: int, go: Go) -> Agent:
    """``agent`` with one ``Go`` of one step replaced (a new, valid definition)."""

    def fix_fsa(f: FSA) -> FSA:
        if f.name != fsa:
            return f
        states = []
        for st in f.states:
            if st.name == state:
                steps = tuple(
                    dataclasses.replace(
                        s, go=tuple(go if i == index else g for i, g in enumerate(s.go))
                    )
                    if s.name == step
                    else s
                    for s in st.steps
                )
                st = dataclasses.replace(st, steps=steps)
            states.append(st)
        return dataclasses.replace(f, states=tuple(states))

    return dataclasses.replace(agent, fsas=tuple(fix_fsa(f) for f in agent.fsas))


def _registry(changed: Agent) -> Any:
    return lambda name: changed if name == changed.name else get_agent(name)


def _first_after_result(events: list[ev.Event], tool: str, nth: int) -> ev.FsaTransition:
    """The FsaTransition decided for the ``nth`` (from 0) result of backend ``tool``."""
    results = [e for e in of(events, ev.ToolResult) if e.name == tool]
    res = results[nth]
    return next(e for e in events if isinstance(e, ev.FsaTransition) and e.seq > res.seq)


def test_removed_verified_guard_diverges_at_the_first_failed_check(
    calls: dict[str, Played],
) -> None:
    events = calls["banking-failed-verification"].events
    # Without the 'verified' guard any identity check passes: a security regression.
    changed = _patched(
        get_agent("banking"), CARD, "verify", "verify_identity", 0, Go("confirm_address")
    )
    result = replay(events, agents=_registry(changed))
    div = result.divergence
    assert div is not None
    expected = _first_after_result(events, "verify_customer", 0)
    assert div.position == expected.seq
    assert div.recorded == expected
    assert (expected.target, expected.guard) == ("verify", "not verified")
    assert isinstance(div.new, ev.FsaTransition)
    assert (div.new.source, div.new.target, div.new.guard) == ("verify", "confirm_address", "")
    last = div.inputs_before[-1]
    assert isinstance(last, ev.ToolResult) and last.name == "verify_customer"
    # Every decision before it still matched.
    assert result.decisions == sum(
        isinstance(e, ev.Decision) and e.seq <= expected.seq for e in events
    )


def test_changed_transition_target_diverges_at_the_third_failed_check(
    calls: dict[str, Played],
) -> None:
    events = calls["banking-failed-verification"].events
    # Out of attempts now sends the caller back to identify instead of a human.
    changed = _patched(
        get_agent("banking"),
        CARD,
        "verify",
        "verify_identity",
        1,
        Go("identify", when=lambda c: c.attempts >= 3, guard="three failed attempts"),
    )
    result = replay(events, agents=_registry(changed))
    div = result.divergence
    assert div is not None
    expected = _first_after_result(events, "verify_customer", 2)
    assert (expected.target, expected.guard) == ("locked", "three failed attempts")
    assert div.position == expected.seq and div.recorded == expected
    assert isinstance(div.new, ev.FsaTransition) and div.new.target == "identify"
    # The first two failed checks replayed identically: their transitions come earlier.
    earlier = [
        e
        for e in of(events, ev.FsaTransition)
        if e.seq < expected.seq and e.guard == "not verified"
    ]
    assert len(earlier) == 2


def test_unchanged_fsa_built_anew_replays_identically(calls: dict[str, Played]) -> None:
    # A rebuilt but equivalent agent (same guards, same targets) is not a divergence.
    events = calls["banking"].events
    agent = get_agent("banking")
    same = _patched(agent, CARD, "verify", "verify_identity", 2, Go("verify", guard="not verified"))
    assert replay(events, agents=_registry(same)).identical
