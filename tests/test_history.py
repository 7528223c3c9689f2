"""A fresh model session's history is the core's decision (ModelConfigured.history):
bounded state in the engine, the same result as folding the whole transcript, read
from old logs, sealed and masked like transcripts."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest

from fastagent import core, masking
from fastagent import events as ev
from fastagent.core import history_budget, seed_pairs
from fastagent.store import open_store
from fastagent.testing.paths import Call


def test_the_engine_keeps_only_what_the_history_can_use(monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine keeps the longest suffix of heard turns within the budget; its
    history equals seed_pairs over the whole transcript, for any lengths."""
    monkeypatch.setattr(core, "history_budget", lambda model: 300)
    rng = random.Random(7)
    for items in (0, 1, 3, 24):
        c = Call(f"history-{items}", history_items=items)
        c.start(greet=False)
        said: list[tuple[str, str]] = []
        for n in range(120):
            role = "user" if n % 2 else "assistant"
            text = f"t{n} " + "x" * rng.choice((0, 5, 40, 120, 350))
            c.feed(ev.Transcript, role=role, item_id=f"i{n}", text=text)
            said.append((role, text))
            assert c.engine.heard_chars <= 300
            want = seed_pairs(said, items, 300)
            assert [(h.role, h.text) for h in c.engine._history()] == want


def test_budget_follows_the_calls_model() -> None:
    assert history_budget("gpt-realtime-2") == 128_000
    assert history_budget("gpt-realtime-mini") == 32_000


def test_an_old_model_configured_reads_with_no_history() -> None:
    body = b'{"type":"ModelConfigured","call_id":"c","seq":3,"at":0,"instructions":"Hi."}'
    e = ev.decode("ModelConfigured/v2", body)
    assert isinstance(e, ev.ModelConfigured) and e.history == ()
    assert ev.topic_of(e) == "ModelConfigured/v3"


def test_history_is_sealed_in_the_store_and_masked_in_views(tmp_path: Path) -> None:
    secret = "my card is 4111 1111 1111 1111"
    d = ev.ModelConfigured(
        call_id="h1",
        seq=1,
        at=1,
        instructions="Be brief.",
        history=(ev.HistoryItem(role="user", text=secret),),
    )
    path = str(tmp_path / "s.db")
    with open_store(path) as s:
        s.append([d])
        s.flush()
        assert s.read_call("h1") == [d]
        with sqlite3.connect(path) as con:
            raw = b"".join(bytes(r[0]) for r in con.execute("SELECT state FROM stored_events"))
        assert b"4111" not in raw and b"my card" not in raw
        s.forget("h1", "test")
        blank = s.read_call("h1", forgotten="blank")[0]
        assert isinstance(blank, ev.ModelConfigured) and blank.history == ()
    shown = masking.mask_event(d)
    assert shown.history == (ev.HistoryItem(role="user", text="my card is [card]"),)
