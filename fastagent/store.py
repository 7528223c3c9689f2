"""The event store: one stream per call, on ``eventsourcing`` (SQLite file or PostgreSQL).

Each call is a stream whose originator id is the call id (TEXT) and whose
originator version is the event's ``seq``.  Events are mapped to eventsourcing
``StoredEvent`` rows by :class:`EventMapper` (msgspec JSON, topic ``Type/vN``)
and written with the application recorder's ``insert_events``; the Aggregate
machinery is not used because it costs several times more per event.

Writes are group-committed: :meth:`EventStore.append` only maps and buffers; a
daemon thread writes the buffer in one transaction at least every
``flush_interval``.  :meth:`EventStore.flush` makes everything appended so far
durable (call it before an external side effect starts).  See docs/store.md.
"""

from __future__ import annotations

import asyncio
import atexit
import itertools
import logging
import os
import re
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager, suppress
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import msgspec
from eventsourcing.application import Application
from eventsourcing.persistence import (
    ApplicationRecorder,
    IntegrityError,
    Mapper,
    StoredEvent,
    Transcoder,
)
from eventsourcing.utils import Environment

from fastagent import events
from fastagent.events import CallEnded, Event, EventFormatError

__all__ = [
    "CallSummary",
    "EventMapper",
    "EventStore",
    "MsgspecTranscoder",
    "StoreError",
    "StreamConflict",
    "UnknownCall",
    "open_store",
]

log = logging.getLogger(__name__)

DEFAULT_PATH = "./fastagent.db"
DEFAULT_TABLE = "fastagent_events"
DEFAULT_FLUSH_INTERVAL = 0.05
# A PostgreSQL flush is cut into transactions of about this size (see _insert).
_PG_CHUNK_ROWS = 2000
_PG_CHUNK_BYTES = 512 * 1024
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,39}$")
_memory_ids = itertools.count(1)


# --------------------------------------------------------------------------- errors


class StoreError(Exception):
    """The store cannot do what was asked (cannot open, write failed, ...)."""


class StreamConflict(StoreError):
    """Another writer appended to this call's stream: this store no longer owns it."""

    def __init__(self, call_id: str) -> None:
        super().__init__(
            f"call {call_id!r}: stream conflict (another writer already appended "
            "these sequence numbers; this store no longer owns the call)"
        )
        self.call_id = call_id


class UnknownCall(StoreError):
    """No event is stored for this call id."""

    def __init__(self, call_id: str) -> None:
        super().__init__(f"unknown call {call_id!r}: no events stored")
        self.call_id = call_id


class CallSummary(msgspec.Struct, frozen=True, kw_only=True):
    """One line of :meth:`EventStore.list_calls`."""

    call_id: str
    started_at_us: int  # ``at`` of the first event
    ended_at_us: int  # ``at`` of the last stored event (the CallEnded if ended)
    events: int
    outcome: str  # CallEnded.outcome, or "live" while no CallEnded is stored


# --------------------------------------------------------------------------- mapping


_json_encoder = msgspec.json.Encoder()


def chunk_batches(
    batches: Sequence[list[_Row]], max_rows: int, max_bytes: int
) -> list[list[list[_Row]]]:
    """Group batches, in order, into chunks of at most ``max_rows`` rows and
    ``max_bytes`` of state; each chunk is one transaction.

    A chunk holds whole batches only: each batch is one ``append`` call (an input
    and its decisions) and must commit atomically.  A batch larger than the limits
    on its own is a chunk by itself, whole.
    """
    chunks: list[list[list[_Row]]] = []
    chunk: list[list[_Row]] = []
    rows = size = 0
    for batch in batches:
        nbytes = sum(len(r.state) for r in batch)
        if chunk and (rows + len(batch) > max_rows or size + nbytes > max_bytes):
            chunks.append(chunk)
            chunk, rows, size = [], 0, 0
        chunk.append(batch)
        rows += len(batch)
        size += nbytes
    if chunk:
        chunks.append(chunk)
    return chunks


