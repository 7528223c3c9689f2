"""Who drives a call: ``session.initiate``, ``session.resume`` and claiming a call.

One session drives a call at a time.  A caller that reconnects (``session.resume``)
within the grace period gets the same session back, on this instance from memory,
on another one rebuilt from the log (checkpoint + tail) and claimed with an
optimistic-concurrency append (see docs/operations.md).

* :func:`initiate`, :func:`resume` - a VAIC socket's ``session.initiate`` /
  ``session.resume``: the call's :class:`~fastagent.service.call.CallSession`, or
  None after a ``session.error``;
* :class:`Ownership` - the part of a CallSession that keeps the call (a mixin):
  claiming its stream, noticing another instance took it, the grace period after
  the caller dropped, handing it over when draining, and its checkpoints.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any, Literal

from fastapi import WebSocket

from fastagent import checkpoints, vaic
from fastagent import events as ev
from fastagent.admission import engine_for
from fastagent.service.caller_link import CallerPace, _abort
from fastagent.service.executor import run_tool
from fastagent.service.process import Service
from fastagent.service.realtime_link import dial_model
from fastagent.service.recording import Lost, Recorder, now_us
from fastagent.status import Status
from fastagent.store import EventStore, StoreError, StreamConflict, UnknownCall

if TYPE_CHECKING:
    from fastagent.service.call import CallSession

log = logging.getLogger("fastagent.service")


CLAIM_ATTEMPTS = 5  # a resume overtakes an old owner still finishing its writes


LIVE_S = 1.0  # a call not suspended whose log is quiet this long has lost its driver

GRACE_POLL_S = 0.25  # how often a suspended call checks whether it moved elsewhere

CHECKPOINT_EVERY = 5000  # events between periodic checkpoints of a live call

CHECKPOINT_CHECK_S = 2.0


class Ownership(Recorder):
    """The call's hold on its stream (a mixin of CallSession; fields set up there)."""

    grace_task: asyncio.Task[None] | None  # waiting for a resume after a drop
    checkpoint_seq: int  # seq of the last checkpoint written (or restored from)
    chunks_in: int
    chunks_out: int

    if TYPE_CHECKING:  # the caller side's (CallerSide)
        caller: WebSocket | None
        proto: vaic.VaicProtocol | None

        def detach_caller(self) -> WebSocket | None: ...

    async def hand_over(self) -> None:
        """Leave the call to another instance (draining): record the caller as
        dropped (the call is then suspended in the log, which lets a resume
        elsewhere claim it at once), checkpoint it, and close the caller socket with
        1001 (going away), on which VAIC reconnects and sends ``session.resume``."""
        if self.closing:
            return
        ws = self.detach_caller()
        self.proto = None
        if ws is not None and self.engine.view.status not in (Status.ENDED, Status.SUSPENDED):
            with contextlib.suppress(Lost):
                await self.input(ev.ConnectionLost, side="caller", reason="instance draining")
        if not self.lost:
            await self.save_checkpoint()
        await self.close("instance draining: left to resume on another instance")
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close(code=1001)

    def start_grace(self) -> None:
        """The caller dropped: wait for a resume; end the call when the grace is over.

        Meanwhile watch the log: if another instance resumed the call, let go of it
        (model socket included) at once instead of at the end of the grace.
        """
        grace = self.policy.grace_s

        async def expire() -> None:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + grace
            while (left := deadline - loop.time()) > 0:
                await asyncio.sleep(min(left, GRACE_POLL_S))
                if self.caller is not None or self.closing:
                    return
                if await self.taken_over():
                    await self.close("call resumed on another instance")
                    return
            if self.caller is None and not self.closing:
                await self.input(ev.GraceExpired, seconds=grace)

        async def guarded() -> None:
            # (expire() made inside the task: a grace cancelled before it ran, as a
            # resume does at once, leaves no coroutine never awaited)
            await self._guard(expire())

        self.grace_task = asyncio.create_task(guarded())

    async def claim(self, batch: list[ev.Event]) -> None:
        """Append at once (not group-committed) and apply: raises StreamConflict if
        anyone else wrote to the call's stream since this instance last did."""
        await asyncio.to_thread(self.store.append_now, batch)
        self.applied(batch)

    async def taken_over(self) -> bool:
        """True if another writer appended to this call's stream after us."""
        if self.lost or self.store.conflicted(self.call_id):
            return True
        try:
            stored = await asyncio.to_thread(self.store.last_seq, self.call_id)
        except StoreError:
            return False  # cannot tell; the next write will
        return stored >= self.engine.view.next_seq

    async def save_checkpoint(self) -> None:
        """Checkpoint the call's state once what it reflects is durable (see checkpoints.py)."""
        data = checkpoints.take(self.engine, self.state, self.chunks_in, self.chunks_out)
        if data is None:
            return
        seq = self.engine.view.next_seq - 1

        def write() -> None:
            self.store.flush(self.call_id)  # StreamConflict if the call is no longer ours
            self.store.checkpoints.write(self.call_id, seq, data)

        try:
            await asyncio.to_thread(write)
        except StreamConflict:
            self.lost = True
        except StoreError as exc:
            log.warning("call %s: checkpoint not written: %s", self.call_id, exc)
            return
        self.checkpoint_seq = seq

    def keep_checkpoints(self) -> None:
        """Checkpoint every CHECKPOINT_EVERY events or so, bounding what a resume after a
        crash must replay."""

        async def loop() -> None:
            while not self.closing:
                await asyncio.sleep(CHECKPOINT_CHECK_S)
                if self.engine.view.next_seq - 1 - self.checkpoint_seq >= CHECKPOINT_EVERY:
                    await self.save_checkpoint()

        self.spawn(loop())


