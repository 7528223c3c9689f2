"""kill -9 a busy ``fastagent serve``, restart it, resume every call, and compare
what each side was told with what the log holds.

Per kill: a fresh fake Realtime model, one service process on the store
(``--store``: a SQLite file per kill by default, or a PostgreSQL URL), ``--calls``
simulated callers playing the banking agent's scenario (tool calls, FSA steps,
recognitions, a card order, a hangup).  The kill lands at a random moment inside
the calls' activity: just after the fake model received its N-th non-audio
client event (N drawn at random), plus up to one flush interval.  Then:

1. **At the kill**, the log is read back and compared with what the other sides
   had received (the model's events over its sessions so far; the callers'):

   * model: function outputs and messages the fake got whose decision
     (``FunctionOutputSent`` / ``MessageInjected``) the log lacks; other non-audio
     client events (``session.update``, ``response.create``, truncate, delete)
     beyond their decisions' count;
   * caller: recognitions, speech events and activities (hangup, transfer,
     config, DTMF) beyond what the log holds; bot audio chunks beyond the log's
     ``BotAudio`` (audio may run ahead by one flush interval), and how long
     before the kill the earliest of them reached the caller;
   * order: each call's first model session must have been told a prefix of
     the log's model decisions, in the log's order (the log may hold decisions
     not sent yet).

2. **Resume.**  The service is started again on the same store and every caller
   whose call was not over sends ``session.resume`` on a new socket, as VAIC does
   after a drop (one at a time, so each new model session is known to belong to
   its call).  The fake model goes on with the script where the call's old
   session was.  The calls play to their end; the service is stopped.

3. **After the resume**, for each resumed call, everything the fake model got on
   the call's new session (``session.update`` instructions and tool specs, the
   seeded conversation items, function outputs, messages, ``response.create``,
   truncates, deletes; not audio) is compared, in order, with what the log says
   the model was told from the resume on: its model decisions after the
   ``ConnectionRestored side=model`` of the resume, each ``session.update``
   followed by the history its ModelConfigured carries.  The first difference
   is reported.  Card orders and other
   backend writes are counted per call and tool from the sample bank's
   idempotency table: two keys for one call's write is a duplicate side effect.

The targets: 0 non-audio decisions ahead of the log, 0 calls whose model context
differs from the log, 0 duplicate side effects, audio ahead within one flush.

    PYTHONPATH=$PWD python bench/kill9.py                       # 6 kills x 10 calls, SQLite
    PYTHONPATH=$PWD python bench/kill9.py --store postgresql://postgres@127.0.0.1:5432/test
    PYTHONPATH=$PWD python bench/kill9.py --variant nodurable   # must report faults

``--variant`` runs the service through bench/service_variant.py with a
deliberately broken switch: ``nodurable`` sends every decision without making
the log durable first (the fault the boundary exists to prevent), ``noseed``
resumes model sessions without the transcript (a context that differs from the
log).  Exit status 1 when any target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from fastagent import events as ev
from fastagent import realtime
from fastagent.store import open_store
from fastagent.testing.caller import DEFAULT_PACE, SimulatedCaller
from fastagent.testing.fake_realtime import FakeRealtimeServer, FakeSession
from fastagent.testing.scenario import Scenario, load_scenario

TOKEN = "kill9-token-0123456789"
ROOT = Path(__file__).resolve().parent.parent
ACTIVITY_DECISIONS = {
    "hangup": ev.HangupRequested,
    "transfer": ev.TransferRequested,
    "config": ev.SessionParamsSent,
    "sendDtmf": ev.DtmfSent,
}
MODEL_DECISIONS = {
    "session.update": ev.ModelConfigured,
    "response.create": ev.ResponseRequested,
    "conversation.item.truncate": ev.TruncateRequested,
    "conversation.item.delete": ev.ItemDeleted,
}
# What a model session is told, as comparable tuples (audio and reads left out).
TOLD = frozenset({*MODEL_DECISIONS, "conversation.item.create"})


# ------------------------------------------------------------------ processes


def start_service(
    store: str, fake_url: str, work: Path, flush_ms: int, variant: str = ""
) -> tuple[subprocess.Popen[str], str]:
    """``fastagent serve`` on a free port (``variant``: through service_variant.py)."""
    env = {
        "FASTAGENT_FLUSH_MS": str(flush_ms),
        **os.environ,
        "FASTAGENT_REALTIME_URL": fake_url,
        "FASTAGENT_PLAYBACK_SPEED": str(1 / DEFAULT_PACE),
        "OPENAI_API_KEY": "kill9-not-a-key",
        "FASTAGENT_VAIC_TOKEN": TOKEN,
        "FASTAGENT_AGENT": "banking",
        "FASTAGENT_DATA_DIR": str(work / "backends"),
        "PYTHONUNBUFFERED": "1",
    }
    if variant:
        env["FASTAGENT_BENCH_VARIANT"] = variant
        cmd = [sys.executable, str(ROOT / "bench" / "service_variant.py"), "serve"]
    else:
        cmd = [sys.executable, "-c", "from fastagent.cli import main; main()", "serve"]
    cmd += ["--port", "0", "--store", store, "--agent", "banking"]
    proc = subprocess.Popen(
        cmd, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
    )
    assert proc.stderr is not None
    deadline = time.monotonic() + 60
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if "running on http://" in line:
            port = line.split("running on http://", 1)[1].split()[0].rsplit(":", 1)[1]
            threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()  # type: ignore[union-attr]
            return proc, f"ws://127.0.0.1:{port}/audiocodes"
        if time.monotonic() > deadline:
            break
    proc.kill()
    raise RuntimeError("service did not start:\n" + "".join(lines[-20:]))


class ResumingFake(FakeRealtimeServer):
    """The fake model, told which call a new connection belongs to.

    A resume dials the model first thing, so resuming one call at a time (see
    :meth:`claim`) makes the next connection that call's: it then goes on with
    the script where the call's old session was (``continue_script`` would take
    whichever session came last, another call's).
    """

    def __init__(self, scenario: Any, **kw: Any) -> None:
        super().__init__(scenario, **kw)
        self.owner: dict[int, str] = {}  # session number -> conversation id
        self._lock = asyncio.Lock()
        self._claim: tuple[str, FakeSession | None, asyncio.Event] | None = None

    async def claim(self, call_id: str, prev: FakeSession | None) -> asyncio.Event:
        """Reserve the next connection for ``call_id``; the event is set when it came."""
        await self._lock.acquire()
        came = asyncio.Event()
        self._claim = (call_id, prev, came)

        async def release() -> None:
            with contextlib.suppress(TimeoutError):  # (a refused resume dials nothing)
                await asyncio.wait_for(came.wait(), 30.0)
            self._claim = None
            self._lock.release()

        asyncio.get_running_loop().create_task(release())
        return came

    async def _handle(self, ws: Any) -> None:
        query = parse_qs(urlsplit(ws.request.path if ws.request else "").query)
        model = (query.get("model") or ["gpt-realtime"])[0]
        session = FakeSession(self, ws, len(self.sessions) + 1, model)
        claim, self._claim = self._claim, None
        if claim is not None:
            call_id, prev, came = claim
            self.owner[session.n] = call_id
            if prev is not None:
                session._continue_from(prev)
            came.set()
        self.sessions.append(session)
        await session.run()


# ------------------------------------------------------------------ reading the sides


def session_of(ident: str) -> int:
    """The fake session number in one of its ids (``resp_3_17``, ``call_3_9``), or 0."""
    parts = ident.rsplit("_", 2)
    return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else 0


def owners_in_log(logs: dict[str, list[ev.Event]]) -> dict[int, str]:
    """Which call each fake session served, from the ids the log recorded."""
    out: dict[int, str] = {}
    for call_id, events in logs.items():
        for e in events:
            ident = getattr(e, "response_id", "") or getattr(e, "tool_call_id", "")
            n = session_of(ident) if isinstance(ident, str) else 0
            if n:
                out.setdefault(n, call_id)
    return out


def told(event: dict[str, Any]) -> tuple[Any, ...] | None:
    """One client event the fake received as a comparable tuple (None: not told)."""
    kind = event.get("type")
    if kind not in TOLD:
        return None
    if kind == "session.update":
        s = event.get("session") or {}
        tools = tuple(_tool(t) for t in s.get("tools") or [])
        return ("session.update", s.get("instructions", ""), tools)
    if kind == "response.create":
        return ("response.create", (event.get("response") or {}).get("instructions", ""))
    if kind == "conversation.item.truncate":
        return ("truncate", event.get("item_id"), event.get("audio_end_ms"))
    if kind == "conversation.item.delete":
        return ("delete", event.get("item_id"))
    item = event.get("item") or {}
    if item.get("type") == "function_call_output":
        return ("function_call_output", item.get("call_id"), item.get("output"))
    content = item.get("content") or [{}]
    return ("message", item.get("role"), content[0].get("text", ""))


def _tool(t: Any) -> str:
    """A function tool as the model gets it, comparable (name, description, schema)."""
    return json.dumps(t, sort_keys=True)


def expected_told(events: Sequence[ev.Event], after: int) -> list[tuple[Any, ...]]:
    """What the log says a model session opened at ``events[after]`` (a
    ConnectionRestored side=model) was told, in order: its model decisions, each
    ``session.update`` followed by the history its ModelConfigured carries (the
    core decides it; the link sends exactly that)."""
    out: list[tuple[Any, ...]] = []
    for i, e in enumerate(events):
        if i < after:
            continue
        if isinstance(e, ev.ConnectionLost) and e.side == "model":
            break  # that session is over
        if isinstance(e, ev.ModelConfigured):
            tools = tuple(_tool(realtime.function_tool(t)) for t in e.tools)
            out.append(("session.update", e.instructions, tools))
            out.extend(("message", h.role, h.text) for h in e.history)
        elif isinstance(e, ev.ResponseRequested):
            out.append(("response.create", e.instructions))
        elif isinstance(e, ev.FunctionOutputSent):
            out.append(("function_call_output", e.tool_call_id, e.output))
        elif isinstance(e, ev.MessageInjected):
            out.append(("message", e.role, e.text))
        elif isinstance(e, ev.TruncateRequested):
            out.append(("truncate", e.item_id, max(0, int(e.audio_end_ms))))
        elif isinstance(e, ev.ItemDeleted):
            out.append(("delete", e.item_id))
    return out


def first_difference(got: Sequence[tuple[Any, ...]], want: Sequence[tuple[Any, ...]]) -> str | None:
    """The first place the model's session and the log disagree, or None."""
    for i, (g, w) in enumerate(zip(got, want, strict=False)):
        if g != w:
            return f"#{i}: model got {_short(g)}, log says {_short(w)}"
    if len(got) > len(want):
        return f"#{len(want)}: model got {_short(got[len(want)])}, log has nothing more"
    if len(want) > len(got):
        return f"#{len(got)}: log says {_short(want[len(got)])}, model got nothing more"
    return None


