"""Operations telemetry: Prometheus metrics, OpenTelemetry traces, structured logs.

Everything here is derived from the events a call records (the service hands each
recorded batch to its observers) plus two measurements only the shell can make:
how long a frame takes from one socket to the other (relay latency) and how long a
group commit takes (store flush).  Nothing here decides anything.

* :class:`Metrics` -- a Prometheus registry per service, served at ``/metrics``
  (``prometheus-client``).  ``FASTAGENT_METRICS=0`` turns it off.
* :class:`Tracer` -- OpenTelemetry spans (optional extra ``otel``): one per call,
  per model response (a turn of the conversation) and per tool call, following the
  GenAI semantic conventions, with the times the log recorded.  On with
  ``FASTAGENT_TRACES=otlp`` (the OTLP/HTTP exporter, configured by the standard
  ``OTEL_EXPORTER_OTLP_*`` variables) or ``console``.
* :func:`configure_logging` -- one line per record, ``text`` (timestamp, level,
  logger, ``call=<id>``, message) or ``json`` (one object per line), chosen by
  ``FASTAGENT_LOG_FORMAT``; :data:`current_call` carries the call id into every
  line logged while a call's socket is served.  :func:`call_log_observer` writes a
  line when a call starts and when it ends.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from fastagent import events as ev

current_call: contextvars.ContextVar[str] = contextvars.ContextVar("fastagent_call", default="")
"""The call id the running task serves ("" outside a call)."""

log = logging.getLogger("fastagent.calls")


def _flag(name: str, default: bool) -> bool:
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    return raw not in ("0", "false", "no", "off")


# ------------------------------------------------------------------------ logging


class _CallFilter(logging.Filter):
    """Adds ``call_id`` to every record: the record's own (``extra=``), else the
    running task's :data:`current_call`."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "call_id", ""):
            record.call_id = current_call.get()
        return True


def _iso(created: float) -> str:
    return datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def one_line(text: str) -> str:
    """``text`` with every character that is not printable (newlines, ``\\r``,
    U+2028, control characters) written as its Python escape: a value from either
    socket can never start a log line of its own."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class TextFormatter(logging.Formatter):
    """``2026-12-01T00:47:00.123Z INFO fastagent.service call=<id> message``."""

    def format(self, record: logging.LogRecord) -> str:
        call = getattr(record, "call_id", "")
        line = f"{_iso(record.created)} {record.levelname} {record.name}"
        if call:  # ids come from the caller's socket: no control characters in a line
            line += f" call={call if call.isprintable() and ' ' not in call else repr(call)}"
        line += f" {one_line(record.getMessage())}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "call_id"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``msg``, ``call_id``
    (when known), the record's ``extra=`` fields, ``exc`` (a traceback, if any)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": _iso(record.created),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        call = getattr(record, "call_id", "")
        if call:
            out["call_id"] = call
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value if isinstance(value, int | float | bool | None) else str(value)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


LOG_FORMATS = ("text", "json")


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time of the record (a test runner
    may swap it), never to a stream closed since."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def configure_logging(fmt: str | None = None, level: str | int | None = None) -> None:
    """Send every logger (uvicorn's too) to stderr in ``fmt`` (``text`` or ``json``;
    default $FASTAGENT_LOG_FORMAT or ``text``) at ``level`` (default
    $FASTAGENT_LOG_LEVEL or INFO).  ValueError (one line) for an unknown format."""
    fmt = (fmt or os.environ.get("FASTAGENT_LOG_FORMAT", "") or "text").strip().lower()
    if fmt not in LOG_FORMATS:
        raise ValueError(f"bad FASTAGENT_LOG_FORMAT {fmt!r}: expected text or json")
    raw_level = level or os.environ.get("FASTAGENT_LOG_LEVEL", "") or "INFO"
    if isinstance(raw_level, str):
        resolved = logging.getLevelName(raw_level.strip().upper())
        if not isinstance(resolved, int):
            raise ValueError(f"bad FASTAGENT_LOG_LEVEL {raw_level!r}: expected DEBUG, INFO, ...")
        raw_level = resolved
    handler = _StderrHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(_CallFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        if isinstance(old, _StderrHandler) or type(old) is logging.StreamHandler:
            root.removeHandler(old)  # ours from before, or a basicConfig default
    root.addHandler(handler)
    root.setLevel(raw_level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        lg.handlers.clear()
        lg.propagate = True


def call_log_observer() -> Callable[[ev.Event], None]:
    """An observer that logs one line when a call starts (or resumes) and one when it
    ends: call id, agent, instance, outcome, reason, duration.  No personal data
    (the caller's number is not logged)."""
    started: dict[str, int] = {}

    def observe(e: ev.Event) -> None:
        t = type(e)
        if t is ev.SessionInitiated:
            started[e.call_id] = e.at
            log.info(
                "call started (agent %s)",
                e.config.agent,  # type: ignore[attr-defined]
                extra={"call_id": e.call_id, "agent": e.config.agent, "event": "call_started"},  # type: ignore[attr-defined]
            )
        elif t is ev.SessionResumed:
            started.setdefault(e.call_id, e.at)
            log.info(
                "call resumed on %s",
                e.instance or "this instance",  # type: ignore[attr-defined]
                extra={"call_id": e.call_id, "event": "call_resumed"},
            )
        elif t is ev.CallEnded:
            begin = started.pop(e.call_id, e.at)
            seconds = round((e.at - begin) / 1e6, 3)
            log.info(
                "call ended: %s (%s) after %.1f s",
                e.outcome or "-",  # type: ignore[attr-defined]
                e.reason,  # type: ignore[attr-defined]
                seconds,
                extra={
                    "call_id": e.call_id,
                    "event": "call_ended",
                    "outcome": e.outcome,  # type: ignore[attr-defined]
                    "duration_s": seconds,
                },
            )

    return observe


# ------------------------------------------------------------------------ metrics

# Seconds.  Relay: tens of µs in the fast lane, ms when the loop is busy.
_RELAY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)
_MODEL_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10)
_TOOL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_FLUSH_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5)

