"""Call continuity on PostgreSQL with real processes: caller resume on the same and on
another instance, model drop mid-response, ``kill -9`` mid-call, two instances
racing for one call, the grace period.  Each test runs ``fastagent serve``
subprocesses on ephemeral ports against its own PostgreSQL schema and a fake
Realtime model in the test; every call's log must replay identically."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import websockets

from fastagent import checkpoints
from fastagent import events as ev
from fastagent.replay import replay
from fastagent.store import EventStore, open_store
from fastagent.testing.caller import DEFAULT_PACE, SimulatedCaller
from fastagent.testing.fake_realtime import FakeRealtimeServer
from fastagent.testing.scenario import Scenario, expected_play_streams, scenario_from_dict
from fastagent.testing.synth import synthetic_call
from projections import live

pytestmark = pytest.mark.anyio
TOKEN = "continuity-token"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# ------------------------------------------------------------------ fixtures


@pytest.fixture
def store_url(pg_url: str) -> Iterator[str]:
    """A PostgreSQL schema of its own, dropped afterwards."""
    import psycopg
    from psycopg import sql

    schema = f"cont_{uuid.uuid4().hex[:12]}"
    yield f"{pg_url}{'&' if '?' in pg_url else '?'}schema={schema}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@dataclass
class Instance:
    proc: subprocess.Popen[str]
    url: str
    lines: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{os.uname().nodename}:{self.proc.pid}"

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(5)


def _start(
    n: int, store_url: str, fake_url: str, tmp_path: Path, *, grace: float, **env: str
) -> list[Instance]:
    """``fastagent serve`` ×n on ephemeral ports, started in parallel."""
    full = {
        **os.environ,
        "FASTAGENT_REALTIME_URL": fake_url,
        # The simulated caller plays bot audio at 4x; the service must know.
        "FASTAGENT_PLAYBACK_SPEED": str(1 / DEFAULT_PACE),
        "OPENAI_API_KEY": "test",
        "FASTAGENT_VAIC_TOKEN": TOKEN,
        "FASTAGENT_DATA_DIR": str(tmp_path / "backends"),
        "PYTHONUNBUFFERED": "1",
        **env,
    }
    code = "from fastagent.cli import main; main()"
    cmd = [sys.executable, "-c", code, "serve", "--port", "0", "--store", store_url]
    procs = [
        subprocess.Popen(
            [*cmd, "--grace", str(grace)],
            env=full,
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )
        for _ in range(n)
    ]
    out = []
    for proc in procs:
        inst = Instance(proc, "")
        assert proc.stderr is not None
        deadline = time.monotonic() + 30
        for line in proc.stderr:
            inst.lines.append(line)
            if "running on http://" in line:
                port = line.split("running on http://", 1)[1].split()[0].rsplit(":", 1)[1]
                inst.url = f"ws://127.0.0.1:{port}/audiocodes"
                break
            if time.monotonic() > deadline:
                break
        assert inst.url, "".join(inst.lines)

        def drain(i: Instance = inst) -> None:
            assert i.proc.stderr is not None
            for line in i.proc.stderr:
                i.lines.append(line)

        threading.Thread(target=drain, daemon=True).start()
        out.append(inst)
    return out


@contextlib.asynccontextmanager
async def cluster(
    store_url: str,
    tmp_path: Path,
    sc: Scenario,
    n: int = 2,
    grace: float = 5.0,
    env: dict[str, str] | None = None,
    **fake_kw: Any,
) -> AsyncIterator[tuple[list[Instance], FakeRealtimeServer]]:
    async with FakeRealtimeServer(sc, continue_script=True, **fake_kw) as fake:
        instances = await asyncio.to_thread(
            _start, n, store_url, fake.url, tmp_path, grace=grace, **(env or {})
        )
        try:
            yield instances, fake
        except BaseException:
            for inst in instances:  # shown by pytest with the failure
                print(f"--- instance {inst.name} ---\n" + "".join(inst.lines[-40:]))
            raise
        finally:
            for inst in instances:
                if inst.proc.poll() is None:
                    inst.proc.send_signal(signal.SIGTERM)
            for inst in instances:
                try:
                    inst.proc.wait(10)
                except subprocess.TimeoutExpired:
                    inst.proc.kill()
        assert not fake.violations, fake.violations


def scenario(turns: list[dict[str, Any]], agent: str = "default", **kw: Any) -> Scenario:
    return scenario_from_dict(
        {
            "name": "continuity",
            "agent": agent,
            "greeting": kw.pop("greeting", [{"say": "Hello, how can I help?"}]),
            "turns": turns,
            **kw,
        }
    )


GOODBYE = {
    "caller": "Thanks, goodbye",
    "model": [{"call": "end_call", "args": {"reason": "done"}}, {"say": "Goodbye!"}],
}
PAUSE = {"silence_ms": 3000}  # room for a drop and a resume while the bot is quiet


def streams_before(sc: Scenario, turn: int) -> int:
    """Play streams the caller hears up to (and including) the answer to ``turn``."""
    n = expected_play_streams(sc.greeting)
    for t in sc.turns[: turn + 1]:
        n += expected_play_streams(t.model)
    return n


async def when_heard(caller: SimulatedCaller, streams: int, timeout: float = 15) -> None:
    """Wait until the caller has heard ``streams`` play streams out (the bot is quiet)."""
    async with asyncio.timeout(timeout):
        while True:
            r = caller.report
            done = sum(1 for s in r.play_streams if s.stopped or s.lost)
            if done >= streams and caller._active is None:
                return
            await asyncio.sleep(0.01)


async def read_log(store_url: str, call_id: str, wait_end: bool = True) -> list[ev.Event]:
    def read() -> list[ev.Event]:
        with open_store(store_url) as s:
            return s.read_call(call_id)

    for _ in range(100):
        events = await asyncio.to_thread(read)
        if not wait_end or isinstance(events[-1], ev.CallEnded):
            return events
        await asyncio.sleep(0.05)
    return events


def assert_whole(events: list[ev.Event]) -> None:
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    result = replay(events)
    assert result.identical, result.divergence and result.divergence.to_dict()


def of(events: list[ev.Event], cls: type[ev.Event]) -> list[Any]:
    return [e for e in events if isinstance(e, cls)]


def model_inputs(fake: FakeRealtimeServer, n: int) -> list[dict[str, Any]]:
    return [e for d, e in fake.sessions[n].log if d == "in"]


# ------------------------------------------------------------------ checkpoints


def test_checkpoint_restores_the_engine_exactly(tmp_path: Path) -> None:
    """Restore at many points of a long call, then feed the rest: the same decisions."""
    events = synthetic_call("ckpt", target_events=6000)
    cuts = [i for i, e in enumerate(events) if isinstance(e, ev.Input)][3::700]
    for cut in cuts:
        r = replay(events[:cut])
        assert r.engine is not None
        data = checkpoints.take(r.engine, live.fold(events[:cut]), 1, 2)
        assert data is not None
        ckpt = checkpoints.restore(data)
        assert ckpt is not None and ckpt.seq == events[cut - 1].seq
        engine = checkpoints.engine_of(ckpt)
        scratch = {"admission", "view", "_out", "_at"}  # settled for session.initiate only
        want = {k: v for k, v in vars(r.engine).items() if k not in scratch}
        assert {k: v for k, v in vars(engine).items() if k not in scratch} == want
        assert checkpoints._feed(engine, events[cut:]) == ""
    # Through a store: checkpoint + tail rebuilds what a whole replay does.
    with open_store(str(tmp_path / "s.db")) as store:
        store.append(events[:-2])
        store.flush()
        whole = checkpoints.rebuild(store, "ckpt")
        assert whole.from_checkpoint == 0 and not whole.divergence
        cut = cuts[-1]
        r = replay(events[:cut])
        assert r.engine is not None
        data = checkpoints.take(r.engine, live.fold(events[:cut]))
        assert data is not None
        store.checkpoints.write("ckpt", events[cut - 1].seq, data)
        fast = checkpoints.rebuild(store, "ckpt")
        assert fast.from_checkpoint == events[cut - 1].seq and not fast.divergence
        assert fast.events_read == len(events) - 2 - cut
        assert fast.state == whole.state
        assert fast.engine is not None and whole.engine is not None
        assert fast.engine.next_seq == whole.engine.next_seq
        assert fast.chunks_in == whole.chunks_in and fast.chunks_out == whole.chunks_out
        # A checkpoint this code cannot trust is ignored: the log is replayed.
        store.checkpoints.write("ckpt", 10**9, b'{"format": 999}')
        assert checkpoints.rebuild(store, "ckpt").from_checkpoint == 0


# ------------------------------------------------------------------ caller resume


BANKING = scenario(
    [
        {
            "caller": "Hi, I lost my debit card and I need a new one",
            "model": [
                {"say": "I can order a replacement."},
                {"call": "start_card_replacement", "args": {}},
                {"say": "Please enter your six digit customer number."},
            ],
        },
        PAUSE,
        {
            "dtmf": "123456",
            "model": [
                {"call": "provide_customer_number", "args": {"customer_id": "123456"}},
                {"say": "Thank you. Your date of birth and the card's last four digits?"},
            ],
        },
        {
            "caller": "The tenth of December nineteen eighty five, card ends in four two four two",
            "model": [
                {
                    "call": "verify_identity",
                    "args": {"date_of_birth": "1985-12-10", "card_last4": "4242"},
                },
                {"say": "You're verified. Send the card to 12 Analytical Row?"},
            ],
        },
        PAUSE,
        {
            "caller": "Yes, that address is right",
            "model": [
                {"call": "confirm_delivery_address", "args": {"confirmed": True}},
                {"say": "Shall I order the new card?"},
            ],
        },
        {
            "caller": "Yes please, go ahead",
            "model": [
                {
                    "call": "confirm_card_replacement",
                    "args": {"reason": "lost", "confirmed": True},
                    "expect_output": '"ordered": true',
                },
                {"say": "Done, your card is on its way."},
            ],
        },
        GOODBYE,
    ],
    agent="banking",
    caller={"formats": ["raw/mulaw"]},
)


async def test_caller_resumes_on_the_same_and_on_another_instance(
    store_url: str, tmp_path: Path
) -> None:
    sc = BANKING
    async with cluster(store_url, tmp_path, sc, env={"FASTAGENT_AGENT": "banking"}) as (
        (a, b),
        fake,
    ):
        caller = SimulatedCaller(a.url, TOKEN, formats=("raw/mulaw",), turn_timeout=8)

        async def drops() -> None:
            await when_heard(caller, streams_before(sc, 0))
            assert await caller.drop_and_resume(a.url)  # same instance, from memory
            await when_heard(caller, streams_before(sc, 3))
            assert await caller.drop_and_resume(b.url)  # another instance, from the log

        dropper = asyncio.create_task(drops())
        report = await caller.play(sc, timeout=45)
        await dropper
        events = await read_log(store_url, caller.conversation_id)
        seeded = [
            e["item"]["content"][0]["text"]
            for e in model_inputs(fake, len(fake.sessions) - 1)
            if e["type"] == "conversation.item.create" and e["item"].get("type") == "message"
        ]
        updates = [e for e in model_inputs(fake, -1) if e["type"] == "session.update"]
    assert report.ended == "bot-disconnected", (report.errors, a.lines[-5:], b.lines[-5:])
    assert report.resumes == 2 and not report.errors, report.errors
    resumed = of(events, ev.SessionResumed)
    assert [r.instance for r in resumed] == [a.name, b.name]
    assert len(of(events, ev.ConnectionLost)) >= 2
    # On B the FSA went on from where A left it: slots intact, card ordered once.
    trail = [(t.source, t.target) for t in of(events, ev.FsaTransition)]
    assert ("confirm_address", "confirm_replacement") in trail
    after_b = events.index(resumed[1])
    assert any(
        isinstance(e, ev.FsaTransition) and e.source == "confirm_address" for e in events[after_b:]
    )
    orders = [t for t in of(events, ev.ToolResult) if t.name == "order_replacement_card"]
    assert len(orders) == 1 and json.loads(orders[0].output)["ordered"] is True
    # B's new model session heard the conversation so far, and the current step's tools.
    assert "Hi, I lost my debit card and I need a new one" in seeded
    assert any("confirm_delivery_address" in json.dumps(u) for u in updates)
    assert isinstance(events[-1], ev.CallEnded) and events[-1].outcome == "completed"
    assert_whole(events)


# ------------------------------------------------------------------ model drop


async def test_model_drop_mid_response_reconnects_and_seeds(store_url: str, tmp_path: Path) -> None:
    sc = scenario(
        [
            {
                "caller": "Tell me a long story",
                "model": [{"say": "Once upon a time there was a very long story " * 3}],
            },
            GOODBYE,
        ]
    )
    async with cluster(store_url, tmp_path, sc, n=1, fail_after_audio_chunks=40) as (
        (a,),
        fake,
    ):
        caller = SimulatedCaller(a.url, TOKEN, turn_timeout=8)
        report = await caller.play(sc, timeout=30)
        events = await read_log(store_url, caller.conversation_id)
        assert len(fake.sessions) == 2
        second = model_inputs(fake, 1)
    assert report.ended == "bot-disconnected", (report.errors, a.lines[-5:])
    lost = [e for e in of(events, ev.ConnectionLost) if e.side == "model"]
    restored = [e for e in of(events, ev.ConnectionRestored) if e.side == "model"]
    assert len(lost) == 1 and len(restored) == 1 and lost[0].seq < restored[0].seq
    # The response the drop cut off was stopped and asked for again on the new session.
    cut = events[events.index(lost[0]) :]
    assert any(isinstance(e, ev.PlaybackStopped) and e.reason == "model_lost" for e in cut)
    assert any(isinstance(e, ev.ResponseRequested) for e in cut)
    kinds = [e["type"] for e in second]
    assert kinds.index("session.update") < kinds.index("response.create")
    texts = [
        (e["item"]["role"], e["item"]["content"][0]["text"])
        for e in second
        if e["type"] == "conversation.item.create" and e["item"]["type"] == "message"
    ]
    assert ("assistant", "Hello, how can I help?") in texts
    assert ("user", "Tell me a long story") in texts
    assert_whole(events)


# ------------------------------------------------------------------ crash


async def test_kill_9_mid_call_then_resume_elsewhere(store_url: str, tmp_path: Path) -> None:
    """A dies right after ordering the card, before its result is durable (1 s group
    commit): B re-runs the call with the same idempotency key; one card is ordered."""
    sc = BANKING
    env = {"FASTAGENT_AGENT": "banking", "FASTAGENT_FLUSH_MS": "1000"}
    async with cluster(store_url, tmp_path, sc, env=env) as ((a, b), fake):
        caller = SimulatedCaller(a.url, TOKEN, formats=("raw/mulaw",), turn_timeout=8)
        bank = tmp_path / "backends" / "bank.sqlite"
        durable: list[ev.Event] = []

        def orders() -> int:
            if not bank.exists():
                return 0
            with contextlib.closing(sqlite3.connect(bank)) as con:
                return int(con.execute("SELECT COUNT(*) FROM card_orders").fetchone()[0])

        async def crash() -> None:
            async with asyncio.timeout(40):
                while await asyncio.to_thread(orders) == 0:
                    await asyncio.sleep(0.005)
            caller._resuming = True  # the caller's reader waits for the new socket
            caller._reconnected.clear()
            a.kill9()
            durable.extend(await read_log(store_url, caller.conversation_id, wait_end=False))
            assert await caller.drop_and_resume(b.url)

        crasher = asyncio.create_task(crash())
        report = await caller.play(sc, timeout=50)
        await crasher
        events = await read_log(store_url, caller.conversation_id)
        n_orders = orders()
    assert report.ended == "bot-disconnected", (report.errors, b.lines[-8:])
    assert events[: len(durable)] == durable  # everything acknowledged survived
    assert n_orders == 1
    dispatched = [
        d for d in of(events, ev.FunctionCallDispatched) if d.name == "order_replacement_card"
    ]
    assert len(dispatched) == 1
    results = [r for r in of(events, ev.ToolResult) if r.tool_call_id == dispatched[0].tool_call_id]
    assert len(results) == 1 and results[0].ok
    if not any(isinstance(e, ev.ToolResult) for e in durable[durable.index(dispatched[0]) :]):
        # Not durable on A: B ran it again with the same key (the backend answered from it).
        assert events.index(results[0]) > events.index(of(events, ev.SessionResumed)[-1])
    lost = of(events, ev.ConnectionLost)
    assert any(e.side == "caller" and e.reason.startswith("no event for") for e in lost)
    assert of(events, ev.SessionResumed)[-1].instance == b.name
    assert isinstance(events[-1], ev.CallEnded) and events[-1].outcome == "completed"
    assert_whole(events)


# ------------------------------------------------------------------ ownership


SHORT = scenario(
    [{"caller": "What are your opening hours?", "model": [{"say": "Eight to eight."}]}, PAUSE]
)


async def _start_and_drop(url: str) -> SimulatedCaller:
    """A call that is heard out and then loses its socket (suspended on its instance)."""
    caller = SimulatedCaller(url, TOKEN, turn_timeout=8)
    task = asyncio.create_task(caller.play(SHORT, timeout=20))
    await when_heard(caller, streams_before(SHORT, 0))
    assert caller.ws is not None
    caller.ws.transport.abort()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return caller


async def _resume(url: str, call_id: str) -> tuple[Any, dict[str, Any]]:
    ws = await websockets.connect(url, additional_headers={"Authorization": f"Bearer {TOKEN}"})
    await ws.send(json.dumps({"type": "session.resume", "conversationId": call_id}))
    return ws, json.loads(await asyncio.wait_for(ws.recv(), 10))


SILENCE_B64 = base64.b64encode(b"\xff" * 160).decode()


async def _stream(ws: Any, call_id: str) -> None:
    """Stream 20 ms chunks of silence like VAIC does after an accepted resume."""
    chunk = json.dumps(
        {"type": "userStream.chunk", "conversationId": call_id, "audioChunk": SILENCE_B64}
    )
    with contextlib.suppress(websockets.ConnectionClosed):
        await ws.send(json.dumps({"type": "userStream.start", "conversationId": call_id}))
        while True:
            await ws.send(chunk)
            await asyncio.sleep(0.02)


async def test_two_instances_racing_for_one_call(store_url: str, tmp_path: Path) -> None:
    async with cluster(store_url, tmp_path, SHORT) as ((a, b), _fake):
        caller = await _start_and_drop(a.url)
        call_id = caller.conversation_id
        streams: list[asyncio.Task[None]] = []

        async def resume_and_stream(url: str) -> tuple[Any, dict[str, Any]]:
            ws, got = await _resume(url, call_id)
            if got["type"] == "session.accepted":
                streams.append(asyncio.create_task(_stream(ws, call_id)))
            return ws, got

        (ws_a, got_a), (ws_b, got_b) = await asyncio.gather(
            resume_and_stream(a.url), resume_and_stream(b.url)
        )
        # One wins; the other backs off (a conflict, or a log that is still growing).
        assert sorted([got_a["type"], got_b["type"]]) == ["session.accepted", "session.error"]
        loser = got_a if got_a["type"] == "session.error" else got_b
        assert loser["reason"] == "call is active on another instance"
        winner = ws_a if got_a["type"] == "session.accepted" else ws_b
        await asyncio.sleep(0.3)
        await winner.send(
            json.dumps(
                {
                    "type": "session.end",
                    "conversationId": call_id,
                    "reasonCode": "client-disconnected",
                }
            )
        )
        events = await read_log(store_url, call_id)
        for task in streams:
            task.cancel()
        for ws in (ws_a, ws_b):
            await ws.close()
    resumed = of(events, ev.SessionResumed)
    assert len(resumed) == 1
    after = events[events.index(resumed[0]) :]
    assert sum(isinstance(e, ev.CallerAudio) for e in after) > 3  # the winner's audio
    assert isinstance(events[-1], ev.CallEnded) and events[-1].outcome == "caller_hangup"
    assert_whole(events)


async def test_a_resume_elsewhere_that_overtakes_the_news_of_the_drop(
    store_url: str, tmp_path: Path
) -> None:
    """VAIC resumes on B the moment its socket to A drops; B can read the log before
    A has learned of the drop (its log still grows with the caller's audio).  B
    waits for A to record the drop instead of taking the call for driven."""
    async with cluster(store_url, tmp_path, SHORT) as ((a, b), _fake):
        caller = SimulatedCaller(a.url, TOKEN, turn_timeout=8)
        task = asyncio.create_task(caller.play(SHORT, timeout=20))
        await when_heard(caller, streams_before(SHORT, 0))
        call_id = caller.conversation_id
        ws = await websockets.connect(
            b.url, additional_headers={"Authorization": f"Bearer {TOKEN}"}
        )
        await ws.send(json.dumps({"type": "session.resume", "conversationId": call_id}))
        answer = asyncio.create_task(ws.recv())
        await asyncio.sleep(0.3)  # B reads the log meanwhile; A's socket still streams
        assert caller.ws is not None
        caller.ws.transport.abort()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        got = json.loads(await asyncio.wait_for(answer, 10))
        assert got["type"] == "session.accepted", got
        streaming = asyncio.create_task(_stream(ws, call_id))
        await asyncio.sleep(0.3)
        await ws.send(
            json.dumps(
                {
                    "type": "session.end",
                    "conversationId": call_id,
                    "reasonCode": "client-disconnected",
                }
            )
        )
        events = await read_log(store_url, call_id)
        streaming.cancel()
        await ws.close()
    resumed = of(events, ev.SessionResumed)
    assert [r.instance for r in resumed] == [b.name]
    lost = of(events, ev.ConnectionLost)
    assert lost and lost[0].side == "caller" and lost[0].seq < resumed[0].seq
    assert isinstance(events[-1], ev.CallEnded) and events[-1].outcome == "caller_hangup"
    assert_whole(events)


async def test_unknown_call_and_resume_after_the_grace(store_url: str, tmp_path: Path) -> None:
    async with cluster(store_url, tmp_path, SHORT, grace=0.5) as ((a, b), _fake):
        ws, got = await _resume(b.url, "never-seen")
        assert got == {"type": "session.error", "reason": "conversation not found"}
        await ws.close()
        caller = await _start_and_drop(a.url)
        events = await read_log(store_url, caller.conversation_id)  # waits for the end
        for url in (a.url, b.url):
            ws, got = await _resume(url, caller.conversation_id)
            assert got == {"type": "session.error", "reason": "conversation has ended"}
            await ws.close()
    end = events[-1]
    assert isinstance(end, ev.CallEnded) and end.outcome == "dropped"
    assert end.reason == "caller did not return within 0.5 s"
    assert isinstance(events[-2], ev.GraceExpired)
    assert_whole(events)


def test_store_is_shared(store_url: str) -> None:
    """Two stores (two instances) on one schema: the second writer of a seq conflicts."""
    from fastagent.store import StreamConflict

    one, two = open_store(store_url), open_store(store_url)
    try:
        e = ev.Dtmf(call_id="shared", seq=1, at=1, digits="1")
        one.append_now([e])
        with pytest.raises(StreamConflict):
            two.append_now([ev.Dtmf(call_id="shared", seq=1, at=2, digits="2")])
        two.reclaim("shared")  # a later resume here may claim it again
        two.append_now([ev.Dtmf(call_id="shared", seq=2, at=3, digits="3")])
        assert [x.seq for x in one.read_call("shared")] == [1, 2]
    finally:
        _close(one, two)


def _close(*stores: EventStore) -> None:
    for s in stores:
        s.close()


# ------------------------------------------------- resume elsewhere, another model


async def test_resume_on_an_instance_with_another_model_keeps_the_calls_model_and_history(
    store_url: str, tmp_path: Path
) -> None:
    """B's FASTAGENT_MODEL differs from the one the call was recorded with: B dials
    the call's own model, and its new model session is told exactly the history
    the ModelConfigured in the log carries (decided by the core, replayed)."""
    async with FakeRealtimeServer(SHORT, continue_script=True) as fake:
        a, b = [
            (
                await asyncio.to_thread(
                    _start, 1, store_url, fake.url, tmp_path, grace=5.0, FASTAGENT_MODEL=model
                )
            )[0]  # fmt: skip
            for model in ("gpt-realtime-2", "gpt-realtime-mini")
        ]
        try:
            caller = await _start_and_drop(a.url)
            call_id = caller.conversation_id
            ws, got = await _resume(b.url, call_id)
            assert got["type"] == "session.accepted", got
            streaming = asyncio.create_task(_stream(ws, call_id))
            async with asyncio.timeout(10):  # B's model session configured and told
                while len(fake.sessions) < 2 or not any(
                    e["type"] == "conversation.item.create" for e in model_inputs(fake, -1)
                ):
                    await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)
            await ws.send(
                json.dumps(
                    {
                        "type": "session.end",
                        "conversationId": call_id,
                        "reasonCode": "client-disconnected",
                    }
                )
            )
            events = await read_log(store_url, call_id)
            streaming.cancel()
            await ws.close()
            told = [
                (e["item"]["role"], e["item"]["content"][0]["text"])
                for e in model_inputs(fake, -1)
                if e["type"] == "conversation.item.create" and e["item"].get("type") == "message"
            ]
            dialled = [s.model for s in fake.sessions]
        finally:
            for inst in (a, b):
                inst.proc.send_signal(signal.SIGTERM)
            for inst in (a, b):
                try:
                    inst.proc.wait(10)
                except subprocess.TimeoutExpired:
                    inst.proc.kill()
    assert dialled == ["gpt-realtime-2", "gpt-realtime-2"]  # B's own default never dialled
    assert of(events, ev.SessionInitiated)[0].config.model == "gpt-realtime-2"
    resumed = events.index(of(events, ev.SessionResumed)[0])
    fresh = [e for e in of(events[resumed:], ev.ModelConfigured) if e.history]
    assert len(fresh) == 1
    history = [(h.role, h.text) for h in fresh[0].history]
    assert ("user", "What are your opening hours?") in history
    assert ("assistant", "Eight to eight.") in history
    assert told == history  # exactly what the log says the model was told
    # gpt-realtime-2 (the call's) is a reasoning model; B's default is not.
    assert fresh[0].reasoning_effort == of(events, ev.ModelConfigured)[0].reasoning_effort
    assert_whole(events)
