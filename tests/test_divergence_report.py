"""The divergence report: fields recorded vs now, changed words marked, inputs without
audio chunk boundaries, and what each side holds at the position."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from fastagent import core
from fastagent import events as ev
from fastagent.agents import get_agent
from fastagent.cli import app
from fastagent.replay import read_recording, replay, word_diff

REPLAYS = Path(__file__).resolve().parent.parent / "replays"
runner = CliRunner()


def _banking_with(**changes: object):  # type: ignore[no-untyped-def]
    banking = get_agent("banking")
    changed = type(banking)(**{**banking.__dict__, **changes})
    return lambda n: changed if n == "banking" else get_agent(n)


def test_changed_words_of_long_instructions_are_marked() -> None:
    banking = get_agent("banking")
    text = banking.instructions.replace("Be brief and warm", "Be brief, precise and warm")
    result = replay(read_recording(REPLAYS / "banking.jsonl"), _banking_with(instructions=text))
    div = result.divergence
    assert div is not None and div.position == 3
    (f,) = div.fields
    assert f.name == "instructions"
    assert "[-brief-] {+brief, precise+}" in f.marked
    assert len(f.marked) < 80  # the paragraph around it is left out
    lines = div.report(result.call_id)
    assert "    instructions: … of Demo Bank. Be [-brief-] {+brief, precise+} and warm" in (
        "\n".join(lines)
    )


def test_a_short_field_reads_recorded_then_now() -> None:
    result = replay(
        read_recording(REPLAYS / "banking.jsonl"), _banking_with(greeting="Hello there.")
    )
    div = result.divergence
    assert div is not None
    assert [(f.name, f.new) for f in div.fields] == [("instructions", "Hello there.")]
    assert any(line.startswith('    instructions: "') for line in div.report())
    assert all(len(line) < 200 for line in div.report())


def test_inputs_before_leave_out_audio_and_say_what_each_side_holds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A changed rule: VAIC is no longer told when the caller starts speaking.
    monkeypatch.setitem(core._HANDLERS, ev.SpeechStarted, core.Engine._barge_in)
    result = replay(read_recording(REPLAYS / "banking-barge-in.jsonl"))
    div = result.divergence
    assert div is not None
    assert isinstance(div.recorded, ev.CallerNotified)
    assert div.recorded.message_type == "userStream.speech.started"
    assert div.new is None
    assert div.new_holds.startswith("no more decisions for input #")
    assert div.new_holds.endswith("SpeechStarted")
    assert div.inputs_before and not any(
        isinstance(i, (ev.CallerAudio, ev.BotAudio)) for i in div.inputs_before
    )
    assert div.audio_skipped > 0
    assert isinstance(div.inputs_before[-1], ev.SpeechStarted)
    text = "\n".join(div.report())
    assert "(nothing)" not in text and "audio chunk boundaries left out" in text


def test_core_deciding_more_says_what_the_log_holds_there(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = core._HANDLERS[ev.Dtmf]

    def dtmf_twice(engine: core.Engine, e: ev.Dtmf) -> None:
        real(engine, e)
        engine._emit(ev.MessageInjected, role="system", text="again")

    monkeypatch.setitem(core._HANDLERS, ev.Dtmf, dtmf_twice)
    events = read_recording(REPLAYS / "default.jsonl")
    if not any(isinstance(e, ev.Dtmf) for e in events):
        pytest.skip("no DTMF in this recording")
    div = replay(events).divergence
    assert div is not None and div.recorded is None
    assert isinstance(div.new, ev.MessageInjected) and div.new.text == "again"
    assert div.recorded_holds.startswith("no more decisions for input #")
    assert "the log goes on with input #" in div.recorded_holds


def test_the_cli_prints_the_report_and_json_has_the_fields(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(core._HANDLERS, ev.SpeechStarted, lambda engine, e: None)
    path = str(REPLAYS / "banking-barge-in.jsonl")
    res = runner.invoke(app, ["replay", "--file", path])
    assert res.exit_code == 1
    assert "DIVERGED at position" in res.output
    assert "now:      no more decisions for input" in res.output
    res = runner.invoke(app, ["replay", "--file", path, "--json"])
    div = __import__("json").loads(res.output)["divergence"]
    assert div["new_holds"].startswith("no more decisions") and div["audio_skipped"] > 0


def test_word_diff_keeps_a_few_words_around_each_change() -> None:
    old = " ".join(f"w{i}" for i in range(40))
    new = old.replace("w20", "W20")
    assert word_diff(old, new) == "… w16 w17 w18 w19 [-w20-] {+W20+} w21 w22 w23 w24 …"
    assert word_diff("a b", "a  b").startswith("(whitespace only)")
    assert word_diff("a b c", "a b c d") == "a b c {+d+}"
