"""``fastagent inspect``: the call inspector on an existing store, on 127.0.0.1 only."""

from __future__ import annotations

import socket
import sys
from typing import Annotated

import typer

StoreOpt = Annotated[
    str | None,
    typer.Option("--store", envvar="FASTAGENT_STORE", help="SQLite path or postgresql:// URL"),
]


def register(app: typer.Typer) -> None:
    app.command()(inspect)


def inspect(
    store: StoreOpt = None,
    port: Annotated[
        int, typer.Option(min=0, max=65535, help="Port on 127.0.0.1 (0: any free port)")
    ] = 8765,
) -> None:
    """Browse recorded and running calls in the browser (listens on 127.0.0.1 only).

    The page, its script and its styles are served by FastAgent: nothing is loaded
    from the internet.  Personal data is masked.  Reading needs a credential: a
    fresh one for this run, in the printed URL's fragment (which the browser never
    sends anywhere); with FASTAGENT_READ_TOKEN set, that one instead, typed into
    the page.
    """
    import uvicorn

    from fastagent.access import AccessError, ReadAccess
    from fastagent.cli import clear_errors, fail
    from fastagent.inspector import local_app
    from fastagent.store import open_store

    with clear_errors():  # a store that does not exist is an error: read, never create
        opened = open_store(store, create=False)
    try:
        readers = ReadAccess.from_env()
    except AccessError as exc:
        opened.close()
        raise fail(str(exc)) from None
    fragment = ""
    if not readers.enabled:
        readers, token = ReadAccess.ephemeral("inspect")
        fragment = f"#token={token}"
    app = local_app(opened, readers)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))  # loopback only, whatever the environment says
        sock.listen(128)  # connections made once the URL is printed wait for the server
    except OSError as exc:
        opened.close()
        raise fail(f"cannot listen on 127.0.0.1:{port}: {exc.strerror}") from None
    bound = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    typer.echo(f"call inspector on http://127.0.0.1:{bound}/inspect/{fragment}")
    typer.echo(
        "(Ctrl-C to stop; "
        + (
            "this URL holds a credential for this run only)"
            if fragment
            else "sign in with your FASTAGENT_READ_TOKEN)"
        )
    )
    sys.stdout.flush()
    try:
        server.run(sockets=[sock])
    finally:
        opened.close()
