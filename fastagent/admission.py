"""Admission: what is settled for a ``session.initiate`` before the core decides.

The core imports neither the agent registry (``fastagent.agents``, which may import
code an operator names) nor the protocols' format tables, so the shell settles
both here and passes the result in as data (:class:`fastagent.core.Admission`):

* the agent the call's ``CallConfig.agent`` names, from a resolver (the registry
  when serving; replay's, which never imports code a recording names);
* the caller's format and the model format it is bridged to, negotiated with the
  pure functions of the protocol the call's model speaks
  (:func:`fastagent.vaic.choose_format` for Realtime,
  :func:`fastagent.live.choose_live_format` for GPT-Live).

Pure and deterministic: replay admits a recorded ``SessionInitiated`` again with
today's code and gets the same admission, so the core's ``SessionAccepted`` (or
``SessionRejected``) replays, and a change to the negotiation shows there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fastagent import events as ev
from fastagent.agent import Agent
from fastagent.agents import UnknownAgent, get_agent
from fastagent.core import Admission, Engine
from fastagent.live import choose_live_format
from fastagent.models import is_live_model
from fastagent.vaic import choose_format, no_format_reason

__all__ = ["AdmittingEngine", "admit", "engine_for"]


def admit(initiated: ev.SessionInitiated, agents: Callable[[str], Agent] = get_agent) -> Admission:
    """Resolve the agent and negotiate the formats for ``initiated``.

    Never raises: an unknown agent or no usable format is an admission with
    ``refused`` set (the core rejects the call); any other failure to load the
    agent is one with ``fault`` set (the core records an EngineFault).
    """
    try:
        agent = agents(initiated.config.agent)
    except UnknownAgent as exc:
        return Admission(refused=str(exc))
    except Exception as exc:  # an agent module that fails in another way
        return Admission(fault=f"{type(exc).__name__}: {exc}"[:300])
    offered = initiated.offered_formats
    live = is_live_model(initiated.config.model)
    chosen = (choose_live_format if live else choose_format)(offered)
    if chosen is None:
        return Admission(agent=agent, refused=no_format_reason(offered))
    return Admission(agent=agent, media_format=chosen.vaic_format, model_format=chosen.model_format)


def engine_for(
    initiated: ev.SessionInitiated, agents: Callable[[str], Agent] = get_agent
) -> Engine:
    """A fresh engine for the call ``initiated`` begins, admitted (it then handles
    ``initiated`` like any input)."""
    return Engine(initiated.call_id, admission=admit(initiated, agents))


@dataclass
class AdmittingEngine(Engine):
    """An engine that is admitted when its ``SessionInitiated`` arrives, for code
    that feeds a call's inputs one by one from a fresh engine (scripted paths,
    tests): the same :func:`admit`, with ``agents``, just before the core sees
    the input.  The service and replay admit explicitly (:func:`engine_for`).
    """

    agents: Callable[[str], Agent] = get_agent

    def handle(self, event: ev.Input) -> list[ev.Decision]:
        if type(event) is ev.SessionInitiated and self.admission is None:
            self.admission = admit(event, self.agents)
        return super().handle(event)
