"""Cost and latency per voice API in the analytics (docs/models.md "Cost and latency")."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fastagent.replay import read_recording
from fastagent.store import open_store
from projections import analytics

REPLAYS = Path(__file__).resolve().parent.parent / "replays"


def _q(db: str, sql: str) -> list[tuple[Any, ...]]:
    con = analytics.open_analytics(db, read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


@pytest.fixture
def db(tmp_path: Path) -> str:
    """A store holding one Realtime call and two GPT-Live calls, synced to DuckDB."""
    store = open_store(str(tmp_path / "store.db"))
    try:
        for name in ("banking", "live-banking", "path-live-barge-in-session-expiry"):
            store.append(read_recording(REPLAYS / f"{name}.jsonl"))
        store.flush()
    finally:
        store.close()
    path = str(tmp_path / "a.duckdb")
    with analytics.opened(str(tmp_path / "store.db"), path) as (source, con):
        analytics.sync(source, con)
    return path


def test_cost_per_api(db: str) -> None:
    rows = {r[0]: r for r in _q(db, "SELECT * FROM model_cost")}
    assert set(rows) == {"gpt-live", "realtime"}
    live, rt = rows["gpt-live"], rows["realtime"]
    assert live[1] == 2 and rt[1] == 1  # calls
    # GPT-Live: $0.05 per billed minute; Realtime: by its tokens, no minutes billed.
    assert live[3] > 0 and rt[3] == 0
    assert live[6] == pytest.approx(round(live[3] * 0.05, 4), abs=0.01)
    assert rt[6] > 0 and rt[4] > 0


def test_live_sessions_span_a_drop(db: str) -> None:
    rows = _q(
        db,
        "SELECT session_id, reported_s, billed_s FROM live_sessions "
        "WHERE session_id LIKE 'sess_%' ORDER BY started_at",
    )
    ids = [r[0] for r in rows]
    assert ids.count("sess_1") == 2 and "sess_2" in ids  # the scripted path starts a second
    assert all(r[2] >= (r[1] or 0) for r in rows)  # billed: at least what the server reported


def test_latency_by_api(db: str) -> None:
    rows = {r[0]: r for r in _q(db, "SELECT * FROM latency_by_api")}
    assert rows["realtime"][1] > 0 and rows["gpt-live"][1] > 0  # turns measured for both
