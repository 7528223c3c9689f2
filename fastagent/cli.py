"""The ``fastagent`` command line.

Every command reports bad input (unknown call id, corrupt log, unreadable
recording, store that cannot be opened) in one line on stderr with exit code 2.
"""

from __future__ import annotations

import json
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


def _load(call_id: str | None, file: Path | None, store: str | None) -> list[ev.Event]:
    from fastagent.replay import read_recording

    if file is not None:
        return read_recording(file)
    if not call_id:
        raise fail("give a call id or --file")
    with _open(store) as s:
        return s.read_call(call_id)


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
) -> None:
    """Replay a recorded call through today's engine; exit 1 on divergence."""
    from fastagent.replay import replay as run_replay
    from projections.trail import timeline

    with clear_errors():
        events = _load(call_id, file, store)
        result = run_replay(events)
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
) -> None:
    """Write a call as a portable, versioned one-file recording."""
    from fastagent.replay import write_recording

    with clear_errors():
        events = _load(call_id, None, store)
        write_recording(events, output)
    typer.echo(f"wrote {len(events)} events of call {call_id} to {output}")


@fsa_app.command("diagram")
def fsa_diagram(
    name: Annotated[str, typer.Argument(help="An FSA name, or an agent name for all its FSAs")],
) -> None:
    """Print a Mermaid state diagram of an FSA (by FSA or agent name)."""
    from fastagent.agents import agent_names, get_agent
    from fastagent.fsa import diagram

    with clear_errors():
        for agent_name in agent_names():
            agent = get_agent(agent_name)
            for f in agent.fsas:
                if name in (f.name, agent_name):
                    typer.echo(diagram(f))
                    if name == f.name:
                        return
            if name == agent_name:
                return
    raise fail(f"unknown FSA {name!r}")


@fsa_app.command("list")
def fsa_list() -> None:
    """List the agents and their FSAs."""
    from fastagent.agents import agent_names, get_agent

    with clear_errors():
        for agent_name in agent_names():
            agent = get_agent(agent_name)
            names = ", ".join(f"{f.name} ({f.intent})" for f in agent.fsas) or "-"
            typer.echo(f"{agent_name}: {names}")


def _register_parts() -> None:
    # Imported, not guarded: a broken import is a bug to see, not a command to hide.
    from fastagent.analytics_cli import register as register_analytics
    from fastagent.ops_cli import register as register_ops
    from fastagent.service_cli import register as register_service

    register_analytics(app)
    register_service(app)
    register_ops(app)


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
