"""The GPT-Live model link: the shell side of one call's GPT-Live sessions.

The call runner (:class:`fastagent.service.call.CallSession`) speaks through this
link when the call's model is a GPT-Live model (``CallConfig.model``, ``--model
gpt-live-1.1``): dialling, the first frame of a session, the connection's own
state.  The translation itself is pure and lives in the sans-I/O
:mod:`fastagent.live` (:func:`~fastagent.live.decision_frames`,
:func:`~fastagent.live.configure_frame`, :func:`~fastagent.live.input_of`,
:func:`~fastagent.live.backend_input_of`).  The link reports to its call only
through :class:`fastagent.service.model_link.ModelEvents` (plus the call's
read-only engine view, its id and its task spawner).  The engine core and the
agents are the same as for Realtime; docs/models.md says what differs.

* **Decisions → frames** (:func:`fastagent.live.decision_frames`): ``ModelConfigured``
  is ``session.start`` on a new session (instructions, format, voice, the
  backend's instructions and the FSA's tools as Responses function tools, and the
  conversation so far as ``input``), ``session.update`` of the backend after;
  ``FunctionOutputSent`` is ``response.item.create``; ``ResponseRequested`` is
  ``response.create``; ``ContextAppended`` is the matching ``*.append``;
  ``ItemHeard`` becomes silent ``thinking`` when the caller heard less than the
  model said.  Realtime-only decisions (``TruncateRequested``, ``ItemDeleted``,
  ``MessageInjected``) are never sent: the core does not make them for a GPT-Live
  call, and if one came, nothing would reach the socket.
* **Frames → inputs** (:meth:`LiveLink.on_frame`): parsed by
  :class:`fastagent.live.LiveProtocol`, recorded as the catalogue's inputs.
* **Output stops**: GPT-Live has no event for "done speaking".  The link watches
  the output audio of the current item; ``idle_ms`` without any records
  ``ModelOutputStopped`` (the engine then stops VAIC playback: at the end of the
  item, or after a barge-in, where it records what the caller heard).
* **Continuity**: a dropped GPT-Live socket ends its session.  The next
  connection starts a new session seeded with the conversation so far, or, with
  ``store`` on (``FASTAGENT_LIVE_STORE=1``), forks the stored session and falls
  back to a seeded one if the fork is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from fastagent import events as ev
from fastagent import live, wire
from fastagent.service.model_link import Awaited, ModelEvents, ModelLink, retire

if TYPE_CHECKING:
    from fastagent.core import Engine
    from fastagent.service.process import Service

log = logging.getLogger("fastagent.live")

DEFAULT_IDLE_MS = 300  # output audio quiet this long: the model stopped speaking

# Decisions this link sends (the rest are the caller side's or the shell's).
MODEL_DECISIONS: frozenset[type[ev.Decision]] = frozenset(
    {
        ev.ModelConfigured,
        ev.ResponseRequested,
        ev.FunctionOutputSent,
        ev.ContextAppended,
        ev.ItemHeard,
        ev.MessageInjected,
        ev.TruncateRequested,
        ev.ItemDeleted,
    }
)


class _Chunk(NamedTuple):
    """A GPT-Live audio delta as :class:`fastagent.service.model_link.ModelAudio`:
    GPT-Live's output item stands for both the item and the response."""

    delta: str
    item_id: str
    response_id: str


class LiveCall(ModelEvents, Protocol):
    """What a GPT-Live link uses of its call (CallSession): the
    :class:`~fastagent.service.model_link.ModelEvents` every link reports to,
    plus the call's id, its read-only engine view, the service (settings and the
    shared SDK client, for dialling), its task spawner and the reconnect of a
    refused fork."""

    call_id: str
    closing: bool
    service: Service
    engine: Engine  # read through engine.view only

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[None]: ...

    async def reconnect_model(self, reason: str) -> None: ...


