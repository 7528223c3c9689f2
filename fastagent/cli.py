"""The ``fastagent`` command line.

Every command reports bad input (unknown call id, corrupt log, unreadable
recording, store that cannot be opened) in one line on stderr with exit code 2.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from fastagent import events as ev
from fastagent.cli_common import HelpGroup, JsonOpt, StoreOpt, fail
from fastagent.errors import FastAgentError

app = typer.Typer(
    cls=HelpGroup,
    help="FastAgent: event-sourced, replayable voice agents on the phone.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
fsa_app = typer.Typer(cls=HelpGroup, help="Finite State Agents.", no_args_is_help=True)
app.add_typer(fsa_app, name="fsa")
new_app = typer.Typer(cls=HelpGroup, help="Start a project from a template.", no_args_is_help=True)
app.add_typer(new_app, name="new")


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"fastagent {version('fastagent')}")
        except PackageNotFoundError:  # run from a source tree that was never installed
            typer.echo("fastagent (not installed)")
        raise typer.Exit()


@app.callback()
def _root(
    _: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit"
        ),
    ] = False,
) -> None:
    """FastAgent: event-sourced, replayable voice agents on the phone."""


__all__ = ["app", "clear_errors", "fail", "main"]


@contextmanager
def clear_errors() -> Iterator[None]:
    """Turn the errors users can cause into one line and exit code 2: every
    :class:`~fastagent.errors.FastAgentError`, and a file that cannot be read."""
    try:
        yield
    except BrokenPipeError:
        raise  # stdout's reader went away: main() ends quietly, this is no error
    except (FastAgentError, OSError) as exc:
        raise fail(one_line(exc)) from None


def one_line(exc: BaseException) -> str:
    """The first line of an error's message (its type name if it has none)."""
    text = str(exc).strip()
    return (text.splitlines() or [type(exc).__name__])[0]


def _open(store: str | None) -> Any:
    """The store for a read command: one that exists, never a new empty one."""
    from fastagent.store import open_store

    return open_store(store, create=False)


def _who(reveal: bool) -> str:
    """Who reads, for the audit trail: ``cli:<os user>``, and with ``--reveal`` the
    label of the read credential (FASTAGENT_READ_TOKEN) it needs."""
    import getpass

    try:
        user = getpass.getuser()
    except Exception:  # no user name (a container without /etc/passwd entry)
        user = "unknown"
    if not reveal:
        return f"cli:{user}"
    from fastagent.access import AccessError, ReadAccess

    try:
        access = ReadAccess.from_env()
    except AccessError as exc:
        raise fail(str(exc)) from None
    if not access.enabled:
        raise fail("--reveal needs the read credential: set FASTAGENT_READ_TOKEN (docs/privacy.md)")
    return f"{access.labels()[0]} (cli:{user})"


def _load(
    call_id: str | None,
    file: Path | None,
    store: str | None,
    *,
    action: str = "timeline",
    who: str = "",
) -> list[ev.Event]:
    """A call's events, personal fields opened; every read is appended to the store's
    audit trail (``action`` by ``who``).  A sealed recording file opens with the
    keys of ``store`` (default: $FASTAGENT_STORE or ./fastagent.db)."""
    from fastagent.replay import read_recording, recording_is_sealed

    if file is not None:
        if not recording_is_sealed(file) or not (store or os.environ.get("FASTAGENT_STORE")):
            return read_recording(file)  # a sealed one says it needs --store
        with _open(store) as s:
            events = read_recording(file, opener=s.sealer.open)
            if events:
                s.audit.record(who or _who(False), action, events[0].call_id, f"file {file}")
            return events
    if not call_id:
        raise fail("give a call id or --file")
    with _open(store) as s:
        events = s.read_call(call_id)
        s.audit.record(who or _who(False), action, call_id)
        return events


