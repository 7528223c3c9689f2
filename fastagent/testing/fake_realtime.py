"""A faithful fake OpenAI Realtime server (GA protocol) for tests and the demo.

A real ``websockets`` server on loopback serving ``/v1/realtime?model=...``, so the
official openai SDK (or FastAgent) connects to it with
``websocket_base_url=server.url``.  It follows docs/realtime.md and the protocol
reference: ``session.created`` first, ``session.update`` merged, VAD from the
audio energy itself, scripted responses (a scenario's ``say`` / ``call`` steps)
in the §3 event order, barge-in, cancel, truncate, and the documented errors.

Honesty checks: every client event is validated with the SDK's
``RealtimeClientEvent`` types (a failure becomes an ``error`` event and an entry
in :attr:`FakeRealtimeServer.violations`); every server event it sends is
validated with ``RealtimeServerEvent`` (a failure raises: a bug in the fake).

Ids are counters (``item_1_3``: session 1, third id), so runs are repeatable.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msgspec
from pydantic import TypeAdapter, ValidationError
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from fastagent import audio

# ------------------------------------------------------------------ the script


class _Failure(msgspec.Struct, kw_only=True):
    type: str = "server_error"
    code: str | None = None
    message: str = "The server had an error while processing your request."


class _Step(msgspec.Struct, kw_only=True):
    say: str | None = None
    call: str | None = None
    fail: _Failure | None = None
    args: dict[str, Any] | None = None
    expect_output: str | None = None
    parallel: bool = False
    server_replies: bool = False


class _Turn(msgspec.Struct, kw_only=True):
    caller: str | None = None
    dtmf: str | None = None
    silence_ms: int | None = None
    hangup: bool | None = None
    barge_in_after_ms: int | None = None
    model: list[_Step] | None = None
    transcription: str = "completed"


class _Script(msgspec.Struct, kw_only=True):
    greeting: list[_Step] | None = None
    turns: list[_Turn] | None = None


def _script_of(scenario: Any) -> _Script:
    """Read the model side of a scenario (a Scenario struct or its JSON dict)."""
    if scenario is None:
        return _Script()
    if isinstance(scenario, str | Path):
        from fastagent.testing.scenario import load_scenario

        scenario = load_scenario(scenario)
    raw = scenario if isinstance(scenario, Mapping) else msgspec.to_builtins(scenario)
    try:
        return msgspec.convert(raw, _Script)
    except msgspec.ValidationError as exc:
        raise ValueError(f"bad scenario for the fake Realtime server: {exc}") from None


DEFAULT_REPLY = "Okay."
_MS_PER_CHAR = 15
_CHUNK_MS = 20

# ------------------------------------------------------------------ SDK validation

_client_adapter: TypeAdapter[Any] | None = None
_server_adapter: TypeAdapter[Any] | None = None


def _adapters() -> tuple[TypeAdapter[Any], TypeAdapter[Any]]:
    # Built lazily: the SDK's unions take a moment to compile.
    global _client_adapter, _server_adapter
    if _client_adapter is None or _server_adapter is None:
        from openai.types.realtime.realtime_client_event import RealtimeClientEvent
        from openai.types.realtime.realtime_server_event import RealtimeServerEvent

        _client_adapter = TypeAdapter(RealtimeClientEvent)
        _server_adapter = TypeAdapter(RealtimeServerEvent)
    return _client_adapter, _server_adapter


def _first_error(exc: ValidationError) -> str:
    errs = exc.errors()
    # The union tries every member; the member matching `type` has the useful errors.
    best = [e for e in errs if "type" not in (e.get("loc") or ())[-1:]] or errs
    e = best[0]
    loc = ".".join(str(p) for p in e.get("loc", ()))
    return f"{loc}: {e.get('msg', '')}"


class FakeServerBug(AssertionError):
    """The fake produced a server event the SDK's own types reject."""


class _Abort(Exception):
    """The socket was closed on purpose (a simulated failure)."""


# ------------------------------------------------------------------ sessions

_REPLACED_KEYS = frozenset(
    {"format", "turn_detection", "transcription", "tools", "noise_reduction"}
)


def _merge(base: dict[str, Any], update: Mapping[str, Any]) -> None:
    """Merge a session.update into the session: only the fields sent change."""
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            if key in _REPLACED_KEYS:
                base[key] = dict(value)
            else:
                _merge(base[key], value)
        else:
            base[key] = value