async def initiate(
    service: Service,
    ws: WebSocket,
    proto: vaic.VaicProtocol,
    msg: vaic.SessionInitiate,
    pace: CallerPace | None = None,
) -> CallSession | None:
    call_id = msg.conversationId
    # One owner per call: a second initiate of the id, on this instance (checked
    # and reserved with no await in between) or on another one (the claim below
    # conflicts), gets session.error; the first keeps the call and all its events.
    if call_id in service.calls or call_id in service.initiating:
        await ws.send_text(vaic.session_error("conversation already exists").decode())
        return None
    service.initiating.add(call_id)
    try:
        session = await _initiate(service, ws, proto, msg)
    finally:
        service.initiating.discard(call_id)
    if session is not None:
        session.caller_pace = pace
    return session


async def _initiate(
    service: Service, ws: WebSocket, proto: vaic.VaicProtocol, msg: vaic.SessionInitiate
) -> CallSession | None:
    call_id = msg.conversationId
    try:
        known = await asyncio.to_thread(service.store.last_seq, call_id)
    except StoreError as exc:
        log.error("call %s: store unavailable: %s", call_id, exc)
        await ws.send_text(vaic.session_error("service unavailable").decode())
        return None
    if known:
        await ws.send_text(vaic.session_error("conversation already exists").decode())
        return None
    from fastagent.service.call import CallSession  # (built on this module's Ownership)

    cfg = service.config
    config = ev.CallConfig(
        agent=cfg.agent,
        greet=cfg.greet,
        transfer_target=cfg.transfer_target,
        voice=cfg.voice or "marin",
        model=cfg.model,
        model_timeout_s=cfg.model_timeout_s,
        playback_speed=cfg.playback_speed,
        sealed=_sealed_categories(cfg.agent),
        grace_s=cfg.grace_s,
        tool_timeout_s=cfg.tool_timeout_s,
        model_retries=cfg.model_retries,
    )
    inp = ev.SessionInitiated(
        call_id=call_id,
        seq=1,
        at=now_us(),
        config=config,
        caller=msg.caller,
        bot_name=msg.botName,
        offered_formats=tuple(msg.supportedMediaFormats),
        expect_audio=msg.expectAudioMessages,
        instance=cfg.instance,
    )
    # The agent and the formats are settled here, outside the core (admission.py).
    session = CallSession(service, call_id, engine_for(inp))
    decisions = session.engine.handle(inp)
    try:
        # Claimed at once, not group-committed: an instance that initiated the same
        # id a moment ago wins the stream, and this one backs off before answering.
        await session.claim([inp, *decisions])
    except StreamConflict:
        await ws.send_text(vaic.session_error("conversation already exists").decode())
        return None
    except StoreError as exc:
        log.error("call %s: store unavailable: %s", call_id, exc)
        await ws.send_text(vaic.session_error("service unavailable").decode())
        return None
    session.attach_caller(ws, proto)
    service.calls[call_id] = session
    await session.execute(decisions)
    if session.engine.view.ended:
        return None
    await start_model_and_tools(session)
    session.keep_checkpoints()
    return session