def _keep_rows(batches: Sequence[list[_Row]], keep: Callable[[_Row], bool]) -> list[list[_Row]]:
    """The batches reduced to the rows ``keep`` accepts (emptied batches dropped)."""
    out = []
    for batch in batches:
        kept = [r for r in batch if keep(r)]
        if kept:
            out.append(kept)
    return out


def _still_pending(batches: Sequence[list[_Row]], left: Sequence[_Row]) -> list[list[_Row]]:
    """The batches reduced to the rows in ``left`` (the ones a failed write left)."""
    ids = {id(r) for r in left}
    return _keep_rows(batches, lambda r: id(r) in ids)


class _Row(msgspec.Struct, gc=False):
    """A buffered row: a StoredEvent's four fields (what the recorders read).

    Built ~10x faster than the StoredEvent dataclass on the event loop, and not
    tracked by the cyclic GC: buffered StoredEvents lived long enough to reach the
    oldest generation, so full collections (~100 ms with the SDKs loaded) kept
    running (bench_bridge at 100 calls: p99.9 87 ms -> 4 ms)."""

    originator_id: str
    originator_version: int
    topic: str
    state: bytes


class MsgspecTranscoder(Transcoder):
    """eventsourcing transcoder hook backed by msgspec JSON (not eventsourcing's JSON)."""

    def encode(self, obj: Any) -> bytes:
        return _json_encoder.encode(obj)

    def decode(self, data: bytes) -> Any:
        return msgspec.json.decode(data)


def _decode(call_id: str, seq: int, topic: str, state: Any) -> Event:
    """Decode one stored row; any problem is an EventFormatError naming call and seq.

    ``state`` is the column as the driver returns it (bytes, memoryview; TEXT or
    NULL if someone wrote the row by hand), so the conversion is checked here too.
    """
    try:
        if not isinstance(state, (bytes, bytearray, memoryview)):
            kind = "NULL" if state is None else type(state).__name__
            raise EventFormatError(f"stored state is {kind}, not bytes")
        event = events.decode(topic, bytes(state))
        name = topic.partition("/")[0]
    except (EventFormatError, TypeError, AttributeError, ValueError) as exc:
        raise EventFormatError(f"call {call_id!r} seq {seq}: {exc}") from None
    if event.call_id != call_id or event.seq != seq or type(event).__name__ != name:
        raise EventFormatError(
            f"call {call_id!r} seq {seq}: stored {topic!r} holds "
            f"{type(event).__name__} of call {event.call_id!r} seq {event.seq}"
        )
    return event


class EventMapper(Mapper[str]):
    """Maps our msgspec events to StoredEvent rows and back.

    topic = ``events.topic_of(event)``, state = ``events.encode(event)``;
    ``to_stored_events`` is the batch fast path used by :meth:`EventStore.append`.
    """

    def __init__(self, transcoder: Transcoder | None = None) -> None:
        super().__init__(transcoder or MsgspecTranscoder())
        self._topics: dict[type, str] = {}

    def to_stored_event(self, domain_event: Any) -> StoredEvent:
        return self.to_stored_events((domain_event,))[0]

    def to_stored_events(self, batch: Sequence[Event]) -> list[StoredEvent]:
        return [
            StoredEvent(r.originator_id, r.originator_version, r.topic, r.state)
            for r in self.rows(batch)
        ]

    def rows(self, batch: Sequence[Event]) -> list[_Row]:
        """The rows for ``batch``: topic cached per class, msgspec-encoded state."""
        topics = self._topics
        encode = _json_encoder.encode
        rows = []
        for e in batch:
            cls = type(e)
            topic = topics.get(cls)
            if topic is None:
                if not isinstance(e, Event):
                    raise TypeError(f"not an event: {e!r}")
                topic = topics[cls] = events.topic_of(e)
            rows.append(_Row(e.call_id, e.seq, topic, encode(e)))
        return rows

    def to_domain_event(self, stored_event: StoredEvent) -> Any:
        return _decode(
            str(stored_event.originator_id),
            stored_event.originator_version,
            stored_event.topic,
            stored_event.state,
        )


# --------------------------------------------------------------------------- opening