def _default_vad() -> dict[str, Any]:
    return {
        "type": "server_vad",
        "threshold": 0.5,
        "prefix_padding_ms": 300,
        "silence_duration_ms": 500,
        "create_response": True,
        "interrupt_response": True,
    }


def _format_name(fmt: Mapping[str, Any] | None) -> str:
    return str((fmt or {}).get("type") or "audio/pcm")


def _is_speech(chunk: bytes, fmt: str) -> bool:
    if fmt == "audio/pcma":  # G.711 A-law: 0xD5/0x55 are the zero codes
        return sum(1 for b in chunk if b not in (0xD5, 0x55)) > len(chunk) // 2
    return audio.is_speech(chunk, fmt)


def _bytes_per_ms(fmt: str) -> int:
    return 8 if fmt == "audio/pcma" else audio.bytes_per_ms(fmt)


_TONE_CACHE: dict[str, str] = {}


def _tone_chunk_b64(fmt: str) -> str:
    """One 20 ms chunk of tone (400 Hz: whole cycles, so chunks join smoothly)."""
    if fmt not in _TONE_CACHE:
        if fmt == "audio/pcma":
            raw = bytes([0xA0, 0x20]) * (_CHUNK_MS * 4)
        else:
            raw = audio.tone(_CHUNK_MS, fmt, freq=400.0)
        _TONE_CACHE[fmt] = base64.b64encode(raw).decode("ascii")
    return _TONE_CACHE[fmt]


@dataclass
class _Response:
    id: str
    output: list[dict[str, Any]] = field(default_factory=list)
    cancel_reason: str | None = None
    task: asyncio.Task[None] | None = None
    audio_ms: int = 0
    text_chars: int = 0
    failure: _Failure | None = None


