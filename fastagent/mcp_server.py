"""FastAgent's own MCP server, "fastagent": the service's agents and calls, to MCP clients.

Tools: ``list_agents``, ``describe_agent``, ``fsa_diagram`` (Mermaid),
``list_calls`` and ``call_timeline`` (from the event store).  The engine's
in-call tools (FSA intents and steps, end_call, transfer_to_human) are decided by
the deterministic core and recorded as ``FunctionCallDispatched`` with server
"fastagent"; this server is the outside view of the same service.

Mounting (the service does this behind its bearer-token auth)::

    server = build_mcp_server(lambda: store)
    app.mount("/mcp", make_mcp_app(server))
    # mounted sub-app lifespans do not run: in the service's lifespan
    async with server.session_manager.run():
        ...
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import msgspec
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette

from fastagent import events as ev
from fastagent import fsa as fsa_mod
from fastagent import masking
from fastagent.agent import Agent
from fastagent.agents import UnknownAgent, agent_names, get_agent
from projections.calls import list_calls as call_summaries

SERVER_NAME = "fastagent"
_AUDIO = (ev.CallerAudio, ev.BotAudio)

StoreSource = Any  # an EventStore, or a callable returning one (opened lazily)


def _agent(name: str, agents: Callable[[str], Agent]) -> Agent:
    try:
        return agents(name)
    except UnknownAgent as exc:
        raise ToolError(str(exc)) from None


def _recorded_agent(events: list[ev.Event], agents: Callable[[str], Agent]) -> Agent | None:
    """The built-in agent a call names, for its sensitive slots.  Never imports a
    ``module:ATTR`` a recording names (replay and views do not run recorded code)."""
    for e in events[:1]:
        if isinstance(e, ev.SessionInitiated) and ":" not in e.config.agent:
            try:
                return agents(e.config.agent)
            except UnknownAgent:
                return None
    return None


def describe(agent: Agent) -> dict[str, Any]:
    """An agent as plain data: FSAs (states, steps, slots, transitions) and tool servers."""

    def action(a: fsa_mod.Action | None) -> dict[str, Any] | None:
        return None if a is None else asdict(a)

    def state(st: fsa_mod.State) -> dict[str, Any]:
        return {
            "name": st.name,
            "instructions": st.instructions,
            "terminal": st.terminal,
            "outcome": st.outcome if st.terminal else "",
            "transfer": st.transfer,
            "pci": st.pci,
            "on_enter": action(st.on_enter),
            "after": [{"target": g.target, "guard": g.guard} for g in st.after],
            "steps": [
                {
                    "name": s.name,
                    "description": s.description,
                    "slots": list(s.slots),
                    "confirm": s.confirm,
                    "action": action(s.action),
                    "go": [{"target": g.target, "guard": g.guard} for g in s.go],
                }
                for s in st.steps
            ],
        }

    return {
        "name": agent.name,
        "instructions": agent.instructions,
        "greeting": agent.greeting,
        "voice": agent.voice,
        "transfer_target": agent.transfer_target,
        "scenario": agent.scenario,
        "external_tools": list(agent.tools),
        "servers": [
            {"name": s.name, "command": list(s.command), "url": s.url, "timeout_s": s.timeout_s}
            for s in agent.servers
        ],
        "fsas": [
            {
                "name": f.name,
                "intent": f.intent,
                "cancel_tool": f.cancel_tool,
                "description": f.description,
                "initial": f.initial,
                "slots": [asdict(s) for s in f.slots],
                "states": [state(st) for st in f.states],
            }
            for f in agent.fsas
        ],
    }


def build_mcp_server(
    store: StoreSource = None,
    *,
    agents: Callable[[str], Agent] = get_agent,
    names: Callable[[], list[str]] = agent_names,
    access: Any = None,
) -> MCPServer:
    """The "fastagent" MCP server.  ``store``: an EventStore or a callable giving one.

    ``access`` (a :class:`fastagent.access.ReadAccess`) names the reader of each
    request in the audit trail; the service mounts the server behind it."""
    mcp = MCPServer(
        SERVER_NAME,
        instructions="FastAgent voice agents: their FSAs, and the recorded calls.",
        log_level="WARNING",
    )

    def get_store() -> Any:
        source = store() if callable(store) else store
        if source is None:
            raise ToolError("no event store is configured for this service")
        return source

    @mcp.tool()
    def list_agents() -> dict[str, Any]:
        """The agents this service can run, with their tasks (FSAs)."""
        out = []
        for name in names():
            a = agents(name)
            out.append(
                {
                    "name": a.name,
                    "fsas": [{"name": f.name, "intent": f.intent} for f in a.fsas],
                    "servers": [s.name for s in a.servers],
                    "scenario": a.scenario,
                }
            )
        return {"agents": out}

    @mcp.tool()
    def describe_agent(name: str) -> dict[str, Any]:
        """One agent in full: instructions, FSAs with states, steps, slots and tool servers."""
        return describe(_agent(name, agents))

    @mcp.tool()
    def fsa_diagram(name: str, fsa: str = "") -> str:
        """Mermaid state diagrams of an agent's FSAs (or of the one named ``fsa``)."""
        a = _agent(name, agents)
        chosen = [f for f in a.fsas if not fsa or f.name == fsa]
        if not chosen:
            known = ", ".join(f.name for f in a.fsas) or "none"
            raise ToolError(f"agent {name!r} has no FSA {fsa!r} (known: {known})")
        return "\n\n".join(f"%% {f.name}\n{fsa_mod.diagram(f)}" for f in chosen)

    @mcp.tool()
    def list_calls(limit: int = 50) -> dict[str, Any]:
        """The most recent calls (newest last): id, start/end time, events, outcome."""
        try:
            calls = call_summaries(get_store())
        except ToolError:
            raise
        except Exception as exc:
            raise ToolError(f"cannot list calls: {exc}") from None
        limit = max(1, min(limit, 1000))
        return {"calls": [msgspec.to_builtins(c) for c in calls[-limit:]]}

    def who(ctx: Context | None) -> str:
        headers = None
        if ctx is not None:
            try:
                headers = ctx.headers
            except ValueError:  # no request (called directly)
                headers = None
        if headers is None:
            return "mcp-stdio"
        reader = access.reader(headers) if access is not None else None
        return reader.who if reader is not None else "mcp"

    @mcp.tool()
    def call_timeline(
        call_id: str,
        include_audio: bool = False,
        limit: int = 2000,
        reveal: bool = False,
        ctx: Context | None = None,
    ) -> dict[str, Any]:
        """The events of one call in order (audio chunk boundaries only if asked).

        Personal data is masked unless ``reveal``; every call of this tool is
        recorded in the call's audit trail with the reader's credential."""
        try:
            s = get_store()
            events = s.read_call(call_id)
            s.audit.record(who(ctx), "reveal" if reveal else "timeline", call_id, "mcp")
        except ToolError:
            raise
        except Exception as exc:  # UnknownCall, CallForgotten: one line each
            raise ToolError(str(exc)) from None
        kept = [e for e in events if include_audio or not isinstance(e, _AUDIO)]
        limit = max(1, min(limit, 100_000))
        keys = masking.sensitive_keys(_recorded_agent(events, agents))
        return {
            "call_id": call_id,
            "events": len(events),
            "shown": min(len(kept), limit),
            "masked": not reveal,
            "timeline": [
                ev.to_builtins(e) for e in (kept if reveal else masking.mask_events(kept, keys))
            ][:limit],
        }

    return mcp


def make_mcp_app(
    server: MCPServer, *, host: str = "127.0.0.1", allowed_hosts: tuple[str, ...] = ()
) -> Starlette:
    """A streamable-HTTP ASGI app serving ``server`` at its root (mount it at ``/mcp``).

    ``host`` is where the service listens: on loopback, DNS-rebinding protection
    is on; ``allowed_hosts`` (``"name:port"`` patterns) widens it for other hosts.
    The session manager must run in the service's lifespan (see module docs).
    """
    security = None
    if allowed_hosts:
        security = TransportSecuritySettings(
            enable_dns_rebinding_protection=True,
            allowed_hosts=list(allowed_hosts),
            allowed_origins=[f"http://{h}" for h in allowed_hosts]
            + [f"https://{h}" for h in allowed_hosts],
        )
    return server.streamable_http_app(
        streamable_http_path="/", host=host, transport_security=security
    )
