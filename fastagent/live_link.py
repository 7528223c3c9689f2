"""The GPT-Live model link: the shell side of one call's GPT-Live sessions.

The call runner (:class:`fastagent.service.CallSession`) hands this link what is
model-specific when the call's model is a GPT-Live model (``CallConfig.model``,
``--model gpt-live-1.1``): dialling, the first frame of a session, translating
the engine's decisions to GPT-Live client events, and GPT-Live server events to
the engine's inputs.  The engine core and the agents are the same as for
Realtime; docs/models.md says what differs.

* **Decisions → frames** (:meth:`LiveLink.frames_for`, pure): ``ModelConfigured``
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
from typing import TYPE_CHECKING, Any

from fastagent import audio, live, wire
from fastagent import events as ev
from fastagent.core import response_event_id
from fastagent.service.model_link import Awaited, ModelLink

if TYPE_CHECKING:
    from fastagent.service.call import CallSession

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


class LiveLink(ModelLink):
    """One call's GPT-Live connection(s), behind the model-link interface
    (:mod:`fastagent.service.model_link`); the call runner swaps it in for its
    Realtime link when the call's model is a GPT-Live model."""

    def __init__(self, session: CallSession) -> None:
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
        self.last_audio = 0.0  # loop time of the current item's last audio delta
        self.watched = ""  # output item the idle watcher is watching
        self.watcher: asyncio.Task[None] | None = None

    # ----------------------------------------------------------------- dialling

    async def dial(self) -> Any:
        """A new GPT-Live connection (a fork of the stored session when enabled)."""
        service = self.session.service
        client = service.openai_client()
        from fastagent import sockets

        options: Any = {"create_connection": sockets.ModelConnection}
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
        await self.send_frame(self._configure(d))
        return ("session.updated", "")

    # ----------------------------------------------------------------- decisions

    def frames_for(self, d: ev.Decision) -> list[str]:
        """The GPT-Live client frames that carry out a decision (pure; [] if none)."""
        t = type(d)
        if t is ev.ResponseRequested:
            return [live.response_create(event_id=response_event_id(d.seq))]
        if t is ev.FunctionOutputSent:
            return [live.function_call_output(d.tool_call_id, d.output)]  # type: ignore[attr-defined]
        if t is ev.ContextAppended:
            return [live.append_context(d.kind, d.content)]  # type: ignore[attr-defined]
        if t is ev.ItemHeard and d.heard_ms + 200 < d.sent_ms:  # type: ignore[attr-defined]
            heard, sent = d.heard_ms / 1000, d.sent_ms / 1000  # type: ignore[attr-defined]
            return [
                live.append_context(
                    "thinking",
                    f"The caller talked over you: they heard only the first {heard:.1f} s "
                    f"of the {sent:.1f} s you had said. Repeat what matters if needed.",
                )
            ]
        return []

    def _configure(self, d: ev.ModelConfigured) -> str:
        """The frame for a ModelConfigured, built from the decision alone (and the
        link's settings: backend model, store): ``session.start`` on a new session
        (``model`` and ``frontend_instructions`` for the voice, ``instructions`` and ``tools``
        for the backend), ``session.update`` of the backend after."""
        delegation = live.responses_delegation(
            model=self.backend_model, instructions=d.instructions, tools=d.tools
        )
        if self.proto.state != "new":
            return live.session_update(delegation)
        event_id = f"fa-start-{d.seq}"
        if self.fork_of:
            self.seeded = 0
            return self.proto.start(live.fork_start(event_id=event_id))
        history = live.initial_items([(h.role, h.text) for h in d.history])
        self.seeded = len(history)
        return self.proto.start(
            live.session_start(
                model=d.model,
                instructions=d.frontend_instructions,
                model_format=d.output_format,
                voice=d.voice or None,
                delegation=delegation,
                history=history,
                store=self.store,
                event_id=event_id,
            )
        )

    async def send(self, d: ev.Decision) -> Awaited:
        """Carry out one decision of the model side (see :meth:`frames_for`)."""
        for frame in self.frames_for(d):
            await self.send_frame(frame)
        if type(d) is ev.ResponseRequested:
            return ("response.created", response_event_id(d.seq))
        return None

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
                await s.input(
                    ev.SpeechStarted,
                    item_id=p._turn,
                    audio_start_ms=e.start_ms,  # type: ignore[union-attr]
                )
            # GPT-Live has no VAD events: the caller's words so far end where this
            # delta ends; the last one before the bot answers is where the turn's
            # latency is measured from (projections/30_latency.sql).
            await s.input(
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
            dl = e.delegation  # type: ignore[union-attr]
            await self._transcripts()
            await s.input(
                ev.DelegationStarted,
                delegation_id=dl.id,
                target=dl.target,
                response_id=dl.response_id or "",
                offset_ms=e.offset_ms,  # type: ignore[union-attr]
            )
            return
        if t is live.SessionStarted:
            info = e.session  # type: ignore[union-attr]
            self.session_id = info.id
            s.model_answered("session.updated")
            await s.input(
                ev.ModelSessionStarted,
                session_id=info.id,
                model=info.model,
                expires_at=info.expires_at,
                seeded=self.seeded,
                forked_from=self.fork_of,
            )
            return
        if t is live.SessionUpdated:
            s.model_answered("session.updated")
            return
        if t is live.UsageUpdated:
            cw = e.context_window  # type: ignore[union-attr]
            await s.input(
                ev.ModelUsage,
                seconds=e.usage.seconds,  # type: ignore[union-attr]
                context_ratio=cw.usage_ratio if cw else 0.0,
            )
            return
        if t is live.SessionClosed:
            await self._transcripts()
            await s.input(
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
            await s.input(
                ev.ModelError,
                error_type=err.type or "",
                code=err.code or "",
                message=(err.message or "")[:500],
                event_id=err.client_event_id or e.client_event_id or "",  # type: ignore[union-attr]
            )
            return
        if t is live.Malformed:
            await s.model_protocol_error(e.message)  # type: ignore[union-attr]

    async def _transcripts(self) -> None:
        for f in self.proto.take_transcripts():
            await self.session.input(ev.Transcript, role=f.role, item_id=f.item_id, text=f.text)

    async def _backend(self, e: live.ResponseEvent) -> None:
        s = self.session
        inner = self.proto.backend
        t = type(inner)
        if t is live.BackendCreated:
            s.model_answered("response.created")
            await s.input(ev.ResponseStarted, response_id=inner.response.id)  # type: ignore[union-attr]
        elif t is live.BackendItemDone and inner.item.type == "function_call":  # type: ignore[union-attr]
            item = inner.item  # type: ignore[union-attr]
            await s.input(
                ev.FunctionCallRequested,
                response_id=self.proto.current_response(e.delegation_id or ""),
                item_id=item.id or "",
                tool_call_id=item.call_id or "",
                name=item.name or "",
                arguments=item.arguments or "",
            )
        elif isinstance(inner, live.BACKEND_DONE):
            r = inner.response
            status = (
                r.status
                or {
                    live.BackendCompleted: "completed",
                    live.BackendFailed: "failed",
                    live.BackendIncomplete: "incomplete",
                }[type(inner)]
            )
            await s.input(
                ev.ResponseDone,
                response_id=r.id,
                status=status,
                reason=r.reason,
                usage=r.usage.to_event_usage() if r.usage else ev.Usage(),
                error_code=(r.error.code or "") if r.error else "",
                error_message=((r.error.message or "") if r.error else "")[:500],
            )
        elif t is live.Malformed:
            await s.model_protocol_error(f"response.event: {inner.message}")  # type: ignore[union-attr]

    # ----------------------------------------------------------------- audio

    def sample_bytes(self) -> int:
        return 1 if self.session.engine.view.model_format == live.PCMU else 2

    async def _audio(self, e: live.OutputAudioDelta) -> None:
        """Hot path (slow lane): record the boundary; forward the base64 if it is played."""
        s = self.session
        err = wire.audio_error(e.delta, self.sample_bytes())
        if err is not None:  # dropped: the caller never hears what is not audio
            await s.model_protocol_error(f"session.output_audio.delta: {err}")
            return
        item = self.proto.output_item
        if self.watched and self.watched != item:
            # The model went on to a new item: the watched one's output stopped.
            old, self.watched = self.watched, ""
            await s.input(ev.ModelOutputStopped, item_id=old, idle_ms=0)
        self.last_audio = time.monotonic()
        if self.watched != item:
            self.watched = item
            if self.watcher is None or self.watcher.done():
                self.watcher = asyncio.create_task(s._guard(self._watch()))
        s.chunks_out += 1
        nbytes = wire.b64_nbytes(e.delta)
        fmt = s.engine.view.model_format
        decisions = s.record(
            ev.BotAudio(
                call_id=s.call_id,
                seq=s.engine.view.next_seq,
                at=time.time_ns() // 1000,
                response_id=item,
                item_id=item,
                chunk=s.chunks_out,
                nbytes=nbytes,
                duration_us=audio.duration_us(nbytes, fmt),
                fmt=fmt,
            )
        )
        if decisions:
            await s.execute(decisions)
        if not s.engine.view.plays(item):
            return  # not ours to play (cut off, or the call is ending)
        b64 = e.delta
        if s.to_caller is not None:
            b64 = s.to_caller.process_b64(b64)
        await s.to_vaic(s.vaic_proto().play_chunk(b64))

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
                    await s.input(
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