class FakeSession:
    """One connection: its own session config, conversation and scenario position."""

    def __init__(self, server: FakeRealtimeServer, ws: ServerConnection, n: int, model: str):
        self.server = server
        self.ws = ws
        self.n = n
        self.model = model
        self.log: list[tuple[str, dict[str, Any]]] = []  # ("in"|"out", event)
        self._counter = 0
        self.config: dict[str, Any] = {
            "type": "realtime",
            "object": "realtime.session",
            "id": f"sess_{n}",
            "model": model,
            "output_modalities": ["audio"],
            "instructions": "",
            "tools": [],
            "tool_choice": "auto",
            "max_output_tokens": "inf",
            "audio": {
                "input": {
                    "format": {"type": "audio/pcm", "rate": 24000},
                    "transcription": None,
                    "noise_reduction": None,
                    "turn_detection": _default_vad(),
                },
                "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "alloy"},
            },
        }
        # conversation
        self.items: dict[str, dict[str, Any]] = {}
        self.last_item_id: str | None = None
        self.assistant_audio_ms: dict[str, int] = {}
        self.calls: dict[str, _Step] = {}
        self.outputs: dict[str, str] = {}
        self.truncations: list[tuple[str, int]] = []
        # input audio / VAD (all in audio time, not wall time)
        self._buf = bytearray()
        self.audio_ms = 0
        self.speaking = False
        self._speech_run = 0
        self._speech_run_start = 0
        self._silence_ms = 0
        self._last_speech_end = 0
        self._uncommitted_ms = 0
        self._user_item_id = ""
        self.utterances: list[str] = []
        # script position
        self.script = server.script
        self.turn_idx = -1
        self.pending: list[_Step] = []
        self.greeting_spent = False
        # responses
        self.active: _Response | None = None
        self.responses: list[dict[str, Any]] = []  # every response.done payload
        self.audio_chunks_sent = 0
        if server.continue_script and server.sessions:
            self._continue_from(server.sessions[-1])

    def _continue_from(self, prev: FakeSession) -> None:
        """A reconnecting client goes on where the dropped session was: the turn
        in progress is answered again from its first step."""
        self.utterances = list(prev.utterances)
        self.turn_idx = prev.turn_idx
        self.greeting_spent = prev.greeting_spent or prev.turn_idx >= 0
        turns = self.script.turns or []
        if 0 <= self.turn_idx < len(turns):
            self.pending = list(turns[self.turn_idx].model or [])

    # ------------------------------------------------------------ plumbing

    def _id(self, prefix: str) -> str:
        self._counter += 1
        return f"{prefix}_{self.n}_{self._counter}"

    async def send(self, type_: str, **fields: Any) -> None:
        event = {"type": type_, "event_id": self._id("event"), **fields}
        try:
            _adapters()[1].validate_python(event)
        except ValidationError as exc:
            raise FakeServerBug(f"fake sent an invalid {type_}: {_first_error(exc)}") from None
        self.log.append(("out", event))
        tamper = self.server.tamper
        wire = tamper(event) if tamper is not None else None
        if wire is None:
            await self.ws.send(json.dumps(event))
        elif isinstance(wire, list):
            for frame in wire:
                await self.ws.send(frame)
        else:
            await self.ws.send(wire)

    async def error(
        self,
        message: str,
        *,
        code: str | None = None,
        type_: str = "invalid_request_error",
        param: str | None = None,
        event_id: str | None = None,
    ) -> None:
        err = {"type": type_, "code": code, "message": message, "param": param}
        err["event_id"] = event_id
        await self.send("error", error=err)

    @property
    def input_format(self) -> str:
        return _format_name(self.config["audio"]["input"].get("format"))

    @property
    def output_format(self) -> str:
        return _format_name(self.config["audio"]["output"].get("format"))

    @property
    def vad(self) -> dict[str, Any] | None:
        vad: dict[str, Any] | None = self.config["audio"]["input"].get("turn_detection")
        return vad

    def _add_item(self, item: dict[str, Any]) -> str | None:
        previous = self.last_item_id
        self.items[item["id"]] = item
        self.last_item_id = item["id"]
        return previous

    # ------------------------------------------------------------ main loop

    async def run(self) -> None:
        if not self.server.no_session_created:
            await self.send("session.created", session=self.config)
        try:
            async for message in self.ws:
                await self.handle(message)
        except ConnectionClosed:
            pass
        except FakeServerBug as exc:
            self.server.bugs.append(str(exc))
            await self.ws.close(code=1011, reason="fake server bug")
        finally:
            resp = self.active
            if resp is not None and resp.task is not None:
                resp.task.cancel()

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
        event_id = event.get("event_id") if isinstance(event.get("event_id"), str) else None
        try:
            _adapters()[0].validate_python(event)
        except ValidationError as exc:
            detail = _first_error(exc)
            self.server.violations.append(f"{kind}: {detail}")
            await self.error(f"Invalid {kind}: {detail}", code="invalid_value", event_id=event_id)
            return
        if kind in self.server.ignore:
            return  # never answered: the client's timeout must notice
        if kind in self.server.error_on:
            await self.error(
                f"Simulated failure for {kind}.",
                type_="server_error",
                code="simulated",
                event_id=event_id,
            )
            return
        handler = self._handlers.get(kind)
        if handler is None:
            await self.error(f"{kind} is not supported on WebSocket.", event_id=event_id)
            return
        await handler(self, event, event_id)

    # ------------------------------------------------------------ session

    async def _session_update(self, event: dict[str, Any], event_id: str | None) -> None:
        session = event["session"]
        if session.get("type") != "realtime":
            await self.error(
                "session.type must be 'realtime'.", param="session.type", event_id=event_id
            )
            return
        _merge(self.config, session)
        vad = self.vad
        if vad is not None and vad.get("type") == "server_vad":
            self.config["audio"]["input"]["turn_detection"] = {**_default_vad(), **vad}
        elif vad is not None:  # semantic_vad: the same two switches, default on
            vad.setdefault("create_response", True)
            vad.setdefault("interrupt_response", True)
        await self.send("session.updated", session=self.config)

    # ------------------------------------------------------------ input audio / VAD

    async def _append(self, event: dict[str, Any], event_id: str | None) -> None:
        try:
            raw = base64.b64decode(event["audio"], validate=True)
        except (binascii.Error, ValueError):
            await self.error("Invalid base64 audio.", code="invalid_value", event_id=event_id)
            return
        fmt = self.input_format
        frame = _CHUNK_MS * _bytes_per_ms(fmt)
        self._buf += raw
        while len(self._buf) >= frame:
            chunk = bytes(self._buf[:frame])
            del self._buf[:frame]
            start = self.audio_ms
            self.audio_ms += _CHUNK_MS
            await self._vad_step(_is_speech(chunk, fmt), start)

    async def _vad_step(self, speech: bool, start: int) -> None:
        vad = self.vad
        if vad is None:
            self._uncommitted_ms += _CHUNK_MS
            return
        if not self.speaking:
            if not speech:
                self._speech_run = 0
                return
            if self._speech_run == 0:
                self._speech_run_start = start
            self._speech_run += 1
            if self._speech_run < 2:
                return
            self.speaking = True
            self._silence_ms = 0
            self._last_speech_end = start + _CHUNK_MS
            self._user_item_id = self._id("item")
            await self.send(
                "input_audio_buffer.speech_started",
                audio_start_ms=self._speech_run_start,
                item_id=self._user_item_id,
            )
            if self.active is not None and vad.get("interrupt_response", True):
                await self.cancel_active("turn_detected")
            return
        if speech:
            self._silence_ms = 0
            self._last_speech_end = start + _CHUNK_MS
            return
        self._silence_ms += _CHUNK_MS
        if self._silence_ms >= self.server.silence_ms:
            self.speaking = False
            self._speech_run = 0
            await self.send(
                "input_audio_buffer.speech_stopped",
                audio_end_ms=self._last_speech_end,
                item_id=self._user_item_id,
            )
            await self._commit(self._user_item_id, self._last_speech_end - self._speech_run_start)
            if vad.get("create_response", True) and self.active is None:
                await self.start_response(self.pending)

    async def _commit(self, item_id: str, duration_ms: int) -> None:
        """Commit the buffer as a user item and transcribe it (the scripted text)."""
        text = self._next_utterance()
        turns = self.script.turns or []
        turn = turns[self.turn_idx] if 0 <= self.turn_idx < len(turns) else None
        transcription = turn.transcription if turn is not None else "completed"
        item = {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "role": "user",
            "status": "completed",
            "content": [{"type": "input_audio", "transcript": None}],
        }
        previous = self._add_item(item)
        await self.send("input_audio_buffer.committed", item_id=item_id, previous_item_id=previous)
        await self.send("conversation.item.added", item=item, previous_item_id=previous)
        item["content"][0]["transcript"] = text
        await self.send("conversation.item.done", item=item, previous_item_id=previous)
        if not self.config["audio"]["input"].get("transcription") or transcription == "none":
            return
        if transcription == "failed":
            await self.send(
                "conversation.item.input_audio_transcription.failed",
                item_id=item_id,
                content_index=0,
                error={
                    "type": "server_error",
                    "code": "transcription_failed",
                    "message": f"Input transcription failed for item '{item_id}'.",
                    "param": None,
                },
            )
        else:
            await self.send(
                "conversation.item.input_audio_transcription.completed",
                item_id=item_id,
                content_index=0,
                transcript=text,
                usage={"type": "duration", "seconds": max(duration_ms, 0) / 1000},
            )

    def _next_utterance(self) -> str:
        """Match the n-th utterance to the n-th caller turn; its steps become pending."""
        n = len(self.utterances)
        turns = self.script.turns or []
        spoken = [i for i, t in enumerate(turns) if t.caller is not None]
        if n < len(spoken):
            self.turn_idx = spoken[n]
            turn = turns[self.turn_idx]
            text = turn.caller or ""
            self.pending = list(turn.model or [])
        else:
            self.turn_idx = len(turns)
            text = ""
            self.pending = []
        self.utterances.append(text)
        return text

    async def _commit_event(self, event: dict[str, Any], event_id: str | None) -> None:
        if self.speaking:
            self.speaking = False
            self._speech_run = 0
            await self._commit(self._user_item_id, self._last_speech_end - self._speech_run_start)
        elif self._uncommitted_ms or self._buf:
            self._uncommitted_ms = 0
            self._buf.clear()
            await self._commit(self._id("item"), 0)
        else:
            await self.error(
                "Error committing input audio buffer: buffer too small.",
                code="input_audio_buffer_commit_empty",
                event_id=event_id,
            )

    async def _clear(self, event: dict[str, Any], event_id: str | None) -> None:
        self._buf.clear()
        self._uncommitted_ms = 0
        self.speaking = False
        self._speech_run = 0
        await self.send("input_audio_buffer.cleared")

    # ------------------------------------------------------------ conversation items

    async def _item_create(self, event: dict[str, Any], event_id: str | None) -> None:
        item = dict(event["item"])
        kind = item.get("type")
        if kind == "function_call_output":
            call_id = item.get("call_id", "")
            step = self.calls.get(call_id)
            if step is None:
                await self.error(
                    f"No function call with call_id {call_id!r} in the conversation.",
                    code="invalid_value",
                    param="item.call_id",
                    event_id=event_id,
                )
                return
            output = str(item.get("output", ""))
            self.outputs[call_id] = output
            self.server.function_outputs.append((step.call or "", output))
            if step.expect_output is not None and step.expect_output not in output:
                self.server.mismatches.append(
                    f"{step.call}: output {output!r} does not contain {step.expect_output!r}"
                )
        item.setdefault("id", self._id("item"))
        item["object"] = "realtime.item"
        item.setdefault("status", "completed")
        previous = self._add_item(item)
        await self.send("conversation.item.added", item=item, previous_item_id=previous)
        await self.send("conversation.item.done", item=item, previous_item_id=previous)
        if kind == "function_call_output" and self.active is None:
            step = self.calls.get(item.get("call_id", ""))
            answered = all(c in self.outputs for c in self.calls)
            if step is not None and step.server_replies and answered:
                # What real sessions do at times (pipecat-ai/pipecat#3960): the server
                # goes on by itself, and the client's response.create is rejected.
                await self.start_response(self.pending)
        if kind == "message" and item.get("role") == "user":
            contents = item.get("content") or []
            if any(c.get("type") == "input_text" for c in contents):
                self._advance_to_dtmf()

    def _advance_to_dtmf(self) -> None:
        """A user text message (forwarded DTMF): the next dtmf turn's steps become pending."""
        turns = self.script.turns or []
        for j in range(self.turn_idx + 1, len(turns)):
            turn = turns[j]
            if turn.dtmf is not None:
                self.turn_idx = j
                self.pending = list(turn.model or [])
                return
            if turn.caller is not None:
                return

    async def _item_delete(self, event: dict[str, Any], event_id: str | None) -> None:
        item_id = event["item_id"]
        if self.items.pop(item_id, None) is None:
            await self.error(f"Item {item_id!r} does not exist.", event_id=event_id)
            return
        await self.send("conversation.item.deleted", item_id=item_id)

    async def _item_retrieve(self, event: dict[str, Any], event_id: str | None) -> None:
        item = self.items.get(event["item_id"])
        if item is None:
            await self.error(f"Item {event['item_id']!r} does not exist.", event_id=event_id)
            return
        await self.send("conversation.item.retrieved", item=item)

    async def _truncate(self, event: dict[str, Any], event_id: str | None) -> None:
        item_id, end_ms = event["item_id"], event["audio_end_ms"]
        item = self.items.get(item_id)
        if item is None or item.get("role") != "assistant":
            await self.error(
                f"Item {item_id!r} is not an assistant message.",
                code="invalid_value",
                param="item_id",
                event_id=event_id,
            )
            return
        sent = self.assistant_audio_ms.get(item_id, 0)
        if end_ms < 0 or end_ms > sent:
            await self.error(
                f"audio_end_ms {end_ms} is beyond the item's audio ({sent} ms).",
                code="invalid_value",
                param="audio_end_ms",
                event_id=event_id,
            )
            return
        self.truncations.append((item_id, end_ms))
        await self.send(
            "conversation.item.truncated",
            item_id=item_id,
            content_index=event["content_index"],
            audio_end_ms=end_ms,
        )

    # ------------------------------------------------------------ responses

    async def _response_create(self, event: dict[str, Any], event_id: str | None) -> None:
        if self.active is not None:
            await self.error(
                f"Conversation already has an active response in progress: {self.active.id}.",
                code="conversation_already_has_active_response",
                event_id=event_id,
            )
            return
        if self.pending:
            steps = self.pending
        elif self.turn_idx == -1 and not self.greeting_spent and self.script.greeting:
            self.greeting_spent = True
            steps = list(self.script.greeting)
        else:
            steps = []
        await self.start_response(steps)

    async def _response_cancel(self, event: dict[str, Any], event_id: str | None) -> None:
        wanted = event.get("response_id")
        if self.active is None or (wanted and wanted != self.active.id):
            await self.error(
                "Cancellation failed: no active response found.",
                code="response_cancel_not_active",
                event_id=event_id,
            )
            return
        await self.cancel_active("client_cancelled")

    async def cancel_active(self, reason: str) -> None:
        resp = self.active
        if resp is None or resp.cancel_reason is not None:
            return
        resp.cancel_reason = reason
        if resp.task is not None and resp.task is not asyncio.current_task():
            await asyncio.shield(resp.task)

    def _response_payload(self, resp: _Response, status: str) -> dict[str, Any]:
        details: dict[str, Any] | None = None
        usage: dict[str, Any] | None = None
        if status == "cancelled":
            details = {"type": "cancelled", "reason": resp.cancel_reason}
        elif status == "failed" and resp.failure is not None:
            f = resp.failure
            details = {
                "type": "failed",
                "error": {"type": f.type, "code": f.code, "message": f.message},
            }
        elif status == "failed":
            details = {
                "type": "failed",
                "error": {
                    "type": "rate_limit_exceeded",
                    "code": "rate_limit_exceeded",
                    "message": "Rate limit reached (simulated).",
                },
            }
        if status != "in_progress":
            audio_tokens = resp.audio_ms // 50  # deterministic, roughly the real ratio
            text_tokens = (resp.text_chars + 3) // 4
            input_tokens = 10 * len(self.items)
            usage = {
                "total_tokens": input_tokens + audio_tokens + text_tokens,
                "input_tokens": input_tokens,
                "output_tokens": audio_tokens + text_tokens,
                "input_token_details": {
                    "text_tokens": input_tokens,
                    "audio_tokens": 0,
                    "cached_tokens": 0,
                },
                "output_token_details": {"text_tokens": text_tokens, "audio_tokens": audio_tokens},
            }
        return {
            "id": resp.id,
            "object": "realtime.response",
            "status": status,
            "status_details": details,
            "output": resp.output,
            "conversation_id": f"conv_{self.n}",
            "output_modalities": ["audio"],
            "audio": {
                "output": {
                    "format": self.config["audio"]["output"]["format"],
                    "voice": self.config["audio"]["output"].get("voice"),
                }
            },
            "usage": usage,
            "metadata": None,
        }

    async def start_response(self, steps: list[_Step]) -> None:
        """Announce a response now (so it is active at once), stream it in a task."""
        resp = _Response(id=self._id("resp"))
        self.active = resp
        await self.send("response.created", response=self._response_payload(resp, "in_progress"))
        remaining = 0 if self.server.rate_limited else 999
        await self.send(
            "rate_limits.updated",
            rate_limits=[
                {"name": "requests", "limit": 1000, "remaining": remaining, "reset_seconds": 0.06},
                {
                    "name": "tokens",
                    "limit": 40000,
                    "remaining": remaining * 40,
                    "reset_seconds": 1.5,
                },
            ],
        )
        if not steps and not self.server.rate_limited:
            steps.append(_Step(say=DEFAULT_REPLY))
        resp.task = asyncio.create_task(self._run_response(resp, steps))

    async def _run_response(self, resp: _Response, steps: list[_Step]) -> None:
        try:
            status = "completed"
            if self.server.rate_limited:
                status = "failed"
            while status == "completed" and steps and resp.cancel_reason is None:
                step = steps.pop(0)
                if step.say is not None:
                    await self._say(resp, step.say)
                elif step.fail is not None:
                    # A failed response (e.g. server_error): the steps after it
                    # answer the client's next response.create (its retry).
                    resp.failure = step.fail
                    status = "failed"
                elif step.call is not None:
                    await self._call(resp, step)
                    if not step.parallel:
                        break  # a call ends the response; the steps after it wait
            if resp.cancel_reason is not None:
                status = "cancelled"
                steps.clear()  # the interrupted turn's remaining steps are dropped
            payload = self._response_payload(resp, status)
            self.responses.append(payload)
            self.active = None
            await self.send("response.done", response=payload)
            limit = self.server.expire_after_responses
            if limit is not None and self.n == 1 and len(self.responses) >= limit:
                # The session hit its maximum duration: error, then the server closes.
                await self.error(
                    "Your session hit the maximum duration of 60 minutes.",
                    code="session_expired",
                )
                await self.ws.close(code=1000, reason="session expired")
        except (ConnectionClosed, _Abort):
            self.active = None
        except FakeServerBug as exc:
            self.active = None
            self.server.bugs.append(str(exc))
            await self.ws.close(code=1011, reason="fake server bug")

    async def _pace(self, ms: float, resp: _Response) -> None:
        """Wait ``ms`` of audio time at the server's speed (returns early on cancel)."""
        delay = ms / 1000 / self.server.speed
        step = _CHUNK_MS / 1000 / self.server.speed
        while delay > 0 and resp.cancel_reason is None:
            await asyncio.sleep(min(step, delay))
            delay -= step

    async def _say(self, resp: _Response, text: str) -> None:
        item_id = self._id("item")
        index = len(resp.output)
        item: dict[str, Any] = {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "role": "assistant",
            "status": "in_progress",
            "content": [],
        }
        resp.output.append(item)
        previous = self._add_item(item)
        self.assistant_audio_ms[item_id] = 0
        ids = {"response_id": resp.id, "item_id": item_id, "output_index": index}
        await self.send(
            "response.output_item.added", response_id=resp.id, output_index=index, item=item
        )
        await self.send("conversation.item.added", item=item, previous_item_id=previous)
        await self.send(
            "response.content_part.added",
            **ids,
            content_index=0,
            part={"type": "audio", "transcript": ""},
        )
        n_chunks = max(1, round(_MS_PER_CHAR * len(text) / _CHUNK_MS))
        words = text.split(" ")
        said: list[str] = []
        chunk = _tone_chunk_b64(self.output_format)
        for k in range(n_chunks):
            if resp.cancel_reason is not None:
                break
            # Interleave the transcript, one word per chunk, ahead of its audio.
            if k < len(words):
                piece = words[k] if k == len(words) - 1 else words[k] + " "
                if k == n_chunks - 1:  # the last chunk carries the rest of the text
                    piece = " ".join(words[k:])
                said.append(piece)
                await self.send(
                    "response.output_audio_transcript.delta", **ids, content_index=0, delta=piece
                )
            await self.send("response.output_audio.delta", **ids, content_index=0, delta=chunk)
            self.assistant_audio_ms[item_id] += _CHUNK_MS
            resp.audio_ms += _CHUNK_MS
            self.audio_chunks_sent += 1
            limit = self.server.fail_after_audio_chunks
            if limit is not None and self.n == 1 and self.audio_chunks_sent >= limit:
                await self.ws.close(code=1011, reason="simulated upstream failure")
                raise _Abort
            await self._pace(_CHUNK_MS, resp)
        transcript = "".join(said).rstrip()
        resp.text_chars += len(transcript)
        await self.send("response.output_audio.done", **ids, content_index=0)
        await self.send(
            "response.output_audio_transcript.done", **ids, content_index=0, transcript=transcript
        )
        await self.send(
            "response.content_part.done",
            **ids,
            content_index=0,
            part={"type": "audio", "transcript": transcript},
        )
        item["status"] = "incomplete" if resp.cancel_reason else "completed"
        item["content"] = [{"type": "output_audio", "transcript": transcript}]
        await self.send("conversation.item.done", item=item, previous_item_id=previous)
        await self.send(
            "response.output_item.done", response_id=resp.id, output_index=index, item=item
        )

    async def _call(self, resp: _Response, step: _Step) -> None:
        item_id, call_id = self._id("item"), self._id("call")
        index = len(resp.output)
        name = step.call or ""
        arguments = json.dumps(step.args or {})
        item: dict[str, Any] = {
            "id": item_id,
            "object": "realtime.item",
            "type": "function_call",
            "status": "in_progress",
            "call_id": call_id,
            "name": name,
            "arguments": "",
        }
        resp.output.append(item)
        previous = self._add_item(item)
        ids = {"response_id": resp.id, "item_id": item_id, "output_index": index}
        await self.send(
            "response.output_item.added", response_id=resp.id, output_index=index, item=item
        )
        await self.send("conversation.item.added", item=item, previous_item_id=previous)
        await self.send(
            "response.function_call_arguments.delta", **ids, call_id=call_id, delta=arguments
        )
        await self.send(
            "response.function_call_arguments.done",
            **ids,
            call_id=call_id,
            name=name,
            arguments=arguments,
        )
        item["status"] = "completed"
        item["arguments"] = arguments
        self.calls[call_id] = step
        resp.text_chars += len(arguments)
        await self.send("conversation.item.done", item=item, previous_item_id=previous)
        await self.send(
            "response.output_item.done", response_id=resp.id, output_index=index, item=item
        )
        if self.server.call_done_delay_ms:
            await self._pace(self.server.call_done_delay_ms, resp)

    async def _not_on_websocket(self, event: dict[str, Any], event_id: str | None) -> None:
        await self.error("output_audio_buffer.clear is only for WebRTC/SIP.", event_id=event_id)

    _handlers: dict[str, Any] = {
        "session.update": _session_update,
        "input_audio_buffer.append": _append,
        "input_audio_buffer.commit": _commit_event,
        "input_audio_buffer.clear": _clear,
        "conversation.item.create": _item_create,
        "conversation.item.delete": _item_delete,
        "conversation.item.retrieve": _item_retrieve,
        "conversation.item.truncate": _truncate,
        "response.create": _response_create,
        "response.cancel": _response_cancel,
        "output_audio_buffer.clear": _not_on_websocket,
    }