_LABEL_OK = re.compile(r"^[a-z0-9_.:\-]{1,48}$")
_MAX_KINDS = 32  # model error kinds come from the model: a hostile server must not
# grow the registry without bound


class Metrics:
    """The service's Prometheus metrics, fed by :meth:`observe` (an observer of every
    recorded event) and the shell's :meth:`relay_to_model` / :meth:`relay_to_caller`.

    Metric names (all prefixed ``fastagent_``): ``active_calls``, ``calls_total``
    {agent, outcome}, ``relay_seconds`` {direction}, ``model_first_audio_seconds``,
    ``turn_latency_seconds``, ``tool_seconds`` {tool}, ``tool_errors_total`` {tool},
    ``store_flush_seconds``, ``store_queue_depth``, ``protocol_violations_total``
    {side}, ``model_errors_total`` {kind}, ``draining``.
    """

    def __init__(self, active: Callable[[], int], draining: Callable[[], bool]) -> None:
        from prometheus_client import (
            CollectorRegistry,
            Counter,
            Gauge,
            Histogram,
            disable_created_metrics,
        )

        disable_created_metrics()  # the *_created series double the output for nothing here
        self.registry = r = CollectorRegistry(auto_describe=True)
        Gauge(
            "fastagent_active_calls", "Calls driven by this process now", registry=r
        ).set_function(active)
        Gauge(
            "fastagent_draining", "1 while the instance drains (SIGTERM)", registry=r
        ).set_function(lambda: 1.0 if draining() else 0.0)
        self.calls = Counter(
            "fastagent_calls", "Calls ended, by agent and outcome", ["agent", "outcome"], registry=r
        )
        relay = Histogram(
            "fastagent_relay_seconds",
            "Audio frame from one socket to the other: observed -> recorded -> sent "
            "(one frame in 32 sampled)",
            ["direction"],
            buckets=_RELAY_BUCKETS,
            registry=r,
        )
        self._to_model = relay.labels("to_model").observe
        self._to_caller = relay.labels("to_caller").observe
        self._n_model = self._n_caller = 0
        self.first_audio = Histogram(
            "fastagent_model_first_audio_seconds",
            "Model time to first audio: response.created -> first output_audio.delta",
            buckets=_MODEL_BUCKETS,
            registry=r,
        )
        self.turn = Histogram(
            "fastagent_turn_latency_seconds",
            "Caller speech_stopped -> first audio delta of the answer",
            buckets=_MODEL_BUCKETS,
            registry=r,
        )
        self.tool = Histogram(
            "fastagent_tool_seconds",
            "Tool call duration",
            ["tool"],
            buckets=_TOOL_BUCKETS,
            registry=r,
        )
        self.tool_errors = Counter(
            "fastagent_tool_errors", "Tool calls that failed", ["tool"], registry=r
        )
        self.flush = Histogram(
            "fastagent_store_flush_seconds",
            "One group commit of the event log",
            buckets=_FLUSH_BUCKETS,
            registry=r,
        )
        self.flushed = Counter(
            "fastagent_store_events_written", "Events written to the log", registry=r
        )
        self._queue = Gauge(
            "fastagent_store_queue_depth", "Events waiting for the next group commit", registry=r
        )
        self.violations = Counter(
            "fastagent_protocol_violations",
            "Frames that could not be understood, by socket",
            ["side"],
            registry=r,
        )
        self.model_errors = Counter(
            "fastagent_model_errors",
            "Model-side failures by kind (error type, failed response, timeout, connection)",
            ["kind"],
            registry=r,
        )
        self._kinds: set[str] = set()
        # Per call: response id -> response.created time (awaiting its first audio);
        # the last speech_stopped time awaiting an answer.
        self._responses: dict[str, int] = {}
        self._stopped: dict[str, int] = {}
        self._agents: dict[str, str] = {}

    # -- the shell's measurements (hot path: one clock read and one observe)

    # One frame in RELAY_SAMPLE (a power of two) is timed: a histogram observation
    # costs ~3 µs with prometheus-client's lock, which on every frame was ~8 % of the
    # service's CPU at 50 calls (1 in 8: ~0.3 µs a frame still); 1 in 32 keeps ~90
    # samples a minute per call and direction, thousands across calls.
    RELAY_SAMPLE = 32

    def relay_to_model(self, observed_us: int) -> None:
        n = self._n_model = self._n_model + 1
        if not n & (self.RELAY_SAMPLE - 1):
            self._to_model((time.time_ns() // 1000 - observed_us) / 1e6)

    def relay_to_caller(self, observed_us: int) -> None:
        n = self._n_caller = self._n_caller + 1
        if not n & (self.RELAY_SAMPLE - 1):
            self._to_caller((time.time_ns() // 1000 - observed_us) / 1e6)

    def watch_store(self, store: Any) -> None:
        """Flush latency from the store's write hook; queue depth read at scrape time."""

        def written(seconds: float, rows: int) -> None:
            self.flush.observe(seconds)
            self.flushed.inc(rows)

        store.on_write = written
        self._queue.set_function(lambda: store.queue_depth)

    def _kind(self, raw: str) -> str:
        kind = raw.strip().lower() or "unknown"
        if not _LABEL_OK.match(kind):
            return "other"
        if kind not in self._kinds:
            if len(self._kinds) >= _MAX_KINDS:
                return "other"
            self._kinds.add(kind)
        return kind

    # -- an observer of every recorded event

    def observe(self, e: ev.Event) -> None:
        t = type(e)
        if t is ev.CallerAudio:
            return
        if t is ev.BotAudio:
            if self._responses:
                started = self._responses.pop(e.response_id, None)  # type: ignore[attr-defined]
                if started is not None:
                    self.first_audio.observe((e.at - started) / 1e6)
                    stopped = self._stopped.pop(e.call_id, None)
                    if stopped is not None:
                        self.turn.observe((e.at - stopped) / 1e6)
            return
        if t is ev.ResponseStarted:
            self._responses[e.response_id] = e.at  # type: ignore[attr-defined]
        elif t is ev.SpeechStopped:
            self._stopped[e.call_id] = e.at
        elif t is ev.ResponseDone:
            self._responses.pop(e.response_id, None)  # type: ignore[attr-defined]
            if e.status == "failed":  # type: ignore[attr-defined]
                self.model_errors.labels(self._kind(e.error_type or "response_failed")).inc()  # type: ignore[attr-defined]
        elif t is ev.ToolResult:
            name = e.name if _LABEL_OK.match(e.name) else "other"  # type: ignore[attr-defined]
            self.tool.labels(name).observe(e.duration_us / 1e6)  # type: ignore[attr-defined]
            if not e.ok:  # type: ignore[attr-defined]
                self.tool_errors.labels(name).inc()
        elif t is ev.ProtocolError:
            self.violations.labels(e.side).inc()  # type: ignore[attr-defined]
        elif t is ev.ModelError:
            self.model_errors.labels(self._kind(e.error_type)).inc()  # type: ignore[attr-defined]
        elif t is ev.ModelTimeout:
            self.model_errors.labels("timeout").inc()
        elif t is ev.TranscriptionFailed:
            self.model_errors.labels("transcription_failed").inc()
        elif t is ev.SessionInitiated:
            self._agents[e.call_id] = e.config.agent  # type: ignore[attr-defined]
        elif t is ev.CallEnded:
            agent = self._agents.pop(e.call_id, "")
            self.calls.labels(agent or "unknown", e.outcome or "unknown").inc()  # type: ignore[attr-defined]
            self._stopped.pop(e.call_id, None)

    def forget(self, call_id: str) -> None:
        """A call left this process (closed, or moved to another instance)."""
        self._stopped.pop(call_id, None)
        self._agents.pop(call_id, None)

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class NoMetrics:
    """Metrics switched off (``FASTAGENT_METRICS=0``): every hook does nothing."""

    registry = None

    def relay_to_model(self, observed_us: int) -> None:
        pass

    def relay_to_caller(self, observed_us: int) -> None:
        pass

    def watch_store(self, store: Any) -> None:
        pass

    def observe(self, e: ev.Event) -> None:
        pass

    def forget(self, call_id: str) -> None:
        pass


def metrics_enabled() -> bool:
    """$FASTAGENT_METRICS (default on)."""
    return _flag("FASTAGENT_METRICS", True)


# ------------------------------------------------------------------------- traces


class Tracer:
    """OpenTelemetry spans from a call's events, with the log's own times.

    * ``invoke_agent <agent>`` -- the call, from ``SessionInitiated`` to ``CallEnded``
      (or until the call leaves this process): ``gen_ai.operation.name=invoke_agent``,
      ``gen_ai.agent.name``, ``gen_ai.conversation.id`` (the call id),
      ``gen_ai.provider.name=openai``, ``gen_ai.request.model``; its outcome.
    * ``chat <model>`` -- each model response (a turn): ``response.created`` to
      ``response.done``, ``gen_ai.response.id``, ``gen_ai.usage.input_tokens`` /
      ``output_tokens``, ``gen_ai.response.finish_reasons``; the turn's latency
      (``fastagent.turn.first_audio_ms``, from the caller's speech_stopped).
    * ``execute_tool <tool>`` -- each dispatched tool call: ``gen_ai.tool.name``,
      ``gen_ai.tool.call.id``, ``gen_ai.tool.type=function``, ``error.type`` when it
      failed.  No arguments or results: they may hold personal data.
    """

    def __init__(self, tracer: Any, provider: Any = None) -> None:
        from opentelemetry import trace
        from opentelemetry.trace import SpanKind, Status, StatusCode

        self._trace = trace
        self._kind = SpanKind
        self._ok = Status(StatusCode.OK)
        self._error = StatusCode.ERROR
        self._status = Status
        self.tracer = tracer
        self.provider = provider  # shut down (exporting what is left) with the service
        self.calls: dict[str, Any] = {}
        self.models: dict[str, str] = {}
        self.responses: dict[tuple[str, str], Any] = {}
        self.tools: dict[tuple[str, str], Any] = {}
        self.stopped: dict[str, int] = {}

    def _child(self, call_id: str, name: str, at_us: int, attrs: dict[str, Any]) -> Any:
        parent = self.calls.get(call_id)
        ctx = self._trace.set_span_in_context(parent) if parent is not None else None
        return self.tracer.start_span(
            name,
            context=ctx,
            kind=self._kind.CLIENT,
            start_time=at_us * 1000,
            attributes=attrs,
        )

    def observe(self, e: ev.Event) -> None:
        t = type(e)
        if t is ev.CallerAudio:
            return
        c = e.call_id
        if t is ev.BotAudio:
            span = self.responses.get((c, e.response_id))  # type: ignore[attr-defined]
            if span is not None and c in self.stopped:
                span.set_attribute(
                    "fastagent.turn.first_audio_ms", (e.at - self.stopped.pop(c)) / 1000
                )
            return
        if t is ev.SessionInitiated or (t is ev.SessionResumed and c not in self.calls):
            config = getattr(e, "config", None)
            agent = config.agent if config is not None else ""
            model = config.model if config is not None else ""
            self.models[c] = model
            attrs = {
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.provider.name": "openai",
                "gen_ai.conversation.id": c,
            }
            if agent:
                attrs["gen_ai.agent.name"] = agent
            if model:
                attrs["gen_ai.request.model"] = model
            self.calls[c] = self.tracer.start_span(
                f"invoke_agent {agent}".strip(),
                kind=self._kind.SERVER,
                start_time=e.at * 1000,
                attributes=attrs,
            )
        elif t is ev.SpeechStopped:
            self.stopped[c] = e.at
        elif t is ev.ResponseStarted:
            model = self.models.get(c, "")
            attrs = {
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.conversation.id": c,
                "gen_ai.response.id": e.response_id,  # type: ignore[attr-defined]
            }
            if model:
                attrs["gen_ai.request.model"] = model
            self.responses[(c, e.response_id)] = self._child(  # type: ignore[attr-defined]
                c, f"chat {model}".strip(), e.at, attrs
            )
        elif t is ev.ResponseDone:
            span = self.responses.pop((c, e.response_id), None)  # type: ignore[attr-defined]
            if span is not None:
                u = e.usage  # type: ignore[attr-defined]
                span.set_attribute("gen_ai.usage.input_tokens", u.input_tokens)
                span.set_attribute("gen_ai.usage.output_tokens", u.output_tokens)
                span.set_attribute("gen_ai.response.finish_reasons", [e.status])  # type: ignore[attr-defined]
                if e.status == "failed":  # type: ignore[attr-defined]
                    span.set_attribute("error.type", e.error_type or "response_failed")  # type: ignore[attr-defined]
                    span.set_status(self._status(self._error))
                span.end(end_time=e.at * 1000)
        elif t is ev.FunctionCallDispatched:
            if e.server != "fastagent":  # type: ignore[attr-defined]
                self.tools[(c, e.tool_call_id)] = self._child(  # type: ignore[attr-defined]
                    c,
                    f"execute_tool {e.name}",  # type: ignore[attr-defined]
                    e.at,
                    {
                        "gen_ai.operation.name": "execute_tool",
                        "gen_ai.tool.name": e.name,  # type: ignore[attr-defined]
                        "gen_ai.tool.call.id": e.tool_call_id,  # type: ignore[attr-defined]
                        "gen_ai.tool.type": "function",
                        "fastagent.tool.server": e.server,  # type: ignore[attr-defined]
                    },
                )
        elif t is ev.ToolResult:
            span = self.tools.pop((c, e.tool_call_id), None)  # type: ignore[attr-defined]
            if span is not None:
                if not e.ok:  # type: ignore[attr-defined]
                    span.set_attribute("error.type", "tool_error")
                    span.set_status(self._status(self._error))
                span.end(end_time=e.at * 1000)
        elif t is ev.CallEnded:
            span = self.calls.pop(c, None)
            if span is not None:
                span.set_attribute("fastagent.call.outcome", e.outcome)  # type: ignore[attr-defined]
                span.set_attribute("fastagent.call.reason", e.reason)  # type: ignore[attr-defined]
                if e.outcome == "failed":  # type: ignore[attr-defined]
                    span.set_status(self._status(self._error))
                self._close_children(c, e.at)
                span.end(end_time=e.at * 1000)
            self.models.pop(c, None)
            self.stopped.pop(c, None)

    def _close_children(self, call_id: str, at_us: int) -> None:
        for table in (self.responses, self.tools):
            for key in [k for k in table if k[0] == call_id]:
                table.pop(key).end(end_time=at_us * 1000)

    def shutdown(self) -> None:
        if self.provider is not None:
            self.provider.shutdown()

    def forget(self, call_id: str) -> None:
        """The call left this process (moved to another instance): end its spans now."""
        span = self.calls.pop(call_id, None)
        now = time.time_ns() // 1000
        self._close_children(call_id, now)
        if span is not None:
            span.set_attribute("fastagent.call.left", True)
            span.end(end_time=now * 1000)
        self.models.pop(call_id, None)
        self.stopped.pop(call_id, None)


def tracer_from_env() -> Tracer | None:
    """$FASTAGENT_TRACES: ``otlp`` (OTLP over HTTP; the ``OTEL_EXPORTER_OTLP_*``
    variables say where), ``console``, or off (default).  ValueError (one line) if
    set to something else or if the ``otel`` extra is not installed."""
    mode = os.environ.get("FASTAGENT_TRACES", "").strip().lower()
    if mode in ("", "0", "off", "none"):
        return None
    if mode not in ("otlp", "console"):
        raise ValueError(f"bad FASTAGENT_TRACES {mode!r}: expected otlp, console or off")
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
    except ImportError:
        raise ValueError(
            "FASTAGENT_TRACES needs OpenTelemetry: pip install 'fastagent[otel]'"
        ) from None
    if mode == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            raise ValueError(
                "FASTAGENT_TRACES=otlp needs the OTLP exporter: pip install 'fastagent[otel]'"
            ) from None
        exporter: Any = OTLPSpanExporter()
    else:
        exporter = ConsoleSpanExporter()
    service = os.environ.get("OTEL_SERVICE_NAME", "fastagent")
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return Tracer(provider.get_tracer("fastagent"), provider)
