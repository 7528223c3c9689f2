"""The call runner: one call driven by this process.

A :class:`CallSession` turns every frame it observes (caller side and model side)
into an input event stamped with the time it saw it, appends it, hands it to the
engine core, appends the core's decisions and executes them.  Audio passes
through untouched where the formats allow; only its chunk boundaries are
recorded.  Each socket has two lanes (see :mod:`fastagent.sockets`): an ordered
slow lane (a reader task) and a fast lane for audio (the socket's data callback).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from typing import TYPE_CHECKING, Any

from fastapi import WebSocket

from fastagent import audio, checkpoints, models, realtime, sockets, vaic
from fastagent import events as ev
from fastagent.core import Engine
from fastagent.live_link import LiveLink
from fastagent.service import executor
from fastagent.service.caller_link import CallerPace
from fastagent.service.model_link import ModelAudio
from fastagent.service.realtime_link import RealtimeLink, dial_model
from fastagent.service.recording import Lost, now_us
from fastagent.status import Status
from fastagent.store import StoreError, StreamConflict
from projections import live

if TYPE_CHECKING:
    from fastagent.service.process import Service

log = logging.getLogger("fastagent.service")


_Lost = Lost  # (its former name)

GRACE_POLL_S = 0.25  # how often a suspended call checks whether it moved elsewhere


CHECKPOINT_EVERY = 5000  # events between periodic checkpoints of a live call


CHECKPOINT_CHECK_S = 2.0


SEED_ITEMS = ev.CallPolicy().history_items  # the core decides it per call (CallPolicy)
SEED_SHARE = 4  # the seeded history may use 1/SEED_SHARE of the model's context window
CHARS_PER_TOKEN = 4  # a conservative estimate for English text


def seed_pairs(
    transcript: list[live.Line], items: int = SEED_ITEMS, context_tokens: int = 32_000
) -> list[tuple[str, str]]:
    """What a fresh model session is told of the call so far.

    The last ``items`` turns (the call's ``CallPolicy.history_items``) go in as
    conversation items; anything older is folded into one system message, so a
    long call resumes with a few frames, not hundreds.  Bot audio the caller
    never heard (deleted after a barge-in) is left out.  The whole history is
    kept within a quarter of ``context_tokens`` (128,000 for gpt-realtime-2:
    fastagent.models): the oldest part of the summary goes first.
    """
    pairs = [(line.role, line.text) for line in transcript if line.text and line.heard]
    budget = context_tokens // SEED_SHARE * CHARS_PER_TOKEN  # in characters
    recent = pairs[len(pairs) - items :] if items else []
    while recent and sum(len(t) for _, t in recent) > budget:
        recent = recent[1:]
    older = pairs[: len(pairs) - len(recent)]
    if not older:
        return recent
    room = budget - sum(len(t) for _, t in recent)
    lines = [f"{role}: {text}" for role, text in older]
    while lines and sum(len(x) + 1 for x in lines) > room:
        lines.pop(0)
    if not lines:
        return recent
    return [("system", "Earlier in this call:\n" + "\n".join(lines)), *recent]


class CallSession:
    """One call driven by this process: engine, live state, model socket, caller socket."""

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
        self.model_link = RealtimeLink(self, functools.partial(dial_model, service), call_id)
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
        self.seeded = False
        self.closing = False
        self.lost = False
        self.checkpoint_seq = 0  # seq of the last checkpoint written (or restored from)
        self.policy = engine.view.policy  # the call's rules; each SessionAccepted carries them
        self.timers: dict[str, asyncio.Task[None]] = {}  # model answers awaited
        # Model decisions recorded and not sent yet, in log order: seq -> the task
        # sending them (None until its execute starts); see executor.model_turn.
        self.model_order: dict[int, asyncio.Task[Any] | None] = {}
        self.model_turned = asyncio.Event()

    # --------------------------------------------------------------- recording

    def record(self, inp: ev.Input) -> list[ev.Decision]:
        """Append one input and the decisions it calls for (no await: order is kept)."""
        decisions = self.engine.handle(inp)
        if not decisions:
            # Hot path (every audio chunk): what follows, for a batch of one, inline.
            try:
                self.store.append([inp])
            except StreamConflict:
                self.lost = True
                raise _Lost(self.call_id) from None
            live.apply(self.state, inp)
            for observer in self.service.observers:
                observer(inp)
            return decisions
        batch = [inp, *decisions]
        try:
            self.store.append(batch)
        except StreamConflict:
            self.lost = True
            raise _Lost(self.call_id) from None
        self.applied(batch)
        for d in decisions:
            if type(d) in executor.TO_MODEL:  # sent in this order (executor.model_turn)
                self.model_order[d.seq] = None
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
        inp = cls(call_id=self.call_id, seq=self.engine.view.next_seq, at=now_us(), **fields)
        decisions = self.record(inp)
        if decisions:
            await self.execute(decisions)

    # ---------------------------------------------------------------- decisions

    # Act on recorded decisions, in order, through the executor's table (see
    # fastagent.service.executor.execute for the durability boundary).
    execute = executor.execute

    def use_link(self) -> None:
        """Speak GPT-Live on the model side if the call's model is a GPT-Live model
        (recorded in the call's CallConfig; docs/models.md)."""
        if self.engine.view.live and not isinstance(self.model_link, LiveLink):
            self.model_link = LiveLink(self)

    async def configure_model(self, d: ev.ModelConfigured) -> None:
        if not self.model_link.connected:
            try:
                await self.attach_model()  # first configuration of the call: connect now
            except Exception as exc:
                # The core answers with a hangup: no dead air, and the log says why.
                await self.input(ev.ModelError, error_type="connection", message=str(exc)[:200])
                return
        seed: list[tuple[str, str]] = []
        if not self.seeded:
            # A fresh model session (after a reconnect or a resume elsewhere) hears
            # the conversation so far from the log.
            self.seeded = True
            window = models.info(self.service.config.model).context_tokens
            seed = seed_pairs(self.state.transcript, self.policy.history_items, window)
        awaited = await self.model_link.configure(d, seed)
        if awaited is not None:
            self.await_model(*awaited)

    def await_model(self, waiting_for: str, event_id: str) -> None:
        """Start the timer for the model's answer to what was just sent: the
        answer cancels it (see RealtimeLink.on_frame); if it fires, the core hears a
        ModelTimeout (FASTAGENT_MODEL_TIMEOUT_S, recorded in CallConfig)."""
        old = self.timers.pop(waiting_for, None)
        if old is not None:
            old.cancel()
        seconds = self.policy.model_timeout_s

        async def expire() -> None:
            await asyncio.sleep(seconds)
            if self.timers.get(waiting_for) is not task:
                return
            del self.timers[waiting_for]
            if not self.closing and not self.engine.view.ended:
                await self._guard(
                    self.input(
                        ev.ModelTimeout, waiting_for=waiting_for, seconds=seconds, event_id=event_id
                    )
                )

        task = asyncio.create_task(expire())
        self.timers[waiting_for] = task

    def answered(self, waiting_for: str) -> None:
        task = self.timers.pop(waiting_for, None)
        if task is not None:
            task.cancel()

    def on_failure_handled(self, d: ev.ModelFailureHandled) -> None:
        quiet = d.action in ("none", "settled")  # on record; nothing changes for the caller
        log.log(
            logging.INFO if quiet else logging.WARNING,
            "call %s: model failure %s (%s) -> %s%s",
            self.call_id,
            d.kind,
            d.code or "-",
            d.action,
            f": {d.message}" if d.message else "",
        )
        if d.action == "reconnect" and self.model_link.connected:
            # The session is over (session_expired): a new one, seeded from the log.
            self.spawn(self.reconnect_model(f"model {d.kind}"))

    async def reconnect_model(self, reason: str) -> None:
        """Close the model session on purpose and open a new one (model_lost)."""
        if not self.model_link.connected:
            return
        await self.model_link.close()
        await self.model_lost(reason)

    async def durable(self) -> bool:
        """Make the log durable before a side effect; False if the store cannot."""
        for delay in (0.05, 0.2, 0.5, 1.0, 2.0):
            try:
                await self.store.flush_async(self.call_id)
                return True
            except StreamConflict:
                raise _Lost(self.call_id) from None
            except StoreError as exc:
                log.warning("call %s: store unavailable (%s); retrying", self.call_id, exc)
                await asyncio.sleep(delay)
        return False

    def spawn(self, coro: Any) -> None:
        task = asyncio.create_task(self._guard(coro))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _guard(self, coro: Any) -> None:
        try:
            await coro
        except _Lost:
            await self.close("stream taken over by another instance")
        except Exception as exc:
            log.error("call %s: task failed: %s: %s", self.call_id, type(exc).__name__, exc)

    # ------------------------------------------------------------ caller side

    def vaic_proto(self) -> vaic.VaicProtocol:
        if self.proto is None:
            self.proto = vaic.VaicProtocol(self.service.config.max_frame_bytes)
        return self.proto

    def attach_caller(self, ws: WebSocket, proto: vaic.VaicProtocol) -> None:
        self.caller, self.proto = ws, proto
        self.caller_sock = sockets.caller_protocol_of(ws._receive)

    def detach_caller(self) -> WebSocket | None:
        ws, self.caller, self.caller_sock = self.caller, None, None
        return ws

    async def to_vaic(self, frame: bytes) -> None:
        ws = self.caller
        if ws is None:
            return
        sock = self.caller_sock
        if sock is not None and sock.can_write_now():
            sock.write_now(frame)
            return
        try:
            # The raw ASGI send: Starlette's checks cost more than the frame (hot path).
            await ws._send({"type": "websocket.send", "text": frame.decode()})
        except Exception:  # a gone socket is noticed by its reader
            pass

    def caller_audio_input(self, msg: vaic.UserStreamChunk) -> ev.CallerAudio:
        nbytes = msg.nbytes
        self.chunks_in += 1
        view = self.engine.view
        fmt = view.media_format
        return ev.CallerAudio(
            call_id=self.call_id,
            seq=view.next_seq,
            at=time.time_ns() // 1000,  # (now_us, inline: hot path)
            chunk=self.chunks_in,
            nbytes=nbytes,
            duration_us=audio.duration_us(nbytes, fmt),
            fmt=fmt,
        )

    async def on_caller_audio(self, msg: vaic.UserStreamChunk) -> None:
        """Hot path (slow lane): record the boundary, forward the base64 untouched."""
        inp = self.caller_audio_input(msg)
        decisions = self.record(inp)
        if decisions:
            await self.execute(decisions)
        b64 = msg.audioChunk
        if self.to_model is not None:
            b64 = self.to_model.process_b64(b64)
        if self.model_link.connected:
            await self.model_link.send_audio(b64)
            self.metrics.relay_to_model(inp.at)

    def caller_audio_now(self, msg: vaic.UserStreamChunk) -> bool:
        """Fast lane, from the caller socket's data callback: record and forward a
        chunk with no await, if the model socket can take it at once."""
        link = self.model_link
        if self.closing or self.lost or not link.writable_now():
            return False
        b64 = msg.audioChunk
        if self.to_model is not None:
            b64 = self.to_model.process_b64(b64)
        # Everything that can fail comes before the record: a recorded frame is done.
        frame = link.audio_frame(b64)
        inp = self.caller_audio_input(msg)
        if self.record_now(inp):
            link.write_now(frame)
            self.metrics.relay_to_model(inp.at)
        return True

    def record_now(self, inp: ev.Input) -> bool:
        """:meth:`record` from a socket callback, where nothing may be awaited: the
        decisions run in a task (the engine decides none on audio of an open
        stream today).  False if the call was lost to another instance."""
        try:
            decisions = self.record(inp)
        except _Lost:
            self.spawn(self.close("stream taken over by another instance"))
            return False
        if decisions:
            self.spawn(self.execute(decisions))
        return True

    def write_now(self, sock: Any, frame: Any) -> None:
        """The fast lane's write of a frame already recorded: a failure closes the
        call's socket the way the slow lane would, never records it again."""
        try:
            sock.write_now(frame)
        except Exception as exc:
            log.warning("call %s: fast-lane write failed: %s", self.call_id, exc)
            sock.on_text = None

    # ------------------------------------------------------------- model side

    async def attach_model(self) -> None:
        """Connect the model link (with backoff); it starts reading at once."""
        retries = self.policy.model_retries
        delay = 0.2
        for attempt in range(retries + 1):
            try:
                await self.model_link.connect()
                return
            except Exception as exc:
                log.warning("call %s: model connect failed (%s)", self.call_id, exc)
                if attempt == retries:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def detach_model(self) -> None:
        await self.model_link.close()

    async def model_lost(self, reason: str) -> None:
        """The model socket dropped: reconnect and seed the new session from the log."""
        link = self.model_link
        if isinstance(link, RealtimeLink | LiveLink):
            link.forget()
        for task in self.timers.values():  # nothing more will answer on that socket
            task.cancel()
        self.timers.clear()
        await self.input(ev.ConnectionLost, side="model", reason=reason[:200])
        try:
            await self.attach_model()
        except Exception as exc:
            log.error("call %s: model unreachable: %s", self.call_id, exc)
            await self.input(ev.ModelError, error_type="connection", message=str(exc)[:200])
            return
        self.seeded = False
        await self.input(ev.ConnectionRestored, side="model", instance=self.service.config.instance)

    # ModelEvents: what the model link reports (see model_link.py).

    async def model_input(self, cls: type[ev.Input], **fields: Any) -> None:
        await self.input(cls, **fields)  # what the caller is told of it, the core decides

    async def model_audio(self, audio: ModelAudio) -> None:
        await self.on_bot_audio(audio)  # type: ignore[arg-type]

    def model_audio_writable(self) -> bool:
        if self.closing or self.lost or not self.handover.is_set():
            return False
        caller = self.caller_sock
        return caller is not None and caller.can_write_now()

    def model_answered(self, waiting_for: str) -> None:
        self.answered(waiting_for)

    async def model_protocol_error(self, message: str) -> None:
        await self.protocol_error("model", message)

    async def model_failed(self, exc: BaseException) -> None:
        if isinstance(exc, _Lost):
            await self.close("stream taken over by another instance")
        elif not self.closing:
            await self.model_lost(str(exc) or type(exc).__name__)

    async def protocol_error(self, side: str, message: str) -> None:
        """Record a frame that was rejected, with one log line (no traceback)."""
        log.warning("call %s: %s frame rejected: %s", self.call_id, side, message[:300])
        if not self.closing and not self.engine.view.ended:
            await self.input(ev.ProtocolError, side=side, message=message[:300])

    def model_audio_now(self, e: ModelAudio) -> bool:
        """Fast lane, from the model socket's data callback (through the link): a
        chunk of the audio being played is recorded and forwarded with no await."""
        if not self.engine.view.plays(e.item_id):
            return False  # a new stream starts, or audio nobody hears: decisions to act on
        proto = self.proto
        if proto is None or proto.play_stream_id is None:
            return False
        caller = self.caller_sock
        b64 = e.delta
        if self.to_caller is not None:
            b64 = self.to_caller.process_b64(b64)
        frame = proto.play_chunk(b64)  # before the record: it may raise
        inp = self.bot_audio_input(e)  # type: ignore[arg-type]
        if self.record_now(inp):
            self.write_now(caller, frame)
            self.metrics.relay_to_caller(inp.at)
        return True

    def bot_audio_input(self, e: realtime.AudioDelta) -> ev.BotAudio:
        self.chunks_out += 1
        nbytes = audio.b64_decoded_len(e.delta)
        view = self.engine.view
        model_fmt = view.model_format
        return ev.BotAudio(
            call_id=self.call_id,
            seq=view.next_seq,
            at=time.time_ns() // 1000,  # (now_us, inline: hot path)
            response_id=e.response_id,
            item_id=e.item_id,
            chunk=self.chunks_out,
            nbytes=nbytes,
            duration_us=audio.duration_us(nbytes, model_fmt),
            fmt=model_fmt,
        )

    def model_sample_bytes(self) -> int:
        """Bytes per sample of the model's audio: bot audio must be whole samples."""
        return 1 if self.engine.view.model_format == "audio/pcmu" else 2

    async def on_bot_audio(self, e: realtime.AudioDelta) -> None:
        """Hot path (slow lane): record the boundary; forward the base64 if it is played."""
        err = realtime.audio_delta_error(e, self.model_sample_bytes())
        if err is not None:  # dropped: the caller never hears what is not audio
            await self.protocol_error("model", err)
            return
        b64 = e.delta
        inp = self.bot_audio_input(e)
        decisions = self.record(inp)
        if decisions:
            await self.execute(decisions)
        if not self.engine.view.plays(e.item_id):
            return  # interrupted or not ours: the caller must not hear it
        if self.vaic_proto().play_stream_id is None:
            return  # a resume attached a new socket and has not started its stream yet
        if self.to_caller is not None:
            b64 = self.to_caller.process_b64(b64)
        await self.to_vaic(self.vaic_proto().play_chunk(b64))
        self.metrics.relay_to_caller(inp.at)

    # -------------------------------------------------------------- lifecycle

    async def close(self, why: str) -> None:
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
            with contextlib.suppress(_Lost):
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

        self.grace_task = asyncio.create_task(self._guard(expire()))

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
            self.store.write_checkpoint(self.call_id, seq, data)

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
