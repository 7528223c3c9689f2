"""The two WebSocket connections of a call, with a synchronous lane for audio.

Each audio frame used to cross the event loop as a task switch: the socket's data
callback queued it, a reader task woke, parsed it, recorded it and awaited a send.
That hand-over cost about as much CPU as everything else the bridge does per frame
(bench/bench_bridge.py: the bare relay itself runs ~30% cheaper with callbacks).

So each connection class takes an ``on_text`` hook, called from the data callback
with every complete text frame. The hook handles an audio frame on the spot (record
its boundary, write the forwarded frame with ``write_now``) and returns True;
anything else — control messages, a frame arriving while the slow lane still holds
earlier ones — returns False and takes the usual queue to the reader task, so the
order of frames is never changed.  The hooks live in :mod:`fastagent.service.call` and
:mod:`fastagent.service.vaic_socket`.

* :class:`CallerProtocol`: uvicorn's websockets-sansio protocol for the VAIC socket
  (``uvicorn.run(..., ws=CallerProtocol)``);
* :class:`ModelConnection`: the websockets client connection under the openai SDK's
  Realtime connection (``websocket_connection_options={"create_connection": ...}``).

Both keep their parent's behaviour when no hook is set.

Reading: while a hook is set, each connection also splits the bytes it receives
into whole frames itself (:func:`frame_at`) instead of running websockets' parser
on every one (~3 µs of Python per frame, as much as the rest of the hook's work).
A whole unfragmented ASCII text frame of at most :data:`FAST_READ_MAX` bytes (and
at most the connection's ``max_size``) goes to the hook at once; every other frame
is handed to the library whole, so its parser always starts at a frame boundary
and keeps every rule (control frames, close, size limits, UTF-8) and every error
it raises.  Anything unusual — a fragment, a binary or reserved frame, RSV bits, a
wrong mask bit, a larger frame — hands the rest of the stream to the library for
good; so does the library failing the connection on a frame (then, like its own
parser, nothing after that frame is read).
"""

from __future__ import annotations

import logging
import os
import struct
import time
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.asyncio.client import ClientConnection
from websockets.frames import Frame, Opcode
from websockets.protocol import Protocol, State

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover  (websockets without its C extension)
    from websockets.utils import apply_mask

log = logging.getLogger("fastagent.sockets")

TextHook = Callable[[bytes], bool]
_DATA = (Opcode.TEXT, Opcode.BINARY, Opcode.CONT)

# Above this many bytes waiting in a socket's write buffer, frames take the
# awaited path, which applies the library's flow control.
WRITE_BUFFER_LIMIT = 64 * 1024

_LEN16 = struct.Struct("!BBH")
_LEN64 = struct.Struct("!BBQ")


def text_frame_head(n: int, masked: bool) -> bytes:
    """The header of one whole (FIN) text frame with an ``n``-byte payload, RFC 6455
    section 5.2: what websockets' ``Frame.serialize`` writes before the masking key."""
    m = 0x80 if masked else 0
    if n < 126:
        return bytes((0x81, m | n))
    if n < 65536:
        return _LEN16.pack(0x81, m | 126, n)
    return _LEN64.pack(0x81, m | 127, n)


class MaskKeys:
    """Masking keys for a client's frames (RFC 6455 section 5.3: unpredictable, from a
    strong source of entropy): ``os.urandom``, read 1,024 keys at a time instead of
    one system call per frame as websockets does."""

    __slots__ = ("_buf", "_pos")

    def __init__(self) -> None:
        self._buf = b""
        self._pos = 0

    def next(self) -> bytes:
        pos = self._pos
        if pos >= len(self._buf):
            self._buf, pos = os.urandom(4096), 0
        self._pos = pos + 4
        return self._buf[pos : pos + 4]


FAST_READ_MAX = 64 * 1024
"""Largest frame (payload bytes) the fast reader splits off itself; a larger one
ends it (the library's bytearray reader is the one for big frames, and no partial
frame bigger than this is ever copied here)."""

