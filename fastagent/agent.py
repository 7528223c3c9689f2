"""What an agent is: instructions, voice, its Finite State Agents and its tool servers."""

from __future__ import annotations

from dataclasses import dataclass, field

from fastagent.fsa import FSA, validate
from fastagent.personal_data import Privacy


@dataclass(frozen=True)
class McpServer:
    """An MCP server the agent uses: a stdio command or a streamable-HTTP URL."""

    name: str
    command: tuple[str, ...] = ()
    url: str = ""
    env: dict[str, str] = field(default_factory=dict)
    timeout_s: float = 10.0


@dataclass(frozen=True)
class Agent:
    name: str
    instructions: str
    greeting: str = "Greet the caller in one short sentence and ask how you can help."
    voice: str = "marin"
    fsas: tuple[FSA, ...] = ()
    servers: tuple[McpServer, ...] = ()
    tools: tuple[str, ...] = ()  # external tools offered in open conversation
    transfer_target: str = ""
    send_dtmf: bool = False  # offer the model a send_dtmf tool (e.g. to drive an IVR)
    session_params: dict[str, object] = field(default_factory=dict)  # VAIC config at start
    scenario: str = ""  # the demo scenario file name in fastagent/examples/scenarios/
    # What is personal data besides tool data and sensitive slots (docs/privacy.md).
    privacy: Privacy = field(default_factory=Privacy)
    # When the voice model fails: one retry, then this apology (a response with
    # these instructions), then the fallback: "transfer" (to transfer_target, if
    # set) or "hangup".  The call's outcome is then "failed".
    apology: str = (
        "Apologise in one short sentence: something went wrong on your side. "
        "Ask the caller to say that again."
    )
    fallback: str = "transfer"
    # gpt-realtime-2's reasoning effort in open conversation (minimal | low | medium |
    # high | xhigh; "" = the model's default); an FSA state may set its own.
    reasoning_effort: str = ""

    def __post_init__(self) -> None:
        from fastagent.models import check_effort

        check_effort(self.reasoning_effort)
        if self.fallback not in ("transfer", "hangup"):
            raise ValueError(f"agent {self.name!r}: fallback must be 'transfer' or 'hangup'")
        seen: set[str] = set()
        for fsa in self.fsas:
            validate(fsa)
            if fsa.intent in seen:
                raise ValueError(f"agent {self.name!r}: intent {fsa.intent!r} used twice")
            seen.add(fsa.intent)

    def fsa(self, name: str) -> FSA:
        return next(f for f in self.fsas if f.name == name)
