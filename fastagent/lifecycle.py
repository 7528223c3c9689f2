"""Running the service under uvicorn with a graceful drain on SIGTERM.

``fastagent serve`` runs :class:`DrainingServer`: the first SIGTERM does not stop
the process at once but calls :meth:`fastagent.service.Service.drain` (no new
calls, ``/readyz`` 503, running calls get ``drain_s`` seconds to end, the rest are
handed over to resume on another instance), then uvicorn shuts down as usual.
SIGINT (Ctrl-C), or a signal during the drain, stops at once: calls left that way
are taken over by another instance like after a crash (see docs/operations.md).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from types import FrameType
from typing import Any

import uvicorn

log = logging.getLogger("fastagent.service")

DEFAULT_DRAIN_S = 25.0  # fits a 30 s termination grace period (Kubernetes' default)


def drain_seconds(value: float | None = None) -> float:
    """``value``, else $FASTAGENT_DRAIN_S, else 25; ValueError (one line) if bad."""
    if value is not None:
        return value
    raw = os.environ.get("FASTAGENT_DRAIN_S", "").strip()
    if not raw:
        return DEFAULT_DRAIN_S
    try:
        seconds = float(raw)
    except ValueError:
        raise ValueError(f"bad FASTAGENT_DRAIN_S {raw!r}: expected seconds (>= 0)") from None
    if not 0 <= seconds < 86400:
        raise ValueError(f"bad FASTAGENT_DRAIN_S {raw!r}: expected seconds (>= 0)")
    return seconds


def find_service(app: Any) -> Any:
    """The :class:`~fastagent.service.Service` behind an ASGI app uvicorn wrapped in
    its middleware (each wrapper keeps the inner app as ``.app``), or None."""
    for _ in range(16):
        if app is None:
            return None
        state = getattr(app, "state", None)
        service = getattr(state, "service", None) if state is not None else None
        if service is not None:
            return service
        app = getattr(app, "app", None)
    return None


class DrainingServer(uvicorn.Server):
    """uvicorn's server; SIGTERM drains the service before shutting down."""

    def __init__(self, config: uvicorn.Config, drain_s: float = DEFAULT_DRAIN_S) -> None:
        super().__init__(config)
        self.drain_s = drain_s
        self.drain_task: asyncio.Future[Any] | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if sig == signal.SIGTERM and self.drain_task is None and not self.should_exit:
            service = find_service(getattr(self.config, "loaded_app", None))
            if service is not None:
                loop = asyncio.get_event_loop()
                # From a signal handler: schedule, never run loop code here.
                loop.call_soon_threadsafe(self.start_drain, service)
                return
        super().handle_exit(sig, frame)

    def start_drain(self, service: Any) -> None:
        if self.drain_task is not None or self.should_exit:
            return
        self.drain_task = asyncio.ensure_future(self._drain(service))

    async def _drain(self, service: Any) -> None:
        try:
            await service.drain(self.drain_s)
        except Exception as exc:  # a failed drain must still let the process stop
            log.error("drain failed: %s: %s", type(exc).__name__, exc)
        finally:
            self.should_exit = True


def run(app: Any, settings: dict[str, Any], *, workers: int = 1, drain_s: float) -> None:
    """Serve ``app`` (an ASGI app, or with ``workers`` > 1 an import string of a
    factory) like ``uvicorn.run``, with :class:`DrainingServer` in every process."""
    config = uvicorn.Config(app, workers=workers, factory=workers > 1, log_config=None, **settings)
    server = DrainingServer(config, drain_s)
    if workers <= 1:
        server.run()
        return
    from uvicorn.supervisors import Multiprocess

    # The supervisor sends each worker SIGTERM on its own SIGTERM: each one drains.
    sock = config.bind_socket()
    Multiprocess(config, target=server.run, sockets=[sock]).run()