def _short(t: tuple[Any, ...]) -> str:
    return json.dumps(t)[:160]


def resumed_context(events: Sequence[ev.Event], session: FakeSession) -> tuple[str | None, int]:
    """(first difference or None, items compared) for a call's resumed model session."""
    starts = [
        i
        for i, e in enumerate(events)
        if isinstance(e, ev.ConnectionRestored) and e.side == "model"
    ]
    resumed = [i for i, e in enumerate(events) if isinstance(e, ev.SessionResumed)]
    starts = [i for i in starts if resumed and i > resumed[0]]  # the resume after the kill
    if not starts:
        return "the log has no ConnectionRestored side=model after the resume", 0
    got = [t for d, e in session.log if d == "in" and (t := told(e)) is not None]
    want = expected_told(events, starts[0])
    return first_difference(got, want), len(want)


def first_session_differs(
    logs: dict[str, list[ev.Event]], sessions: Sequence[FakeSession]
) -> tuple[int, str | None]:
    """Before the kill: (calls whose first model session was told something other
    than the log's model decisions, in another order, or more; the first such
    difference).  The log may hold decisions not sent yet when the kill came."""
    owners = owners_in_log(logs)
    first: dict[str, int] = {}
    for n, call_id in owners.items():
        first[call_id] = min(n, first.get(call_id, n))
    by_n = {s.n: s for s in sessions}
    differs, where = 0, None
    for call_id, n in first.items():
        session = by_n.get(n)
        if session is None:
            continue
        got = [t for d, e in session.log if d == "in" and (t := told(e)) is not None]
        want = expected_told(logs[call_id], 0)[: len(got)]
        diff = first_difference(got, want)
        if diff is not None:
            differs += 1
            where = where or f"{call_id[:8]} {diff}"
    return differs, where


