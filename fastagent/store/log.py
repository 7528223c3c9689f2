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
per-call resume checkpoint.  See docs/store.md.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, closing
from typing import Any
from urllib.parse import quote

import msgspec
from eventsourcing.application import Application
from eventsourcing.persistence import ApplicationRecorder, IntegrityError, Mapper, Transcoder
from eventsourcing.utils import Environment

from fastagent import privacy
from fastagent.errors import StoreError, StreamConflict, UnknownCall
from fastagent.events import Event
from fastagent.privacy import CallForgotten, MasterKeys, PrivacyError, Sealer
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


class AuditEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One line of the audit trail: who read or changed what of which call, when."""

    at_us: int
    who: str  # the credential's label (e.g. "ops", "read-token#1a2b3c4d", "cli:alice")
    action: str  # timeline | export | reveal | forget | ...
    call_id: str
    detail: str = ""


class EventStore:
    """Append-only log of every call.  Create it with :func:`open_store`.

    Personal fields are sealed with per-call data keys on the way in and opened on
    the way out (fastagent.privacy); the keys live in ``<table>_keys``, the audit
    trail in ``<table>_audit``.
    """

    def __init__(
        self,
        app: _CallLog,
        target: StoreTarget,
        flush_interval: float,
        master: Callable[[], MasterKeys],
    ) -> None:
        self._app = app
        self._target = target
        self._recorder = app.recorder
        self._mapper: EventMapper = app.mapper  # type: ignore[assignment]
        # Resolved on first use: reading the log's clear fields (analytics, listing)
        # needs no master key; sealing or opening personal data does.
        self._master_source = master
        self._master_keys: MasterKeys | None = None
        self._data_keys: dict[str, Any] = {}  # call id -> AESGCM of its data key
        self._key_lock = threading.Lock()
        self._side_ready: set[str] = set()
        self.sealer = Sealer(self._data_key)
        self._mapper.sealer = self.sealer
        self._datastore: Any = app.factory.datastore  # type: ignore[attr-defined]
        self._interval = flush_interval
        self._writer = GroupCommitWriter(
            self._recorder, self._datastore, target.kind, target.display, flush_interval
        )
        self._conflicted = self._writer.conflicted  # the same set: read on every append
        self._checkpoints_ready = False
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
        # (Hot path: every audio chunk.  The checks of _rows only when they can fail.)
        rows = self._rows(batch) if self._closed or self._conflicted else self._mapper.rows(batch)
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

    @property
    def on_write(self) -> Callable[[float, int], None] | None:
        """Called after each group commit with (seconds, events written), from the
        writing thread (the service's metrics: fastagent.observe)."""
        return self._writer.on_write

    @on_write.setter
    def on_write(self, hook: Callable[[float, int], None] | None) -> None:
        self._writer.on_write = hook

    @property
    def queue_depth(self) -> int:
        """Events appended and not yet written (waiting for the next group commit)."""
        return self._writer.queue_depth

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

    def read_call(self, call_id: str, after: int = 0, *, forgotten: str = "raise") -> list[Event]:
        """Every durable event of one call with seq > ``after``, in seq order, its
        personal fields opened.

        Raises UnknownCall if the call has no events at all (an empty tail after a
        checkpoint is not an error), CallForgotten if the call was forgotten (with
        ``forgotten="blank"``: its events with the personal fields empty).
        """
        with self._errors("read"):
            rows = self._recorder.select_events(call_id, gt=after if after > 0 else None)
        if not rows and (after <= 0 or self.last_seq(call_id) == 0):
            raise UnknownCall(call_id)
        seal = self.sealer
        with self._errors("read"):
            return [
                decode_row(call_id, r.originator_version, r.topic, r.state, seal, forgotten)
                for r in rows
            ]

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
                decode_row(
                    str(n.originator_id),
                    n.originator_version,
                    n.topic,
                    n.state,
                    self.sealer,
                    "blank",
                ),
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

    # ------------------------------------------------------------------ checkpoints

    def write_checkpoint(self, call_id: str, seq: int, data: bytes) -> None:
        """Keep ``data`` as the call's state after event ``seq`` (an older one never
        replaces a newer one).  Write only what reflects durable events."""
        self._ensure_checkpoints()
        data = self._seal_blob(call_id, data)
        t = self._checkpoint_table
        sql = (
            f"INSERT INTO {t} (call_id, seq, data) VALUES ({{p}}, {{p}}, {{p}}) "
            "ON CONFLICT (call_id) DO UPDATE SET seq = excluded.seq, data = excluded.data "
            f"WHERE excluded.seq > {t}.seq"
        )
        self._query(sql, (call_id, seq, data), commit=True)

    def read_checkpoint(self, call_id: str) -> tuple[int, bytes] | None:
        """(seq, data) of the call's latest checkpoint, or None."""
        self._ensure_checkpoints()
        sql = f"SELECT seq, data FROM {self._checkpoint_table} WHERE call_id = {{p}}"
        rows = self._query(sql, (call_id,))
        if not rows:
            return None
        return int(rows[0][0]), self._open_blob(call_id, bytes(rows[0][1]))

    @property
    def _checkpoint_table(self) -> str:
        return self._side("checkpoints")

    def _ensure_checkpoints(self) -> None:
        """Create the checkpoints table on first use, taking over the rows of the
        ``<table>_snapshots`` table that stores written before the rename kept."""
        if self._checkpoints_ready:
            return
        blob = "BYTEA" if self._target.kind == "postgresql" else "BLOB"
        sql = (
            f"CREATE TABLE IF NOT EXISTS {self._checkpoint_table} "
            f"(call_id TEXT PRIMARY KEY, seq BIGINT NOT NULL, data {blob} NOT NULL)"
        )
        try:
            self._query(sql, (), commit=True)
        except (StoreError, IntegrityError):
            # Two instances creating it at once on PostgreSQL: one loses the race.
            self._query(f"SELECT 1 FROM {self._checkpoint_table} WHERE 1 = 0", ())
        self._adopt_old_checkpoints()
        self._checkpoints_ready = True

    def _adopt_old_checkpoints(self) -> None:
        """Move the rows of the pre-rename ``<table>_snapshots`` table (if any) into
        the checkpoints table, newer seq winning, and drop it: one transaction, so
        it is idempotent and a racing instance either sees both tables or one."""
        old = self._side("snapshots")
        if not self._table_exists("snapshots"):
            return
        new = self._checkpoint_table
        try:
            self._transaction(
                [
                    (
                        f"INSERT INTO {new} (call_id, seq, data) SELECT call_id, seq, data "
                        f"FROM {old} WHERE true ON CONFLICT (call_id) DO UPDATE SET "
                        f"seq = excluded.seq, data = excluded.data WHERE excluded.seq > {new}.seq",
                        (),
                    ),
                    (f"DROP TABLE {old}", ()),
                ]
            )
        except (StoreError, IntegrityError):
            if self._table_exists("snapshots"):
                raise
            return  # another instance moved them first: nothing lost
        log.info("store %s: checkpoints moved from %s to %s", self.url, old, new)

    # ------------------------------------------------------------------ keys

    @property
    def _master(self) -> MasterKeys:
        if self._master_keys is None:
            self._master_keys = self._master_source()
        return self._master_keys

    def check_keys(self) -> str:
        """Resolve the master key now (a service checks before it listens); returns
        where it comes from.  Raises StoreError (one line) if there is none."""
        return self._master.source

    _BLOB_MAGIC = b"FAS1"  # a sealed checkpoint: magic, nonce, AES-GCM ciphertext

    def _seal_blob(self, call_id: str, data: bytes) -> bytes:
        aead = self._data_key(call_id, True)
        nonce = os.urandom(privacy.NONCE)
        aad = self._blob_aad(call_id)
        return self._BLOB_MAGIC + nonce + aead.encrypt(nonce, data, aad)

    @staticmethod
    def _blob_aad(call_id: str) -> bytes:
        # "snapshot" was the checkpoint's former name: sealed rows already stored
        # authenticate with it, so it stays.
        return f"{call_id}|snapshot".encode()

    def _open_blob(self, call_id: str, data: bytes) -> bytes:
        if not data.startswith(self._BLOB_MAGIC):
            return data  # written before checkpoints were sealed
        aead = self._data_key(call_id, False)
        if aead is None:
            raise StoreError(
                f"call {call_id!r}: its checkpoint is sealed but no data key is stored"
            )
        body = data[len(self._BLOB_MAGIC) :]
        try:
            n = privacy.NONCE
            return aead.decrypt(body[:n], body[n:], self._blob_aad(call_id))  # type: ignore[no-any-return]
        except Exception:
            raise StoreError(f"call {call_id!r}: its checkpoint does not open (corrupt)") from None

    def _data_key(self, call_id: str, create: bool) -> Any:
        """The AESGCM of ``call_id``'s data key; None if it has none and not
        ``create``; raises CallForgotten for a forgotten call."""
        aead = self._data_keys.get(call_id)
        if aead is not None:
            return aead
        with self._key_lock:
            aead = self._data_keys.get(call_id)
            if aead is not None:
                return aead
            self._ensure_side()
            for _ in range(2):
                row = self._key_row(call_id)
                if row is not None:
                    master_id, wrapped, forgotten_us, forgotten_by = row
                    if forgotten_us is not None or wrapped is None:
                        raise CallForgotten(call_id, int(forgotten_us or 0), forgotten_by or "")
                    key = self._master.unwrap(call_id, master_id, bytes(wrapped))
                    aead = self._data_keys[call_id] = privacy.AESGCM(key)
                    return aead
                if not create:
                    return None
                master_id, wrapped = self._master.wrap(call_id, privacy.new_data_key())
                # Two instances may race to create it: the first one stored wins.
                self._query(
                    f"INSERT INTO {self._side('keys')} (call_id, master_id, wrapped, created_us) "
                    "VALUES ({p}, {p}, {p}, {p}) ON CONFLICT (call_id) DO NOTHING",
                    (call_id, master_id, wrapped, time.time_ns() // 1000),
                    commit=True,
                )
            raise StoreError(f"call {call_id!r}: cannot store its data key")

    def _key_row(self, call_id: str) -> Sequence[Any] | None:
        rows = self._query(
            f"SELECT master_id, wrapped, forgotten_us, forgotten_by FROM {self._side('keys')} "
            "WHERE call_id = {p}",
            (call_id,),
        )
        return rows[0] if rows else None

    def forgotten(self, call_id: str) -> CallForgotten | None:
        """Why ``call_id`` cannot be read (a CallForgotten), or None if it is not forgotten."""
        self._ensure_side()
        row = self._key_row(call_id)
        if row is None or row[2] is None:
            return None
        return CallForgotten(call_id, int(row[2]), row[3] or "")

    def forget(self, call_id: str, who: str, at_us: int | None = None) -> int:
        """Destroy the call's data key (the log is not touched; its sealed fields can
        never be opened again), drop its checkpoint, and record who did it in the
        audit trail.  Returns the time (µs) recorded.  Raises UnknownCall, or
        CallForgotten if it was forgotten already."""
        if self.last_seq(call_id) == 0:
            raise UnknownCall(call_id)
        self._ensure_side()
        self._ensure_checkpoints()
        already = self.forgotten(call_id)
        if already is not None:
            raise already
        at = time.time_ns() // 1000 if at_us is None else at_us
        keys = self._side("keys")
        self._transaction(
            [
                (
                    f"INSERT INTO {keys} (call_id, master_id, wrapped, created_us, forgotten_us, "
                    "forgotten_by) VALUES ({p}, '', NULL, {p}, {p}, {p}) "
                    "ON CONFLICT (call_id) DO UPDATE SET wrapped = NULL, master_id = '', "
                    "forgotten_us = excluded.forgotten_us, forgotten_by = excluded.forgotten_by",
                    (call_id, at, at, who),
                ),
                (f"DELETE FROM {self._checkpoint_table} WHERE call_id = {{p}}", (call_id,)),
                (
                    f"INSERT INTO {self._side('audit')} (at_us, who, action, call_id, detail) "
                    "VALUES ({p}, {p}, 'forget', {p}, '')",
                    (at, who, call_id),
                ),
            ],
            secure_delete=True,
        )
        with self._key_lock:
            self._data_keys.pop(call_id, None)
        return at

    def rewrap_keys(self) -> int:
        """Wrap every data key not under the current master key with it (master key
        rotation); returns how many were rewrapped.  Old master keys must still be
        configured (after the current one) while this runs."""
        self._ensure_side()
        keys = self._side("keys")
        rows = self._query(
            f"SELECT call_id, master_id, wrapped FROM {keys} "
            "WHERE wrapped IS NOT NULL AND master_id <> {p}",
            (self._master.current,),
        )
        for call_id, master_id, wrapped in rows:
            key = self._master.unwrap(call_id, master_id, bytes(wrapped))
            new_id, new_wrapped = self._master.wrap(call_id, key)
            self._query(
                f"UPDATE {keys} SET master_id = {{p}}, wrapped = {{p}} "
                "WHERE call_id = {p} AND wrapped IS NOT NULL",
                (new_id, new_wrapped, call_id),
                commit=True,
            )
        return len(rows)

    # ------------------------------------------------------------------ audit

    def audit(self, who: str, action: str, call_id: str, detail: str = "") -> None:
        """Append to the audit trail (durable when this returns)."""
        self._ensure_side()
        self._query(
            f"INSERT INTO {self._side('audit')} (at_us, who, action, call_id, detail) "
            "VALUES ({p}, {p}, {p}, {p}, {p})",
            (time.time_ns() // 1000, who, action, call_id, detail),
            commit=True,
        )

    def read_audit(self, call_id: str | None = None) -> list[AuditEntry]:
        """The audit trail, oldest first (of one call if ``call_id``)."""
        self._ensure_side()
        where, params = ("WHERE call_id = {p} ", (call_id,)) if call_id else ("", ())
        rows = self._query(
            f"SELECT at_us, who, action, call_id, detail FROM {self._side('audit')} "
            f"{where}ORDER BY id",
            params,
        )
        return [
            AuditEntry(at_us=int(r[0]), who=r[1], action=r[2], call_id=r[3], detail=r[4])
            for r in rows
        ]

    def _side(self, name: str) -> str:
        t = self._target
        table = f"{t.table}_{name}"
        return f'"{t.schema}"."{table}"' if t.kind == "postgresql" else f'"{table}"'

    def _table_exists(self, name: str) -> bool:
        """Whether the side table ``<table>_<name>`` exists."""
        t = self._target
        if t.kind == "postgresql":
            rows = self._query("SELECT to_regclass({p})", (self._side(name),))
            return bool(rows) and rows[0][0] is not None
        sql = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = {p}"
        return bool(self._query(sql, (f"{t.table}_{name}",)))

    def _ensure_side(self) -> None:
        """Create the keys and audit tables on first use."""
        if "keys" in self._side_ready:
            return
        pg = self._target.kind == "postgresql"
        blob = "BYTEA" if pg else "BLOB"
        serial = "BIGSERIAL PRIMARY KEY" if pg else "INTEGER PRIMARY KEY AUTOINCREMENT"
        for sql in (
            f"CREATE TABLE IF NOT EXISTS {self._side('keys')} (call_id TEXT PRIMARY KEY, "
            f"master_id TEXT NOT NULL, wrapped {blob}, created_us BIGINT NOT NULL, "
            "forgotten_us BIGINT, forgotten_by TEXT)",
            f"CREATE TABLE IF NOT EXISTS {self._side('audit')} (id {serial}, "
            "at_us BIGINT NOT NULL, who TEXT NOT NULL, action TEXT NOT NULL, "
            "call_id TEXT NOT NULL, detail TEXT NOT NULL)",
        ):
            try:
                self._query(sql, (), commit=True)
            except (StoreError, IntegrityError):
                pass  # two instances creating it at once on PostgreSQL: one loses the race
        self._side_ready.add("keys")

    def _transaction(
        self, statements: list[tuple[str, tuple[Any, ...]]], *, secure_delete: bool = False
    ) -> None:
        """Run ``statements`` in one transaction.  ``secure_delete``: SQLite overwrites
        what they delete (and the WAL is checkpointed), so no key lingers in free pages."""
        with self._errors("write"):
            if self._target.kind == "postgresql":
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
    path = target.env["SQLITE_DBNAME"] if _is_file(target) else None

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


def _is_file(target: StoreTarget) -> bool:
    return target.kind == "sqlite" and not target.env["SQLITE_DBNAME"].startswith("file:")
