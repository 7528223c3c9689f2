"""The example agents: definitions validate, and each FSA runs through the engine core
with synthetic inputs and tool results from the REAL backends (called through ToolHub)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import fastagent
from fastagent import events as ev
from fastagent.admission import AdmittingEngine
from fastagent.agents import agent_names, get_agent
from fastagent.fsa import FSA, Action, FsaDefinitionError, Go, Slot, State, Step, diagram, validate
from fastagent.testing.scenario import load_scenario, response_segments
from fastagent.tools import ToolHub

# ------------------------------------------------------------------ definitions


def test_every_agent_validates() -> None:
    for name in agent_names():
        agent = get_agent(name)
        assert agent.name == name
        assert agent.scenario == f"{name}.json"
        for f in agent.fsas:
            assert validate(f) is f
            assert diagram(f).startswith("stateDiagram-v2")
        step_names = [s.name for f in agent.fsas for st in f.states for s in st.steps]
        assert len(step_names) == len(set(step_names)), "step tools must be unique per agent"
        backend = {
            a.tool for f in agent.fsas for st in f.states for s in st.steps if (a := s.action)
        }
        assert not backend & set(step_names), "a step must not shadow a backend tool"


def _fsa(*states: State, slots: tuple[Slot, ...] = ()) -> FSA:
    return FSA("broken", "start_broken", "Break things.", "a", states, slots=slots)


def _step(name: str, *targets: str, **kw: Any) -> Step:
    return Step(name, name, go=tuple(Go(t) for t in targets), **kw)


DONE = State("done", "Bye.", terminal=True)


@pytest.mark.parametrize(
    ("fsa", "message"),
    [
        (
            _fsa(
                State("a", "A", steps=(_step("go", "done"),)),
                DONE,
                State("island", "I", terminal=True),
            ),
            "FSA 'broken', state 'island': unreachable from the initial state",
        ),
        (
            _fsa(State("a", "A", steps=(_step("go", "b"),)), State("b", "B"), DONE),
            "FSA 'broken', state 'b': dead end",
        ),
        (
            _fsa(State("a", "A", steps=(_step("go", "nowhere"),)), DONE),
            "FSA 'broken', state 'a': transition to unknown state 'nowhere'",
        ),
        (
            _fsa(
                State("a", "A", steps=(_step("go", "b"),)),
                State("b", "B", steps=(_step("go", "done"),)),
                DONE,
            ),
            "FSA 'broken', state 'b': duplicate tool name 'go'",
        ),
        (
            _fsa(
                State("a", "A", steps=(_step("go", "done"),)),
                State("done", "Bye.", terminal=True, steps=(_step("again", "a"),)),
            ),
            "FSA 'broken', state 'done': terminal state has outgoing transitions",
        ),
        (
            _fsa(
                State(
                    "a",
                    "A",
                    steps=(_step("buy", "done", action=Action("pay", side_effect=True)),),
                ),
                DONE,
            ),
            "FSA 'broken', state 'a': step 'buy' has a side effect without confirmation",
        ),
        (
            _fsa(
                State("a", "A", steps=(_step("go", "pay"),)),
                State(
                    "pay",
                    "P",
                    on_enter=Action("pay", side_effect=True),
                    after=(Go("done"),),
                ),
                DONE,
            ),
            "FSA 'broken', state 'pay': side effect on enter",
        ),
        (
            _fsa(State("a", "A", steps=(_step("go", "done", slots=("ghost",)),)), DONE),
            "FSA 'broken', state 'a': step 'go' uses unknown slot 'ghost'",
        ),
    ],
    ids=[
        "unreachable",
        "dead-end",
        "unknown-target",
        "duplicate-tool",
        "terminal-outgoing",
        "side-effect-unconfirmed",
        "side-effect-on-enter",
        "unknown-slot",
    ],
)
def test_definition_errors_name_the_fsa_and_state(fsa: FSA, message: str) -> None:
    with pytest.raises(FsaDefinitionError) as err:
        validate(fsa)
    assert str(err.value).startswith(message)


# ------------------------------------------------------- driving the engine core


@pytest.fixture(scope="module")
def hubs(loop: asyncio.AbstractEventLoop, data_dir: Path) -> Iterator[dict[str, ToolHub]]:
    made = {n: ToolHub(get_agent(n)) for n in ("banking", "healthcare", "retail")}

    async def each(method: str) -> None:
        await asyncio.gather(*(getattr(h, method)() for h in made.values()))

    loop.run_until_complete(each("start"))
    yield made
    loop.run_until_complete(each("aclose"))


def test_actions_match_the_backend_tools(
    loop: asyncio.AbstractEventLoop, hubs: dict[str, ToolHub]
) -> None:
    """Every action names a listed tool; its slot args are the tool's parameters."""
    for name, hub in hubs.items():
        listed = {
            t.name: t for tools in loop.run_until_complete(hub.list_tools()).values() for t in tools
        }
        for f in get_agent(name).fsas:
            actions = [s.action for st in f.states for s in st.steps if s.action]
            actions += [st.on_enter for st in f.states if st.on_enter]
            for a in actions:
                assert a.tool in listed, f"{name}/{f.name}: {a.tool} is not served"
                schema = listed[a.tool].parameters
                assert set(a.args) <= set(schema["properties"]), f"{f.name}: {a.tool} args"
                assert set(schema.get("required", ())) <= set(a.args), (
                    f"{f.name}: {a.tool} required"
                )
                if a.side_effect:
                    assert "idempotency_key" in schema["properties"], a.tool


