"""The fast reader of fastagent.sockets: the bytes of a socket split into whole
frames without websockets' parser, and the library still seeing every frame it
must see, whole and in order.

``frame_at`` is checked against websockets' own ``Frame.parse`` on any bytes
(hypothesis); both connection classes are driven over real loopback sockets by a
peer that writes its frames cut into random pieces, mixing text frames for the
hook, frames the hook leaves to the queue, pings, a fragmented message, a
non-ASCII text and, last, a frame the library must reject."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import uvicorn
from hypothesis import given, settings
from hypothesis import strategies as st
from test_sockets import uvicorn_on_loopback
from websockets.asyncio.client import connect
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed, ProtocolError
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.streams import StreamReader
from websockets.uri import parse_uri

from fastagent import sockets
from fastagent.sockets import FAST_READ_MAX, NEED_MORE, UNUSUAL, apply_mask, frame_at

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# --------------------------------------------------------------------- frame_at


def _library_parse(buf: bytes, masked: bool) -> tuple[str, Frame | None, int]:
    """websockets' reading of ``buf``: ("frame", frame, bytes used), ("more", ...)
    or ("error", ...)."""
    reader = StreamReader()
    reader.feed_data(buf)
    parser = Frame.parse(reader.read_exact, mask=masked, max_size=None, extensions=[])
    try:
        next(parser)
    except StopIteration as stop:
        return "frame", stop.value, len(buf) - len(reader.buffer)
    except (ProtocolError, ValueError):
        return "error", None, 0
    return "more", None, 0


def _raw_frame(b0: int, masked: bool, payload: bytes, key: bytes, long16: bool) -> bytes:
    n = len(payload)
    if n < 126 and not long16:
        head = bytes((b0, (0x80 if masked else 0) | n))
    elif n < 65536:
        head = bytes((b0, (0x80 if masked else 0) | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((b0, (0x80 if masked else 0) | 127)) + n.to_bytes(8, "big")
    if masked:
        return head + key + apply_mask(payload, key)
    return head + payload


frames = st.builds(
    _raw_frame,
    b0=st.sampled_from([0x81, 0x01, 0x82, 0x80, 0x88, 0x89, 0x8A, 0xC1, 0x91, 0x83, 0x09])
    | st.integers(0, 255),
    masked=st.booleans(),
    payload=st.binary(max_size=300) | st.sampled_from([b"x" * 70_000, b"y" * FAST_READ_MAX]),
    key=st.binary(min_size=4, max_size=4),
    long16=st.booleans(),
)


@settings(max_examples=600, deadline=None)
@given(
    parts=st.lists(frames | st.binary(max_size=20), min_size=1, max_size=3),
    cut=st.integers(0, 400),
    masked=st.booleans(),
    limit=st.sampled_from([FAST_READ_MAX, 200, 1, 0]),
)
def test_frame_at_agrees_with_websockets(
    parts: list[bytes], cut: int, masked: bool, limit: int
) -> None:
    buf = b"".join(parts)
    buf = buf[: len(buf) - cut] if cut < len(buf) else buf
    end, start = frame_at(buf, 0, masked, limit)
    kind, frame, used = _library_parse(buf, masked)
    if end > 0:
        # A frame the fast reader splits off is one websockets reads the same way.
        assert kind == "frame" and frame is not None
        assert used == end
        payload = buf[start:end]
        if masked:
            payload = apply_mask(payload, buf[start - 4 : start])
        assert payload == frame.data
        assert frame.fin and not (frame.rsv1 or frame.rsv2 or frame.rsv3)
        assert frame.opcode in (Opcode.TEXT, Opcode.CLOSE, Opcode.PING, Opcode.PONG)
        assert (frame.opcode is Opcode.TEXT) == (buf[0] == 0x81)
        assert len(frame.data) <= (limit if frame.opcode is Opcode.TEXT else 125)
    elif end == NEED_MORE:
        assert kind == "more"  # a frame under way: the library would wait too
        if start:  # where it ends, once its header is read: whole at exactly that length
            assert start > len(buf)
            assert frame_at(buf + bytes(start - len(buf)), 0, masked, limit)[0] == start
    else:
        assert end == UNUSUAL  # the library reads it, whatever it is


# ------------------------------------------------------------ the peers' scripts

# (kind, text) in the order the peer sends them; "fragmented" goes in two frames.
SCRIPT: list[tuple[str, str]] = [
    ("text", "fast 1"),
    ("text", "slow 2"),
    ("text", "fast 3"),
    ("ping", "p1"),
    ("text", "fast 4 " + "z" * 300),  # a 16-bit length
    ("text", "fast é"),  # not ASCII: read by the library
    ("text", "fast 5"),
    ("fragmented", "slow 6 in two frames"),
    ("text", "fast 7"),  # after a fragment the library reads everything
]
TEXTS = [text for kind, text in SCRIPT if kind != "ping"]


def _script_bytes(proto: ClientProtocol | ServerProtocol) -> bytes:
    for kind, text in SCRIPT:
        data = text.encode()
        if kind == "ping":
            proto.send_ping(data)
        elif kind == "fragmented":
            proto.send_text(data[:7], fin=False)
            proto.send_continuation(data[7:], fin=True)
        else:
            proto.send_text(data)
    return b"".join(proto.data_to_send())


async def _write_in_pieces(writer: asyncio.StreamWriter, data: bytes, seed: int) -> None:
    rng = random.Random(seed)
    pos = 0
    while pos < len(data):
        n = rng.choice((1, 2, 3, 5, 8, 13, 40, 200))
        writer.write(data[pos : pos + n])
        await writer.drain()
        await asyncio.sleep(0.001)  # separate segments, separate data callbacks
        pos += n


def _hook_for(owner: Any, backlog: Callable[[], int], taken: list[str]) -> Any:
    offered: set[bytes] = set()

    def hook(data: bytes) -> bool:
        assert data not in offered, f"{data!r} offered to the hook twice"  # (the lane fails)
        offered.add(data)
        if backlog() or not data.startswith(b"fast"):
            return False
        taken.append(f"{data.decode()} split={owner._split is not None}")
        return True

    return hook


# --------------------------------------------------------------- VAIC side


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_the_caller_side_reads_every_frame_once_in_order(seed: int) -> None:
    taken: list[str] = []
    queued: list[str] = []
    found: list[sockets.CallerProtocol] = []
    closed = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        sock = sockets.caller_protocol_of(receive)
        assert sock is not None
        found.append(sock)
        sock.on_text = _hook_for(sock, sock.backlog, taken)
        while True:
            m = await receive()
            if m["type"] != "websocket.receive":
                closed.set()
                return
            queued.append(m["text"])

    async with uvicorn_on_loopback(app, sockets.CallerProtocol) as url:
        proto = ClientProtocol(parse_uri(url))
        host, port = url.removeprefix("ws://").rstrip("/").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        request = proto.connect()
        proto.send_request(request)
        writer.write(b"".join(proto.data_to_send()))
        events = await _read_until(reader, proto, lambda ev: True)
        assert getattr(events[0], "status_code", None) == 101
        await _write_in_pieces(writer, _script_bytes(proto), seed)
        # The ping is answered, whatever piece of the stream it came in.
        await _read_until(reader, proto, lambda ev: getattr(ev, "opcode", None) is Opcode.PONG)
        for _ in range(500):
            if len(taken) + len(queued) == len(TEXTS):
                break
            await asyncio.sleep(0.01)
        # Last, invalid UTF-8 in a text frame: the library's rule still holds (1007).
        proto.send_text(b"\xff\xfe bad")
        writer.write(b"".join(proto.data_to_send()))
        end = await _read_until(
            reader, proto, lambda ev: getattr(ev, "opcode", None) is Opcode.CLOSE
        )
        assert end[-1].data[:2] == (1007).to_bytes(2, "big")
        writer.close()
        await asyncio.wait_for(closed.wait(), 5)

    _check_lanes(taken, queued)
    assert found[0]._unsplit  # the fragment handed the rest of the stream to the library


async def _read_until(
    reader: asyncio.StreamReader, proto: ClientProtocol, pred: Callable[[Any], bool]
) -> list[Any]:
    seen: list[Any] = []
    while True:
        data = await asyncio.wait_for(reader.read(65536), 5)
        if not data:
            raise AssertionError(f"connection closed; saw {seen}")
        proto.receive_data(data)
        for ev in proto.events_received():
            seen.append(ev)
            if pred(ev):
                return seen


def _check_lanes(taken: list[str], queued: list[str]) -> None:
    # Every text arrives exactly once (a hook offered the same frame twice fails and
    # is dropped, which the split= marks below would show); the frames the hook took
    # came through the fast reader until the fragment; the queue keeps the order of
    # what it got.
    got = [t.split(" split=")[0] for t in taken] + queued
    assert sorted(got) == sorted(TEXTS)
    assert taken[0] == "fast 1 split=True"
    assert "fast 4 " + "z" * 300 + " split=True" in taken
    assert "fast 7 split=False" in taken or "fast 7" in queued
    assert queued == [t for t in TEXTS if t in queued]


# -------------------------------------------------------------- model side


async def test_the_model_side_reads_every_frame_once_in_order() -> None:
    for seed in (1, 2, 3):
        await _model_run(seed)


async def _accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> ServerProtocol:
    """Answer a client's WebSocket handshake with websockets' sans-I/O server
    protocol, then give the client a moment to set its hook."""
    proto = ServerProtocol()
    request = None
    while request is None:
        proto.receive_data(await reader.read(65536))
        for ev in proto.events_received():
            request = ev
    proto.send_response(proto.accept(request))
    writer.write(b"".join(proto.data_to_send()))
    await writer.drain()
    await asyncio.sleep(0.05)
    return proto


async def _model_run(seed: int) -> None:
    pongs: list[bytes] = []
    closes: list[bytes] = []
    finished = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        proto = await _accept(reader, writer)
        await _write_in_pieces(writer, _script_bytes(proto), seed)
        while not pongs:
            data = await asyncio.wait_for(reader.read(65536), 5)
            if not data:
                break
            proto.receive_data(data)
            pongs.extend(ev.data for ev in proto.events_received() if ev.opcode is Opcode.PONG)
        # Last, a frame with an RSV bit and no extension: the library fails it (1002).
        writer.write(b"\xc1\x02hi")
        await writer.drain()
        while not closes:
            data = await asyncio.wait_for(reader.read(65536), 5)
            if not data:
                break
            proto.receive_data(data)
            closes.extend(
                ev.data[:2] for ev in proto.events_received() if ev.opcode is Opcode.CLOSE
            )
        writer.close()
        await finished.wait()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    taken: list[str] = []
    queued: list[str] = []
    try:
        async with connect(
            f"ws://127.0.0.1:{port}", create_connection=sockets.ModelConnection, compression=None
        ) as ws:
            assert isinstance(ws, sockets.ModelConnection)
            ws.on_text = _hook_for(ws, lambda: ws.backlog, taken)
            try:
                while True:
                    msg = await asyncio.wait_for(ws.recv(), 5)
                    ws.backlog -= 1
                    queued.append(msg)  # type: ignore[arg-type]
            except ConnectionClosed:  # the RSV frame ends the connection
                pass
            assert ws._unsplit
    finally:
        finished.set()
        server.close()
        await server.wait_closed()
    assert pongs == [b"p1"]
    assert closes == [(1002).to_bytes(2, "big")]
    _check_lanes(taken, queued)


# ------------------------------------------------- limits, lanes and costs


@contextlib.asynccontextmanager
async def _model_peer(data: bytes, closes: list[int]) -> AsyncIterator[int]:
    """A Realtime-like server on loopback that answers the handshake, writes
    ``data`` and records the close codes the client sends; yields its port."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        proto = await _accept(reader, writer)
        writer.write(data)
        with contextlib.suppress(Exception):
            while not closes and (got := await asyncio.wait_for(reader.read(65536), 5)):
                proto.receive_data(got)
                for ev in proto.events_received():
                    if ev.opcode is Opcode.CLOSE:
                        closes.append(int.from_bytes(ev.data[:2], "big"))
                writer.write(b"".join(proto.data_to_send()))  # (the close echoed)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


