"""The imperative shell: sockets, timers, tools and the store around the core.

For each call, VAIC dials ``/audiocodes``; a :class:`CallSession` turns every
frame it observes (caller side and model side) into an input event stamped with
the time it saw it, appends it, hands it to the engine core, appends the core's
decisions and executes them.  Audio passes through untouched where the formats
allow; only its chunk boundaries are recorded.

One session drives a call at a time.  A caller that reconnects (``session.resume``)
within the grace period gets the same session back, on this instance from memory,
on another one rebuilt from the log (see docs/operations.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import hmac
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse, PlainTextResponse

from fastagent import access, audio, models, realtime, snapshots, sockets, vaic
from fastagent import events as ev
from fastagent import live as live_proto
from fastagent.agents import get_agent
from fastagent.core import ENGINE_SERVER, Engine, response_event_id
from fastagent.live import choose_live_format
from fastagent.live_link import MODEL_DECISIONS, LiveLink
from fastagent.store import EventStore, StoreError, StreamConflict, UnknownCall, open_store
from projections import live

log = logging.getLogger("fastagent.service")


def _raw_socket(conn: Any) -> Any:
    """The SDK connection's websockets socket when sending on it directly is safe
    (no reconnect in progress, nothing queued), else None."""
    ws = getattr(conn, "_connection", None)
    if ws is None or getattr(conn, "_is_reconnecting", False) or getattr(conn, "_send_queue", None):
        return None
    return ws


def now_us() -> int:
    return time.time_ns() // 1000


@dataclass
class ServiceConfig:
    store: str | None = None
    token: str | None = None  # FASTAGENT_VAIC_TOKEN; None only with no_auth
    # FASTAGENT_READ_TOKEN: reading call data (/mcp, web views); None = reading is off.
    read_token: str | None = None
    api_docs: bool = False  # FASTAGENT_API_DOCS: /docs, /redoc, /openapi.json (read token)
    no_auth: bool = False
    agent: str = "default"
    greet: bool = True
    transfer_target: str = ""
    realtime_url: str | None = None  # FASTAGENT_REALTIME_URL
    api_key: str | None = None  # OPENAI_API_KEY
    model: str = models.DEFAULT_MODEL
    voice: str = ""
    grace_s: float | None = None  # None: the core's (core.POLICY); recorded per call
    playback_speed: float = 1.0  # >1 only for simulated callers that play faster
    max_frame_bytes: int = vaic.DEFAULT_MAX_FRAME_BYTES
    tool_timeout_s: float | None = None  # None: the core's, like grace_s
    model_retries: int | None = None  # None: the core's, like grace_s
    # A session.update or response.create the model does not answer within this
    # many seconds is a model failure (the agent's fallback; outcome failed).
    model_timeout_s: float = 10.0
    # GPT-Live (--model gpt-live-1.1): the Responses model its delegations run on
    # (FASTAGENT_LIVE_BACKEND_MODEL), whether sessions are stored so a dropped one
    # is forked (FASTAGENT_LIVE_STORE=1), and the output quiet that means "stopped".
    live_backend_model: str = "gpt-5-mini"
    live_store: bool = False
    live_idle_ms: int = 300
    instance: str = field(default_factory=lambda: f"{os.uname().nodename}:{os.getpid()}")

    def to_env(self) -> dict[str, str]:
        """The FASTAGENT_* variables that rebuild this configuration (for workers)."""
        env = {
            "FASTAGENT_AGENT": self.agent,
            "FASTAGENT_GREET": "1" if self.greet else "0",
            "FASTAGENT_PLAYBACK_SPEED": repr(self.playback_speed),
            "FASTAGENT_MAX_FRAME_BYTES": str(self.max_frame_bytes),
            "FASTAGENT_MODEL": self.model,
            "FASTAGENT_MODEL_TIMEOUT_S": repr(self.model_timeout_s),
            "FASTAGENT_NO_AUTH": "1" if self.no_auth else "0",
            "FASTAGENT_LIVE_BACKEND_MODEL": self.live_backend_model,
            "FASTAGENT_LIVE_STORE": "1" if self.live_store else "0",
            "FASTAGENT_LIVE_IDLE_MS": str(self.live_idle_ms),
        }
        if self.store:
            env["FASTAGENT_STORE"] = self.store
        if self.grace_s is not None:
            env["FASTAGENT_GRACE_S"] = repr(self.grace_s)
        if self.transfer_target:
            env["FASTAGENT_TRANSFER_TARGET"] = self.transfer_target
        return env

    @classmethod
    def from_env(cls, **overrides: Any) -> ServiceConfig:
        """The configuration from FASTAGENT_* variables, then ``overrides`` that are
        not None.  Raises ConfigError (one line) for a malformed number."""
        env = os.environ

        def number(name: str, default: float | None, kind: type, expected: str, ok: Any) -> Any:
            raw = env.get(name, "").strip()
            if not raw:
                return None if default is None else kind(default)
            try:
                value = kind(raw)
            except ValueError:
                value = None
            if value is None or not ok(value):  # NaN fails every comparison
                raise ConfigError(f"bad {name}={raw!r}: expected {expected}")
            return value

        inf = float("inf")
        cfg = cls(
            store=env.get("FASTAGENT_STORE"),
            token=env.get("FASTAGENT_VAIC_TOKEN") or None,
            read_token=env.get(access.ENV_READ) or None,
            api_docs=access.api_docs_enabled(env),
            agent=env.get("FASTAGENT_AGENT", "default"),
            transfer_target=env.get("FASTAGENT_TRANSFER_TARGET", ""),
            realtime_url=env.get("FASTAGENT_REALTIME_URL") or None,
            api_key=env.get("OPENAI_API_KEY") or None,
            model=env.get("FASTAGENT_MODEL") or models.DEFAULT_MODEL,
            model_timeout_s=number(
                "FASTAGENT_MODEL_TIMEOUT_S",
                10,
                float,
                "seconds (a number > 0)",
                lambda v: 0 < v < inf,
            ),
            grace_s=number(
                "FASTAGENT_GRACE_S", None, float, "seconds (a number >= 0)", lambda v: 0 <= v < inf
            ),
            greet=env.get("FASTAGENT_GREET", "1").lower() not in ("0", "false", "no"),
            # Only for simulated callers that play bot audio faster than real time.
            playback_speed=number(
                "FASTAGENT_PLAYBACK_SPEED", 1, float, "a number > 0", lambda v: 0 < v < inf
            ),
            max_frame_bytes=number(
                "FASTAGENT_MAX_FRAME_BYTES",
                vaic.DEFAULT_MAX_FRAME_BYTES,
                int,
                "a whole number of bytes > 0",
                lambda v: v > 0,
            ),
            live_backend_model=env.get("FASTAGENT_LIVE_BACKEND_MODEL") or "gpt-5-mini",
            live_store=env.get("FASTAGENT_LIVE_STORE", "0").lower() in ("1", "true", "yes"),
            live_idle_ms=number(
                "FASTAGENT_LIVE_IDLE_MS",
                300,
                int,
                "milliseconds (a whole number > 0)",
                lambda v: v > 0,
            ),
        )
        for key, value in overrides.items():
            if value is not None:
                setattr(cfg, key, value)
        return cfg


GRACE_POLL_S = 0.25  # how often a suspended call checks whether it moved elsewhere
SNAPSHOT_EVERY = 5000  # events between periodic snapshots of a live call
SNAPSHOT_CHECK_S = 2.0
CLAIM_ATTEMPTS = 5  # a resume overtakes an old owner still finishing its writes
LIVE_S = 1.0  # a call not suspended whose log is quiet this long has lost its driver


class ConfigError(ValueError):
    pass


class _Lost(Exception):
    """This instance no longer drives the call (another writer took its stream)."""


def read_access(config: ServiceConfig) -> access.ReadAccess:
    """The read credentials of ``config``; ConfigError (one line) if malformed or
    equal to the VAIC token."""
    try:
        return access.ReadAccess.parse(config.read_token, vaic_token=config.token)
    except access.AccessError as exc:
        raise ConfigError(str(exc)) from None


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
        self.observers: list[Callable[[ev.Event], None]] = []
        self._hub_lock = asyncio.Lock()
        self._openai: Any = None

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


SEED_ITEMS = ev.CallPolicy().history_items  # the core decides it per call (CallPolicy)


def seed_pairs(transcript: list[live.Line], items: int = SEED_ITEMS) -> list[tuple[str, str]]:
    """What a fresh model session is told of the call so far.

    The last ``items`` turns (the call's ``CallPolicy.history_items``) go in as
    conversation items; anything older is folded into one system message, so a
    long call resumes with a few frames, not hundreds.
    """
    pairs = [(line.role, line.text) for line in transcript if line.text]
    if len(pairs) <= items:
        return pairs
    older, recent = (pairs[:-items], pairs[-items:]) if items else (pairs, [])
    summary = "Earlier in this call:\n" + "\n".join(f"{role}: {text}" for role, text in older)
    return [("system", summary), *recent]


class CallSession:
    """One call driven by this process: engine, live state, model socket, caller socket."""

    def __init__(self, service: Service, call_id: str, engine: Engine) -> None:
        self.service = service
        self.store = service.store
        self.call_id = call_id
        self.engine = engine
        self.state = live.CallState()
        self.caller: WebSocket | None = None
        self.caller_sock: sockets.CallerProtocol | None = None  # its fast lane, if served so
        self.proto: vaic.VaicProtocol | None = None
        self.model: Any = None
        self.model_sock: sockets.ModelConnection | None = None
        self.model_busy = False  # read_model is handling a frame (the slow lane)
        self.model_task: asyncio.Task[None] | None = None
        self.model_ready = asyncio.Event()
        self.grace_task: asyncio.Task[None] | None = None
        self.tasks: set[asyncio.Task[Any]] = set()
        self.chunks_in = 0
        self.chunks_out = 0
        self.to_model: audio.Resampler | None = None
        self.to_caller: audio.Resampler | None = None
        self.seeded = False
        self.closing = False
        self.lost = False
        self.snapshot_seq = 0  # seq of the last snapshot written (or restored from)
        self.policy = engine.policy  # the call's rules; each SessionAccepted carries them
        self.timers: dict[str, asyncio.Task[None]] = {}  # model answers awaited
        # The GPT-Live model link (fastagent.live_link), when the call's model is one;
        # None for Realtime, whose protocol this class speaks itself.
        self.link: LiveLink | None = None
        self.append_audio: Callable[[str], str] = realtime.append_audio

    # --------------------------------------------------------------- recording

    def record(self, inp: ev.Input) -> list[ev.Decision]:
        """Append one input and the decisions it calls for (no await: order is kept)."""
        decisions = self.engine.handle(inp)
        batch = [inp, *decisions] if decisions else [inp]
        try:
            self.store.append(batch)
        except StreamConflict:
            self.lost = True
            raise _Lost(self.call_id) from None
        self.applied(batch)
        return decisions

    def applied(self, batch: list[ev.Event]) -> None:
        """Fold a recorded batch into the live state and show it to observers."""
        state = self.state
        for e in batch:
            live.apply(state, e)
        for observe in self.service.observers:
            for e in batch:
                observe(e)

    async def input(self, cls: type[ev.Input], **fields: Any) -> None:
        inp = cls(call_id=self.call_id, seq=self.engine.next_seq, at=now_us(), **fields)
        decisions = self.record(inp)
        if decisions:
            await self.execute(decisions)

    # ---------------------------------------------------------------- decisions

    async def execute(self, decisions: list[ev.Decision]) -> None:
        for d in decisions:
            t = type(d)
            if self.link is not None and t in MODEL_DECISIONS:
                await self.link.execute(d)
            elif t is ev.PlaybackStarted:
                await self.to_vaic(self.vaic_proto().play_start(d.stream_id, d.fmt))  # type: ignore[attr-defined]
            elif t is ev.PlaybackStopped:
                frame = self.vaic_proto().play_stop()
                if frame is not None:
                    await self.to_vaic(frame)
                self.watch_drain()
            elif t is ev.TruncateRequested:
                await self.send_model(realtime.truncate(d.item_id, d.audio_end_ms))  # type: ignore[attr-defined]
            elif t is ev.ModelConfigured:
                await self.configure_model(d)  # type: ignore[arg-type]
            elif t is ev.ResponseRequested:
                event_id = response_event_id(d.seq)
                await self.send_model(
                    realtime.response_create(
                        d.instructions or None,  # type: ignore[attr-defined]
                        event_id=event_id,
                    )
                )
                self.await_model("response.created", event_id)
            elif t is ev.ModelFailureHandled:
                self.on_failure_handled(d)  # type: ignore[arg-type]
            elif t is ev.ItemDeleted:
                await self.send_model(realtime.item_delete(d.item_id))  # type: ignore[attr-defined]
            elif t is ev.FunctionOutputSent:
                await self.send_model(realtime.function_call_output(d.tool_call_id, d.output))  # type: ignore[attr-defined]
            elif t is ev.MessageInjected:
                build = realtime.user_text if d.role == "user" else realtime.system_text  # type: ignore[attr-defined]
                await self.send_model(build(d.text))  # type: ignore[attr-defined]
            elif t is ev.FunctionCallDispatched:
                if d.server != ENGINE_SERVER:  # type: ignore[attr-defined]
                    self.spawn(self.run_tool(d))  # type: ignore[arg-type]
            elif t is ev.SessionAccepted:
                await self.accept(d)  # type: ignore[arg-type]
            elif t is ev.SessionRejected:
                await self.to_vaic(vaic.session_error(d.reason))  # type: ignore[attr-defined]
            elif t is ev.HangupRequested:
                self.spawn(self.after_playback(vaic.hangup(d.reason or "done")))  # type: ignore[attr-defined]
            elif t is ev.TransferRequested:
                frame = vaic.transfer(d.target, handover_reason=d.reason)  # type: ignore[attr-defined]
                self.spawn(self.after_playback(frame))
            elif t is ev.SessionParamsSent:
                await self.to_vaic(vaic.config(d.params))  # type: ignore[attr-defined]
            elif t is ev.DtmfSent:
                await self.to_vaic(vaic.send_dtmf(d.digits))  # type: ignore[attr-defined]
            elif t is ev.CallEnded:
                self.spawn(self.close("call ended"))

    async def accept(self, d: ev.SessionAccepted) -> None:
        self.policy = d.policy
        self.use_link()
        choose = choose_live_format if self.engine.live else vaic.choose_format
        negotiated = choose([d.media_format])
        assert negotiated is not None
        if not negotiated.passthrough and self.to_model is None:
            # soxr only where the formats differ (lpcm16_8; lpcm16 for Realtime).
            rate = negotiated.resample_to_hz
            self.to_model = audio.Resampler(negotiated.resample_from_hz, rate)
            self.to_caller = audio.Resampler(rate, negotiated.resample_from_hz)
        await self.to_vaic(self.vaic_proto().accept(d.media_format))

    def use_link(self) -> None:
        """Speak GPT-Live on the model side if the call's model is a GPT-Live model."""
        if self.engine.live and self.link is None:
            self.link = LiveLink(self)
            self.append_audio = live_proto.append_audio

    async def configure_model(self, d: ev.ModelConfigured) -> None:
        if self.model is None:
            try:
                await self.attach_model()  # first configuration of the call: connect now
            except Exception as exc:
                # The core answers with a hangup: no dead air, and the log says why.
                await self.input(ev.ModelError, error_type="connection", message=str(exc)[:200])
                return
        frame = realtime.session_update(
            instructions=d.instructions,
            tools=self.engine.tool_specs(d.tools),
            voice=d.voice or None,
            input_format=d.input_format,
            output_format=d.output_format,
        )
        await self.send_model(frame)
        self.await_model("session.updated", "")
        if not self.seeded:
            # A fresh model session (after a reconnect or a resume elsewhere) hears
            # the conversation so far from the log.
            self.seeded = True
            pairs = seed_pairs(self.state.transcript, self.policy.history_items)
            for item in realtime.seed_items(pairs):
                await self.send_model(item)

    def await_model(self, waiting_for: str, event_id: str) -> None:
        """Start the timer for the model's answer to what was just sent: the
        answer cancels it (see on_model_frame); if it fires, the core hears a
        ModelTimeout (FASTAGENT_MODEL_TIMEOUT_S, recorded in CallConfig)."""
        old = self.timers.pop(waiting_for, None)
        if old is not None:
            old.cancel()
        seconds = self.service.config.model_timeout_s

        async def expire() -> None:
            await asyncio.sleep(seconds)
            self.timers.pop(waiting_for, None)
            if not self.closing and self.engine.status != "ended":
                await self.input(
                    ev.ModelTimeout, waiting_for=waiting_for, seconds=seconds, event_id=event_id
                )

        task = asyncio.create_task(self._guard(expire()))
        self.timers[waiting_for] = task

    def answered(self, waiting_for: str) -> None:
        task = self.timers.pop(waiting_for, None)
        if task is not None:
            task.cancel()

    def on_failure_handled(self, d: ev.ModelFailureHandled) -> None:
        log.warning(
            "call %s: model failure %s (%s) -> %s%s",
            self.call_id,
            d.kind,
            d.code or "-",
            d.action,
            f": {d.message}" if d.message else "",
        )
        if d.action == "reconnect" and self.model is not None:
            # The session is over (session_expired): a new one, seeded from the log.
            self.spawn(self.reconnect_model(f"model {d.kind}"))

    async def reconnect_model(self, reason: str) -> None:
        """Close the model session on purpose and open a new one (model_lost)."""
        conn, task = self.model, self.model_task
        if conn is None:
            return
        self.model_task = None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        with contextlib.suppress(Exception):
            await conn.close()
        await self.model_lost(reason)

    def watch_drain(self) -> None:
        """Tell the core when the caller has heard a response whose calls it holds."""
        pb = self.engine.play
        if pb is None or self.engine.held_response != pb.response_id:
            return

        async def drained() -> None:
            wait = (pb.audible_until() - now_us()) / 1e6
            if wait > 0:
                await asyncio.sleep(wait)
            if not self.closing and self.engine.held_response == pb.response_id:
                await self.input(
                    ev.PlaybackDrained, stream_id=pb.stream_id, response_id=pb.response_id
                )

        self.spawn(drained())

    async def after_playback(self, frame: bytes) -> None:
        """Send a call-control activity once the caller has heard the goodbye."""
        # Durable before the side effect; a hangup still goes out if the store is
        # down: leaving the caller on a dead line would be worse.
        await self.durable()
        pb = self.engine.play
        until = pb.audible_until() if pb is not None else 0
        if self.link is not None:
            # GPT-Live's goodbye stream is already stopped: the playout clock knows
            # when the caller's queue runs dry.
            until = max(until, self.engine.clock.end_at)
        wait = (until - now_us()) / 1e6
        if wait > 0:
            await asyncio.sleep(min(wait, 30.0))
        await self.to_vaic(frame)

    async def durable(self) -> bool:
        """Make the log durable before a side effect; False if the store cannot."""
        for delay in (0.05, 0.2, 0.5, 1.0, 2.0):
            try:
                await self.store.flush_async(self.call_id)
                return True
            except StreamConflict:
                raise _Lost(self.call_id) from None
            except StoreError as exc:
                log.warning("call %s: store unavailable (%s); retrying", self.call_id, exc)
                await asyncio.sleep(delay)
        return False

    async def run_tool(self, d: ev.FunctionCallDispatched) -> None:
        if not await self.durable():  # durable before the side effect starts, or not at all
            await self.input(
                ev.ToolResult,
                tool_call_id=d.tool_call_id,
                name=d.name,
                ok=False,
                error="not run: the call log could not be made durable",
            )
            return
        started = time.perf_counter()
        try:
            hub = await self.service.hub(self.state.agent)
            out = await hub.call(
                d.server,
                d.name,
                d.arguments,
                idempotency_key=d.idempotency_key,
                timeout_s=self.policy.tool_timeout_s,
            )
            ok, output, error = out.ok, out.output, out.error
            duration = out.duration_us
        except Exception as exc:  # a broken hub must not end the call
            ok, output, error = False, "", f"tool hub failed: {exc}"
            duration = int((time.perf_counter() - started) * 1e6)
        if self.closing or self.lost:
            return
        await self.input(
            ev.ToolResult,
            tool_call_id=d.tool_call_id,
            name=d.name,
            ok=ok,
            output=output,
            error=error,
            duration_us=duration,
        )

    def spawn(self, coro: Any) -> None:
        task = asyncio.create_task(self._guard(coro))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _guard(self, coro: Any) -> None:
        try:
            await coro
        except _Lost:
            await self.close("stream taken over by another instance")
        except Exception as exc:
            log.error("call %s: task failed: %s: %s", self.call_id, type(exc).__name__, exc)

    # ------------------------------------------------------------ caller side

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
        fmt = self.engine.media_format
        return ev.CallerAudio(
            call_id=self.call_id,
            seq=self.engine.next_seq,
            at=now_us(),
            chunk=self.chunks_in,
            nbytes=nbytes,
            duration_us=audio.duration_us(nbytes, fmt),
            fmt=fmt,
        )

    async def on_caller_audio(self, msg: vaic.UserStreamChunk) -> None:
        """Hot path (slow lane): record the boundary, forward the base64 untouched."""
        decisions = self.record(self.caller_audio_input(msg))
        if decisions:
            await self.execute(decisions)
        b64 = msg.audioChunk
        if self.to_model is not None:
            b64 = self.to_model.process_b64(b64)
        if self.model_ready.is_set():
            await self.send_model(self.append_audio(b64))

    def caller_audio_now(self, msg: vaic.UserStreamChunk) -> bool:
        """Fast lane, from the caller socket's data callback: record and forward a
        chunk with no await, if the model socket can take it at once."""
        sock = self.model_sock
        if sock is None or self.closing or self.lost or not self.model_ready.is_set():
            return False
        if not sock.can_write_now():
            return False
        b64 = msg.audioChunk
        if self.to_model is not None:
            b64 = self.to_model.process_b64(b64)
        # Everything that can fail comes before the record: a recorded frame is done.
        frame = self.append_audio(b64)
        if self.record_now(self.caller_audio_input(msg)):
            self.write_now(sock, frame)
        return True

    def record_now(self, inp: ev.Input) -> bool:
        """:meth:`record` from a socket callback, where nothing may be awaited: the
        decisions run in a task (the engine decides none on audio of an open
        stream today).  False if the call was lost to another instance."""
        try:
            decisions = self.record(inp)
        except _Lost:
            self.spawn(self.close("stream taken over by another instance"))
            return False
        if decisions:
            self.spawn(self.execute(decisions))
        return True

    def write_now(self, sock: Any, frame: Any) -> None:
        """The fast lane's write of a frame already recorded: a failure closes the
        call's socket the way the slow lane would, never records it again."""
        try:
            sock.write_now(frame)
        except Exception as exc:
            log.warning("call %s: fast-lane write failed: %s", self.call_id, exc)
            sock.on_text = None

    # ------------------------------------------------------------- model side

    async def send_model(self, frame: str) -> None:
        if not self.model_ready.is_set():
            try:  # a (re)connect is under way; never hold the caller's reader for long
                await asyncio.wait_for(self.model_ready.wait(), timeout=5)
            except TimeoutError:
                log.warning("call %s: model not connected; frame dropped", self.call_id)
                return
        conn = self.model
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

    async def attach_model(self) -> None:
        """Connect the model socket (with backoff) and start reading it."""
        retries = self.policy.model_retries
        delay = 0.2
        for attempt in range(retries + 1):
            try:
                link = self.link
                conn = await (link.dial() if link is not None else dial_model(self.service))
                break
            except Exception as exc:
                log.warning("call %s: model connect failed (%s)", self.call_id, exc)
                if attempt == retries:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        self.use_model(conn)

    def use_model(self, conn: Any) -> None:
        """Start driving a freshly connected model socket."""
        self.model = conn
        ws = getattr(conn, "_connection", None)
        self.model_sock = ws if isinstance(ws, sockets.ModelConnection) else None
        if self.model_sock is not None:
            self.model_sock.on_text = self.model_text_now
        if self.link is not None:
            # GPT-Live: session.start goes first; audio and commands wait for
            # session.started (the link sets model_ready then).
            self.model_ready.clear()
            self.link.connected()
        else:
            self.model_ready.set()
        self.model_task = asyncio.create_task(self.read_model())

    async def detach_model(self) -> None:
        task, self.model_task = self.model_task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        conn, self.model = self.model, None
        self.drop_model_sock()
        self.model_ready.clear()
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    def drop_model_sock(self) -> None:
        sock, self.model_sock = self.model_sock, None
        if sock is not None:
            sock.on_text = None

    async def read_model(self) -> None:
        """The model socket's slow lane: every frame the fast lane left, in order."""
        conn = self.model
        ws = getattr(conn, "_connection", None)
        sock = self.model_sock
        # The SDK's recv_bytes adds only bookkeeping for its own reconnects, which
        # the service does not use: read the websockets connection itself.
        recv = conn.recv_bytes if ws is None else functools.partial(ws.recv, decode=False)
        try:
            while True:
                self.model_busy = False
                data = await recv()
                self.model_busy = True
                if sock is not None:
                    sock.backlog -= 1
                await self.on_model_frame(data)
        except asyncio.CancelledError:
            raise
        except _Lost:
            await self.close("stream taken over by another instance")
        except Exception as exc:
            if self.closing:
                return
            await self.model_lost(str(exc) or type(exc).__name__)

    async def model_lost(self, reason: str) -> None:
        """The Realtime socket dropped: reconnect and seed the new session from the log."""
        self.model_ready.clear()
        self.model = None
        self.drop_model_sock()
        for task in self.timers.values():  # nothing more will answer on that socket
            task.cancel()
        self.timers.clear()
        await self.input(ev.ConnectionLost, side="model", reason=reason[:200])
        try:
            await self.attach_model()
        except Exception as exc:
            log.error("call %s: model unreachable: %s", self.call_id, exc)
            await self.input(ev.ModelError, error_type="connection", message=str(exc)[:200])
            return
        self.seeded = False
        await self.input(ev.ConnectionRestored, side="model", instance=self.service.config.instance)

    async def on_model_frame(self, data: bytes) -> None:
        if self.link is not None:
            await self.link.on_frame(data)
            return
        e = realtime.parse_server_event(data)
        t = type(e)
        if t is realtime.AudioDelta:
            await self.on_bot_audio(e)  # type: ignore[arg-type]
        elif t is realtime.SpeechStarted:
            await self.input(
                ev.SpeechStarted, item_id=e.item_id or "", audio_start_ms=e.audio_start_ms or 0
            )  # type: ignore[union-attr]
            await self.to_vaic(vaic.speech_started())
        elif t is realtime.SpeechStopped:
            await self.input(
                ev.SpeechStopped, item_id=e.item_id or "", audio_end_ms=e.audio_end_ms or 0
            )  # type: ignore[union-attr]
            await self.to_vaic(vaic.speech_stopped())
        elif t is realtime.AudioCommitted:
            await self.input(ev.SpeechCommitted, item_id=e.item_id or "")  # type: ignore[union-attr]
            await self.to_vaic(vaic.speech_committed())
        elif t is realtime.InputTranscriptionCompleted:
            text = e.transcript or ""  # type: ignore[union-attr]
            await self.input(ev.Transcript, role="user", item_id=e.item_id or "", text=text)  # type: ignore[union-attr]
            await self.to_vaic(vaic.speech_recognition(text))
        elif t is realtime.ResponseCreated:
            self.answered("response.created")
            await self.input(ev.ResponseStarted, response_id=e.response.id)  # type: ignore[union-attr]
        elif t is realtime.SessionUpdated:
            self.answered("session.updated")
        elif t is realtime.InputTranscriptionFailed:
            err = e.error  # type: ignore[union-attr]
            await self.input(
                ev.TranscriptionFailed,
                item_id=e.item_id or "",  # type: ignore[union-attr]
                error_type=err.type or "",
                code=err.code or "",
                message=(err.message or "")[:500],
            )
        elif t is realtime.AudioTranscriptDone:
            await self.input(
                ev.Transcript,
                role="assistant",
                item_id=e.item_id or "",  # type: ignore[union-attr]
                text=e.transcript or "",  # type: ignore[union-attr]
                response_id=e.response_id or "",  # type: ignore[union-attr]
            )
        elif t is realtime.FunctionCallArgumentsDone:
            await self.input(
                ev.FunctionCallRequested,
                response_id=e.response_id or "",  # type: ignore[union-attr]
                item_id=e.item_id or "",  # type: ignore[union-attr]
                tool_call_id=e.call_id or "",  # type: ignore[union-attr]
                name=e.name or "",  # type: ignore[union-attr]
                arguments=e.arguments or "",  # type: ignore[union-attr]
            )
        elif t is realtime.ResponseDone:
            r = e.response  # type: ignore[union-attr]
            usage = r.usage.to_event_usage() if r.usage else ev.Usage()
            err = r.error
            await self.input(
                ev.ResponseDone,
                response_id=r.id,
                status=r.status or "",
                reason=r.reason,
                usage=usage,
                error_type=err.type or "",
                error_code=err.code or "",
                error_message=(err.message or "")[:500],
            )
        elif t is realtime.ItemTruncated:
            await self.input(ev.ItemTruncated, item_id=e.item_id, audio_end_ms=e.audio_end_ms)  # type: ignore[union-attr]
        elif t is realtime.RateLimitsUpdated:
            limits = tuple(
                ev.RateLimit(
                    name=x.name or "",
                    limit=int(x.limit or 0),
                    remaining=int(x.remaining or 0),
                    reset_seconds=float(x.reset_seconds or 0),
                )
                for x in e.rate_limits or ()  # type: ignore[union-attr]
            )
            await self.input(ev.RateLimitsUpdated, limits=limits)
        elif t is realtime.Error:
            err = e.error  # type: ignore[union-attr]
            if err.event_id and err.event_id.startswith("fa-response-"):
                self.answered("response.created")  # refused: that is an answer too
            await self.input(
                ev.ModelError,
                error_type=err.type or "",
                code=err.code or "",
                message=(err.message or "")[:500],
                event_id=err.event_id or "",
                param=err.param or "",
            )
        elif t is realtime.Malformed:
            await self.protocol_error("model", e.message)  # type: ignore[union-attr]

    async def protocol_error(self, side: str, message: str) -> None:
        """Record a frame that was rejected, with one log line (no traceback)."""
        log.warning("call %s: %s frame rejected: %s", self.call_id, side, message[:300])
        if not self.closing and self.engine.status != "ended":
            await self.input(ev.ProtocolError, side=side, message=message[:300])

    def model_text_now(self, data: bytes) -> bool:
        """Fast lane, from the model socket's data callback: a chunk of the audio
        being played is recorded and forwarded with no await.  Anything else, or
        anything while the slow lane holds earlier frames, is left to read_model."""
        sock = self.model_sock
        if self.model_busy or sock is None or sock.backlog or self.closing or self.lost:
            return False
        if self.link is not None:
            return False  # GPT-Live frames take the ordered slow lane (the link)
        caller = self.caller_sock
        if caller is None or not caller.can_write_now():
            return False
        e = realtime.parse_server_event(data)
        if type(e) is not realtime.AudioDelta:
            return False
        if realtime.audio_delta_error(e, self.model_sample_bytes()):  # type: ignore[arg-type]
            return False  # the slow lane records it as a protocol error
        pb = self.engine.play
        if pb is None or not pb.open or pb.item_id != e.item_id:  # type: ignore[union-attr]
            return False  # a new stream starts, or audio nobody hears: decisions to act on
        b64 = e.delta  # type: ignore[union-attr]
        if self.to_caller is not None:
            b64 = self.to_caller.process_b64(b64)
        frame = self.vaic_proto().play_chunk(b64)  # before the record: it may raise
        if self.record_now(self.bot_audio_input(e)):  # type: ignore[arg-type]
            self.write_now(caller, frame)
        return True

    def bot_audio_input(self, e: realtime.AudioDelta) -> ev.BotAudio:
        self.chunks_out += 1
        nbytes = audio.b64_decoded_len(e.delta)
        model_fmt = self.engine.model_format
        return ev.BotAudio(
            call_id=self.call_id,
            seq=self.engine.next_seq,
            at=now_us(),
            response_id=e.response_id,
            item_id=e.item_id,
            chunk=self.chunks_out,
            nbytes=nbytes,
            duration_us=audio.duration_us(nbytes, model_fmt),
            fmt=model_fmt,
        )

    def model_sample_bytes(self) -> int:
        """Bytes per sample of the model's audio: bot audio must be whole samples."""
        return 1 if self.engine.model_format == "audio/pcmu" else 2

    async def on_bot_audio(self, e: realtime.AudioDelta) -> None:
        """Hot path (slow lane): record the boundary; forward the base64 if it is played."""
        err = realtime.audio_delta_error(e, self.model_sample_bytes())
        if err is not None:  # dropped: the caller never hears what is not audio
            await self.protocol_error("model", err)
            return
        b64 = e.delta
        decisions = self.record(self.bot_audio_input(e))
        if decisions:
            await self.execute(decisions)
        pb = self.engine.play
        if pb is None or not pb.open or pb.item_id != e.item_id:
            return  # interrupted or not ours: the caller must not hear it
        if self.to_caller is not None:
            b64 = self.to_caller.process_b64(b64)
        await self.to_vaic(self.vaic_proto().play_chunk(b64))

    # -------------------------------------------------------------- lifecycle

    async def close(self, why: str) -> None:
        if self.closing:
            return
        self.closing = True
        log.info("call %s: closing (%s)", self.call_id, why)
        if self.grace_task is not None:
            self.grace_task.cancel()
        for task in self.timers.values():
            task.cancel()
        self.timers.clear()
        if self.link is not None:
            await self.link.close_session()
        await self.detach_model()
        with contextlib.suppress(Exception):
            await self.store.flush_async(self.call_id)
        if self.service.calls.get(self.call_id) is self:
            del self.service.calls[self.call_id]
        ws = self.detach_caller()
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()

    def start_grace(self) -> None:
        """The caller dropped: wait for a resume; end the call when the grace is over.

        Meanwhile watch the log: if another instance resumed the call, let go of it
        (model socket included) at once instead of at the end of the grace.
        """
        grace = self.policy.grace_s

        async def expire() -> None:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + grace
            while (left := deadline - loop.time()) > 0:
                await asyncio.sleep(min(left, GRACE_POLL_S))
                if self.caller is not None or self.closing:
                    return
                if await self.taken_over():
                    await self.close("call resumed on another instance")
                    return
            if self.caller is None and not self.closing:
                await self.input(ev.GraceExpired, seconds=grace)

        self.grace_task = asyncio.create_task(self._guard(expire()))

    async def claim(self, batch: list[ev.Event]) -> None:
        """Append at once (not group-committed) and apply: raises StreamConflict if
        anyone else wrote to the call's stream since this instance last did."""
        await asyncio.to_thread(self.store.append_now, batch)
        self.applied(batch)

    async def taken_over(self) -> bool:
        """True if another writer appended to this call's stream after us."""
        if self.lost or self.store.conflicted(self.call_id):
            return True
        try:
            stored = await asyncio.to_thread(self.store.last_seq, self.call_id)
        except StoreError:
            return False  # cannot tell; the next write will
        return stored >= self.engine.next_seq

    async def save_snapshot(self) -> None:
        """Snapshot the call's state once what it reflects is durable (see snapshots.py)."""
        data = snapshots.take(self.engine, self.state, self.chunks_in, self.chunks_out)
        if data is None:
            return
        seq = self.engine.next_seq - 1

        def write() -> None:
            self.store.flush(self.call_id)  # StreamConflict if the call is no longer ours
            self.store.write_snapshot(self.call_id, seq, data)

        try:
            await asyncio.to_thread(write)
        except StreamConflict:
            self.lost = True
        except StoreError as exc:
            log.warning("call %s: snapshot not written: %s", self.call_id, exc)
            return
        self.snapshot_seq = seq

    def keep_snapshots(self) -> None:
        """Snapshot every SNAPSHOT_EVERY events or so, bounding what a resume after a
        crash must replay."""

        async def loop() -> None:
            while not self.closing:
                await asyncio.sleep(SNAPSHOT_CHECK_S)
                if self.engine.next_seq - 1 - self.snapshot_seq >= SNAPSHOT_EVERY:
                    await self.save_snapshot()

        self.spawn(loop())


# ------------------------------------------------------------------ the socket


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

    def chunk_now(data: bytes) -> bool:
        """Fast lane, from the socket's data callback: an audio chunk while the slow
        lane is idle goes straight to the session (see fastagent.sockets)."""
        if busy or session is None or session.caller is not ws or sock is None or sock.backlog():
            return False  # (a session gone or moved on leaves the socket to the slow lane)
        msg = proto.receive_chunk(data)
        return msg is not None and session.caller_audio_now(msg)

    if sock is not None:
        sock.on_text = chunk_now
    try:
        while True:
            busy = False
            message = await receive()
            busy = True
            data = message.get("text")
            if data is None:
                if message["type"] == "websocket.disconnect":
                    break
                data = message.get("bytes") or b""
            msg = parse(data)
            if type(msg) is chunk:  # hot path
                if session is not None:
                    await session.on_caller_audio(msg)  # type: ignore[arg-type]
                continue
            if isinstance(msg, vaic.ProtocolViolation):
                if session is not None:
                    await session.protocol_error("caller", msg.message)
                else:
                    log.warning("VAIC frame rejected: %s", msg.message[:300])
                if msg.reply is not None:
                    await ws.send_text(msg.reply.decode())
                continue
            if isinstance(msg, vaic.ConnectionValidate):
                await ws.send_text(vaic.connection_validated().decode())
            elif isinstance(msg, vaic.SessionInitiate):
                session = await initiate(service, ws, proto, msg)
            elif isinstance(msg, vaic.SessionResume):
                session = await resume(service, ws, proto, msg)
            elif session is None:
                continue
            elif isinstance(msg, vaic.SessionEnd):
                ended = True
                await session.input(ev.SessionEnded, reason_code=msg.reasonCode, reason=msg.reason)
                break
            elif isinstance(msg, vaic.UserStreamStart):
                await session.input(ev.CallerStreamStarted)
                await ws.send_text(vaic.user_stream_started(msg.participant).decode())
            elif isinstance(msg, vaic.UserStreamStop):
                await session.input(ev.CallerStreamStopped)
                await ws.send_text(vaic.user_stream_stopped(msg.participant).decode())
            elif isinstance(msg, vaic.Activities):
                for act in msg.activities:
                    if act.is_start:
                        await session.input(
                            ev.CallStarted,
                            caller=act.caller,
                            callee=act.callee,
                            parameters=dict(act.parameters),
                        )
                    elif act.is_dtmf:
                        if act.dtmf_error:
                            await session.protocol_error("caller", act.dtmf_error)
                        else:
                            await session.input(ev.Dtmf, digits=act.digits)
    except WebSocketDisconnect:
        pass
    except _Lost:
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
    if session is None or session.closing:
        return
    if session.caller is ws:
        await caller_gone(session, "socket closed" if failed is None else failed, ended)


async def caller_gone(session: CallSession, reason: str, ended: bool = False) -> None:
    """The caller's socket is gone (closed, failed, or gone silent): record it and
    start the grace timer; the model socket is closed when the grace ends."""
    session.detach_caller()
    session.proto = None
    if ended or session.engine.status == "ended":
        return
    try:
        await session.input(ev.ConnectionLost, side="caller", reason=reason[:200])
    except _Lost:
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
        session.spawn(session.save_snapshot())  # a resume elsewhere reads only the tail


async def initiate(
    service: Service, ws: WebSocket, proto: vaic.VaicProtocol, msg: vaic.SessionInitiate
) -> CallSession | None:
    call_id = msg.conversationId
    try:
        known = call_id in service.calls or await asyncio.to_thread(service.store.last_seq, call_id)
    except StoreError as exc:
        log.error("call %s: store unavailable: %s", call_id, exc)
        await ws.send_text(vaic.session_error("service unavailable").decode())
        return None
    if known:
        await ws.send_text(vaic.session_error("conversation already exists").decode())
        return None
    cfg = service.config
    session = CallSession(service, call_id, Engine(call_id))
    session.attach_caller(ws, proto)
    service.calls[call_id] = session
    config = ev.CallConfig(
        agent=cfg.agent,
        greet=cfg.greet,
        transfer_target=cfg.transfer_target,
        voice=cfg.voice or "marin",
        model=cfg.model,
        model_timeout_s=cfg.model_timeout_s,
        playback_speed=cfg.playback_speed,
        grace_s=cfg.grace_s,
        tool_timeout_s=cfg.tool_timeout_s,
        model_retries=cfg.model_retries,
    )
    await session.input(
        ev.SessionInitiated,
        config=config,
        caller=msg.caller,
        bot_name=msg.botName,
        offered_formats=tuple(msg.supportedMediaFormats),
        expect_audio=msg.expectAudioMessages,
        instance=cfg.instance,
    )
    if session.engine.status == "ended":
        return None
    await start_model_and_tools(session)
    session.keep_snapshots()
    return session


async def start_model_and_tools(session: CallSession) -> None:
    agent = session.engine.agent
    assert agent is not None
    if agent.servers:
        try:
            # The hub is keyed by the configured reference ("banking" or
            # "mypkg.agents:AGENT"), as run_tool looks it up; never by Agent.name.
            hub = await session.service.hub(session.state.agent)
            listed = await hub.list_tools()
        except Exception as exc:
            log.warning("call %s: tools unavailable: %s", session.call_id, exc)
            listed = {}
        for server, specs in listed.items():
            await session.input(ev.ToolsListed, server=server, tools=tuple(specs))


async def resume(
    service: Service, ws: WebSocket, proto: vaic.VaicProtocol, msg: vaic.SessionResume
) -> CallSession | None:
    """``session.resume``: re-attach the call, from memory if this instance still
    drives it, else rebuilt from the store (snapshot + tail) and claimed."""
    call_id = msg.conversationId
    session = service.calls.get(call_id)
    if session is not None and not session.closing:
        if session.grace_task is not None:
            session.grace_task.cancel()
        if not await session.taken_over():
            try:
                # This instance owns the stream: record in order like any input (the
                # model reader may be recording too), then make it durable, which
                # fails if a resume elsewhere claimed the call a moment ago.
                dropped: list[ev.Decision] = []
                if session.caller is not None and session.caller is not ws:
                    # The old socket never reported its end (half-open TCP, or its
                    # close is still queued): the caller says it is gone, so record
                    # that first, which stops the play stream it was hearing.
                    dropped = session.record(
                        ev.ConnectionLost(
                            call_id=call_id,
                            seq=session.engine.next_seq,
                            at=now_us(),
                            side="caller",
                            reason="replaced by session.resume",
                        )
                    )
                inp = ev.SessionResumed(
                    call_id=call_id,
                    seq=session.engine.next_seq,
                    at=now_us(),
                    instance=service.config.instance,
                )
                decisions = session.record(inp)
                await session.store.flush_async(call_id)
            except (StreamConflict, _Lost):
                await session.close("call resumed on another instance")
                await ws.send_text(
                    vaic.session_error("call is active on another instance").decode()
                )
                return None
            await session.execute(dropped)  # (play_stop to the old socket, if it listens)
            old = session.caller
            session.attach_caller(ws, proto)
            if old is not None and old is not ws:
                with contextlib.suppress(Exception):
                    await old.close()
            await session.execute(decisions)
            return session
        # It moved to another instance and back: this copy is stale.
        await session.close("call resumed on another instance")
    return await resume_from_store(service, ws, proto, call_id)


async def dial_model(service: Service) -> Any:
    """A Realtime connection on the service's shared SDK client (a GPT-Live call's
    link dials its own: ``LiveLink.dial``)."""
    if live_proto.is_live_model(service.config.model):
        raise RuntimeError("GPT-Live calls are dialled by their link")
    return await realtime.connect_realtime(
        model=service.config.model,
        client=service.openai_client(),
        connection_class=sockets.ModelConnection,
    )


async def quiet_for(store: EventStore, call_id: str, last: int) -> bool:
    """True if nobody appends to the call for LIVE_S seconds (its driver is gone).

    A call not suspended is either driven by a live instance (whose caller streams
    audio, so its log grows every few tens of ms) or was left by a crashed one.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + LIVE_S
    while loop.time() < deadline:
        await asyncio.sleep(0.1)
        try:
            if await asyncio.to_thread(store.last_seq, call_id) > last:
                return False
        except StoreError:
            return False
    return True


async def resume_from_store(
    service: Service, ws: WebSocket, proto: vaic.VaicProtocol, call_id: str
) -> CallSession | None:
    store, cfg = service.store, service.config
    instance = cfg.instance
    # Dial the model while the call is rebuilt: most of a resume's latency is this socket.
    dial = asyncio.create_task(dial_model(service))

    async def refuse(reason: str) -> None:
        await ws.send_text(vaic.session_error(reason).decode())
        dial.cancel()
        with contextlib.suppress(BaseException):
            conn = await dial
            await conn.close()

    for attempt in range(CLAIM_ATTEMPTS):
        try:
            await asyncio.to_thread(store.reclaim, call_id)
            rebuilt = await asyncio.to_thread(snapshots.rebuild, store, call_id)
        except UnknownCall:
            await refuse("conversation not found")
            return None
        except StoreError as exc:
            log.error("call %s: cannot resume: %s", call_id, exc)
            await refuse("store unavailable")
            return None
        engine = rebuilt.engine
        if rebuilt.divergence:
            # Today's agent decides differently from the one that drove the call:
            # its state cannot be rebuilt faithfully here (a deploy changed the FSA).
            log.error("call %s: %s; not resumed here", call_id, rebuilt.divergence)
            await refuse("call cannot be resumed on this version of the agent")
            return None
        if engine is None or engine.status == "ended" or engine.agent is None:
            await refuse("conversation has ended")
            return None
        read_to = engine.next_seq - 1
        if engine.status != "suspended" and not await quiet_for(store, call_id, read_to):
            # Not suspended and its log still grows: an instance drives it with a caller.
            await refuse("call is active on another instance")
            return None
        batch: list[ev.Event] = []
        at = now_us()
        if engine.status == "active":
            # The instance that had the caller died without recording the drop.
            lost = ev.ConnectionLost(
                call_id=call_id, seq=engine.next_seq, at=at, side="caller", reason="instance lost"
            )
            batch += [lost, *engine.handle(lost)]
        resumed = ev.SessionResumed(call_id=call_id, seq=engine.next_seq, at=at, instance=instance)
        decisions = engine.handle(resumed)
        batch += [resumed, *decisions]
        session = CallSession(service, call_id, engine)
        session.state = rebuilt.state
        try:
            # Claim the call: a synchronous append fails if anyone wrote after our read.
            await session.claim(batch)
            break
        except StreamConflict:
            pass
        except StoreError as exc:
            log.error("call %s: cannot resume: %s", call_id, exc)
            await refuse("store unavailable")
            return None
        # Who wrote?  Another resume (a claim) wins: back off.  An old owner still
        # finishing its writes (its caller is gone) is overtaken: read again, retry.
        try:
            newer = await asyncio.to_thread(store.read_call, call_id, read_to)
        except StoreError:
            newer = []
        if any(isinstance(e, ev.SessionResumed) for e in newer):
            await refuse("call is active on another instance")
            return None
        await asyncio.sleep(0.02 * 2**attempt)
    else:
        await refuse("call is active on another instance")
        return None
    session.chunks_in, session.chunks_out = rebuilt.chunks_in, rebuilt.chunks_out
    session.snapshot_seq = rebuilt.from_snapshot
    session.attach_caller(ws, proto)
    service.calls[call_id] = session
    await session.execute(decisions)  # session.accepted, and held calls the drop left
    # Whatever model session there was is not ours: record it gone, so the engine
    # drops a response in progress and owes the caller a new one.
    await session.input(ev.ConnectionLost, side="model", reason=f"call resumed on {instance}")
    if session.link is not None:
        # A GPT-Live call: its link dials (a new session, or a fork of the stored one).
        dial.cancel()
        with contextlib.suppress(BaseException):
            await (await dial).close()
        try:
            await session.attach_model()
        except Exception as exc:  # configuring the model dials again, with backoff
            log.warning("call %s: model connect failed (%s)", call_id, exc)
    else:
        try:
            conn = await dial
        except Exception as exc:  # configuring the model dials again, with backoff
            log.warning("call %s: model connect failed (%s)", call_id, exc)
        else:
            session.use_model(conn)
    for d in rebuilt.pending:
        # Decided and durable, but its result never made it to the log: run it again
        # with the same idempotency key (the backend answers a repeat with the first result).
        session.spawn(session.run_tool(d))
    if not engine.external:  # tools are in the log already; list only if never listed
        await start_model_and_tools(session)
    # A new model session: configure it and seed it with the conversation so far.
    await session.input(ev.ConnectionRestored, side="model", instance=instance)
    session.keep_snapshots()
    return session


# ----------------------------------------------------------------------- app


VAIC_PATH = "/audiocodes"


class _App(FastAPI):
    """FastAPI, with the VAIC socket taken before the middleware stack.

    Starlette wraps ``send`` and ``receive`` in every middleware (exceptions, exit
    stacks, body limits, telemetry): each audio frame then went through six nested
    coroutines each way, the service's largest framework cost (bench_bridge at 50
    calls). The call socket needs none of them, so it gets the server's own
    ``receive``/``send``; every other request goes through FastAPI as usual.
    """

    vaic_handler: Callable[[WebSocket], Awaitable[None]] | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        handler = self.vaic_handler
        if (
            handler is not None
            and scope["type"] == "websocket"
            and scope["path"].removeprefix(scope.get("root_path", "")) == VAIC_PATH
        ):
            await handler(WebSocket(scope, receive, send))
            return
        await super().__call__(scope, receive, send)


def create_app(config: ServiceConfig, store: EventStore | None = None) -> FastAPI:
    """The FastAPI app: ``/audiocodes`` (VAIC token), ``/healthz``; ``/mcp``, the call
    inspector's ``/inspect/api/`` and, with
    ``api_docs``, ``/docs``, ``/redoc``, ``/openapi.json`` behind the read credential
    (404 while none is configured; see fastagent.access)."""
    holder: dict[str, Service] = {}
    readers = read_access(config)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        service = Service(config, store)
        warning = models.shutdown_warning(config.model)
        if warning:
            log.warning(warning)
        holder["service"] = service
        app.state.service = service
        await asyncio.to_thread(service.openai_client)  # built once, off the event loop
        mcp_ctx = getattr(app.state, "mcp_lifespan", None)
        if mcp_ctx is not None:
            async with mcp_ctx():
                yield
        else:
            yield
        await service.aclose()
        if store is None:
            service.store.close()

    async def audiocodes(ws: WebSocket) -> None:
        service = holder.get("service")
        if service is None:  # the lifespan has not run: nothing to serve the call with
            await ws.close(code=1011)
            return
        if not service.authorized(ws.headers.get("authorization")):
            await ws.send_denial_response(PlainTextResponse("unauthorized", status_code=401))
            return
        await ws.accept()
        try:
            await serve_caller(service, ws)
        except Exception as exc:  # one bad call must never take the service down
            log.error("VAIC socket failed: %s: %s", type(exc).__name__, exc)
            with contextlib.suppress(Exception):
                await ws.close(code=1011)
        finally:  # also when cancelled: no frame goes to a finished handler's hook
            sock = sockets.caller_protocol_of(ws._receive)
            if sock is not None:
                sock.on_text = None

    app = _App(title="FastAgent", lifespan=lifespan, **access.docs_kwargs(config.api_docs))
    app.vaic_handler = audiocodes
    app.state.read_access = readers  # for access.require_reader in other routes

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        service = holder.get("service")
        calls = len(service.calls) if service else 0
        return JSONResponse({"ok": True, "calls": calls})

    _mount_mcp(app, readers, holder)
    _mount_inspector(app, readers, holder, config)
    if config.api_docs:
        app.add_middleware(_DocsGuard, readers=readers)
    return app


class _DocsGuard:
    """ASGI middleware: the API docs paths only for holders of the read credential."""

    def __init__(self, app: Any, readers: access.ReadAccess) -> None:
        self.app = readers.guard_paths(app, access.DOCS_PATHS)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)


def _mount_inspector(
    app: FastAPI, readers: access.ReadAccess, holder: dict[str, Service], config: ServiceConfig
) -> None:
    """The call inspector at ``/inspect/`` (see fastagent.inspector): its API behind
    the read credential, off (404) while none is configured."""
    from fastagent.inspector import builtin_agents, inspector_app, mount

    inspector = inspector_app(
        lambda: holder["service"].store, readers, agents=builtin_agents(config.agent)
    )
    mount(app, inspector)


def _mount_mcp(app: FastAPI, readers: access.ReadAccess, holder: dict[str, Service]) -> None:
    """Serve the "fastagent" MCP server at ``/mcp``, behind the read credential (not
    the VAIC token, which admits calls only); off (404) while none is configured."""
    try:
        from fastagent.mcp_server import build_mcp_server, make_mcp_app
    except ImportError:
        return
    server = build_mcp_server(lambda: holder["service"].store)
    mcp_app = make_mcp_app(server)
    # Mounted sub-app lifespans do not run: the service's lifespan runs its sessions.
    app.state.mcp_lifespan = server.session_manager.run

    app.mount("/mcp", readers.guard(mcp_app))


def app_from_env() -> FastAPI:
    """The app of one worker process of ``fastagent serve --workers N``."""
    no_auth = os.environ.get("FASTAGENT_NO_AUTH") == "1"
    app = create_app(ServiceConfig.from_env(no_auth=no_auth or None))
    tune_gc()
    return app


def tune_gc() -> None:
    """Keep full garbage collections off the audio path's tail latency.

    A full collection walks every tracked object: with the SDKs loaded and 200
    calls that took ~100 ms, and ran every few seconds (bench_bridge at 200 calls:
    p99 27 ms, p99.9 105 ms).  The objects built at start-up live for ever, so
    they are frozen out of collection; and a full collection runs after 100
    middle-generation ones instead of 10.  Cycles are still collected, later
    (p99 7.9 ms, p99.9 11 ms in the same bench).  Called by ``fastagent serve``
    once the app is built; a library user's process is left as it is.
    """
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, 100)


def new_call_id() -> str:
    return str(uuid.uuid4())


__all__ = [
    "CallSession",
    "ConfigError",
    "Service",
    "ServiceConfig",
    "StoreError",
    "create_app",
    "tune_gc",
]
