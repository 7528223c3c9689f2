"""The decision executor: how the shell acts on each decision the core recorded.

:func:`execute` looks each decision's handler up in :data:`HANDLERS`, a table
``{decision type: handler}`` built once at import (h11 and wsproto dispatch their
events the same way); each handler is typed for its decision.  A decision with
no handler changes nothing outside the log (an FSA transition, a skipped call, an
engine fault): it is only made durable.

Who is told what:

* the caller (VAIC): the frame :meth:`fastagent.vaic.VaicProtocol.frame_of` /
  :func:`fastagent.vaic.decision_frame` gives (``session.accepted``,
  ``playStream.*``, ``session.error``, activities, the ``userStream.*``
  notifications of ``CallerNotified``), through the call's caller side;
  hangup and transfer once the caller has heard the goodbye;
* the model: :data:`fastagent.service.model_link.MODEL_DECISIONS` and
  ``ModelConfigured`` through the call's model link, timed by the call;
* tools: ``FunctionCallDispatched`` for a tool server runs it (:func:`run_tool`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from fastagent import audio, vaic
from fastagent import events as ev
from fastagent.core import ENGINE_SERVER
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

# What the model is told: sent in log order across batches (see model_turn).
TO_MODEL: frozenset[type[ev.Decision]] = frozenset({*MODEL_DECISIONS, ev.ModelConfigured})
# What the caller is told once the log holds it: in log order across batches too
# (caller_turn).  Hangup and transfer wait for the goodbye instead (after_playback);
# the play stream's framing runs ahead of the log.
TO_CALLER: frozenset[type[ev.Decision]] = frozenset(
    {
        ev.SessionAccepted,
        ev.SessionRejected,
        ev.SessionParamsSent,
        ev.DtmfSent,
        ev.CallRecordingPaused,
        ev.CallRecordingResumed,
        ev.CallerNotified,
    }
)
# Past this, a frame stops waiting for an earlier one of its side (never seen).
# A guard against a bug, not a policy, so not a setting: an earlier frame's sender
# ends its turn (sent or given up) once the log is durable, well within this.
MODEL_TURN_S = 10.0
# The longest a hangup/transfer waits for the caller to hear the goodbye before
# it: the engine's own playout estimate, capped so a wrong one cannot hold a
# call open.  Not a setting: a goodbye is seconds long.
PLAYBACK_WAIT_MAX_S = 30.0

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
    call's ``_Lost`` when another instance took the stream).  Frames to the model
    go out in log order across batches (:func:`model_turn`), and so do the
    caller's (:func:`caller_turn`).
    """
    model, caller = call.model_order, call.caller_order
    mine = [d.seq for d in decisions if d.seq in model]
    theirs = [d.seq for d in decisions if d.seq in caller]
    if mine or theirs:
        task = asyncio.current_task()
        for seq in mine:
            model[seq] = task
        for seq in theirs:
            caller[seq] = task
        try:
            await _execute(call, decisions)
        finally:
            for seq in mine:
                model_turn_done(call, seq)
            for seq in theirs:
                caller_turn_done(call, seq)
    else:
        await _execute(call, decisions)


async def _execute(call: CallSession, decisions: list[ev.Decision]) -> None:
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
    await caller_turn(call, d.seq)
    call.policy = d.policy
    call.use_link()
    # The bridge from the decision's two formats (no second negotiation):
    # soxr only where the rates differ (lpcm16_8; lpcm16 for Realtime).
    rates = audio.bridge_rates(d.media_format, d.model_format)
    if rates is not None and call.to_model is None:
        caller_hz, model_hz = rates
        call.to_model = audio.Resampler(caller_hz, model_hz)
        call.to_caller = audio.Resampler(model_hz, caller_hz)
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
    ev.CallerNotified,
)
async def _to_caller(call: CallSession, d: ev.Decision) -> None:
    frame = vaic.decision_frame(d)
    assert frame is not None  # (each registered type has a frame)
    await caller_turn(call, d.seq)
    await call.to_vaic(frame)
    caller_turn_done(call, d.seq)


async def caller_turn(call: CallSession, seq: int) -> None:
    """Wait until every caller frame recorded before ``seq`` by another batch has
    been sent (or given up): the waits for durability of concurrent batches (the
    caller's reader, the model's, tool tasks) can end in any order, and the caller
    receives the engine's decisions in the log's order.  The same rule as
    :func:`model_turn`, kept apart from it: a slow model socket never holds the
    caller's frames.  Gives up after MODEL_TURN_S with a warning."""
    await _turn(call, seq, "caller")


