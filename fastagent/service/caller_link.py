"""The caller link: what the shell keeps of one VAIC socket besides its protocol
object - its pace (liveness and message rate) and how to drop it at once."""

from __future__ import annotations

import asyncio
import time

from fastapi import WebSocket

from fastagent import sockets


class CallerPace:
    """Liveness and message rate of one caller socket (no clock of its own: the
    caller passes ``time.monotonic()``).  ``seen`` is when its last frame came;
    ``take`` spends ``cost`` tokens (one per message) of a bucket refilled at
    ``rate`` per second and holding two seconds' worth, False when it holds
    fewer (nothing spent then)."""

    __slots__ = ("burst", "rate", "seen", "tokens")

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.burst = max(2.0 * rate, 1.0)
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


def _abort(ws: WebSocket, sock: sockets.CallerProtocol | None) -> None:
    """Drop a caller's TCP connection at once (no close handshake with a peer that
    may never answer); its reader then sees the disconnect."""
    if sock is not None:
        sock.transport.abort()
    else:
        asyncio.get_running_loop().create_task(ws.close(code=1001))
