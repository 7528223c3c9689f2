"""Model-side failures in the engine core: who owns the response, and the policy per kind.

Plain input events, no sockets (the socket-level tests are in test_models_e2e.py).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from fastagent import events as ev
from fastagent import models
from fastagent.core import response_event_id
from fastagent.status import Status
from projections.trail import timeline
from tests.test_core import Call


def failures(c: Call) -> list[tuple[str, str]]:
    return [(d.kind, d.action) for d in c.decisions(ev.ModelFailureHandled)]


def greeted(**config: Any) -> tuple[Call, ev.ResponseRequested]:
    c = Call(**config)
    c.feed(ev.CallStarted, 1)
    return c, c.decisions(ev.ResponseRequested)[-1]


def tool_output_requested(c: Call) -> ev.ResponseRequested:
    """The model calls end_call-free send_dtmf-free tool: a function output and a request."""
    c.feed(ev.ResponseStarted, 10, response_id="r1")
    c.feed(ev.ResponseDone, 11, response_id="r1", status="completed")
    c.feed(ev.ToolsListed, 12, server="s", tools=(ev.ToolSpec(name="lookup"),))
    c.feed(ev.ResponseStarted, 13, response_id="r2")
    c.request(14, "r2", "call-1", "lookup")
    c.feed(ev.ResponseDone, 15, response_id="r2", status="completed")
    out = c.feed(ev.ToolResult, 16, tool_call_id="call-1", name="lookup", ok=True, output="{}")
    assert out == ["FunctionOutputSent", "ResponseRequested"]
    return c.decisions(ev.ResponseRequested)[-1]


@pytest.mark.parametrize("error_first", [False, True])
def test_a_reply_the_server_starts_itself_settles_what_is_owed(error_first: bool) -> None:
    c, _ = greeted()
    req = tool_output_requested(c)
    rejected = dict(
        code="conversation_already_has_active_response",
        error_type="invalid_request_error",
        message="Conversation already has an active response in progress: r3.",
        event_id=response_event_id(req.seq),
    )
    if error_first:
        assert c.feed(ev.ModelError, 17, **rejected) == ["ModelFailureHandled"]
        c.feed(ev.ResponseStarted, 18, response_id="r3")
    else:
        c.feed(ev.ResponseStarted, 17, response_id="r3")
        assert c.feed(ev.ModelError, 18, **rejected) == ["ModelFailureHandled"]
    assert c.engine.resp.origin == "server"
    assert c.feed(ev.ResponseDone, 19, response_id="r3", status="completed") == []
    assert failures(c) == [("active_response", "settled")]
    assert len(c.decisions(ev.ResponseRequested)) == 2  # greeting + the tool output's reply
    # ... and the next caller turn is answered as usual.
    assert c.feed(ev.Dtmf, 20, digits="1") == ["MessageInjected", "ResponseRequested"]


def test_a_failed_response_is_retried_then_apologised_for_then_the_fallback() -> None:
    c, greeting = greeted()
    c.feed(ev.ResponseStarted, 2, response_id="r1")
    out = c.feed(
        ev.ResponseDone,
        3,
        response_id="r1",
        status="failed",
        error_type="server_error",
        error_message="The server had an error.",
    )
    assert out == ["ModelFailureHandled", "ResponseRequested"]
    retry = c.decisions(ev.ResponseRequested)[-1]
    assert (retry.reason, retry.instructions) == (greeting.reason, greeting.instructions)
    c.feed(ev.ResponseStarted, 4, response_id="r2")
    c.feed(ev.ResponseDone, 5, response_id="r2", status="failed", error_type="server_error")
    apology = c.decisions(ev.ResponseRequested)[-1]
    assert apology.reason == "apology" and "Apologise" in apology.instructions
    c.feed(ev.ResponseStarted, 6, response_id="r3")
    out = c.feed(ev.ResponseDone, 7, response_id="r3", status="failed", error_type="server_error")
    assert out == ["ModelFailureHandled", "TransferRequested"]
    assert failures(c) == [
        ("response_failed", "retry"),
        ("response_failed", "apology"),
        ("response_failed", "fallback"),
    ]
    assert [d.attempt for d in c.decisions(ev.ModelFailureHandled)] == [1, 2, 3]
    c.feed(ev.SessionEnded, 8, reason_code="transferred")
    assert c.decisions(ev.CallEnded)[-1].outcome == "failed"
    rows = [r["text"] for r in timeline(c.log)]
    assert "model response failed (server_error): The server had an error." in rows
    assert "model failure response_failed (server_error) -> fallback" in rows


def test_a_completed_reply_resets_the_count_and_hangup_is_the_fallback_without_target() -> None:
    c, _ = greeted(transfer_target="")
    c.engine.agent = type(c.engine.agent)(**{**c.engine.agent.__dict__, "transfer_target": ""})
    for i, status in enumerate(["failed", "completed", "failed", "failed", "failed"]):
        c.feed(ev.ResponseStarted, 10 + 2 * i, response_id=f"r{i}")
        c.feed(ev.ResponseDone, 11 + 2 * i, response_id=f"r{i}", status=status)
    assert [a for _, a in failures(c)] == ["retry", "retry", "apology", "fallback"]
    assert c.decisions(ev.HangupRequested)[-1].reason.startswith("the voice model failed")
    # The caller leaves after the bot hung up: still a failed call, not a completed one.
    c.feed(ev.ConnectionLost, 30, side="caller")
    assert c.decisions(ev.CallEnded)[-1].outcome == "failed"


def test_a_failed_response_never_runs_its_calls() -> None:
    c, _ = greeted()
    c.feed(ev.ResponseStarted, 2, response_id="r1")
    c.request(3, "r1", "k", "end_call")
    out = c.feed(ev.ResponseDone, 4, response_id="r1", status="failed", error_code="x")
    assert out == ["FunctionCallSkipped", "ModelFailureHandled", "ResponseRequested"]


def test_incomplete_without_calls_is_noted_not_retried() -> None:
    c, _ = greeted()
    c.feed(ev.ResponseStarted, 2, response_id="r1")
    out = c.feed(ev.ResponseDone, 3, response_id="r1", status="incomplete", reason="content_filter")
    assert out == ["ModelFailureHandled"]
    assert failures(c) == [("response_incomplete", "none")]


def test_a_model_that_does_not_answer_in_time_ends_in_the_fallback() -> None:
    c, req = greeted()
    # A timer that lost the race against response.created changes nothing.
    stale = dict(waiting_for="response.created", seconds=10.0, event_id="fa-response-999")
    assert c.feed(ev.ModelTimeout, 2, **stale) == []
    out = c.feed(
        ev.ModelTimeout,
        10_002,
        waiting_for="response.created",
        seconds=10.0,
        event_id=response_event_id(req.seq),
    )
    assert out == ["ModelFailureHandled", "TransferRequested"]
    assert failures(c) == [("timeout", "fallback")]
    c2 = Call()
    assert c2.feed(ev.ModelTimeout, 10_000, waiting_for="session.updated", seconds=10.0) == [
        "ModelFailureHandled",
        "TransferRequested",
    ]
    c2.feed(ev.SessionEnded, 10_001, reason_code="transferred")
    assert c2.decisions(ev.CallEnded)[-1].outcome == "failed"
    assert "model did not answer: no session.updated within 10 s" in [
        r["text"] for r in timeline(c2.log)
    ]


def test_transcription_failed_or_missing_is_on_record_and_the_call_goes_on() -> None:
    c, _ = greeted()
    c.feed(ev.SpeechCommitted, 2, item_id="u1")
    out = c.feed(ev.TranscriptionFailed, 3, item_id="u1", error_type="server_error", message="x")
    assert out == ["ModelFailureHandled"]
    c.feed(ev.SpeechCommitted, 4, item_id="u2")
    c.feed(ev.Transcript, 5, role="user", item_id="u2", text="hello")
    assert c.feed(ev.SpeechCommitted, 6, item_id="u3") == ["CallerNotified"]  # VAIC's committed
    assert c.feed(ev.SpeechCommitted, 7, item_id="u4") == [
        "ModelFailureHandled",  # u3: no transcript
        "CallerNotified",
    ]
    assert failures(c) == [("transcription_failed", "none"), ("transcription_missing", "none")]
    assert c.decisions(ev.ModelFailureHandled)[-1].item_id == "u3"
    assert c.engine.status is Status.ACTIVE


def test_session_expiry_reconnects_and_rate_limits_are_noted_once() -> None:
    c, _ = greeted()
    out = c.feed(ev.ModelError, 2, code="session_expired", message="maximum duration 60 min")
    assert out == ["ModelFailureHandled"]
    limits = (ev.RateLimit(name="requests", limit=100, remaining=0, reset_seconds=60.0),)
    assert c.feed(ev.RateLimitsUpdated, 3, limits=limits) == ["ModelFailureHandled"]
    assert c.feed(ev.RateLimitsUpdated, 4, limits=limits) == []
    ok = (ev.RateLimit(name="requests", limit=100, remaining=5, reset_seconds=1.0),)
    assert c.feed(ev.RateLimitsUpdated, 5, limits=ok) == []
    assert failures(c) == [("session_expired", "reconnect"), ("rate_limited", "none")]


def test_the_default_model_keeps_working_and_deprecated_ones_warn() -> None:
    assert models.DEFAULT_MODEL == "gpt-realtime-2"
    assert ev.CallConfig().model == models.DEFAULT_MODEL
    assert models.shutdown_warning("gpt-realtime-2") is None
    warning = models.shutdown_warning("gpt-realtime-mini")
    assert warning is not None and "2027-01-20" in warning
    assert models.info("gpt-realtime-2.1").context_tokens == 128_000
    assert models.info("gpt-realtime").reasoning is False


def test_the_shutdown_table_matches_the_sdk_note() -> None:
    import re
    import typing

    from openai.types.realtime import realtime_session_create_request as req

    source = open(req.__file__).read()
    note = source[source.index("Deprecated values:") : source.index("recommended replacements")]
    names = set(re.findall(r'"([a-z0-9.-]+)"', note))
    dates = set(re.findall(r"shutdown date: (\d{4}-\d{2}-\d{2})", note))
    assert names == set(models.SHUTDOWNS) and dates == set(models.SHUTDOWNS.values())
    field = req.RealtimeSessionCreateRequest.model_fields["model"].annotation
    literals = {a for part in typing.get_args(field) for a in typing.get_args(part)}
    assert models.DEFAULT_MODEL in literals and "gpt-realtime-2.1" in literals


def test_parallel_calls_all_run_all_outputs_go_then_one_reply() -> None:
    c, _ = greeted()
    c.feed(ev.ResponseStarted, 2, response_id="r0")
    c.feed(ev.ResponseDone, 3, response_id="r0", status="completed")
    specs = (ev.ToolSpec(name="weather"), ev.ToolSpec(name="traffic"))
    c.feed(ev.ToolsListed, 4, server="s", tools=specs)
    c.feed(ev.ResponseStarted, 5, response_id="r1")
    c.request(6, "r1", "a", "weather")
    c.request(7, "r1", "b", "traffic")
    out = c.feed(ev.ResponseDone, 8, response_id="r1", status="completed")
    assert out == ["FunctionCallDispatched", "FunctionCallDispatched"]
    assert c.feed(ev.ToolResult, 9, tool_call_id="b", name="traffic", ok=True, output="{}") == []
    out = c.feed(ev.ToolResult, 10, tool_call_id="a", name="weather", ok=True, output="{}")
    assert out == ["FunctionOutputSent", "FunctionOutputSent", "ResponseRequested"]
    assert [d.tool_call_id for d in c.decisions(ev.FunctionOutputSent)] == ["b", "a"]


def test_a_preamble_and_an_answer_are_two_items_and_a_barge_in_cuts_what_was_heard() -> None:
    c, _ = greeted()
    c.feed(ev.ResponseStarted, 0, response_id="r1")
    # 3,000 ms preamble then 8,000 ms answer, produced at 3x real time from t=0.
    for i in range(150):
        c.feed(
            ev.BotAudio,
            i * 20 // 3,
            response_id="r1",
            item_id="pre",
            chunk=i,
            nbytes=160,
            duration_us=20_000,
            fmt="audio/pcmu",
        )
    for i in range(400):
        c.feed(
            ev.BotAudio,
            1000 + i * 20 // 3,
            response_id="r1",
            item_id="ans",
            chunk=150 + i,
            nbytes=160,
            duration_us=20_000,
            fmt="audio/pcmu",
        )
    starts = c.decisions(ev.PlaybackStarted)
    assert [p.item_id for p in starts] == ["pre", "ans"]
    # The caller barges in 4.5 s in: all of the preamble, 1,500 ms of the answer heard.
    out = c.feed(ev.SpeechStarted, 4500, item_id="u1")
    assert out == ["PlaybackStopped", "TruncateRequested", "CallerNotified"]
    (cut,) = c.decisions(ev.TruncateRequested)
    assert cut.item_id == "ans" and abs(cut.audio_end_ms - 1500) <= 1


def test_items_queued_behind_the_one_being_heard_are_deleted_not_kept_as_heard() -> None:
    c, _ = greeted()
    c.feed(ev.ResponseStarted, 0, response_id="r1")
    for i in range(150):  # a 3 s preamble, all sent at once
        c.feed(
            ev.BotAudio,
            0,
            response_id="r1",
            item_id="pre",
            chunk=i,
            nbytes=160,
            duration_us=20_000,
            fmt="audio/pcmu",
        )
    for i in range(100):
        c.feed(
            ev.BotAudio,
            10,
            response_id="r1",
            item_id="ans",
            chunk=150 + i,
            nbytes=160,
            duration_us=20_000,
            fmt="audio/pcmu",
        )
    out = c.feed(ev.SpeechStarted, 1000, item_id="u1")
    assert out == ["PlaybackStopped", "TruncateRequested", "ItemDeleted", "CallerNotified"]
    assert c.decisions(ev.TruncateRequested)[0].item_id == "pre"
    assert c.decisions(ev.TruncateRequested)[0].audio_end_ms == 1000
    assert c.decisions(ev.ItemDeleted)[0].item_id == "ans"
    # Late audio of the interrupted response is not played.
    assert (
        c.feed(
            ev.BotAudio,
            1001,
            response_id="r1",
            item_id="ans",
            chunk=999,
            nbytes=160,
            duration_us=20_000,
            fmt="audio/pcmu",
        )
        == []
    )


@pytest.mark.parametrize("model", ["gpt-realtime-2", "gpt-realtime-mini"])
def test_reasoning_effort_per_agent_and_per_fsa_state(model: str) -> None:
    from fastagent.admission import AdmittingEngine
    from fastagent.agent import Agent
    from fastagent.fsa import FSA, Go, State, Step
    from fastagent.realtime import session_update

    fsa = FSA(
        name="t",
        intent="start_t",
        description="x",
        initial="think",
        states=(
            State("think", "x", steps=(Step("s", "x", go=(Go("b"),)),), reasoning_effort="high"),
            State("b", "x", terminal=True),
        ),
    )
    agent = Agent(name="t", instructions="x", fsas=(fsa,), reasoning_effort="low")
    engine = AdmittingEngine("g", agents=lambda name: agent)
    out: list[ev.Decision] = []

    def feed(cls: type[ev.Input], **kw: Any) -> None:
        out.extend(engine.handle(cls(call_id="g", seq=engine.next_seq, at=0, **kw)))

    config = ev.CallConfig(agent="t", model=model)
    feed(ev.SessionInitiated, config=config, offered_formats=("raw/mulaw",))
    feed(ev.ResponseStarted, response_id="r")
    feed(
        ev.FunctionCallRequested,
        response_id="r",
        item_id="i",
        tool_call_id="c",
        name="start_t",
        arguments="{}",
    )
    feed(ev.ResponseDone, response_id="r", status="completed")
    efforts = [d.reasoning_effort for d in out if isinstance(d, ev.ModelConfigured)]
    if model == "gpt-realtime-2":
        assert efforts == ["low", "high"]  # open conversation, then the FSA state's own
        frame = session_update(instructions="x", reasoning_effort="high")
        assert '"reasoning":{"effort":"high"}' in frame
        from fastagent.testing.fake_realtime import _adapters

        _adapters()[0].validate_python(json.loads(frame))  # the SDK's own client types
    else:  # the older models refuse the field: never sent
        assert efforts == ["", ""]
    with pytest.raises(ValueError, match="reasoning effort"):
        Agent(name="bad", instructions="x", reasoning_effort="none")


def test_report_counts_model_failures_by_kind_and_action(tmp_path: Any) -> None:
    from pathlib import Path

    from fastagent.replay import read_recording
    from fastagent.store import open_store
    from projections import analytics

    replays = Path(__file__).resolve().parent.parent / "replays"
    store = str(tmp_path / "calls.db")
    with open_store(store) as s:
        for name in ("model-failed-response", "model-timeout"):
            s.append(read_recording(replays / f"{name}.jsonl"))
            s.flush()
    with analytics.opened(store, str(tmp_path / "a.duckdb")) as (source, con):
        analytics.sync(source, con)
        rows = con.execute(
            "SELECT kind, action, failures FROM model_failure_counts ORDER BY kind, action"
        ).fetchall()
        outcomes = dict(con.execute("SELECT outcome, calls FROM outcomes").fetchall())
    assert ("response_failed", "fallback", 1) in rows
    assert ("response_failed", "retry", 2) in rows
    assert ("timeout", "fallback", 1) in rows
    assert ("transcription_failed", "none", 1) in rows
    assert outcomes == {"failed": 2}