async def start_model_and_tools(session: CallSession) -> None:
    agent = session.engine.view.agent
    assert agent is not None
    if agent.servers:
        try:
            # The hub is keyed by the configured reference ("banking" or
            # "mypkg.agents:AGENT"), as run_tool looks it up; never by Agent.name.
            hub = await session.service.hub(session.state.agent)
            listed = await hub.list_tools()
        except Exception as exc:
            log.warning("call %s: tools unavailable: %s", session.call_id, exc)
            listed = {}
        for server, specs in listed.items():
            await session.input(ev.ToolsListed, server=server, tools=tuple(specs))


async def resume(
    service: Service,
    ws: WebSocket,
    proto: vaic.VaicProtocol,
    msg: vaic.SessionResume,
    pace: CallerPace | None = None,
) -> CallSession | None:
    """``session.resume``: re-attach the call, from memory if this instance still
    drives it, else rebuilt from the store (checkpoint + tail) and claimed.

    A call whose caller socket is alive (its connection not lost) and healthy (a
    frame within ``resume_stale_s``) keeps it: the resume gets ``session.error``, as does a
    resume (or initiate) of a call whose resume or initiate is under way here."""
    call_id = msg.conversationId
    if call_id in service.initiating:
        # One at a time: concurrent take-overs of one call each saw no live socket
        # yet, and each attached its own (several session.accepted, some none).
        await ws.send_text(vaic.session_error("call is being resumed").decode())
        return None
    service.initiating.add(call_id)
    try:
        session = await _resume(service, ws, proto, msg)
        if session is not None:
            session.caller_pace = pace  # before the next resume may look at it
    finally:
        service.initiating.discard(call_id)
    return session


async def _resume(
    service: Service, ws: WebSocket, proto: vaic.VaicProtocol, msg: vaic.SessionResume
) -> CallSession | None:
    call_id = msg.conversationId
    session = service.calls.get(call_id)
    if session is not None and session.engine.view.ended:
        # Its end is recorded (the grace ran out a moment ago) and the close its
        # CallEnded spawned has not run yet: close it now; the log answers below
        # ("conversation has ended"), never a silent attach to an ended call.
        await session.close("call ended")
    if session is not None and not session.closing:
        old_pace, old_sock = session.caller_pace, session.caller_sock
        if (
            session.caller is not None
            and session.caller is not ws
            # A connection already gone is not alive, however recently it spoke: its
            # close waits behind what its reader is still busy with (a slow commit).
            and not (old_sock is not None and old_sock.transport.is_closing())
            and old_pace is not None
            and old_pace.silent_for() < service.config.resume_stale_s
        ):
            log.warning("call %s: resume refused: its caller socket is alive", call_id)
            await ws.send_text(vaic.session_error("call is active on another socket").decode())
            return None
        session.handover.clear()
        try:
            return await _take_over(service, ws, proto, session)
        finally:
            session.handover.set()
    return await resume_from_store(service, ws, proto, call_id)


