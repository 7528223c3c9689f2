"""The agent registry: built-in example agents by name, your own by import path.

A name with a colon, ``package.module:ATTRIBUTE``, imports the module and takes
the attribute, which must be an :class:`~fastagent.agent.Agent`.  The name is
recorded in the call's ``CallConfig``, so replay finds the same agent again.
The name comes from the operator's configuration (``--agent``,
``FASTAGENT_AGENT``), never from a caller.
"""

from __future__ import annotations

import importlib

from fastagent.agent import Agent
from fastagent.errors import ConfigError

DEFAULT = Agent(
    name="default",
    instructions=(
        "You are FastAgent, a friendly phone assistant. Keep answers short: this is a phone call. "
        "Use end_call when the caller says goodbye, transfer_to_human when they ask for a person, "
        "send_dtmf when they ask you to press keys on the line (a menu, a conference PIN)."
    ),
    transfer_target="tel:+15550000000",
    send_dtmf=True,
    scenario="default.json",
)

# Example agents live in fastagent.examples, each module exporting AGENT.
_MODULES = {"banking": "banking", "healthcare": "healthcare", "retail": "retail"}


class UnknownAgent(ConfigError, LookupError):
    pass


def get_agent(name: str) -> Agent:
    """The agent called ``name``; raises UnknownAgent (one line) if there is none."""
    if name == "default":
        return DEFAULT
    if ":" in name:
        return _import_agent(name)
    module = _MODULES.get(name)
    if module is None:
        raise UnknownAgent(f"unknown agent {name!r} (known: {', '.join(agent_names())})")
    return importlib.import_module(f"fastagent.examples.{module}").AGENT  # type: ignore[no-any-return]


def agent_names() -> list[str]:
    return ["default", *_MODULES]


def _import_agent(path: str) -> Agent:
    module_name, _, attr = path.partition(":")
    if not module_name or not attr.isidentifier():
        raise UnknownAgent(f"bad agent {path!r}: expected package.module:ATTRIBUTE")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # missing module, or an error in the user's module
        first = (str(exc).strip().splitlines() or [""])[0]
        raise UnknownAgent(
            f"cannot import agent module {module_name!r}: {type(exc).__name__}: {first}"
        ) from None
    agent = getattr(module, attr, None)
    if agent is None:
        raise UnknownAgent(f"agent module {module_name!r} has no attribute {attr!r}")
    if not isinstance(agent, Agent):
        raise UnknownAgent(f"{path} is a {type(agent).__name__}, not a fastagent Agent")
    return agent