def model_items(sessions: Sequence[FakeSession]) -> tuple[list[str], list[str], Counter[str]]:
    """Function-output call ids, message texts and other client event counts the fake got."""
    outputs: list[str] = []
    messages: list[str] = []
    other: Counter[str] = Counter()
    for s in sessions:
        for d, e in s.log:
            if d != "in":
                continue
            kind = e.get("type")
            if kind == "conversation.item.create":
                item = e.get("item") or {}
                if item.get("type") == "function_call_output":
                    outputs.append(item.get("call_id", ""))
                elif item.get("type") == "message":
                    messages.append(json.dumps(item.get("content"), sort_keys=True))
            elif kind in MODEL_DECISIONS:
                other[kind] += 1
    return outputs, messages, other


def caller_view(c: SimulatedCaller) -> dict[str, Any]:
    r = c.report
    return {
        "recognitions": len(r.recognitions),
        "speech": len(r.speech),
        "activities": Counter(str(a.get("name")) for a in r.activities),
        "chunks": sum(s.chunks for s in r.play_streams),
        "received_at": sorted(t for _, _, t in r.timings.play_received) if r.timings else [],
    }


def ahead_at_kill(
    logs: dict[str, list[ev.Event]],
    sessions: Sequence[FakeSession],
    views: dict[str, dict[str, Any]],
    killed_at: float = 0.0,
) -> dict[str, Any]:
    """What the model and the callers had received that the log lacked at the kill
    (``killed_at``: its ``perf_counter`` time, for how long before it the bot audio
    the log lacks reached the caller)."""
    outputs, messages, other = model_items(sessions)
    everything = [e for events in logs.values() for e in events]
    logged_outputs = {e.tool_call_id for e in everything if isinstance(e, ev.FunctionOutputSent)}
    logged_messages = sum(isinstance(e, ev.MessageInjected) for e in everything)
    logged = Counter(type(e) for e in everything)
    row: dict[str, Any] = {
        "model_got_outputs": len(outputs),
        "callers_got_recognitions": sum(v["recognitions"] for v in views.values()),
        "function_outputs_ahead": sum(1 for c in outputs if c not in logged_outputs),
        "messages_ahead": max(0, len(messages) - logged_messages),
        "other_model_events_ahead": sum(
            max(0, count - logged[MODEL_DECISIONS[k]]) for k, count in other.items()
        ),
        "recognitions_ahead": 0,
        "speech_events_ahead": 0,
        "activities_ahead": 0,
        "audio_chunks_ahead_max": 0,
        "audio_ahead_ms_before_kill_max": 0,
    }
    for call_id, v in views.items():
        events = logs[call_id]
        users = sum(isinstance(e, ev.Transcript) and e.role == "user" for e in events)
        speech = sum(
            isinstance(e, ev.SpeechStarted | ev.SpeechStopped | ev.SpeechCommitted) for e in events
        )
        row["recognitions_ahead"] += max(0, v["recognitions"] - users)
        row["speech_events_ahead"] += max(0, v["speech"] - speech)
        for name, count in v["activities"].items():
            cls = ACTIVITY_DECISIONS.get(name)
            if cls is not None:
                row["activities_ahead"] += max(0, count - sum(isinstance(e, cls) for e in events))
        logged_audio = sum(isinstance(e, ev.BotAudio) for e in events)
        ahead = v["chunks"] - logged_audio
        row["audio_chunks_ahead_max"] = max(row["audio_chunks_ahead_max"], ahead)
        got = v["received_at"]
        if ahead > 0 and len(got) >= ahead and killed_at:
            # The chunks the log lacks are the call's last ones: the earliest of them
            # reached the caller this long before the kill (the bound: one flush).
            before = int((killed_at - got[-ahead]) * 1000)
            row["audio_ahead_ms_before_kill_max"] = max(
                row["audio_ahead_ms_before_kill_max"], before
            )
    row["non_audio_ahead"] = sum(
        row[k]
        for k in (
            "function_outputs_ahead",
            "messages_ahead",
            "other_model_events_ahead",
            "recognitions_ahead",
            "speech_events_ahead",
            "activities_ahead",
        )
    )
    return row


