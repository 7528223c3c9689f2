"""The service's settings: flags and ``FASTAGENT_*`` environment variables."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

from fastagent import access, models, vaic
from fastagent.errors import ConfigError

log = logging.getLogger("fastagent.service")


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
    # Timeouts and caps of the caller socket (docs/operations.md, "Limits").
    initiate_timeout_s: float = 10.0  # upgrade -> session.initiate/resume, else closed
    caller_idle_s: float = 30.0  # no frame at all for this long: the caller is lost
    resume_stale_s: float = 2.0  # a socket silent this long may be replaced by a resume
    max_sockets: int = 250  # concurrent VAIC sockets per process; past it HTTP 503
    max_msgs_per_s: float = 400.0  # per caller socket (VAIC streams ~50/s); past it closed
    # Protocol violations recorded per socket (either side) in a minute, bursts
    # included; past it the socket is failed (caller: dropped; model: ModelError).
    max_violations_per_min: int = 60
    model_max_frame_bytes: int = 1 << 20  # one Realtime frame
    # Messages per second from one model socket (bursts up to two seconds' worth);
    # past it the socket is failed (a ModelError, the agent's fallback).
    model_max_msgs_per_s: float = 2000.0
    tool_timeout_s: float | None = None  # None: the core's, like grace_s
    model_retries: int | None = None  # None: the core's, like grace_s
    # A session.update or response.create the model does not answer within this
    # many seconds is a model failure (the agent's fallback; outcome failed).
    model_timeout_s: float | None = None  # None: the core's, like grace_s
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
            "FASTAGENT_INITIATE_TIMEOUT_S": repr(self.initiate_timeout_s),
            "FASTAGENT_CALLER_IDLE_S": repr(self.caller_idle_s),
            "FASTAGENT_RESUME_STALE_S": repr(self.resume_stale_s),
            "FASTAGENT_MAX_SOCKETS": str(self.max_sockets),
            "FASTAGENT_MAX_MSGS_PER_S": repr(self.max_msgs_per_s),
            "FASTAGENT_MAX_VIOLATIONS_PER_MIN": str(self.max_violations_per_min),
            "FASTAGENT_MODEL_MAX_FRAME_BYTES": str(self.model_max_frame_bytes),
            "FASTAGENT_MODEL_MAX_MSGS_PER_S": repr(self.model_max_msgs_per_s),
            "FASTAGENT_MODEL": self.model,
            "FASTAGENT_NO_AUTH": "1" if self.no_auth else "0",
            "FASTAGENT_LIVE_BACKEND_MODEL": self.live_backend_model,
            "FASTAGENT_LIVE_STORE": "1" if self.live_store else "0",
            "FASTAGENT_LIVE_IDLE_MS": str(self.live_idle_ms),
        }
        if self.store:
            env["FASTAGENT_STORE"] = self.store
        if self.grace_s is not None:
            env["FASTAGENT_GRACE_S"] = repr(self.grace_s)
        if self.model_timeout_s is not None:
            env["FASTAGENT_MODEL_TIMEOUT_S"] = repr(self.model_timeout_s)
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

        def positive(v: float) -> bool:
            return 0 < v < inf

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
                None,
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
            initiate_timeout_s=number(
                "FASTAGENT_INITIATE_TIMEOUT_S", 10, float, "seconds (a number > 0)", positive
            ),
            caller_idle_s=number(
                "FASTAGENT_CALLER_IDLE_S", 30, float, "seconds (a number > 0)", positive
            ),
            resume_stale_s=number(
                "FASTAGENT_RESUME_STALE_S", 2, float, "seconds (a number > 0)", positive
            ),
            max_sockets=number(
                "FASTAGENT_MAX_SOCKETS", 250, int, "a whole number > 0", lambda v: v > 0
            ),
            max_msgs_per_s=number(
                "FASTAGENT_MAX_MSGS_PER_S", 400, float, "messages per second (> 0)", positive
            ),
            max_violations_per_min=number(
                "FASTAGENT_MAX_VIOLATIONS_PER_MIN", 60, int, "a whole number > 0", lambda v: v > 0
            ),
            model_max_frame_bytes=number(
                "FASTAGENT_MODEL_MAX_FRAME_BYTES",
                1 << 20,
                int,
                "a whole number of bytes > 0",
                lambda v: v > 0,
            ),
            model_max_msgs_per_s=number(
                "FASTAGENT_MODEL_MAX_MSGS_PER_S",
                2000,
                float,
                "messages per second (> 0)",
                positive,
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


def read_access(config: ServiceConfig) -> access.ReadAccess:
    """The read credentials of ``config``; ConfigError (one line) if malformed or
    equal to the VAIC token."""
    try:
        return access.ReadAccess.parse(config.read_token, vaic_token=config.token)
    except access.AccessError as exc:
        raise ConfigError(str(exc)) from None
