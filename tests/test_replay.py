"""Replay: identical and diverged replays, recordings, and the CLI around them."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest
from typer.testing import CliRunner

from fastagent import events as ev
from fastagent.cli import app
from fastagent.core import Engine
from fastagent.replay import RecordingError, read_recording, replay, write_recording
from fastagent.store import open_store
from fastagent.testing.synth import synthetic_call

runner = CliRunner()


@pytest.fixture(scope="module")
def call() -> list[ev.Event]:
    return synthetic_call("call-42", target_events=3_000, barge_in_every=2)


@pytest.fixture
def store_path(tmp_path: Path, call: list[ev.Event]) -> str:
    path = str(tmp_path / "calls.db")
    with open_store(path) as store:
        store.append(call)
        store.flush()
    return path


def test_recorded_call_replays_identically(call: list[ev.Event]) -> None:
    result = replay(call)
    assert result.identical
    assert result.inputs + result.decisions == len(call)
    assert any(isinstance(e, ev.TruncateRequested) for e in call)


def test_changed_rule_is_reported_at_the_first_divergence(
    call: list[ev.Event], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A deliberately changed rule: no more barge-in handling.
    from fastagent import core

    monkeypatch.setattr(core.Engine, "_barge_in", lambda engine, e: None)
    first_barge_in = next(
        e for e in call if isinstance(e, ev.PlaybackStopped) and e.reason == "barge_in"
    )
    result = replay(call)
    div = result.divergence
    assert div is not None
    assert div.position == first_barge_in.seq
    assert div.recorded == first_barge_in
    assert div.new is None or not isinstance(div.new, ev.PlaybackStopped)
    assert isinstance(div.inputs_before[-1], ev.SpeechStarted)


def test_extra_decision_is_a_divergence(
    call: list[ev.Event], monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastagent import core

    original = core._HANDLERS[ev.Transcript]

    def chatty(engine: Engine, e: ev.Transcript) -> None:
        original(engine, e)
        engine._emit(ev.MessageInjected, role="system", text="new rule")

    monkeypatch.setitem(core._HANDLERS, ev.Transcript, chatty)
    first = next(e for e in call if isinstance(e, ev.Transcript))
    div = replay(call).divergence
    assert div is not None
    assert div.position == first.seq + 1
    assert div.recorded is None
    assert isinstance(div.new, ev.MessageInjected)


def test_export_import_round_trip(tmp_path: Path, call: list[ev.Event]) -> None:
    path = tmp_path / "call.jsonl"
    write_recording(call, path)
    assert read_recording(path) == call
    header = json.loads(path.read_text().splitlines()[0])
    assert header == {
        "format": "fastagent-recording",
        "version": 1,
        "call_id": "call-42",
        "events": len(call),
    }


def test_old_event_versions_are_upcast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Pretend Dtmf is at version 2, whose field was renamed from "keys" (v1).
    monkeypatch.setattr(ev.Dtmf, "version", 2)
    monkeypatch.setitem(ev.UPCASTERS, ("Dtmf", 1), lambda d: {**d, "digits": d.pop("keys")})
    old = b'{"type":"Dtmf","call_id":"c","seq":1,"at":5,"keys":"12"}'
    assert ev.decode("Dtmf/v1", old) == ev.Dtmf(call_id="c", seq=1, at=5, digits="12")
    with pytest.raises(ev.EventFormatError, match="version 3"):
        ev.decode("Dtmf/v3", old)


def test_cli_replay_identical_prints_timeline(store_path: str) -> None:
    result = runner.invoke(app, ["replay", "call-42", "--store", store_path])
    assert result.exit_code == 0, result.output
    assert "caller: Caller turn 1" in result.output
    assert "barge-in: bot cut at" in result.output
    assert "identical:" in result.output


def test_cli_replay_json_and_diverged_exit_1(
    store_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ok = runner.invoke(app, ["replay", "call-42", "--store", store_path, "--json"])
    assert ok.exit_code == 0
    assert json.loads(ok.output)["identical"] is True
    from fastagent import core

    monkeypatch.setattr(core.Engine, "_barge_in", lambda engine, e: None)
    bad = runner.invoke(app, ["replay", "call-42", "--store", store_path, "--json"])
    assert bad.exit_code == 1
    out = json.loads(bad.output)
    assert out["identical"] is False
    assert out["divergence"]["recorded"]["type"] == "PlaybackStopped"
    text = runner.invoke(app, ["replay", "call-42", "--store", store_path])
    assert text.exit_code == 1
    assert "DIVERGED at position" in text.output


def test_cli_export_then_replay_file(
    store_path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FASTAGENT_STORE", raising=False)
    out = tmp_path / "rec.jsonl"
    res = runner.invoke(app, ["export", "call-42", "-o", str(out), "--store", store_path])
    assert res.exit_code == 0, res.output
    # Sealed by default: the file opens only with the keys of the store it came from.
    _one_line_error(runner.invoke(app, ["replay", "--file", str(out)]), "--store")
    res = runner.invoke(app, ["replay", "--file", str(out), "--store", store_path])
    assert res.exit_code == 0, res.output
    assert "identical" in res.output
    # In clear, with the read credential: replays anywhere.
    monkeypatch.setenv("FASTAGENT_READ_TOKEN", "ops:read-token-0123456789abcdef")
    clear = tmp_path / "clear.jsonl"
    res = runner.invoke(
        app, ["export", "call-42", "-o", str(clear), "--store", store_path, "--reveal"]
    )
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["replay", "--file", str(clear)])
    assert res.exit_code == 0, res.output


def test_cli_calls_lists_the_call(store_path: str) -> None:
    res = runner.invoke(app, ["calls", "--store", store_path, "--json"])
    assert res.exit_code == 0
    rows = json.loads(res.output)
    assert rows[0]["call_id"] == "call-42"
    assert rows[0]["outcome"] == "caller_hangup"
    assert rows[0]["duration_s"] > 0


def _one_line_error(result: object, needle: str) -> None:
    assert result.exit_code == 2, result.output  # type: ignore[attr-defined]
    err = result.stderr.strip()  # type: ignore[attr-defined]
    assert "\n" not in err and "Traceback" not in err
    assert needle in err


def test_bad_inputs_give_one_line_and_exit_2(store_path: str, tmp_path: Path) -> None:
    _one_line_error(runner.invoke(app, ["replay", "nope", "--store", store_path]), "unknown call")
    newer = tmp_path / "newer.jsonl"
    newer.write_text('{"format":"fastagent-recording","version":99,"call_id":"x","events":0}\n')
    _one_line_error(runner.invoke(app, ["replay", "--file", str(newer)]), "newer")
    garbage = tmp_path / "garbage.jsonl"
    garbage.write_text("this is not json\n")
    _one_line_error(runner.invoke(app, ["replay", "--file", str(garbage)]), "not a FastAgent")
    missing = tmp_path / "missing.jsonl"
    _one_line_error(runner.invoke(app, ["replay", "--file", str(missing)]), "cannot read")
    _one_line_error(
        runner.invoke(app, ["calls", "--store", str(tmp_path)]), "fastagent:"
    )  # a directory is no store


def test_corrupt_event_in_store_is_one_line_and_store_untouched(
    store_path: str, call: list[ev.Event]
) -> None:
    import sqlite3

    con = sqlite3.connect(store_path)
    table = [r[0] for r in con.execute("select name from sqlite_master where type='table'")]
    name = next(t for t in table if "event" in t)
    cols = [r[1] for r in con.execute(f"pragma table_info({name})")]
    before = con.execute(f"select count(*) from {name}").fetchone()[0]
    con.execute(
        f"update {name} set state = ? where originator_version = 5",
        (b"{broken",),
    )
    con.commit()
    res = runner.invoke(app, ["replay", "call-42", "--store", store_path])
    _one_line_error(res, "corrupt")
    assert con.execute(f"select count(*) from {name}").fetchone()[0] == before
    assert "state" in cols
    con.close()


def test_unknown_event_type_in_recording(tmp_path: Path, call: list[ev.Event]) -> None:
    path = tmp_path / "call.jsonl"
    write_recording(call[:3], path)
    lines = path.read_text().splitlines()
    lines[2] = json.dumps({"topic": "FromTheFuture/v1", "event": {"type": "FromTheFuture"}})
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(RecordingError, match="unknown event type"):
        read_recording(path)


def test_events_are_frozen_and_inputs_distinct_from_decisions() -> None:
    e = ev.Dtmf(call_id="c", seq=1, at=0, digits="1")
    with pytest.raises(AttributeError):
        e.digits = "2"  # type: ignore[misc]
    assert isinstance(e, ev.Input) and not isinstance(e, ev.Decision)
    assert all(issubclass(t, ev.Decision) for t in ev.DECISION_TYPES)
    assert not set(ev.INPUT_TYPES) & set(ev.DECISION_TYPES)
    # Audio boundaries never carry the bytes.
    names = {f.name for t in (ev.CallerAudio, ev.BotAudio) for f in msgspec.structs.fields(t)}
    assert not names & {"audio", "data", "payload", "delta", "audioChunk"}


def test_recording_without_events_is_rejected(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"format":"fastagent-recording","version":1,"call_id":"","events":0}\n')
    with pytest.raises(RecordingError, match="has no events"):
        read_recording(empty)
    _one_line_error(runner.invoke(app, ["replay", "--file", str(empty)]), "has no events")


def test_recording_line_whose_topic_is_not_its_type(tmp_path: Path, call: list[ev.Event]) -> None:
    path = tmp_path / "call.jsonl"
    write_recording(call[:3], path)
    lines = path.read_text().splitlines()
    line = json.loads(lines[2])
    kind = line["event"]["type"]
    other = "Dtmf" if kind != "Dtmf" else "CallEnded"
    lines[2] = json.dumps({"topic": f"{other}/v1", "event": line["event"]})
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(RecordingError) as info:
        read_recording(path)
    assert str(info.value) == (
        f"{path}:3: topic '{other}/v1' does not match the event's type '{kind}'"
    )
    _one_line_error(runner.invoke(app, ["replay", "--file", str(path)]), f"{path}:3: topic")


def test_cli_replay_without_call_id_or_file() -> None:
    _one_line_error(runner.invoke(app, ["replay"]), "give a call id or --file")