class LiveLink(ModelLink):
    """One call's GPT-Live connection(s), behind the model-link interface
    (:mod:`fastagent.service.model_link`); the call runner swaps it in for its
    Realtime link when the call's model is a GPT-Live model."""

    def __init__(self, session: LiveCall) -> None:
        self.session = session
        self.conn: Any = None
        self.task: asyncio.Task[None] | None = None
        cfg = session.service.config
        self.backend_model: str = getattr(cfg, "live_backend_model", live.DEFAULT_BACKEND_MODEL)
        self.store: bool = bool(getattr(cfg, "live_store", False))
        self.idle_s: float = getattr(cfg, "live_idle_ms", DEFAULT_IDLE_MS) / 1000
        self.proto = live.LiveProtocol(prefix="s1-")
        self.sessions = 0  # connections so far (the protocol's id prefix)
        self.session_id = ""  # the last started session (a fork's source)
        self.fork_of = ""  # the stored session the current connection forks
        self.seeded = 0
        # Frames decided before this connection's session.started: sent, in log
        # order, once it comes (nothing but session.start before it [SDK]).
        self.pending: list[str] = []
        self.last_audio = 0.0  # loop time of the current item's last audio delta
        self.watched = ""  # output item the idle watcher is watching
        self.watcher: asyncio.Task[None] | None = None

    # ----------------------------------------------------------------- dialling

    async def dial(self) -> Any:
        """A new GPT-Live connection (a fork of the stored session when enabled)."""
        service = self.session.service
        client = service.openai_client()
        from fastagent import sockets

        # Uncompressed frames, as for Realtime (realtime_link.connect_realtime).
        options: Any = {"create_connection": sockets.ModelConnection, "compression": None}
        self.fork_of = ""
        if self.store and self.session_id:
            try:
                conn = await client.live.forks.connect(
                    session_id=self.session_id, websocket_connection_options=options
                ).enter()
                self.fork_of = self.session_id
                return conn
            except Exception as exc:  # a new, seeded session instead
                log.warning("call %s: fork refused (%s)", self.session.call_id, exc)
        return await client.live.connect(websocket_connection_options=options).enter()

    @property
    def connected(self) -> bool:
        return self.conn is not None

    async def connect(self) -> None:
        """Dial a new session (or a fork) and start reading it."""
        conn = await self.dial()
        if self.conn is not None:  # (two dials raced: see model_link.retire)
            log.warning(
                "call %s: a second model connection replaces the first", self.session.call_id
            )
            retire(self.conn, self.task)
        # A new socket: a new session with its own protocol state and id prefix.
        self.sessions += 1
        self.proto = live.LiveProtocol(prefix=f"s{self.sessions}-")
        self.proto.model_format = self.session.engine.view.model_format
        self.watched = ""
        self.conn = conn
        self.task = asyncio.create_task(self.read())

    async def read(self) -> None:
        """The ordered lane: every GPT-Live frame, in order (no fast lane yet)."""
        conn = self.conn
        ws = getattr(conn, "_connection", None)
        recv = conn.recv_bytes if ws is None else functools.partial(ws.recv, decode=False)
        handover = self.session.handover
        try:
            while True:
                data = await recv()
                if not handover.is_set():
                    await handover.wait()
                await self.on_frame(data)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self.session.model_failed(exc)

    def forget(self) -> None:
        """The socket failed: drop it without a close handshake (a new one follows)."""
        self.conn = None
        self.task = None

    async def send_frame(self, frame: str) -> None:
        conn = self.conn
        if conn is None:
            return
        try:
            await conn.send_raw(frame)
        except Exception as exc:  # the reader sees the close and reconnects
            log.warning("call %s: model send failed: %s", self.session.call_id, exc)

    async def send_audio(self, b64: str) -> None:
        if self.proto.ready:  # nothing before session.started [SDK]
            await self.send_frame(live.append_audio(b64))

    def writable_now(self) -> bool:
        return False  # GPT-Live audio takes the ordered lane

    def audio_frame(self, b64: str) -> str:
        return live.append_audio(b64)

    def write_now(self, frame: Any) -> None:
        raise RuntimeError("GPT-Live has no fast lane (writable_now is False)")

    async def configure(self, d: ev.ModelConfigured) -> Awaited:
        starting = self.proto.state == "new"
        frame = self._configure(d)
        if starting or self.proto.ready:
            await self.send_frame(frame)
        else:
            self.pending.append(frame)  # a session.update while session.start is unanswered
        return ("session.updated", "")

    async def _send_or_hold(self, frames: list[str]) -> None:
        """Send ``frames`` now if the session has started, else hold them for it."""
        if not self.proto.ready:
            self.pending.extend(frames)
            return
        for frame in frames:
            await self.send_frame(frame)

    # ----------------------------------------------------------------- decisions

    def _configure(self, d: ev.ModelConfigured) -> str:
        """The frame for a ModelConfigured (see :func:`fastagent.live.configure_frame`)."""
        frame, seeded = live.configure_frame(
            self.proto, d, backend_model=self.backend_model, store=self.store, fork_of=self.fork_of
        )
        if seeded is not None:
            self.seeded = seeded
        return frame

    async def send(self, d: ev.Decision) -> Awaited:
        """Carry out one decision of the model side (see :func:`fastagent.live.decision_frames`)."""
        await self._send_or_hold(live.decision_frames(d))
        return live.awaited_answer(d)

    # ----------------------------------------------------------------- frames

    async def on_frame(self, data: bytes) -> None:
        """One server frame (the slow lane): record what it says, in order."""
        s = self.session
        p = self.proto
        e = p.receive(data)
        if s.engine.view.ended:
            return  # the call's log is closed: nothing follows CallEnded
        t = type(e)
        if t is live.OutputAudioDelta:
            await self._transcripts()
            await self._audio(e)  # type: ignore[arg-type]
            return
        if t is live.InputTranscriptDelta:
            if p.turn_started:
                await self._transcripts()
                # VAIC hears of the barge-in when the engine cuts its playback
                # (ItemHeard, once the model's output stopped), not now.
                await s.model_input(
                    ev.SpeechStarted,
                    item_id=p._turn,
                    audio_start_ms=e.start_ms,  # type: ignore[union-attr]
                )
            # GPT-Live has no VAD events: the caller's words so far end where this
            # delta ends; the last one before the bot answers is where the turn's
            # latency is measured from (projections/30_latency.sql).
            await s.model_input(
                ev.SpeechStopped,
                item_id=p._turn,
                audio_end_ms=e.end_ms,  # type: ignore[union-attr]
            )
            return
        if t is live.OutputTranscriptDelta:
            await self._transcripts()
            return
        if t is live.ResponseEvent:
            await self._backend(e)  # type: ignore[arg-type]
            return
        if t is live.DelegationCreated:
            await self._transcripts()
            await self._input(live.input_of(e))
            return
        if t is live.SessionStarted:
            info = e.session  # type: ignore[union-attr]
            self.session_id = info.id
            s.model_answered("session.updated")
            await s.model_input(
                ev.ModelSessionStarted,
                session_id=info.id,
                model=info.model,
                expires_at=info.expires_at,
                seeded=self.seeded,
                forked_from=self.fork_of,
            )
            held, self.pending = self.pending, []
            await self._send_or_hold(held)
            return
        if t is live.SessionUpdated:
            s.model_answered("session.updated")
            return
        if t is live.UsageUpdated:
            await self._input(live.input_of(e))
            return
        if t is live.SessionClosed:
            await self._transcripts()
            await s.model_input(
                ev.ModelSessionClosed,
                session_id=self.session_id,
                reason=e.reason,  # type: ignore[union-attr]
                seconds=e.usage.seconds,  # type: ignore[union-attr]
            )
            return
        if t is live.Error:
            err = e.error  # type: ignore[union-attr]
            if self.fork_of and p.state == "starting":
                # The fork was refused (not stored, not finalized yet): start afresh.
                log.warning("call %s: fork refused: %s", s.call_id, err.message)
                self.fork_of, self.session_id = "", ""
                await s.reconnect_model("fork refused")
                return
            await self._input(live.input_of(e))
            return
        if t is live.Malformed:
            await s.model_protocol_error(e.message)  # type: ignore[union-attr]

    async def _input(self, found: live.Translation | None) -> None:
        if found is not None:
            await self.session.model_input(found[0], **found[1])

    async def _transcripts(self) -> None:
        for f in self.proto.take_transcripts():
            await self.session.model_input(
                ev.Transcript, role=f.role, item_id=f.item_id, text=f.text
            )

    async def _backend(self, e: live.ResponseEvent) -> None:
        s = self.session
        inner = self.proto.backend
        t = type(inner)
        if t is live.BackendCreated:
            s.model_answered("response.created")
        found = live.backend_input_of(inner, self.proto.current_response(e.delegation_id or ""))
        if found is not None:
            await s.model_input(found[0], **found[1])
        elif t is live.Malformed:
            await s.model_protocol_error(f"response.event: {inner.message}")  # type: ignore[union-attr]

    # ----------------------------------------------------------------- audio

    def sample_bytes(self) -> int:
        return self.session.model_sample_bytes()

    async def _audio(self, e: live.OutputAudioDelta) -> None:
        """Hot path (slow lane): close the previous item's output if a new one
        starts, watch this one's, and hand the chunk to the call (recorded, and
        forwarded if it is played: :meth:`ModelEvents.model_audio`)."""
        s = self.session
        err = wire.audio_error(e.delta, self.sample_bytes())
        if err is not None:  # dropped: the caller never hears what is not audio
            await s.model_protocol_error(f"session.output_audio.delta: {err}")
            return
        item = self.proto.output_item
        if self.watched and self.watched != item:
            # The model went on to a new item: the watched one's output stopped.
            old, self.watched = self.watched, ""
            await s.model_input(ev.ModelOutputStopped, item_id=old, idle_ms=0)
        self.last_audio = time.monotonic()
        if self.watched != item:
            self.watched = item
            if self.watcher is None or self.watcher.done():
                self.watcher = s.spawn(self._watch())
        await s.model_audio(_Chunk(e.delta, item, item))

    async def _watch(self) -> None:
        """Record ModelOutputStopped when the watched item's audio goes quiet."""
        s = self.session
        with contextlib.suppress(asyncio.CancelledError):
            while not s.closing and self.watched:
                wait = self.last_audio + self.idle_s - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                    continue
                item, self.watched = self.watched, ""
                self.proto.output_stopped()
                await self._transcripts()
                if not s.engine.view.ended:
                    await s.model_input(
                        ev.ModelOutputStopped, item_id=item, idle_ms=int(self.idle_s * 1000)
                    )

    async def close(self) -> None:
        """``session.close`` (the server finalizes instead of reporting
        ``connection_lost``; nothing more is recorded: billing stops at the close),
        then stop reading and close the socket.  Idempotent; never raises."""
        if self.watcher is not None:
            self.watcher.cancel()
            self.watcher = None
        conn, self.conn = self.conn, None
        if conn is not None and self.proto.state == "active":
            with contextlib.suppress(Exception):
                await conn.send_raw(self.proto.close())
        task, self.task = self.task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()