# frame_at's answers besides a frame's end
NEED_MORE = 0  # the frame is not complete yet
UNUSUAL = -1  # not a frame the fast reader handles: the library reads from here on


def frame_at(buf: bytes, pos: int, masked: bool, limit: int = FAST_READ_MAX) -> tuple[int, int]:
    """Where the frame starting at ``buf[pos]`` ends: ``(end, payload_start)``.

    RFC 6455 section 5.2.  Handled: a whole text frame (FIN, opcode 1) of at most
    ``limit`` payload bytes (at most :data:`FAST_READ_MAX`: the caller passes the
    connection's ``max_size`` when smaller, so that a frame the library would refuse
    (1009) is the library's to refuse) and control frames (FIN, opcode 8-10, at
    most 125 bytes), no RSV bit, masked exactly when ``masked`` (a client's frames
    are, a server's are not: section 5.1).  ``end`` is :data:`UNUSUAL` for anything
    else, and :data:`NEED_MORE` when the frame is incomplete; then the second value
    is where the frame will end once its header is complete (else 0), so that the
    bytes before it can be gathered without looking again.  Never raises.
    """
    n_buf = len(buf)
    if n_buf - pos < 2:
        return NEED_MORE, 0
    b0 = buf[pos]
    b1 = buf[pos + 1]
    if (b1 & 0x80) != (0x80 if masked else 0):
        return UNUSUAL, 0
    n = b1 & 0x7F
    if b0 == 0x81:  # FIN, no RSV, text
        head = 2
        if n == 126:
            if n_buf - pos < 4:
                return NEED_MORE, 0
            n = (buf[pos + 2] << 8) | buf[pos + 3]
            head = 4
        elif n == 127:
            return UNUSUAL, 0  # (64 KiB and more: over FAST_READ_MAX)
        if n > limit:
            return UNUSUAL, 0
    elif 0x88 <= b0 <= 0x8A and n <= 125:  # FIN, no RSV, close / ping / pong
        head = 2
    else:
        return UNUSUAL, 0
    start = pos + head + (4 if masked else 0)
    end = start + n
    if end > n_buf:
        return NEED_MORE, end
    return end, start


def _limit(protocol: Protocol) -> int:
    """The largest text frame the fast reader may take itself on this connection."""
    max_size = protocol.max_size
    return FAST_READ_MAX if max_size is None else min(FAST_READ_MAX, max_size)


def _at_frame_start(protocol: Protocol) -> bool:
    """The library's parser is waiting for the first byte of a frame (nothing of
    a frame read and nothing buffered): the fast reader may split from here."""
    if protocol.reader.buffer or protocol.state is not State.OPEN:
        return False
    gen: Any = protocol.parser
    while getattr(gen, "gi_yieldfrom", None) is not None:
        gen = gen.gi_yieldfrom
    return getattr(getattr(gen, "gi_code", None), "co_name", "") == "at_eof"


def _may_split(protocol: Protocol) -> bool:
    return (
        not protocol.extensions
        and not protocol.expect_continuation_frame
        and _at_frame_start(protocol)
    )


def _plain(protocol: Protocol) -> bool:
    """The websockets protocol object may be bypassed for one whole text frame: open,
    no extension (compression) to apply, no fragmented message under way, nothing
    queued before it, no debug log of frames to keep."""
    return (
        protocol.state is State.OPEN
        and not protocol.extensions
        and not protocol.expect_continuation_frame
        and not protocol.writes
        and not protocol.debug
    )


