"""The agent registry: built-in example agents by name."""

from __future__ import annotations

import importlib

from fastagent.agent import Agent

DEFAULT = Agent(
    name="default",
    instructions=(
        "You are FastAgent, a friendly phone assistant. Keep answers short: this is a phone call. "
        "Use end_call when the caller says goodbye, transfer_to_human when they ask for a person."
    ),
    transfer_target="tel:+15550000000",
    scenario="default.json",
)

# Example agents live in their own modules, each exporting AGENT.
_MODULES = {"banking": "banking", "healthcare": "healthcare", "retail": "retail"}


class UnknownAgent(LookupError):
    pass


def get_agent(name: str) -> Agent:
    if name == "default":
        return DEFAULT
    module = _MODULES.get(name)
    if module is None:
        raise UnknownAgent(f"unknown agent {name!r} (known: {', '.join(agent_names())})")
    return importlib.import_module(f"fastagent.agents.{module}").AGENT  # type: ignore[no-any-return]


def agent_names() -> list[str]:
    return ["default", *_MODULES]
