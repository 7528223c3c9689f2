"""Self-contained decisions (issue 10, point 1): the model configuration carries
the full tool specs, the shell builds its frames from decisions alone, and replay
sees a changed tool description or schema at the ModelConfigured event."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from fastagent import audio, live, vaic
from fastagent import events as ev
from fastagent.agent import Agent
from fastagent.agents import get_agent
from fastagent.core import LIVE_FRONTEND_POLICY
from fastagent.fsa import FSA
from fastagent.replay import read_recording, replay
from fastagent.service.realtime_link import configure_frames

REPLAYS = Path(__file__).resolve().parent.parent / "replays"


def _with_step_description(agent: Agent, step: str, description: str) -> Agent:
    """``agent`` with one FSA step's tool description changed (nothing else)."""

    def fsa(f: FSA) -> FSA:
        states = tuple(
            dataclasses.replace(
                st,
                steps=tuple(
                    dataclasses.replace(s, description=description) if s.name == step else s
                    for s in st.steps
                ),
            )
            for st in f.states
        )
        return dataclasses.replace(f, states=states)

    return dataclasses.replace(agent, fsas=tuple(fsa(f) for f in agent.fsas))


def test_an_old_model_configured_with_tool_names_still_loads() -> None:
    body = json.dumps(
        {
            "type": "ModelConfigured",
            "call_id": "c",
            "seq": 3,
            "at": 0,
            "instructions": "Be brief.",
            "tools": ["end_call", "start_faq"],
        }
    ).encode()
    e = ev.decode("ModelConfigured/v1", body)
    assert isinstance(e, ev.ModelConfigured)
    assert e.tools == (ev.ToolSpec(name="end_call"), ev.ToolSpec(name="start_faq"))
    assert e.tool_names == ("end_call", "start_faq")
    assert ev.topic_of(e) == "ModelConfigured/v3"


def test_model_configured_carries_full_tool_specs() -> None:
    events = read_recording(REPLAYS / "banking.jsonl")
    conf = next(e for e in events if isinstance(e, ev.ModelConfigured))
    end_call = next(t for t in conf.tools if t.name == "end_call")
    assert end_call.description.startswith("End the call")
    assert end_call.parameters["properties"] == {"reason": {"type": "string"}}
    # The Realtime frame is built from the decision alone.
    frame = json.loads(configure_frames(conf)[0])
    sent = {t["name"]: t for t in frame["session"]["tools"]}
    assert list(sent) == list(conf.tool_names)
    assert sent["end_call"]["description"] == end_call.description
    assert sent["end_call"]["parameters"] == end_call.parameters


@pytest.mark.parametrize("what", ["description", "schema"])
def test_replay_flags_a_changed_tool_at_model_configured(what: str) -> None:
    events = read_recording(REPLAYS / "retail.jsonl")
    agent = get_agent("retail")
    if what == "description":
        changed = _with_step_description(agent, "look_up_order", "Look the order up, politely.")
        name = "look_up_order"
    else:  # a slot's description is part of its step's parameter schema
        changed = dataclasses.replace(
            agent,
            fsas=tuple(
                dataclasses.replace(
                    f,
                    slots=tuple(
                        dataclasses.replace(s, description=s.description + " (on the receipt)")
                        if s.name == "order_number"
                        else s
                        for s in f.slots
                    ),
                )
                for f in agent.fsas
            ),
        )
        name = ""
    div = replay(events, lambda _: changed).divergence
    assert div is not None
    assert isinstance(div.recorded, ev.ModelConfigured), div.report()
    assert [f.name for f in div.fields] == ["tools"]
    assert ("politely" if name else "on the receipt") in str(div.fields[0].new)


@pytest.mark.parametrize(
    "table",
    [vaic._PASSTHROUGH, vaic._RESAMPLED, live._LIVE_PASSTHROUGH, live._LIVE_RESAMPLED],
)
def test_the_bridge_follows_from_the_accepted_formats(table: dict) -> None:
    """The shell sets its resamplers from SessionAccepted's two formats: the same
    rates the negotiation tables give, with no second negotiation."""
    for n in table.values():
        want = None if n.passthrough else (n.resample_from_hz, n.resample_to_hz)
        assert audio.bridge_rates(n.vaic_format, n.model_format) == want


def test_a_gpt_live_configuration_carries_the_frontend_and_the_model() -> None:
    """GPT-Live's session.start is built from the decision too: the voice model's
    instructions and the model's name are in it, not read from the live engine."""
    events = read_recording(REPLAYS / "live-banking.jsonl")
    accepted = next(e for e in events if isinstance(e, ev.SessionInitiated))
    conf = next(e for e in events if isinstance(e, ev.ModelConfigured))
    assert conf.model == accepted.config.model and conf.model.startswith("gpt-live")
    assert conf.frontend_instructions.endswith(LIVE_FRONTEND_POLICY)
    assert conf.tools and all(t.description for t in conf.tools)
    realtime_conf = next(
        e for e in read_recording(REPLAYS / "banking.jsonl") if isinstance(e, ev.ModelConfigured)
    )
    assert realtime_conf.model == "" and realtime_conf.frontend_instructions == ""
