"""The calls one process drives, and what they share: store, tool hubs, SDK client."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastagent import events as ev
from fastagent import observe, realtime
from fastagent.agents import get_agent
from fastagent.errors import ConfigError
from fastagent.service.config import ServiceConfig, read_access
from fastagent.store import EventStore, open_store

if TYPE_CHECKING:
    from fastagent.service.call import CallSession

log = logging.getLogger("fastagent.service")


REJECT_LOG_EVERY_S = 60  # refused upgrades: one log line per source per minute


class Service:
    """Calls in this process, the store and the tool hubs they share."""

    def __init__(self, config: ServiceConfig, store: EventStore | None = None) -> None:
        if not config.token and not config.no_auth:
            raise ConfigError(
                "no FASTAGENT_VAIC_TOKEN configured; set one, or pass --no-auth for local use"
            )
        self.config = config
        self.read_access = read_access(config)
        self.store = store if store is not None else open_store(config.store)
        self.calls: dict[str, CallSession] = {}
        self.hubs: dict[str, Any] = {}
        self.draining = False  # SIGTERM: no new calls; see drain()
        self.metrics: observe.Metrics | observe.NoMetrics = (
            observe.Metrics(lambda: len(self.calls), lambda: self.draining)
            if observe.metrics_enabled()
            else observe.NoMetrics()
        )
        self.metrics.watch_store(self.store)
        try:
            self.tracer = observe.tracer_from_env()
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        # Every recorded event goes to these (the demo adds its printer).
        self.observers: list[Callable[[ev.Event], None]] = [
            self.metrics.observe,
            observe.call_log_observer(),
        ]
        if self.tracer is not None:
            self.observers.append(self.tracer.observe)
        self._hub_lock = asyncio.Lock()
        self._openai: Any = None
        self.sockets = 0  # VAIC sockets accepted and not yet finished
        self.initiating: set[str] = set()  # ids being initiated or resumed here (one at a time)
        self._rejected: dict[str, float] = {}  # source -> when its last rejection was logged

    def rejected(self, source: str, status: int, why: str) -> None:
        """Log a refused upgrade at WARNING, at most once per source per minute (a
        scanner or a misconfigured VAIC must not flood the log)."""
        now = time.monotonic()
        last = self._rejected.get(source)
        if last is not None and now - last < REJECT_LOG_EVERY_S:
            return
        if len(self._rejected) >= 10_000:  # forget sources quiet for a minute
            cutoff = now - REJECT_LOG_EVERY_S
            self._rejected = {k: t for k, t in self._rejected.items() if t >= cutoff}
        self._rejected[source] = now
        log.warning(
            "VAIC upgrade from %s refused with HTTP %d: %s (next refusal from it logged "
            "after %d s)",
            source,
            status,
            why,
            REJECT_LOG_EVERY_S,
        )

    def openai_client(self) -> Any:
        """One SDK client for all calls (building one costs ~20 ms of CPU)."""
        if self._openai is None:
            from openai import AsyncOpenAI

            url = self.config.realtime_url
            if url is not None and not url.startswith(("ws://", "wss://")):
                raise realtime.RealtimeConfigError(
                    f"Realtime URL must start with ws:// or wss://, got {url!r}"
                )
            self._openai = AsyncOpenAI(
                api_key=self.config.api_key or "sk-none", websocket_base_url=url
            )
        return self._openai

    def authorized(self, header: str | None) -> bool:
        if self.config.no_auth:
            return True
        expected = f"Bearer {self.config.token}".encode()
        return hmac.compare_digest((header or "").encode(), expected)

    async def hub(self, agent_name: str) -> Any:
        """The MCP tool hub of an agent, started once and shared by its calls."""
        async with self._hub_lock:
            hub = self.hubs.get(agent_name)
            if hub is None:
                from fastagent.tools import ToolHub

                hub = ToolHub(get_agent(agent_name))
                await hub.__aenter__()
                self.hubs[agent_name] = hub
            return hub

    async def drain(self, limit_s: float) -> int:
        """Stop taking calls, let the running ones finish, hand the rest over.

        From now on new VAIC sockets get HTTP 503 and ``/readyz`` says not ready (a
        proxy stops sending calls here).  Calls with a caller on the line get up to
        ``limit_s`` seconds to end; then every call still here is handed over
        (:meth:`CallSession.hand_over`): recorded as a dropped caller and its socket
        closed, so VAIC reconnects through the proxy and resumes the call on another
        instance from the log.  Returns how many calls were handed over.
        """
        self.draining = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit_s
        active = [s for s in self.calls.values() if s.caller is not None]
        log.warning(
            "draining: new calls refused; %d call(s) on the line get up to %.0f s to end",
            len(active),
            limit_s,
        )
        while loop.time() < deadline and any(s.caller is not None for s in self.calls.values()):
            await asyncio.sleep(0.1)
        left = list(self.calls.values())
        for session in left:
            await session.hand_over()
        if left:
            log.warning("drained: %d call(s) left to resume on another instance", len(left))
        else:
            log.info("drained: no call left")
        return len(left)

    async def aclose(self) -> None:
        for session in list(self.calls.values()):
            if session.grace_task is not None:
                session.grace_task.cancel()
            await session.detach_model()
        for hub in self.hubs.values():
            with contextlib.suppress(Exception):
                await hub.aclose()
        self.hubs.clear()
        await asyncio.to_thread(self.store.flush)
        if self.tracer is not None:
            self.tracer.shutdown()
