"""``kill -9`` of a real ``fastagent serve`` mid-call, a restart, ``session.resume``:
nothing non-audio reached either side ahead of the log, and the resumed model
session was told exactly what the log says (docs/operations.md, "Crash").

The measurement is bench/kill9.py's (imported from the file), over real loopback
sockets: the service is a subprocess, the model the fake Realtime server, the
callers simulated VAIC callers that resume as VAIC does after a drop.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
from importlib import resources
from pathlib import Path
from types import ModuleType
from typing import Any

import msgspec
import pytest

from fastagent.testing.scenario import Turn, load_scenario

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.anyio
FLUSH_MS = 2000  # a long group commit: only a forced flush makes a decision durable in time


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _bench() -> ModuleType:
    name = "bench_kill9"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / "kill9.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def _function_output(e: dict[str, Any]) -> bool:
    item = e.get("item")
    return isinstance(item, dict) and item.get("type") == "function_call_output"


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
async def test_kill9_mid_call_then_resume(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    bench = _bench()
    full = load_scenario(str(resources.files("fastagent.examples") / "scenarios" / "banking.json"))
    # Up to the identity check, then the caller hangs up: a short call that still
    # has function outputs both before the kill and after the resume.
    sc = msgspec.structs.replace(full, turns=(*full.turns[:3], Turn(hangup=True)))
    store = str(tmp_path / "calls.db")
    if backend == "postgresql":
        url = request.getfixturevalue("pg_url")
        store = f"{url}?schema=kill9_{tmp_path.name[-20:].lower().replace('-', '_')}"
    # Killed the moment the model has received its first function output: had it been
    # sent before the log was durable, the log (a 2 s group commit) would lack it.
    row = await bench.kill_and_resume(
        sc,
        store=store,
        work=tmp_path,
        calls=2,
        flush_ms=FLUSH_MS,
        kill_after=1,
        delay_s=0.0,
        call_timeout=60.0,
        kill_when=_function_output,
    )
    if backend == "postgresql":
        import psycopg
        from psycopg import sql

        schema = store.rsplit("schema=", 1)[1]
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    assert row["calls_live_at_kill"] == 2, json.dumps(row, default=str)
    assert row["model_got_outputs"] >= 1, json.dumps(row, default=str)
    assert row["non_audio_ahead"] == 0, json.dumps(row, default=str)
    assert row["calls_resumed"] == 2, json.dumps(row, default=str)
    assert row["first_difference"] is None, json.dumps(row, default=str)
    assert row["context_differs"] == 0, json.dumps(row, default=str)
    # session.update, the seeded turns, and what the call went on with (a function
    # output after the resume at least): compared item by item.
    assert row["resumed_items_compared"] >= 2 * 4, json.dumps(row, default=str)
    assert row["duplicate_side_effects"] == 0, json.dumps(row, default=str)
    assert row["callers_hung_up"] == 2, json.dumps(row, default=str)


async def test_model_frames_leave_in_log_order_when_durability_ends_out_of_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two batches for the model, recorded one after the other by different tasks:
    the first one's wait for the log is slow (a PostgreSQL commit under load), the
    second one's quick.  The model still gets their frames in log order.  (Found by
    bench/kill9.py on PostgreSQL: a DTMF message reached a resumed model session
    before the ``session.update`` and seeded history the log put first.)"""
    from test_service import TOKEN, _voice, scenario

    from fastagent import events as ev
    from fastagent.service import CallSession
    from fastagent.testing.caller import SimulatedCaller

    slow: list[float] = []
    durable = CallSession.durable

    async def uneven(self: CallSession) -> bool:
        ok = await durable(self)
        if slow:
            await asyncio.sleep(slow.pop())
        return ok

    monkeypatch.setattr(CallSession, "durable", uneven)
    goodbye = {"caller": "Bye", "model": [{"call": "end_call", "args": {}}, {"say": "Bye!"}]}
    sc = scenario([{"silence_ms": 4000}, goodbye])
    async for v in _voice(tmp_path, sc):
        caller = SimulatedCaller(v.url, TOKEN, formats=sc.caller.formats)
        play = asyncio.create_task(caller.play(sc, timeout=30))
        service = v.app.state.service
        for _ in range(1000):  # the greeting played: the call waits in silence
            session = service.calls.get(caller.conversation_id)
            if session is not None and caller.report.play_streams and not caller._active:
                break
            await asyncio.sleep(0.01)
        assert session is not None
        slow.append(0.3)
        first = asyncio.create_task(session.input(ev.Dtmf, digits="1"))
        await asyncio.sleep(0)  # recorded; waiting for the log to be durable
        second = asyncio.create_task(session.input(ev.Dtmf, digits="2"))
        await asyncio.gather(first, second)
        report = await play
        assert report.ended == "bot-disconnected", report.errors
        events = await v.log(caller.conversation_id)
        told = [
            e["item"]["content"][0]["text"]
            for d, e in v.fake.sessions[0].log
            if d == "in"
            and e.get("type") == "conversation.item.create"
            and e["item"]["type"] == "message"
        ]
    logged = [e.text for e in events if isinstance(e, ev.MessageInjected)]
    assert logged == ["[The caller pressed keys: 1]", "[The caller pressed keys: 2]"]
    assert [t for t in told if t.startswith("[The caller")] == logged