class Call:
    """One simulated call: synthetic inputs into the core, backend actions run for real."""

    def __init__(self, agent: str, hub: ToolHub | None, loop: asyncio.AbstractEventLoop) -> None:
        self.engine = AdmittingEngine(call_id=f"test-{agent}")
        self.hub, self.loop = hub, loop
        self.seq = 0
        self.at = 1_700_000_000_000_000
        self.log: list[ev.Event] = []
        self.responses = 0
        self.feed(
            ev.SessionInitiated,
            config=ev.CallConfig(agent=agent),
            offered_formats=("raw/mulaw",),
        )
        if hub is not None:
            for server, tools in loop.run_until_complete(hub.list_tools()).items():
                self.feed(ev.ToolsListed, server=server, tools=tools)
        self.feed(ev.CallStarted, caller="+15550100")
        self.model()  # the greeting

    def feed(self, cls: type[ev.Input], **fields: Any) -> list[ev.Decision]:
        self.seq += 1
        self.at += 20_000
        event = cls(call_id=self.engine.call_id, seq=self.seq, at=self.at, **fields)
        self.log.append(event)
        out = self.engine.handle(event)
        self.log.extend(out)
        if out:
            self.seq = out[-1].seq
        return out

    def model(
        self, *calls: tuple[str, dict[str, Any]], status: str = "completed"
    ) -> dict[str, Any]:
        """One model response making ``calls``; returns the output told for the last one."""
        self.responses += 1
        rid = f"resp-{self.responses}"
        self.feed(ev.ResponseStarted, response_id=rid)
        call_ids = []
        for i, (name, args) in enumerate(calls):
            call_ids.append(f"fc-{self.responses}-{i}")
            self.feed(
                ev.FunctionCallRequested,
                response_id=rid,
                item_id=f"item-{self.responses}-{i}",
                tool_call_id=call_ids[-1],
                name=name,
                arguments=json.dumps(args),
            )
        pending = self.feed(ev.ResponseDone, response_id=rid, status=status)
        while pending:
            new: list[ev.Decision] = []
            for d in pending:
                if isinstance(d, ev.FunctionCallDispatched) and d.server != "fastagent":
                    assert self.hub is not None
                    res = self.loop.run_until_complete(
                        self.hub.call(d.server, d.name, d.arguments, d.idempotency_key)
                    )
                    new += self.feed(
                        ev.ToolResult,
                        tool_call_id=d.tool_call_id,
                        name=d.name,
                        ok=res.ok,
                        output=res.output,
                        error=res.error,
                        duration_us=res.duration_us,
                    )
            pending = new
        told = [
            json.loads(e.output)
            for e in self.log
            if isinstance(e, ev.FunctionOutputSent) and call_ids and e.tool_call_id == call_ids[-1]
        ]
        return told[-1] if told else {}

    def of(self, cls: type[ev.Event]) -> list[Any]:
        return [e for e in self.log if isinstance(e, cls)]

    def transitions(self) -> list[tuple[str, str, str]]:
        """(source, target, guard) of each transition, without the "calling <action>" steps."""
        return [
            (t.source, t.target, t.guard)
            for t in self.of(ev.FsaTransition)
            if not t.reason.startswith("calling ")
        ]

    def dispatched(self, server: str | None = None) -> list[str]:
        return [
            d.name
            for d in self.of(ev.FunctionCallDispatched)
            if server is None or d.server == server
        ]

    def index(self, pred: Any) -> int:
        return next(i for i, e in enumerate(self.log) if pred(e))


