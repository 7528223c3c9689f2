"""Sample backend MCP servers for the example agents, over SQLite files of demo data.

Each backend is a stdio MCP server (``python -m fastagent.examples.backends.bank``).
Its database is created on first start from ``fastagent/examples/data/<name>.sql``
in ``$FASTAGENT_DATA_DIR`` (default: a per-user directory under the system temp
dir); writes (card orders, bookings, returns) persist there.

Writes are idempotent: the key FastAgent sends with a dispatched call (request
``_meta.idempotency_key``, or the ``idempotency_key`` argument) is stored with
the result in the same transaction, and a repeated key returns the first result.
"""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mcp.server.mcpserver import Context

DATA_SQL = Path(__file__).resolve().parent.parent / "data"


def data_dir() -> Path:
    configured = os.environ.get("FASTAGENT_DATA_DIR", "")
    uid = os.getuid() if hasattr(os, "getuid") else 0
    path = Path(configured) if configured else Path(tempfile.gettempdir()) / f"fastagent-{uid}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def db_path(name: str) -> Path:
    """The backend's database, created from its sample-data SQL if missing."""
    path = data_dir() / f"{name}.sqlite"
    if not path.exists():
        # Build aside, then rename: two servers starting at once never see half a file.
        fd, tmp = tempfile.mkstemp(prefix=f".{name}-", suffix=".sqlite", dir=path.parent)
        os.close(fd)
        con = sqlite3.connect(tmp)
        try:
            # WAL is a property of the file: set it once here, not on every connect
            # (switching it needs a lock that concurrent tool calls would contend for).
            con.execute("PRAGMA journal_mode=WAL")
            con.executescript((DATA_SQL / f"{name}.sql").read_text(encoding="utf-8"))
            con.execute(
                "CREATE TABLE IF NOT EXISTS idempotency"
                " (key TEXT PRIMARY KEY, tool TEXT NOT NULL, result TEXT NOT NULL)"
            )
            con.commit()
        finally:
            con.close()
        try:
            os.link(tmp, path)  # fails if another process won the race: theirs is as good
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp)
    return path


@contextmanager
def connect(name: str) -> Iterator[sqlite3.Connection]:
    """A short-lived connection; one per tool call keeps threads apart."""
    con = sqlite3.connect(db_path(name), timeout=10.0, isolation_level=None)
    con.row_factory = sqlite3.Row
    try:
        yield con
    finally:
        con.close()


def request_key(ctx: Context | None, argument: str = "") -> str:
    """The idempotency key of this request: ``_meta`` first, then the argument."""
    meta: Any = None
    if ctx is not None:
        try:
            meta = ctx.request_context.meta
        except ValueError:  # no request context (called in-process)
            meta = None
    key = (meta or {}).get("idempotency_key") if isinstance(meta, dict) else None
    return str(key or argument or "")


def once(
    con: sqlite3.Connection, tool: str, key: str, write: Callable[[], dict[str, Any]]
) -> dict[str, Any]:
    """Run ``write`` in one transaction, at most once per idempotency key."""
    con.execute("BEGIN IMMEDIATE")
    try:
        if key:
            row = con.execute("SELECT result FROM idempotency WHERE key = ?", (key,)).fetchone()
            if row is not None:
                con.execute("COMMIT")
                return json.loads(row["result"])  # type: ignore[no-any-return]
        result = write()
        if key and result.get("ok"):
            con.execute(
                "INSERT INTO idempotency (key, tool, result) VALUES (?, ?, ?)",
                (key, tool, json.dumps(result, sort_keys=True)),
            )
        con.execute("COMMIT")
        return result
    except BaseException:
        con.execute("ROLLBACK")
        raise