def duplicate_writes(data_dir: Path, call_ids: Sequence[str]) -> tuple[int, int]:
    """(backend writes, (call, tool) pairs written under more than one idempotency key)."""
    path = data_dir / "bank.sqlite"
    if not path.exists():
        return 0, 0
    con = sqlite3.connect(path)
    try:
        keys = [k for (k,) in con.execute("SELECT key || '|' || tool FROM idempotency")]
    finally:
        con.close()
    per: Counter[tuple[str, str]] = Counter()
    for k in keys:
        key, _, tool = k.rpartition("|")
        call = key.rsplit(":", 1)[0]
        if call in call_ids:
            per[(call, tool)] += 1
    return sum(per.values()), sum(1 for n in per.values() if n > 1)


def read_logs(store: str, call_ids: Sequence[str]) -> dict[str, list[ev.Event]]:
    s = open_store(store)
    try:
        out = {}
        for c in call_ids:
            try:
                out[c] = s.read_call(c)
            except Exception:  # never started: nothing in the log
                out[c] = []
        return out
    finally:
        s.close()


# ------------------------------------------------------------------ one kill


async def kill_and_resume(
    sc: Scenario,
    *,
    store: str,
    work: Path,
    calls: int,
    flush_ms: int,
    kill_after: int,
    delay_s: float,
    variant: str = "",
    call_timeout: float = 180.0,
    kill_when: Callable[[dict[str, Any]], bool] = lambda e: e.get("type") in TOLD,
) -> dict[str, Any]:
    """Run ``calls`` calls, SIGKILL the service once the fake model has received
    ``kill_after`` client events that ``kill_when`` counts (by default the non-audio
    ones) and ``delay_s`` more, restart it, resume, play on; return the figures (see
    the module docstring).  ``work`` holds the backends' data (``work/backends``)."""
    async with ResumingFake(sc) as fake:
        proc, url = await asyncio.to_thread(start_service, store, fake.url, work, flush_ms, variant)
        restarted = asyncio.Event()
        new_url: list[str] = []
        callers: list[SimulatedCaller] = []
        prev_of: dict[str, FakeSession | None] = {}

        def on_drop_for(c: SimulatedCaller) -> Any:
            async def on_drop() -> str | None:
                await restarted.wait()
                if not new_url:
                    return None
                if c.report.resumes == 0:  # a later drop resumes on the same instance
                    await fake.claim(c.conversation_id, prev_of.get(c.conversation_id))
                return new_url[0]

            return on_drop

        for _ in range(calls):
            c = SimulatedCaller(
                url, TOKEN, formats=sc.caller.formats, turn_timeout=60.0, record_timing=True
            )
            c.on_drop = on_drop_for(c)
            callers.append(c)
        tasks = [asyncio.create_task(c.play(sc, timeout=call_timeout)) for c in callers]

        seen = told_count = 0
        while told_count < kill_after and not all(t.done() for t in tasks):
            got = fake.received
            told_count += sum(1 for e in got[seen:] if kill_when(e))
            seen = len(got)
            await asyncio.sleep(0.01)
        await asyncio.sleep(delay_s)
        live_at_kill = sum(1 for c in callers if c.report.media_format and not c.report.ended)
        killed_at = time.perf_counter()
        proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(proc.wait, 10)
        await asyncio.sleep(0.5)  # frames already on the wire reach the callers
        views = {c.conversation_id: caller_view(c) for c in callers}
        sessions_at_kill = list(fake.sessions)
        ids = [c.conversation_id for c in callers]
        logs = await asyncio.to_thread(read_logs, store, ids)
        row = ahead_at_kill(logs, sessions_at_kill, views, killed_at)
        row["calls_live_at_kill"] = live_at_kill
        row["told_differs_before_kill"], row["first_difference_before_kill"] = (
            first_session_differs(logs, sessions_at_kill)
        )
        owners = owners_in_log(logs)
        by_n = {s.n: s for s in sessions_at_kill}
        for n, call_id in sorted(owners.items()):  # the call's latest session
            prev_of[call_id] = by_n.get(n)

        start = (store, fake.url, work, flush_ms, variant)
        proc2, url2 = await asyncio.to_thread(start_service, *start)
        new_url.append(url2)
        restarted.set()
        try:
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            proc2.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(proc2.wait, 20)
            except subprocess.TimeoutExpired:
                proc2.kill()
        final = await asyncio.to_thread(read_logs, store, ids)
        new_session = {cid: s for s in fake.sessions if (cid := fake.owner.get(s.n)) is not None}
        by_n = {s.n: s for s in fake.sessions}
        before_kill = max((s.n for s in sessions_at_kill), default=0)  # (ids name old ones too)
    resumed = differs = compared = mismatched = 0
    first: str | None = None
    for c in callers:
        cid = c.conversation_id
        events = final[cid]
        if c.report.resumes == 0 or not any(isinstance(e, ev.SessionResumed) for e in events):
            continue
        # The session that served the call after the resume, as the log names it
        # (its response and call ids), else the one its resume claimed.
        at = next(i for i, e in enumerate(events) if isinstance(e, ev.SessionResumed))
        named = [n for n in owners_in_log({cid: events[at:]}) if n > before_kill]
        session = by_n.get(min(named)) if named else new_session.get(cid)
        claimed = new_session.get(cid)
        mismatched += claimed is not None and session is not None and claimed is not session
        if session is None:
            continue
        resumed += 1
        diff, n = resumed_context(events, session)
        compared += n
        if diff is not None:
            differs += 1
            first = first or f"{cid[:8]} {diff}"
    writes, dup = duplicate_writes(work / "backends", ids)
    row.update(
        calls_resumed=resumed,
        resumed_items_compared=compared,
        context_differs=differs,
        sessions_claimed_wrongly=mismatched,  # (the fake's script position, not the check)
        first_difference=first,
        backend_writes=writes,
        duplicate_side_effects=dup,
        callers_completed=sum(1 for c in callers if c.report.ended == "bot-disconnected"),
        resumes=sum(c.report.resumes for c in callers),
        callers_hung_up=sum(1 for c in callers if c.report.ended == "client-disconnected"),
        caller_errors=[e for c in callers for e in c.report.errors][:3],
    )
    return row


