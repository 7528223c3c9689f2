"""Store URLs: the one parser of where the event log lives.

``parse_store_url`` turns a URL into a :class:`StoreTarget`; the event store and
the analytics reader both use it, so a URL means the same to both:

* a path, ``sqlite:///rel.db`` or ``sqlite:////abs.db`` (``?table=t``) - an SQLite file;
* ``""``, ``:memory:`` or ``sqlite://:memory:`` - a private in-memory SQLite store;
* ``postgresql://user:pw@host:port/db?schema=s&table=t&connect_timeout=5`` - PostgreSQL.

Errors are :class:`~fastagent.errors.StoreError` with one line naming the URL
(its password hidden).
"""

from __future__ import annotations

import itertools
import os
import re
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import msgspec

from fastagent.errors import StoreError

DEFAULT_PATH = "./fastagent.db"
DEFAULT_TABLE = "fastagent_events"
SQLITE_TABLE = "stored_events"  # the table of an SQLite store without ?table=
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,39}$")
_memory_ids = itertools.count(1)


def store_url(url: str | None = None) -> str:
    """``url``, else $FASTAGENT_STORE, else ``./fastagent.db``."""
    return url or os.environ.get("FASTAGENT_STORE", "").strip() or DEFAULT_PATH


class StoreTarget(msgspec.Struct, frozen=True):
    """Where a store is, parsed from its URL by :func:`parse_store_url`."""

    kind: str  # "sqlite" | "postgresql"
    display: str  # the URL with any password hidden
    env: dict[str, str]
    table: str
    schema: str = ""
    conninfo: dict[str, Any] = {}

    @property
    def file(self) -> str | None:
        """The SQLite file's path (as given, ``~`` expanded); None for PostgreSQL or
        an in-memory store."""
        path = self.env.get("SQLITE_DBNAME", "")
        return path if self.kind == "sqlite" and not path.startswith("file:") else None


def _param(query: dict[str, list[str]], key: str, default: str) -> str:
    values = query.get(key)
    return values[-1] if values else default


def _check_ident(what: str, value: str, display: str) -> str:
    if not _IDENT.match(value):
        raise StoreError(
            f"cannot open store {display}: bad {what} {value!r} "
            "(letters, digits, underscore; at most 40 characters)"
        )
    return value


def parse_store_url(url: str) -> StoreTarget:
    """Parse a store URL (see the module's docstring) into a :class:`StoreTarget`.

    Touches nothing but, for an SQLite path, reads the file's first 16 bytes if
    it exists.  Raises StoreError (one line, password hidden) for an unknown
    scheme or URL parameter, a bad table or schema name or connect_timeout, a
    path that is a directory, in a missing directory, or not an SQLite database.
    """
    if url.startswith(("postgresql://", "postgres://")):
        return _parse_pg(url)
    scheme = url.partition("://")[0] if "://" in url else ""
    if scheme and scheme != "sqlite":
        raise StoreError(
            f"unsupported store URL scheme {scheme!r} "
            "(use a file path, sqlite:///path or postgresql://user@host:port/db)"
        )
    path, query = url, {}
    if scheme == "sqlite":
        rest = url[len("sqlite://") :]
        path, _, qs = rest.partition("?")
        query = parse_qs(qs)
        if path.startswith("/"):  # sqlite:///rel.db, sqlite:////abs.db (SQLAlchemy style)
            path = path[1:]
    table = _check_ident("table", _param(query, "table", SQLITE_TABLE), url)
    env = {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "ORIGINATOR_ID_TYPE": "text"}
    if path in ("", ":memory:"):
        # A private shared-cache memory DB, so the pool's connections see one database.
        env["SQLITE_DBNAME"] = f"file:fastagent-mem-{next(_memory_ids)}?mode=memory&cache=shared"
        return StoreTarget("sqlite", url or ":memory:", env, table)
    path = os.path.expanduser(path)
    if os.path.isdir(path):
        raise StoreError(f"cannot open store {path}: it is a directory")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise StoreError(f"cannot open store {path}: directory {parent} does not exist")
    if os.path.exists(path):
        with open(path, "rb") as f:
            head = f.read(16)
        if head and head != b"SQLite format 3\x00":
            raise StoreError(f"cannot open store {path}: not an SQLite database")
    env["SQLITE_DBNAME"] = path
    return StoreTarget("sqlite", path, env, table)


def _parse_pg(url: str) -> StoreTarget:
    try:
        parts = urlsplit(url)
        port = parts.port or 5432
    except ValueError as exc:
        raise StoreError(f"bad PostgreSQL store URL: {exc}") from None
    user = unquote(parts.username or "postgres")
    password = unquote(parts.password or "")
    host = parts.hostname or "127.0.0.1"
    dbname = unquote(parts.path.lstrip("/"))
    display = url.replace(f":{parts.password}@", ":***@") if parts.password else url
    if not dbname:
        raise StoreError(f"cannot open store {display}: no database name in the URL")
    query = parse_qs(parts.query)
    known = {"table", "schema", "connect_timeout"}
    unknown = sorted(set(query) - known)
    if unknown:
        raise StoreError(f"cannot open store {display}: unknown URL parameter {unknown[0]!r}")
    table = _check_ident("table", _param(query, "table", DEFAULT_TABLE), display)
    schema = _check_ident("schema", _param(query, "schema", "public"), display)
    timeout = _param(query, "connect_timeout", "5")
    if not timeout.isdigit() or int(timeout) < 1:
        raise StoreError(f"cannot open store {display}: bad connect_timeout {timeout!r}")
    env = {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "ORIGINATOR_ID_TYPE": "text",
        "POSTGRES_DBNAME": dbname,
        "POSTGRES_HOST": host,
        "POSTGRES_PORT": str(port),
        "POSTGRES_USER": user,
        "POSTGRES_PASSWORD": password,
        "POSTGRES_SCHEMA": schema,
        "POSTGRES_CONNECT_TIMEOUT": timeout,
        "POSTGRES_POOL_SIZE": "2",  # the flusher thread and one reader
        "POSTGRES_MAX_OVERFLOW": "4",
    }
    conninfo = {
        "dbname": dbname,
        "host": host,
        "port": port,
        "user": user,
        "password": password,
        "connect_timeout": int(timeout),
    }
    return StoreTarget("postgresql", display, env, table, schema, conninfo)


__all__ = ["DEFAULT_PATH", "DEFAULT_TABLE", "StoreTarget", "parse_store_url", "store_url"]
