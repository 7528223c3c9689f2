"""Personal data after the banking demo, over real loopback sockets: nothing in clear
in the store file, the analytics file or an export; forgetting; masked views; the
read credential; the PCI recording pause; replay never imports a recording's code."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import httpx2
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from typer.testing import CliRunner

from fastagent import events as ev
from fastagent.cli import app
from fastagent.privacy import CallForgotten, MasterKeys, new_key_text
from fastagent.service import ServiceConfig
from fastagent.service_cli import running_service, scenario_path
from fastagent.store import open_store
from fastagent.testing.caller import DEFAULT_PACE, CallerReport, SimulatedCaller
from fastagent.testing.fake_realtime import FakeRealtimeServer
from fastagent.testing.scenario import load_scenario
from projections import analytics

runner = CliRunner()
READ = "read-token-0123456789abcdef"

# What the banking demo's caller says, types and is told (fastagent/scenarios/banking.json,
# fastagent/agents/data/bank.sql): none may be stored in clear.
TEXTS = [
    b"+15550100",  # the caller's number
    b"1985-12-10",  # date of birth, as a slot value
    b"Lovelace",
    b"Analytical Row",  # the address on file, read back to the caller
    b"Thank you, Ada",
    b"four two four two",  # card digits, spoken
    b"nineteen eighty five",
    b"lost my debit card",
]
DIGITS = [b"123456", b"4242"]  # customer number (DTMF), card's last four
# A transcript is shown (masked by pattern and by the call's known values); its
# ordinary words are not personal data.
SHOWN_OK = [b"lost my debit card"]


def leaks(data: bytes, shown: bool = False) -> list[bytes]:
    """The demo's personal values found in ``data`` in clear (``shown``: in a masked
    view, where ordinary transcript words stay).

    Digit values count only next to a quote (as JSON holds a string: ``"4242"``,
    ``\\"4242\\"``): bare digit runs occur in timestamps by chance."""
    found = [t for t in TEXTS if t in data and not (shown and t in SHOWN_OK)]
    for d in DIGITS:
        if any(n in data for n in (b'"' + d, d + b'"', d + b'\\"')):
            found.append(d)
    return found


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("FASTAGENT_") and key not in ("FASTAGENT_DATA_DIR",):
            monkeypatch.delenv(key)


async def play(agent: str, store: Any, config: ServiceConfig | None = None) -> CallerReport:
    """One scenario of ``agent`` end to end over loopback; the caller's report."""
    scenario = load_scenario(scenario_path(agent))
    async with FakeRealtimeServer(scenario) as fake:
        cfg = config or ServiceConfig(no_auth=True)
        cfg.agent, cfg.realtime_url, cfg.api_key = agent, fake.url, "demo"
        cfg.playback_speed = 1 / DEFAULT_PACE
        async with running_service(cfg, store) as (app_, url):
            caller = SimulatedCaller(url, formats=scenario.caller.formats)
            report = await caller.play(scenario, timeout=120)
            for _ in range(500):
                if not app_.state.service.calls:
                    break
                await asyncio.sleep(0.01)
    assert not fake.mismatches and not report.errors, (fake.mismatches, report.errors)
    return report


