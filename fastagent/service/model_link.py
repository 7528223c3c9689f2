"""The model link: the one interface between a call and its speech-to-speech model.

A call talks to its model through a :class:`ModelLink`; the Realtime API is one
implementation (:class:`fastagent.service.realtime_link.RealtimeLink`), GPT-Live
another (:class:`fastagent.service.live_link.LiveLink`).  :class:`ModelSide`, below, is the
call's side of it (the :class:`ModelEvents` a link reports to).  The link owns
the model's socket and its wire protocol; the call
(:class:`fastagent.service.call.CallSession`) owns the log, the engine, the
timers and the reconnect policy.  Nothing of the core changes when a link is
added: links speak *events* (``fastagent.events``) to the call, wire frames to
the model.

The contract, in the order a call uses it::

    link = RealtimeLink(call, dial)        # call: the ModelEvents below
    await link.connect()                   # dial once; raises if it cannot
    awaited = await link.configure(d)      # d: ev.ModelConfigured
    await link.send_audio(b64)             # caller audio, base64 in the model's format
    awaited = await link.send(d)           # any decision of MODEL_DECISIONS
    ...                                    # frames arrive: the link calls the ModelEvents
    link.forget()                          # its socket failed (then connect again)
    await link.close()

A call resumed from the store is handed a Realtime connection dialled while it
was rebuilt: ``await link.adopt(task)`` takes it (True), or, for a link of
another protocol, closes it and returns False, and the call connects the link.

``configure`` and ``send`` return what the model is expected to answer, as
``(waiting_for, event_id)`` (e.g. ``("response.created", "fa-response-7")``), or
None: the call times the answer and records a ``ModelTimeout`` naming it if it
does not come; the link reports the answer with :meth:`ModelEvents.model_answered`.

Audio has a fast lane besides (see :mod:`fastagent.sockets`): from a socket's data
callback, where nothing may be awaited.  ``writable_now`` / ``audio_frame`` /
``write_now`` send caller audio that way; incoming model audio is offered to
:meth:`ModelEvents.model_audio_now` first and takes the ordered slow lane
(:meth:`ModelEvents.model_audio`) when it is refused.  A link without such a
socket returns False from ``writable_now`` and never calls ``model_audio_now``.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import functools
import logging
import time
from typing import TYPE_CHECKING, Any, Protocol

from fastagent import audio, realtime, sockets
from fastagent import events as ev
from fastagent.service.caller_link import CallerPace
from fastagent.service.recording import Lost, Recorder, now_us

if TYPE_CHECKING:
    from fastagent import vaic

log = logging.getLogger("fastagent.service")

# The decisions a link sends (ModelConfigured goes through configure).
MODEL_DECISIONS: tuple[type[ev.Decision], ...] = (
    ev.TruncateRequested,
    ev.ResponseRequested,
    ev.ItemDeleted,
    ev.FunctionOutputSent,
    ev.MessageInjected,
    ev.ContextAppended,  # GPT-Live only (the core makes none for Realtime)
    ev.ItemHeard,  # GPT-Live only
)

Awaited = realtime.Awaited  # (waiting_for, event_id) the model should answer, or None


class ModelAudio(Protocol):
    """One chunk of model audio: base64 ``delta`` in the model's output format, of
    item ``item_id`` in response ``response_id`` (Realtime's AudioDelta has these)."""

    delta: str
    item_id: str
    response_id: str


class ModelEvents(Protocol):
    """What a model link reports to its call (implemented by CallSession)."""

    # Set while the call may act on model frames; the link's reader waits while it
    # is clear (a resume hands the call to a new caller socket meanwhile).
    handover: asyncio.Event

    async def model_input(self, cls: type[ev.Input], **fields: Any) -> None:
        """The model said something the engine must hear: record it as ``cls``."""

    async def model_audio(self, audio: ModelAudio) -> None:
        """A chunk of audio, on the ordered slow lane."""

    def model_audio_now(self, audio: ModelAudio) -> bool:
        """A chunk of audio from the socket's data callback: True if it was handled
        (recorded and forwarded), False to leave it to the slow lane."""

    def model_audio_writable(self) -> bool:
        """The caller side can take a forwarded chunk at once (the fast lane may run)."""

    def model_sample_bytes(self) -> int:
        """Bytes per sample of the model's audio (bot audio must be whole samples)."""

    def model_answered(self, waiting_for: str) -> None:
        """The model answered what ``configure``/``send`` said it would."""

    async def model_protocol_error(self, message: str) -> None:
        """A frame from the model was rejected (recorded, one log line)."""

    async def model_failed(self, exc: BaseException) -> None:
        """The model's socket failed or closed: the link is done."""


_retiring: set[asyncio.Task[None]] = set()  # closes under way (kept from the GC)


def retire(conn: Any, reader: asyncio.Task[Any] | None) -> None:
    """Stop driving a model connection a newer one replaces, e.g. two dials that
    raced (a resume's, and a configuration that found no connection yet): its
    reader is cancelled, so the call hears nothing more from a session the log
    counts as gone, and it is closed in the background."""
    if reader is not None and reader is not asyncio.current_task():
        reader.cancel()

    async def close() -> None:
        with contextlib.suppress(Exception):
            await conn.close()

    task = asyncio.get_running_loop().create_task(close())
    _retiring.add(task)
    task.add_done_callback(_retiring.discard)


class ModelLink(abc.ABC):
    """One model session of one call (see the module docstring for the contract)."""

    # The server event a new socket must open with, timed like an answer from the
    # moment it is connected (FASTAGENT_MODEL_TIMEOUT_S); "" for none.
    first_event: str = ""

    @abc.abstractmethod
    async def connect(self) -> None:
        """Dial the model once and start reading it; raises if it cannot connect."""

    @property
    @abc.abstractmethod
    def connected(self) -> bool:
        """A socket is open (frames can be sent)."""

    @abc.abstractmethod
    async def configure(self, d: ev.ModelConfigured) -> Awaited:
        """Tell the model what ``d`` says, built from the decision alone: its
        instructions, tools (full specs: name, description, JSON-schema
        parameters), voice and audio formats; then, if ``d.history`` is not empty,
        exactly those items as the conversation so far (a fresh session)."""

    @abc.abstractmethod
    async def send_audio(self, b64: str) -> None:
        """Send caller audio (base64, already in the model's input format)."""

    @abc.abstractmethod
    async def send(self, d: ev.Decision) -> Awaited:
        """Send one decision of :data:`MODEL_DECISIONS`."""

    @abc.abstractmethod
    def writable_now(self) -> bool:
        """Fast lane: a frame may be written now, with no await."""

    @abc.abstractmethod
    def audio_frame(self, b64: str) -> Any:
        """Fast lane: the frame that carries caller audio ``b64`` (built before the
        chunk is recorded, so a failure never records it twice)."""

    @abc.abstractmethod
    def write_now(self, frame: Any) -> None:
        """Fast lane: write a frame from :meth:`audio_frame` (check writable_now)."""

    @abc.abstractmethod
    def forget(self) -> None:
        """The socket failed: drop it with no close handshake (the call connects
        a new one, see :meth:`ModelSide.model_lost`)."""

    async def adopt(self, dialled: asyncio.Task[Any]) -> bool:
        """A call resumed from the store: take a Realtime connection ``dialled``
        while the call was rebuilt (most of a resume's latency is that socket).

        True if the link took it, or tried to (a failed dial is logged and left
        to the first configuration, which dials again with backoff).  False if
        the link speaks another protocol: it has closed that connection, and the
        call connects the link itself.  This default is the latter.
        """
        dialled.cancel()
        with contextlib.suppress(BaseException):
            await (await dialled).close()
        return False

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop reading and close the socket (idempotent; never raises)."""


# ------------------------------------------------------------ the call's side


class ModelSide(Recorder):
    """The call's side of the model link (a mixin of CallSession; fields set up
    there): it implements :class:`ModelEvents`, configures the model (a fresh
    session hears the history its ModelConfigured carries), times the answers
    the link awaits, reconnects a dropped socket, and records model audio on both lanes
    (:meth:`on_bot_audio`, the ordered lane; :meth:`model_audio_now`, the fast
    lane), forwarding to the caller what the engine says is being played."""

    # Closed while a resume hands the call from a stale socket to a new one:
    # model frames wait, so no decision is acted on against the wrong socket.
    handover: asyncio.Event
    timers: dict[str, asyncio.Task[None]]  # model answers awaited
    chunks_out: int
    to_caller: audio.Resampler | None  # where the model's format is not the caller's
    model_strikes: CallerPace  # the model socket's protocol violations (strikes())
    model_broken: str  # why the call failed the model socket on purpose, else ""

    if TYPE_CHECKING:  # the caller side's (CallerSide)
        caller_sock: sockets.CallerProtocol | None
        proto: vaic.VaicProtocol | None

        def vaic_proto(self) -> vaic.VaicProtocol: ...

        async def to_vaic(self, frame: bytes) -> None: ...

        def write_now(self, sock: Any, frame: Any) -> None: ...

    async def configure_model(self, d: ev.ModelConfigured) -> None:
        if not self.model_link.connected:
            try:
                await self.attach_model()  # first configuration of the call: connect now
            except Exception as exc:
                # The core answers with a hangup: no dead air, and the log says why.
                await self.input(ev.ModelError, error_type="connection", message=str(exc)[:200])
                return
        # A fresh model session (a reconnect, a resume elsewhere) hears the call so
        # far: exactly the history the core decided (d.history, in the log).
        awaited = await self.model_link.configure(d)
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

    async def attach_model(self) -> None:
        """Connect the model link (with backoff); it starts reading at once."""
        retries = self.policy.model_retries
        delay = 0.2
        for attempt in range(retries + 1):
            try:
                await self.model_link.connect()
                self.watch_model()
                return
            except Exception as exc:
                log.warning("call %s: model connect failed (%s)", self.call_id, exc)
                if attempt == retries:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    def strikes(self) -> CallerPace:
        """A bucket of protocol violations for one socket: the cap a minute, all of
        it at once at most (FASTAGENT_MAX_VIOLATIONS_PER_MIN)."""
        cap = self.service.config.max_violations_per_min
        return CallerPace(cap / 60.0, burst=float(cap))

    def watch_model(self) -> None:
        """A model socket was just connected (before its reader has run): time its
        first event (``session.created``; a model that never sends it is a
        ModelTimeout), and cap its message rate and violations (each socket starts
        afresh): past either cap the socket is failed (:meth:`break_model`)."""
        first = self.model_link.first_event
        if first:
            self.await_model(first, "")
        self.model_strikes = self.strikes()
        conn = getattr(self.model_link, "conn", None)
        ws = getattr(conn, "_connection", None)  # the SDK's websockets connection
        if isinstance(ws, sockets.ModelConnection):
            rate = self.service.config.model_max_msgs_per_s
            ws.pace = CallerPace(rate)
            ws.on_flood = functools.partial(self.break_model, f"more than {rate:g} messages/s")

    def break_model(self, reason: str) -> None:
        """The model socket misbehaves past a cap: close it and record a ModelError
        (``error_type`` "protocol"), which takes the agent's fallback like any model
        failure; it is not redialled.  No await (called from the socket's data
        callback too)."""
        if self.model_broken or self.closing:
            return
        self.model_broken = reason
        log.warning("call %s: model socket failed: %s", self.call_id, reason)
        for task in self.timers.values():  # nothing more will answer on that socket
            task.cancel()
        self.timers.clear()

        async def fail() -> None:
            await self.model_link.close()
            if not self.closing and not self.engine.view.ended:
                await self.input(
                    ev.ModelError, error_type="protocol", code="policy_violation", message=reason
                )

        self.spawn(fail())

    async def protocol_error(self, side: str, message: str) -> None:
        """Model side: past FASTAGENT_MAX_VIOLATIONS_PER_MIN on one socket nothing
        more is recorded or logged, and the socket is failed (:meth:`break_model`).
        (The caller side counts its own in fastagent.service.vaic_socket.)"""
        if side == "model":
            if self.model_broken:
                return
            if not self.model_strikes.take(time.monotonic()):
                cap = self.service.config.max_violations_per_min
                self.break_model(f"more than {cap} protocol violations a minute")
                return
        await super().protocol_error(side, message)

    async def detach_model(self) -> None:
        await self.model_link.close()

    async def model_lost(self, reason: str) -> None:
        """The model socket dropped: reconnect and seed the new session from the log."""
        self.model_link.forget()
        for task in self.timers.values():  # nothing more will answer on that socket
            task.cancel()
        self.timers.clear()
        await self.input(ev.ConnectionLost, side="model", reason=reason[:200])
        # A model that drops every session it opens (a frame past the size cap, a
        # broken proxy) would be redialled forever: model_retries drops with no
        # response in between, with backoff, then the agent's fallback.
        self.model_drops += 1
        if self.model_drops > self.policy.model_retries:
            message = f"model socket dropped {self.model_drops} times with no response between"
            log.error("call %s: %s; last: %s", self.call_id, message, reason[:200])
            await self.input(ev.ModelError, error_type="connection", message=message)
            return
        if self.model_drops > 1:
            await asyncio.sleep(min(0.2 * 2 ** (self.model_drops - 2), 5.0))
            if self.closing:
                return
        try:
            await self.attach_model()
        except Exception as exc:
            log.error("call %s: model unreachable: %s", self.call_id, exc)
            await self.input(ev.ModelError, error_type="connection", message=str(exc)[:200])
            return
        await self.input(ev.ConnectionRestored, side="model", instance=self.service.config.instance)

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
        if isinstance(exc, Lost):
            await self.close("stream taken over by another instance")
        elif not self.closing and not self.model_broken:  # (failed on purpose: done)
            await self.model_lost(str(exc) or type(exc).__name__)

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
        inp = self.bot_audio_input(e)
        if self.record_now(inp):
            self.write_now(caller, frame)
            self.metrics.relay_to_caller(inp.at)
        return True

    def bot_audio_input(self, e: ModelAudio) -> ev.BotAudio:
        self.chunks_out += 1
        nbytes = audio.b64_decoded_len(e.delta)
        view = self.engine.view
        model_fmt = view.model_format
        return ev.BotAudio(
            call_id=self.call_id,
            seq=view.next_seq,
            at=now_us(),
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


__all__ = [
    "MODEL_DECISIONS",
    "Awaited",
    "ModelAudio",
    "ModelEvents",
    "ModelLink",
    "ModelSide",
]
