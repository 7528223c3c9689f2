"""Decision-trail analytics: follow the store's global log into a DuckDB file.

The projection reads the log in batches of positions.  Audio boundaries (~97% of
the log) are only aggregated, so they never become Python objects: the SQLite
fast path fetches a batch's audio states as one ``group_concat`` string, viewed
as an Arrow string array, and DuckDB parses that JSON straight into per-call and
per-response aggregates.  Every other event comes as a raw row (position, topic,
state) in one Arrow table; DuckDB parses the JSON and fills the tables of
``projections/00_tables.sql`` with ``INSERT ... SELECT``.  Each batch is one
DuckDB transaction that also records the last log position applied
(``sync_state``), so every event is applied exactly once and an interrupted sync
resumes cleanly.

Everything that needs several events (calls, tool calls, latency, funnels) is a
view in ``projections/*.sql``.  Events of an unknown type, a newer version, or
that are corrupt are skipped and counted per topic in ``sync_skipped`` (a batch
whose audio holds a corrupt event is redone row by row to name it).  See
docs/analytics.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Protocol

import duckdb
import numpy as np
import pyarrow as pa

from fastagent import events
from fastagent.errors import StoreError
from fastagent.events import EventFormatError

__all__ = [
    "DEFAULT_BATCH",
    "AnalyticsError",
    "Batch",
    "LogSource",
    "SqliteSource",
    "StoreSource",
    "SyncResult",
    "default_db_path",
    "open_analytics",
    "open_source",
    "raw_table",
    "sync",
]

SCHEMA_VERSION = 3  # 2: model_failures; 3: model_sessions (GPT-Live minutes, the model)
DEFAULT_DB = "./fastagent-analytics.duckdb"
# Log positions per batch (one DuckDB transaction each).  Large, because each batch
# costs ~60 ms of fixed work (a dozen statements); memory is ~150 bytes a position.
DEFAULT_BATCH = 500_000
# A backlog is split into smaller batches, but not below this (fixed cost per batch).
MIN_SPLIT_BATCH = 100_000
# Rows per read through the store API (a Python tuple each): batches are smaller there.
STORE_READ_LIMIT = 100_000

RAW_SCHEMA = pa.schema([("pos", pa.int64()), ("topic", pa.string()), ("state", pa.large_binary())])


class AnalyticsError(StoreError):
    """A one-line, user-facing analytics failure (cannot open, bad query, ...)."""


def one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines() or [type(exc).__name__])[0]


def default_db_path() -> str:
    return os.environ.get("FASTAGENT_ANALYTICS", "").strip() or DEFAULT_DB


# --------------------------------------------------------------------------- sources


def raw_table(positions: list[int], topics: list[str], states: list[bytes]) -> pa.Table:
    """Columns of raw rows as an Arrow table, built without a Python object per cell.

    ``pa.array(list_of_bytes)`` costs about 1 us a row; joining the bytes and
    computing offsets with numpy is ~10x cheaper.
    """
    n = len(states)
    offsets = np.zeros(n + 1, dtype=np.int64)
    if n:
        np.cumsum(np.fromiter(map(len, states), dtype=np.int64, count=n), out=offsets[1:])
    data = pa.py_buffer(b"".join(states))
    state = pa.LargeBinaryArray.from_buffers(
        pa.large_binary(), n, [None, pa.py_buffer(offsets), data]
    )
    return pa.table(
        [pa.array(positions, pa.int64()), pa.array(topics, pa.string()), state],
        schema=RAW_SCHEMA,
    )


AUDIO_TYPES = ("CallerAudio", "BotAudio")
# Topics of today's audio events: the bulk of the log, taken by the fast path.
FAST_TOPICS = tuple(f"{n}/v{events.EVENT_TYPES[n].version}" for n in AUDIO_TYPES)


@dataclass
class Batch:
    """Every event of the log with a position in ``(after, last]``, in two parts.

    ``audio``: the JSON states of today's CallerAudio/BotAudio events (most of the
    log), without positions or topics -- only aggregated, never a row each.
    ``rows``: every other event as raw rows (position, topic, state).
    ``raw()`` re-reads the whole batch as raw rows: when the audio part turns out
    to hold something invalid, the batch is redone row by row so the bad rows can
    be named and skipped.
    """

    after: int
    last: int
    rows: pa.Table
    audio: pa.Array | None
    raw: Callable[[], pa.Table]

    @property
    def events(self) -> int:
        return self.rows.num_rows + (len(self.audio) if self.audio is not None else 0)


def split_audio(after: int, table: pa.Table) -> Batch:
    """A batch from raw rows: today's audio events become the ``audio`` part."""
    import pyarrow.compute as pc

    last = int(table.column("pos")[-1].as_py()) if table.num_rows else after
    mask = pc.is_in(table.column("topic"), value_set=pa.array(FAST_TOPICS, pa.string()))
    try:
        audio = table.filter(mask).column("state").combine_chunks().cast(pa.large_string())
    except pa.ArrowInvalid:  # not UTF-8: handle every row one by one
        return Batch(after, last, table, None, lambda: table)
    return Batch(after, last, table.filter(pc.invert(mask)), audio, lambda: table)