def _count(data_dir: Path, db: str, table: str) -> int:
    con = sqlite3.connect(f"file:{data_dir / db}.sqlite?mode=ro", uri=True)
    try:
        return int(con.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
    finally:
        con.close()


CUSTOMER = {"customer_id": "123456"}
IDENTITY = {"date_of_birth": "1985-12-10", "card_last4": "4242"}


def test_card_replacement_success(
    loop: asyncio.AbstractEventLoop, hubs: dict[str, ToolHub], data_dir: Path
) -> None:
    c = Call("banking", hubs["banking"], loop)
    assert c.model(("start_card_replacement", {}))["state"] == "identify"
    out = c.model(("provide_customer_number", CUSTOMER))
    assert out["state"] == "verify" and out["result"]["first_name"] == "Ada"
    out = c.model(("verify_identity", IDENTITY))
    assert out["state"] == "confirm_address"
    assert out["result"]["address"].startswith("12 Analytical Row")
    tools = c.of(ev.ModelConfigured)[-1].tool_names
    assert "confirm_delivery_address" in tools and "cancel_card_replacement" in tools
    assert "verify_identity" not in tools
    assert c.model(("confirm_delivery_address", {"confirmed": True}))["state"] == (
        "confirm_replacement"
    )
    # A "no" does not order anything; the caller may then say yes.
    out = c.model(("confirm_card_replacement", {"reason": "lost", "confirmed": False}))
    assert out["ok"] is False and "order_replacement_card" not in c.dispatched()
    out = c.model(("confirm_card_replacement", {"reason": "lost", "confirmed": True}))
    assert out["state"] == "done" and out["result"]["order_id"].startswith("CR-")

    assert c.of(ev.FsaStarted)[0].fsa == "card_replacement"
    assert c.transitions() == [
        ("identify", "verify", "found"),
        ("verify", "confirm_address", "verified"),
        ("confirm_address", "confirm_replacement", ""),
        ("confirm_replacement", "confirm_replacement", "not confirmed"),
        ("confirm_replacement", "done", "ordered"),
    ]
    finished = c.of(ev.FsaFinished)
    assert [(f.fsa, f.state, f.outcome) for f in finished] == [
        ("card_replacement", "done", "completed")
    ]
    assert c.dispatched("bank") == ["find_customer", "verify_customer", "order_replacement_card"]
    order = next(d for d in c.of(ev.FunctionCallDispatched) if d.name == "order_replacement_card")
    assert json.loads(order.arguments) == {**{"card_last4": "4242", "reason": "lost"}, **CUSTOMER}
    assert order.idempotency_key == f"{c.engine.call_id}:{order.seq}"
    calling = [t.reason for t in c.of(ev.FsaTransition) if t.reason.startswith("calling ")]
    assert calling == [
        "calling find_customer",
        "calling verify_customer",
        "calling order_replacement_card",
    ]
    # The side effect comes only after the confirmed step was dispatched.
    confirmed = c.index(
        lambda e: (
            isinstance(e, ev.FunctionCallDispatched)
            and e.name == "confirm_card_replacement"
            and json.loads(e.arguments)["confirmed"] is True
        )
    )
    assert c.index(lambda e: e is order) > confirmed
    # Every engine tool call is dispatched (audited) with server "fastagent".
    assert c.dispatched("fastagent")[0] == "start_card_replacement"
    assert _count(data_dir, "bank", "card_orders") == 1


def test_card_replacement_three_failed_verifications_transfer(
    loop: asyncio.AbstractEventLoop, hubs: dict[str, ToolHub]
) -> None:
    c = Call("banking", hubs["banking"], loop)
    c.model(("start_card_replacement", {}))
    c.model(("provide_customer_number", {"customer_id": "654321"}))
    wrong = {"date_of_birth": "1990-06-24", "card_last4": "1954"}
    assert c.model(("verify_identity", wrong))["state"] == "verify"
    assert c.model(("verify_identity", wrong))["state"] == "verify"
    out = c.model(("verify_identity", wrong))
    assert out["state"] == "locked"
    assert c.transitions()[-3:] == [
        ("verify", "verify", "not verified"),
        ("verify", "verify", "not verified"),
        ("verify", "locked", "three failed attempts"),
    ]
    assert [(f.state, f.outcome) for f in c.of(ev.FsaFinished)] == [("locked", "transferred")]
    assert not c.of(ev.TransferRequested)
    c.model()  # the model says it is transferring; then the engine transfers
    transfer = c.of(ev.TransferRequested)
    assert transfer and transfer[0].target == "tel:+15550100200"
    assert "order_replacement_card" not in c.dispatched()


def test_card_replacement_cancelled_midway_orders_nothing(
    loop: asyncio.AbstractEventLoop, hubs: dict[str, ToolHub]
) -> None:
    c = Call("banking", hubs["banking"], loop)
    c.model(("start_card_replacement", {}))
    c.model(("provide_customer_number", CUSTOMER))
    c.model(("verify_identity", IDENTITY))
    out = c.model(("cancel_card_replacement", {}))
    assert out["cancelled"] is True
    assert [(f.state, f.outcome) for f in c.of(ev.FsaFinished)] == [
        ("confirm_address", "abandoned")
    ]
    assert "cancel_card_replacement" not in c.of(ev.ModelConfigured)[-1].tool_names
    assert "start_card_replacement" in c.of(ev.ModelConfigured)[-1].tool_names
    assert "order_replacement_card" not in c.dispatched()


def test_confirmation_in_an_interrupted_response_never_orders(
    loop: asyncio.AbstractEventLoop, hubs: dict[str, ToolHub]
) -> None:
    c = Call("banking", hubs["banking"], loop)
    for step in [
        ("start_card_replacement", {}),
        ("provide_customer_number", CUSTOMER),
        ("verify_identity", IDENTITY),
        ("confirm_delivery_address", {"confirmed": True}),
    ]:
        c.model(step)
    confirm = ("confirm_card_replacement", {"reason": "stolen", "confirmed": True})
    c.model(confirm, status="cancelled")
    skipped = c.of(ev.FunctionCallSkipped)
    assert [s.name for s in skipped] == ["confirm_card_replacement"]
    assert "order_replacement_card" not in c.dispatched()
    assert c.engine.runs["card_replacement"].state == "confirm_replacement"


def test_balance_inquiry(loop: asyncio.AbstractEventLoop, hubs: dict[str, ToolHub]) -> None:
    c = Call("banking", hubs["banking"], loop)
    c.model(("start_balance_inquiry", {}))
    bad = c.model(("check_balance_identity", {"customer_id": "12", **IDENTITY}))
    assert bad["ok"] is False and "customer_id" in bad["error"]  # slot validation, no call
    assert "get_balance" not in c.dispatched()
    out = c.model(("check_balance_identity", {**CUSTOMER, **IDENTITY}))
    assert out["state"] == "told"
    assert [a["account"] for a in out["result"]["accounts"]] == ["ACC-1001", "ACC-1002"]
    assert [(f.fsa, f.outcome) for f in c.of(ev.FsaFinished)] == [("balance_inquiry", "completed")]


def test_appointment_booking(
    loop: asyncio.AbstractEventLoop, hubs: dict[str, ToolHub], data_dir: Path
) -> None:
    before = _count(data_dir, "clinic", "appointments")
    c = Call("healthcare", hubs["healthcare"], loop)
    c.model(("start_appointment_booking", {}))
    nobody = c.model(("identify_patient", {"last_name": "Nobody", "date_of_birth": "1979-04-02"}))
    assert nobody["state"] == "identify" and nobody["result"]["found"] is False
    patient = {"last_name": "Garcia", "date_of_birth": "1979-04-02"}
    assert c.model(("identify_patient", patient))["state"] == "want"
    out = c.model(("search_slots", {"specialty": "general", "preferred_date": "2027-01-11"}))
    assert out["state"] == "choose"
    assert [s["slot_id"] for s in out["result"]["slots"]][:2] == ["S101", "S102"]
    assert "S103" not in [s["slot_id"] for s in out["result"]["slots"]]  # taken
    assert c.model(("choose_slot", {"slot_id": "S101"}))["state"] == "confirm"
    out = c.model(("confirm_booking", {"confirmed": True}))
    assert out["state"] == "booked" and out["result"]["starts_at"] == "2027-01-11 09:00"
    assert c.dispatched("clinic") == [
        "find_patient",
        "find_patient",
        "list_free_slots",
        "book_appointment",
    ]
    assert _count(data_dir, "clinic", "appointments") == before + 1


def test_appointment_cancelled_midway(
    loop: asyncio.AbstractEventLoop, hubs: dict[str, ToolHub]
) -> None:
    c = Call("healthcare", hubs["healthcare"], loop)
    c.model(("start_appointment_booking", {}))
    c.model(("identify_patient", {"last_name": "chen", "date_of_birth": "1994-08-15"}))
    c.model(("search_slots", {"specialty": "dermatology", "preferred_date": "2027-01-11"}))
    c.model(("choose_slot", {"slot_id": "S201"}))
    c.model(("cancel_appointment", {}))
    assert [(f.state, f.outcome) for f in c.of(ev.FsaFinished)] == [("confirm", "abandoned")]
    assert "book_appointment" not in c.dispatched()


def test_order_status_and_return(
    loop: asyncio.AbstractEventLoop, hubs: dict[str, ToolHub], data_dir: Path
) -> None:
    c = Call("retail", hubs["retail"], loop)
    c.model(("start_order_status", {}))
    out = c.model(("look_up_order", {"order_number": "A1002", "postal_code": "10001"}))
    assert out["state"] == "told" and out["result"]["status"] == "shipped"
    c.model(("start_return", {}))
    c.model(("identify_return_order", {"order_number": "A1001", "postal_code": "94107"}))
    # Socks are not returnable: the backend refuses, the FSA goes back to choosing.
    c.model(("choose_return_item", {"sku": "SK-010", "return_reason": "changed_mind"}))
    out = c.model(("confirm_return", {"confirmed": True}))
    assert out["state"] == "choose_item" and out["result"]["created"] is False
    c.model(("choose_return_item", {"sku": "BT-200", "return_reason": "wrong_size"}))
    out = c.model(("confirm_return", {"confirmed": True}))
    assert out["state"] == "returned" and out["result"]["refund"] == "129.00"
    assert [(f.fsa, f.outcome) for f in c.of(ev.FsaFinished)] == [
        ("order_status", "completed"),
        ("return_item", "completed"),
    ]
    assert _count(data_dir, "shop", "returns") == 1


def test_default_agent_small_talk_ends_the_call(loop: asyncio.AbstractEventLoop) -> None:
    c = Call("default", None, loop)
    out = c.model(("end_call", {"reason": "caller said goodbye"}))
    assert out["ok"] is True
    c.model()
    assert [h.reason for h in c.of(ev.HangupRequested)] == ["caller said goodbye"]


# ------------------------------------------------------------- demo scenarios

SCENARIOS = sorted((Path(fastagent.__file__).parent / "examples" / "scenarios").glob("*.json"))


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_scenario_model_steps_drive_the_fsas(
    path: Path, loop: asyncio.AbstractEventLoop, hubs: dict[str, ToolHub]
) -> None:
    """Each scripted call, in order, is accepted by the agent's FSAs with real backends,
    every ``expect_output`` matches, and the call ends with a hangup or a transfer."""
    sc = load_scenario(path)
    agent = get_agent(sc.agent)
    c = Call(sc.agent, hubs.get(sc.agent), loop)
    steps = [sc.greeting[1:]] + [t.model for t in sc.turns if t.model]  # greeting said already
    for turn in steps:
        for segment in response_segments(turn):
            calls = [(s.call, s.args, s.expect_output) for s in segment if s.call]
            c.model(*((name, args) for name, args, _ in calls))
            told = {e.tool_call_id: e.output for e in c.of(ev.FunctionOutputSent)}
            for i, (name, _, expect) in enumerate(calls):  # parallel calls: each its own
                out = json.loads(told.get(f"fc-{c.responses}-{i}", "{}"))
                text = json.dumps(out, sort_keys=True)
                assert expect is None or expect in text, f"{path.name}: {name} -> {text}"
    sw = sc.fake_model
    last = sc.turns[-1].model if sc.turns else ()
    # A model-failure scenario ends in the fallback, which this test does not play
    # (tests/test_models_e2e.py does).
    by_failure = bool(sw.ignore or sw.error_on or sw.unreachable or sw.no_session_created) or (
        bool(last) and all(s.fail for s in last)
    )
    assert by_failure or c.of(ev.HangupRequested) or c.of(ev.TransferRequested), path.name
    assert not c.of(ev.FunctionCallSkipped), path.name
    # Side effects only right after the confirmed step that asked for them.
    actions = [s.action for f in agent.fsas for st in f.states for s in st.steps if s.action]
    effects = {a.tool for a in actions if a.side_effect}
    for i, e in enumerate(c.log):
        if isinstance(e, ev.FunctionCallDispatched) and e.name in effects:
            before = [d for d in c.log[:i] if isinstance(d, ev.FunctionCallDispatched)]
            assert json.loads(before[-1].arguments).get("confirmed") is True, path.name