AgentOpt = Annotated[
    str | None,
    typer.Option(
        "--agent",
        help="The agent a recording names by import path (module:ATTRIBUTE): replay never "
        "imports code a recording names",
    ),
]
RevealOpt = Annotated[
    bool,
    typer.Option(
        "--reveal",
        help="Show personal data unmasked (needs FASTAGENT_READ_TOKEN; audited)",
    ),
]


@app.command()
def replay(
    call_id: Annotated[
        str | None, typer.Argument(help="The call to replay (see `fastagent calls`)")
    ] = None,
    file: Annotated[
        Path | None,
        typer.Option("--file", metavar="FILE", help="A recording written by `fastagent export`"),
    ] = None,
    as_json: JsonOpt = False,
    store: StoreOpt = None,
    agent: AgentOpt = None,
    reveal: RevealOpt = False,
) -> None:
    """Replay a recorded call through today's engine; exit 1 on divergence.

    Personal data is shown masked unless --reveal."""
    from fastagent.replay import agents_for
    from fastagent.replay import replay as run_replay
    from projections.trail import timeline

    who = _who(reveal)
    with clear_errors():
        events = _load(call_id, file, store, action="reveal" if reveal else "timeline", who=who)
        agents = agents_for(events, agent)
        result = run_replay(events, agents)
        if not reveal:
            events, result = _masked(events, result, agents)
    div = result.divergence
    if as_json:
        out = {
            "call_id": result.call_id,
            "identical": result.identical,
            "events": result.events,
            "inputs": result.inputs,
            "decisions": result.decisions,
            "divergence": div.to_dict() if div else None,
            "timeline": timeline(events) if div is None else [],
        }
        typer.echo(json.dumps(out, indent=2))
    elif div is None:
        for row in timeline(events):
            typer.echo(f"{_clock(row['ms'])}  {row['text']}")
        typer.echo(
            f"identical: {result.inputs} inputs, {result.decisions} decisions "
            f"replayed for call {result.call_id}"
        )
    else:
        for line in div.report(result.call_id):
            typer.echo(line)
    if div is not None:
        raise typer.Exit(1)


def _masked(events: list[ev.Event], result: Any, agents: Any) -> tuple[list[ev.Event], Any]:
    """The events and the divergence as shown masked (after replaying the clear ones)."""
    import dataclasses

    from fastagent.masking import Known, mask_event, sensitive_keys
    from fastagent.replay import field_diffs, recorded_agent, short

    try:
        keys = sensitive_keys(agents(recorded_agent(events)))
    except Exception:
        keys = sensitive_keys(None)
    known = Known.of(events, keys)
    shown = [mask_event(e, keys, known) for e in events]
    div = result.divergence
    if div is None:
        return shown, result
    rec = mask_event(div.recorded, keys, known) if div.recorded is not None else None
    new = mask_event(div.new, keys, known) if div.new is not None else None
    masked = dataclasses.replace(
        div,
        recorded=rec,
        new=new,
        inputs_before=[mask_event(i, keys, known) for i in div.inputs_before],
        recorded_holds=short(rec) if rec is not None else div.recorded_holds,
        new_holds=short(new) if new is not None else div.new_holds,
        fields=field_diffs(rec, new) if rec is not None and new is not None else [],
    )
    return shown, dataclasses.replace(result, divergence=masked)


def _clock(ms: int) -> str:
    return f"+{ms // 60000:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}"


@app.command()
def calls(store: StoreOpt = None, as_json: JsonOpt = False) -> None:
    """List recorded calls: id, start, duration, outcome."""
    from projections.calls import list_calls

    with clear_errors(), _open(store) as s:
        rows = list_calls(s)
    if as_json:
        typer.echo(json.dumps([_call_row(r) for r in rows], indent=2))
        return
    typer.echo(f"{'call id':<38} {'started (UTC)':<20} {'duration':>9} {'events':>7}  outcome")
    for r in rows:
        row = _call_row(r)
        typer.echo(
            f"{row['call_id']:<38} {row['started']:<20} {row['duration_s']:>8.1f}s "
            f"{row['events']:>7}  {row['outcome']}"
        )


