"""A call as a person reads it live: who speaks, FSA steps, tools, and how it ended.

:class:`CallPrinter` is an observer of a call's events (``Service.observers``):
it prints one styled line per event worth showing (caller and bot in their
colours, FSA steps and tool calls indented under them) through
:mod:`fastagent.console`, so a terminal gets colour and a pipe plain text.

A barge-in shows what the caller actually heard of the bot's sentence: the
engine truncates the item at ``audio_end_ms`` (what VAIC had played), and the
heard part of the transcript is estimated from the share of the item's audio
that was played (words spread evenly over its audio).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rich.text import Text

from fastagent import console
from fastagent import events as ev


def heard_part(text: str, heard_ms: int, total_ms: int) -> str:
    """The words of ``text`` a caller heard in ``heard_ms`` of ``total_ms`` of its audio.

    Words are assumed spread evenly over the audio; at least one word is kept.
    ``total_ms <= 0`` (audio unknown) keeps the whole text.
    """
    words = text.split()
    if total_ms <= 0 or heard_ms >= total_ms or not words:
        return text
    n = max(1, len(words) * heard_ms // total_ms)
    return " ".join(words[:n])


@dataclass
class CallPrinter:
    """Print a call's events as they are recorded (call it with each event)."""

    write: Callable[..., None] = console.out
    _audio_ms: dict[str, float] = field(default_factory=dict)  # item id -> bot audio ms
    _cut: dict[str, int] = field(default_factory=dict)  # item id -> audio_end_ms
    _said: dict[str, str] = field(default_factory=dict)  # item id -> bot transcript
    _tools: dict[str, str] = field(default_factory=dict)  # tool call id -> server
    outcome: str = ""
    reason: str = ""
    agent: str = ""

    def __call__(self, e: ev.Event) -> None:
        line = self.line(e)
        if line is not None:
            self.write(line)

    def line(self, e: ev.Event) -> Text | None:
        """The styled line for ``e``, or None when it is not worth a line."""
        match e:
            case ev.SessionInitiated():
                self.agent = e.config.agent
                return None
            case ev.BotAudio():
                self._audio_ms[e.item_id] = self._audio_ms.get(e.item_id, 0) + e.duration_us / 1e3
                return None
            case ev.Transcript() if e.role == "user":
                return _said("caller", "caller", e.text)
            case ev.Transcript():
                self._said[e.item_id] = e.text
                cut = self._cut.get(e.item_id)
                if cut is None:
                    return _said("bot", "bot", e.text)
                return self._heard(e.item_id, cut)
            case ev.TruncateRequested():
                self._cut[e.item_id] = e.audio_end_ms
                said = self._said.get(e.item_id)
                note = Text(f"  ↯ barge-in: the caller cut the bot off at {e.audio_end_ms} ms")
                note.stylize("cut")
                if said is None:  # its transcript comes later, shortened to what was heard
                    return note
                return Text.assemble(note, "\n", self._heard(e.item_id, e.audio_end_ms))
            case ev.Dtmf():
                return _said("caller", "caller", f"(keypad) {e.digits}")
            case ev.FunctionCallDispatched():
                self._tools[e.tool_call_id] = e.server
                where = "" if e.server in ("", "fastagent") else f" via {e.server}"
                return Text(f"    ⚙ {e.name}({_args(e.arguments)}){where}", style="tool")
            case ev.ToolResult():
                if e.ok:
                    return Text(
                        f"    ⚙ {e.name} → ok in {e.duration_us / 1000:.0f} ms", style="tool"
                    )
                return Text(f"    ⚙ {e.name} → error: {e.error}", style="fail")
            case ev.FunctionCallSkipped():
                return Text(f"    ⚙ {e.name} skipped: {e.reason}", style="note")
            case ev.FsaStarted():
                return Text(f"    ◆ {e.fsa} started in {e.state}", style="fsa")
            case ev.FsaTransition():
                return self._transition(e)
            case ev.FsaFinished():
                return Text(f"    ◆ {e.fsa} {e.outcome} in {e.state}", style="fsa")
            case ev.HangupRequested():
                return Text(f"  ☎ bot hangs up: {e.reason}", style="note")
            case ev.TransferRequested():
                return Text(f"  ☎ transfer to {e.target}: {e.reason}", style="note")
            case ev.ModelError() | ev.ProtocolError() | ev.EngineFault():
                return Text(f"  ✗ {type(e).__name__}: {_message(e)}", style="fail")
            case ev.ModelFailureHandled():
                code = f" ({e.code})" if e.code else ""
                style = "note" if e.action in ("none", "settled") else "fail"
                return Text(f"  ✗ model {e.kind}{code} → {e.action}", style=style)
            case ev.SessionRejected():
                return Text(f"  ✗ call rejected: {e.reason}", style="fail")
            case ev.CallEnded():
                self.outcome, self.reason = e.outcome, e.reason
                return Text(f"  ■ call ended: {e.reason} ({e.outcome or 'ended'})", style="note")
        return None

    def _heard(self, item_id: str, cut_ms: int) -> Text:
        said = self._said.get(item_id, "")
        total = int(self._audio_ms.get(item_id, 0))
        heard = heard_part(said, cut_ms, total)
        suffix = " …" if heard != said else ""
        of = f" of {total}" if total else ""
        return Text.assemble(
            ("  bot: ", "bot"), heard + suffix, (f"  (the caller heard {cut_ms}{of} ms)", "note")
        )

    @staticmethod
    def _transition(e: ev.FsaTransition) -> Text | None:
        if e.source == e.target:
            if not e.guard:  # a step that runs an action: the tool line says it
                return None
            return Text(f"    ◆ {e.fsa} stays in {e.source}: {e.trigger} [{e.guard}]", style="fsa")
        guard = f" [{e.guard}]" if e.guard else ""
        return Text(f"    ◆ {e.fsa}: {e.source} → {e.target} on {e.trigger}{guard}", style="fsa")


def _said(who: str, style: str, text: str) -> Text:
    return Text.assemble((f"  {who}: ", style), text)


def _args(arguments: str, limit: int = 80) -> str:
    """A tool call's JSON arguments, shortened for one line."""
    flat = arguments.strip()
    if flat in ("{}", ""):
        return ""
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _message(e: Any) -> str:
    for name in ("message", "error", "reason"):
        value = getattr(e, name, "")
        if value:
            return str(value)
    return ""
