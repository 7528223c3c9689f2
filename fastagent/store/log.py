"""The event log: one append-only stream per call, on ``eventsourcing``.

Each call is a stream whose originator id is the call id (TEXT) and whose
originator version is the event's ``seq`` (SQLite file or PostgreSQL; see
:mod:`fastagent.store.urls`).  Events are mapped to eventsourcing rows by
:class:`~fastagent.store.rows.EventMapper` and written with the application
recorder's insert; the Aggregate machinery is not used because it costs several
times more per event.

Writes are group-committed: :meth:`EventStore.append` only maps and buffers; the
:class:`~fastagent.store.writer.GroupCommitWriter` writes the buffer in one
transaction at least every ``flush_interval``.  :meth:`EventStore.flush` makes
everything appended so far durable (call it before an external side effect
starts).  Reads: one call's stream, the notification log of all calls, and the
per-call resume snapshot.  See docs/store.md.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import sqlite3
import time
import weakref
from collections.abc import Sequence
from contextlib import AbstractContextManager, closing
from typing import Any
from urllib.parse import quote

from eventsourcing.application import Application
from eventsourcing.persistence import ApplicationRecorder, IntegrityError, Mapper, Transcoder
from eventsourcing.utils import Environment

from fastagent.errors import StoreError, StreamConflict, UnknownCall
from fastagent.events import Event
from fastagent.store.rows import EventMapper, MsgspecTranscoder, _Row, db_errors, decode_row
from fastagent.store.urls import StoreTarget, parse_store_url, store_url
from fastagent.store.writer import GroupCommitWriter

log = logging.getLogger("fastagent.store")

DEFAULT_FLUSH_INTERVAL = 0.05


def _missing(target: StoreTarget, what: str) -> StoreError:
    return StoreError(
        f"no store at {target.display}: {what} (check --store / FASTAGENT_STORE; "
        "`fastagent demo` or `fastagent serve` create one)"
    )


def _check_exists(target: StoreTarget) -> None:
    """Raise StoreError unless ``target`` already holds an event store; create nothing."""
    if target.kind == "sqlite":
        path = target.env["SQLITE_DBNAME"]
        if path.startswith("file:"):  # a private in-memory store: exists while open
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


class EventStore:
    """Append-only log of every call.  Create it with :func:`open_store`."""

    def __init__(self, app: _CallLog, target: StoreTarget, flush_interval: float) -> None:
        self._app = app
        self._target = target
        self._recorder = app.recorder
        self._mapper: EventMapper = app.mapper  # type: ignore[assignment]
        self._datastore: Any = app.factory.datastore  # type: ignore[attr-defined]
        self._interval = flush_interval
        self._writer = GroupCommitWriter(
            self._recorder, self._datastore, target.kind, target.display, flush_interval
        )
        self._conflicted = self._writer.conflicted  # the same set: read on every append
        self._snapshots_ready = False
        self._closed = False
        _open_stores.add(self)

    # ------------------------------------------------------------------ properties

    @property
    def url(self) -> str:
        """Where the store is (a path, or the PostgreSQL URL without its password)."""
        return self._target.display

    @property
    def kind(self) -> str:
        return self._target.kind

    @property
    def flush_interval(self) -> float:
        return self._interval

    # ------------------------------------------------------------------ writing

    def append(self, batch: Sequence[Event]) -> None:
        """Buffer events for the next group commit (cheap; safe from any thread)."""
        rows = self._rows(batch)
        if rows:
            self._writer.add(rows)

    def _rows(self, batch: Sequence[Event]) -> list[_Row]:
        """``batch`` as rows, unless the store is closed or a call in it conflicted."""
        if self._closed:
            raise StoreError("the store is closed")
        if self._conflicted:
            for e in batch:
                if e.call_id in self._conflicted:
                    raise StreamConflict(e.call_id)
        return self._mapper.rows(batch)

    def flush(self, call_id: str | None = None) -> None:
        """Write everything appended so far; return when it is durable.

        Raises StreamConflict for a conflict not reported yet (or, with ``call_id``,
        if that call is conflicted), and StoreError if the write failed (the events
        stay buffered and are retried).
        """
        if self._closed:
            raise StoreError("the store is closed")
        self._writer.write_buffered()
        self._writer.raise_conflicts(call_id)

    async def flush_async(self, call_id: str | None = None) -> None:
        """:meth:`flush` in a worker thread, so the event loop keeps running."""
        await asyncio.to_thread(self.flush, call_id)

    def append_now(self, batch: Sequence[Event]) -> None:
        """Write events at once, in one transaction (e.g. to claim a call on resume).

        Raises StreamConflict immediately if another writer holds any of the seqs.
        """
        rows = self._rows(batch)
        if rows:
            self._writer.write_now(rows)

    def reclaim(self, call_id: str) -> None:
        """Before claiming a call again (a resume here after it moved away): write
        what is buffered (this store's stale rows for the call are dropped as
        conflicting) and forget the call's conflict mark, so a claim can succeed."""
        if self._closed:
            raise StoreError("the store is closed")
        self._writer.reclaim(call_id)

    def conflicted(self, call_id: str) -> bool:
        """True once a write for this call hit another writer's events."""
        return call_id in self._conflicted

    def close(self) -> None:
        """Flush what is buffered, stop the flusher thread and release the database."""
        if self._closed:
            return
        self._closed = True
        try:
            self._writer.close()
        finally:
            _open_stores.discard(self)
            self._app.close()

    def __enter__(self) -> EventStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ reading

    def read_call(self, call_id: str, after: int = 0) -> list[Event]:
        """Every durable event of one call with seq > ``after``, in seq order.

        Raises UnknownCall if the call has no events at all (an empty tail after a
        snapshot is not an error).
        """
        with self._errors("read"):
            rows = self._recorder.select_events(call_id, gt=after if after > 0 else None)
        if not rows and (after <= 0 or self.last_seq(call_id) == 0):
            raise UnknownCall(call_id)
        return [decode_row(call_id, r.originator_version, r.topic, r.state) for r in rows]

    def last_seq(self, call_id: str) -> int:
        """The highest durable seq of a call (0 if none)."""
        with self._errors("read"):
            rows = self._recorder.select_events(call_id, desc=True, limit=1)
        return rows[0].originator_version if rows else 0

    def read_all(self, after: int = 0, limit: int = 1000) -> list[tuple[int, Event]]:
        """The notification log: (position, event) after ``after``, in commit order."""
        with self._errors("read"):
            notes = self._recorder.select_notifications(after, limit, inclusive_of_start=False)
        return [
            (
                n.id,
                decode_row(str(n.originator_id), n.originator_version, n.topic, n.state),
            )
            for n in notes
        ]

    def read_all_raw(self, after: int = 0, limit: int = 1000) -> list[tuple[int, str, bytes]]:
        """Like :meth:`read_all` but undecoded (position, topic, state), for bulk loading."""
        pos = self._position_column
        sql = (
            f"SELECT {pos}, topic, state FROM {self._table} "
            f"WHERE {pos} > {{p}} ORDER BY {pos} LIMIT {{p}}"
        )
        # A TEXT or NULL state (a damaged row) comes back as b"": readers skip it as corrupt.
        return [
            (r[0], r[1], bytes(r[2]) if isinstance(r[2], bytes | bytearray | memoryview) else b"")
            for r in self._query(sql, (after, limit))
        ]

    def max_position(self) -> int:
        """The position of the last durable event in the notification log (0 if empty)."""
        with self._errors("read"):
            return self._recorder.max_notification_id() or 0

    def select(self, sql: str, params: tuple[Any, ...] = ()) -> list[Sequence[Any]]:
        """Rows of a read-only query, for read models (see projections/calls.py).

        In ``sql``, ``{events}`` is the events table (quoted, schema-qualified on
        PostgreSQL), ``{pos}`` its notification-log position column and ``{p}`` a
        parameter placeholder.  Rows are tuples; ``state`` columns decode with
        :func:`fastagent.store.rows.decode_row`.
        """
        sql = sql.replace("{events}", self._table).replace("{pos}", self._position_column)
        return self._query(sql, params)

    # ------------------------------------------------------------------ snapshots

    def write_snapshot(self, call_id: str, seq: int, data: bytes) -> None:
        """Keep ``data`` as the call's state after event ``seq`` (an older one never
        replaces a newer one).  Write only what reflects durable events."""
        self._ensure_snapshots()
        t = self._snapshot_table
        sql = (
            f"INSERT INTO {t} (call_id, seq, data) VALUES ({{p}}, {{p}}, {{p}}) "
            "ON CONFLICT (call_id) DO UPDATE SET seq = excluded.seq, data = excluded.data "
            f"WHERE excluded.seq > {t}.seq"
        )
        self._query(sql, (call_id, seq, data), commit=True)

    def read_snapshot(self, call_id: str) -> tuple[int, bytes] | None:
        """(seq, data) of the call's latest snapshot, or None."""
        self._ensure_snapshots()
        sql = f"SELECT seq, data FROM {self._snapshot_table} WHERE call_id = {{p}}"
        rows = self._query(sql, (call_id,))
        return (int(rows[0][0]), bytes(rows[0][1])) if rows else None

    @property
    def _snapshot_table(self) -> str:
        t = self._target
        name = f"{t.table}_snapshots"
        return f'"{t.schema}"."{name}"' if t.kind == "postgresql" else f'"{name}"'

    def _ensure_snapshots(self) -> None:
        if self._snapshots_ready:
            return
        blob = "BYTEA" if self._target.kind == "postgresql" else "BLOB"
        sql = (
            f"CREATE TABLE IF NOT EXISTS {self._snapshot_table} "
            f"(call_id TEXT PRIMARY KEY, seq BIGINT NOT NULL, data {blob} NOT NULL)"
        )
        try:
            self._query(sql, (), commit=True)
        except (StoreError, IntegrityError):
            # Two instances creating it at once on PostgreSQL: one loses the race.
            self._query(f"SELECT 1 FROM {self._snapshot_table} WHERE 1 = 0", ())
        self._snapshots_ready = True

    # ------------------------------------------------------------------ internals

    @property
    def _table(self) -> str:
        t = self._target
        return f'"{t.schema}"."{t.table}"' if t.kind == "postgresql" else f'"{t.table}"'

    @property
    def _position_column(self) -> str:
        return "notification_id" if self._target.kind == "postgresql" else "rowid"

    def _query(
        self, sql: str, params: tuple[Any, ...], *, commit: bool = False
    ) -> list[Sequence[Any]]:
        with self._errors("write" if commit else "read"):
            if self._target.kind == "postgresql":
                from psycopg.rows import tuple_row

                with self._datastore.get_connection() as conn:
                    with conn.transaction(), conn.cursor(row_factory=tuple_row) as cur:
                        cur.execute(sql.replace("{p}", "%s"), params)
                        return cur.fetchall() if cur.description else []
            with self._datastore.transaction(commit=commit) as cur:
                cur.execute(sql.replace("{p}", "?"), params)
                return cur.fetchall()  # type: ignore[no-any-return]

    def _errors(self, what: str) -> AbstractContextManager[None]:
        """Turn database errors (not conflicts) into a one-line StoreError."""
        return db_errors(self.url, what)


_open_stores: weakref.WeakSet[EventStore] = weakref.WeakSet()


@atexit.register
def _close_open_stores() -> None:
    # Daemon threads die silently at exit: flush what was appended but not written.
    for store in list(_open_stores):
        try:
            store.close()
        except Exception as exc:
            log.error("closing event store at exit: %s", exc)


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
    return EventStore(app, target, interval)
