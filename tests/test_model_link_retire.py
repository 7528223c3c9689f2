"""Two model connections for one call (dials that raced: a resume's, and a first
configuration that found none yet): the link drives only the newer one; the older
is closed and its reader stops, so the call hears nothing more from a session the
log counts as gone.  Over real loopback sockets."""

from __future__ import annotations

import asyncio
import types
from typing import Any

from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

from fastagent import sockets
from fastagent.service.realtime_link import RealtimeLink


class _Sdk:
    """What the link uses of the SDK's connection: its websockets socket and close."""

    def __init__(self, ws: Any) -> None:
        self._connection = ws

    async def close(self) -> None:
        await self._connection.close()


def test_a_second_connection_retires_the_first() -> None:
    async def main() -> None:
        heard: list[bytes] = []
        closed: list[int] = []
        sent: dict[int, ServerConnection] = {}

        async def server(ws: ServerConnection) -> None:
            n = len(sent)
            sent[n] = ws
            try:
                await ws.wait_closed()
            finally:
                closed.append(n)

        async def on_frame(data: bytes) -> None:
            heard.append(data)

        failures: list[str] = []

        async def model_failed(exc: Exception) -> None:
            failures.append(str(exc))

        handover = asyncio.Event()
        handover.set()
        events = types.SimpleNamespace(handover=handover, model_failed=model_failed)
        async with serve(server, "127.0.0.1", 0) as srv:
            url = f"ws://127.0.0.1:{srv.sockets[0].getsockname()[1]}"
            link = RealtimeLink(events, dial=lambda: None, call_id="c1")  # type: ignore[arg-type]
            link.on_frame = on_frame  # type: ignore[method-assign]
            first = _Sdk(await connect(url, create_connection=sockets.ModelConnection))
            second = _Sdk(await connect(url, create_connection=sockets.ModelConnection))
            link.use(first)
            first_reader = link.task
            link.use(second)
            assert link.conn is second
            for _ in range(200):
                if closed:
                    break
                await asyncio.sleep(0.01)
            assert closed == [0]  # the first connection, closed
            assert first_reader is not None and first_reader.cancelled()
            await sent[1].send("from the second")
            for _ in range(200):
                if heard:
                    break
                await asyncio.sleep(0.01)
            assert heard == [b"from the second"]
            assert failures == []  # the retired reader reported nothing: it was stopped
            await link.close()

    asyncio.run(main())