class _FastReader:
    """The fast reader both connection classes share (see the module docstring).

    ``data_received`` splits whole frames off the bytes (:func:`frame_at`), offers
    each text frame to the subclass's :meth:`_take`, and hands every other frame,
    whole, to the library (:meth:`_library_read`: the parent class's own
    ``data_received``).  Anything unusual, a hook gone, or a failure of the library
    on a handed-over frame hands it the rest of the stream for good.
    """

    on_text: TextHook | None = None
    _MASKED: bool = False  # the peer's frames are masked (a client's are: RFC 6455 5.1)
    # The bytes of a frame under way (None: the library reads every byte), how many
    # of them that frame needs (0: its header is not complete), the largest text
    # frame taken here (_limit), whether it gave up for good, and whether the frame
    # being handed over was offered to the hook / counted against a pace already.
    _split: bytearray | None = None
    _need: int = 0
    _limit: int = FAST_READ_MAX
    _unsplit: bool = False
    _offered: bool = False
    _paced: bool = False

    def _library(self) -> Protocol:
        raise NotImplementedError

    def _library_read(self, data: bytes) -> None:
        raise NotImplementedError

    def _may_start(self) -> bool:
        return True

    def _stopped(self) -> bool:
        return False

    def _take(self, buf: bytes, start: int, end: int) -> bool | None:
        """The text frame ``buf[start:end]`` (payload, still masked if the peer's
        frames are): True if the hook took it; False to hand it to the library
        (with ``_offered`` / ``_paced`` set for what was done to it already); None
        to read nothing more (the connection was dropped)."""
        raise NotImplementedError

    def data_received(self, data: bytes) -> None:
        part = self._split
        protocol = self._library()
        if part is None:
            if (
                self._unsplit
                or self.on_text is None
                or not self._may_start()
                or not _may_split(protocol)
            ):
                self._library_read(data)
                return
            part = self._split = bytearray()
            self._limit = _limit(protocol)
        buf = _gather(self, part, data)
        if buf is None:
            return
        pos, n = 0, len(buf)
        masked, limit = self._MASKED, self._limit
        while pos < n:
            end, start = frame_at(buf, pos, masked, limit)
            if end == NEED_MORE:
                _keep(self, part, buf, pos, start)
                return
            if end == UNUSUAL or self.on_text is None or self._stopped():
                self._split, self._unsplit = None, True  # the library reads the rest
                self._library_read(buf[pos:])
                return
            if buf[pos] == 0x81 and protocol.state is State.OPEN:
                taken = self._take(buf, start, end)
                if taken is None:
                    self._split = None
                    return
                if taken:
                    pos = end
                    continue
            try:
                self._library_read(buf[pos:end])
            finally:
                self._offered = self._paced = False
            if protocol.parser_exc is not None:
                # The library failed the connection on that frame (close sent, the app
                # told once): like its own parser, it reads nothing after it.
                self._split, self._unsplit = None, True
                return
            pos = end


