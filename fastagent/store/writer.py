"""The group-commit writer: buffered rows written in one transaction per tick.

:meth:`GroupCommitWriter.add` only buffers (cheap, from the event loop); a daemon
thread writes the buffer at least every ``interval`` seconds, and
:meth:`~GroupCommitWriter.write_buffered` does it at once (a flush).  A batch (one
``append``: an input and its decisions) always commits whole.

Conflicts: a row whose (call, seq) another writer already stored marks its call
*conflicted*; that call's rows are dropped from then on and the conflict is
reported once, as :class:`~fastagent.errors.StreamConflict`, by the next flush.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from typing import Any

from eventsourcing.persistence import IntegrityError

from fastagent.errors import StoreError, StreamConflict
from fastagent.store.rows import _Row, db_errors

log = logging.getLogger("fastagent.store")

# A PostgreSQL flush is cut into transactions of about this size (see _insert).
_PG_CHUNK_ROWS = 2000
_PG_CHUNK_BYTES = 512 * 1024


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


class GroupCommitWriter:
    """Writes an event store's rows: buffered group commits, or one at once.

    ``recorder`` is the eventsourcing application recorder, ``datastore`` its
    datastore; ``kind`` is ``"sqlite"`` or ``"postgresql"``; ``url`` names the
    store in error messages.
    """

    def __init__(self, recorder: Any, datastore: Any, kind: str, url: str, interval: float) -> None:
        self._recorder = recorder
        self._datastore = datastore
        self._kind = kind
        self._url = url
        self._interval = interval
        # One list per append() call: a batch commits whole (see chunk_batches).
        self._buf: list[list[_Row]] = []
        self._buf_lock = threading.Lock()
        self._write_lock = threading.Lock()  # one writer at a time keeps append order
        self._conn: sqlite3.Connection | None = None  # see _insert_rows
        self.conflicted: set[str] = set()  # calls another writer owns now
        self._unreported: list[str] = []
        self._error: str = ""
        # Called after each group commit with (seconds, rows written), from the
        # writing thread; the service's metrics hook in here (fastagent.observe).
        self.on_write: Callable[[float, int], None] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fastagent-store", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> bool:
        """Rows are buffered and not written yet."""
        return bool(self._buf)

    def add(self, rows: list[_Row]) -> None:
        """Buffer one batch for the next group commit (safe from any thread)."""
        with self._buf_lock:
            self._buf.append(rows)

    def write_buffered(self) -> None:
        """Write everything buffered; StoreError (rows kept, in order) if it failed."""
        with self._write_lock:
            self._write_buffered_locked()

    def write_now(self, rows: list[_Row]) -> None:
        """Write one batch at once, after what is buffered; StreamConflict at once
        if another writer holds any of its seqs."""
        with self._write_lock:
            self._write_buffered_locked()  # earlier appends first: the log keeps their order
            try:
                with db_errors(self._url, "write"):
                    self._insert_rows(rows)
            except IntegrityError:
                bad = self._find_conflicts(rows) or {str(rows[0].originator_id)}
                self._mark(bad, reported=True)
                raise StreamConflict(sorted(bad)[0]) from None

    def reclaim(self, call_id: str) -> None:
        """Write what is buffered (stale rows of the call dropped as conflicting),
        then forget the call's conflict mark."""
        if call_id not in self.conflicted:
            return
        with self._write_lock:
            self._write_buffered_locked()
            self.conflicted.discard(call_id)
            if call_id in self._unreported:
                self._unreported.remove(call_id)

    def raise_conflicts(self, call_id: str | None) -> None:
        """Raise StreamConflict for ``call_id`` if it is conflicted, or (with None)
        for the first conflict not reported yet."""
        if call_id is not None:
            if call_id in self.conflicted:
                if call_id in self._unreported:
                    self._unreported.remove(call_id)
                raise StreamConflict(call_id)
            return
        if self._unreported:
            raise StreamConflict(self._unreported.pop(0))

    def close(self) -> None:
        """Stop the thread, write what is buffered, release the writing connection."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join()
        try:
            self.write_buffered()
        finally:
            if self._conn is not None:
                self._conn.close()

    # ------------------------------------------------------------------ internals

    def _run(self) -> None:
        """Flusher thread: write the buffer every ``interval``."""
        next_at = time.monotonic() + self._interval
        while not self._stop.wait(max(0.0, next_at - time.monotonic())):
            next_at = time.monotonic() + self._interval
            if not self._buf:
                continue
            try:
                self.write_buffered()
            except StoreError as exc:  # kept buffered; flush() reports it, next tick retries
                if str(exc) != self._error:
                    log.warning("%s (will retry)", exc)
                self._error = str(exc)
            except Exception:  # never let the flusher die
                log.exception("event store flusher failed")

    def _write_buffered_locked(self) -> None:
        with self._buf_lock:
            pending, self._buf = self._buf, []
        if self.conflicted and pending:
            pending = _keep_rows(pending, self._not_conflicted)
        if not pending:
            return
        rows = sum(len(b) for b in pending)
        started = time.perf_counter()
        try:
            with db_errors(self._url, "write"):
                self._insert(pending)
        except BaseException:
            with self._buf_lock:  # keep them, in order, for the next attempt
                self._buf[:0] = pending
            raise
        self._error = ""
        hook = self.on_write
        if hook is not None:
            hook(time.perf_counter() - started, rows)

    @property
    def queue_depth(self) -> int:
        """Rows appended and not yet written (waiting for the next group commit)."""
        with self._buf_lock:
            return sum(len(b) for b in self._buf)

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
        if self._kind != "postgresql":
            chunks = [list(pending)]
        else:
            chunks = chunk_batches(pending, _PG_CHUNK_ROWS, _PG_CHUNK_BYTES)
        for i, chunk in enumerate(chunks):
            if self.conflicted:
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
        return row.originator_id not in self.conflicted

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
        conn = self._conn
        if conn is None:
            pool = getattr(self._datastore, "pool", None)
            if self._kind != "sqlite" or pool is None or pool.is_sqlite_memory_mode:
                self._recorder.insert_events(rows)  # PostgreSQL; shared-cache memory DB
                return
            conn = self._conn = sqlite3.connect(
                pool.db_name,
                uri=True,
                check_same_thread=False,  # the flusher thread, or flush() callers
                isolation_level=None,  # explicit BEGIN/COMMIT below
                timeout=pool.lock_timeout or 5.0,
            )
        statement = self._recorder.insert_events_statement
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
        for call_id in sorted(calls - self.conflicted):
            log.warning("call %r: stream conflict; dropping this store's events for it", call_id)
            self.conflicted.add(call_id)
            if not reported:
                self._unreported.append(call_id)


__all__ = ["GroupCommitWriter", "chunk_batches"]