async def one_kill(args: argparse.Namespace, n: int, rng: random.Random) -> dict[str, Any]:
    sc = load_scenario(str(resources.files("fastagent.examples") / "scenarios" / "banking.json"))
    work = Path(tempfile.mkdtemp(prefix="kill9-"))
    store = args.store or str(work / "calls.db")
    schema = ""
    if store.startswith("postgresql"):
        if not os.environ.get("FASTAGENT_MASTER_KEY"):  # a PostgreSQL store seals with it
            from fastagent.privacy import new_key_text

            os.environ["FASTAGENT_MASTER_KEY"] = new_key_text()
        schema = f"kill9_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        store = f"{store}{'&' if '?' in store else '?'}schema={schema}"
    # About 20 non-audio client events reach the model per banking call.
    kill_after = rng.randint(args.calls, int(args.calls * 20 * args.reach))
    delay = rng.uniform(0, args.flush_ms / 1000)
    kill_after = args.kill_after or kill_after
    try:
        row = await kill_and_resume(
            sc,
            store=store,
            work=work,
            calls=args.calls,
            flush_ms=args.flush_ms,
            kill_after=kill_after,
            delay_s=delay,
            variant=args.variant,
        )
    finally:
        if schema and not args.keep:
            import psycopg
            from psycopg import sql

            with psycopg.connect(args.store, autocommit=True) as conn:
                conn.execute(
                    sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
                )
    return {
        "kill": n,
        "kill_after_events": kill_after,
        **row,
        **({"store": store} if args.keep else {}),
    }


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    rng = random.Random(args.seed)
    rows = []
    for n in range(1, args.kills + 1):
        row = await one_kill(args, n, rng)
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--kills", type=int, default=6)
    p.add_argument("--calls", type=int, default=10)
    p.add_argument("--store", default="", help="PostgreSQL URL (default: a SQLite file per kill)")
    p.add_argument("--seed", type=int, default=9)
    p.add_argument(
        "--reach",
        type=float,
        default=0.8,
        help="the kill falls before this share of the calls' non-audio events",
    )
    p.add_argument(
        "--flush-ms",
        type=int,
        default=500,
        help="FASTAGENT_FLUSH_MS of the service: a long group commit widens the window "
        "a kill can fall in (the default 50 ms makes a hit rare)",
    )
    p.add_argument(
        "--variant",
        default="",
        help="a deliberately broken service (bench/service_variant.py): nodurable, noseed",
    )
    p.add_argument("--kill-after", type=int, default=0, help="N (default: drawn per kill)")
    p.add_argument("--keep", action="store_true", help="keep each kill's PostgreSQL schema")
    args = p.parse_args()
    rows = asyncio.run(run(args))
    ahead = sum(r["non_audio_ahead"] for r in rows)
    differs = sum(r["context_differs"] + r["told_differs_before_kill"] for r in rows)
    dup = sum(r["duplicate_side_effects"] for r in rows)
    audio = max(r["audio_chunks_ahead_max"] for r in rows)
    window = max(r["audio_ahead_ms_before_kill_max"] for r in rows)
    resumed = sum(r["calls_resumed"] for r in rows)
    print(
        f"calls resumed: {resumed}; model context differing from the log: {differs}; "
        f"non-audio decisions ahead of the log: {ahead}; duplicate side effects: {dup}; "
        f"most audio chunks ahead: {audio}, the earliest reaching the caller {window} ms "
        f"before the kill (flush interval {args.flush_ms} ms)"
    )
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    sys.exit(0 if ahead == differs == dup == 0 else 1)


if __name__ == "__main__":
    main()
