"""The snapshot view: today's decisions, stable, and blind only to fields at their default."""

from __future__ import annotations

from pathlib import Path

import msgspec

from fastagent import events as ev
from fastagent.agents import get_agent
from fastagent.replay import read_recording
from fastagent.testing.snapshots import decisions_view, lean, snapshot_view

BANKING = Path(__file__).resolve().parent.parent / "replays" / "banking.jsonl"


def test_a_field_added_with_its_default_changes_no_view() -> None:
    # FsaFinished as it would be with one more field, left at its default.
    grown = msgspec.defstruct(
        "FsaFinished",
        [("attempts", int, 0), ("note", str, "")],
        bases=(ev.FsaFinished,),
        frozen=True,
        kw_only=True,
        tag="FsaFinished",
    )
    fields = {"call_id": "c", "seq": 3, "at": 0, "fsa": "f", "state": "done", "outcome": "ok"}
    assert lean(grown(**fields)) == lean(ev.FsaFinished(**fields))
    # Set to something else, it is a change.
    assert lean(grown(**fields, attempts=2)) != lean(ev.FsaFinished(**fields))


def test_nested_defaults_are_left_out_too() -> None:
    done = ev.ResponseDone(call_id="c", seq=1, at=0, response_id="r", status="completed")
    assert lean(done) == {
        "type": "ResponseDone",
        "call_id": "c",
        "seq": 1,
        "at": 0,
        "response_id": "r",
        "status": "completed",
    }
    used = msgspec.structs.replace(done, usage=ev.Usage(total_tokens=7))
    assert lean(used)["usage"] == {"total_tokens": 7}


def test_the_view_is_of_todays_decisions_not_the_recorded_ones() -> None:
    events = read_recording(BANKING)
    recorded = snapshot_view(events)
    assert decisions_view(events) == {**recorded, "identical": True, "divergence": None}
    banking = get_agent("banking")
    changed = type(banking)(**{**banking.__dict__, "greeting": "Hello from the new greeting."})
    view = decisions_view(events, agents=lambda n: changed if n == "banking" else get_agent(n))
    assert not view["identical"]
    assert view["divergence"]["recorded"]["type"] == "ResponseRequested"
    greeting = [d for d in view["decisions"] if d.get("reason") == "greeting"]
    assert greeting[0]["instructions"] == "Hello from the new greeting."
    # Everything after the first divergence is today's too: the view differs there only.
    diff = [(a, b) for a, b in zip(view["decisions"], recorded["decisions"], strict=True) if a != b]
    assert len(diff) == 1


def test_the_live_state_is_folded_from_todays_decisions() -> None:
    events = read_recording(BANKING)
    view = decisions_view(events)
    assert view["live"]["outcome"] == "completed" and view["live"]["status"] == "ended"
    assert "started_at" not in view["live"] and "caller_audio_ms" not in view["live"]