def _call_row(r: Any) -> dict[str, Any]:
    started = datetime.fromtimestamp(r.started_at_us / 1e6, UTC).strftime("%Y-%m-%d %H:%M:%S")
    return {
        "call_id": r.call_id,
        "started": started,
        "duration_s": round((r.ended_at_us - r.started_at_us) / 1e6, 3),
        "events": r.events,
        "outcome": r.outcome,
    }


@app.command()
def export(
    call_id: Annotated[str, typer.Argument(help="The call to export (see `fastagent calls`)")],
    output: Annotated[
        Path, typer.Option("-o", "--output", metavar="FILE", help="The recording file to write")
    ],
    store: StoreOpt = None,
    reveal: Annotated[
        bool,
        typer.Option(
            "--reveal",
            help="Write personal data in clear (needs FASTAGENT_READ_TOKEN; audited); "
            "by default it stays sealed with the call's key, readable only with this store",
        ),
    ] = False,
) -> None:
    """Write a call as a portable, versioned one-file recording (personal data sealed)."""
    from fastagent.replay import write_recording

    who = _who(reveal)
    with clear_errors():
        with _open(store) as s:
            events = s.read_call(call_id)
            s.audit.record(who, "export-clear" if reveal else "export", call_id, f"to {output}")
            write_recording(events, output, sealer=None if reveal else s.sealer)
    sealed = "in clear" if reveal else "personal data sealed"
    typer.echo(f"wrote {len(events)} events of call {call_id} to {output} ({sealed})")


