"""Per-turn latency stages and the cost of a call: pure folds over a call's events.

A *turn* is the caller finishing an utterance and the bot answering it.  Its
latency is split at the points the log can see (all times are the shell's
observation times, ``at``, in microseconds since the epoch):

1. ``end_of_speech`` -- the caller audio chunk that carried the end of the
   caller's speech arrived.  The model reports that point as ``audio_end_ms`` of
   ``input_audio_buffer.speech_stopped``, an offset into the audio it was sent
   since its session began; the fold maps it back onto the recorded
   ``CallerAudio`` chunk boundaries of that model session.
2. ``speech_stopped`` -- the model's ``input_audio_buffer.speech_stopped``
   (``SpeechStopped``): stage 1->2 is the model's end-of-turn detection (its VAD
   silence window plus the network).
3. ``response_created`` -- ``response.created`` (``ResponseStarted``).
4. ``first_audio`` -- the first ``response.output_audio.delta`` of that response
   (``BotAudio``): 3->4 is the model's time to first audio.
5. ``first_chunk`` -- the first ``playStream.chunk`` of it sent to the caller: the
   ``PlaybackStarted`` decided for the response (stamped with the time of the
   ``BotAudio`` that caused it).  The shell sends the chunk right after recording
   that decision, so the log cannot place 5 more finely than that; the
   ``fastagent_relay_seconds{direction="to_caller"}`` histogram measures it.

``total`` is end of speech (or speech stopped, when the end of speech cannot be
placed) to first chunk.  Stages are milliseconds (float), ``None`` when a point is
missing (e.g. an interrupted response has no first chunk).

Cost: ``response.done`` usage priced per million tokens (:class:`Prices`).
"""

from __future__ import annotations

import bisect
import math
import os
from collections.abc import Iterable, Sequence
from typing import Any

import msgspec

from fastagent import events as ev

STAGES = ("vad", "response", "first_audio", "to_caller", "total")
"""Stage names: end of speech->speech_stopped, ->response.created, ->first audio
delta, ->first playStream.chunk, and end of speech->first chunk."""


class TurnStages(msgspec.Struct, frozen=True, kw_only=True):
    """One caller turn and the bot's answer; times in µs since the epoch, stages in ms."""

    speech_stopped_seq: int
    response_id: str = ""
    end_of_speech_at: int | None = None
    speech_stopped_at: int = 0
    response_created_at: int | None = None
    first_audio_at: int | None = None
    first_chunk_at: int | None = None
    first_chunk_seq: int | None = None

    def stage_ms(self) -> dict[str, float | None]:
        """The five stages (see :data:`STAGES`) in milliseconds."""

        def gap(a: int | None, b: int | None) -> float | None:
            return None if a is None or b is None else (b - a) / 1000

        start = self.end_of_speech_at if self.end_of_speech_at is not None else None
        origin = start if start is not None else self.speech_stopped_at
        return {
            "vad": gap(start, self.speech_stopped_at),
            "response": gap(self.speech_stopped_at, self.response_created_at),
            "first_audio": gap(self.response_created_at, self.first_audio_at),
            "to_caller": gap(self.first_audio_at, self.first_chunk_at),
            "total": gap(origin, self.first_chunk_at),
        }


class _AudioClock:
    """Caller audio sent to one model session: cumulative ms -> arrival time."""

    __slots__ = ("ends_ms", "ats", "total_ms")

    def __init__(self) -> None:
        self.ends_ms: list[float] = []
        self.ats: list[int] = []
        self.total_ms = 0.0

    def add(self, duration_us: int, at: int) -> None:
        self.total_ms += duration_us / 1000
        self.ends_ms.append(self.total_ms)
        self.ats.append(at)

    def arrival(self, offset_ms: int) -> int | None:
        """When the chunk holding ``offset_ms`` of the session's audio arrived."""
        i = bisect.bisect_left(self.ends_ms, offset_ms)
        return self.ats[i] if i < len(self.ats) else None