@pytest.fixture(scope="module")
def banking(
    loop: asyncio.AbstractEventLoop, data_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """The banking demo call recorded in an SQLite store file."""
    where = tmp_path_factory.mktemp("privacy")
    path = str(where / "calls.db")
    with pytest.MonkeyPatch.context() as mp:  # the store's own key file, as in the demo
        mp.delenv("FASTAGENT_MASTER_KEY", raising=False)
        mp.delenv("FASTAGENT_MASTER_KEY_FILE", raising=False)
        store = open_store(path)
        try:
            report = loop.run_until_complete(play("banking", store))
            call_id = report.conversation_id
        finally:
            store.close()
    yield {"path": path, "dir": where, "call_id": call_id, "report": report}


def test_nothing_personal_in_clear_in_store_analytics_and_export(
    banking: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, where, call_id = banking["path"], banking["dir"], banking["call_id"]
    store_bytes = b"".join(Path(p).read_bytes() for p in (path, path + "-wal") if Path(p).exists())
    assert leaks(store_bytes) == []
    # ... yet the store gives them back, opened with the call's key.
    with open_store(path) as s:
        events = s.read_call(call_id)
    opened = b"".join(ev.encode(e) for e in events)
    assert sorted(leaks(opened)) == sorted(TEXTS + DIGITS)  # the needles are the right ones

    db = str(where / "analytics.duckdb")
    with analytics.opened(path, db) as (source, con):
        analytics.sync(source, con)
    assert leaks(Path(db).read_bytes()) == []
    assert _analytics_leaks(db) == []

    out = where / "export.jsonl"
    res = runner.invoke(app, ["export", call_id, "-o", str(out), "--store", path])
    assert res.exit_code == 0, res.output
    assert leaks(out.read_bytes()) == []
    # An export replays with its store's keys, identically.
    res = runner.invoke(app, ["replay", "--file", str(out), "--store", path])
    assert res.exit_code == 0 and "identical" in res.output, res.output
    assert leaks(res.output.encode(), shown=True) == []  # masked by default

    # In clear only with the read credential, and audited.
    clear = where / "clear.jsonl"
    res = runner.invoke(app, ["export", call_id, "-o", str(clear), "--store", path, "--reveal"])
    assert res.exit_code == 2 and "FASTAGENT_READ_TOKEN" in res.stderr
    monkeypatch.setenv("FASTAGENT_READ_TOKEN", f"auditor:{READ}")
    res = runner.invoke(app, ["export", call_id, "-o", str(clear), "--store", path, "--reveal"])
    assert res.exit_code == 0, res.output
    assert b"Lovelace" in clear.read_bytes()
    with open_store(path) as s:
        actions = [(a.action, a.who.split(" ")[0]) for a in s.audit.read(call_id)]
    assert ("export", "cli:" + _user()) in actions or actions[0][0] == "export"
    assert ("export-clear", "auditor") in actions


def _user() -> str:
    import getpass

    return getpass.getuser()


def _analytics_leaks(db: str) -> list[str]:
    """Every text value of every analytics table, searched for the demo's values."""
    found = []
    con = duckdb.connect(db, read_only=True)
    try:
        tables = con.execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE data_type = 'VARCHAR' AND table_schema = 'main'"
        ).fetchall()
        for table, column in tables:
            for (value,) in con.execute(f'SELECT DISTINCT "{column}" FROM "{table}"').fetchall():
                if value and leaks(json.dumps(value).encode()):
                    found.append(f"{table}.{column}: {value}")
    finally:
        con.close()
    return found


def test_replay_masked_by_default_reveal_needs_the_read_credential(
    banking: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, call_id = banking["path"], banking["call_id"]
    res = runner.invoke(app, ["replay", call_id, "--store", path])
    assert res.exit_code == 0, res.output
    assert leaks(res.output.encode(), shown=True) == []
    assert "[date]" in res.output and "***" in res.output
    res = runner.invoke(app, ["replay", call_id, "--store", path, "--reveal"])
    assert res.exit_code == 2 and "FASTAGENT_READ_TOKEN" in res.stderr
    monkeypatch.setenv("FASTAGENT_READ_TOKEN", f"ops:{READ}")
    res = runner.invoke(app, ["replay", call_id, "--store", path, "--reveal", "--json"])
    assert res.exit_code == 0, res.output
    assert "Analytical Row" in res.output
    with open_store(path) as s:
        trail = [(a.action, a.who) for a in s.audit.read(call_id)]
    assert ("timeline", f"cli:{_user()}") in trail
    assert ("reveal", f"ops (cli:{_user()})") in trail


def test_read_credential_and_masking_over_mcp(
    banking: dict[str, Any], loop: asyncio.AbstractEventLoop
) -> None:
    path, call_id = banking["path"], banking["call_id"]

    async def run() -> str:
        store = open_store(path)
        try:
            config = ServiceConfig(no_auth=True, read_token=f"inspector:{READ}")
            async with running_service(config, store) as (_app, ws_url):
                base = ws_url.replace("ws://", "http://").removesuffix("/audiocodes")
                return await _mcp_call(f"{base}/mcp/", "call_timeline", {"call_id": call_id})
        finally:
            store.close()

    text = loop.run_until_complete(run())
    timeline = json.loads(text)["timeline"]
    assert leaks(text.encode(), shown=True) == [], leaks(text.encode(), shown=True)
    dtmf = next(e for e in timeline if e["type"] == "Dtmf")
    assert dtmf["digits"] == "***"
    args = next(
        json.loads(e["arguments"])
        for e in timeline
        if e["type"] == "FunctionCallDispatched" and "date_of_birth" in e["arguments"]
    )
    assert args["date_of_birth"] == "***" and args["card_last4"] == "***"
    with open_store(path) as s:
        assert ("timeline", "inspector") in [(a.action, a.who) for a in s.audit.read(call_id)]


async def _mcp_call(url: str, tool: str, args: dict[str, Any]) -> str:
    client = httpx2.AsyncClient(headers={"Authorization": f"Bearer {READ}"})
    async with client, streamable_http_client(url, http_client=client) as streams:
        async with ClientSession(streams[0], streams[1]) as session:
            await session.initialize()
            result = await session.call_tool(tool, args)
            return result.content[0].text  # type: ignore[union-attr]


def test_forget_over_sockets_then_replay_export_and_analytics(
    loop: asyncio.AbstractEventLoop, data_dir: Path, tmp_path: Path
) -> None:
    path = str(tmp_path / "calls.db")
    store = open_store(path)
    try:
        call_id = loop.run_until_complete(play("banking", store)).conversation_id
    finally:
        store.close()
    db = str(tmp_path / "a.duckdb")
    with analytics.opened(path, db) as (source, con):
        analytics.sync(source, con)
    res = runner.invoke(app, ["forget", call_id, "--store", path])
    assert res.exit_code == 0, res.output
    assert "forgot call" in res.output
    for args in (
        ["replay", call_id, "--store", path],
        ["export", call_id, "-o", str(tmp_path / "x.jsonl"), "--store", path],
        ["forget", call_id, "--store", path],
    ):
        res = runner.invoke(app, args)
        assert res.exit_code == 2, (args, res.output)
        err = res.stderr.strip()
        assert "\n" not in err and "was forgotten at" in err and "UTC" in err, err
    # The log is untouched; the call still lists, without its personal data.
    res = runner.invoke(app, ["calls", "--store", path, "--json"])
    assert call_id in res.output
    with open_store(path) as s:
        assert isinstance(s.keys.forgotten(call_id), CallForgotten)
        blank = s.read_call(call_id, forgotten="blank")
        assert isinstance(blank[-1], ev.CallEnded)
        assert all(e.text == "" for e in blank if isinstance(e, ev.Transcript))
        trail = s.audit.read(call_id)
    assert trail[-1].action == "forget" and trail[-1].who == f"cli:{_user()}"
    # Analytics: still nothing personal after the next sync; the call's stats remain.
    with analytics.opened(path, db) as (source, con):
        analytics.sync(source, con)
        assert (
            con.execute("SELECT count(*) FROM calls WHERE call_id = ?", [call_id]).fetchone()[0]
            == 1
        )
    assert _analytics_leaks(db) == []

    # Over /mcp: one line saying when.
    async def run() -> str:
        s = open_store(path)
        try:
            config = ServiceConfig(no_auth=True, read_token=READ)
            async with running_service(config, s) as (_app, ws_url):
                base = ws_url.replace("ws://", "http://").removesuffix("/audiocodes")
                return await _mcp_call(f"{base}/mcp/", "call_timeline", {"call_id": call_id})
        finally:
            s.close()

    assert "was forgotten at" in loop.run_until_complete(run())


def test_forget_on_postgresql(pg_url: str) -> None:
    url = f"{pg_url}?table=forget_{os.getpid()}"
    store = open_store(url)
    try:
        store.append(
            [
                ev.SessionInitiated(
                    call_id="pg1", seq=1, at=1, config=ev.CallConfig(), caller="+4400001"
                ),
                ev.Dtmf(call_id="pg1", seq=2, at=2, digits="998877"),
                ev.CallEnded(call_id="pg1", seq=3, at=3, reason="done", outcome="completed"),
            ]
        )
        store.flush()
        raw = store.read_all_raw()
        assert not any(b"998877" in r[2] or b"+4400001" in r[2] for r in raw)
        assert store.read_call("pg1")[1].digits == "998877"
        store.forget("pg1", "test")
        with pytest.raises(CallForgotten, match="was forgotten at"):
            store.read_call("pg1")
        # Another instance (a fresh store object) sees it forgotten too.
        with open_store(url) as other:
            with pytest.raises(CallForgotten):
                other.read_call("pg1")
            assert other.audit.read("pg1")[-1].action == "forget"
    finally:
        store.close()
        import psycopg

        with psycopg.connect(pg_url, autocommit=True) as conn:
            for t in ("", "_keys", "_audit", "_checkpoints"):
                conn.execute(f"DROP TABLE IF EXISTS forget_{os.getpid()}{t}")


def test_master_keys_rotation_and_refusals(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old, new = new_key_text(), new_key_text()
    monkeypatch.setenv("FASTAGENT_MASTER_KEY", old)
    path = str(tmp_path / "r.db")
    with open_store(path) as s:
        s.append([ev.Dtmf(call_id="r1", seq=1, at=1, digits="5555")])
        s.flush()
    monkeypatch.setenv("FASTAGENT_MASTER_KEY", new)  # the old key is gone: cannot open
    with open_store(path) as s, pytest.raises(Exception, match="does not hold"):
        s.read_call("r1")
    monkeypatch.setenv("FASTAGENT_MASTER_KEY", f"{new},{old}")  # rotate: new wraps, old opens
    res = runner.invoke(app, ["rewrap-keys", "--store", path])
    assert res.exit_code == 0 and "rewrapped 1 call key" in res.output, res.output
    monkeypatch.setenv("FASTAGENT_MASTER_KEY", new)
    with open_store(path) as s:
        assert s.read_call("r1")[0].digits == "5555"
    monkeypatch.setenv("FASTAGENT_MASTER_KEY", "too-short")
    with open_store(path) as s, pytest.raises(Exception, match="bad master key"):
        s.read_call("r1")
    monkeypatch.delenv("FASTAGENT_MASTER_KEY")
    with pytest.raises(Exception, match="needs a master key"):
        MasterKeys.for_store("postgresql", None, {})
    # Without a configured key an SQLite file gets its own key file, private.
    key_file = Path(path + ".key")
    with open_store(str(tmp_path / "k.db")) as s:
        s.append([ev.Dtmf(call_id="k1", seq=1, at=1, digits="5555")])
        s.flush()
    key_file = tmp_path / "k.db.key"
    assert key_file.exists() and key_file.stat().st_mode & 0o077 == 0


def test_replay_never_imports_a_recordings_module(tmp_path: Path) -> None:
    rec = tmp_path / "custom.jsonl"
    from fastagent.replay import write_recording

    write_recording(
        [
            ev.SessionInitiated(
                call_id="x1", seq=1, at=1, config=ev.CallConfig(agent="evil_mod_xyz:AGENT")
            ),
        ],
        rec,
    )
    res = runner.invoke(app, ["replay", "--file", str(rec)])
    assert res.exit_code == 2
    err = res.stderr.strip()
    assert "\n" not in err and "--agent evil_mod_xyz:AGENT" in err and "never imports" in err
    # Given on the command line but not importable: one line, exit 2 (not a divergence).
    res = runner.invoke(app, ["replay", "--file", str(rec), "--agent", "evil_mod_xyz:AGENT"])
    assert res.exit_code == 2 and "cannot import agent module" in res.stderr


def test_recording_paused_while_the_card_digits_are_spoken(banking: dict[str, Any]) -> None:
    """The banking agent's verify state collects card digits (State(pci=True)): the
    simulated VAIC caller receives pauseCallRecording on entering it and
    resumeCallRecording on leaving, and the log records both decisions around
    what the caller said there."""
    sent = [
        a.get("name")
        for a in banking["report"].activities
        if a.get("name") in ("pauseCallRecording", "resumeCallRecording")
    ]
    assert sent == ["pauseCallRecording", "resumeCallRecording"]
    with open_store(banking["path"]) as s:
        events = s.read_call(banking["call_id"])
    kinds = [type(e).__name__ for e in events]
    paused = kinds.index("CallRecordingPaused")
    resumed = kinds.index("CallRecordingResumed")
    digits = next(
        i
        for i, e in enumerate(events)
        if isinstance(e, ev.Transcript) and "four two four two" in e.text
    )
    assert paused < digits < resumed
    pause = events[paused]
    assert (pause.fsa, pause.state) == ("card_replacement", "verify")  # type: ignore[attr-defined]
    moved = next(e for e in events[:paused][::-1] if isinstance(e, ev.FsaTransition))
    assert moved.target == "verify"
    left = next(e for e in events[:resumed][::-1] if isinstance(e, ev.FsaTransition))
    assert left.source == "verify" and left.target == "confirm_address"


def test_checkpoints_are_sealed_with_the_call_key(tmp_path: Path) -> None:
    path = str(tmp_path / "s.db")
    with open_store(path) as s:
        s.append([ev.Dtmf(call_id="s1", seq=1, at=1, digits="9")])
        s.flush()
        s.checkpoints.write("s1", 1, b'{"transcript": "my card is 4111111111111111"}')
        assert s.checkpoints.read("s1") == (1, b'{"transcript": "my card is 4111111111111111"}')
        import sqlite3

        with sqlite3.connect(path) as con:
            (raw,) = con.execute("SELECT data FROM stored_events_checkpoints").fetchone()
        assert b"4111111111111111" not in bytes(raw)
        s.forget("s1", "test")
        assert s.checkpoints.read("s1") is None  # forgetting drops the checkpoint too
