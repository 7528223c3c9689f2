"""The call runner: one call driven by this process.

A :class:`CallSession` turns every frame it observes (caller side and model side)
into an input event stamped with the time it saw it, appends it, hands it to the
engine core, appends the core's decisions and executes them.  Audio passes
through untouched where the formats allow; only its chunk boundaries are
recorded.  Each socket has two lanes (see :mod:`fastagent.sockets`): an ordered
slow lane (a reader task) and a fast lane for audio (the socket's data callback).

One concept, one module; a CallSession is their composition:

* recording - :class:`~fastagent.service.recording.Recorder`: the log, the live
  state, the durability wait, the call's tasks;
* caller side - :class:`~fastagent.service.caller_link.CallerSide`: the VAIC
  socket, caller audio on both lanes; what VAIC messages mean is
  :func:`fastagent.vaic.inputs_of`;
* model side - :class:`~fastagent.service.model_link.ModelSide` and the call's
  :class:`~fastagent.service.model_link.ModelLink` (Realtime, or GPT-Live for a
  GPT-Live model): configuration, answer timers, reconnects, model audio;
* decisions - :func:`fastagent.service.executor.execute`: one handler per
  decision type, non-audio decisions only once durable;
* ownership - :class:`~fastagent.service.ownership.Ownership`: claim, grace,
  hand-over, checkpoints; initiate and resume build CallSessions.

This module holds what binds them: the call's fields, the choice of model link
and closing.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from fastapi import WebSocket

from fastagent import audio, sockets, vaic
from fastagent.core import Engine
from fastagent.live_link import LiveLink
from fastagent.service import executor
from fastagent.service.caller_link import CallerPace, CallerSide
from fastagent.service.model_link import ModelSide
from fastagent.service.ownership import Ownership
from fastagent.service.realtime_link import RealtimeLink, dial_model
from fastagent.service.recording import Lost, log, now_us
from projections import live

if TYPE_CHECKING:
    from fastagent.service.process import Service

_Lost = Lost  # (its former name)


class CallSession(CallerSide, ModelSide, Ownership):
    """One call driven by this process: engine, live state, model link, caller socket.

    Built by :func:`fastagent.service.ownership.initiate` / ``resume`` (never by
    a socket handler directly); it implements
    :class:`fastagent.service.model_link.ModelEvents` for its model link.
    """

    def __init__(self, service: Service, call_id: str, engine: Engine) -> None:
        self.service = service
        self.store = service.store
        self.metrics = service.metrics
        self.call_id = call_id
        self.engine = engine
        self.state = live.CallState()
        self.caller: WebSocket | None = None
        self.caller_sock: sockets.CallerProtocol | None = None  # its fast lane, if served so
        self.caller_pace: CallerPace | None = None  # its liveness and message rate
        self.proto: vaic.VaicProtocol | None = None
        # The model side, behind the ModelLink interface (see model_link.py).
        # Dials the call's own model (recorded in its CallConfig), not this instance's.
        self.model_link = RealtimeLink(
            self, lambda: dial_model(service, self.engine.view.model), call_id
        )
        # Closed while a resume hands the call from a stale socket to a new one:
        # model frames wait, so no decision is acted on against the wrong socket.
        self.handover = asyncio.Event()
        self.handover.set()
        self.grace_task: asyncio.Task[None] | None = None
        self.tasks: set[asyncio.Task[Any]] = set()
        self.chunks_in = 0
        self.chunks_out = 0
        self.to_model: audio.Resampler | None = None
        self.to_caller: audio.Resampler | None = None
        self.closing = False
        self.lost = False
        self.checkpoint_seq = 0  # seq of the last checkpoint written (or restored from)
        self.policy = engine.view.policy  # the call's rules; each SessionAccepted carries them
        self.timers: dict[str, asyncio.Task[None]] = {}  # model answers awaited
        self.model_drops = 0  # model sockets lost since the last response.done
        # The model socket's protocol violations (a new bucket per socket) and, once
        # the call failed it on purpose (past a cap), why: it is not redialled then.
        self.model_strikes = self.strikes()
        self.model_broken = ""
        # Model decisions recorded and not sent yet, in log order: seq -> the task
        # sending them (None until its execute starts); see executor.model_turn.
        self.model_order: dict[int, asyncio.Task[Any] | None] = {}
        self.model_turned = asyncio.Event()
        # The same for frames to the caller (executor.caller_turn).
        self.caller_order: dict[int, asyncio.Task[Any] | None] = {}
        self.caller_turned = asyncio.Event()

    # Act on recorded decisions, in order, through the executor's table (see
    # fastagent.service.executor.execute for the durability boundary).
    execute = executor.execute
    to_model_types = executor.TO_MODEL  # what Recorder.record puts in model_order
    to_caller_types = executor.TO_CALLER  # and in caller_order

    def use_link(self) -> None:
        """Speak GPT-Live on the model side if the call's model is a GPT-Live model
        (recorded in the call's CallConfig; docs/models.md)."""
        if self.engine.view.live and not isinstance(self.model_link, LiveLink):
            self.model_link = LiveLink(self)

    async def close(self, why: str) -> None:
        """Let go of the call for good (idempotent): stop its timers, close the
        model link, flush the log, forget the call, close the caller socket."""
        if self.closing:
            return
        self.closing = True
        log.info("call %s: closing (%s)", self.call_id, why)
        if self.grace_task is not None:
            self.grace_task.cancel()
        for task in self.timers.values():
            task.cancel()
        self.timers.clear()
        await self.detach_model()
        with contextlib.suppress(Exception):
            await self.store.flush_async(self.call_id)
        if self.service.calls.get(self.call_id) is self:
            del self.service.calls[self.call_id]
        self.metrics.forget(self.call_id)
        if self.service.tracer is not None:
            self.service.tracer.forget(self.call_id)
        ws = self.detach_caller()
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()


__all__ = ["CallSession", "Lost", "now_us"]
