"""Play a scenario against an agent end to end, from a test: :func:`play_scenario`.

The same path as ``fastagent demo``: the service on an ephemeral loopback
port, the fake OpenAI Realtime server scripted by the scenario, the simulated
AudioCodes caller, the agent's real MCP tool servers, a real store.  Returns
the call's recorded events for assertions (and for :func:`fastagent.replay.replay`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

from fastagent import events as ev


@dataclass
class PlayedCall:
    """One played call: its id, every recorded event, and what went wrong."""

    call_id: str
    events: list[ev.Event]
    # Broken scenario expectations (a tool output that lacked `expect_output`,
    # a step the fake model could not play) and caller-side errors; [] if none.
    problems: list[str] = field(default_factory=list)

    @property
    def outcome(self) -> str:
        """The CallEnded outcome ("completed", "transferred", ...), "" if not ended."""
        ended = [e for e in self.events if isinstance(e, ev.CallEnded)]
        return ended[-1].outcome if ended else ""


def play_scenario(
    agent: str | None,
    scenario: str | Path,
    *,
    store: str | None = None,
    realtime: bool = False,
) -> PlayedCall:
    """Play ``scenario`` (a JSON file) with ``agent`` (a name or ``module:ATTR``;
    None: the agent the scenario names) and return the recorded call.

    ``store``: where to record (an SQLite path or postgresql:// URL); default a
    private in-memory store.  Raises the same one-line errors as ``fastagent
    demo`` for an unknown agent, a bad scenario or a bad setting.  Call it from
    synchronous code (it runs its own event loop).
    """
    from fastagent.service_cli import DemoPlan, run_demo
    from fastagent.store import open_store

    if store is None:
        return _in_memory(agent, Path(scenario), realtime)
    problems: list[str] = []
    plan = DemoPlan(agent, Path(scenario), store)
    call_id = asyncio.run(
        run_demo(None, None, store, realtime=realtime, show=False, plan=plan, problems=problems)
    )
    with open_store(store, create=False) as s:
        events = s.read_call(call_id)
    return PlayedCall(call_id, events, problems)


def _in_memory(agent: str | None, scenario: Path, realtime: bool) -> PlayedCall:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="fastagent-play-") as tmp:
        return play_scenario(agent, scenario, store=str(Path(tmp) / "calls.db"), realtime=realtime)