def turn_stages(events: Iterable[ev.Event]) -> list[TurnStages]:
    """Every caller turn of a call, in order.

    A turn starts at a ``SpeechStopped`` and lasts until the next one.  Its
    response is the first ``ResponseStarted`` after it; its first audio and first
    chunk are those of any response started within the turn (the first response
    may only call a tool; the answer then comes in the next one).  A turn the
    caller spoke over before any answer keeps ``None`` for what it lacks.  A new
    model session (the first ``ModelConfigured``, or after the model connection
    was lost or restored) restarts the audio clock.
    """
    out: list[TurnStages] = []
    clock: _AudioClock | None = None
    fresh = True  # the next model configuration starts a new audio clock
    turn: dict[str, Any] | None = None
    responses: set[str] = set()  # responses started within the current turn

    for e in events:
        t = type(e)
        if t is ev.CallerAudio:
            if clock is not None:
                clock.add(e.duration_us, e.at)  # type: ignore[attr-defined]
        elif t is ev.BotAudio:
            if turn is not None and "first_audio_at" not in turn:
                if e.response_id in responses:  # type: ignore[attr-defined]
                    turn["first_audio_at"] = e.at
        elif t is ev.ModelConfigured:
            if fresh:
                clock, fresh = _AudioClock(), False
        elif t is ev.ConnectionRestored or t is ev.ConnectionLost:
            if e.side == "model":  # type: ignore[attr-defined]
                fresh, clock = True, None
        elif t is ev.SpeechStopped:
            if turn is not None:
                out.append(TurnStages(**turn))
            end = clock.arrival(e.audio_end_ms) if clock is not None else None  # type: ignore[attr-defined]
            turn = {"speech_stopped_seq": e.seq, "speech_stopped_at": e.at, "end_of_speech_at": end}
            responses = set()
        elif t is ev.ResponseStarted:
            if turn is not None:
                responses.add(e.response_id)  # type: ignore[attr-defined]
                if "response_id" not in turn:
                    turn["response_id"] = e.response_id  # type: ignore[attr-defined]
                    turn["response_created_at"] = e.at
        elif t is ev.PlaybackStarted:
            # Decided on a BotAudio (and stamped with its time); the shell sends
            # playStream.start and that chunk right after recording it.
            if turn is not None and "first_chunk_at" not in turn:
                if e.response_id in responses:  # type: ignore[attr-defined]
                    turn["first_chunk_at"] = e.at
                    turn["first_chunk_seq"] = e.seq
    if turn is not None:
        out.append(TurnStages(**turn))
    return out


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolated percentile (``q`` in 0..1) like DuckDB's quantile_cont."""
    xs = sorted(v for v in values if v is not None)
    if not xs:
        return None
    pos = (len(xs) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def stage_percentiles(turns: Iterable[TurnStages]) -> dict[str, dict[str, float | None]]:
    """``{stage: {"p50": ms, "p95": ms, "n": count}}`` over ``turns``."""
    cols: dict[str, list[float]] = {s: [] for s in STAGES}
    for turn in turns:
        for stage, value in turn.stage_ms().items():
            if value is not None:
                cols[stage].append(value)
    return {
        s: {
            "n": len(v),
            "p50": _round(percentile(v, 0.5)),
            "p95": _round(percentile(v, 0.95)),
        }
        for s, v in cols.items()
    }


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 1)


# --------------------------------------------------------------------------- cost


class Prices(msgspec.Struct, frozen=True, kw_only=True):
    """USD per million tokens (defaults: gpt-realtime's list prices, August 2025)."""

    audio_in: float = 32.0
    audio_out: float = 64.0
    text_in: float = 4.0
    text_out: float = 16.0
    cached_in: float = 0.4

    @classmethod
    def parse(cls, spec: str) -> Prices:
        """``"audio_in=32,audio_out=64,text_in=4,text_out=16,cached_in=0.4"`` (any
        subset; the rest keep their defaults).  ValueError names the bad part."""
        fields: dict[str, float] = {}
        for part in filter(None, (p.strip() for p in spec.split(","))):
            key, sep, raw = part.partition("=")
            key = key.strip()
            if not sep or key not in cls.__struct_fields__:
                names = ", ".join(cls.__struct_fields__)
                raise ValueError(f"bad price {part!r}: expected NAME=USD_PER_MILLION ({names})")
            try:
                value = float(raw)
            except ValueError:
                raise ValueError(f"bad price {part!r}: not a number") from None
            if not (0 <= value < math.inf):
                raise ValueError(f"bad price {part!r}: must be >= 0")
            fields[key] = value
        return cls(**fields)

    @classmethod
    def from_env(cls) -> Prices:
        """$FASTAGENT_PRICES, or the defaults."""
        return cls.parse(os.environ.get("FASTAGENT_PRICES", ""))


