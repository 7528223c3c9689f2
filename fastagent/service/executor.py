"""The decision executor: how the shell acts on each decision the core recorded.

:func:`execute` looks each decision's handler up in :data:`HANDLERS`, a table
``{decision type: handler}`` built once at import (h11 and wsproto dispatch their
events the same way); each handler is typed for its decision.  A decision with
no handler changes nothing outside the log (an FSA transition, a skipped call, an
engine fault): it is only made durable.

Who is told what:

* the caller (VAIC): the frame :meth:`fastagent.vaic.VaicProtocol.frame_of` /
  :func:`fastagent.vaic.decision_frame` gives (``session.accepted``,
  ``playStream.*``, ``session.error``, activities), through the call's caller side;
  hangup and transfer once the caller has heard the goodbye;
* the model: :data:`fastagent.service.model_link.MODEL_DECISIONS` and
  ``ModelConfigured`` through the call's model link, timed by the call;
* tools: ``FunctionCallDispatched`` for a tool server runs it (:func:`run_tool`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from fastagent import audio, vaic
from fastagent import events as ev
from fastagent.core import ENGINE_SERVER
from fastagent.live import choose_live_format
from fastagent.service.model_link import MODEL_DECISIONS
from fastagent.service.recording import now_us

if TYPE_CHECKING:
    from fastagent.service.call import CallSession

log = logging.getLogger("fastagent.service")

D = TypeVar("D", bound=ev.Decision)
Handler = Callable[["CallSession", D], Awaitable[None]]

# Decisions acted on without waiting for the log: the audio stream's framing,
# tools (run_tool makes the log durable itself before the side effect), the end.
AHEAD_OF_LOG: frozenset[type[ev.Decision]] = frozenset(
    {ev.PlaybackStarted, ev.PlaybackStopped, ev.FunctionCallDispatched, ev.CallEnded}
)

HANDLERS: dict[type[ev.Decision], Handler[Any]] = {}


def _on(*types: type[D]) -> Callable[[Handler[D]], Handler[D]]:
    """Register a handler for decisions of ``types`` (at import, once)."""

    def register(handler: Handler[D]) -> Handler[D]:
        for t in types:
            assert t not in HANDLERS, t
            HANDLERS[t] = handler
        return handler

    return register


async def execute(call: CallSession, decisions: list[ev.Decision]) -> None:
    """Act on recorded decisions, in order.

    The durability boundary: any decision that changes what the caller or the
    model knows is sent only once the log holds it (one flush, a commit, before
    the first such decision of the batch).  Only the audio stream itself (play
    stream start/stop around the chunks) may run ahead of the log, by at most
    one group commit.  If the log cannot be made durable the frame is not sent
    (nor anything after it in the batch).  Raises what a handler raises (the
    call's ``_Lost`` when another instance took the stream).
    """
    durable = False
    handlers = HANDLERS
    for d in decisions:
        t = type(d)
        if not durable and t not in AHEAD_OF_LOG:
            durable = True
            if not await call.durable():
                log.error("call %s: log not durable; %s not sent", call.call_id, t.__name__)
                return
        handler = handlers.get(t)
        if handler is not None:
            await handler(call, d)


# ------------------------------------------------------------------ caller side


@_on(ev.SessionAccepted)
async def _session_accepted(call: CallSession, d: ev.SessionAccepted) -> None:
    """Adopt the call's policy and model link, set up resampling where the caller's
    format and the model's differ, and send ``session.accepted``."""
    call.policy = d.policy
    call.use_link()
    choose = choose_live_format if call.engine.live else vaic.choose_format
    negotiated = choose([d.media_format])
    assert negotiated is not None
    if not negotiated.passthrough and call.to_model is None:
        # soxr only where the formats differ (lpcm16_8; lpcm16 for Realtime).
        rate = negotiated.resample_to_hz
        call.to_model = audio.Resampler(negotiated.resample_from_hz, rate)
        call.to_caller = audio.Resampler(rate, negotiated.resample_from_hz)
    await call.to_vaic(call.vaic_proto().accept(d.media_format))


@_on(ev.PlaybackStarted)
async def _playback_started(call: CallSession, d: ev.PlaybackStarted) -> None:
    await call.to_vaic(call.vaic_proto().play_start(d.stream_id, d.fmt))


@_on(ev.PlaybackStopped)
async def _playback_stopped(call: CallSession, d: ev.PlaybackStopped) -> None:
    frame = call.vaic_proto().play_stop()
    if frame is not None:
        await call.to_vaic(frame)
    watch_drain(call)


@_on(
    ev.SessionRejected,
    ev.SessionParamsSent,
    ev.DtmfSent,
    ev.CallRecordingPaused,
    ev.CallRecordingResumed,
)
async def _to_caller(call: CallSession, d: ev.Decision) -> None:
    frame = vaic.decision_frame(d)
    assert frame is not None  # (each registered type has a frame)
    await call.to_vaic(frame)


@_on(ev.HangupRequested, ev.TransferRequested)
async def _call_control(call: CallSession, d: ev.Decision) -> None:
    frame = vaic.decision_frame(d)
    assert frame is not None
    call.spawn(after_playback(call, frame))


def watch_drain(call: CallSession) -> None:
    """Tell the core when the caller has heard a response whose calls it holds
    (a PlaybackDrained input at the stream's audible end)."""
    engine = call.engine
    pb = engine.play
    if pb is None or engine.held_response != pb.response_id:
        return

    async def drained() -> None:
        wait = (pb.audible_until() - now_us()) / 1e6
        if wait > 0:
            await asyncio.sleep(wait)
        if not call.closing and engine.held_response == pb.response_id:
            await call.input(ev.PlaybackDrained, stream_id=pb.stream_id, response_id=pb.response_id)

    call.spawn(drained())


async def after_playback(call: CallSession, frame: bytes) -> None:
    """Send a call-control activity once the caller has heard the goodbye (at most
    30 s on)."""
    # Durable before the side effect; a hangup still goes out if the store is
    # down: leaving the caller on a dead line would be worse.
    await call.durable()
    engine = call.engine
    pb = engine.play
    until = pb.audible_until() if pb is not None else 0
    if engine.live:
        # GPT-Live's goodbye stream is already stopped: the playout clock knows
        # when the caller's queue runs dry.
        until = max(until, engine.clock.end_at)
    wait = (until - now_us()) / 1e6
    if wait > 0:
        await asyncio.sleep(min(wait, 30.0))
    await call.to_vaic(frame)


# ------------------------------------------------------------------- model side


@_on(*MODEL_DECISIONS)
async def _to_model(call: CallSession, d: ev.Decision) -> None:
    awaited = await call.model_link.send(d)
    if awaited is not None:
        call.await_model(*awaited)


@_on(ev.ModelConfigured)
async def _model_configured(call: CallSession, d: ev.ModelConfigured) -> None:
    await call.configure_model(d)


@_on(ev.ModelFailureHandled)
async def _model_failure_handled(call: CallSession, d: ev.ModelFailureHandled) -> None:
    call.on_failure_handled(d)


# ------------------------------------------------------------------------ tools


@_on(ev.FunctionCallDispatched)
async def _function_call_dispatched(call: CallSession, d: ev.FunctionCallDispatched) -> None:
    if d.server != ENGINE_SERVER:  # the engine's own tools ran inside the core
        call.spawn(run_tool(call, d))


async def run_tool(call: CallSession, d: ev.FunctionCallDispatched) -> None:
    """Run a dispatched tool call on its MCP server, once the log holds the
    dispatch, with its idempotency key and the call's tool timeout; record the
    outcome as a ToolResult (a failure is a result too, never an exception)."""
    if not await call.durable():  # durable before the side effect starts, or not at all
        await call.input(
            ev.ToolResult,
            tool_call_id=d.tool_call_id,
            name=d.name,
            ok=False,
            error="not run: the call log could not be made durable",
        )
        return
    started = time.perf_counter()
    try:
        hub = await call.service.hub(call.state.agent)
        out = await hub.call(
            d.server,
            d.name,
            d.arguments,
            idempotency_key=d.idempotency_key,
            timeout_s=call.policy.tool_timeout_s,
        )
        ok, output, error = out.ok, out.output, out.error
        duration = out.duration_us
    except Exception as exc:  # a broken hub must not end the call
        ok, output, error = False, "", f"tool hub failed: {exc}"
        duration = int((time.perf_counter() - started) * 1e6)
    if call.closing or call.lost:
        return
    await call.input(
        ev.ToolResult,
        tool_call_id=d.tool_call_id,
        name=d.name,
        ok=ok,
        output=output,
        error=error,
        duration_us=duration,
    )


# ---------------------------------------------------------------------- the end


@_on(ev.CallEnded)
async def _call_ended(call: CallSession, d: ev.CallEnded) -> None:
    call.spawn(call.close("call ended"))


__all__ = ["AHEAD_OF_LOG", "HANDLERS", "after_playback", "execute", "run_tool", "watch_drain"]
