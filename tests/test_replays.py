"""Recorded calls (replays/*.jsonl) as regression tests.

Each recording's inputs go through today's engine: what it decides (with the
live state folded from those decisions) must match the syrupy snapshot in
tests/__snapshots__/, and must be exactly what was recorded.  Re-record with
``python scripts/record_replays.py`` and refresh with ``--snapshot-update``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from syrupy.assertion import SnapshotAssertion

from fastagent import events as ev
from fastagent.replay import read_recording, replay
from fastagent.testing.snapshots import decisions_view, recordings, snapshot_view

REPLAYS = Path(__file__).resolve().parent.parent / "replays"
RECORDINGS = recordings(REPLAYS)


@pytest.mark.parametrize("path", RECORDINGS, ids=lambda p: p.stem)
def test_recording_replays_identically_and_matches_snapshot(
    path: Path, snapshot: SnapshotAssertion
) -> None:
    events = read_recording(path)
    assert isinstance(events[-1], ev.CallEnded)
    view = decisions_view(events)  # today's decisions, not the recorded ones
    assert view["decisions"]
    assert view == snapshot
    result = replay(events)
    assert result.identical, result.divergence and result.divergence.to_dict()


def test_the_pytest_plugin_fixture_replays_a_recording(
    fastagent_replay: Callable[..., dict[str, Any]],
) -> None:
    # The fixture comes from the `fastagent` pytest11 entry point, not from a conftest.
    path = REPLAYS / "banking.jsonl"
    view = fastagent_replay(path)
    assert view["identical"] and view["divergence"] is None
    assert view == decisions_view(read_recording(path))
    assert view["decisions"] == snapshot_view(read_recording(path))["decisions"]
    assert any(
        d["type"] == "FsaFinished" and d["outcome"] == "completed" for d in view["decisions"]
    )


def test_the_plugin_fixture_reports_a_divergence(
    fastagent_replay: Callable[..., dict[str, Any]],
) -> None:
    from fastagent.agents import get_agent

    banking = get_agent("banking")
    changed = type(banking)(**{**banking.__dict__, "instructions": "Be terse."})
    view = fastagent_replay(
        REPLAYS / "banking.jsonl", agents=lambda n: changed if n == "banking" else get_agent(n)
    )
    assert not view["identical"]
    div = view["divergence"]
    assert div["recorded"]["type"] == "ModelConfigured"  # the first session.update differs
    assert div["new"]["instructions"].startswith("Be terse.")


def test_snapshot_view_has_no_times_random_ids_or_timing() -> None:
    events = read_recording(REPLAYS / "banking-barge-in.jsonl")
    view = snapshot_view(events)
    text = repr(view)
    assert events[0].call_id not in text
    for row in view["decisions"]:
        assert "seq" not in row and "at" not in row and "call_id" not in row
        if row["type"] == "TruncateRequested":
            assert row["audio_end_ms"] == "<heard>"
        if row.get("tool_call_id", "").startswith("act-"):
            pytest.fail(f"action id not normalised: {row}")
        key = row.get("idempotency_key")
        if key is not None:
            assert key.startswith("<key-")