class CallerProtocol(_FastReader, WebSocketsSansIOProtocol):
    """uvicorn's VAIC-side protocol, plus the ``on_text`` hook, the fast reader
    and a direct write."""

    _MASKED = True

    def _library(self) -> Protocol:
        return self.conn

    def _library_read(self, data: bytes) -> None:
        WebSocketsSansIOProtocol.data_received(self, data)

    def _may_start(self) -> bool:
        return self.handshake_complete

    def _take(self, buf: bytes, start: int, end: int) -> bool | None:
        hook = self.on_text
        if self.close_sent or hook is None:
            return False
        text = apply_mask(buf[start:end], buf[start - 4 : start])
        if not text.isascii():  # the library checks its UTF-8, then offers it
            return False
        if _run(self, hook, text):
            return True
        self._offered = True
        return False

    def handle_text(self, event: Frame) -> None:
        hook = self.on_text
        if (
            hook is not None
            and not self._offered
            and event.fin
            and not self.close_sent
            and _run(self, hook, event.data)
        ):
            return
        super().handle_text(event)

    def send_receive_event_to_app(self) -> None:
        if self.curr_msg_data_type == "text" and not self.close_sent:
            data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
            try:
                data.decode()
            except UnicodeDecodeError as exc:
                # RFC 6455: invalid UTF-8 in a text message fails the connection
                # (1007), as uvicorn does, but with one line instead of its traceback;
                # the service then takes the dropped-socket path.
                self.frames = []
                log.warning(
                    "VAIC text frame with invalid UTF-8 at byte %d; closing (1007)", exc.start
                )
                if self.conn.state is State.OPEN:  # (else it is closing already)
                    self.conn.send_close(1007)
                    self.handle_parser_exception()
                return
        super().send_receive_event_to_app()

    async def send(self, message: Any) -> None:
        await super().send(message)
        if (
            message["type"] == "websocket.http.response.body"
            and not message.get("more_body", False)
            and self.close_sent
        ):
            # A refused upgrade (401/503) is a complete answer to the handshake:
            # without this uvicorn logs "ASGI callable returned without completing
            # handshake" at ERROR for every refusal, and tries to send a 500 after it.
            self.handshake_complete = True

    def can_write_now(self) -> bool:
        """Open, and not holding back writes: a frame may be written at once."""
        transport = self.transport
        return (
            self.handshake_complete
            and not self.close_sent
            and not self.disconnected
            and self.writable.is_set()  # uvicorn's own flow control: awaited sends wait
            and not transport.is_closing()
            and transport.get_write_buffer_size() <= WRITE_BUFFER_LIMIT
        )

    def write_now(self, data: bytes) -> None:
        """Write one text frame now (check :meth:`can_write_now` first).

        The frame's bytes are written directly when the protocol object allows
        (:func:`_plain`): the same bytes as ``conn.send_text`` would queue, without
        its ``Frame`` object, checks and buffer list (hot path: every forwarded chunk).
        """
        conn = self.conn
        if _plain(conn):
            self.transport.write(text_frame_head(len(data), False) + data)
            return
        conn.send_text(data)
        self.transport.write(b"".join(conn.data_to_send()))

    def backlog(self) -> int:
        """Messages queued for the app and not read yet."""
        return self.queue.qsize()


class CallerHttp(HttpToolsProtocol):
    """uvicorn's HTTP protocol, plus a deadline on each request's headers.

    uvicorn has none: a connection that sends nothing, or trickles its request
    line and headers, is held for good (slowloris), before any WebSocket exists
    for the service to count or time out.  Here each request must complete its
    headers within ``timeout_keep_alive`` seconds of the connection (or of its
    first byte, on a kept-alive connection), else the connection is closed.
    ``fastagent serve`` sets that to ``FASTAGENT_INITIATE_TIMEOUT_S``
    (``uvicorn.run(..., http=CallerHttp)``).
    """

    _deadline: Any = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._deadline is None:
            self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._deadline = self.loop.call_later(self.timeout_keep_alive, self._headers_late)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _headers_late(self) -> None:
        self._deadline = None
        transport = self.transport
        if transport.get_protocol() is self and not transport.is_closing():
            log.debug("HTTP request headers not complete in %g s; closed", self.timeout_keep_alive)
            transport.close()


