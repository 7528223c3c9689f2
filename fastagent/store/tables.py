"""The store's tables by name, and plain SQL on them (SQLite and PostgreSQL alike).

The events table is eventsourcing's (its application recorder writes and reads it;
see :mod:`fastagent.store.log`).  Beside it live our side tables, each named
``<table>_<side>`` after the events table and owned by one module:

* ``<table>_keys`` -- per-call data keys (:mod:`fastagent.store.keys`);
* ``<table>_audit`` -- who read or changed what (:mod:`fastagent.store.audit`);
* ``<table>_checkpoints`` -- the resume cache (:mod:`fastagent.store.checkpoints`).

SQL given to :meth:`Tables.query` and :meth:`Tables.transaction` writes ``{p}``
for a parameter placeholder (``?`` on SQLite, ``%s`` on PostgreSQL).  Database
errors come out as one-line :class:`~fastagent.errors.StoreError`; eventsourcing's
``IntegrityError`` (a unique key) passes through.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any

from eventsourcing.persistence import IntegrityError

from fastagent.errors import StoreError
from fastagent.store.rows import db_errors
from fastagent.store.urls import StoreTarget

Statement = tuple[str, tuple[Any, ...]]
"""One SQL statement (``{p}`` placeholders) and its parameters."""


class Tables:
    """Names of the store's tables, and SQL run on the store's connections.

    ``datastore`` is eventsourcing's (an SQLite or PostgreSQL datastore): its
    connections are shared with the event log, so nothing here opens another.
    """

    def __init__(self, target: StoreTarget, datastore: Any) -> None:
        self._target = target
        self._datastore = datastore
        self.postgresql = target.kind == "postgresql"

    @property
    def url(self) -> str:
        """Where the store is (its password hidden): for error messages."""
        return self._target.display

    @property
    def events(self) -> str:
        """The events table, quoted (schema-qualified on PostgreSQL)."""
        return self._quoted(self._target.table)

    @property
    def position_column(self) -> str:
        """The events table's notification-log position column."""
        return "notification_id" if self.postgresql else "rowid"

    @property
    def blob(self) -> str:
        """The column type of bytes: ``BYTEA`` or ``BLOB``."""
        return "BYTEA" if self.postgresql else "BLOB"

    def side(self, name: str) -> str:
        """The side table ``<table>_<name>``, quoted (schema-qualified on PostgreSQL)."""
        return self._quoted(f"{self._target.table}_{name}")

    def _quoted(self, table: str) -> str:
        return f'"{self._target.schema}"."{table}"' if self.postgresql else f'"{table}"'

    def exists(self, name: str) -> bool:
        """Whether the side table ``<table>_<name>`` exists.  Raises StoreError."""
        if self.postgresql:
            rows = self.query("SELECT to_regclass({p})", (self.side(name),))
            return bool(rows) and rows[0][0] is not None
        sql = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = {p}"
        return bool(self.query(sql, (f"{self._target.table}_{name}",)))

    def create(self, name: str, columns: str) -> None:
        """Create the side table ``<table>_<name>`` with ``columns`` unless it exists.

        Losing a race to another instance creating it at the same moment
        (PostgreSQL) is not an error; a table still missing after that is: raises
        StoreError.
        """
        table = self.side(name)
        try:
            self.query(f"CREATE TABLE IF NOT EXISTS {table} ({columns})", (), commit=True)
        except (StoreError, IntegrityError):
            self.query(f"SELECT 1 FROM {table} WHERE 1 = 0")

    def query(
        self, sql: str, params: tuple[Any, ...] = (), *, commit: bool = False
    ) -> list[Sequence[Any]]:
        """Run one statement; its rows as tuples ([] if it returns none).

        ``commit``: it writes (errors then say "write").  Raises StoreError.
        """
        with self.errors("write" if commit else "read"):
            if self.postgresql:
                from psycopg.rows import tuple_row

                with self._datastore.get_connection() as conn:
                    with conn.transaction(), conn.cursor(row_factory=tuple_row) as cur:
                        cur.execute(sql.replace("{p}", "%s"), params)
                        return cur.fetchall() if cur.description else []
            with self._datastore.transaction(commit=commit) as cur:
                cur.execute(sql.replace("{p}", "?"), params)
                return cur.fetchall()  # type: ignore[no-any-return]

    def transaction(self, statements: Sequence[Statement], *, secure_delete: bool = False) -> None:
        """Run ``statements`` in one transaction.  Raises StoreError (or IntegrityError).

        ``secure_delete``: SQLite overwrites what they delete (and the WAL is
        checkpointed), so no key lingers in free pages.
        """
        with self.errors("write"):
            if self.postgresql:
                with self._datastore.get_connection() as conn:
                    with conn.transaction(), conn.cursor() as cur:
                        for sql, params in statements:
                            cur.execute(sql.replace("{p}", "%s"), params)
                return
            with self._datastore.transaction(commit=True) as cur:
                if secure_delete:
                    cur.execute("PRAGMA secure_delete = ON")
                for sql, params in statements:
                    cur.execute(sql.replace("{p}", "?"), params)
            if secure_delete:
                with self._datastore.transaction(commit=False) as cur:
                    cur.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def errors(self, what: str) -> AbstractContextManager[None]:
        """Turn database errors (not conflicts) into a one-line StoreError."""
        return db_errors(self.url, what)
