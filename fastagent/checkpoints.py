"""Call checkpoints: the engine and live state after event ``seq``, so a resume reads
only the log's tail instead of replaying a whole ten-minute call.

A checkpoint is a cache, never the truth: the log is.  It is written only for
events that are already durable, only by the instance driving the call, and an
older one never replaces a newer one (see :meth:`fastagent.store.checkpoints.Checkpoints.write`).
It is ignored (and the whole log replayed) when it cannot be trusted: another
checkpoint format, or an engine whose fields changed since it was written (the
fingerprint), or a log that ends before it.  Restoring is exact: the engine's
dataclass fields are encoded with msgspec and decoded into the same types, and
the tail after it is fed through the engine like a replay, decision by decision.

The state is small: the engine keeps counters, the current play stream and the
running FSAs; the live state keeps the transcript.  Checkpoints are skipped while
a tool call is in flight, so the dispatched calls a resume must re-run are
always in the tail.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from fastagent import events as ev
from fastagent.agent import Agent
from fastagent.agents import get_agent
from fastagent.core import ENGINE_SERVER, Engine
from fastagent.replay import replay
from fastagent.status import Status
from fastagent.store import EventStore
from projections import live

log = logging.getLogger("fastagent.checkpoints")

CHECKPOINT_FORMAT = 1
_SKIP = frozenset({"admission", "agent", "_out", "_at"})  # rebuilt, or per-input scratch


def _engine_fields() -> list[tuple[str, Any]]:
    hints = typing.get_type_hints(Engine)
    return [(f.name, hints[f.name]) for f in dataclasses.fields(Engine) if f.name not in _SKIP]


_FIELDS = _engine_fields()
# A checkpoint written by an engine with other fields is not restored (replayed instead).
FINGERPRINT = hashlib.sha256(repr([(n, str(t)) for n, t in _FIELDS]).encode()).hexdigest()[:16]
_EngineState = msgspec.defstruct("EngineState", [(n, t) for n, t in _FIELDS], kw_only=True)


class CallCheckpoint(msgspec.Struct, kw_only=True):
    format: int
    fingerprint: str
    call_id: str
    seq: int  # the state is after this event
    agent: str
    engine: msgspec.Raw
    live: live.CallState
    chunks_in: int = 0  # last CallerAudio.chunk, so numbering goes on after a resume
    chunks_out: int = 0  # last BotAudio.chunk


_encoder = msgspec.json.Encoder()
_checkpoint_decoder = msgspec.json.Decoder(CallCheckpoint)
_engine_decoder: msgspec.json.Decoder[Any] = msgspec.json.Decoder(_EngineState)


def take(
    engine: Engine, state: live.CallState, chunks_in: int = 0, chunks_out: int = 0
) -> bytes | None:
    """Encode the call's state after ``engine.next_seq - 1``; None if not worth it
    (no agent, call ended, or a tool call in flight)."""
    if engine.agent is None or engine.status is Status.ENDED or state.pending_tools:
        return None
    body = {name: getattr(engine, name) for name, _ in _FIELDS}
    ckpt = CallCheckpoint(
        format=CHECKPOINT_FORMAT,
        fingerprint=FINGERPRINT,
        call_id=engine.call_id,
        seq=engine.next_seq - 1,
        agent=engine.agent.name,
        engine=msgspec.Raw(_encoder.encode(body)),
        live=state,
        chunks_in=chunks_in,
        chunks_out=chunks_out,
    )
    return _encoder.encode(ckpt)


def restore(data: bytes, agents: Callable[[str], Agent] = get_agent) -> CallCheckpoint | None:
    """Decode a checkpoint; None if this code cannot trust it."""
    try:
        ckpt = _checkpoint_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        log.warning("ignoring an unreadable call checkpoint: %s", exc)
        return None
    if ckpt.format != CHECKPOINT_FORMAT or ckpt.fingerprint != FINGERPRINT:
        return None
    return ckpt


def engine_of(ckpt: CallCheckpoint, agents: Callable[[str], Agent] = get_agent) -> Engine:
    body = _engine_decoder.decode(ckpt.engine)
    engine = Engine(ckpt.call_id, agent=agents(ckpt.agent))
    for name, _ in _FIELDS:
        setattr(engine, name, getattr(body, name))
    return engine


@dataclass
class Rebuilt:
    """A call rebuilt from the store for a resume."""

    engine: Engine | None
    state: live.CallState
    pending: list[ev.FunctionCallDispatched] = field(default_factory=list)
    chunks_in: int = 0
    chunks_out: int = 0
    from_checkpoint: int = 0  # seq of the checkpoint used (0: the whole log was replayed)
    events_read: int = 0
    divergence: str = ""


def rebuild(store: EventStore, call_id: str, agents: Callable[[str], Agent] = get_agent) -> Rebuilt:
    """Engine, live state and unanswered tool calls of a stored call.

    Raises UnknownCall if the call has no events.
    """
    found = store.checkpoints.read(call_id)
    ckpt = restore(found[1], agents) if found is not None else None
    if ckpt is not None:
        tail = store.read_call(call_id, after=ckpt.seq)
        if tail and tail[0].seq != ckpt.seq + 1:
            ckpt = None  # cannot happen when written after a flush; be safe anyway
        else:
            engine = engine_of(ckpt, agents)
            out = Rebuilt(
                engine,
                ckpt.live,
                chunks_in=ckpt.chunks_in,
                chunks_out=ckpt.chunks_out,
                from_checkpoint=ckpt.seq,
                events_read=len(tail),
            )
            out.divergence = _feed(engine, tail)
            _follow(out, tail)
            return out
    events = store.read_call(call_id)
    result = replay(events, agents)
    out = Rebuilt(result.engine, live.fold(events), events_read=len(events))
    if result.divergence is not None:
        out.divergence = f"log diverges from today's core at seq {result.divergence.position}"
    _follow(out, events)
    return out


def _feed(engine: Engine, tail: Sequence[ev.Event]) -> str:
    """Replay the tail after a checkpoint into ``engine``: inputs in, decisions compared."""
    div = replay(tail, engine=engine).divergence
    return f"log diverges from today's core at seq {div.position}" if div else ""


def _follow(out: Rebuilt, events: Sequence[ev.Event]) -> None:
    """Fold the events into the live state (tail only) and find what a resume must
    pick up: tool calls dispatched but never answered, and the chunk counters."""
    state = out.state
    if out.from_checkpoint:
        live.fold(events, state)
    dispatched: dict[str, ev.FunctionCallDispatched] = {}
    for e in events:
        t = type(e)
        if t is ev.CallerAudio:
            out.chunks_in = e.chunk  # type: ignore[attr-defined]
        elif t is ev.BotAudio:
            out.chunks_out = e.chunk  # type: ignore[attr-defined]
        elif t is ev.FunctionCallDispatched and e.server != ENGINE_SERVER:  # type: ignore[attr-defined]
            dispatched[e.tool_call_id] = e  # type: ignore[attr-defined,assignment]
    out.pending = [d for cid, d in dispatched.items() if cid in state.pending_tools]