async def _take_over(
    service: Service, ws: WebSocket, proto: vaic.VaicProtocol, session: CallSession
) -> CallSession | None:
    """Resume a call this instance holds in memory (its old socket gone or stale).
    Model frames wait meanwhile (``session.handover``, closed by the caller)."""
    call_id = session.call_id
    # A stale old socket gets nothing more from now on (its buffers may be full).
    old, old_sock = session.caller, session.caller_sock
    replacing = old is not None and old is not ws
    if replacing:
        session.detach_caller()
    if session.grace_task is not None:
        session.grace_task.cancel()
    moved = await session.taken_over()
    if not moved and not session.closing and not session.engine.view.ended:
        # (Checked after the await: the call may have ended meanwhile, by its grace
        # running out just before the cancel above, or by any input the engine
        # ends it on.  Nothing is recorded after a CallEnded.)
        try:
            # This instance owns the stream: record in order like any input (the
            # model reader may be recording too), then make it durable, which
            # fails if a resume elsewhere claimed the call a moment ago.
            dropped: list[ev.Decision] = []
            if replacing:
                # The old socket never reported its end (half-open TCP, or its
                # close is still queued) and is stale: record it gone first, which
                # stops the play stream it was hearing.
                dropped = session.record(
                    ev.ConnectionLost(
                        call_id=call_id,
                        seq=session.engine.view.next_seq,
                        at=now_us(),
                        side="caller",
                        reason="replaced by session.resume",
                    )
                )
            inp = ev.SessionResumed(
                call_id=call_id,
                seq=session.engine.view.next_seq,
                at=now_us(),
                instance=service.config.instance,
            )
            decisions = session.record(inp)
            await session.store.flush_async(call_id)
        except (StreamConflict, Lost):
            if replacing:
                _abort(old, old_sock)
            await session.close("call resumed on another instance")
            await ws.send_text(vaic.session_error("call is active on another instance").decode())
            return None
        await session.execute(dropped)  # (its play stream stops; no frame is sent)
        session.attach_caller(ws, proto)
        if replacing:
            _abort(old, old_sock)
        await session.execute(decisions)
        return session
    # It moved to another instance and back (this copy is stale), or it ended or
    # was let go while this resume looked: the log answers, with session.accepted
    # or session.error (resume_from_store writes what is buffered before it reads).
    if replacing:
        _abort(old, old_sock)
    await session.close("call resumed on another instance" if moved else "call ended")
    return await resume_from_store(service, ws, proto, call_id)


