"""What the ``fastagent`` commands share: options, the help's shape, one-line errors.

Every option a command takes names its value (``--store PATH|URL``, not
``<str>``), shows its default, and names the environment variable behind it.
:class:`HelpGroup` is the command group class that enforces the look: flags get
no value placeholder, an option without a metavar gets its name in capitals.
"""

from __future__ import annotations

import types
from typing import Annotated, Any

import typer
import typer.core
from typer.core import TyperArgument, TyperOption

STORE_HELP = (
    "The call log: an SQLite file path or a postgresql:// URL (default ./fastagent.db). "
    "Read commands refuse a store that does not exist."
)

StoreOpt = Annotated[
    str | None,
    typer.Option(
        "--store", envvar="FASTAGENT_STORE", metavar="PATH|URL", help=STORE_HELP, show_default=False
    ),
]
AgentOpt = Annotated[
    str,
    typer.Option(
        "--agent",
        envvar="FASTAGENT_AGENT",
        metavar="NAME|MODULE:ATTR",
        help="A built-in agent (see `fastagent fsa list`) or your own as package.module:ATTRIBUTE",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON instead of a table")]


def fail(message: str, code: int = 2) -> typer.Exit:
    """One line on stderr, then exit ``code`` (2: bad input or configuration)."""
    from fastagent import console

    console.err(f"fastagent: {message}")
    return typer.Exit(code)


def _no_type(self: Any, ctx: Any) -> str:
    return ""


def polish(cmd: Any, ctx: Any) -> None:
    """Real metavars: none for flags and arguments (their name says it), NAME for the rest.

    ``cmd`` is a command of typer's click (typer may vendor its own copy).
    """
    for p in cmd.get_params(ctx):  # with --help
        if isinstance(p, TyperOption):
            if getattr(p, "is_flag", False) or getattr(p, "is_bool_flag", False):
                p.metavar = ""
            elif p.metavar is None and p.name:
                p.metavar = p.name.upper()
        elif isinstance(p, TyperArgument):
            p.display_type_rich = types.MethodType(_no_type, p)  # type: ignore[method-assign]


# The order `fastagent --help` lists commands in: trying it, running it, looking
# at calls, analytics. Commands not named here follow in the order they were added.
COMMAND_ORDER = (
    "demo",
    "new",
    "call",
    "serve",
    "calls",
    "replay",
    "inspect",
    "export",
    "forget",
    "report",
    "sql",
    "sync",
    "export-parquet",
    "fsa",
)


class HelpGroup(typer.core.TyperGroup):
    """A command group whose commands' help reads well (see :func:`polish`)."""

    def list_commands(self, ctx: Any) -> list[str]:
        names = list(super().list_commands(ctx))
        rank = {name: i for i, name in enumerate(COMMAND_ORDER)}
        return sorted(names, key=lambda n: rank.get(n, len(rank)))

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        cmd = super().get_command(ctx, cmd_name)
        if cmd is not None and not isinstance(cmd, typer.core.TyperGroup):
            polish(cmd, ctx)
        return cmd

    def format_help(self, ctx: Any, formatter: Any) -> None:
        polish(self, ctx)
        super().format_help(ctx, formatter)