def _server_text(text: bytes) -> bytes:
    proto = ServerProtocol()
    proto.state = State.OPEN
    proto.send_text(text)
    return b"".join(proto.data_to_send())


async def test_a_model_frame_over_max_size_is_refused_as_by_the_library() -> None:
    # FASTAGENT_MODEL_MAX_FRAME_BYTES below the fast reader's 64 KiB: a larger
    # frame the hook would take still closes the socket (1009), never reaching it.
    offered: list[bytes] = []
    closes: list[int] = []
    big = b"fast " + b"a" * 1995
    async with _model_peer(_server_text(b"fast 1") + _server_text(big), closes) as port:
        async with connect(
            f"ws://127.0.0.1:{port}",
            create_connection=sockets.ModelConnection,
            compression=None,
            max_size=1000,
        ) as ws:
            assert isinstance(ws, sockets.ModelConnection)
            ws.on_text = lambda data: offered.append(data) or True
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 5)
            await asyncio.wait_for(ws.wait_closed(), 5)
    assert offered == [b"fast 1"]
    assert closes == [1009]


@contextlib.asynccontextmanager
async def _caller_socket(
    ws_max_size: int, hook: Callable[[bytes], bool], got: list[Any]
) -> AsyncIterator[tuple[ClientProtocol, asyncio.StreamReader, asyncio.StreamWriter]]:
    """A CallerProtocol server with ``hook`` (its ASGI messages into ``got``) and
    a raw client connected to it."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        sock = sockets.caller_protocol_of(receive)
        assert sock is not None
        sock.on_text = hook
        got.append(sock)
        while True:
            m = await receive()
            got.append(m)
            if m["type"] != "websocket.receive":
                return

    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=0,
            ws=sockets.CallerProtocol,
            ws_max_size=ws_max_size,
            log_level="warning",
            lifespan="off",
        )
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        proto = ClientProtocol(parse_uri(f"ws://127.0.0.1:{port}/"))
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        proto.send_request(proto.connect())
        writer.write(b"".join(proto.data_to_send()))
        await _read_until(reader, proto, lambda ev: True)
        while not got:
            await asyncio.sleep(0.01)
        yield proto, reader, writer
        writer.close()
    finally:
        server.should_exit = True
        await task


async def test_a_caller_frame_over_ws_max_size_is_refused_as_by_the_library() -> None:
    offered: list[bytes] = []
    got: list[Any] = []
    async with _caller_socket(1000, lambda d: offered.append(d) or True, got) as (
        proto,
        reader,
        writer,
    ):
        proto.send_text(b"fast 1")
        proto.send_text(b"fast " + b"a" * 1995)
        writer.write(b"".join(proto.data_to_send()))
        end = await _read_until(
            reader, proto, lambda ev: getattr(ev, "opcode", None) is Opcode.CLOSE
        )
        assert end[-1].data[:2] == (1009).to_bytes(2, "big")
    assert offered == [b"fast 1"]
    assert got[1]["type"] == "websocket.disconnect" and got[1]["code"] == 1009


async def test_the_library_failing_a_caller_frame_ends_the_reading() -> None:
    # A close frame with an invalid code, then more frames in the same segment: the
    # library fails the connection on it and, like its own parser, reads nothing
    # after it; the app is told once (not once per frame left in the segment).
    offered: list[bytes] = []
    got: list[Any] = []
    async with _caller_socket(1 << 20, lambda d: offered.append(d) or True, got) as (
        proto,
        _,
        _,
    ):
        sock = got[0]
        assert isinstance(sock, sockets.CallerProtocol)
        mask = bytes(4)  # (a zero key: the payload as it is)
        stream = (
            b"\x81\x86" + mask + b"fast 1"
            + b"\x88\x82" + mask + (999).to_bytes(2, "big")
            + (b"\x81\x86" + mask + b"fast 2") * 3
        )  # fmt: skip
        sock.data_received(stream)  # (the data callback itself: nothing in between)
        assert offered == [b"fast 1"]
        assert sock.queue.qsize() == 1
        assert sock.queue.get_nowait() == {
            "type": "websocket.disconnect",
            "code": 1002,
            "reason": "invalid status code",
        }


async def test_a_model_text_not_ascii_is_offered_to_the_hook_and_paced_once() -> None:
    # As on the library's path: the hook sees the non-ASCII text too (after the
    # library read it), and every data frame counts once against the message cap.
    offered: list[bytes] = []
    closes: list[int] = []
    frames = [b"take 1", "take é".encode(), b"leave 2", "leave é".encode(), b"take 3"]
    data = b"".join(_server_text(f) for f in frames)

    class Pace:
        taken = 0

        def take(self, now: float) -> bool:
            self.taken += 1
            return True

    pace = Pace()
    async with _model_peer(data, closes) as port:
        async with connect(
            f"ws://127.0.0.1:{port}", create_connection=sockets.ModelConnection, compression=None
        ) as ws:
            assert isinstance(ws, sockets.ModelConnection)
            ws.pace = pace

            def hook(text: bytes) -> bool:
                offered.append(text)
                return not ws.backlog and text.startswith(b"take")

            ws.on_text = hook
            queued = [await asyncio.wait_for(ws.recv(decode=False), 5) for _ in range(2)]
            assert ws._split is not None  # (the fast reader read them)
    assert offered == frames
    assert queued == [b"leave 2", "leave é".encode()]
    assert pace.taken == len(frames)


async def test_a_frame_trickled_a_byte_at_a_time_is_looked_at_a_few_times(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Each byte of a 60 KB frame in its own segment: the bytes are gathered in
    # place and the frame split once whole, not copied and re-read at every byte.
    calls = 0
    real_frame_at = sockets.frame_at

    def counting(*args: Any) -> Any:
        nonlocal calls
        calls += 1
        return real_frame_at(*args)

    monkeypatch.setattr(sockets, "frame_at", counting)
    taken: list[bytes] = []
    text = b"fast " + b"t" * 60_000
    async with _model_peer(b"", []) as port:
        async with connect(
            f"ws://127.0.0.1:{port}", create_connection=sockets.ModelConnection, compression=None
        ) as ws:
            assert isinstance(ws, sockets.ModelConnection)
            ws.on_text = lambda d: taken.append(d) or True
            data = _server_text(text) * 2
            for i in range(len(data)):
                ws.data_received(data[i : i + 1])  # (the data callback, one byte a call)
    assert taken == [text, text]
    assert calls < 20
