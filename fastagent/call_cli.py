"""``fastagent call URL``: the simulated VAIC caller against any running service.

A one-line check of a deployment: it dials the service's ``/audiocodes``
endpoint as AudioCodes VoiceAI Connect does (``Authorization: Bearer``),
plays a scenario's caller side and prints what it observes live -- its own
turns, the bot's play streams (and whether it cut one off), the service's
speech recognitions of the caller, the bot's activities (hang-up, transfer,
DTMF) -- then how the call ended.

The simulated caller speaks in tones, not words: against the fake model (or
any server started with ``FASTAGENT_REALTIME_URL`` at a scripted model) the
scenario plays as written; against the real OpenAI model it checks the path
(auth, session, media format, audio both ways, barge-in, hang-up), not what
the model makes of a tone.

Exit status: 0 the call ran and ended cleanly; 1 it ran but the caller saw
problems (listed); 2 it could not run (refused connection, rejected token,
bad scenario), in one line.
"""

from __future__ import annotations

import asyncio
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

from fastagent import console
from fastagent.cli_common import fail

DEFAULT_SCENARIO = "default.json"


def call(
    url: Annotated[
        str,
        typer.Argument(
            help="The service's VAIC endpoint: ws://HOST:PORT/audiocodes or wss://HOST/audiocodes"
        ),
    ],
    token: Annotated[
        str | None,
        typer.Option(
            envvar="FASTAGENT_VAIC_TOKEN",
            metavar="TOKEN",
            help="The bearer token the service expects (none for a --no-auth service)",
            show_default=False,
        ),
    ] = None,
    scenario: Annotated[
        Path | None,
        typer.Option(
            metavar="FILE",
            help="A scenario JSON file (docs/scenarios.md); its caller side is played "
            "\\[default: the default agent's small talk]",
            show_default=False,
        ),
    ] = None,
    speed: Annotated[
        float,
        typer.Option(
            min=0.1,
            max=20,
            metavar="X",
            help="Play audio X times faster than real time; the service must play at the "
            "same speed (FASTAGENT_PLAYBACK_SPEED)",
        ),
    ] = 1.0,
    timeout: Annotated[
        float, typer.Option(min=1, metavar="SECONDS", help="Give up on the call after this long")
    ] = 120.0,
) -> None:
    """Call a running FastAgent service as AudioCodes would; print the live transcript."""
    from fastagent.testing.scenario import ScenarioError, load_scenario

    if not url.startswith(("ws://", "wss://")):
        raise fail(f"bad URL {url!r}: expected ws://HOST:PORT/audiocodes or wss://...")
    path = scenario or Path(
        str(resources.files("fastagent.examples") / "scenarios" / DEFAULT_SCENARIO)
    )
    try:
        played = load_scenario(path)
    except ScenarioError as exc:
        raise fail(str(exc)) from None
    console.out(
        Text.assemble(
            ("Calling ", "bold"),
            (url, "id"),
            f" with scenario {played.name}",
            (f"  (simulated VAIC caller, {speed:g}x real time)", "note"),
        )
    )
    report = asyncio.run(_call(url, token, played, speed, timeout))
    _summary(report)


async def _call(url: str, token: str | None, scenario: Any, speed: float, timeout: float) -> Any:
    from fastagent.testing.caller import SimulatedCaller

    caller = SimulatedCaller(
        url,
        token,
        formats=scenario.caller.formats,
        pace=1 / speed,
        realtime=speed == 1.0,
    )
    view = CallerView(caller)
    caller.observer = view
    main = asyncio.current_task()

    async def hang_up() -> None:
        await caller.hang_up("the caller's output was closed")
        if main is not None:
            main.cancel()

    def on_close() -> None:
        asyncio.get_running_loop().create_task(hang_up())

    stop = console.on_close(on_close)
    try:
        async with console.watch_pipe():
            return await caller.play(scenario, timeout=timeout)
    except asyncio.CancelledError:
        if console.closed():
            raise console.PipeClosed from None
        raise
    finally:
        stop()