async def released(
    store: EventStore, call_id: str, last: int, live_s: float = LIVE_S
) -> Literal["stale", "dropped", "driven"]:
    """Whether a call that is not suspended (read up to seq ``last``) may be taken
    over: "stale" if nobody appends to it for ``live_s`` seconds (its driver is
    gone, or its caller socket went silent: either way the socket is stale);
    "dropped" as soon as its driver records the caller's drop (the call is
    suspended now: read it again); "driven" if its log grows for ``live_s`` with no
    such drop (an instance drives it with a caller), if another resume claims it,
    or if the store fails.

    A call not suspended is either driven by a live instance (whose caller streams
    audio, so its log grows every few tens of ms) or was left by a crashed one.  A
    resume may also overtake the news of its own drop: VAIC dials again the moment
    its socket fails, and the instance that had it can record the drop after this
    one read the log (a group commit later, or later still on a busy machine),
    while the last of the caller's audio still lands.  Growth alone is therefore
    no proof of a driven call; growth without the drop, for ``live_s``, is.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + live_s
    seen = last
    while loop.time() < deadline:
        await asyncio.sleep(0.1)
        try:
            if await asyncio.to_thread(store.last_seq, call_id) <= seen:
                continue
            newer = await asyncio.to_thread(store.read_call, call_id, seen)
        except StoreError:
            return "driven"
        if any(isinstance(e, ev.SessionResumed) for e in newer):
            return "driven"  # another resume claimed it
        if any(isinstance(e, ev.ConnectionLost) and e.side == "caller" for e in newer):
            return "dropped"
        if newer:
            seen = newer[-1].seq
    return "stale" if seen == last else "driven"


async def resume_from_store(
    service: Service, ws: WebSocket, proto: vaic.VaicProtocol, call_id: str
) -> CallSession | None:
    from fastagent.service.call import CallSession  # (built on this module's Ownership)

    store, cfg = service.store, service.config
    instance = cfg.instance
    # The model is dialled once the call is known resumable, while it is claimed:
    # most of a resume's latency is this socket, but a refused resume (unknown,
    # ended, active elsewhere; a storm of them) must cost no model session.
    dial: asyncio.Task[Any] | None = None

    async def refuse(reason: str) -> None:
        await ws.send_text(vaic.session_error(reason).decode())
        if dial is None:
            return
        dial.cancel()
        with contextlib.suppress(BaseException):
            conn = await dial
            await conn.close()

    for attempt in range(CLAIM_ATTEMPTS):
        try:
            await asyncio.to_thread(store.reclaim, call_id)
            rebuilt = await asyncio.to_thread(checkpoints.rebuild, store, call_id)
        except UnknownCall:
            await refuse("conversation not found")
            return None
        except StoreError as exc:
            log.error("call %s: cannot resume: %s", call_id, exc)
            await refuse("store unavailable")
            return None
        engine = rebuilt.engine
        view = engine.view if engine is not None else None
        if rebuilt.divergence:
            # Today's agent decides differently from the one that drove the call:
            # its state cannot be rebuilt faithfully here (a deploy changed the FSA).
            log.error("call %s: %s; not resumed here", call_id, rebuilt.divergence)
            await refuse("call cannot be resumed on this version of the agent")
            return None
        if engine is None or view is None or view.ended or view.agent is None:
            await refuse("conversation has ended")
            return None
        read_to = view.next_seq - 1
        live_s = max(LIVE_S, cfg.resume_stale_s)
        suspended = view.status is Status.SUSPENDED
        if not suspended:
            how = await released(store, call_id, read_to, live_s)
            if how == "driven":
                await refuse("call is active on another instance")
                return None
            if how == "dropped":
                continue  # its driver recorded the drop after this read: read it again
        if dial is None:
            # The call's recorded model (CallConfig.model), not this instance's default.
            dial = asyncio.create_task(dial_model(service, view.model))
        batch: list[ev.Event] = []
        at = now_us()
        if view.status is Status.ACTIVE:
            # The instance that had the caller died without recording the drop.
            lost = ev.ConnectionLost(
                call_id=call_id,
                seq=view.next_seq,
                at=at,
                side="caller",
                # All that is known: its log stood still.  (Its instance may have died,
                # or its caller's socket gone silent; either way the socket is stale.)
                reason=f"no event for {live_s:g} s from the instance driving the call",
            )
            batch += [lost, *engine.handle(lost)]
        resumed = ev.SessionResumed(call_id=call_id, seq=view.next_seq, at=at, instance=instance)
        decisions = engine.handle(resumed)
        batch += [resumed, *decisions]
        session = CallSession(service, call_id, engine)
        session.state = rebuilt.state
        try:
            # Claim the call: a synchronous append fails if anyone wrote after our read.
            await session.claim(batch)
            break
        except StreamConflict:
            pass
        except StoreError as exc:
            log.error("call %s: cannot resume: %s", call_id, exc)
            await refuse("store unavailable")
            return None
        # Who wrote?  Another resume (a claim) wins: back off.  An old owner still
        # finishing its writes (its caller is gone) is overtaken: read again, retry.
        try:
            newer = await asyncio.to_thread(store.read_call, call_id, read_to)
        except StoreError:
            newer = []
        if any(isinstance(e, ev.SessionResumed) for e in newer):
            await refuse("call is active on another instance")
            return None
        await asyncio.sleep(0.02 * 2**attempt)
    else:
        await refuse("call is active on another instance")
        return None
    assert dial is not None  # (dialled before the claim that succeeded)
    session.chunks_in, session.chunks_out = rebuilt.chunks_in, rebuilt.chunks_out
    session.checkpoint_seq = rebuilt.from_checkpoint
    session.attach_caller(ws, proto)
    service.calls[call_id] = session
    await session.execute(decisions)  # session.accepted, and held calls the drop left
    # Whatever model session there was is not ours: record it gone, so the engine
    # drops a response in progress and owes the caller a new one.
    await session.input(ev.ConnectionLost, side="model", reason=f"call resumed on {instance}")
    # The link SessionAccepted chose takes the connection dialled meanwhile, or
    # (another protocol: GPT-Live) dials its own.
    if not await session.model_link.adopt(dial):
        try:
            await session.attach_model()
        except Exception as exc:  # configuring the model dials again, with backoff
            log.warning("call %s: model connect failed (%s)", call_id, exc)
    elif session.model_link.connected:
        session.watch_model()  # (no await since adopt: its reader has not run yet)
    for d in rebuilt.pending:
        # Decided and durable, but its result never made it to the log: run it again
        # with the same idempotency key (the backend answers a repeat with the first result).
        session.spawn(run_tool(session, d))
    if not session.engine.view.tools_listed:  # in the log already: list only if never listed
        await start_model_and_tools(session)
    # A new model session: configure it and seed it with the conversation so far.
    await session.input(ev.ConnectionRestored, side="model", instance=instance)
    session.keep_checkpoints()
    return session


def _sealed_categories(agent: str) -> tuple[str, ...] | None:
    """What the store seals for a call of ``agent`` (None, i.e. everything, if the
    agent cannot be loaded: the engine then rejects the call anyway)."""
    from fastagent.agents import get_agent

    try:
        return get_agent(agent).privacy.categories()
    except Exception:
        return None
