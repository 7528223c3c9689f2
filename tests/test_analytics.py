"""Analytics projection: exactly-once sync into DuckDB, views, CLI commands."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import typer
from typer.testing import CliRunner

from fastagent import events as ev
from fastagent.analytics_cli import register
from fastagent.store import open_store
from projections import analytics

T = 1_767_225_600_000_000  # 2026-01-01 UTC in microseconds
MS = 1000


USAGE = ev.Usage(input_tokens=70, output_tokens=30, total_tokens=100)


def _tool(tool_call_id: str) -> dict[str, Any]:
    return {"tool_call_id": tool_call_id, "name": "lookup"}


def _bot(response_id: str, k: int) -> dict[str, Any]:
    return {"response_id": response_id, "item_id": "i1", "chunk": k, "nbytes": 320,
            "duration_us": 40_000, "fmt": "m"}  # fmt: skip


def _call_a() -> list[ev.Event]:
    """A completed call: a turn answered after 350 ms, two tool calls (one fails), a barge-in."""
    c = "call-a"
    specs: list[tuple[int, type, dict[str, Any]]] = [
        (0, ev.SessionInitiated, {"config": ev.CallConfig(agent="banking"), "caller": "+1001"}),
        (1, ev.CallStarted, {"caller": "+1001", "callee": "+2002"}),
        *[
            (20 * k, ev.CallerAudio, {"chunk": k, "nbytes": 160, "duration_us": 20_000, "fmt": "m"})
            for k in range(1, 6)
        ],
        (200, ev.SpeechStarted, {"item_id": "u1"}),
        (1000, ev.SpeechStopped, {"item_id": "u1", "audio_end_ms": 1000}),
        (1001, ev.Transcript, {"role": "user", "item_id": "u1", "text": "I lost my card"}),
        (1100, ev.FsaStarted, {"fsa": "card", "state": "identify", "trigger": "lost_card"}),
        (1200, ev.ResponseStarted, {"response_id": "r1"}),
        *[(1350 + 40 * k, ev.BotAudio, _bot("r1", k)) for k in range(4)],
        (1400, ev.FunctionCallDispatched, {**_tool("fc1"), "arguments": "{}"}),
        (1520, ev.ToolResult, {**_tool("fc1"), "ok": True, "duration_us": 120_000}),
        (1600, ev.FunctionCallDispatched, {**_tool("fc2"), "arguments": "{}"}),
        (1700, ev.ToolResult, {**_tool("fc2"), "ok": False, "error": "timeout"}),
        (1800, ev.FsaTransition, {"fsa": "card", "source": "identify", "target": "verify",
                                  "trigger": "id", "reason": "known"}),
        (1900, ev.PlaybackStopped, {"stream_id": "s1", "reason": "barge_in", "played_ms": 550}),
        (1901, ev.TruncateRequested, {"item_id": "i1", "audio_end_ms": 550}),
        (1902, ev.ResponseDone, {"response_id": "r1", "status": "cancelled", "usage": USAGE}),
        (2000, ev.FsaFinished, {"fsa": "card", "state": "verify", "outcome": "completed"}),
        (3000, ev.CallEnded, {"reason": "done", "outcome": "completed"}),
    ]  # fmt: skip
    return [cls(call_id=c, seq=i, at=T + t * MS, **kw) for i, (t, cls, kw) in enumerate(specs, 1)]


def _call_b() -> list[ev.Event]:
    """An abandoned call: the FSA never finishes; one turn answered after 500 ms."""
    c, t0 = "call-b", T + 10_000 * MS
    specs: list[tuple[int, type, dict[str, Any]]] = [
        (0, ev.SessionInitiated, {"config": ev.CallConfig(agent="banking"), "caller": "+1003"}),
        (10, ev.FsaStarted, {"fsa": "card", "state": "identify"}),
        (500, ev.SpeechStopped, {"item_id": "u1"}),
        (1000, ev.BotAudio, _bot("r1", 0)),
        (1040, ev.BotAudio, _bot("r1", 1)),
        (2000, ev.CallEnded, {"reason": "caller hung up", "outcome": "abandoned"}),
    ]  # fmt: skip
    return [cls(call_id=c, seq=i, at=t0 + t * MS, **kw) for i, (t, cls, kw) in enumerate(specs, 1)]


def _interleave(*calls: list[ev.Event]) -> list[ev.Event]:
    return sorted((e for c in calls for e in c), key=lambda e: (e.at, e.call_id))


EVENTS = _interleave(_call_a(), _call_b())


def _write(url: str, events: list[ev.Event]) -> None:
    store = open_store(url)
    try:
        store.append(events)
        store.flush()
    finally:
        store.close()


@pytest.fixture
def store_path(tmp_path: Path) -> str:
    path = str(tmp_path / "store.db")
    _write(path, EVENTS)
    return path


def _sync(store: str, db: str, **kw: Any) -> analytics.SyncResult:
    with analytics.opened(store, db) as (source, con):
        return analytics.sync(source, con, **kw)


def _q(db: str, sql: str) -> list[tuple[Any, ...]]:
    con = analytics.open_analytics(db, read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


COUNTS = """SELECT (SELECT count(*) FROM calls), (SELECT count(*) FROM turns),
    (SELECT count(*) FROM tool_calls), (SELECT count(*) FROM fsa_transitions),
    (SELECT count(*) FROM barge_ins), (SELECT sum(chunks) FROM audio_stats),
    (SELECT sum(events) FROM event_counts), (SELECT position FROM sync_state)"""


def _check_views(db: str) -> None:
    assert _q(db, COUNTS) == [(2, 1, 2, 4, 1, 11, len(EVENTS), len(EVENTS))]
    calls = _q(
        db, "SELECT call_id, outcome, duration_s, agent, caller, callee FROM calls ORDER BY 1"
    )
    assert calls == [
        # The caller's number is sealed in the store: analytics never holds it.
        ("call-a", "completed", 3.0, "banking", "", "+2002"),
        ("call-b", "abandoned", 2.0, "banking", "", None),
    ]
    lat = _q(db, "SELECT call_id, response_id, latency_ms FROM turn_latency ORDER BY 1")
    assert lat == [("call-a", "r1", 350.0), ("call-b", "r1", 500.0)]
    assert _q(db, "SELECT name, calls, errors, error_pct FROM tool_error_rates") == [
        ("lookup", 2, 1, 50.0)
    ]
    tools = _q(db, "SELECT call_id_tool, result_ok, error, duration_ms FROM tool_calls ORDER BY 1")
    # Tool errors may quote personal data: sealed, so analytics sees only that it failed.
    assert tools == [("fc1", True, None, 120.0), ("fc2", False, None, 100.0)]
    funnel = _q(db, "SELECT stage, name, runs FROM fsa_funnel")
    assert funnel == [
        ("started", "(started)", 2),
        ("state", "identify", 2),
        ("state", "verify", 1),
        ("outcome", "abandoned", 1),
        ("outcome", "completed", 1),
    ]
    assert _q(db, "SELECT item_id, played_ms, audio_end_ms FROM barge_ins") == [("i1", 550, 550)]
    assert _q(db, "SELECT sum(total_tokens) FROM token_usage") == [(100,)]


def test_sync_builds_tables_and_views(store_path: str, tmp_path: Path) -> None:
    db = str(tmp_path / "a.duckdb")
    res = _sync(store_path, db)
    assert (res.applied, res.position, res.skipped) == (len(EVENTS), len(EVENTS), {})
    _check_views(db)
    # Nothing new: a no-op.
    again = _sync(store_path, db)
    assert (again.applied, again.batches) == (0, 0)
    _check_views(db)


def test_small_batches_give_the_same_result(store_path: str, tmp_path: Path) -> None:
    db = str(tmp_path / "a.duckdb")
    res = _sync(store_path, db, batch_size=3)  # aggregates span many batches
    assert res.batches == -(-len(EVENTS) // 3)
    _check_views(db)


def test_interrupted_sync_resumes_exactly_once(store_path: str, tmp_path: Path) -> None:
    db = str(tmp_path / "a.duckdb")
    commits: list[int] = []

    def crash_on_third(position: int) -> None:
        if len(commits) == 2:
            raise RuntimeError("killed mid-sync")
        commits.append(position)

    with pytest.raises(RuntimeError, match="killed"):
        _sync(store_path, db, batch_size=4, before_commit=crash_on_third)
    assert _q(db, "SELECT position, events FROM sync_state") == [(8, 8)]
    assert _q(db, "SELECT sum(events) FROM event_counts") == [(8,)]
    res = _sync(store_path, db, batch_size=4)
    assert res.start_position == 8 and res.applied == len(EVENTS) - 8
    _check_views(db)


def test_unknown_newer_and_corrupt_events_are_skipped_and_reported(
    store_path: str, tmp_path: Path
) -> None:
    raw = sqlite3.connect(store_path)
    good = ev.encode(ev.Dtmf(call_id="call-x", seq=5, at=T, digits="1"))
    raw.executemany(
        "INSERT INTO stored_events VALUES (?, ?, ?, ?)",
        [
            ("call-x", 1, "FutureThing/v1", b'{"call_id":"call-x","seq":1,"at":1}'),
            ("call-x", 2, "CallerAudio/v9", b'{"call_id":"call-x","seq":2,"at":1}'),
            ("call-x", 3, "Transcript/v1", b"{not json"),
            ("call-x", 4, "CallerAudio/v1", b"\xff\xfe"),
            ("call-x", 5, "Dtmf/v1", good),
            ("call-x", 6, "SpeechStopped/v1", b'{"seq":6}'),
        ],
    )
    raw.commit()
    raw.close()
    db = str(tmp_path / "a.duckdb")
    res = _sync(store_path, db)
    assert res.skipped == {
        ("FutureThing/v1", "unknown_type"): 1,
        ("CallerAudio/v9", "newer_version"): 1,
        ("Transcript/v1", "corrupt"): 1,
        ("CallerAudio/v1", "corrupt"): 1,
        ("SpeechStopped/v1", "corrupt"): 1,
    }
    assert res.applied == len(EVENTS) + 1 and res.position == len(EVENTS) + 6
    assert "skipped 1 FutureThing/v1 event(s): unknown_type" in res.skipped_lines()
    rows = _q(db, "SELECT topic, reason, events FROM sync_skipped ORDER BY 1, 2")
    assert len(rows) == 5
    assert _q(db, "SELECT detail FROM call_events WHERE type = 'Dtmf'") == [("1",)]


def test_invalid_audio_in_a_batch_is_redone_row_by_row(store_path: str, tmp_path: Path) -> None:
    """Audio is aggregated without positions; a bad audio row makes its batch go row by row,
    so it is named and skipped while the good audio of the same batch still counts."""
    raw = sqlite3.connect(store_path)
    good = ev.encode(ev.CallerAudio(call_id="call-x", seq=1, at=T, chunk=0, nbytes=7,
                                    duration_us=20_000, fmt="m"))  # fmt: skip
    raw.executemany(
        "INSERT INTO stored_events VALUES (?, ?, ?, ?)",
        [
            ("call-x", 1, "CallerAudio/v1", good),
            ("call-x", 2, "CallerAudio/v1", b'{"call_id":"call-x","seq":2,"at":'),
            ("call-x", 3, "BotAudio/v1", b'{"call_id":"call-x","seq":3,"at":1,"nbytes":1}'),
            ("call-x", 4, "CallerAudio/v1", b'{"call_id":"call-x","seq":4,"at":1}\x00'),
        ],
    )
    raw.commit()
    raw.close()
    db = str(tmp_path / "a.duckdb")
    res = _sync(store_path, db)
    assert res.skipped == {("CallerAudio/v1", "corrupt"): 2, ("BotAudio/v1", "corrupt"): 1}
    assert res.applied == len(EVENTS) + 1
    rows = _q(db, "SELECT chunks, nbytes FROM audio_stats WHERE call_id = 'call-x'")
    assert rows == [(1, 7)]
    assert _q(db, "SELECT events FROM event_counts WHERE call_id = 'call-x'") == [(1,)]


def test_sqlite_source_hands_audio_over_without_positions(store_path: str) -> None:
    source = analytics.open_source(store_path)
    try:
        batch = source.read_batch(0, 1000, source.max_position())
        assert isinstance(source, analytics.SqliteSource)
        assert (batch.after, batch.last, batch.events) == (0, len(EVENTS), len(EVENTS))
        assert batch.audio is not None and len(batch.audio) == 11
        assert "CallerAudio/v1" not in batch.rows.column("topic").to_pylist()
        assert batch.raw().num_rows == len(EVENTS)
    finally:
        source.close()


def test_store_api_source_gives_the_same_result(store_path: str, tmp_path: Path) -> None:
    """The generic path (store.read_all_raw, as for PostgreSQL) on an SQLite store."""
    db = str(tmp_path / "a.duckdb")
    with analytics.opened(store_path, db, fast=False) as (source, con):
        assert isinstance(source, analytics.StoreSource)
        res = analytics.sync(source, con, batch_size=5)
    assert (res.applied, res.position) == (len(EVENTS), len(EVENTS))
    _check_views(db)


# --------------------------------------------------------------------------- CLI


@pytest.fixture
def cli(store_path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    app = typer.Typer(pretty_exceptions_enable=False)
    register(app)
    monkeypatch.setenv("FASTAGENT_STORE", store_path)
    monkeypatch.setenv("FASTAGENT_ANALYTICS", str(tmp_path / "cli.duckdb"))
    runner = CliRunner()

    def run(*args: str) -> Any:
        return runner.invoke(app, list(args))

    return run


def test_cli_sync_and_sql_formats(cli: Any, tmp_path: Path) -> None:
    r = cli("sync")
    assert r.exit_code == 0, r.output
    assert f"synced {len(EVENTS)} events" in r.stderr
    r = cli("sql", "SELECT call_id, outcome FROM calls ORDER BY 1", "--format", "csv")
    assert r.exit_code == 0 and r.stdout == "call_id,outcome\ncall-a,completed\ncall-b,abandoned\n"
    r = cli("sql", "SELECT call_id, started_at FROM calls ORDER BY 1", "-f", "json", "--no-sync")
    assert json.loads(r.stdout)[0] == {"call_id": "call-a", "started_at": "2026-01-01T00:00:00"}
    out = tmp_path / "q.parquet"
    r = cli("sql", "SELECT * FROM turn_latency", "-f", "parquet", "-o", str(out))
    assert r.exit_code == 0 and pq.read_table(out).num_rows == 2
    r = cli("sql", "SELECT count(*) AS n FROM turns")
    assert r.exit_code == 0 and "│ 1 │" in r.stdout


def test_cli_errors_are_one_line_exit_2(cli: Any, tmp_path: Path) -> None:
    r = cli("sql", "SELECT * FROM no_such_table")
    assert r.exit_code == 2
    assert r.stderr.count("\n") == 1 and "no_such_table does not exist" in r.stderr
    assert "Traceback" not in r.output
    r = cli("sql", "SELEC 1", "--no-sync")
    assert r.exit_code == 2 and r.stderr.startswith("fastagent: Parser Error")
    r = cli("sync", "--store", str(tmp_path / "missing" / "x.db"))
    assert r.exit_code == 2 and r.stderr.count("\n") == 1 and "x.db" in r.stderr
    r = cli("sync", "--store", "ftp://host/x")
    assert r.exit_code == 2 and "unsupported store URL scheme" in r.stderr
    r = cli("sql", "SELECT 1", "-f", "parquet")
    assert r.exit_code == 2 and "-o" in r.stderr
    r = cli("report", "-f", "xml")
    assert r.exit_code == 2 and "unknown format" in r.stderr


def test_cli_report_formats(cli: Any, tmp_path: Path) -> None:
    r = cli("report")
    assert r.exit_code == 0, r.output
    for title in ("Outcomes", "FSA funnel", "Tool error rates", "Response latency"):
        assert title in r.stdout
    r = cli("report", "-f", "json", "--no-sync")
    data = json.loads(r.stdout)
    assert data["tool_error_rates"][0]["error_pct"] == 50.0
    assert data["response_latency"][0]["p50_ms"] == 425.0
    r = cli("report", "-f", "csv", "--no-sync")
    assert "# Outcomes\noutcome,calls,pct,avg_duration_s\n" in r.stdout
    r = cli("report", "-f", "parquet", "-o", str(tmp_path / "rep"), "--no-sync")
    assert r.exit_code == 0 and pq.read_table(tmp_path / "rep" / "outcomes.parquet").num_rows == 2


def test_cli_export_parquet(cli: Any, tmp_path: Path) -> None:
    out = tmp_path / "export"
    r = cli("export-parquet", str(out))
    assert r.exit_code == 0, r.output
    files = {p.name for p in out.iterdir()}
    assert {"calls.parquet", "turns.parquet", "tool_calls.parquet", "fsa_funnel.parquet"} <= files
    assert pq.read_table(out / "calls.parquet").num_rows == 2
    assert pq.read_table(out / "fsa_transitions.parquet").num_rows == 4


# --------------------------------------------------------------------------- PostgreSQL


def _pg_url() -> str | None:
    try:
        import psycopg

        with psycopg.connect(
            host="127.0.0.1", port=5432, user="postgres", dbname="test", connect_timeout=2
        ):
            pass
    except Exception:
        return None
    return f"postgresql://postgres@127.0.0.1:5432/test?table=analytics_test_{os.getpid()}"


def test_sync_from_postgresql(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fastagent.privacy import new_key_text

    monkeypatch.setenv("FASTAGENT_MASTER_KEY", new_key_text())
    url = _pg_url()
    if url is None:
        pytest.skip("PostgreSQL at 127.0.0.1:5432 (database test) is not reachable")
    import psycopg

    table = url.rpartition("=")[2]
    try:
        _write(url, EVENTS)
        db = str(tmp_path / "a.duckdb")
        res = _sync(url, db, batch_size=7)
        assert res.source.startswith("postgresql store")
        assert res.applied == len(EVENTS)
        _check_views(db)
    finally:
        with psycopg.connect(host="127.0.0.1", user="postgres", dbname="test") as conn:
            for t in (table, f"{table}_keys", f"{table}_audit"):
                conn.execute(f"DROP TABLE IF EXISTS {t}")
