"""The Realtime model link: the OpenAI Realtime API behind :class:`ModelLink`.

Two parts (the pure translation both lanes use lives in the sans-I/O protocol
module: :func:`fastagent.realtime.input_of`, :func:`~fastagent.realtime.decision_frame`,
:func:`~fastagent.realtime.configure_frames`, :func:`~fastagent.realtime.answer_of`):

* :class:`RealtimeLink`: one Realtime socket of one call (the official SDK's
  connection over :class:`fastagent.sockets.ModelConnection`), its ordered reader
  and its audio fast lane;
* :func:`connect_realtime`: the network I/O of opening a connection (moved here
  from the sans-I/O :mod:`fastagent.realtime`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from fastagent import events as ev
from fastagent import realtime
from fastagent.realtime import answer_of, configure_frames, decision_frame, input_of
from fastagent.service.model_link import Awaited, ModelEvents, ModelLink, retire

if TYPE_CHECKING:
    from openai.resources.realtime.realtime import AsyncRealtimeConnection

    from fastagent.service.process import Service

log = logging.getLogger("fastagent.service")

# How long a frame waits for a (re)connect under way before it is dropped.  Not a
# setting: a reconnect either succeeds in well under this or ends in a recorded
# ModelError; a dropped frame is caller audio or a decision already in the log,
# which the new session is told (seeded from the log).  It only keeps the
# sender (often the caller's reader) from being held.
READY_WAIT_S = 5.0

# ------------------------------------------------------------------ the link


def _raw_socket(conn: Any) -> Any:
    """The SDK connection's websockets socket when sending on it directly is safe
    (no reconnect in progress, nothing queued), else None."""
    ws = getattr(conn, "_connection", None)
    if ws is None or getattr(conn, "_is_reconnecting", False) or getattr(conn, "_send_queue", None):
        return None
    return ws


class RealtimeLink(ModelLink):
    """One call's Realtime session.  ``dial`` opens a connection (see
    :func:`connect_realtime`); ``events`` is the call."""

    first_event = "session.created"  # every Realtime socket opens with it

    def __init__(
        self, events: ModelEvents, dial: Callable[[], Awaitable[Any]], call_id: str = ""
    ) -> None:
        self.events = events
        self.dial = dial
        self.call_id = call_id
        self.conn: Any = None
        self.sock: Any = None  # its ModelConnection, when the fast lane is available
        self.busy = False  # the reader is handling a frame (the slow lane)
        self.task: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()

    @property
    def connected(self) -> bool:
        return self.ready.is_set()

    async def connect(self) -> None:
        self.use(await self.dial())

    async def adopt(self, dialled: asyncio.Task[Any]) -> bool:
        """Drive the Realtime connection ``dialled`` during a resume (see
        :meth:`ModelLink.adopt`); a failed dial is logged and left to the first
        configuration."""
        try:
            conn = await dialled
        except Exception as exc:  # configuring the model dials again, with backoff
            log.warning("call %s: model connect failed (%s)", self.call_id, exc)
        else:
            self.use(conn)
        return True

    def use(self, conn: Any) -> None:
        """Start driving a freshly connected Realtime socket (one still driven is
        retired first: see :func:`~fastagent.service.model_link.retire`)."""
        from fastagent import sockets

        if self.conn is not None and self.conn is not conn:
            log.warning("call %s: a second model connection replaces the first", self.call_id)
            self._drop_sock()
            retire(self.conn, self.task)
        self.conn = conn
        ws = getattr(conn, "_connection", None)
        self.sock = ws if isinstance(ws, sockets.ModelConnection) else None
        if self.sock is not None:
            self.sock.on_text = self.frame_now
        self.ready.set()
        self.task = asyncio.create_task(self.read())

    async def configure(self, d: ev.ModelConfigured) -> Awaited:
        frames = configure_frames(d)
        await self.send_frame(frames[0])
        for item in frames[1:]:
            await self.send_frame(item)
        return ("session.updated", "")

    async def send_audio(self, b64: str) -> None:
        await self.send_frame(realtime.append_audio(b64))

    async def send(self, d: ev.Decision) -> Awaited:
        frame, awaited = decision_frame(d)
        await self.send_frame(frame)
        return awaited

    async def send_frame(self, frame: str) -> None:
        if not self.ready.is_set():
            try:  # a (re)connect is under way; never hold the caller's reader for long
                async with asyncio.timeout(READY_WAIT_S):
                    await self.ready.wait()
            except TimeoutError:
                log.warning("call %s: model not connected; frame dropped", self.call_id)
                return
        conn = self.conn
        if conn is None:
            return
        try:
            ws = _raw_socket(conn)
            if ws is not None:
                await ws.send(frame)  # nothing queued in the SDK: straight to the socket
            else:
                await conn.send_raw(frame)
        except Exception as exc:  # the reader sees the close and reconnects
            log.warning("call %s: model send failed: %s", self.call_id, exc)

    # ---------------------------------------------------------------- fast lane

    def writable_now(self) -> bool:
        sock = self.sock
        return sock is not None and self.ready.is_set() and sock.can_write_now()

    def audio_frame(self, b64: str) -> str:
        return realtime.append_audio(b64)

    def write_now(self, frame: Any) -> None:
        sock = self.sock
        try:
            sock.write_now(frame)
        except Exception as exc:
            log.warning("call %s: fast-lane write failed: %s", self.call_id, exc)
            sock.on_text = None

    def frame_now(self, data: bytes) -> bool:
        """From the model socket's data callback: a chunk of audio is offered to the
        call at once.  Anything else, or anything while the reader holds earlier
        frames, is left to :meth:`read`."""
        sock = self.sock
        if self.busy or sock is None or sock.backlog:
            return False
        events = self.events
        if not events.model_audio_writable():
            return False
        e = realtime.audio_delta_now(data, events.model_sample_bytes())
        if e is None:  # not audio, or audio to look at closer: the slow lane decides
            return False
        return events.model_audio_now(e)  # type: ignore[arg-type]

    # ---------------------------------------------------------------- slow lane

    async def read(self) -> None:
        """The ordered lane: every frame the fast lane left, in order."""
        conn = self.conn
        ws = getattr(conn, "_connection", None)
        sock = self.sock
        # The SDK's recv_bytes adds only bookkeeping for its own reconnects, which
        # the service does not use: read the websockets connection itself.
        recv = conn.recv_bytes if ws is None else functools.partial(ws.recv, decode=False)
        handover = self.events.handover
        try:
            while True:
                self.busy = False
                data = await recv()
                self.busy = True
                if sock is not None:
                    sock.backlog -= 1
                if not handover.is_set():
                    await handover.wait()
                await self.on_frame(data)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self.events.model_failed(exc)

    async def on_frame(self, data: bytes) -> None:
        events = self.events
        e = realtime.parse_server_event(data)
        t = type(e)
        if t is realtime.AudioDelta:  # hot path
            await events.model_audio(e)  # type: ignore[arg-type]
            return
        answer = answer_of(e)
        if answer is not None:
            events.model_answered(answer)
        found = input_of(e)
        if found is not None:
            await events.model_input(found[0], **found[1])
        elif t is realtime.Malformed:
            await events.model_protocol_error(e.message)  # type: ignore[union-attr]

    # ---------------------------------------------------------------- closing

    def forget(self) -> None:
        """The socket failed: drop it without a close handshake (a new one follows)."""
        self.ready.clear()
        self.conn = None
        self.task = None
        self._drop_sock()

    def _drop_sock(self) -> None:
        sock, self.sock = self.sock, None
        if sock is not None:
            sock.on_text = None

    async def close(self) -> None:
        task, self.task = self.task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        conn, self.conn = self.conn, None
        self._drop_sock()
        self.ready.clear()
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()


# ------------------------------------------------------------------ connection


async def dial_model(service: Service, model: str) -> Any:
    """A Realtime connection for ``model`` (the call's recorded ``CallConfig.model``,
    never the instance's FASTAGENT_MODEL) on the service's shared SDK client."""
    from fastagent import sockets

    return await connect_realtime(
        model=model,
        client=service.openai_client(),
        connection_class=sockets.ModelConnection,
        max_frame_bytes=service.config.model_max_frame_bytes,
    )


async def connect_realtime(
    url: str | None = None,
    api_key: str | None = None,
    model: str | None = None,
    *,
    client: Any = None,
    connection_class: type | None = None,
    max_frame_bytes: int | None = None,
) -> AsyncRealtimeConnection:
    """Open a GA Realtime connection with the official SDK.

    ``url`` (else ``FASTAGENT_REALTIME_URL``, e.g. ``ws://127.0.0.1:PORT/v1``)
    overrides the endpoint; ``api_key`` defaults to ``OPENAI_API_KEY``; ``model``
    to ``FASTAGENT_MODEL`` or ``gpt-realtime-2``.  Raw frames: ``await
    conn.send_raw(text)`` and ``await conn.recv_bytes()``; close with
    ``await conn.close()``.  Pass ``client`` (an ``AsyncOpenAI``) to reuse one
    across calls: building a client loads TLS settings, about 20 ms of CPU.
    ``connection_class`` is the websockets ``ClientConnection`` subclass to use
    (the service's :class:`fastagent.sockets.ModelConnection`).  A frame larger
    than ``max_frame_bytes`` closes the socket (1009), which the service handles
    as a dropped model socket.  Raises RealtimeConfigError (one line) for missing
    or bad settings.
    """
    from openai import AsyncOpenAI

    options: Any = {"create_connection": connection_class} if connection_class else {}
    if max_frame_bytes is not None:
        options["max_size"] = max_frame_bytes
    # No permessage-deflate: base64 audio hardly compresses, zlib would cost CPU and
    # latency on every frame both ways, and the audio fast lane (fastagent.sockets)
    # reads and writes only uncompressed frames.  (With a finite max_size the SDK
    # leaves websockets' default, which offers it.)
    options["compression"] = None

    if client is not None:
        model = model or os.environ.get("FASTAGENT_MODEL") or realtime.DEFAULT_MODEL
        return await client.realtime.connect(
            model=model, websocket_connection_options=options
        ).enter()
    url = url or os.environ.get("FASTAGENT_REALTIME_URL") or None
    api_key = api_key or os.environ.get("OPENAI_API_KEY")
    if not api_key:
        raise realtime.RealtimeConfigError("OPENAI_API_KEY is not set")
    model = model or os.environ.get("FASTAGENT_MODEL") or realtime.DEFAULT_MODEL
    if url is not None and not url.startswith(("ws://", "wss://")):
        raise realtime.RealtimeConfigError(
            f"Realtime URL must start with ws:// or wss://, got {url!r}"
        )
    client = AsyncOpenAI(api_key=api_key, websocket_base_url=url)
    return await client.realtime.connect(model=model, websocket_connection_options=options).enter()


__all__ = [
    "RealtimeLink",
    "dial_model",
    "answer_of",
    "configure_frames",
    "connect_realtime",
    "decision_frame",
    "input_of",
]
