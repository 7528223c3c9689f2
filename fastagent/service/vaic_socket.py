"""The VAIC WebSocket of one call: validate, initiate or resume, then pump frames."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from fastapi import WebSocket, WebSocketDisconnect

from fastagent import events as ev
from fastagent import observe, sockets, vaic
from fastagent.service.call import CallSession
from fastagent.service.caller_link import CallerPace, _abort
from fastagent.service.ownership import initiate, resume
from fastagent.service.process import Service
from fastagent.service.recording import Lost

log = logging.getLogger("fastagent.service")


async def serve_caller(service: Service, ws: WebSocket) -> None:
    """One VAIC WebSocket: validate, initiate or resume, then pump frames."""
    proto = vaic.VaicProtocol(service.config.max_frame_bytes)
    session: CallSession | None = None
    ended = False
    receive = ws._receive  # raw ASGI receive: Starlette's wrapper costs more than a frame
    parse = proto.receive
    chunk = vaic.UserStreamChunk
    busy = False  # this loop is handling a message (the slow lane)
    sock = sockets.caller_protocol_of(receive)
    failed: str | None = None
    cfg = service.config
    pace = CallerPace(cfg.max_msgs_per_s)
    # Protocol violations: at most the cap a minute are recorded and logged (all of
    # them at once at most); one more fails the socket, like a flood.
    cap = cfg.max_violations_per_min
    strikes = CallerPace(cap / 60.0, burst=float(cap))
    clock = time.monotonic
    initiate_by = clock() + cfg.initiate_timeout_s
    watchdog: asyncio.Task[None] | None = None

    def chunk_now(data: bytes) -> bool:
        """Fast lane, from the socket's data callback: an audio chunk while the slow
        lane is idle goes straight to the session (see fastagent.sockets)."""
        if busy or session is None or session.caller is not ws or sock is None or sock.backlog():
            return False  # (a session gone or moved on leaves the socket to the slow lane)
        if not pace.take(clock()):
            return False  # over the rate: the slow lane closes the socket
        msg = proto.receive_chunk(data)
        if msg is not None and session.caller_audio_now(msg):
            return True
        pace.tokens += 1.0  # the slow lane takes this frame, and counts it there
        return False

    async def watch() -> None:
        """A caller socket with no frame at all for caller_idle_s is lost."""
        nonlocal failed
        idle = cfg.caller_idle_s
        while (quiet := clock() - pace.seen) < idle:
            await asyncio.sleep(min(1.0, idle / 4, idle - quiet + 0.01))
        failed = f"no frame for {idle:g} s"
        s = session
        log.info("call %s: caller socket silent for %g s; lost", s and s.call_id, idle)
        if s is not None and s.caller is ws and not s.closing:
            await caller_gone(s, failed)
        _abort(ws, sock)

    if sock is not None:
        sock.on_text = chunk_now
    try:
        while True:
            busy = False
            if session is None:
                # session.initiate (or resume) within initiate_timeout_s of the upgrade.
                try:
                    async with asyncio.timeout(initiate_by - clock()):
                        message = await receive()
                except TimeoutError:
                    log.info(
                        "VAIC socket sent no session.initiate in %g s; closed",
                        cfg.initiate_timeout_s,
                    )
                    await ws.close(code=1008)
                    break
            else:
                message = await receive()
            busy = True
            data = message.get("text")
            if data is None:
                if message["type"] == "websocket.disconnect":
                    break
                data = message.get("bytes") or b""
            msg = parse(data) if pace.take(clock()) else None
            if msg is None or (
                # Each activity counts: packed in one frame they would dodge the cap.
                type(msg) is vaic.Activities and not pace.take(clock(), len(msg.activities) - 1)  # type: ignore[union-attr]
            ):
                failed = f"more than {cfg.max_msgs_per_s:g} messages/s"
                log.warning(
                    "call %s: caller socket closed: %s", session and session.call_id, failed
                )
                await ws.close(code=1008)
                break
            if type(msg) is chunk:  # hot path
                if session is not None:
                    await session.on_caller_audio(msg)  # type: ignore[arg-type]
                continue
            if isinstance(msg, vaic.ProtocolViolation):
                if not strikes.take(clock()):
                    failed = f"more than {cap} protocol violations a minute"
                    log.warning(
                        "call %s: caller socket closed: %s", session and session.call_id, failed
                    )
                    await ws.close(code=1008)
                    break
                if session is not None:
                    await session.protocol_error("caller", msg.message)
                else:
                    log.warning("VAIC frame rejected: %s", msg.message[:300])
                if msg.reply is not None:  # before the session only (VaicProtocol.receive)
                    await ws.send_text(msg.reply.decode())
                continue
            if isinstance(msg, vaic.ConnectionValidate):
                # The protocol's own answer, before any session (a validate during
                # one is a violation): the only frame here not decided by the engine.
                await ws.send_text(vaic.connection_validated().decode())
            elif isinstance(msg, vaic.SessionInitiate | vaic.SessionResume):
                if session is not None:
                    continue  # (a repeat of this socket's own: the protocol allows it)
                observe.current_call.set(msg.conversationId)  # every log line names it
                if isinstance(msg, vaic.SessionInitiate):
                    session = await initiate(service, ws, proto, msg, pace)
                else:
                    session = await resume(service, ws, proto, msg, pace)
                if session is not None and watchdog is None:
                    watchdog = asyncio.create_task(watch())
            elif session is None:
                continue
            else:
                for found in vaic.inputs_of(msg):
                    if isinstance(found, vaic.ProtocolViolation):
                        if not strikes.take(clock()):
                            failed = f"more than {cap} protocol violations a minute"
                            break
                        await session.protocol_error("caller", found.message)
                    else:
                        await session.input(found[0], **found[1])
                if failed is not None:
                    log.warning("call %s: caller socket closed: %s", session.call_id, failed)
                    await ws.close(code=1008)
                    break
                if isinstance(msg, vaic.SessionEnd):
                    ended = True
                    break
    except WebSocketDisconnect:
        pass
    except Lost:
        if session is not None:
            await session.close("stream taken over by another instance")
        return
    except Exception as exc:
        # Whatever failed, the socket is done: it takes the dropped socket's path
        # below (ConnectionLost, grace timer, model closed when the grace ends).
        cid = session.call_id if session is not None else "-"
        failed = f"socket failed: {type(exc).__name__}"
        log.error("call %s: caller socket failed: %s: %s", cid, type(exc).__name__, exc)
        with contextlib.suppress(Exception):
            await ws.close(code=1011)
    finally:
        if watchdog is not None and watchdog is not asyncio.current_task():
            watchdog.cancel()
    if session is None or session.closing:
        return
    if session.caller is ws:
        await caller_gone(session, "socket closed" if failed is None else failed, ended)


async def caller_gone(session: CallSession, reason: str, ended: bool = False) -> None:
    """The caller's socket is gone (closed, failed, or gone silent): record it and
    start the grace timer; the model socket is closed when the grace ends."""
    session.detach_caller()
    session.proto = None
    if ended or session.engine.view.ended:
        return
    try:
        await session.input(ev.ConnectionLost, side="caller", reason=reason[:200])
    except Lost:
        await session.close("stream taken over by another instance")
        return
    except Exception as exc:  # the store is failing too: do not keep the call open
        log.error(
            "call %s: cannot record the drop: %s: %s", session.call_id, type(exc).__name__, exc
        )
        await session.close("caller socket failed and the drop could not be recorded")
        return
    if not session.closing:
        session.start_grace()
        session.spawn(session.save_checkpoint())  # a resume elsewhere reads only the tail