class CallerView:
    """Print what the simulated caller does and observes, one line per thing."""

    def __init__(self, caller: Any) -> None:
        self.caller = caller

    def __call__(self, kind: str, msg: dict[str, Any]) -> None:
        if console.closed():
            return
        try:
            line = self.line(kind, msg)
            if line is not None:
                console.out(line)
        except console.PipeClosed:
            pass

    def line(self, kind: str, msg: dict[str, Any]) -> Text | None:
        """The line for a caller turn or a bot frame (None: nothing worth a line)."""
        if kind == "turn":
            return self._turn(msg)
        if kind == "session.accepted":
            return Text(f"  connected: media format {msg.get('mediaFormat')}", style="note")
        if kind == "session.error":
            return Text(f"  ✗ the service refused the call: {msg.get('reason', '')}", style="fail")
        if kind == "userStream.speech.recognition":
            alts = msg.get("alternatives") or [{}]
            text = alts[0].get("text", "") if isinstance(alts[0], dict) else ""
            return Text(f"    (the service heard the caller as: {text})", style="note")
        if kind == "playStream.stop":
            streams = self.caller.report.play_streams
            if not streams:
                return None
            s = streams[-1]
            cut = "  (the caller cut in)" if s.interrupted else ""
            return Text.assemble(("  bot: ", "bot"), f"speaks {s.ms / 1000:.1f} s", (cut, "cut"))
        if kind == "activities":
            lines = [self._activity(a) for a in msg.get("activities") or ()]
            shown = [ln for ln in lines if ln is not None]
            return Text("\n").join(shown) if shown else None
        return None

    @staticmethod
    def _turn(turn: dict[str, Any]) -> Text | None:
        kind = turn.get("kind")
        if kind == "caller":
            ms = _speech_ms(turn.get("caller") or "")
            cut = "  (cutting in)" if turn.get("barge_in_after_ms") is not None else ""
            return Text.assemble(
                ("  caller: ", "caller"),
                str(turn.get("caller")),
                (f"  [{ms} ms of tone]{cut}", "note"),
            )
        if kind == "dtmf":
            return Text.assemble(("  caller: ", "caller"), f"(keypad) {turn.get('dtmf')}")
        if kind == "silence":
            return Text(f"  caller: (silent for {turn.get('silence_ms')} ms)", style="note")
        return None

    @staticmethod
    def _activity(act: Any) -> Text | None:
        if not isinstance(act, dict):
            return None
        name = act.get("name")
        params = act.get("activityParams") or {}
        if name == "hangup":
            return Text("  ☎ bot hangs up", style="note")
        if name == "transfer":
            return Text(f"  ☎ bot transfers to {params.get('transferTarget', '?')}", style="note")
        if name == "sendDTMF" or name == "DTMF":
            return Text(f"  ☎ bot sends DTMF {act.get('value', '')}", style="note")
        return Text(f"  ☎ bot activity {name}", style="note")


def _speech_ms(text: str) -> int:
    from fastagent.testing.scenario import speech_ms

    return speech_ms(text)


def _summary(report: Any) -> None:
    connect = [e for e in report.errors if e.startswith("cannot connect")]
    if connect:
        hint = " (check --token)" if "401" in connect[0] or "403" in connect[0] else ""
        raise fail(connect[0] + hint)
    console.out("")
    console.out(Text.assemble(("conversation: ", "note"), (report.conversation_id, "id")))
    ended = report.ended or "not ended"
    console.out(Text.assemble(("ended:        ", "note"), _ended(ended)))
    heard = sum(s.ms for s in report.play_streams) / 1000
    console.out(
        Text.assemble(
            ("bot audio:    ", "note"), f"{heard:.1f} s in {len(report.play_streams)} streams"
        )
    )
    if report.session_error is not None:
        raise fail(f"the service refused the call: {report.session_error}")
    if report.errors:
        console.out(Text(f"problems ({len(report.errors)}):", style="fail"))
        for problem in report.errors:
            console.out(Text(f"  - {problem}", style="fail"))
        raise typer.Exit(1)
    console.out(Text("ok: the call ran and ended cleanly", style="ok"))


def _ended(code: str) -> str:
    return {
        "bot-disconnected": "the bot hung up",
        "transferred": "the bot transferred the call",
        "client-disconnected": "the caller hung up",
        "timeout": "timed out",
        "closed": "the service closed the socket",
        "rejected": "the service refused the call",
    }.get(code, code)


def register(app: typer.Typer) -> None:
    """Add ``call`` to the ``fastagent`` app."""
    app.command()(call)
