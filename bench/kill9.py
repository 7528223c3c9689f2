"""kill -9 a busy ``fastagent serve`` and count what each side got ahead of the log.

Per kill: a fresh fake Realtime model, one service process on the store
(``--store``: a SQLite file per kill by default, or a PostgreSQL URL), ``--calls``
simulated callers playing the banking agent's scenario (tool calls, FSA steps,
recognitions, a hangup); at a random moment the service gets SIGKILL.  Then the
log is read back and compared with what the other sides received:

* model: function outputs (``function_call_output`` items) and messages
  (``conversation.item.create`` with a message) the fake received whose decision
  (``FunctionOutputSent`` / ``MessageInjected``) the log lacks; also other
  non-audio client events (``session.update``, ``response.create``, truncate,
  item delete) beyond their decisions' count;
* caller: recognitions, speech events and activities (hangup, transfer, config,
  DTMF) the caller received beyond what the log holds; bot audio chunks beyond
  the log's ``BotAudio`` (audio may run ahead by one flush interval).

The targets: 0 non-audio decisions ahead of the log, on both sides.

    PYTHONPATH=$PWD python bench/kill9.py                       # 6 kills x 10 calls, SQLite
    PYTHONPATH=$PWD python bench/kill9.py --store postgresql://postgres@127.0.0.1:5432/test
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from importlib import resources
from pathlib import Path
from typing import Any

from fastagent import events as ev
from fastagent.store import open_store
from fastagent.testing.caller import DEFAULT_PACE, SimulatedCaller
from fastagent.testing.fake_realtime import FakeRealtimeServer
from fastagent.testing.scenario import load_scenario

TOKEN = "kill9-token-0123456789"
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
}
if hasattr(ev, "ItemDeleted"):  # (so the script also measures older versions)
    MODEL_DECISIONS["conversation.item.delete"] = ev.ItemDeleted


def start_service(
    store: str, fake_url: str, work: Path, flush_ms: int
) -> tuple[subprocess.Popen[str], str]:
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


def model_items(fake: FakeRealtimeServer) -> tuple[list[str], list[str], Counter[str]]:
    """Function-output call ids, message texts and other client event counts the fake got."""
    outputs: list[str] = []
    messages: list[str] = []
    other: Counter[str] = Counter()
    for e in fake.received:
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


async def one_kill(args: argparse.Namespace, n: int, rng: random.Random) -> dict[str, Any]:
    sc = load_scenario(str(resources.files("fastagent.examples") / "scenarios" / "banking.json"))
    work = Path(tempfile.mkdtemp(prefix="kill9-"))
    store = args.store or str(work / "calls.db")
    if store.startswith("postgresql"):
        schema = f"kill9_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        store = f"{store}{'&' if '?' in store else '?'}schema={schema}"
    async with FakeRealtimeServer(sc, continue_script=True) as fake:
        proc, url = await asyncio.to_thread(start_service, store, fake.url, work, args.flush_ms)
        callers = [
            SimulatedCaller(url, TOKEN, formats=sc.caller.formats) for _ in range(args.calls)
        ]
        tasks = [asyncio.create_task(c.play(sc, timeout=60)) for c in callers]
        await asyncio.sleep(rng.uniform(args.min_s, args.max_s))
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        await asyncio.gather(*tasks, return_exceptions=True)
        outputs, messages, other = model_items(fake)
    log_store = open_store(store)
    try:
        logs = {c.conversation_id: log_store.read_call(c.conversation_id) for c in callers}
    finally:
        log_store.close()
    everything = [e for events in logs.values() for e in events]
    logged_outputs = {e.tool_call_id for e in everything if isinstance(e, ev.FunctionOutputSent)}
    logged_messages = sum(isinstance(e, ev.MessageInjected) for e in everything)
    logged = Counter(type(e) for e in everything)
    row: dict[str, Any] = {
        "kill": n,
        "model_got_outputs": len(outputs),
        "callers_got_recognitions": sum(len(c.report.recognitions) for c in callers),
        "callers_got_chunks": sum(s.chunks for c in callers for s in c.report.play_streams),
        "function_outputs_ahead": sum(1 for c in outputs if c not in logged_outputs),
        "messages_ahead": max(0, len(messages) - logged_messages),
        "other_model_events_ahead": sum(
            max(0, count - logged[MODEL_DECISIONS[k]]) for k, count in other.items()
        ),
        "recognitions_ahead": 0,
        "speech_events_ahead": 0,
        "activities_ahead": 0,
        "audio_chunks_ahead_max": 0,
    }
    for c in callers:
        events = logs[c.conversation_id]
        r = c.report
        users = sum(isinstance(e, ev.Transcript) and e.role == "user" for e in events)
        speech = sum(
            isinstance(e, ev.SpeechStarted | ev.SpeechStopped | ev.SpeechCommitted) for e in events
        )
        row["recognitions_ahead"] += max(0, len(r.recognitions) - users)
        row["speech_events_ahead"] += max(0, len(r.speech) - speech)
        acts = Counter(a.get("name") for a in r.activities)
        for name, count in acts.items():
            cls = ACTIVITY_DECISIONS.get(str(name))
            if cls is not None:
                row["activities_ahead"] += max(0, count - sum(isinstance(e, cls) for e in events))
        heard = sum(s.chunks for s in r.play_streams)
        logged_audio = sum(isinstance(e, ev.BotAudio) for e in events)
        row["audio_chunks_ahead_max"] = max(row["audio_chunks_ahead_max"], heard - logged_audio)
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
    if args.store and args.store.startswith("postgresql"):
        import psycopg
        from psycopg import sql

        with psycopg.connect(args.store, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    return row


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
    p.add_argument("--min-s", type=float, default=5.0, help="earliest kill, seconds into the calls")
    p.add_argument("--max-s", type=float, default=25.0)
    p.add_argument("--seed", type=int, default=9)
    p.add_argument(
        "--flush-ms",
        type=int,
        default=500,
        help="FASTAGENT_FLUSH_MS of the service: a long group commit widens the window "
        "a kill can fall in (the default 50 ms makes a hit rare)",
    )
    args = p.parse_args()
    rows = asyncio.run(run(args))
    total = sum(r["non_audio_ahead"] for r in rows)
    audio = max(r["audio_chunks_ahead_max"] for r in rows)
    print(f"non-audio decisions ahead of the log: {total}; most audio chunks ahead: {audio}")
    with contextlib.suppress(Exception):
        sys.stdout.flush()
    sys.exit(0 if total == 0 else 1)


if __name__ == "__main__":
    main()
