"""Projections are pure folds: a whole-log fold equals the incrementally kept state."""

from __future__ import annotations

import copy

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from fastagent import events as ev
from fastagent.testing.synth import synthetic_call
from projections import live
from projections.trail import timeline, trail_rows, turn_latencies

CALL = synthetic_call("p-call", target_events=2_500, barge_in_every=2)


@settings(max_examples=40, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=len(CALL)), max_size=6))
def test_fold_of_whole_log_equals_incremental_state(cuts: list[int]) -> None:
    whole = live.fold(CALL)
    # The live service keeps state incrementally; a restart rebuilds it from a
    # copy at some position and goes on: every split must give the same state.
    state = live.CallState()
    start = 0
    for cut in sorted(set(cuts)) + [len(CALL)]:
        live.fold(CALL[start:cut], state)
        state = msgspec.convert(msgspec.to_builtins(state), live.CallState)  # round trip
        start = cut
    assert state == whole


@settings(max_examples=30, deadline=None)
@given(n=st.integers(min_value=1, max_value=len(CALL)))
def test_fold_prefix_is_what_a_live_call_saw(n: int) -> None:
    incremental = live.CallState()
    for e in CALL[:n]:
        live.apply(incremental, e)
    assert incremental == live.fold(copy.copy(CALL[:n]))
    assert incremental.events == n


def test_live_state_of_a_whole_call() -> None:
    state = live.fold(CALL)
    assert state.status == "ended"
    assert state.outcome == "caller_hangup"
    assert state.barge_ins >= 1
    assert state.transcript[0].text == "Hello, how can I help?"
    assert state.caller_audio_ms > 0 and state.bot_audio_ms > 0
    assert state.speaking == ""


def test_trail_rows_hold_decisions_only_without_time() -> None:
    rows = trail_rows(CALL)
    assert rows and all("at" not in r and "call_id" not in r for r in rows)
    kinds = {r["type"] for r in rows}
    assert "PlaybackStarted" in kinds and "CallEnded" in kinds
    assert not kinds & {t.__name__ for t in ev.INPUT_TYPES}


def test_turn_latency_and_timeline() -> None:
    lats = turn_latencies(CALL)
    assert lats and all(lat.latency_ms >= 0 for lat in lats)
    rows = timeline(CALL)
    assert rows[0]["ms"] == 0
    assert any("caller: Caller turn 1" == r["text"] for r in rows)
