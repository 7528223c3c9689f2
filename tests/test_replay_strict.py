"""Strict recordings: a field this code does not know is an error naming it, exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fastagent import events as ev
from fastagent.cli import app
from fastagent.replay import RecordingError, read_recording, write_recording
from fastagent.testing.synth import synthetic_call

runner = CliRunner()


@pytest.fixture(scope="module")
def call() -> list[ev.Event]:
    return synthetic_call("call-strict", target_events=400)


@pytest.fixture
def rec(tmp_path: Path, call: list[ev.Event]) -> Path:
    path = tmp_path / "call.jsonl"
    write_recording(call, path)
    return path


def _edit(path: Path, n: int, change: object) -> None:
    """Apply ``change(dict)`` to the JSON of line ``n`` (1 = the header)."""
    lines = path.read_text().splitlines()
    obj = json.loads(lines[n - 1])
    change(obj)  # type: ignore[operator]
    lines[n - 1] = json.dumps(obj)
    path.write_text("\n".join(lines) + "\n")


def _line_of(call: list[ev.Event], cls: type[ev.Event]) -> int:
    return next(i for i, e in enumerate(call, start=2) if type(e) is cls)


def _exit_2(path: Path, needle: str) -> None:
    res = runner.invoke(app, ["replay", "--file", str(path)])
    assert res.exit_code == 2, res.output
    err = res.stderr.strip()
    assert "\n" not in err and "Traceback" not in err
    assert needle in err, err


def test_unknown_field_in_an_event_is_exit_2_naming_it(rec: Path, call: list[ev.Event]) -> None:
    n = _line_of(call, ev.Transcript)
    _edit(rec, n, lambda o: o["event"].update(confidence=0.9))
    with pytest.raises(RecordingError, match=rf":{n}: unknown field Transcript.confidence"):
        read_recording(rec)
    _exit_2(rec, "unknown field Transcript.confidence")


def test_unknown_field_nested_in_an_event(rec: Path) -> None:
    _edit(rec, 2, lambda o: o["event"]["config"].update(tone="warm"))
    _exit_2(rec, "unknown field SessionInitiated.config.tone")


def test_unknown_field_in_a_decision_nested_in_a_list(tmp_path: Path) -> None:
    tools = ev.ToolsListed(
        call_id="c", seq=1, at=0, server="s", tools=(ev.ToolSpec(name="a"), ev.ToolSpec(name="b"))
    )
    path = tmp_path / "t.jsonl"
    write_recording([tools], path)
    _edit(path, 2, lambda o: o["event"]["tools"][1].update(strict=True))
    _exit_2(path, "unknown field ToolsListed.tools[1].strict")


def test_unknown_field_in_the_header_or_a_line(rec: Path) -> None:
    _edit(rec, 1, lambda o: o.update(recorded_by="someone"))
    _exit_2(rec, "recorded_by")


def test_unknown_key_beside_topic_and_event(rec: Path) -> None:
    _edit(rec, 3, lambda o: o.update(note="x"))
    _exit_2(rec, ":3: corrupt line")
    res = runner.invoke(app, ["replay", "--file", str(rec)])
    assert "note" in res.stderr


def test_a_field_an_older_version_declares_is_upcast_not_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Dtmf v1 had "keys", which v2 renamed to "digits": v1's field is declared.
    monkeypatch.setattr(ev.Dtmf, "version", 2)

    def v1_to_v2(d: dict[str, object]) -> dict[str, object]:
        d = dict(d)
        d["digits"] = d.pop("keys")
        return d

    monkeypatch.setitem(ev.UPCASTERS, ("Dtmf", 1), v1_to_v2)
    path = tmp_path / "old.jsonl"
    head = {"format": "fastagent-recording", "version": 1, "call_id": "c", "events": 1}
    body = {"type": "Dtmf", "call_id": "c", "seq": 1, "at": 5, "keys": "12"}
    path.write_text(json.dumps(head) + "\n" + json.dumps({"topic": "Dtmf/v1", "event": body}))
    assert read_recording(path) == [ev.Dtmf(call_id="c", seq=1, at=5, digits="12")]
    body["pressed_for_ms"] = 80  # no version declares this one
    path.write_text(json.dumps(head) + "\n" + json.dumps({"topic": "Dtmf/v1", "event": body}))
    with pytest.raises(RecordingError, match="unknown field Dtmf.pressed_for_ms"):
        read_recording(path)


def test_trailing_blank_lines_are_fine_a_blank_line_inside_is_not(
    rec: Path, call: list[ev.Event]
) -> None:
    text = rec.read_text()
    rec.write_text(text + "\n\n  \n")
    assert read_recording(rec) == call
    res = runner.invoke(app, ["replay", "--file", str(rec)])
    assert res.exit_code == 0, res.output
    lines = text.splitlines()
    rec.write_text("\n".join([*lines[:3], "", *lines[3:]]) + "\n")
    with pytest.raises(RecordingError, match=":4: blank line inside"):
        read_recording(rec)


def test_every_committed_recording_is_strictly_readable() -> None:
    for path in sorted((Path(__file__).parent.parent / "replays").glob("*.jsonl")):
        assert read_recording(path)
