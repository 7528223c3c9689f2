"""The caller link: the call's VAIC side.

* :class:`CallerSide` - the part of a :class:`~fastagent.service.call.CallSession`
  that talks to the caller: the socket and its protocol object, the frames sent
  (:meth:`CallerSide.to_vaic`; what they say is the executor's, from
  :func:`fastagent.vaic.decision_frame`), and caller audio on both lanes
  (:meth:`CallerSide.on_caller_audio`, the ordered lane;
  :meth:`CallerSide.caller_audio_now`, the fast lane from the socket's data
  callback), recorded as CallerAudio boundaries and forwarded untouched;
* :class:`CallerPace` - liveness and message rate of one socket;
* :func:`_abort` - drop a socket at once.

What a parsed VAIC message means to the engine is :func:`fastagent.vaic.inputs_of`
(the socket's reader, :mod:`fastagent.service.vaic_socket`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from fastapi import WebSocket

from fastagent import audio, sockets, vaic
from fastagent import events as ev
from fastagent.service.recording import Recorder, now_us

log = logging.getLogger("fastagent.service")


class CallerPace:
    """Liveness and message rate of one socket, caller's or model's (no clock of
    its own: the caller passes ``time.monotonic()``).  ``seen`` is when its last
    frame came; ``take`` spends ``cost`` tokens (one per message) of a bucket
    refilled at ``rate`` per second and holding ``burst`` (default: two seconds'
    worth), False when it holds fewer (nothing spent then).  The same bucket caps
    protocol violations per socket (rate = cap / 60, burst = cap)."""

    __slots__ = ("burst", "rate", "seen", "tokens")

    def __init__(self, rate: float, burst: float | None = None) -> None:
        self.rate = rate
        self.burst = max(2.0 * rate if burst is None else burst, 1.0)
        self.tokens = self.burst
        self.seen = time.monotonic()

    def take(self, now: float, cost: float = 1.0) -> bool:
        tokens = min(self.burst, self.tokens + (now - self.seen) * self.rate)
        self.seen = now
        if tokens < cost or tokens < 1.0:
            self.tokens = tokens
            return False
        self.tokens = tokens - cost
        return True

    def silent_for(self) -> float:
        return time.monotonic() - self.seen


def _abort(ws: WebSocket | None, sock: sockets.CallerProtocol | None) -> None:
    """Drop a caller's TCP connection at once (no close handshake with a peer that
    may never answer); its reader then sees the disconnect.  No socket: nothing."""
    if sock is not None:
        sock.transport.abort()
    elif ws is not None:
        asyncio.get_running_loop().create_task(ws.close(code=1001))


class CallerSide(Recorder):
    """The call's caller socket (a mixin of CallSession; fields set up there)."""

    caller: WebSocket | None
    caller_sock: sockets.CallerProtocol | None  # its fast lane, if served so
    caller_pace: CallerPace | None  # its liveness and message rate
    proto: vaic.VaicProtocol | None
    chunks_in: int
    to_model: audio.Resampler | None  # where the caller's format is not the model's

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
            at=now_us(),
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

    def write_now(self, sock: Any, frame: Any) -> None:
        """The fast lane's write of a frame already recorded: a failure closes the
        call's socket the way the slow lane would, never records it again."""
        try:
            sock.write_now(frame)
        except Exception as exc:
            log.warning("call %s: fast-lane write failed: %s", self.call_id, exc)
            sock.on_text = None