class _Target(msgspec.Struct, frozen=True):
    kind: str  # "sqlite" | "postgresql"
    display: str  # the URL with any password hidden
    env: dict[str, str]
    table: str
    schema: str = ""
    conninfo: dict[str, Any] = {}


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


def _parse_url(url: str) -> _Target:
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
    table = _check_ident("table", _param(query, "table", "stored_events"), url)
    env = {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "ORIGINATOR_ID_TYPE": "text"}
    if path in ("", ":memory:"):
        # A private shared-cache memory DB, so the pool's connections see one database.
        env["SQLITE_DBNAME"] = f"file:fastagent-mem-{next(_memory_ids)}?mode=memory&cache=shared"
        return _Target("sqlite", url or ":memory:", env, table)
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
    return _Target("sqlite", path, env, table)


def _parse_pg(url: str) -> _Target:
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
    return _Target("postgresql", display, env, table, schema, conninfo)


def _missing(target: _Target, what: str) -> StoreError:
    return StoreError(
        f"no store at {target.display}: {what} (check --store / FASTAGENT_STORE; "
        "`fastagent demo` or `fastagent serve` create one)"
    )


def _check_exists(target: _Target) -> None:
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


def _prepare_pg(target: _Target) -> None:
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

    def __init__(self, target: _Target) -> None:
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


