"""Caps on what one socket may send (issue 11, point 5), over loopback sockets.

A model that floods messages, or sends bad frames without end, is cut off: its
socket is failed, a ModelError (``error_type`` "protocol") is recorded and the
agent's fallback follows (outcome failed); the log and the store hold a bounded
number of lines and ProtocolError events.  A caller that sends bad frames without
end is dropped the same way (ConnectionLost, grace).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from pathlib import Path
from typing import Any

import pytest
import websockets
from test_service import GOODBYE, TOKEN, _raw, _voice, assert_replays, scenario

from fastagent import events as ev
from fastagent.service import ServiceConfig
from fastagent.service_cli import running_service
from fastagent.testing.fake_realtime import FakeRealtimeServer

pytestmark = pytest.mark.anyio

GREETING = [{"say": "Hello there, thanks for calling, how can I help you today?"}]
START = {"type": "activities", "activities": [{"type": "event", "name": "start"}]}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _fallback_frames(ws: Any, timeout: float = 15) -> list[dict[str, Any]]:
    """Frames until the caller is transferred or hung up (the fallback)."""
    got: list[dict[str, Any]] = []
    with contextlib.suppress(websockets.ConnectionClosed, TimeoutError):
        while True:
            msg = json.loads(await asyncio.wait_for(ws.recv(), timeout))
            got.append(msg)
            if msg["type"] == "activities" and msg["activities"][0]["name"] in (
                "transfer",
                "hangup",
            ):
                return got
    return got


def _failed_for_protocol(events: list[ev.Event]) -> ev.ModelError:
    errors = [e for e in events if isinstance(e, ev.ModelError) and e.error_type == "protocol"]
    assert len(errors) == 1, errors
    handled = [e for e in events if isinstance(e, ev.ModelFailureHandled)]
    assert handled and (handled[-1].kind, handled[-1].action) == ("protocol", "fallback")
    assert any(isinstance(e, ev.TransferRequested) for e in events)
    ended = events[-1]
    assert isinstance(ended, ev.CallEnded) and ended.outcome == "failed", ended
    # Cut off on purpose: not redialled.
    assert not [e for e in events if isinstance(e, ev.ConnectionLost) and e.side == "model"]
    return errors[0]


async def test_a_model_flooding_messages_is_failed_and_the_call_takes_the_fallback(
    tmp_path: Path,
) -> None:
    def tamper(event: dict[str, Any]) -> list[str] | None:
        if event["type"] != "response.output_audio.delta":
            return None
        return [json.dumps(event)] + [json.dumps({"type": "rate_limits.updated"})] * 50

    sc = scenario([GOODBYE], greeting=GREETING)
    async for v in _voice(tmp_path, sc, service_kw={"model_max_msgs_per_s": 100.0}, tamper=tamper):
        ws = await _raw(v, "flood")
        await ws.send(json.dumps({**START, "conversationId": "flood"}))
        frames = await _fallback_frames(ws)
        assert frames[-1]["type"] == "activities", frames[-3:]
        assert frames[-1]["activities"][0]["name"] == "transfer"
        await ws.close()
        events = await v.log("flood")
        err = _failed_for_protocol(events)
        assert err.message == "more than 100 messages/s"
        assert len(v.fake.sessions) == 1
        assert_replays(events)


async def test_a_model_sending_bad_frames_without_end_is_failed_with_bounded_records(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def tamper(event: dict[str, Any]) -> list[str] | None:
        if event["type"] != "response.output_audio.delta":
            return None
        return [json.dumps(event)] + ["{not json"] * 10

    sc = scenario([GOODBYE], greeting=GREETING)
    caplog.set_level(logging.WARNING, logger="fastagent.service")
    async for v in _voice(tmp_path, sc, service_kw={"max_violations_per_min": 20}, tamper=tamper):
        ws = await _raw(v, "junk")
        await ws.send(json.dumps({**START, "conversationId": "junk"}))
        frames = await _fallback_frames(ws)
        assert frames[-1]["activities"][0]["name"] == "transfer"
        await ws.close()
        events = await v.log("junk")
        err = _failed_for_protocol(events)
        assert err.message == "more than 20 protocol violations a minute"
        recorded = [e for e in events if isinstance(e, ev.ProtocolError)]
        assert len(recorded) == 20, len(recorded)
        lines = [r for r in caplog.records if "model frame rejected" in r.getMessage()]
        assert len(lines) == 20, len(lines)
        assert_replays(events)


async def test_a_caller_sending_bad_frames_without_end_is_dropped(tmp_path: Path) -> None:
    async with FakeRealtimeServer(scenario([GOODBYE])) as fake:
        config = ServiceConfig(
            store=str(tmp_path / "calls.db"),
            token=TOKEN,
            realtime_url=fake.url,
            api_key="test",
            grace_s=0.5,
            max_violations_per_min=10,
        )
        async with running_service(config) as (app, url):
            ws = await websockets.connect(
                url, additional_headers={"Authorization": f"Bearer {TOKEN}"}
            )
            await ws.send(json.dumps({"type": "session.initiate", "conversationId": "bad"}))
            assert json.loads(await ws.recv())["type"] == "session.accepted"
            with contextlib.suppress(websockets.ConnectionClosed):
                for _ in range(50):
                    await ws.send("{not json")
            with contextlib.suppress(websockets.ConnectionClosed, TimeoutError):
                while True:
                    await asyncio.wait_for(ws.recv(), 5)
            assert ws.close_code == 1008
            service = app.state.service
            for _ in range(300):
                if "bad" not in service.calls:
                    break
                await asyncio.sleep(0.01)
            service.store.flush()
            events = service.store.read_call("bad")
    assert sum(isinstance(e, ev.ProtocolError) for e in events) == 10
    lost = [e for e in events if isinstance(e, ev.ConnectionLost)]
    assert lost and lost[0].reason == "more than 10 protocol violations a minute"
    assert isinstance(events[-1], ev.CallEnded)
    assert_replays(events)
