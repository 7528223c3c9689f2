"""The event log: one append-only stream per call, on ``eventsourcing``.

Each call is a stream whose originator id is the call id (TEXT) and whose
originator version is the event's ``seq`` (SQLite file or PostgreSQL; see
:mod:`fastagent.store.urls`, opened by :mod:`fastagent.store.opening`).  Events
are mapped to eventsourcing rows by :class:`~fastagent.store.rows.EventMapper`
and written with the application recorder's insert; the Aggregate machinery is
not used because it costs several times more per event.

Writes are group-committed: :meth:`EventStore.append` only maps and buffers; the
:class:`~fastagent.store.writer.GroupCommitWriter` writes the buffer in one
transaction at least every ``flush_interval``.  :meth:`EventStore.flush` makes
everything appended so far durable (call it before an external side effect
starts).  Reads: one call's stream, the notification log of all calls, and
read-only queries for read models.  The keys, audit trail and checkpoints beside
the log have their own modules (``keys.py``, ``audit.py``, ``checkpoints.py``).
See docs/store.md.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import time
import weakref
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

from eventsourcing.application import Application

from fastagent.errors import StoreError, StreamConflict, UnknownCall
from fastagent.events import Event
from fastagent.privacy import MasterKeys, Sealer
from fastagent.store.audit import AuditTrail
from fastagent.store.checkpoints import Checkpoints
from fastagent.store.keys import DataKeys
from fastagent.store.rows import EventMapper, _Row, decode_row
from fastagent.store.tables import Tables
from fastagent.store.urls import StoreTarget
from fastagent.store.writer import GroupCommitWriter

log = logging.getLogger("fastagent.store")


class EventStore:
    """Append-only log of every call.  Create it with :func:`~fastagent.store.open_store`.

    The log itself is here: :meth:`append` (group-committed), :meth:`flush`,
    conflicts, reads and listing.  Beside it, each with its own side table:

    * :attr:`keys` -- per-call data keys (:class:`~fastagent.store.keys.DataKeys`):
      personal fields are sealed with them on the way in and opened on the way out;
    * :attr:`audit` -- the audit trail (:class:`~fastagent.store.audit.AuditTrail`);
    * :attr:`checkpoints` -- the resume cache
      (:class:`~fastagent.store.checkpoints.Checkpoints`).

    :meth:`forget` spans all three.  Errors are :class:`~fastagent.errors.StoreError`
    and its subclasses (StreamConflict, UnknownCall, CallForgotten).
    """

    def __init__(
        self,
        app: Application[str],
        target: StoreTarget,
        flush_interval: float,
        master: Callable[[], MasterKeys],
    ) -> None:
        self._app = app
        self._target = target
        self._recorder = app.recorder
        self._mapper: EventMapper = app.mapper  # type: ignore[assignment]
        self._datastore: Any = app.factory.datastore  # type: ignore[attr-defined]
        self.tables = Tables(target, self._datastore)
        """The store's tables by name, and plain SQL on them."""
        self.keys = DataKeys(self.tables, master)
        """Per-call data keys: seal, open, forget, rewrap."""
        self.audit = AuditTrail(self.tables)
        """Who read or changed what, when."""
        self.checkpoints = Checkpoints(self.tables, self.keys)
        """The resume cache: one checkpoint per call."""
        self.sealer: Sealer = self.keys.sealer
        """Seals and opens events' personal fields (recordings use it too)."""
        self._mapper.sealer = self.sealer
        self._interval = flush_interval
        self._writer = GroupCommitWriter(
            self._recorder, self._datastore, target.kind, target.display, flush_interval
        )
        self._conflicted = self._writer.conflicted  # the same set: read on every append
        self._closed = False
        _open_stores.add(self)

    # ------------------------------------------------------------------ properties

    @property
    def url(self) -> str:
        """Where the store is (a path, or the PostgreSQL URL without its password)."""
        return self._target.display

    @property
    def kind(self) -> str:
        """``"sqlite"`` or ``"postgresql"``."""
        return self._target.kind

    @property
    def flush_interval(self) -> float:
        """Seconds between group commits."""
        return self._interval

    # ------------------------------------------------------------------ writing

    def append(self, batch: Sequence[Event]) -> None:
        """Buffer events for the next group commit (cheap, no I/O; safe from any thread).

        Raises StoreError if the store is closed, StreamConflict if a call in
        ``batch`` is conflicted (another writer holds its stream).
        """
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
        """The highest durable seq of a call (0 if none).  Raises StoreError."""
        with self._errors("read"):
            rows = self._recorder.select_events(call_id, desc=True, limit=1)
        return rows[0].originator_version if rows else 0

    def read_all(self, after: int = 0, limit: int = 1000) -> list[tuple[int, Event]]:
        """The notification log: at most ``limit`` (position, event) pairs after
        position ``after``, in commit order; a forgotten call's events come with
        their personal fields empty.  Raises StoreError, EventFormatError."""
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
        pos = self.tables.position_column
        sql = (
            f"SELECT {pos}, topic, state FROM {self.tables.events} "
            f"WHERE {pos} > {{p}} ORDER BY {pos} LIMIT {{p}}"
        )
        # A TEXT or NULL state (a damaged row) comes back as b"": readers skip it as corrupt.
        return [
            (r[0], r[1], bytes(r[2]) if isinstance(r[2], bytes | bytearray | memoryview) else b"")
            for r in self.tables.query(sql, (after, limit))
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
        tables = self.tables
        sql = sql.replace("{events}", tables.events).replace("{pos}", tables.position_column)
        return tables.query(sql, params)

    # ------------------------------------------------------------------ forgetting

    def forget(self, call_id: str, who: str, at_us: int | None = None) -> int:
        """Forget a call: destroy its data key (the log is not touched; its sealed
        fields can never be opened again), drop its checkpoint and record who did
        it in the audit trail, all in one transaction.  Returns the time recorded
        (µs since the epoch; ``at_us`` if given).

        Raises UnknownCall, CallForgotten if it was forgotten already, StoreError.
        """
        if self.last_seq(call_id) == 0:
            raise UnknownCall(call_id)
        self.checkpoints.ensure()
        self.audit.ensure()
        at = time.time_ns() // 1000 if at_us is None else at_us
        also = [
            self.checkpoints.drop_statement(call_id),
            self.audit.entry(at, who, "forget", call_id),
        ]
        self.keys.forget(call_id, who, at, also=also)
        return at

    def _errors(self, what: str) -> AbstractContextManager[None]:
        """Turn database errors (not conflicts) into a one-line StoreError."""
        return self.tables.errors(what)


_open_stores: weakref.WeakSet[EventStore] = weakref.WeakSet()


@atexit.register
def _close_open_stores() -> None:
    # Daemon threads die silently at exit: flush what was appended but not written.
    for store in list(_open_stores):
        try:
            store.close()
        except Exception as exc:
            log.error("closing event store at exit: %s", exc)