# --------------------------------------------------------------------------- store


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

    def __init__(self, app: _CallLog, target: _Target, flush_interval: float) -> None:
        self._app = app
        self._target = target
        self._recorder = app.recorder
        self._mapper: EventMapper = app.mapper  # type: ignore[assignment]
        self._datastore: Any = app.factory.datastore  # type: ignore[attr-defined]
        self._interval = flush_interval
        # One list per append() call: a batch commits whole (see chunk_batches).
        self._buf: list[list[_Row]] = []
        self._buf_lock = threading.Lock()
        self._write_lock = threading.Lock()  # one writer at a time keeps append order
        self._writer: sqlite3.Connection | None = None  # see _insert_rows
        self._conflicted: set[str] = set()
        self._snapshots_ready = False
        self._unreported: list[str] = []
        self._error: str = ""
        self._closed = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fastagent-store", daemon=True)
        self._thread.start()
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
            with self._buf_lock:
                self._buf.append(rows)

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
        self._write_buffered()
        self._raise_conflicts(call_id)

    async def flush_async(self, call_id: str | None = None) -> None:
        """:meth:`flush` in a worker thread, so the event loop keeps running."""
        await asyncio.to_thread(self.flush, call_id)

    def append_now(self, batch: Sequence[Event]) -> None:
        """Write events at once, in one transaction (e.g. to claim a call on resume).

        Raises StreamConflict immediately if another writer holds any of the seqs.
        """
        rows = self._rows(batch)
        if not rows:
            return
        with self._write_lock:
            self._write_buffered_locked()  # earlier appends first: the log keeps their order
            try:
                with self._errors("write"):
                    self._insert_rows(rows)
            except IntegrityError:
                bad = self._find_conflicts(rows) or {str(rows[0].originator_id)}
                self._mark(bad, reported=True)
                raise StreamConflict(sorted(bad)[0]) from None

    def reclaim(self, call_id: str) -> None:
        """Before claiming a call again (a resume here after it moved away): write
        what is buffered (this store's stale rows for the call are dropped as
        conflicting) and forget the call's conflict mark, so a claim can succeed."""
        if self._closed:
            raise StoreError("the store is closed")
        if call_id not in self._conflicted:
            return
        with self._write_lock:
            self._write_buffered_locked()
            self._conflicted.discard(call_id)
            if call_id in self._unreported:
                self._unreported.remove(call_id)

    def conflicted(self, call_id: str) -> bool:
        """True once a write for this call hit another writer's events."""
        return call_id in self._conflicted

    def close(self) -> None:
        """Flush what is buffered, stop the flusher thread and release the database."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join()
        try:
            self._write_buffered()
        finally:
            _open_stores.discard(self)
            if self._writer is not None:
                self._writer.close()
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
        return [_decode(call_id, r.originator_version, r.topic, r.state) for r in rows]

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
                _decode(str(n.originator_id), n.originator_version, n.topic, n.state),
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

    def list_calls(self) -> list[CallSummary]:
        """One summary per call, in the order calls started.

        SQL finds each call's first and last seq and count; only those two rows
        are decoded, not the whole log.
        """
        t, pos = self._table, self._position_column
        sql = (
            "SELECT g.originator_id, g.n, g.lo, f.topic, f.state, g.hi, l.topic, l.state "
            "FROM (SELECT originator_id, MIN(originator_version) AS lo, "
            f"MAX(originator_version) AS hi, COUNT(*) AS n FROM {t} GROUP BY originator_id) g "
            f"JOIN {t} f ON f.originator_id = g.originator_id AND f.originator_version = g.lo "
            f"JOIN {t} l ON l.originator_id = g.originator_id AND l.originator_version = g.hi "
            f"ORDER BY f.{pos}"
        )
        out = []
        for call_id, n, lo, f_topic, f_state, hi, l_topic, l_state in self._query(sql, ()):
            first = _decode(call_id, lo, f_topic, f_state)
            last = first if hi == lo else _decode(call_id, hi, l_topic, l_state)
            outcome = last.outcome if isinstance(last, CallEnded) else "live"
            out.append(
                CallSummary(
                    call_id=call_id,
                    started_at_us=first.at,
                    ended_at_us=last.at,
                    events=n,
                    outcome=outcome,
                )
            )
        return out

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

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """Turn database errors (not conflicts) into a one-line StoreError."""
        try:
            yield
        except (IntegrityError, StoreError, EventFormatError):
            raise
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise StoreError(f"store {self.url}: {what} failed: {first}") from exc

    def _run(self) -> None:
        """Flusher thread: write the buffer every ``flush_interval``."""
        next_at = time.monotonic() + self._interval
        while not self._stop.wait(max(0.0, next_at - time.monotonic())):
            next_at = time.monotonic() + self._interval
            if not self._buf:
                continue
            try:
                self._write_buffered()
            except StoreError as exc:  # kept buffered; flush() reports it, next tick retries
                if str(exc) != self._error:
                    log.warning("%s (will retry)", exc)
                self._error = str(exc)
            except Exception:  # never let the flusher die
                log.exception("event store flusher failed")

    def _write_buffered(self) -> None:
        with self._write_lock:
            self._write_buffered_locked()

    def _write_buffered_locked(self) -> None:
        with self._buf_lock:
            pending, self._buf = self._buf, []
        if self._conflicted and pending:
            pending = _keep_rows(pending, self._not_conflicted)
        if not pending:
            return
        try:
            with self._errors("write"):
                self._insert(pending)
        except BaseException:
            with self._buf_lock:  # keep them, in order, for the next attempt
                self._buf[:0] = pending
            raise
        self._error = ""

    def _insert(self, pending: list[list[_Row]]) -> None:
        """Insert the buffered batches ``pending``: one transaction on SQLite; on
        PostgreSQL, chunks of whole batches of about ``_PG_CHUNK_ROWS`` rows /
        ``_PG_CHUNK_BYTES`` (see :func:`chunk_batches`).

        Why chunks: psycopg's pipeline mode (used by eventsourcing's insert) can hang
        forever sending a multi-megabyte batch with the pure-Python libpq wrapper
        (psycopg issue #685; reproduced here with 40,000 events in one insert).

        ``pending`` is emptied of whatever got written, so a failure leaves in it
        exactly the batches (or what is left of them) still to write.
        """
        if self._target.kind != "postgresql":
            chunks = [list(pending)]
        else:
            chunks = chunk_batches(pending, _PG_CHUNK_ROWS, _PG_CHUNK_BYTES)
        for i, chunk in enumerate(chunks):
            if self._conflicted:
                chunk = _keep_rows(chunk, self._not_conflicted)
            rows = [r for batch in chunk for r in batch]
            try:
                self._insert_chunk(rows)
            except BaseException:
                rest = _still_pending(chunk, rows)  # `rows` is now what was not written
                pending[:] = rest + [batch for later in chunks[i + 1 :] for batch in later]
                raise
        pending.clear()

    def _not_conflicted(self, row: _Row) -> bool:
        return row.originator_id not in self._conflicted

    def _insert_chunk(self, pending: list[_Row]) -> None:
        """Insert in one transaction; on a conflict, drop the conflicting calls and retry.

        ``pending`` is emptied of whatever got written, so a failure leaves in it
        exactly the rows still to write.
        """
        try:
            self._insert_rows(pending)
            pending.clear()
            return
        except IntegrityError:
            pass
        bad = self._find_conflicts(pending)
        self._mark(bad)
        pending[:] = [r for r in pending if r.originator_id not in bad]
        if not pending:
            return
        try:
            self._insert_rows(pending)
            pending.clear()
            return
        except IntegrityError:
            pass
        # Still conflicting (a writer raced us): isolate call by call.
        by_call: dict[str, list[_Row]] = {}
        for r in pending:
            by_call.setdefault(str(r.originator_id), []).append(r)
        for call_id, rows in by_call.items():
            try:
                self._insert_rows(rows)
            except IntegrityError:
                self._mark({call_id})
            written = {id(r) for r in rows}
            pending[:] = [r for r in pending if id(r) not in written]

    def _insert_rows(self, rows: Sequence[_Row]) -> None:
        """Insert rows in one transaction (caller holds ``_write_lock``); raises
        IntegrityError, writing nothing, if any (call, seq) is already stored.

        An SQLite file gets the same INSERT as eventsourcing's recorder, but as one
        executemany on a connection kept for writing: the recorder executes row by
        row and takes pooled connections in turn, each re-reading the pages the
        last one wrote (bench_bridge at 50 calls: flusher thread 0.05 -> 0.04 cores,
        a quarter of the page reads).  Same table, statement and rowid order, so
        reads, the notification log and conflicts do not change.
        """
        conn = self._writer
        if conn is None:
            pool = getattr(self._datastore, "pool", None)
            if self._target.kind != "sqlite" or pool is None or pool.is_sqlite_memory_mode:
                self._recorder.insert_events(rows)  # PostgreSQL; shared-cache memory DB
                return
            conn = self._writer = sqlite3.connect(
                pool.db_name,
                uri=True,
                check_same_thread=False,  # the flusher thread, or flush() callers
                isolation_level=None,  # explicit BEGIN/COMMIT below
                timeout=pool.lock_timeout or 5.0,
            )
        statement = self._recorder.insert_events_statement  # type: ignore[attr-defined]
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(
                statement, [(r.originator_id, r.originator_version, r.topic, r.state) for r in rows]
            )
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                with suppress(sqlite3.Error):  # a broken connection: keep the first error
                    conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.IntegrityError):
                raise IntegrityError(exc) from exc
            raise

    def _find_conflicts(self, rows: Sequence[_Row]) -> set[str]:
        """Calls whose rows duplicate each other or rows already stored."""
        seqs: dict[str, list[int]] = {}
        for r in rows:
            seqs.setdefault(str(r.originator_id), []).append(r.originator_version)
        bad = set()
        for call_id, versions in seqs.items():
            if len(set(versions)) != len(versions):
                bad.add(call_id)
                continue
            stored = self._recorder.select_events(call_id, gt=min(versions) - 1, lte=max(versions))
            if {s.originator_version for s in stored} & set(versions):
                bad.add(call_id)
        return bad

    def _mark(self, calls: set[str], *, reported: bool = False) -> None:
        for call_id in sorted(calls - self._conflicted):
            log.warning("call %r: stream conflict; dropping this store's events for it", call_id)
            self._conflicted.add(call_id)
            if not reported:
                self._unreported.append(call_id)

    def _raise_conflicts(self, call_id: str | None) -> None:
        if call_id is not None:
            if call_id in self._conflicted:
                if call_id in self._unreported:
                    self._unreported.remove(call_id)
                raise StreamConflict(call_id)
            return
        if self._unreported:
            raise StreamConflict(self._unreported.pop(0))


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
    if not url:
        url = os.environ.get("FASTAGENT_STORE", "").strip() or DEFAULT_PATH
    interval = _flush_interval(flush_interval)
    target = _parse_url(url)
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
