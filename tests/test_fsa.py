"""FSA semantics in the core: background actions, several FSAs at once, validation."""

from __future__ import annotations

import json
from typing import Any

import pytest

from fastagent import events as ev
from fastagent.admission import AdmittingEngine
from fastagent.agent import Agent
from fastagent.fsa import FSA, Action, Go, Slot, State, Step, diagram

TRANSFER = FSA(
    name="transfer_money",
    intent="start_transfer",
    description="Move money between the caller's accounts.",
    initial="amount",
    slots=(Slot("amount", type="integer", description="whole euros"),),
    states=(
        State(
            "amount",
            "Ask how much to move.",
            steps=(
                Step(
                    "give_amount",
                    "The caller said the amount.",
                    slots=("amount",),
                    go=(Go("confirm"),),
                ),
            ),
        ),
        State(
            "confirm",
            "Read the amount back and ask for a yes.",
            steps=(
                Step(
                    "confirm_transfer",
                    "The caller answered.",
                    confirm=True,
                    action=Action(
                        "move_money", args=("amount",), side_effect=True, background=True
                    ),
                    go=(Go("done", when=lambda c: c.ok(), guard="moved"), Go("failed")),
                ),
            ),
        ),
        State("done", "Tell the caller the money moved.", terminal=True),
        State("failed", "Apologise.", terminal=True, outcome="failed"),
    ),
)
FAQ = FSA(
    name="faq",
    intent="start_faq",
    description="Answer a question about fees.",
    initial="ask",
    states=(
        State("ask", "Ask which fee.", steps=(Step("fee_answered", "Done.", go=(Go("end"),)),)),
        State("end", "Offer more help.", terminal=True),
    ),
)
AGENT = Agent(name="test-bank", instructions="Be brief.", fsas=(TRANSFER, FAQ))


class Call:
    def __init__(self) -> None:
        self.engine = AdmittingEngine("c", agents=lambda name: AGENT)
        self.log: list[ev.Event] = []
        self.t = 0
        self.n = 0
        self.feed(
            ev.SessionInitiated,
            config=ev.CallConfig(agent="test-bank"),
            offered_formats=("raw/mulaw",),
        )
        self.feed(ev.ToolsListed, server="bank", tools=(ev.ToolSpec(name="move_money"),))

    def feed(self, cls: type[ev.Input], **fields: Any) -> list[ev.Decision]:
        self.t += 1000
        inp = cls(call_id="c", seq=self.engine.next_seq, at=self.t, **fields)
        out = self.engine.handle(inp)
        self.log += [inp, *out]
        return out

    def model_calls(self, name: str, args: dict[str, Any] | None = None) -> list[ev.Decision]:
        self.n += 1
        rid = f"r{self.n}"
        self.feed(ev.ResponseStarted, response_id=rid)
        self.feed(
            ev.FunctionCallRequested,
            response_id=rid,
            item_id=f"f{self.n}",
            tool_call_id=f"call{self.n}",
            name=name,
            arguments=json.dumps(args or {}),
        )
        return self.feed(ev.ResponseDone, response_id=rid, status="completed")


def names(ds: list[ev.Decision]) -> list[str]:
    return [type(d).__name__ for d in ds]


def test_background_action_runs_while_another_fsa_talks() -> None:
    c = Call()
    out = c.model_calls("start_transfer")
    assert names(out)[:2] == ["FunctionCallDispatched", "FsaStarted"]
    conf = [d for d in out if isinstance(d, ev.ModelConfigured)][-1]
    assert "give_amount" in conf.tool_names and "start_faq" in conf.tool_names
    c.model_calls("give_amount", {"amount": 250})
    out = c.model_calls("confirm_transfer", {"confirmed": True})
    moved = [d for d in out if isinstance(d, ev.FunctionCallDispatched) and d.name == "move_money"]
    assert moved and moved[0].server == "bank"
    assert json.loads(moved[0].arguments) == {"amount": 250}
    told = [d for d in out if isinstance(d, ev.FunctionOutputSent)]
    assert told and "Working on it" in told[-1].output  # the model is told at once
    # The conversation goes on: a second FSA starts while the transfer runs.
    out = c.model_calls("start_faq")
    assert "FsaStarted" in names(out)
    assert set(c.engine.runs) == {"transfer_money", "faq"}
    # The backend finishes while the FAQ's response is active: the transition is
    # decided now; the model hears it as a message once that response is done.
    out = c.feed(
        ev.ToolResult,
        tool_call_id=moved[0].tool_call_id,
        name="move_money",
        ok=True,
        output='{"ok": true, "ref": "T1"}',
    )
    assert names(out) == ["FsaTransition", "FsaFinished", "ModelConfigured"]
    assert [d for d in out if isinstance(d, ev.FsaFinished)][0].outcome == "completed"
    assert set(c.engine.runs) == {"faq"}
    c.feed(ev.ResponseStarted, response_id="faq-answer")
    out = c.feed(ev.ResponseDone, response_id="faq-answer", status="completed")
    assert names(out) == ["MessageInjected", "ResponseRequested"]
    assert '"ref": "T1"' in out[0].text  # type: ignore[attr-defined]


def test_no_side_effect_without_explicit_yes_and_invalid_slots_ask_again() -> None:
    c = Call()
    c.model_calls("start_transfer")
    out = c.model_calls("give_amount", {"amount": "lots"})
    t = [d for d in out if isinstance(d, ev.FsaTransition)][0]
    assert t.source == t.target == "amount" and t.guard == "invalid"
    c.model_calls("give_amount", {"amount": 10})
    out = c.model_calls("confirm_transfer", {"confirmed": False})
    assert not [
        d for d in out if isinstance(d, ev.FunctionCallDispatched) and d.name == "move_money"
    ]
    out = c.model_calls("cancel_transfer_money")
    fin = [d for d in out if isinstance(d, ev.FsaFinished)][0]
    assert fin.outcome == "abandoned"
    conf = [d for d in out if isinstance(d, ev.ModelConfigured)][-1]
    assert "confirm_transfer" not in conf.tool_names and "start_transfer" in conf.tool_names


def test_step_tool_from_another_state_is_refused() -> None:
    c = Call()
    c.model_calls("start_transfer")
    out = c.model_calls("confirm_transfer", {"confirmed": True})
    assert any(isinstance(d, ev.FunctionCallSkipped) for d in out)


def test_side_effect_behind_no_confirmation_is_rejected_at_load() -> None:
    from fastagent.fsa import FsaDefinitionError, validate

    bad = FSA(
        name="oops",
        intent="start_oops",
        description="x",
        initial="a",
        slots=(Slot("n"),),
        states=(
            State(
                "a",
                "x",
                steps=(
                    Step(
                        "go",
                        "x",
                        slots=("n",),
                        action=Action("pay", side_effect=True),
                        go=(Go("b"),),
                    ),
                ),
            ),
            State("b", "x", terminal=True),
        ),
    )
    with pytest.raises(FsaDefinitionError, match="FSA 'oops', state 'a'.*without confirmation"):
        validate(bad)


def test_diagram_is_mermaid() -> None:
    text = diagram(TRANSFER)
    assert text.startswith("stateDiagram-v2")
    assert "confirm --> done: confirm_transfer [moved]" in text