class LogSource(Protocol):
    """Where the global event log is read from."""

    description: str

    def max_position(self) -> int: ...

    def read_batch(self, after: int, limit: int, until: int) -> Batch:
        """Events after position ``after``: at most ``limit`` of them, and none
        needed beyond ``until`` (the position the sync aims at)."""
        ...

    def close(self) -> None: ...


class StoreSource:
    """Reads through the EventStore API (works for SQLite and PostgreSQL stores)."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.description = f"{store.kind} store {store.url}"

    def max_position(self) -> int:
        return int(self._store.max_position())

    def read_batch(self, after: int, limit: int, until: int) -> Batch:
        rows = self._store.read_all_raw(after, min(limit, STORE_READ_LIMIT))
        return split_audio(
            after, raw_table([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows])
        )

    def close(self) -> None:
        self._store.close()


class SqliteSource:
    """Fast path for SQLite stores: read the eventsourcing table directly, read-only.

    The notification log position of an eventsourcing SQLite table is its rowid
    (rows are never deleted, so a rowid at or below the maximum seen is final).
    A batch is a range of rowids.  Its audio events are fetched by SQLite as one
    string (``group_concat`` of the states, plus their lengths), so none of them
    becomes a Python object: that and the scan run without the GIL.
    """

    def __init__(self, path: str, table: str) -> None:
        self.description = f"sqlite store {path}"
        self._table = table
        uri = f"file:{os.path.abspath(path)}?mode=ro"
        try:
            self._db = sqlite3.connect(uri, uri=True, check_same_thread=False)
            self._db.execute(f'SELECT 1 FROM "{table}" LIMIT 1').fetchall()
        except sqlite3.Error as exc:
            raise AnalyticsError(f"cannot open store {path}: {one_line(exc)}") from None
        self._lock = threading.Lock()
        topics = ", ".join(f"'{t}'" for t in FAST_TOPICS)
        where = f'FROM "{table}" WHERE rowid > ? AND rowid <= ?'
        # A NULL or TEXT cell (not what eventsourcing writes) becomes a corrupt row, not a crash.
        cols = "rowid, ifnull(topic, ''), CAST(ifnull(state, x'') AS BLOB)"
        self._rows_sql = f"SELECT {cols} {where} AND topic NOT IN ({topics})"
        self._raw_sql = f"SELECT {cols} {where}"
        # Both group_concats see the rows in the same order: lengths split the states.
        self._audio_sql = (
            "SELECT count(*), CAST(group_concat(state, '') AS BLOB), group_concat(length(state)) "
            f"{where} AND topic IN ({topics})"
        )

    def max_position(self) -> int:
        with self._lock:
            row = self._db.execute(f'SELECT max(rowid) FROM "{self._table}"').fetchone()
        return int(row[0] or 0)

    def _raw(self, sql: str, after: int, last: int) -> pa.Table:
        with self._lock:
            rows = self._db.execute(sql, (after, last)).fetchall()
        return raw_table([r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows])

    def read_batch(self, after: int, limit: int, until: int) -> Batch:
        last = max(after, min(after + limit, until))

        def raw() -> pa.Table:
            return self._raw(self._raw_sql, after, last)

        rows = self._raw(self._rows_sql, after, last)
        with self._lock:
            n, blob, lengths = self._db.execute(self._audio_sql, (after, last)).fetchone()
        audio = _concatenated_strings(n, blob or b"", lengths or "")
        if audio is None:  # not what SQLite should give (e.g. not UTF-8): row by row
            return Batch(after, last, raw(), None, raw)
        return Batch(after, last, rows, audio, raw)

    def close(self) -> None:
        self._db.close()


def _concatenated_strings(n: int, blob: bytes, lengths: str) -> pa.Array | None:
    """``n`` strings stored back to back in ``blob`` as an Arrow array (no copy).

    None if the lengths do not add up or the bytes are not UTF-8.
    """
    # np.fromstring parses the comma-separated text in C (~20 ns a number).
    sizes = np.fromstring(lengths, dtype=np.int64, sep=",") if n else np.zeros(0, np.int64)
    if len(sizes) != n or int(sizes.sum()) != len(blob):
        return None
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    array = pa.LargeStringArray.from_buffers(
        n, pa.py_buffer(offsets), pa.py_buffer(blob), null_count=0
    )
    try:
        array.validate(full=True)  # UTF-8
    except pa.ArrowInvalid:
        return None
    return array


def open_source(url: str | None = None, *, fast: bool = True) -> LogSource:
    """Open the event store at ``url`` (default $FASTAGENT_STORE or ./fastagent.db) for reading.

    A store that does not exist is an error here (syncing must not create one).
    With ``fast``, an SQLite file store is read directly (:class:`SqliteSource`).
    """
    from fastagent.store import StoreError, open_store
    from fastagent.store.urls import parse_store_url, store_url

    url = store_url(url)
    try:
        target = parse_store_url(url)  # the store's own parser: a URL means the same here
    except StoreError as exc:
        raise AnalyticsError(one_line(exc)) from None
    try:
        store = open_store(url, create=False)
    except StoreError as exc:
        raise AnalyticsError(one_line(exc)) from None
    if fast and target.file is not None:
        store.close()  # it checked the URL and the table; read the file directly
        return SqliteSource(target.file, target.table)
    return StoreSource(store)


# --------------------------------------------------------------------------- DuckDB side


def _projection_files() -> list[tuple[str, str]]:
    root = resources.files("projections")
    files = sorted((p for p in root.iterdir() if p.name.endswith(".sql")), key=lambda p: p.name)
    return [(p.name, p.read_text(encoding="utf-8")) for p in files]


def open_analytics(
    path: str | None = None, *, read_only: bool = False
) -> duckdb.DuckDBPyConnection:
    """Open (creating if needed) the analytics DuckDB file, with tables and views in place.

    Views are re-created on every open, so a newer FastAgent's view definitions
    apply to an existing file.
    """
    path = path or default_db_path()
    try:
        con = duckdb.connect(path, read_only=read_only)
    except duckdb.Error as exc:
        raise AnalyticsError(f"cannot open analytics database {path}: {one_line(exc)}") from None
    if read_only:
        return con
    try:
        _apply_projections(con)
        row = _first_row(con, "SELECT schema_version FROM sync_state WHERE id = 1")
        if row is None:
            con.execute("INSERT INTO sync_state VALUES (1, 0, 0, ?)", [SCHEMA_VERSION])
        elif row[0] != SCHEMA_VERSION:
            raise AnalyticsError(
                f"analytics database {path} has schema version {row[0]}, this FastAgent "
                f"uses {SCHEMA_VERSION}: delete it (or sync --rebuild) to rebuild it from the log"
            )
    except BaseException:
        con.close()
        raise
    return con


def _apply_projections(con: duckdb.DuckDBPyConnection) -> None:
    """Run projections/*.sql unless the file already has exactly these definitions.

    Skipping them when unchanged keeps a no-op sync fast (re-creating the views
    costs ~40 ms).
    """
    files = _projection_files()
    digest = hashlib.sha256("\0".join(f"{n}\0{s}" for n, s in files).encode()).hexdigest()
    try:
        if _first_row(con, "SELECT digest FROM projection_digest") == (digest,):
            return
    except duckdb.CatalogException:
        pass
    for name, sql in files:
        try:
            con.execute(sql)
        except duckdb.Error as exc:
            raise AnalyticsError(f"projections/{name}: {one_line(exc)}") from None
    con.execute("CREATE OR REPLACE TABLE projection_digest AS SELECT ? AS digest", [digest])


def _first_row(con: duckdb.DuckDBPyConnection, sql: str) -> tuple[Any, ...] | None:
    """The first row (fetching everything: a half-read result blocks the connection)."""
    rows = con.execute(sql).fetchall()
    return tuple(rows[0]) if rows else None


def applied_position(con: duckdb.DuckDBPyConnection) -> int:
    row = _first_row(con, "SELECT position FROM sync_state WHERE id = 1")
    return int(row[0]) if row else 0


# The JSON fields each staging table extracts (one parse per event; missing -> NULL).
_AUDIO_FIELDS = {
    "call_id": "VARCHAR",
    "seq": "BIGINT",
    "at": "BIGINT",
    "response_id": "VARCHAR",
    "item_id": "VARCHAR",
    "nbytes": "BIGINT",
    "duration_us": "BIGINT",
}
_OTHER_FIELDS = {
    "call_id": "VARCHAR",
    "seq": "BIGINT",
    "at": "BIGINT",
    "tool_call_id": "VARCHAR",
    "config": {"agent": "VARCHAR", "model": "VARCHAR"},
    "model": "VARCHAR",
    "session_id": "VARCHAR",
    "seconds": "DOUBLE",
    "caller": "VARCHAR",
    "callee": "VARCHAR",
    "instance": "VARCHAR",
    "reason_code": "VARCHAR",
    "reason": "VARCHAR",
    "outcome": "VARCHAR",
    "target": "VARCHAR",
    "side": "VARCHAR",
    "digits": "VARCHAR",
    "message": "VARCHAR",
    "code": "VARCHAR",
    "error_type": "VARCHAR",
    "response_id": "VARCHAR",
    "item_id": "VARCHAR",
    "role": "VARCHAR",
    "text": "VARCHAR",
    "audio_start_ms": "BIGINT",
    "audio_end_ms": "BIGINT",
    "status": "VARCHAR",
    "usage": {
        k: "BIGINT"
        for k in (
            "input_tokens",
            "output_tokens",
            "total_tokens",
            "input_audio_tokens",
            "output_audio_tokens",
            "cached_tokens",
        )
    },
    "name": "VARCHAR",
    "arguments": "VARCHAR",
    "server": "VARCHAR",
    "ok": "BOOLEAN",
    "error": "VARCHAR",
    "duration_us": "BIGINT",
    "fsa": "VARCHAR",
    "state": "VARCHAR",
    "source": "VARCHAR",
    "trigger": "VARCHAR",
    "guard": "VARCHAR",
    "stream_id": "VARCHAR",
    "played_ms": "BIGINT",
    "kind": "VARCHAR",
    "action": "VARCHAR",
    "attempt": "BIGINT",
}
_FAST_FIELDS = {"type": "VARCHAR", **_AUDIO_FIELDS}


def _in(types: tuple[str, ...]) -> str:
    return "(" + ", ".join(f"'{t}'" for t in types) + ")"


_TS = "make_timestamp(e.at)"
_BASE = f"pos, e.call_id, e.seq, {_TS}, type"

# Fill statements, run in order in each batch's transaction.
_FILL: list[str] = [
    f"""INSERT INTO call_events SELECT {_BASE}, e.config.agent, e.caller, e.callee,
        e.reason, e.outcome,
        CASE type WHEN 'SessionEnded' THEN e.reason_code WHEN 'TransferRequested' THEN e.target
            WHEN 'ConnectionLost' THEN e.side WHEN 'ConnectionRestored' THEN e.side
            WHEN 'Dtmf' THEN e.digits WHEN 'DtmfSent' THEN e.digits ELSE e.instance END
        FROM _other WHERE type IN {
        _in(
            (
                "SessionInitiated",
                "SessionResumed",
                "SessionEnded",
                "SessionAccepted",
                "SessionRejected",
                "CallStarted",
                "ConnectionLost",
                "ConnectionRestored",
                "GraceExpired",
                "HangupRequested",
                "TransferRequested",
                "Dtmf",
                "DtmfSent",
                "CallEnded",
            )
        )
    }""",
    f"""INSERT INTO turns SELECT pos, e.call_id, e.seq, {_TS}, e.role, e.item_id, e.text,
        e.response_id FROM _other WHERE type = 'Transcript'""",
    f"""INSERT INTO speech SELECT {_BASE}, e.item_id,
        CASE type WHEN 'SpeechStarted' THEN e.audio_start_ms ELSE e.audio_end_ms END
        FROM _other WHERE type IN ('SpeechStarted', 'SpeechStopped')""",
    f"""INSERT INTO responses SELECT {_BASE}, e.response_id, e.status, e.reason,
        e.usage.input_tokens, e.usage.output_tokens, e.usage.total_tokens,
        e.usage.input_audio_tokens, e.usage.output_audio_tokens, e.usage.cached_tokens
        FROM _other WHERE type IN ('ResponseStarted', 'ResponseDone')""",
    f"""INSERT INTO tool_events SELECT {_BASE}, e.tool_call_id, e.name, e.arguments, e.server,
        e.ok, e.error, e.duration_us, e.reason
        FROM _other WHERE type IN {
        _in(
            (
                "FunctionCallRequested",
                "FunctionCallDispatched",
                "FunctionCallSkipped",
                "ToolResult",
                "FunctionOutputSent",
            )
        )
    }""",
    f"""INSERT INTO fsa_transitions SELECT pos, e.call_id, e.seq, {_TS},
        CASE type WHEN 'FsaStarted' THEN 'started' WHEN 'FsaFinished' THEN 'finished'
            ELSE 'transition' END,
        e.fsa,
        CASE type WHEN 'FsaFinished' THEN e.state WHEN 'FsaTransition' THEN e.source END,
        CASE type WHEN 'FsaStarted' THEN e.state WHEN 'FsaTransition' THEN e.target END,
        e.trigger, e.guard, e.reason, e.outcome
        FROM _other WHERE type IN ('FsaStarted', 'FsaTransition', 'FsaFinished')""",
    f"""INSERT INTO playback SELECT {_BASE}, e.stream_id, e.response_id, e.item_id, e.reason,
        e.played_ms, e.audio_end_ms FROM _other WHERE type IN
        ('PlaybackStarted', 'PlaybackStopped', 'TruncateRequested', 'ItemTruncated')""",
    f"""INSERT INTO errors SELECT {_BASE},
        CASE type WHEN 'ModelError' THEN 'model' ELSE e.side END,
        coalesce(nullif(e.code, ''), e.error_type), e.message
        FROM _other WHERE type IN ('ModelError', 'ProtocolError')""",
    f"""INSERT INTO model_sessions SELECT {_BASE},
        CASE type WHEN 'SessionInitiated' THEN e.config.model ELSE e.model END,
        e.session_id, e.seconds
        FROM _other WHERE type IN ('SessionInitiated', 'ModelSessionStarted',
            'ModelSessionClosed', 'ModelUsage', 'CallEnded')
            OR (type = 'ConnectionLost' AND e.side = 'model')""",
    f"""INSERT INTO model_failures SELECT pos, e.call_id, e.seq, {_TS}, e.kind, e.action,
        e.code, e.message, e.response_id, e.item_id, e.attempt
        FROM _other WHERE type = 'ModelFailureHandled'""",
    """INSERT INTO audio_stats
        SELECT call_id, CASE type WHEN 'CallerAudio' THEN 'caller' ELSE 'bot' END,
            sum(n), sum(nbytes), sum(duration_us),
            make_timestamp(min(first_at)), make_timestamp(max(last_at))
        FROM _audio_agg GROUP BY ALL
        ON CONFLICT (call_id, direction) DO UPDATE SET
            chunks = chunks + excluded.chunks, nbytes = nbytes + excluded.nbytes,
            duration_us = duration_us + excluded.duration_us,
            first_at = least(first_at, excluded.first_at),
            last_at = greatest(last_at, excluded.last_at)""",
    """INSERT INTO response_audio
        SELECT call_id, response_id, arg_min(first_item, first_seq), min(first_seq),
            make_timestamp(arg_min(first_seq_at, first_seq)), make_timestamp(max(last_at)),
            sum(n), sum(nbytes), sum(duration_us)
        FROM _audio_agg WHERE type = 'BotAudio' GROUP BY call_id, response_id
        ON CONFLICT (call_id, response_id) DO UPDATE SET
            item_id = CASE WHEN excluded.first_seq < first_seq THEN excluded.item_id
                ELSE item_id END,
            first_at = CASE WHEN excluded.first_seq < first_seq THEN excluded.first_at
                ELSE first_at END,
            first_seq = least(first_seq, excluded.first_seq),
            last_at = greatest(last_at, excluded.last_at),
            chunks = chunks + excluded.chunks, nbytes = nbytes + excluded.nbytes,
            duration_us = duration_us + excluded.duration_us""",
    """INSERT INTO event_counts
        SELECT call_id, type, sum(n) FROM (
            SELECT call_id, type, n FROM _audio_agg
            UNION ALL SELECT e.call_id, type, 1 FROM _other
        ) GROUP BY ALL
        ON CONFLICT (call_id, type) DO UPDATE SET events = events + excluded.events""",
]

# Audio events of a batch, aggregated per call, type and response (a few thousand
# rows): the audio tables above are upserted from this.  ``{src}`` yields
# (type, e) with e the struct of _AUDIO_FIELDS; ``bad`` counts rows that miss a
# field the tables need (only the fast path can have them: it then falls back).
_AUDIO_AGG = """SELECT type, e.call_id AS call_id, e.response_id AS response_id,
        count(*) AS n, sum(e.nbytes) AS nbytes, sum(e.duration_us) AS duration_us,
        min(e.at) AS first_at, max(e.at) AS last_at, min(e.seq) AS first_seq,
        arg_min(e.item_id, e.seq) AS first_item, arg_min(e.at, e.seq) AS first_seq_at,
        count(*) FILTER (e.call_id IS NULL OR e.seq IS NULL OR e.at IS NULL
            OR type NOT IN ('CallerAudio', 'BotAudio')
            OR (type = 'BotAudio' AND e.response_id IS NULL)) AS bad
    FROM ({src}) GROUP BY type, e.call_id, e.response_id"""
_FAST_SRC = f"""SELECT e.type AS type, e FROM (
    SELECT json_transform(state, '{json.dumps(_FAST_FIELDS)}') AS e FROM _fast)"""

_SKIP = """INSERT INTO sync_skipped SELECT topic, reason, count(*), min(pos), max(pos)
    FROM _skipped GROUP BY ALL
    ON CONFLICT (topic, reason) DO UPDATE SET events = events + excluded.events,
        first_position = least(first_position, excluded.first_position),
        last_position = greatest(last_position, excluded.last_position)"""


def _classify(topic: str) -> tuple[str, str]:
    """(type name, action): action is apply | upcast | unknown_type | newer_version."""
    name, _, v = topic.partition("/v")
    cls = events.EVENT_TYPES.get(name)
    if cls is None:
        return name, "unknown_type"
    try:
        version = int(v) if v else 1
    except ValueError:
        return name, "unknown_type"
    if version > cls.version:
        return name, "newer_version"
    return name, "apply" if version == cls.version else "upcast"


@dataclass
class SyncResult:
    """What one :func:`sync` did."""

    source: str
    start_position: int
    position: int
    applied: int = 0  # events written to the tables
    batches: int = 0
    seconds: float = 0.0
    skipped: dict[tuple[str, str], int] = field(default_factory=dict)  # (topic, reason) -> n

    @property
    def read(self) -> int:
        return self.applied + sum(self.skipped.values())

    def skipped_lines(self) -> list[str]:
        return [
            f"skipped {n} {topic} event(s): {reason}"
            for (topic, reason), n in sorted(self.skipped.items())
        ]


class Projector:
    """Applies raw batches to an analytics connection, one transaction per batch."""

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con
        self._topics: dict[str, tuple[str, str]] = {}

    def _topic_table(self, batch: pa.Table) -> pa.Table:
        distinct = batch.column("topic").unique().to_pylist()
        for t in distinct:
            if t not in self._topics:
                self._topics[t] = _classify(t)
        names, actions = (
            zip(*(self._topics[t] for t in distinct), strict=True) if distinct else ((), ())
        )
        group = ["audio" if n in AUDIO_TYPES else "other" for n in names]
        return pa.table(
            {
                "topic": pa.array(distinct, pa.string()),
                "type": pa.array(names, pa.string()),
                "action": pa.array(actions, pa.string()),
                "grp": pa.array(group, pa.string()),
            }
        )

    def _upcast(self, batch: pa.Table, topics: pa.Table) -> tuple[pa.Table, list[tuple[int, str]]]:
        """Rewrite rows of older versions to today's JSON (rare: Python per row is fine)."""
        old = [
            t
            for t, a in zip(topics["topic"].to_pylist(), topics["action"].to_pylist(), strict=True)
            if a == "upcast"
        ]
        if not old:
            return batch, []
        import pyarrow.compute as pc

        mask = pc.is_in(batch.column("topic"), value_set=pa.array(old, pa.string()))
        rows = batch.filter(mask).to_pylist()
        keep = batch.filter(pc.invert(mask))
        pos: list[int] = []
        tops: list[str] = []
        states: list[bytes] = []
        corrupt: list[tuple[int, str]] = []
        for r in rows:
            try:
                event = events.decode(r["topic"], r["state"])
            except EventFormatError:
                corrupt.append((r["pos"], r["topic"]))
                continue
            pos.append(r["pos"])
            tops.append(events.topic_of(event))
            states.append(events.encode(event))
        return pa.concat_tables([keep, raw_table(pos, tops, states)]), corrupt

    def apply(
        self, batch: Batch, before_commit: Callable[[int], None] | None = None
    ) -> tuple[int, int, dict[tuple[str, str], int]]:
        """Apply one batch; returns (last position, events applied, skipped counts)."""
        con = self.con
        fast = 0
        try:
            if batch.audio is not None and len(batch.audio):
                fast = self._stage_fast_audio(batch.audio)
                if fast < 0:  # something invalid among the audio: redo row by row
                    rows = batch.raw()
                    batch = Batch(batch.after, batch.last, rows, None, lambda: rows)
                    fast = 0
            return self._apply_rows(batch, fast, before_commit)
        finally:
            for name in ("_part", "_skipped", "_fast"):
                con.unregister(name)

    def _stage_fast_audio(self, audio: pa.Array) -> int:
        """Aggregate the audio states into ``_audio_agg``; -1 if one is invalid.

        One parallel DuckDB pass over the JSON, outside the batch transaction (a
        parse error would abort it).
        """
        con = self.con
        con.register("_fast", pa.table({"state": audio}))
        try:
            con.execute(
                "CREATE OR REPLACE TEMP TABLE _audio_agg AS " + _AUDIO_AGG.format(src=_FAST_SRC)
            )
        except duckdb.InvalidInputException:
            return -1
        row = _first_row(con, "SELECT sum(n), sum(bad) FROM _audio_agg")
        if row is None or row[1]:
            return -1
        return int(row[0] or 0)

    def _apply_rows(
        self, batch: Batch, fast: int, before_commit: Callable[[int], None] | None
    ) -> tuple[int, int, dict[tuple[str, str], int]]:
        """Stage the raw rows (the ``_audio_agg`` of ``fast`` audio events is
        staged already) and apply everything in one transaction."""
        con = self.con
        last = batch.last
        rows = batch.rows
        topics = self._topic_table(rows)
        corrupt: list[tuple[int, str]] = []
        if "upcast" in topics["action"].to_pylist():
            rows, corrupt = self._upcast(rows, topics)
            topics = self._topic_table(rows)
        # State as text: invalid UTF-8 fails the cast for the whole batch, so find bad rows.
        rows, bad = _text_states(rows)
        corrupt += bad
        # Split by table group in Arrow, so each DuckDB query scans only its rows.
        by_action: dict[str, list[str]] = {}
        for t, grp, action in zip(
            topics["topic"].to_pylist(),
            topics["grp"].to_pylist(),
            topics["action"].to_pylist(),
            strict=True,
        ):
            by_action.setdefault(grp if action in ("apply", "upcast") else action, []).append(t)
        staged = fast
        row_audio = 0
        for grp, fields in (("audio", _AUDIO_FIELDS), ("other", _OTHER_FIELDS)):
            part = _rows_with_topics(rows, by_action.get(grp, []))
            if grp == "audio":
                row_audio = part.num_rows
                if fast and not row_audio:  # the usual case: all audio took the fast path
                    continue
            n = self._stage(grp, part, fields)
            staged += n
            if n != part.num_rows:  # rows dropped as corrupt: name them
                lost = con.execute(
                    f"SELECT topic, pos FROM _part WHERE pos NOT IN (SELECT pos FROM _{grp})"
                ).fetchall()
                corrupt += [(p, t) for t, p in lost]
            con.unregister("_part")
        # Audio that came as rows (older versions, a batch redone row by row).
        src = "SELECT type, e FROM _audio"
        if fast:
            if row_audio:
                con.execute("INSERT INTO _audio_agg " + _AUDIO_AGG.format(src=src))
        else:
            con.execute("CREATE OR REPLACE TEMP TABLE _audio_agg AS " + _AUDIO_AGG.format(src=src))
        skipped_parts = []
        for reason in ("unknown_type", "newer_version"):
            part = _rows_with_topics(rows, by_action.get(reason, []))
            skipped_parts.append(
                part.select(["topic", "pos"]).append_column(
                    "reason", pa.array([reason] * part.num_rows, pa.string())
                )
            )
        skipped_parts.append(
            pa.table(
                {
                    "topic": pa.array([t for _, t in corrupt], pa.string()),
                    "pos": pa.array([p for p, _ in corrupt], pa.int64()),
                    "reason": pa.array(["corrupt"] * len(corrupt), pa.string()),
                }
            )
        )
        skipped_rows = pa.concat_tables(skipped_parts)
        con.register("_skipped", skipped_rows)
        skipped: dict[tuple[str, str], int] = {}
        for t, r in zip(
            skipped_rows["topic"].to_pylist(), skipped_rows["reason"].to_pylist(), strict=True
        ):
            skipped[(t, r)] = skipped.get((t, r), 0) + 1
        con.execute("BEGIN")
        try:
            for sql in _FILL:
                con.execute(sql)
            if skipped_rows.num_rows:
                con.execute(_SKIP)
            con.execute(
                "UPDATE sync_state SET position = ?, events = events + ? WHERE id = 1",
                [last, staged],
            )
            if before_commit is not None:
                before_commit(last)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        return last, staged, skipped

    def _stage(self, grp: str, part: pa.Table, fields: dict[str, Any]) -> int:
        """Parse one group's JSON into temp table ``_<grp>``; returns the rows kept.

        Outside the batch transaction: a parse error would abort it.  The fast path
        assumes valid JSON; if DuckDB rejects some, parse again keeping valid rows.
        """
        con = self.con
        con.register("_part", part)
        structure = json.dumps(fields)
        sql = f"""CREATE OR REPLACE TEMP TABLE _{grp} AS
            SELECT pos, split_part(topic, '/', 1) AS type,
                json_transform(state, '{structure}') AS e
            FROM _part WHERE_CLAUSE"""
        try:
            con.execute(sql.replace("WHERE_CLAUSE", ""))
        except duckdb.InvalidInputException:
            con.execute(sql.replace("WHERE_CLAUSE", "WHERE json_valid(state)"))
        # Filtering in the same query would evaluate json_transform once per condition.
        missing = "e.call_id IS NULL OR e.seq IS NULL OR e.at IS NULL"
        if grp == "audio":  # the response is part of response_audio's key
            missing += " OR (type = 'BotAudio' AND e.response_id IS NULL)"
        rows = _first_row(con, f"SELECT count(*), count(*) FILTER ({missing}) FROM _{grp}")
        total, bad = (int(rows[0]), int(rows[1])) if rows else (0, 0)
        if bad:
            con.execute(f"DELETE FROM _{grp} WHERE {missing}")
        return total - bad


def _rows_with_topics(batch: pa.Table, topics: list[str]) -> pa.Table:
    if not topics:
        return batch.slice(0, 0)
    import pyarrow.compute as pc

    return batch.filter(pc.is_in(batch.column("topic"), value_set=pa.array(topics, pa.string())))


def _text_states(batch: pa.Table) -> tuple[pa.Table, list[tuple[int, str]]]:
    """Cast state to UTF-8 text; rows that are not valid UTF-8 are dropped and reported."""
    states = batch.column("state")
    try:
        text = states.cast(pa.large_string())
        return batch.set_column(2, "state", text), []
    except pa.ArrowInvalid:
        pass
    good: list[bool] = []
    corrupt: list[tuple[int, str]] = []
    for p, t, s in zip(
        batch["pos"].to_pylist(), batch["topic"].to_pylist(), states.to_pylist(), strict=True
    ):
        try:
            s.decode("utf-8")
            good.append(True)
        except UnicodeDecodeError:
            good.append(False)
            corrupt.append((p, t))
    kept = batch.filter(pa.array(good))
    return kept.set_column(2, "state", kept.column("state").cast(pa.large_string())), corrupt


def sync(
    source: LogSource,
    con: duckdb.DuckDBPyConnection,
    *,
    batch_size: int = DEFAULT_BATCH,
    progress: Callable[[int, int, int], None] | None = None,
    before_commit: Callable[[int], None] | None = None,
) -> SyncResult:
    """Apply every event after the last applied position, batch by batch.

    ``progress(start, position, target)`` is called after each committed batch.
    ``before_commit(position)`` runs inside each batch's transaction (tests use it
    to interrupt a sync); an exception there rolls the batch back and propagates.
    The next batch is read in a background thread while DuckDB applies this one.
    """
    t0 = time.perf_counter()
    start = applied_position(con)
    target = source.max_position()
    result = SyncResult(source.description, start, start)
    if target <= start:
        result.seconds = time.perf_counter() - t0
        return result
    # At least 4 batches (of >= 100k positions) so that reading overlaps applying.
    batch_size = min(batch_size, max(MIN_SPLIT_BATCH, -(-(target - start) // 4)))
    projector = Projector(con)
    with ThreadPoolExecutor(1, thread_name_prefix="fastagent-sync-read") as pool:
        pending: Future[Batch] | None = pool.submit(source.read_batch, start, batch_size, target)
        while pending is not None:
            batch = pending.result()
            pending = None
            if batch.last <= batch.after:
                break
            if batch.last < target:
                pending = pool.submit(source.read_batch, batch.last, batch_size, target)
            try:
                position, applied, skipped = projector.apply(batch, before_commit)
            except BaseException:
                if pending is not None:
                    pending.cancel()
                raise
            result.position = position
            result.applied += applied
            result.batches += 1
            for key, n in skipped.items():
                result.skipped[key] = result.skipped.get(key, 0) + n
            if progress is not None:
                progress(start, position, target)
    result.seconds = time.perf_counter() - t0
    return result


@contextmanager
def opened(
    store_url: str | None, db_path: str | None, *, fast: bool = True
) -> Iterator[tuple[LogSource, duckdb.DuckDBPyConnection]]:
    """Open the store for reading and the analytics file; close both afterwards."""
    source = open_source(store_url, fast=fast)
    try:
        con = open_analytics(db_path)
    except BaseException:
        source.close()
        raise
    try:
        yield source, con
    finally:
        con.close()
        source.close()


def skipped_summary(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str, int, int, int]]:
    """Everything skipped so far: (topic, reason, events, first position, last position)."""
    return [
        tuple(r)  # type: ignore[misc]
        for r in con.execute(
            "SELECT topic, reason, events, first_position, last_position FROM sync_skipped "
            "ORDER BY topic, reason"
        ).fetchall()
    ]
