"""What the CLI prints: colour and layout on a terminal, plain text when piped.

One :class:`rich.console.Console` per stream.  On a terminal it colours and
lays out; when stdout is a pipe or a file it writes plain lines (no escape
codes, no wrapping at 80 columns), so ``fastagent demo | grep tool`` and
``fastagent calls > calls.txt`` read as they look.  ``NO_COLOR`` and
``FORCE_COLOR`` are honoured (rich reads them).

A closed pipe (``fastagent demo | head -3``) ends the command at once and
quietly: :func:`guard_pipe` points stdout at ``/dev/null`` (so nothing more is
written, and the interpreter's final flush cannot complain), runs the
``on_close`` callbacks (a running call stops) and makes :func:`closed` true;
:func:`fastagent.cli.main` then exits with status 141, the shell's code for a
process ended by SIGPIPE.  Printing code calls :func:`out` (never ``print``),
and async code that prints from callbacks registers what to stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import stat
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

from rich.console import Console
from rich.theme import Theme

THEME = Theme(
    {
        "caller": "bold cyan",
        "bot": "bold green",
        "cut": "yellow",
        "tool": "magenta",
        "fsa": "blue",
        "fail": "bold red",
        "note": "dim",
        "ok": "green",
        "id": "bold",
        "cmd": "bold",
    }
)

EXIT_PIPE_CLOSED = 141  # 128 + SIGPIPE, what a shell reports for `yes | head -1`

_consoles: dict[bool, Console] = {}
_closed = False
_on_close: list[Callable[[], None]] = []


class PipeClosed(Exception):
    """The reader of stdout went away (``| head``): stop, quietly."""


def console(stderr: bool = False) -> Console:
    """The console for stdout (or stderr), made once per process."""
    c = _consoles.get(stderr)
    if c is None or c.file is not (sys.stderr if stderr else sys.stdout):  # swapped (tests)
        c = _make(stderr)
        _consoles[stderr] = c
    return c


class _Console(Console):
    def on_broken_pipe(self) -> None:
        """rich's default raises SystemExit(1) wherever the print happened (inside a
        running call, a task); here it stops the command through :func:`guard_pipe`."""
        self.quiet = True
        if self.stderr:
            return
        guard_pipe()
        raise PipeClosed


def _make(stderr: bool) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    probe = _Console(file=stream, theme=THEME, stderr=stderr)
    if probe.is_terminal:
        return probe
    # Piped: plain text, long lines kept whole (no wrapping, no escape codes).
    return _Console(
        file=stream,
        theme=THEME,
        stderr=stderr,
        soft_wrap=True,
        width=10_000,
        highlight=False,
        emoji=False,
    )


def reset() -> None:
    """Forget the consoles (tests swap sys.stdout; the next call builds anew)."""
    _consoles.clear()


def is_terminal() -> bool:
    return console().is_terminal


def out(*objects: Any, style: str | None = None, **kwargs: Any) -> None:
    """Print to stdout; a closed pipe stops the command (see :func:`guard_pipe`).

    Strings are printed as text, never as rich markup: a transcript with
    ``[brackets]`` stays as said.  Pass :class:`rich.text.Text` or other
    renderables for styling.
    """
    if _closed:
        raise PipeClosed
    try:
        console().print(*objects, style=style, markup=False, highlight=False, **kwargs)
        console().file.flush()  # a live transcript is read as it happens
    except BrokenPipeError:
        guard_pipe()
        raise PipeClosed from None


def err(message: str) -> None:
    """One line on stderr (errors, warnings): plain, never markup."""
    try:
        console(stderr=True).print(message, markup=False, highlight=False, soft_wrap=True)
    except BrokenPipeError:
        pass


def on_close(callback: Callable[[], None]) -> Callable[[], None]:
    """Run ``callback`` when stdout's reader goes away; returns an unregister function."""
    _on_close.append(callback)
    return lambda: _on_close.remove(callback) if callback in _on_close else None


def closed() -> bool:
    return _closed


def guard_pipe() -> None:
    """Stdout's reader went away: silence stdout for good and stop what registered."""
    global _closed
    if _closed:
        return
    _closed = True
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout is not a real file (a test's capture)
        pass
    for callback in list(_on_close):
        try:
            callback()
        except Exception:  # stopping must not fail louder than the pipe did
            pass


_stdout_was_pipe = False


def remember_stdout() -> None:
    """Note whether stdout starts as a pipe (see :func:`silenced_by_a_closed_pipe`)."""
    global _stdout_was_pipe
    try:
        _stdout_was_pipe = stat.S_ISFIFO(os.fstat(sys.stdout.fileno()).st_mode)
    except (OSError, ValueError, AttributeError):
        _stdout_was_pipe = False


def silenced_by_a_closed_pipe() -> bool:
    """True when stdout was a pipe and now points at /dev/null: a library (rich's
    help, click) met the closed pipe first and silenced stdout itself."""
    if _closed:
        return True
    if not _stdout_was_pipe:
        return False
    try:
        return os.path.samestat(os.fstat(sys.stdout.fileno()), os.stat(os.devnull))
    except (OSError, ValueError, AttributeError):
        return False


def reader_gone() -> bool:
    """True when stdout is a pipe whose reader has closed it (poll reports POLLERR).

    A process learns of a closed pipe only when it writes; a command that is
    waiting (a call in progress) asks this instead, a few times a second.
    """
    try:
        fd = sys.stdout.fileno()
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            return False
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        return any(ev & (select.POLLERR | select.POLLHUP) for _, ev in poller.poll(0))
    except (OSError, ValueError, AttributeError):  # no real stdout (a test's capture)
        return False


@contextlib.asynccontextmanager
async def watch_pipe(interval_s: float = 0.1) -> AsyncIterator[None]:
    """While inside, a closed stdout pipe is noticed within ``interval_s`` even when
    nothing is printed, and stops the command like a failed write does."""

    async def watch() -> None:
        while not _closed:
            if reader_gone():
                guard_pipe()
                return
            await asyncio.sleep(interval_s)

    task = asyncio.create_task(watch(), name="stdout-watch")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