@app.command()
def forget(
    call_id: str,
    store: StoreOpt = None,
    force: Annotated[
        bool, typer.Option("--force", help="Also a call that has not ended (its driver stops)")
    ] = False,
) -> None:
    """Forget a call: destroy its data key, so its personal data is unreadable for good.

    The log is not changed; replay and export of the call then refuse, saying when it
    was forgotten.  The forgetting is recorded in the audit trail."""
    with clear_errors():
        with _open(store) as s:
            events = s.read_call(call_id, forgotten="blank")
            if not isinstance(events[-1], ev.CallEnded) and not force:
                raise fail(f"call {call_id!r} has not ended; forget it afterwards, or --force")
            at = s.forget(call_id, _who(False))
    when = datetime.fromtimestamp(at / 1e6, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    typer.echo(f"forgot call {call_id} at {when}: its data key is destroyed")


@app.command("rewrap-keys")
def rewrap_keys(store: StoreOpt = None) -> None:
    """Master key rotation: wrap every call's data key with the current master key.

    Put the new key first in FASTAGENT_MASTER_KEY (new,old), run this, then drop the
    old key.  No event is rewritten: only the small keys table changes."""
    with clear_errors(), _open(store) as s:
        n = s.keys.rewrap()
    typer.echo(f"rewrapped {n} call key(s) with the current master key")


@app.command()
def audit(
    call_id: Annotated[str | None, typer.Argument(help="Only this call")] = None,
    store: StoreOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
) -> None:
    """The audit trail: who read, exported, revealed or forgot which call, and when."""
    with clear_errors():
        with _open(store) as s:
            rows = s.audit.read(call_id)
    out = [
        {
            "at": datetime.fromtimestamp(r.at_us / 1e6, UTC).strftime("%Y-%m-%d %H:%M:%S.%f"),
            "who": r.who,
            "action": r.action,
            "call_id": r.call_id,
            "detail": r.detail,
        }
        for r in rows
    ]
    if as_json:
        typer.echo(json.dumps(out, indent=2))
        return
    for r in out:
        typer.echo(f"{r['at']}  {r['action']:<12} {r['call_id']:<38} {r['who']}  {r['detail']}")


def _agents_named(refs: list[str] | None) -> list[tuple[str, Any]]:
    """(reference, Agent) for ``refs`` (names or module:ATTR), or every built-in agent."""
    from fastagent.agents import agent_names, get_agent

    return [(ref, get_agent(ref)) for ref in (refs or agent_names())]


@fsa_app.command("diagram")
def fsa_diagram(
    name: Annotated[
        str,
        typer.Argument(
            help="An FSA name, or an agent (a built-in name or package.module:ATTRIBUTE) "
            "for all its FSAs"
        ),
    ],
) -> None:
    """Print the Mermaid state diagram of an FSA, or of every FSA of an agent."""
    from fastagent.fsa import diagram

    with clear_errors():
        if ":" in name:  # an agent of your own, by import path
            chosen = [f for _, agent in _agents_named([name]) for f in agent.fsas]
        else:
            chosen = []
            for ref, agent in _agents_named(None):
                if name == ref:
                    chosen = list(agent.fsas)
                    break
                chosen += [f for f in agent.fsas if f.name == name][:1]
                if chosen:
                    break
        if not chosen:
            raise fail(f"unknown FSA or agent {name!r} (see `fastagent fsa list`)")
        typer.echo("\n\n".join(diagram(f) for f in chosen))


@fsa_app.command("list")
def fsa_list(
    agents: Annotated[
        list[str] | None,
        typer.Argument(
            help="Agents to list (built-in names or package.module:ATTRIBUTE) "
            "\\[default: the built-in ones]",
            show_default=False,
        ),
    ] = None,
) -> None:
    """List agents and their FSAs: NAME: FSA (intent tool), ..."""
    with clear_errors():
        for ref, agent in _agents_named(agents):
            names = ", ".join(f"{f.name} ({f.intent})" for f in agent.fsas) or "-"
            typer.echo(f"{ref}: {names}")


@new_app.command("agent")
def new_agent(
    name: Annotated[str, typer.Argument(help="The agent's Python package name, e.g. tea_shop")],
    directory: Annotated[
        Path | None,
        typer.Option(
            "--dir",
            metavar="DIR",
            help="Where to write the project \\[default: ./NAME]",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Write a runnable agent project: an FSA, an MCP tool server, a scenario, a test."""
    from fastagent.scaffold import ScaffoldError
    from fastagent.scaffold import new_agent as scaffold

    try:
        root = scaffold(name, directory)
    except ScaffoldError as exc:
        raise fail(str(exc)) from None
    typer.echo(f"wrote agent {name!r} to {root}/ (docs/tutorial.md walks through it)")
    typer.echo(f"  cd {root}")
    typer.echo(f"  PYTHONPATH=. fastagent demo --agent {name}.agent:AGENT   # play its scenario")
    typer.echo("  PYTHONPATH=. python -m pytest -q                         # run its test")


def _register_parts() -> None:
    # Imported, not guarded: a broken import is a bug to see, not a command to hide.
    from fastagent.analytics_cli import register as register_analytics
    from fastagent.call_cli import register as register_client
    from fastagent.ops_cli import register as register_ops
    from fastagent.service_cli import register as register_service

    register_analytics(app)
    register_service(app)
    register_ops(app)
    register_client(app)


_register_parts()


def main() -> None:
    """The ``fastagent`` entry point: a closed stdout pipe ends it at once and quietly."""
    from fastagent import console

    console.remember_stdout()
    try:
        app()
    except (console.PipeClosed, BrokenPipeError):
        console.guard_pipe()
        sys.exit(console.EXIT_PIPE_CLOSED)
    except SystemExit as exc:
        # click and rich end a print that hit a closed pipe with exit 1 (after
        # silencing stdout themselves): report it as the pipe it was.
        if exc.code == 1 and (
            console.silenced_by_a_closed_pipe() or type(sys.stdout).__name__ == "PacifyFlushWrapper"
        ):
            console.guard_pipe()
            sys.exit(console.EXIT_PIPE_CLOSED)
        raise exc from None
    except KeyboardInterrupt:
        sys.exit(130)
    except FastAgentError as exc:  # one a command did not map itself
        typer.echo(f"fastagent: {one_line(exc)}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