class Cost(msgspec.Struct, kw_only=True):
    """Tokens and USD of one call (or a sum of calls)."""

    responses: int = 0
    audio_in: int = 0
    audio_out: int = 0
    text_in: int = 0
    text_out: int = 0
    cached_in: int = 0
    usd: float = 0.0


def usage_cost(usage: ev.Usage, prices: Prices) -> Cost:
    """One response's tokens by kind and price.  Cached input tokens (usage does
    not say whether text or audio) are priced at ``cached_in`` and taken from the
    audio input first, then the text input."""
    cached = usage.cached_tokens
    audio_in = usage.input_audio_tokens
    text_in = max(0, usage.input_tokens - audio_in)
    from_audio = min(cached, audio_in)
    audio_in -= from_audio
    text_in = max(0, text_in - (cached - from_audio))
    audio_out = usage.output_audio_tokens
    text_out = max(0, usage.output_tokens - audio_out)
    usd = (
        audio_in * prices.audio_in
        + audio_out * prices.audio_out
        + text_in * prices.text_in
        + text_out * prices.text_out
        + cached * prices.cached_in
    ) / 1e6
    return Cost(
        responses=1,
        audio_in=audio_in,
        audio_out=audio_out,
        text_in=text_in,
        text_out=text_out,
        cached_in=cached,
        usd=usd,
    )


def add_cost(total: Cost, part: Cost) -> Cost:
    total.responses += part.responses
    total.audio_in += part.audio_in
    total.audio_out += part.audio_out
    total.text_in += part.text_in
    total.text_out += part.text_out
    total.cached_in += part.cached_in
    total.usd += part.usd
    return total


def call_cost(events: Iterable[ev.Event], prices: Prices) -> Cost:
    """The sum of every ``ResponseDone``'s usage in a call."""
    total = Cost()
    for e in events:
        if type(e) is ev.ResponseDone:
            add_cost(total, usage_cost(e.usage, prices))  # type: ignore[attr-defined]
    total.usd = round(total.usd, 6)
    return total


# ------------------------------------------------------------------ per call, per agent


class CallLatency(msgspec.Struct, frozen=True, kw_only=True):
    """One call's turns and cost, for the per-call and per-agent report."""

    call_id: str
    agent: str
    turns: tuple[TurnStages, ...]
    cost: Cost


def call_latency(events: Sequence[ev.Event], prices: Prices) -> CallLatency:
    agent = next((e.config.agent for e in events if type(e) is ev.SessionInitiated), "")  # type: ignore[attr-defined]
    return CallLatency(
        call_id=events[0].call_id if events else "",
        agent=agent,
        turns=tuple(turn_stages(events)),
        cost=call_cost(events, prices),
    )


def per_call_rows(calls: Iterable[CallLatency]) -> list[dict[str, Any]]:
    """One row per call: turns, end-of-speech->first-chunk p50/p95, cost."""
    rows = []
    for c in calls:
        total = stage_percentiles(c.turns)["total"]
        rows.append(
            {
                "call_id": c.call_id,
                "agent": c.agent,
                "turns": total["n"],
                "p50_ms": total["p50"],
                "p95_ms": total["p95"],
                "responses": c.cost.responses,
                "cost_usd": round(c.cost.usd, 4),
            }
        )
    return rows


def per_agent_rows(calls: Iterable[CallLatency]) -> list[dict[str, Any]]:
    """One row per agent and stage: p50/p95 over all its calls' turns; the agent's
    calls and total cost on its ``total`` row."""
    by_agent: dict[str, list[CallLatency]] = {}
    for c in calls:
        by_agent.setdefault(c.agent, []).append(c)
    rows = []
    for agent in sorted(by_agent):
        mine = by_agent[agent]
        pct = stage_percentiles(t for c in mine for t in c.turns)
        usd = sum(c.cost.usd for c in mine)
        for stage in STAGES:
            rows.append(
                {
                    "agent": agent,
                    "stage": stage,
                    "turns": pct[stage]["n"],
                    "p50_ms": pct[stage]["p50"],
                    "p95_ms": pct[stage]["p95"],
                    "calls": len(mine) if stage == "total" else None,
                    "cost_usd": round(usd, 4) if stage == "total" else None,
                }
            )
    return rows
