"""Scenario files: one JSON document scripting both ends of a simulated call.

The format is described in docs/scenarios.md.  :func:`load_scenario` and
:func:`scenario_from_dict` return frozen msgspec structs or raise
:class:`ScenarioError` with the file and a one-line reason.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import msgspec

SPEECH_MS_PER_WORD = 60
SPEECH_MIN_MS = 400
SAY_MS_PER_CHAR = 15
_DTMF_RE = re.compile(r"[0-9*#A-Da-d]{1,32}")


class ScenarioError(ValueError):
    """A scenario that cannot be used; str() is a one-line reason."""


class _Base(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class Failure(_Base, frozen=True, kw_only=True):
    """How a scripted response fails: ``status_details.error`` of its ``response.done``."""

    type: str = "server_error"
    code: str | None = None
    message: str = "The server had an error while processing your request."


class ModelStep(_Base, frozen=True, kw_only=True):
    """One step of a scripted model response: ``say`` text, ``call`` a function, or
    ``fail`` (the response ends ``failed`` there; the steps after it answer the
    client's next ``response.create``)."""

    say: str | None = None
    call: str | None = None
    fail: Failure | None = None
    args: dict[str, Any] = msgspec.field(default_factory=dict)
    expect_output: str | None = None
    # call steps: the response goes on after this call (parallel function calls)
    parallel: bool = False
    # call steps: the server starts the follow-up response by itself as soon as
    # the function output arrives (racing the client's response.create)
    server_replies: bool = False

    @property
    def kind(self) -> str:
        return "say" if self.say is not None else "call" if self.call is not None else "fail"


class FakeModel(_Base, frozen=True, kw_only=True):
    """Failure switches of the fake model for this scenario (see docs/scenarios.md)."""

    ignore: tuple[str, ...] = ()  # client event types never answered (timeouts)
    error_on: tuple[str, ...] = ()  # client event types answered with an error
    expire_after_responses: int | None = None  # then `session_expired` and a close
    unreachable: bool = False  # the model's address refuses connections
    no_session_created: bool = False  # a socket never opens with session.created
    model_timeout_s: float | None = None  # FASTAGENT_MODEL_TIMEOUT_S for this call


class Turn(_Base, frozen=True, kw_only=True):
    """One caller action: speech (``caller``), ``silence_ms``, ``dtmf``, ``drop`` (the
    socket is lost and VAIC resumes the session on a new one) or ``hangup``."""

    caller: str | None = None
    barge_in_after_ms: int | None = None
    silence_ms: int | None = None
    dtmf: str | None = None
    drop: bool = False
    hangup: bool = False
    model: tuple[ModelStep, ...] = ()
    # caller turns: what input transcription does with the utterance
    transcription: Literal["completed", "failed", "none"] = "completed"

    @property
    def kind(self) -> str:
        if self.caller is not None:
            return "caller"
        if self.silence_ms is not None:
            return "silence"
        if self.dtmf is not None:
            return "dtmf"
        if self.drop:
            return "drop"
        return "hangup"

    @property
    def speech_ms(self) -> int:
        return speech_ms(self.caller or "")


class CallerInfo(_Base, frozen=True, kw_only=True):
    from_: str = msgspec.field(default="+15550100", name="from")
    to: str = msgspec.field(default="+15550199")
    formats: tuple[str, ...] = ("raw/mulaw",)


class Scenario(_Base, frozen=True, kw_only=True):
    name: str
    agent: str = "default"
    # The voice model the demo runs it with ("" = FASTAGENT_MODEL or the default);
    # a GPT-Live model (gpt-live-1.1) plays it against the fake GPT-Live server.
    model: str = ""
    caller: CallerInfo = CallerInfo()
    greeting: tuple[ModelStep, ...] = ()
    turns: tuple[Turn, ...] = ()
    description: str = ""
    fake_model: FakeModel = FakeModel()


def speech_ms(text: str) -> int:
    """Length of the simulated utterance of ``text``: 60 ms a word, at least 400 ms."""
    return max(SPEECH_MIN_MS, SPEECH_MS_PER_WORD * len(text.split()))


def say_ms(text: str) -> int:
    """Length of the fake model's audio for ``text``: 15 ms a character."""
    return SAY_MS_PER_CHAR * len(text)


def response_segments(steps: tuple[ModelStep, ...]) -> list[tuple[ModelStep, ...]]:
    """Split steps into the responses the model gives: a ``call`` (unless
    ``parallel``) or a ``fail`` ends a response."""
    segments: list[tuple[ModelStep, ...]] = []
    current: list[ModelStep] = []
    for step in steps:
        current.append(step)
        if (step.call is not None and not step.parallel) or step.fail is not None:
            segments.append(tuple(current))
            current = []
    segments.append(tuple(current))
    return segments


def expected_play_streams(steps: tuple[ModelStep, ...]) -> int:
    """How many play streams these steps make: one per ``say`` (each is its own
    audio item, e.g. a spoken preamble and then the answer in one response)."""
    return sum(1 for s in steps if s.say)


# ---------------------------------------------------------------- validation


def _check_steps(steps: tuple[ModelStep, ...], where: str) -> None:
    for i, step in enumerate(steps):
        at = f"{where} step {i + 1}"
        if sum(x is not None for x in (step.say, step.call, step.fail)) != 1:
            raise ScenarioError(f"{at}: give exactly one of 'say', 'call' or 'fail'")
        if step.call is None and (step.parallel or step.server_replies):
            raise ScenarioError(f"{at}: 'parallel' and 'server_replies' belong to a 'call' step")
        if step.say is not None and not step.say.strip():
            raise ScenarioError(f"{at}: 'say' is empty")
        if step.call is not None and not step.call.strip():
            raise ScenarioError(f"{at}: 'call' is empty")
        if step.call is None and (step.args or step.expect_output is not None):
            raise ScenarioError(f"{at}: 'args' and 'expect_output' belong to a 'call' step")


def _check_turn(turn: Turn, where: str) -> None:
    given = [
        k
        for k, v in (
            ("caller", turn.caller),
            ("silence_ms", turn.silence_ms),
            ("dtmf", turn.dtmf),
            ("drop", turn.drop or None),
            ("hangup", turn.hangup or None),
        )
        if v is not None
    ]
    if len(given) != 1:
        what = ", ".join(given) if given else "none"
        raise ScenarioError(
            f"{where}: give exactly one of 'caller', 'silence_ms', 'dtmf', 'drop', 'hangup' "
            f"(got {what})"
        )
    kind = turn.kind
    if kind == "caller" and not (turn.caller or "").strip():
        raise ScenarioError(f"{where}: 'caller' text is empty")
    if turn.barge_in_after_ms is not None:
        if kind != "caller":
            raise ScenarioError(f"{where}: 'barge_in_after_ms' needs a 'caller' turn")
        if turn.barge_in_after_ms < 0:
            raise ScenarioError(f"{where}: 'barge_in_after_ms' must be >= 0")
    if kind == "silence" and (turn.silence_ms or 0) <= 0:
        raise ScenarioError(f"{where}: 'silence_ms' must be > 0")
    if kind == "dtmf" and not _DTMF_RE.fullmatch(turn.dtmf or ""):
        raise ScenarioError(f"{where}: 'dtmf' must be 1-32 of 0-9*#A-D, got {turn.dtmf!r}")
    if turn.model and kind not in ("caller", "dtmf"):
        raise ScenarioError(f"{where}: only 'caller' and 'dtmf' turns have 'model' steps")
    _check_steps(turn.model, where)


def validate(scenario: Scenario) -> Scenario:
    if not scenario.name.strip():
        raise ScenarioError("'name' is empty")
    if not scenario.caller.formats:
        raise ScenarioError("caller.formats is empty")
    _check_steps(scenario.greeting, "greeting")
    for i, turn in enumerate(scenario.turns):
        where = f"turn {i + 1}"
        _check_turn(turn, where)
        if turn.hangup and i != len(scenario.turns) - 1:
            raise ScenarioError(f"{where}: 'hangup' must be the last turn")
    return scenario


def scenario_from_dict(d: Any, source: str = "<scenario>") -> Scenario:
    try:
        scenario = msgspec.convert(d, Scenario)
    except msgspec.ValidationError as exc:
        raise ScenarioError(f"{source}: {exc}") from None
    try:
        return validate(scenario)
    except ScenarioError as exc:
        raise ScenarioError(f"{source}: {exc}") from None


def load_scenario(path: str | Path) -> Scenario:
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise ScenarioError(f"{p}: cannot read ({exc.strerror or exc})") from None
    try:
        raw = msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        raise ScenarioError(f"{p}: not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise ScenarioError(f"{p}: a scenario is a JSON object")
    return scenario_from_dict(raw, str(p))
