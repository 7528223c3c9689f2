"""Operations: /healthz, /readyz, /metrics, structured logs, traces, and the drain.

Real sockets on loopback: the service on an ephemeral port (in-process, or
``fastagent serve`` in a subprocess for the signal), the fake Realtime server and
the simulated VAIC caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import websockets

from fastagent import events as ev
from fastagent import observe
from fastagent.replay import read_recording
from fastagent.service import ServiceConfig
from fastagent.service_cli import running_service, scenario_path
from fastagent.store import open_store
from fastagent.testing.caller import DEFAULT_PACE, SimulatedCaller
from fastagent.testing.fake_realtime import FakeRealtimeServer
from fastagent.testing.scenario import expected_play_streams, load_scenario, scenario_from_dict

REPLAYS = Path(__file__).parent.parent / "replays"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def http_get(base: str, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(base + path, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def get(base: str, path: str) -> tuple[int, str]:
    return await asyncio.to_thread(http_get, base, path)


def config_for(fake: Any, store: str, agent: str = "default") -> ServiceConfig:
    config = ServiceConfig.from_env(
        store=store, agent=agent, no_auth=True, realtime_url=fake.url, api_key="test"
    )
    config.token = None
    config.playback_speed = 1 / DEFAULT_PACE
    return config


def http_base(ws_url: str) -> str:
    return ws_url.replace("ws://", "http://").removesuffix("/audiocodes")


# ----------------------------------------------------------------- metrics


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus exposition text (0 if absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        metric_name, _, rest = key.partition("{")
        got = ",".join(sorted(rest.rstrip("}").split(","))) if rest else ""
        if metric_name == name and got == want:
            return float(value)
    return 0.0


@pytest.mark.anyio
async def test_metrics_health_and_logs_of_a_real_call(
    tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sc = load_scenario(scenario_path("banking"))
    observe.configure_logging("json", "INFO")
    try:
        async with FakeRealtimeServer(sc) as fake:
            config = config_for(fake, str(tmp_path / "calls.db"), "banking")
            async with running_service(config) as (app, url):
                base = http_base(url)
                assert await get(base, "/healthz") == (200, '{"ok":true,"calls":0}')
                status, body = await get(base, "/readyz")
                assert status == 200 and json.loads(body) == {"ready": True, "calls": 0}
                caller = SimulatedCaller(url, formats=sc.caller.formats)
                # A frame that is not VAIC: a protocol violation on the caller side.
                task = asyncio.create_task(caller.play(sc, timeout=60))
                while caller.ws is None or not caller.report.play_streams:
                    await asyncio.sleep(0.01)
                status, text = await get(base, "/metrics")
                assert metric(text, "fastagent_active_calls") == 1
                await caller.ws.send('{"type": "no.such.message"}')
                report = await task
                for _ in range(300):
                    if not app.state.service.calls:
                        break
                    await asyncio.sleep(0.01)
                status, text = await get(base, "/metrics")
    finally:
        logging.getLogger().handlers.clear()
    assert status == 200 and not report.errors
    assert metric(text, "fastagent_active_calls") == 0
    assert metric(text, "fastagent_calls_total", agent="banking", outcome="completed") == 1
    for direction in ("to_model", "to_caller"):
        assert metric(text, "fastagent_relay_seconds_count", direction=direction) > 10
    assert metric(text, "fastagent_model_first_audio_seconds_count") >= 5
    assert metric(text, "fastagent_turn_latency_seconds_count") >= 3
    # Tool latency and errors agree with the log.
    log_events = open_store(str(tmp_path / "calls.db")).read_call(caller.conversation_id)
    results = [e for e in log_events if isinstance(e, ev.ToolResult)]
    assert results
    for name in {r.name for r in results}:
        mine = [r for r in results if r.name == name]
        assert metric(text, "fastagent_tool_seconds_count", tool=name) == len(mine)
        failed = sum(not r.ok for r in mine)
        assert metric(text, "fastagent_tool_errors_total", tool=name) == failed
    assert metric(text, "fastagent_store_flush_seconds_count") > 0
    assert metric(text, "fastagent_store_events_written_total") > 100
    assert "fastagent_store_queue_depth" in text
    assert metric(text, "fastagent_protocol_violations_total", side="caller") == 1
    assert "fastagent_model_errors_total" in text
    assert metric(text, "fastagent_draining") == 0
    # JSON lines, each with a timestamp; the call's start and end carry its id.
    lines = [json.loads(x) for x in capsys.readouterr().err.splitlines() if x.startswith("{")]
    assert lines and all(x["ts"].endswith("Z") and x["level"] for x in lines)
    events = {x.get("event"): x for x in lines if x.get("event")}
    assert events["call_started"]["call_id"] == caller.conversation_id
    assert events["call_started"]["agent"] == "banking"
    assert events["call_ended"]["call_id"] == caller.conversation_id
    assert events["call_ended"]["outcome"] == "completed"
    assert not any("+1555" in json.dumps(x) for x in lines), "the caller's number is not logged"


def test_model_error_kinds_are_bounded() -> None:
    m = observe.Metrics(lambda: 0, lambda: False)
    for i in range(100):  # a hostile model inventing error types
        m.observe(ev.ModelError(call_id="c", seq=i + 1, at=0, error_type=f"kind_{i}"))
    m.observe(ev.ModelError(call_id="c", seq=200, at=0, error_type="bad\nlabel"))
    m.observe(ev.ModelTimeout(call_id="c", seq=201, at=0, waiting_for="x", seconds=1))
    text = m.render()[0].decode()
    kinds = {
        line.split('kind="')[1].split('"')[0]
        for line in text.splitlines()
        if line.startswith("fastagent_model_errors_total{")
    }
    assert len(kinds) <= 34 and "other" in kinds and "timeout" in kinds


def test_text_log_lines_have_time_level_and_call(capsys: pytest.CaptureFixture[str]) -> None:
    observe.configure_logging("text", "INFO")
    try:
        token = observe.current_call.set("abc-123")
        logging.getLogger("fastagent.test").info("hello")
        observe.current_call.set("evil\nINFO forged line")
        logging.getLogger("fastagent.test").info("again")
        observe.current_call.reset(token)
    finally:
        logging.getLogger().handlers.clear()
    err = capsys.readouterr().err.splitlines()
    stamp, level, name, call, msg = err[0].split(" ", 4)
    assert stamp.endswith("Z") and "T" in stamp
    assert (level, name, call, msg) == ("INFO", "fastagent.test", "call=abc-123", "hello")
    assert len(err) == 2 and "call='evil\\nINFO forged line'" in err[1]
    with pytest.raises(ValueError, match="bad FASTAGENT_LOG_FORMAT 'xml'"):
        observe.configure_logging("xml")


# ------------------------------------------------------------------ traces


def test_traces_follow_the_genai_conventions() -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = observe.Tracer(provider.get_tracer("test"))
    events = read_recording(REPLAYS / "banking.jsonl")
    for e in events:
        tracer.observe(e)
    spans = exporter.get_finished_spans()
    by_op: dict[str, list[Any]] = {}
    for s in spans:
        by_op.setdefault(s.attributes["gen_ai.operation.name"], []).append(s)
    (call,) = by_op["invoke_agent"]
    assert call.name == "invoke_agent banking"
    assert call.attributes["gen_ai.conversation.id"] == events[0].call_id
    assert call.attributes["gen_ai.provider.name"] == "openai"
    assert call.attributes["fastagent.call.outcome"] == "completed"
    assert call.start_time == events[0].at * 1000 and call.end_time == events[-1].at * 1000
    responses = [e for e in events if isinstance(e, ev.ResponseStarted)]
    assert len(by_op["chat"]) == len(responses)
    tools = [
        e for e in events if isinstance(e, ev.FunctionCallDispatched) and e.server != "fastagent"
    ]
    assert {s.attributes["gen_ai.tool.name"] for s in by_op["execute_tool"]} == {
        t.name for t in tools
    }
    for s in by_op["chat"] + by_op["execute_tool"]:
        assert s.parent is not None and s.parent.span_id == call.context.span_id
        assert s.context.trace_id == call.context.trace_id
    chat = by_op["chat"][0]
    assert chat.attributes["gen_ai.usage.output_tokens"] > 0
    assert any("fastagent.turn.first_audio_ms" in s.attributes for s in by_op["chat"])
    # No arguments, results or transcripts in any span.
    dumped = json.dumps([dict(s.attributes) for s in spans])
    assert "customer_id" not in dumped and "Ada" not in dumped


def test_traces_setting() -> None:
    old = os.environ.get("FASTAGENT_TRACES")
    try:
        os.environ["FASTAGENT_TRACES"] = "zipkin"
        with pytest.raises(ValueError, match="bad FASTAGENT_TRACES 'zipkin'"):
            observe.tracer_from_env()
        os.environ["FASTAGENT_TRACES"] = "off"
        assert observe.tracer_from_env() is None
    finally:
        if old is None:
            os.environ.pop("FASTAGENT_TRACES", None)
        else:
            os.environ["FASTAGENT_TRACES"] = old


# ------------------------------------------------------------------- drain

QUIET = scenario_from_dict(
    {
        "name": "drain",
        "agent": "default",
        "greeting": [{"say": "Hello, how can I help?"}],
        "turns": [{"silence_ms": 20000}],
    }
)
TOKEN = "ops-test-token"


@pytest.mark.anyio
async def test_drain_refuses_new_calls_and_hands_the_rest_over(tmp_path: Path) -> None:
    path = str(tmp_path / "calls.db")
    async with FakeRealtimeServer(QUIET, continue_script=True) as fake:
        async with running_service(config_for(fake, path)) as (app_a, url_a):
            service = app_a.state.service
            base = http_base(url_a)
            caller = SimulatedCaller(url_a, turn_timeout=30)
            play = asyncio.create_task(caller.play(QUIET, timeout=40))
            while sum(1 for s in caller.report.play_streams if s.stopped) < (
                expected_play_streams(QUIET.greeting)
            ):
                await asyncio.sleep(0.01)
            call_id = caller.conversation_id
            old_ws = caller.ws
            drain = asyncio.create_task(service.drain(0.5))
            await asyncio.sleep(0.1)
            status, body = await get(base, "/readyz")
            assert status == 503 and json.loads(body)["reason"] == "draining"
            with pytest.raises(websockets.InvalidStatus) as refused:
                await websockets.connect(url_a)
            assert refused.value.response.status_code == 503
            assert "fastagent_draining 1.0" in (await get(base, "/metrics"))[1]
            assert await drain == 1
            assert not service.calls
            assert old_ws is not None
            await asyncio.wait_for(old_ws.wait_closed(), 5)
            assert old_ws.close_code == 1001
            play.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await play
        events = open_store(path).read_call(call_id)
        last = [e for e in events if not isinstance(e, ev.CallerAudio | ev.BotAudio)][-3:]
        assert not any(isinstance(e, ev.CallEnded) for e in events)
        lost = [e for e in events if isinstance(e, ev.ConnectionLost) and e.side == "caller"]
        assert lost and lost[-1].reason == "instance draining", last
        # Another instance on the same store takes the call at once.
        async with running_service(config_for(fake, path)) as (app_b, url_b):
            ws = await websockets.connect(url_b)
            await ws.send(json.dumps({"type": "session.resume", "conversationId": call_id}))
            got = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert got["type"] == "session.accepted", got
            await ws.close()
            b_instance = app_b.state.service.config.instance
    events = open_store(path).read_call(call_id)
    resumed = [e for e in events if isinstance(e, ev.SessionResumed)]
    assert [r.instance for r in resumed] == [b_instance]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.anyio
async def test_sigterm_drains_then_exits(tmp_path: Path) -> None:
    """``fastagent serve`` in a process of its own: SIGTERM with a call on the line."""
    port = free_port()
    async with FakeRealtimeServer(QUIET, continue_script=True) as fake:
        env = {
            **os.environ,
            "FASTAGENT_REALTIME_URL": fake.url,
            "FASTAGENT_PLAYBACK_SPEED": str(1 / DEFAULT_PACE),
            "OPENAI_API_KEY": "test",
            "FASTAGENT_VAIC_TOKEN": TOKEN,
            "FASTAGENT_DRAIN_S": "0.5",
            "FASTAGENT_LOG_FORMAT": "json",
            "PYTHONUNBUFFERED": "1",
        }
        cmd = [sys.executable, "-c", "from fastagent.cli import main; main()", "serve"]
        proc = subprocess.Popen(
            [*cmd, "--port", str(port), "--store", str(tmp_path / "calls.db")],
            env=env,
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            for _ in range(300):
                with contextlib.suppress(OSError):
                    if (await get(base, "/readyz"))[0] == 200:
                        break
                await asyncio.sleep(0.1)
            caller = SimulatedCaller(f"ws://127.0.0.1:{port}/audiocodes", TOKEN, turn_timeout=30)
            play = asyncio.create_task(caller.play(QUIET, timeout=40))
            while not caller.report.play_streams:
                await asyncio.sleep(0.01)
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(proc.wait, 20)
            took = time.monotonic() - started
            play.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await play
        finally:
            if proc.poll() is None:
                proc.kill()
        err = proc.stderr.read() if proc.stderr else ""  # type: ignore[union-attr]
    assert code == 0, err
    assert took < 15, err
    lines = [json.loads(x) for x in err.splitlines() if x.startswith("{")]
    msgs = [x["msg"] for x in lines]
    assert any(m.startswith("draining: new calls refused; 1 call(s)") for m in msgs), msgs
    assert any(m.startswith("drained: 1 call(s) left") for m in msgs), msgs
    assert any(x.get("event") == "call_started" for x in lines)
    events = open_store(str(tmp_path / "calls.db")).read_call(caller.conversation_id)
    assert any(isinstance(e, ev.ConnectionLost) and e.reason == "instance draining" for e in events)