def caller_turn_done(call: CallSession, seq: int) -> None:
    """The caller decision ``seq`` was sent (or will not be): later ones may go."""
    if call.caller_order.pop(seq, -1) != -1:
        turned, call.caller_turned = call.caller_turned, asyncio.Event()
        turned.set()


@_on(ev.HangupRequested, ev.TransferRequested)
async def _call_control(call: CallSession, d: ev.Decision) -> None:
    frame = vaic.decision_frame(d)
    assert frame is not None
    call.spawn(after_playback(call, frame))


def watch_drain(call: CallSession) -> None:
    """Tell the core when the caller has heard a response whose calls it holds
    (a PlaybackDrained input at the stream's audible end)."""
    view = call.engine.view
    pb = view.playing
    if pb is None or view.held_response != pb.response_id:
        return

    async def drained() -> None:
        wait = (pb.until - now_us()) / 1e6
        if wait > 0:
            await asyncio.sleep(wait)
        if not call.closing and view.held_response == pb.response_id:
            await call.input(ev.PlaybackDrained, stream_id=pb.stream_id, response_id=pb.response_id)

    call.spawn(drained())


async def after_playback(call: CallSession, frame: bytes) -> None:
    """Send a call-control activity once the caller has heard the goodbye (at most
    PLAYBACK_WAIT_MAX_S on).  The decision is already durable: :func:`execute`
    made the log durable before its handler spawned this."""
    view = call.engine.view
    pb = view.playing
    until = pb.until if pb is not None else 0
    if view.live:
        # GPT-Live's goodbye stream is already stopped: the playout clock knows
        # when the caller's queue runs dry.
        until = max(until, view.playout_end)
    wait = (until - now_us()) / 1e6
    if wait > 0:
        await asyncio.sleep(min(wait, PLAYBACK_WAIT_MAX_S))
    await call.to_vaic(frame)


# ------------------------------------------------------------------- model side


async def model_turn(call: CallSession, seq: int) -> None:
    """Wait until every model decision recorded before ``seq`` by another batch
    has been sent.  Batches run concurrently (the caller's reader, the model's,
    tool tasks) and each first waits for the log to be durable, which can end in
    any order: without this a DTMF message could reach a resumed model session
    before the ``session.update`` and seeded history the log puts first (found by
    bench/kill9.py on PostgreSQL).  Gives up after MODEL_TURN_S with a warning."""
    await _turn(call, seq, "model")


async def _turn(call: CallSession, seq: int, side: str) -> None:
    """Wait for the side's (``model`` / ``caller``) earlier decisions of other
    batches to be sent: its ``<side>_order`` and ``<side>_turned`` on the call."""
    me = asyncio.current_task()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + MODEL_TURN_S
    order = getattr(call, f"{side}_order")
    while not call.closing:
        if not any(s < seq and t is not me for s, t in order.items()):
            return
        left = deadline - loop.time()
        if left <= 0:
            log.warning("call %s: %s frame %d sent out of log order", call.call_id, side, seq)
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(left):
                await getattr(call, f"{side}_turned").wait()


def model_turn_done(call: CallSession, seq: int) -> None:
    """The model decision ``seq`` was sent (or will not be): later ones may go."""
    if call.model_order.pop(seq, -1) != -1:
        turned, call.model_turned = call.model_turned, asyncio.Event()
        turned.set()


@_on(*MODEL_DECISIONS)
async def _to_model(call: CallSession, d: ev.Decision) -> None:
    await model_turn(call, d.seq)
    awaited = await call.model_link.send(d)
    model_turn_done(call, d.seq)
    if awaited is not None:
        call.await_model(*awaited)


@_on(ev.ModelConfigured)
async def _model_configured(call: CallSession, d: ev.ModelConfigured) -> None:
    await model_turn(call, d.seq)
    await call.configure_model(d)
    model_turn_done(call, d.seq)


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


__all__ = [
    "AHEAD_OF_LOG",
    "HANDLERS",
    "TO_CALLER",
    "after_playback",
    "execute",
    "run_tool",
    "watch_drain",
]
