"""Opening the event store: a store URL to an eventsourcing application and an
:class:`~fastagent.store.log.EventStore` on it.

:func:`open_store` parses the URL with :mod:`fastagent.store.urls` (the one
parser), checks that a store exists when it must not be created, makes the
PostgreSQL schema, builds eventsourcing's stock application recorder on the URL's
table (retrying the DDL races of instances starting together) and settles the
flush interval.  Errors are one-line :class:`~fastagent.errors.StoreError`.
"""

from __future__ import annotations

import os
import sqlite3
import time
from contextlib import closing
from typing import Any
from urllib.parse import quote

from eventsourcing.application import Application
from eventsourcing.persistence import ApplicationRecorder, Mapper, Transcoder
from eventsourcing.utils import Environment

from fastagent.errors import StoreError
from fastagent.privacy import MasterKeys, PrivacyError
from fastagent.store.log import EventStore
from fastagent.store.rows import EventMapper, MsgspecTranscoder
from fastagent.store.urls import StoreTarget, parse_store_url, store_url

DEFAULT_FLUSH_INTERVAL = 0.05
"""Seconds between group commits unless $FASTAGENT_FLUSH_MS or ``flush_interval`` says."""


def _missing(target: StoreTarget, what: str) -> StoreError:
    return StoreError(
        f"no store at {target.display}: {what} (check --store / FASTAGENT_STORE; "
        "`fastagent demo` or `fastagent serve` create one)"
    )


def _check_exists(target: StoreTarget) -> None:
    """Raise StoreError unless ``target`` already holds an event store; create nothing."""
    if target.kind == "sqlite":
        path = target.file
        if path is None:  # a private in-memory store: exists while open
            return
        if not os.path.exists(path):
            raise _missing(target, "no such file")
        try:  # read-only URI: sqlite3 must not create or change the file
            uri = "file:" + quote(os.path.abspath(path)) + "?mode=ro"
            with closing(sqlite3.connect(uri, uri=True)) as conn:
                found = conn.execute(
                    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                    (target.table,),
                ).fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open store {target.display}: {exc}") from None
        if found is None:
            raise _missing(target, f"the file has no {target.table!r} table")
        return
    import psycopg

    try:
        with psycopg.connect(**target.conninfo, autocommit=True) as conn:
            row = conn.execute(
                "SELECT to_regclass(%s)", (f'"{target.schema}"."{target.table}"',)
            ).fetchone()
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StoreError(f"cannot open store {target.display}: {first}") from None
    if row is None or row[0] is None:
        raise _missing(target, f"no table {target.schema}.{target.table}")


def _prepare_pg(target: StoreTarget) -> None:
    """Connect once for a clear error (the pool would retry for seconds); make the schema."""
    import psycopg
    from psycopg import sql

    try:
        with psycopg.connect(**target.conninfo, autocommit=True) as conn:
            if target.schema != "public":
                try:
                    conn.execute(
                        sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                            sql.Identifier(target.schema)
                        )
                    )
                except psycopg.errors.UniqueViolation:
                    pass  # another instance starting at the same moment created it
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StoreError(f"cannot open store {target.display}: {first}") from None


class _CallLog(Application[str]):
    """The eventsourcing application holding every call's stream (no aggregates)."""

    name = "FastAgentCalls"

    def __init__(self, target: StoreTarget) -> None:
        self._target = target
        super().__init__(env=target.env)

    def construct_env(self, name: str, env: Any = None) -> Environment:
        # Only the URL configures the store: ignore os.environ's eventsourcing keys.
        return Environment(name, dict(env or {}))

    def construct_transcoder(self) -> Transcoder:
        return MsgspecTranscoder()

    def construct_mapper(self) -> Mapper[str]:
        return EventMapper(self.construct_transcoder())

    def construct_recorder(self) -> ApplicationRecorder:
        # Build the stock recorder ourselves so the table name comes from the URL.
        factory: Any = self.factory
        recorder_class = factory.application_recorder_class
        recorder: ApplicationRecorder
        if self._target.kind == "sqlite":
            recorder = recorder_class(factory.datastore, self._target.table)
        else:
            recorder = recorder_class(factory.datastore, events_table_name=self._target.table)
        recorder.create_table()  # type: ignore[attr-defined]
        return recorder


def _flush_interval(value: float | None) -> float:
    if value is None:
        raw = os.environ.get("FASTAGENT_FLUSH_MS", "").strip()
        if not raw:
            return DEFAULT_FLUSH_INTERVAL
        try:
            value = float(raw) / 1000
        except ValueError:
            value = float("nan")
        if not 0 < value <= 60:  # NaN fails too
            raise StoreError(
                f"bad FASTAGENT_FLUSH_MS={raw!r}: expected milliseconds (0 < ms <= 60000)"
            )
    if not value > 0 or value > 60:
        raise StoreError(f"bad flush interval {value!r}: expected 0 < seconds <= 60")
    return value


def open_store(
    url: str | None = None, *, flush_interval: float | None = None, create: bool = True
) -> EventStore:
    """Open (creating if needed) the event store at ``url``.

    ``url``: None or "" -> $FASTAGENT_STORE, else ``./fastagent.db``.  A path or
    ``sqlite:///path`` (``sqlite://:memory:`` for a private in-memory store) is an
    SQLite file; ``postgresql://user:pw@host:port/db[?schema=s&table=t]`` is
    PostgreSQL.  ``flush_interval`` (seconds) defaults to $FASTAGENT_FLUSH_MS or 50 ms.
    With ``create=False`` (every read command) a store that does not exist yet -- no
    file, or no events table in it or in the PostgreSQL schema -- is a StoreError
    and nothing is created: a mistyped ``--store`` must not answer "no calls".
    """
    interval = _flush_interval(flush_interval)
    target = parse_store_url(store_url(url))
    if not create:
        _check_exists(target)
    path = target.file

    def master() -> MasterKeys:
        try:
            return MasterKeys.for_store(target.kind, path)
        except PrivacyError as exc:
            raise StoreError(f"store {target.display}: {exc}") from None

    if target.kind == "postgresql":
        _prepare_pg(target)
    for attempt in range(5):
        try:
            app = _CallLog(target)
            break
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            # Instances starting together race on eventsourcing's DDL (CREATE TABLE IF
            # NOT EXISTS, CREATE OR REPLACE FUNCTION): retry.
            racing = ("duplicate key", "already exists", "concurrently updated")
            if attempt < 4 and any(r in first for r in racing):
                time.sleep(0.05 * (attempt + 1))
                continue
            raise StoreError(f"cannot open store {target.display}: {first}") from None
    return EventStore(app, target, interval, master)
