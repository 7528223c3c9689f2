"""Synthetic call logs for tests and benchmarks, made by driving the real core.

``synthetic_call`` plays a conversation of turns (caller speech, bot answer,
sometimes a tool call, sometimes a barge-in) with audio chunk boundaries both
ways, feeding every input through :class:`~fastagent.core.Engine` so the
decisions in the log are the ones today's core makes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastagent import events as ev
from fastagent.admission import engine_for
from fastagent.core import Engine

CHUNK_US = 20_000


class _Recorder:
    def __init__(self, call_id: str, t0: int) -> None:
        self.engine = Engine(call_id)
        self.call_id = call_id
        self.log: list[ev.Event] = []
        self.now = t0

    def feed(self, cls: type[ev.Input], **fields: Any) -> list[ev.Decision]:
        inp = cls(call_id=self.call_id, seq=self.engine.view.next_seq, at=self.now, **fields)
        if isinstance(inp, ev.SessionInitiated):
            self.engine = engine_for(inp)  # agent and formats settled as the shell does
        out = self.engine.handle(inp)
        self.log.append(inp)
        self.log.extend(out)
        return out


def synthetic_call(
    call_id: str = "synthetic-call",
    *,
    target_events: int = 2_000,
    t0: int = 1_750_000_000_000_000,
    barge_in_every: int = 4,
    agent: str = "default",
    hook: Callable[[_Recorder, int], None] | None = None,
) -> list[ev.Event]:
    """A whole call of about ``target_events`` events, ended by the caller."""
    r = _Recorder(call_id, t0)
    r.feed(
        ev.SessionInitiated,
        config=ev.CallConfig(agent=agent),
        caller="+15550100",
        offered_formats=("raw/mulaw",),
    )
    r.feed(ev.CallStarted, caller="+15550100", callee="+15550199")
    r.feed(ev.CallerStreamStarted)
    caller_chunk = bot_chunk = 0
    turn = 0

    def caller_audio(n: int) -> None:
        nonlocal caller_chunk
        for _ in range(n):
            caller_chunk += 1
            r.now += CHUNK_US
            r.feed(
                ev.CallerAudio,
                chunk=caller_chunk,
                nbytes=160,
                duration_us=CHUNK_US,
                fmt="raw/mulaw",
            )

    def bot_response(rid: str, n: int, text: str, interrupt: bool) -> None:
        nonlocal bot_chunk
        r.feed(ev.ResponseStarted, response_id=rid)
        item = f"item-{rid}"
        for i in range(n):
            bot_chunk += 1
            r.now += CHUNK_US // 2  # the model sends faster than real time
            r.feed(
                ev.BotAudio,
                response_id=rid,
                item_id=item,
                chunk=bot_chunk,
                nbytes=160,
                duration_us=CHUNK_US,
                fmt="audio/pcmu",
            )
            if i % 2:
                caller_chunk_one()
            if interrupt and i == n // 2:
                r.feed(ev.SpeechStarted, item_id=f"user-{rid}")
                r.feed(ev.ResponseDone, response_id=rid, status="cancelled", reason="turn_detected")
                return
        r.feed(ev.Transcript, role="assistant", item_id=item, text=text, response_id=rid)
        r.feed(
            ev.ResponseDone, response_id=rid, status="completed", usage=ev.Usage(total_tokens=120)
        )

    def caller_chunk_one() -> None:
        caller_audio(1)

    bot_response("resp-0", 100, "Hello, how can I help?", False)
    while len(r.log) < target_events - 200:
        turn += 1
        caller_audio(250)  # the caller hears the answer out, then speaks
        r.feed(ev.SpeechStarted, item_id=f"user-{turn}")
        caller_audio(100)
        r.feed(ev.SpeechStopped, item_id=f"user-{turn}")
        r.feed(ev.SpeechCommitted, item_id=f"user-{turn}")
        r.feed(ev.Transcript, role="user", item_id=f"user-{turn}", text=f"Caller turn {turn}")
        interrupt = barge_in_every > 0 and turn % barge_in_every == 0
        bot_response(f"resp-{turn}", 400, f"Bot answer {turn}", interrupt)
        if hook is not None:
            hook(r, turn)
    caller_audio(10)
    r.feed(ev.SessionEnded, reason_code="client-disconnected", reason="caller hung up")
    return r.log
