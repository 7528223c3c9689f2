"""What every part of a call runner shares: the call's state, its log, its tasks.

:class:`Recorder` is the base of :class:`fastagent.service.call.CallSession`; the
call's sides build on it (:class:`~fastagent.service.caller_link.CallerSide`,
:class:`~fastagent.service.model_link.ModelSide`,
:class:`~fastagent.service.ownership.Ownership`), so each concept lives in one
module while the hot paths still read the call's fields with one attribute
lookup (a composed object would add a hop per audio chunk).

The recording contract: :meth:`Recorder.record` stamps nothing and awaits
nothing: it hands one input to the engine, appends the input and the engine's
decisions to the store's group commit (durable within one flush interval) and
folds them into the live state, in order.  :meth:`Recorder.input` records an
input the shell observed now and executes its decisions.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from fastagent import events as ev
from fastagent.store import StoreError, StreamConflict
from projections import live

if TYPE_CHECKING:
    from fastagent.core import Engine
    from fastagent.service.model_link import ModelLink
    from fastagent.service.process import Service
    from fastagent.store import EventStore

log = logging.getLogger("fastagent.service")


def now_us() -> int:
    """Wall-clock time in microseconds since the epoch: the ``at`` of an input."""
    return time.time_ns() // 1000


class Lost(Exception):
    """This instance no longer drives the call (another writer took its stream)."""


class Recorder:
    """The call's log and live state (set up by CallSession.__init__)."""

    service: Service
    store: EventStore
    metrics: Any  # the service's metrics (fastagent.observe)
    call_id: str
    engine: Engine
    state: live.CallState
    policy: ev.CallPolicy  # the call's rules; each SessionAccepted carries them
    model_link: ModelLink  # the model side, behind the ModelLink interface
    tasks: set[asyncio.Task[Any]]
    closing: bool
    lost: bool  # another instance took the call's stream
    # Model decisions recorded and not sent yet, in log order: seq -> the task
    # sending them (None until its execute starts); see executor.model_turn.
    model_order: dict[int, asyncio.Task[Any] | None]
    model_turned: asyncio.Event
    # The same for frames to the caller (executor.caller_turn).
    caller_order: dict[int, asyncio.Task[Any] | None]
    caller_turned: asyncio.Event
    to_model_types: frozenset[type[ev.Decision]]  # (executor.TO_MODEL, set by CallSession)
    to_caller_types: frozenset[type[ev.Decision]]  # (executor.TO_CALLER, set by CallSession)
    model_drops: int  # model sockets lost since the last response.done

    if TYPE_CHECKING:  # provided by CallSession and its sides

        async def execute(self, decisions: list[ev.Decision]) -> None: ...

        async def close(self, why: str) -> None: ...

    def record(self, inp: ev.Input) -> list[ev.Decision]:
        """Append one input and the decisions it calls for (no await: order is kept).
        Raises Lost (and sets ``lost``) if another instance took the stream."""
        decisions = self.engine.handle(inp)
        if not decisions:
            # Hot path (every audio chunk): what follows, for a batch of one, inline.
            try:
                self.store.append([inp])
            except StreamConflict:
                self.lost = True
                raise Lost(self.call_id) from None
            live.apply(self.state, inp)
            for observer in self.service.observers:
                observer(inp)
            return decisions
        batch = [inp, *decisions]
        try:
            self.store.append(batch)
        except StreamConflict:
            self.lost = True
            raise Lost(self.call_id) from None
        self.applied(batch)
        for d in decisions:
            t = type(d)
            if t in self.to_model_types:  # sent in this order (executor.model_turn)
                self.model_order[d.seq] = None
            elif t in self.to_caller_types:  # (executor.caller_turn)
                self.caller_order[d.seq] = None
        return decisions

    def applied(self, batch: list[ev.Event]) -> None:
        """Fold a recorded batch into the live state and show it to observers."""
        state = self.state
        for e in batch:
            live.apply(state, e)
        for observer in self.service.observers:
            for e in batch:
                observer(e)

    async def input(self, cls: type[ev.Input], **fields: Any) -> None:
        """Record ``cls(**fields)`` observed now (call_id, seq and at added) and
        execute its decisions.  Raises Lost if another instance took the call."""
        if cls is ev.ResponseDone:
            self.model_drops = 0  # the model session works: its drops start over
        inp = cls(call_id=self.call_id, seq=self.engine.view.next_seq, at=now_us(), **fields)
        decisions = self.record(inp)
        if decisions:
            await self.execute(decisions)

    def record_now(self, inp: ev.Input) -> bool:
        """:meth:`record` from a socket callback, where nothing may be awaited: the
        decisions run in a task (the engine decides none on audio of an open
        stream today).  False if the call was lost to another instance."""
        try:
            decisions = self.record(inp)
        except Lost:
            self.spawn(self.close("stream taken over by another instance"))
            return False
        if decisions:
            self.spawn(self.execute(decisions))
        return True

    async def durable(self) -> bool:
        """Make the log durable before a side effect; False if the store cannot."""
        for delay in (0.05, 0.2, 0.5, 1.0, 2.0):
            try:
                await self.store.flush_async(self.call_id)
                return True
            except StreamConflict:
                raise Lost(self.call_id) from None
            except StoreError as exc:
                log.warning("call %s: store unavailable (%s); retrying", self.call_id, exc)
                await asyncio.sleep(delay)
        return False

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[None]:
        """Run ``coro`` as a task of the call (see :meth:`_guard`); the task."""
        task = asyncio.create_task(self._guard(coro))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def _guard(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Await ``coro``: a lost stream closes the call, any other failure is one
        log line (a task of the call never takes the call down)."""
        try:
            await coro
        except Lost:
            await self.close("stream taken over by another instance")
        except Exception as exc:
            log.error("call %s: task failed: %s: %s", self.call_id, type(exc).__name__, exc)

    async def protocol_error(self, side: str, message: str) -> None:
        """Record a frame that was rejected, with one log line (no traceback)."""
        log.warning("call %s: %s frame rejected: %s", self.call_id, side, message[:300])
        if not self.closing and not self.engine.view.ended:
            await self.input(ev.ProtocolError, side=side, message=message[:300])


__all__ = ["Lost", "Recorder", "log", "now_us"]
