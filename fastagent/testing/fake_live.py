"""A faithful fake OpenAI GPT-Live server (``/v1/live/sessions``) for tests and the demo.

A real ``websockets`` server on loopback, so the official openai SDK
(``client.live.connect()``) or FastAgent connects to it with
``websocket_base_url=server.url``.  It follows ``openai-live.md`` and the SDK's
``openai.types.live``: ``session.start`` first, answered by ``session.started``;
caller audio in the session format; a full-duplex model that speaks scripted
lines (a scenario's ``say`` steps), stops *by itself* when the caller talks over
it (no truncate, no cancel), and hands each ``call`` step to its **Responses
backend** as a delegation (``session.delegation.created`` then the backend's
stream in ``response.event``s, results back by ``response.item.create`` +
``response.create``).

Honesty checks: every client event is validated with the SDK's ``ClientEvent``
(``ForkClientEvent`` on a fork socket): a failure becomes an ``error`` and an
entry in :attr:`FakeLiveServer.violations` (Realtime-only events such as
``conversation.item.truncate`` land there).  Every server event it sends is
validated with the SDK's ``ServerEvent``, and every nested backend event with the
Responses ``ResponseStreamEvent``; a failure raises :class:`FakeServerBug`.

Scenario mapping (docs/scenarios.md): the greeting is spoken when the client
appends commentary after start (GPT-Live does not open a call by itself); the
n-th caller utterance plays the n-th ``caller`` turn; appended instructions that
mention pressed keys play the next ``dtmf`` turn.  Consecutive ``call`` steps
are one backend response with parallel calls, or one delegation each when
``delegation_per_call`` is set (several delegations in flight).

Ids are counters (``dlg_1_3``: session 1, third id), so runs are repeatable.
Session time (``start_ms``/``end_ms``, ``offset_ms``, usage seconds) is counted
in input audio, not wall time.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from pydantic import TypeAdapter, ValidationError
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from fastagent import audio
from fastagent.testing.fake_realtime import (
    DEFAULT_REPLY,
    FakeServerBug,
    _Abort,
    _first_error,
    _script_of,
    _Step,
)

__all__ = ["FakeLiveServer", "FakeLiveSession", "FakeServerBug"]

_MS_PER_CHAR = 15
_CHUNK_MS = 20
USAGE_EVERY_MS = 15_000  # session.usage.updated cadence (3P wire log: about every 15 s)
EXPIRES_S = 3600

# GPT-Live format -> the audio.py name of the same bytes (for VAD and test tones).
_AUDIO_NAME = {
    ("audio/pcmu", 8000): "raw/mulaw",
    ("audio/pcm", 16000): "raw/lpcm16",
    ("audio/pcm", 24000): "raw/lpcm16_24",
}

# ------------------------------------------------------------------ SDK validation

_adapters_cache: dict[str, TypeAdapter[Any]] = {}


def _adapter(name: str) -> TypeAdapter[Any]:
    # Built lazily: the SDK's unions take a moment to compile.
    if not _adapters_cache:
        from openai.types.live.client_event import ClientEvent
        from openai.types.live.fork_client_event import ForkClientEvent
        from openai.types.live.server_event import ServerEvent
        from openai.types.responses.response_stream_event import ResponseStreamEvent

        _adapters_cache.update(
            client=TypeAdapter(ClientEvent),
            fork=TypeAdapter(ForkClientEvent),
            server=TypeAdapter(ServerEvent),
            backend=TypeAdapter(ResponseStreamEvent),
        )
    return _adapters_cache[name]


def _tone_b64(name: str) -> str:
    return base64.b64encode(audio.tone(_CHUNK_MS, name, freq=400.0)).decode("ascii")


@dataclass
class _Delegation:
    id: str
    calls: dict[str, _Step] = field(default_factory=dict)  # call_id -> step, awaiting output
    answered: dict[str, str] = field(default_factory=dict)
    after: list[_Step] = field(default_factory=list)  # steps to play once continued
    responses: int = 0


@dataclass
class _Stored:
    """A stored session (``store: true``) that can be forked."""

    config: dict[str, Any]
    turn_idx: int
    utterances: list[str]
    greeting_spent: bool


class FakeLiveSession:
    """One primary (or fork) WebSocket: its session, clock and scenario position."""

    def __init__(
        self, server: FakeLiveServer, ws: ServerConnection, n: int, fork_of: str | None
    ) -> None:
        self.server = server
        self.ws = ws
        self.n = n
        self.fork_of = fork_of
        self.log: list[tuple[str, dict[str, Any]]] = []
        self._counter = 0
        self.config: dict[str, Any] | None = None
        self.closed_reason = ""
        # the session clock: ms of input audio received since the session started
        self.clock_ms = 0
        self._next_usage = USAGE_EVERY_MS
        self._buf = bytearray()
        self.speaking = False
        self._run = 0
        self._run_start = 0
        self._silence = 0
        self._pending_words: list[str] = []
        self.utterances: list[str] = []
        # script
        self.script = server.script
        self.turn_idx = -1
        self.greeting_spent = False
        self.delegations: dict[str, _Delegation] = {}
        self.calls: dict[str, tuple[_Delegation, _Step]] = {}
        self.output_task: asyncio.Task[None] | None = None
        self._gen = 0  # speech generation: the caller talking over it ends the current one
        self.output_chunks = 0
        self.appended: list[tuple[str, str, str | None]] = []  # (kind, content, delegation)
        # A session that goes on from a dropped one (a client that reconnected, or a
        # fork): asked to carry on (commentary), it answers the turn in progress again
        # from its first step.
        self.resume_steps: list[_Step] = []
        if server.continue_script and server.sessions and fork_of is None:
            prev = server.sessions[-1]
            self._continue(prev.turn_idx, prev.utterances, prev.greeting_spent)

    def _continue(self, turn_idx: int, utterances: list[str], greeting_spent: bool) -> None:
        self.utterances = list(utterances)
        self.turn_idx = turn_idx
        self.greeting_spent = greeting_spent or turn_idx >= 0
        turns = self.script.turns or []
        if 0 <= turn_idx < len(turns):
            self.resume_steps = list(turns[turn_idx].model or [])
        elif turn_idx == -1 and self.script.greeting:
            self.resume_steps = list(self.script.greeting)

    # ------------------------------------------------------------ plumbing

    def _id(self, prefix: str) -> str:
        self._counter += 1
        return f"{prefix}_{self.n}_{self._counter}"

    async def send(self, type_: str, _event_id: bool = True, **fields: Any) -> None:
        event: dict[str, Any] = {"type": type_, **fields}
        if _event_id:
            event["event_id"] = self._id("event")
        try:
            _adapter("server").validate_python(event)
        except ValidationError as exc:
            raise FakeServerBug(f"fake sent an invalid {type_}: {_first_error(exc)}") from None
        self.log.append(("out", event))
        await self.ws.send(json.dumps(event))

    async def send_backend(self, delegation: _Delegation, nested: dict[str, Any]) -> None:
        try:
            _adapter("backend").validate_python(nested)
        except ValidationError as exc:
            kind = nested.get("type")
            raise FakeServerBug(
                f"fake sent an invalid nested {kind}: {_first_error(exc)}"
            ) from None
        await self.send("response.event", event=nested, delegation_id=delegation.id)

    async def error(
        self,
        message: str,
        *,
        code: str = "invalid_request_error",
        type_: str = "invalid_request_error",
        param: str | None = None,
        client_event_id: str | None = None,
    ) -> None:
        err: dict[str, Any] = {"type": type_, "code": code, "message": message}
        if param is not None:
            err["param"] = param
        if client_event_id is not None:
            err["client_event_id"] = client_event_id
        await self.send("error", error=err, client_event_id=client_event_id)

    @property
    def audio_name(self) -> str:
        fmt = ((self.config or {}).get("audio") or {}).get("format") or {}
        return _AUDIO_NAME.get((fmt.get("type"), fmt.get("rate")), "raw/mulaw")

    def _resource(self) -> dict[str, Any]:
        assert self.config is not None
        return {
            **self.config,
            "id": f"sess_{self.n}",
            "expires_at": 1_900_000_000 + EXPIRES_S,
            "status": "active",
        }

    def _usage(self) -> dict[str, Any]:
        return {"seconds": float(self.clock_ms // 1000)}

    # ------------------------------------------------------------ main loop

    async def run(self) -> None:
        try:
            async for message in self.ws:
                await self.handle(message)
        except ConnectionClosed:
            pass
        except _Abort:
            pass
        except FakeServerBug as exc:
            self.server.bugs.append(str(exc))
            await self.ws.close(code=1011, reason="fake server bug")
        finally:
            if self.output_task is not None:
                self.output_task.cancel()
            self._store()

    async def handle(self, message: str | bytes) -> None:
        if isinstance(message, bytes):
            self.server.violations.append("binary frame (the API takes text frames)")
            await self.error("Binary frames are not supported.", code="invalid_frame")
            return
        try:
            event = json.loads(message)
        except ValueError as exc:
            self.server.violations.append(f"invalid JSON: {exc}")
            await self.error(f"Invalid JSON: {exc}", code="invalid_json")
            return
        if not isinstance(event, dict):
            self.server.violations.append("a client event must be a JSON object")
            await self.error("Expected a JSON object.", code="invalid_json")
            return
        self.server.received.append(event)
        self.log.append(("in", event))
        kind = str(event.get("type"))
        eid = event.get("event_id") if isinstance(event.get("event_id"), str) else None
        try:
            _adapter("fork" if self.fork_of else "client").validate_python(event)
        except ValidationError as exc:
            detail = _first_error(exc)
            self.server.violations.append(f"{kind}: {detail}")
            await self.error(f"Invalid {kind}: {detail}", code="invalid_value", client_event_id=eid)
            return
        if self.config is None and kind != "session.start":
            self.server.violations.append(f"{kind} before session.start")
            await self.error(
                "The first event must be session.start.",
                code="session_not_started",
                client_event_id=eid,
            )
            return
        if kind in self.server.ignore:
            return  # never answered: the client's timeout must notice
        if kind in self.server.error_on:
            await self.error(
                f"Simulated failure for {kind}.",
                type_="server_error",
                code="simulated",
                client_event_id=eid,
            )
            return
        handler = self._handlers.get(kind)
        if handler is None:
            await self.error(f"{kind} is not supported by this fake.", client_event_id=eid)
            return
        await handler(self, event, eid)

    # ------------------------------------------------------------ session

    async def _start(self, event: dict[str, Any], eid: str | None) -> None:
        if self.config is not None:
            await self.error("session.start was already sent.", client_event_id=eid)
            return
        session = dict(event["session"])
        if self.fork_of is not None:
            stored = self.server.stored.get(self.fork_of)
            if stored is None:
                await self.error(
                    f"Session {self.fork_of!r} is not stored.",
                    code="session_not_found",
                    client_event_id=eid,
                )
                return
            config = json.loads(json.dumps(stored.config))
            if "audio" in session:
                config.setdefault("audio", {})["format"] = session["audio"]["format"]
            if "store" in session:
                config["store"] = session["store"]
            self._continue(stored.turn_idx, stored.utterances, stored.greeting_spent)
            self.config = config
        else:
            fmt = (session.get("audio") or {}).get("format")
            if fmt is not None and (fmt.get("type"), fmt.get("rate")) not in _AUDIO_NAME:
                await self.error(
                    f"Unsupported audio format {fmt}.",
                    param="session.audio.format",
                    client_event_id=eid,
                )
                return
            audio_cfg = dict(session.get("audio") or {})
            audio_cfg.setdefault("format", {"type": "audio/pcm", "rate": 24000})
            audio_cfg.setdefault("output", {"voice": "marin"})
            session["audio"] = audio_cfg
            if session.get("delegation") is None:
                session["delegation"] = {"type": "client"}
            self.config = session
            self.server.histories.append(list(session.get("input") or []))
        await self.send("session.started", session=self._resource(), client_event_id=eid)

    async def _update(self, event: dict[str, Any], eid: str | None) -> None:
        assert self.config is not None
        update = event["session"]
        current = self.config.get("delegation") or {"type": "client"}
        new = update.get("delegation")
        if new is not None:
            if new.get("type") != current.get("type"):
                await self.error(
                    "The delegation type cannot change.",
                    param="session.delegation.type",
                    client_event_id=eid,
                )
                return
            merged = dict(current)
            for key, value in new.items():
                if isinstance(value, dict) and isinstance(merged.get(key), dict):
                    merged[key] = {**merged[key], **value}
                else:
                    merged[key] = value
            self.config["delegation"] = merged
        if "triggers" in update:
            self.config["triggers"] = update["triggers"]
        await self.send("session.updated", session=self._resource(), client_event_id=eid)

    async def _close(self, event: dict[str, Any], eid: str | None) -> None:
        self.closed_reason = "close_requested"
        await self.send(
            "session.closed",
            reason="close_requested",
            session=self._resource(),
            usage=self._usage(),
            client_event_id=eid,
        )
        self._store()
        await self.ws.close()
        raise _Abort

    def _store(self) -> None:
        if self.config is not None and self.config.get("store"):
            self.server.stored[f"sess_{self.n}"] = _Stored(
                config=json.loads(json.dumps(self.config)),
                turn_idx=self.turn_idx,
                utterances=list(self.utterances),
                greeting_spent=self.greeting_spent,
            )

    # ------------------------------------------------------------ input audio

    async def _append(self, event: dict[str, Any], eid: str | None) -> None:
        try:
            raw = base64.b64decode(event["audio"], validate=True)
        except (binascii.Error, ValueError):
            await self.error("Invalid base64 audio.", code="invalid_value", client_event_id=eid)
            return
        name = self.audio_name
        frame = _CHUNK_MS * audio.bytes_per_ms(name)
        self._buf += raw
        while len(self._buf) >= frame:
            chunk = bytes(self._buf[:frame])
            del self._buf[:frame]
            start = self.clock_ms
            self.clock_ms += _CHUNK_MS
            await self._vad(audio.is_speech(chunk, name), start)
            if self.clock_ms >= self._next_usage:
                self._next_usage += USAGE_EVERY_MS
                await self.send(
                    "session.usage.updated",
                    usage=self._usage(),
                    context_window={"usage_ratio": 0.05},
                )

    async def _vad(self, speech: bool, start: int) -> None:
        if not self.speaking:
            if not speech:
                self._run = 0
                return
            if self._run == 0:
                self._run_start = start
            self._run += 1
            if self._run < 2:
                return
            self.speaking = True
            self._silence = 0
            # Full duplex: the model hears the caller over itself and stops by itself.
            self._gen += 1
            text = self._next_utterance()
            words = text.split(" ") if text else []
            self._pending_words = words[1:]
            if words:
                await self.send(
                    "session.input_transcript.delta",
                    delta=words[0] + (" " if len(words) > 1 else ""),
                    start_ms=self._run_start,
                    end_ms=start + _CHUNK_MS,
                )
            return
        if speech:
            self._silence = 0
            return
        self._silence += _CHUNK_MS
        if self._silence >= self.server.silence_ms:
            self.speaking = False
            self._run = 0
            if self._pending_words:
                await self.send(
                    "session.input_transcript.delta",
                    delta=" ".join(self._pending_words),
                    start_ms=self._run_start,
                    end_ms=start - self._silence + _CHUNK_MS,
                )
            turns = self.script.turns or []
            steps = (
                list(turns[self.turn_idx].model or []) if 0 <= self.turn_idx < len(turns) else []
            )
            if not steps and self.turn_idx >= len([t for t in turns if t.caller is not None]):
                steps = [_Step(say=DEFAULT_REPLY)]
            await self._play(steps)

    def _next_utterance(self) -> str:
        n = len(self.utterances)
        turns = self.script.turns or []
        spoken = [i for i, t in enumerate(turns) if t.caller is not None]
        if n < len(spoken):
            self.turn_idx = spoken[n]
            text = turns[self.turn_idx].caller or ""
        else:
            self.turn_idx = len(turns)
            text = ""
        self.utterances.append(text)
        return text

    # ------------------------------------------------------------ appended context

    async def _append_context(self, event: dict[str, Any], eid: str | None) -> None:
        kind = event["type"].split(".")[1]  # commentary | thinking | instructions
        content, did = event["content"], event.get("delegation_id")
        assert self.config is not None
        if did is not None and (self.config.get("delegation") or {}).get("type") == "responses":
            await self.error(
                "delegation_id must be null with Responses delegation.",
                param="delegation_id",
                client_event_id=eid,
            )
            return
        self.appended.append((kind, content, did))
        self.server.appended.append((kind, content))
        at = self.clock_ms
        await self.send(f"session.{kind}.appended", start_ms=at, end_ms=at, client_event_id=eid)
        if kind == "commentary" and self.resume_steps:
            steps, self.resume_steps = self.resume_steps, []
            await self._play(steps)
        elif kind == "commentary" and self.turn_idx == -1 and not self.greeting_spent:
            self.greeting_spent = True
            await self._play(list(self.script.greeting or [_Step(say=DEFAULT_REPLY)]))
        elif kind == "instructions" and "pressed keys" in content:
            turns = self.script.turns or []
            for j in range(self.turn_idx + 1, len(turns)):
                if turns[j].dtmf is not None:
                    self.turn_idx = j
                    await self._play(list(turns[j].model or []))
                    return
                if turns[j].caller is not None:
                    return

    # ------------------------------------------------------------ speech and delegation

    async def _play(self, steps: list[_Step]) -> None:
        """Run steps in order after what is being said: speak ``say``s, delegate ``call``s."""
        prev = self.output_task
        self.output_task = asyncio.create_task(self._guard(self._chain(prev, steps)))

    async def _chain(self, prev: asyncio.Task[None] | None, steps: list[_Step]) -> None:
        if prev is not None and not prev.done():
            await asyncio.shield(prev)
        await self._run_steps(steps, self._gen)

    async def _guard(self, coro: Any) -> None:
        try:
            await coro
        except (ConnectionClosed, _Abort, asyncio.CancelledError):
            pass
        except FakeServerBug as exc:
            self.server.bugs.append(str(exc))
            await self.ws.close(code=1011, reason="fake server bug")

    async def _run_steps(self, steps: list[_Step], gen: int) -> None:
        while steps and gen == self._gen:
            step = steps.pop(0)
            if step.say is not None:
                await self._say(step.say, gen)
                continue
            calls = [step]
            while steps and steps[0].call is not None:
                calls.append(steps.pop(0))
            groups = [[c] for c in calls] if self.server.delegation_per_call else [calls]
            last: _Delegation | None = None
            for group in groups:
                last = await self._delegate(group)
            if last is not None:
                last.after = steps  # spoken once the backend is continued
            return

    async def _say(self, text: str, gen: int) -> None:
        n_chunks = max(1, round(_MS_PER_CHAR * len(text) / _CHUNK_MS))
        words = text.split(" ")
        # Each word's transcript goes out with the audio it is spoken in (spread
        # over the chunks), so a caller who talks over it cuts the text too.
        first_chunk = [k * n_chunks // len(words) for k in range(len(words))]
        chunk = _tone_b64(self.audio_name)
        w = 0
        for k in range(n_chunks):
            if gen != self._gen:
                return  # it heard the caller and yielded: the rest is never said
            pieces = []
            while w < len(words) and first_chunk[w] <= k:
                pieces.append(words[w])
                w += 1
            if pieces:
                at = self.clock_ms
                delta = " ".join(pieces) + (" " if w < len(words) else "")
                await self.send(
                    "session.output_transcript.delta", delta=delta, start_ms=at, end_ms=at
                )
            await self.send("session.output_audio.delta", _event_id=False, delta=chunk)
            self.output_chunks += 1
            limit = self.server.fail_after_audio_chunks
            if limit is not None and self.n == 1 and self.output_chunks >= limit:
                self._store()  # a stored session can be forked once it dropped
                await self.ws.close(code=1011, reason="simulated upstream failure")
                raise _Abort
            await asyncio.sleep(_CHUNK_MS / 1000 / self.server.speed)

    def _backend_response(self, rid: str, status: str, tokens: int = 0) -> dict[str, Any]:
        assert self.config is not None
        responses = (self.config.get("delegation") or {}).get("responses") or {}
        resp: dict[str, Any] = {
            "id": rid,
            "object": "response",
            "created_at": 1_900_000_000,
            "model": responses.get("model", "gpt-5-mini"),
            "output": [],  # lifecycle snapshots leave output empty [SDK response_event.py]
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": [],
            "status": status,
            "instructions": None,
            "error": None,
            "incomplete_details": None,
            "metadata": {},
            "temperature": None,
            "top_p": None,
        }
        if status != "in_progress":
            resp["usage"] = {
                "input_tokens": 200 + tokens,
                "output_tokens": tokens,
                "total_tokens": 200 + 2 * tokens,
                "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                "output_tokens_details": {"reasoning_tokens": 0},
            }
        return resp

    async def _delegate(self, calls: list[_Step]) -> _Delegation:
        assert self.config is not None
        if (self.config.get("delegation") or {}).get("type") != "responses":
            self.server.mismatches.append("a call step needs Responses delegation")
        d = _Delegation(id=self._id("dlg"))
        self.delegations[d.id] = d
        rid = self._id("resp")
        await self.send(
            "session.delegation.created",
            delegation={
                "id": d.id,
                "type": "delegation",
                "target": "responses",
                "response_id": rid,
            },
            offset_ms=self.clock_ms,
        )
        await self._backend_calls(d, rid, calls)
        return d

    async def _backend_calls(self, d: _Delegation, rid: str, calls: list[_Step]) -> None:
        d.responses += 1
        seq = iter(range(10_000))
        await self.send_backend(
            d,
            {
                "type": "response.created",
                "sequence_number": next(seq),
                "response": self._backend_response(rid, "in_progress"),
            },
        )
        chars = 0
        for index, step in enumerate(calls):
            item_id, call_id = self._id("fc"), self._id("call")
            args = json.dumps(step.args or {})
            chars += len(args)
            item = {
                "type": "function_call",
                "id": item_id,
                "call_id": call_id,
                "name": step.call or "",
                "arguments": "",
                "status": "in_progress",
            }
            await self.send_backend(
                d,
                {
                    "type": "response.output_item.added",
                    "sequence_number": next(seq),
                    "output_index": index,
                    "item": item,
                },
            )
            await self.send_backend(
                d,
                {
                    "type": "response.function_call_arguments.done",
                    "sequence_number": next(seq),
                    "output_index": index,
                    "item_id": item_id,
                    "name": step.call or "",
                    "arguments": args,
                },
            )
            done = {**item, "arguments": args, "status": "completed"}
            await self.send_backend(
                d,
                {
                    "type": "response.output_item.done",
                    "sequence_number": next(seq),
                    "output_index": index,
                    "item": done,
                },
            )
            d.calls[call_id] = step
            self.calls[call_id] = (d, step)
        await self.send_backend(
            d,
            {
                "type": "response.completed",
                "sequence_number": next(seq),
                "response": self._backend_response(rid, "completed", (chars + 3) // 4),
            },
        )

    async def _item_create(self, event: dict[str, Any], eid: str | None) -> None:
        assert self.config is not None
        if (self.config.get("delegation") or {}).get("type") != "responses":
            await self.error(
                "response.item.create requires Responses delegation.", client_event_id=eid
            )
            return
        item = event["item"]
        if item.get("type") != "function_call_output":
            return
        call_id = item.get("call_id", "")
        found = self.calls.get(call_id)
        if found is None:
            await self.error(
                f"No function call with call_id {call_id!r}.",
                code="invalid_value",
                param="item.call_id",
                client_event_id=eid,
            )
            return
        d, step = found
        output = item.get("output")
        output = output if isinstance(output, str) else json.dumps(output)
        d.answered[call_id] = output
        self.server.function_outputs.append((step.call or "", output))
        if step.expect_output is not None and step.expect_output not in output:
            self.server.mismatches.append(
                f"{step.call}: output {output!r} does not contain {step.expect_output!r}"
            )

    async def _response_create(self, event: dict[str, Any], eid: str | None) -> None:
        assert self.config is not None
        if (self.config.get("delegation") or {}).get("type") != "responses":
            await self.error("response.create requires Responses delegation.", client_event_id=eid)
            return
        ready = [
            d for d in self.delegations.values() if d.calls and set(d.calls) <= set(d.answered)
        ]
        if not ready:
            await self.error(
                "No delegated response is waiting for tool results.",
                code="no_pending_response",
                client_event_id=eid,
            )
            return
        for d in ready:
            d.calls.clear()
            d.answered.clear()
            rid = self._id("resp")
            steps, d.after = d.after, []
            seq = iter(range(10_000))
            await self.send_backend(
                d,
                {
                    "type": "response.created",
                    "sequence_number": next(seq),
                    "response": self._backend_response(rid, "in_progress"),
                },
            )
            if steps and steps[0].call is not None:
                calls = []
                while steps and steps[0].call is not None:
                    calls.append(steps.pop(0))
                await self._backend_more_calls(d, rid, calls, seq)
                d.after = steps
                continue
            text = steps[0].say or "" if steps else ""
            if text:
                await self.send_backend(
                    d,
                    {
                        "type": "response.output_text.done",
                        "sequence_number": next(seq),
                        "item_id": self._id("msg"),
                        "output_index": 0,
                        "content_index": 0,
                        "text": text,
                        "logprobs": [],
                    },
                )
            await self.send_backend(
                d,
                {
                    "type": "response.completed",
                    "sequence_number": next(seq),
                    "response": self._backend_response(rid, "completed", len(text) // 4),
                },
            )
            # The voice model now says the backend's answer (and what follows it).
            await self._play(steps)

    async def _backend_more_calls(
        self, d: _Delegation, rid: str, calls: list[_Step], seq: Any
    ) -> None:
        chars = 0
        for index, step in enumerate(calls):
            item_id, call_id = self._id("fc"), self._id("call")
            args = json.dumps(step.args or {})
            chars += len(args)
            done = {
                "type": "function_call",
                "id": item_id,
                "call_id": call_id,
                "name": step.call or "",
                "arguments": args,
                "status": "completed",
            }
            await self.send_backend(
                d,
                {
                    "type": "response.output_item.done",
                    "sequence_number": next(seq),
                    "output_index": index,
                    "item": done,
                },
            )
            d.calls[call_id] = step
            self.calls[call_id] = (d, step)
        await self.send_backend(
            d,
            {
                "type": "response.completed",
                "sequence_number": next(seq),
                "response": self._backend_response(rid, "completed", (chars + 3) // 4),
            },
        )

    async def _ack_only(self, event: dict[str, Any], eid: str | None) -> None:
        kind = event["type"]
        if kind == "session.input_audio.mute":
            await self.send("session.input_audio.muted", client_event_id=eid)
        elif kind == "session.input_audio.unmute":
            await self.send("session.input_audio.unmuted", client_event_id=eid)

    _handlers: dict[str, Any] = {
        "session.start": _start,
        "session.update": _update,
        "session.close": _close,
        "session.input_audio.append": _append,
        "session.input_audio.mute": _ack_only,
        "session.input_audio.unmute": _ack_only,
        "session.commentary.append": _append_context,
        "session.thinking.append": _append_context,
        "session.instructions.append": _append_context,
        "response.item.create": _item_create,
        "response.create": _response_create,
    }


# ------------------------------------------------------------------ the server


class FakeLiveServer:
    """The fake GPT-Live API on ``127.0.0.1``; one scenario, played afresh per session.

    ``speed``: output pacing relative to real time (10 = ten times faster);
    ``realtime=True`` is ``speed=1``.  ``silence_ms``: silence (in audio time) that
    ends a caller utterance.  ``delegation_per_call``: consecutive calls are one
    delegation each (several in flight) instead of one response with parallel
    calls.  Failure switches: ``fail_after_audio_chunks`` closes the first
    session's socket with 1011 after that many output audio deltas (GPT-Live
    cannot resume it); ``error_on`` answers those client event types with an
    ``error``.  ``continue_script``: a new session goes on with the script where
    the last one was (a client that reconnected after a drop).  ``ignore``: those
    client event types are never answered (e.g. ``session.start``: the client's
    timeout must notice).
    """

    def __init__(
        self,
        scenario: Any = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        speed: float = 10.0,
        realtime: bool = False,
        silence_ms: int = 300,
        delegation_per_call: bool = False,
        fail_after_audio_chunks: int | None = None,
        error_on: Iterable[str] = (),
        continue_script: bool = False,
        ignore: Iterable[str] = (),
    ) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.script = _script_of(scenario)
        self.host = host
        self.port = port
        self.speed = 1.0 if realtime else speed
        self.silence_ms = silence_ms
        self.delegation_per_call = delegation_per_call
        self.fail_after_audio_chunks = fail_after_audio_chunks
        self.error_on = frozenset(error_on)
        self.continue_script = continue_script
        self.ignore = frozenset(ignore)
        self.received: list[dict[str, Any]] = []
        self.violations: list[str] = []
        self.mismatches: list[str] = []
        self.function_outputs: list[tuple[str, str]] = []
        self.appended: list[tuple[str, str]] = []
        self.histories: list[list[dict[str, Any]]] = []  # session.start input, per session
        self.sessions: list[FakeLiveSession] = []
        self.stored: dict[str, _Stored] = {}
        self.paths: list[str] = []
        self.headers: list[dict[str, str]] = []
        self.bugs: list[str] = []
        self._server: Server | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._failure: list[BaseException] = []

    @property
    def url(self) -> str:
        """For ``websocket_base_url`` / ``FASTAGENT_REALTIME_URL``."""
        return f"ws://{self.host}:{self.port}/v1"

    async def start(self) -> FakeLiveServer:
        _adapter("client")
        self._server = await serve(
            self._handle,
            self.host,
            self.port,
            process_request=self._check_path,
            compression=None,
            max_size=None,
        )
        self.port = next(iter(self._server.sockets)).getsockname()[1]
        return self

    async def stop(self) -> None:
        """Close the server and its connections; raise if the fake produced a bad event."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        if self.bugs:
            raise FakeServerBug("; ".join(self.bugs))

    async def __aenter__(self) -> FakeLiveServer:
        return await self.start()

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if et is not None:
            self.bugs.clear()  # do not mask the test's own failure
        await self.stop()

    @staticmethod
    def _route(path: str) -> tuple[bool, str | None]:
        """(known path, fork source): ``/v1/live/sessions`` or ``.../{id}/fork``."""
        parts = urlsplit(path).path.rstrip("/").split("/")
        if parts[1:4] == ["v1", "live", "sessions"]:
            if len(parts) == 4:
                return True, None
            if len(parts) == 6 and parts[5] == "fork" and parts[4]:
                return True, parts[4]
        return False, None

    def _check_path(self, conn: ServerConnection, request: Request) -> Response | None:
        known, _ = self._route(request.path)
        if not known or urlsplit(request.path).query:
            return conn.respond(HTTPStatus.NOT_FOUND, "Not found: use /v1/live/sessions\n")
        self.paths.append(request.path)
        self.headers.append({k.lower(): v for k, v in request.headers.raw_items()})
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        _, fork_of = self._route(ws.request.path if ws.request else "")
        session = FakeLiveSession(self, ws, len(self.sessions) + 1, fork_of)
        self.sessions.append(session)
        await session.run()

    # ------------------------------------------------------------ thread API

    def start_in_thread(self) -> FakeLiveServer:
        """Run the server on its own event loop in a daemon thread (for sync code)."""
        ready = threading.Event()
        failure: list[BaseException] = []
        loop = asyncio.new_event_loop()
        self._loop = loop

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.start())
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            try:
                loop.run_until_complete(self.stop())
            except FakeServerBug as exc:
                failure.append(exc)
            for task in asyncio.all_tasks(loop):
                task.cancel()
            loop.run_until_complete(asyncio.sleep(0))
            loop.close()

        self._failure = failure
        self._thread = threading.Thread(target=run, name="fake-live", daemon=True)
        self._thread.start()
        ready.wait(10)
        if failure:
            raise failure[0]
        return self

    def stop_thread(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._thread = None
            self._loop = None
            if self._failure:
                raise self._failure[0]

    def __enter__(self) -> FakeLiveServer:
        return self.start_in_thread()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop_thread()