class ModelConnection(_FastReader, ClientConnection):
    """The Realtime socket, plus the ``on_text`` hook, the fast reader and a direct
    write.

    ``backlog`` counts the messages passed to the reader task's queue, so the hook
    can leave a frame to that queue while earlier ones wait there.
    """

    backlog: int = 0
    _keys: MaskKeys | None = None
    # The message-rate cap (FASTAGENT_MODEL_MAX_MSGS_PER_S), set by the call: a
    # bucket with ``take(now) -> bool`` (fastagent.service.caller_link.CallerPace).
    # Past it the connection is dropped at once, later frames are discarded, and
    # ``on_flood`` is called once (from the data callback: it must not await).
    pace: Any = None
    on_flood: Callable[[], None] | None = None
    flooded: bool = False

    def _library(self) -> Protocol:
        return self.protocol

    def _library_read(self, data: bytes) -> None:
        ClientConnection.data_received(self, data)

    def _stopped(self) -> bool:
        return self.flooded

    def _take(self, buf: bytes, start: int, end: int) -> bool | None:
        pace = self.pace
        if pace is not None and not pace.take(time.monotonic()):
            self._flood()
            return None
        hook = self.on_text
        text = buf[start:end]
        if hook is not None and text.isascii():  # (else the library checks its UTF-8,
            if _run(self, hook, text):  # then offers it)
                return True
            self._offered = True
        self._paced = True
        return False

    def process_event(self, event: Any) -> None:
        if type(event) is Frame:  # (the handshake's Response comes here too)
            if self.flooded:
                return
            pace = self.pace
            if (
                pace is not None
                and not self._paced  # (the fast reader counted it already)
                and event.fin
                and event.opcode in _DATA
                and not pace.take(time.monotonic())
            ):
                self._flood()
                return
            hook = self.on_text
            if (
                hook is not None
                and not self._offered  # (the fast reader offered it already)
                and event.opcode is Opcode.TEXT
                and event.fin
                and _run(self, hook, event.data)
            ):
                return
            if event.fin and event.opcode in _DATA:
                self.backlog += 1
        super().process_event(event)

    def _flood(self) -> None:
        """Past the message-rate cap: drop the connection (no close handshake with a
        peer that floods) and tell the call once."""
        self.flooded = True
        self.on_text = None
        self.transport.abort()
        hook, self.on_flood = self.on_flood, None
        if hook is not None:
            try:
                hook()
            except Exception as exc:  # never into the event loop's data callback
                log.error("model flood hook failed (%s: %s)", type(exc).__name__, exc)

    def can_write_now(self) -> bool:
        """Open, no fragmented message under way, writes not paused or piling up."""
        return (
            self.protocol.state is State.OPEN
            and self.fragmented_send_waiter is None
            and not self.paused
            and not self.transport.is_closing()
            and self.transport.get_write_buffer_size() <= WRITE_BUFFER_LIMIT
        )

    def write_now(self, text: str) -> None:
        """Write one text frame now (check :meth:`can_write_now` first).

        Written directly when the protocol object allows (:func:`_plain`): the same
        frame as ``protocol.send_text`` would queue (masked, as a client's must be),
        with a key from :class:`MaskKeys` instead of one ``os.urandom`` call each.
        """
        data = text.encode()
        protocol = self.protocol
        if _plain(protocol):
            keys = self._keys
            if keys is None:
                keys = self._keys = MaskKeys()
            key = keys.next()
            self.transport.write(text_frame_head(len(data), True) + key + apply_mask(data, key))
            return
        protocol.send_text(data)
        self.send_data()


def _run(owner: _FastReader, hook: TextHook, data: bytes) -> bool:
    """Call a hook from a data callback, where an exception would kill the socket:
    a failing hook is dropped and the frame, like every later one, takes the slow
    lane, where the same fault meets the service's usual handling."""
    try:
        return hook(data)
    except Exception as exc:  # one line, no traceback: the slow lane records the fault
        log.error(
            "audio fast lane failed (%s: %s); this socket's frames take the slow lane",
            type(exc).__name__,
            exc,
        )
        owner.on_text = None
        return False


def _gather(owner: _FastReader, part: bytearray, data: bytes) -> bytes | None:
    """The bytes for the fast reader to split: ``data`` after the frame under way
    in ``part``, or None while that frame is still incomplete.  The frame's bytes
    are appended in place, so a frame trickled a byte at a time costs O(n), not a
    copy of everything so far at each byte."""
    if not part:
        return data
    part += data
    if len(part) < owner._need:
        return None
    buf = bytes(part)
    part.clear()
    return buf


def _keep(owner: _FastReader, part: bytearray, buf: bytes, pos: int, end: int) -> None:
    """Keep ``buf[pos:]``, an incomplete frame that ends at ``end`` (0: not known yet)."""
    part += memoryview(buf)[pos:]
    owner._need = end - pos if end else 0


def caller_protocol_of(receive: Any) -> CallerProtocol | None:
    """The :class:`CallerProtocol` behind an ASGI ``receive`` (its bound method), if any."""
    owner = getattr(receive, "__self__", None)
    return owner if isinstance(owner, CallerProtocol) else None