# ------------------------------------------------------------------ the server


class FakeRealtimeServer:
    """The fake Realtime API on ``127.0.0.1``; one scenario, played afresh per connection.

    ``speed``: audio pacing relative to real time (10 = ten times faster);
    ``realtime=True`` is ``speed=1``.  ``silence_ms``: silence (in audio time)
    that ends an utterance.  ``call_done_delay_ms``: audio time the model
    "thinks" after a function call before ``response.done`` (room for a
    cancel).  Failure switches: ``fail_after_audio_chunks`` closes the first
    session's socket with 1011 after that many audio deltas, ``error_on`` answers
    those client event types with an ``error``, ``rate_limited`` fails every
    response, ``ignore`` never answers those client event types (the client's
    timeouts), ``expire_after_responses`` ends the first session with
    ``session_expired`` after that many responses.  Per step and turn (in the
    scenario): ``fail`` ends a response ``failed``, ``parallel`` calls share a
    response, ``server_replies`` starts the follow-up response as soon as the
    function output arrives, ``transcription: failed|none``.
    ``continue_script``: a new connection (a client reconnecting after a drop)
    goes on with the script where the last one was.  ``no_session_created``:
    a socket never opens with ``session.created`` (everything else is answered;
    the client's timer for it must notice).  ``tamper``:
    a hostile model for tests: called with each valid event the fake is about to
    send, it returns the text (or bytes, or a list of them) to send instead, or
    None to send it as is.
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
        call_done_delay_ms: int = 0,
        fail_after_audio_chunks: int | None = None,
        error_on: Iterable[str] = (),
        rate_limited: bool = False,
        continue_script: bool = False,
        ignore: Iterable[str] = (),
        expire_after_responses: int | None = None,
        tamper: Callable[[dict[str, Any]], str | bytes | list[str | bytes] | None] | None = None,
        no_session_created: bool = False,
    ) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.script = _script_of(scenario)
        self.host = host
        self.port = port
        self.speed = 1.0 if realtime else speed
        self.silence_ms = silence_ms
        self.call_done_delay_ms = call_done_delay_ms
        self.fail_after_audio_chunks = fail_after_audio_chunks
        self.error_on = frozenset(error_on)
        self.rate_limited = rate_limited
        self.continue_script = continue_script
        self.ignore = frozenset(ignore)
        self.expire_after_responses = expire_after_responses
        self.tamper = tamper
        self.no_session_created = no_session_created
        self.received: list[dict[str, Any]] = []
        self.violations: list[str] = []
        self.mismatches: list[str] = []
        self.function_outputs: list[tuple[str, str]] = []  # (function name, output)
        self.sessions: list[FakeSession] = []
        self.bugs: list[str] = []  # invalid events the fake itself produced
        self._server: Server | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._failure: list[BaseException] = []

    @property
    def url(self) -> str:
        """For ``websocket_base_url`` / ``FASTAGENT_REALTIME_URL``."""
        return f"ws://{self.host}:{self.port}/v1"

    # ------------------------------------------------------------ asyncio API

    async def start(self) -> FakeRealtimeServer:
        _adapters()
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

    async def __aenter__(self) -> FakeRealtimeServer:
        return await self.start()

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if et is None:
            await self.stop()
        else:  # do not mask the test's own failure
            self.bugs.clear()
            await self.stop()

    @staticmethod
    def _check_path(conn: ServerConnection, request: Request) -> Response | None:
        if urlsplit(request.path).path.rstrip("/") != "/v1/realtime":
            return conn.respond(HTTPStatus.NOT_FOUND, "Not found: use /v1/realtime?model=...\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        query = parse_qs(urlsplit(ws.request.path if ws.request else "").query)
        model = (query.get("model") or ["gpt-realtime"])[0]
        session = FakeSession(self, ws, len(self.sessions) + 1, model)
        self.sessions.append(session)
        await session.run()

    # ------------------------------------------------------------ thread API

    def start_in_thread(self) -> FakeRealtimeServer:
        """Run the server on its own event loop in a daemon thread (for sync code)."""
        ready = threading.Event()
        failure: list[BaseException] = []
        loop = asyncio.new_event_loop()
        self._loop = loop

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.start())
            except BaseException as exc:  # reported to the starting thread
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
        self._thread = threading.Thread(target=run, name="fake-realtime", daemon=True)
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

    def __enter__(self) -> FakeRealtimeServer:
        return self.start_in_thread()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop_thread()
