"""The event store on a real SQLite file and a real local PostgreSQL."""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from eventsourcing.persistence import StoredEvent
from psycopg import sql

from fastagent import events as ev
from fastagent.store import (
    EventStore,
    StoreError,
    StreamConflict,
    UnknownCall,
    chunk_batches,
    open_store,
)
from fastagent.store import writer as writer_module
from projections.calls import CallSummary, list_calls

T0 = 1_767_225_600_000_000


def audio(call_id: str, seq: int) -> ev.CallerAudio:
    return ev.CallerAudio(
        call_id=call_id,
        seq=seq,
        at=T0 + seq * 20_000,
        chunk=seq,
        nbytes=160,
        duration_us=20_000,
        fmt="audio/pcmu",
    )


def a_call(call_id: str) -> list[ev.Event]:
    """A small but varied call: nested structs, tuples, dicts, inputs and decisions."""
    return [
        ev.SessionInitiated(
            call_id=call_id,
            seq=1,
            at=T0,
            config=ev.CallConfig(agent="bank", voice="cedar"),
            caller="+15550001",
            offered_formats=("audio/pcmu", "raw/lpcm16"),
        ),
        ev.CallStarted(call_id=call_id, seq=2, at=T0 + 1, parameters={"lang": "en", "n": 3}),
        audio(call_id, 3),
        ev.ToolsListed(
            call_id=call_id,
            seq=4,
            at=T0 + 2,
            server="bank",
            tools=(ev.ToolSpec(name="balance", parameters={"type": "object"}),),
        ),
        ev.ResponseDone(
            call_id=call_id,
            seq=5,
            at=T0 + 3,
            response_id="resp_1",
            status="completed",
            usage=ev.Usage(input_tokens=10, output_tokens=5, total_tokens=15),
        ),
        ev.FsaTransition(
            call_id=call_id,
            seq=6,
            at=T0 + 3,
            fsa="pay",
            source="ask",
            target="confirm",
            trigger="amount",
        ),
        ev.CallEnded(call_id=call_id, seq=7, at=T0 + 9_000_000, reason="hangup", outcome="done"),
    ]


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "calls.db")


@pytest.fixture
def opened() -> Iterator[Callable[..., EventStore]]:
    """open_store that closes every store at the end of the test."""
    stores: list[EventStore] = []

    def _open(url: str, **kw: float) -> EventStore:
        store = open_store(url, **kw)
        stores.append(store)
        return store

    yield _open
    for s in stores:
        s.close()


@pytest.fixture
def pg_store_url(pg_url: str) -> Iterator[str]:
    """A fresh schema per test, dropped afterwards."""
    schema = f"t_store_{uuid.uuid4().hex[:12]}"
    yield f"{pg_url}?schema={schema}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


# ------------------------------------------------------------------ round trips


def _round_trip(store: EventStore) -> None:
    events = a_call("call-a")
    store.append(events[:3])
    store.append(events[3:])
    store.flush()
    assert store.read_call("call-a") == events
    assert store.last_seq("call-a") == 7
    assert store.max_position() == 7


def test_round_trip_sqlite_file(db: str, opened: Callable[..., EventStore]) -> None:
    store = opened(f"sqlite:///{db}")
    assert store.kind == "sqlite"
    _round_trip(store)
    # Stored as msgspec JSON under a Type/vN topic, not eventsourcing's default JSON.
    with sqlite3.connect(db) as conn:
        topic, state = conn.execute(
            "SELECT topic, state FROM stored_events WHERE originator_version = 7"
        ).fetchone()
    assert topic == "CallEnded/v1"
    assert state == ev.encode(a_call("call-a")[6])


def test_round_trip_postgresql(pg_store_url: str, opened: Callable[..., EventStore]) -> None:
    store = opened(pg_store_url)
    assert store.kind == "postgresql"
    _round_trip(store)
    assert [p for p, _ in store.read_all()] == sorted(p for p, _ in store.read_all())


def test_memory_store(opened: Callable[..., EventStore]) -> None:
    store = opened("sqlite://:memory:")
    _round_trip(store)


# ------------------------------------------------------------------ group commit


def test_group_commit_flushes_without_explicit_flush(
    db: str, opened: Callable[..., EventStore]
) -> None:
    writer = opened(db, flush_interval=0.02)
    reader = opened(db)
    writer.append([audio("call-g", 1), audio("call-g", 2)])
    deadline = time.monotonic() + 2.0
    while reader.last_seq("call-g") < 2 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert reader.last_seq("call-g") == 2  # written by the flusher thread alone


def test_flush_is_durable_across_reopen(db: str, opened: Callable[..., EventStore]) -> None:
    first = opened(db, flush_interval=30)  # the flusher would not run during this test
    first.append(a_call("call-d"))
    first.flush()
    second = opened(db)  # a new store on the same file, first still open
    assert second.read_call("call-d") == a_call("call-d")


def test_close_flushes(db: str, opened: Callable[..., EventStore]) -> None:
    store = open_store(db, flush_interval=30)
    store.append([audio("call-c", 1)])
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.append([audio("call-c", 2)])
    assert opened(db).last_seq("call-c") == 1


def test_flush_async_does_not_block_loop(db: str, opened: Callable[..., EventStore]) -> None:
    store = opened(db, flush_interval=30)

    async def main() -> None:
        store.append([audio("call-x", 1)])
        await store.flush_async()

    asyncio.run(main())
    assert store.last_seq("call-x") == 1


def test_flush_interval_from_environment(
    db: str, opened: Callable[..., EventStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FASTAGENT_FLUSH_MS", "7")
    assert opened(db).flush_interval == pytest.approx(0.007)
    monkeypatch.setenv("FASTAGENT_FLUSH_MS", "soon")
    with pytest.raises(StoreError, match="FASTAGENT_FLUSH_MS"):
        open_store(db)


def test_store_url_from_environment(
    db: str, opened: Callable[..., EventStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FASTAGENT_STORE", db)
    assert opened(None).url == db


# ------------------------------------------------------------------ notification log


def test_notification_log_order_and_paging(db: str, opened: Callable[..., EventStore]) -> None:
    store = opened(db)
    order = [audio(c, s) for s in range(1, 5) for c in ("c1", "c2", "c3")]
    for e in order:
        store.append([e])
    store.flush()
    pages, after = [], 0
    while page := store.read_all(after, limit=5):
        assert len(page) <= 5
        pages.append(page)
        after = page[-1][0]
    assert [len(p) for p in pages] == [5, 5, 2]
    items = [item for p in pages for item in p]
    positions = [p for p, _ in items]
    assert positions == sorted(positions) and len(set(positions)) == 12
    assert [e for _, e in items] == order  # append order is log order
    assert store.max_position() == positions[-1]
    raw = store.read_all_raw(positions[3], 4)
    assert [(p, t, ev.decode(t, s)) for p, t, s in raw] == [
        (p, "CallerAudio/v1", e) for p, e in items[4:8]
    ]
    assert store.read_all(positions[-1]) == []


# ------------------------------------------------------------------ conflicts


def _conflict(url: str, opened: Callable[..., EventStore]) -> None:
    a = opened(url, flush_interval=30)
    b = opened(url, flush_interval=30)
    a.append([audio("call-1", 1), audio("call-1", 2)])
    a.flush()
    # b believes it owns call-1 too and writes seq 2 again, alongside another call.
    b.append([audio("call-2", 1), audio("call-1", 2), audio("call-1", 3), audio("call-2", 2)])
    with pytest.raises(StreamConflict) as info:
        b.flush()
    assert info.value.call_id == "call-1"
    assert b.conflicted("call-1") and not b.conflicted("call-2")
    assert a.read_call("call-2") == [audio("call-2", 1), audio("call-2", 2)]  # kept
    assert a.read_call("call-1") == [audio("call-1", 1), audio("call-1", 2)]  # a's, unchanged
    with pytest.raises(StreamConflict):
        b.append([audio("call-1", 4)])
    b.append([audio("call-2", 3)])  # other calls go on
    b.flush()
    with pytest.raises(StreamConflict):
        b.flush("call-1")
    assert a.last_seq("call-2") == 3
    # append_now raises at once, and a's next seq succeeds.
    a.append_now([ev.SessionResumed(call_id="call-3", seq=1, at=T0)])
    with pytest.raises(StreamConflict):
        b.append_now([ev.SessionResumed(call_id="call-3", seq=1, at=T0 + 1)])
    assert b.conflicted("call-3")
    a.append_now([audio("call-1", 3)])
    assert a.last_seq("call-1") == 3


def test_conflict_sqlite(db: str, opened: Callable[..., EventStore]) -> None:
    _conflict(db, opened)


def test_conflict_postgresql(pg_store_url: str, opened: Callable[..., EventStore]) -> None:
    _conflict(pg_store_url, opened)


def test_group_commit_conflict_keeps_other_calls(
    db: str, opened: Callable[..., EventStore]
) -> None:
    a = opened(db, flush_interval=30)
    b = opened(db, flush_interval=0.02)
    a.append_now([audio("call-1", 1)])
    b.append([audio("call-1", 1), audio("call-9", 1)])
    deadline = time.monotonic() + 2.0
    while a.last_seq("call-9") < 1 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert b.conflicted("call-1")  # found by the flusher thread
    assert a.last_seq("call-9") == 1
    with pytest.raises(StreamConflict):
        b.flush()  # reported once by flush()
    b.flush()


# ------------------------------------------------------------------ reads and errors


def test_unknown_call(db: str, opened: Callable[..., EventStore]) -> None:
    store = opened(db)
    with pytest.raises(UnknownCall, match="nobody"):
        store.read_call("nobody")
    assert store.last_seq("nobody") == 0
    assert store.max_position() == 0
    assert list_calls(store) == []


@pytest.mark.parametrize(
    ("topic", "state", "problem"),
    [
        ("CallerAudio/v1", b"{not json", "corrupt"),
        ("Teleported/v1", b"{}", "unknown event type"),
        ("CallerAudio/v9", ev.encode(audio("call-z", 2)), "version 9"),
        ("CallerAudio/v1", ev.encode(audio("other", 2)), "other"),
    ],
)
def test_corrupt_row_raises_event_format_error(
    db: str, opened: Callable[..., EventStore], topic: str, state: bytes, problem: str
) -> None:
    store = opened(db)
    store.append([audio("call-z", 1)])
    store.flush()
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO stored_events VALUES (?, ?, ?, ?)", ("call-z", 2, topic, state))
    for read in (
        lambda: store.read_call("call-z"),
        lambda: store.read_all(),
        lambda: list_calls(store),
    ):
        with pytest.raises(ev.EventFormatError, match=problem) as info:
            read()
        assert "'call-z' seq 2" in str(info.value)
    assert store.read_all_raw()[1][1:] == (topic, state)  # nothing modified
    assert store.read_all(limit=1)[0][1] == audio("call-z", 1)


def test_list_calls(db: str, opened: Callable[..., EventStore]) -> None:
    store = opened(db)
    store.append(a_call("call-b"))
    store.append([audio("call-live", 1), audio("call-live", 2)])
    store.flush()
    assert list_calls(store) == [
        CallSummary(
            call_id="call-b",
            started_at_us=T0,
            ended_at_us=T0 + 9_000_000,
            events=7,
            outcome="done",
        ),
        CallSummary(
            call_id="call-live",
            started_at_us=T0 + 20_000,
            ended_at_us=T0 + 40_000,
            events=2,
            outcome="live",
        ),
    ]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://root@localhost/db", "unsupported store URL scheme 'mysql'"),
        ("postgresql://postgres@127.0.0.1:1/test", "cannot open store"),
        ("postgresql://postgres@127.0.0.1:5432/", "no database name"),
        ("postgresql://postgres@127.0.0.1/test?table=x;drop", "bad table"),
        ("postgresql://postgres@127.0.0.1/test?colour=red", "unknown URL parameter"),
    ],
)
def test_unopenable_url(url: str, message: str) -> None:
    with pytest.raises(StoreError, match=message) as info:
        open_store(url)
    assert "\n" not in str(info.value)


def test_unopenable_paths(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="is a directory"):
        open_store(str(tmp_path))
    junk = tmp_path / "notes.txt"
    junk.write_text("this is not a database, just some words")
    with pytest.raises(StoreError, match="not an SQLite database"):
        open_store(f"sqlite:///{junk}")
    with pytest.raises(StoreError, match="does not exist"):
        open_store(str(tmp_path / "missing" / "x.db"))
    with pytest.raises(StoreError, match="flush interval"):
        open_store(str(tmp_path / "ok.db"), flush_interval=0)


def test_password_not_shown(pg_url: str) -> None:
    with pytest.raises(StoreError) as info:
        open_store("postgresql://postgres:s3cret@127.0.0.1:1/test")
    assert "s3cret" not in str(info.value)


# ------------------------------------------------------------------ batch atomicity


def _row(seq: int, nbytes: int = 10) -> StoredEvent:
    return StoredEvent("c", seq, "CallerAudio/v1", b"x" * nbytes)


def _rows(sizes: list[int], nbytes: int = 10) -> list[list[StoredEvent]]:
    out, seq = [], 0
    for n in sizes:
        out.append([_row(seq + i + 1, nbytes) for i in range(n)])
        seq += n
    return out


def test_chunks_hold_whole_batches_by_rows() -> None:
    batches = _rows([2, 2, 1, 4, 2, 1, 1])
    chunks = chunk_batches(batches, max_rows=3, max_bytes=10_000)
    assert [[len(b) for b in c] for c in chunks] == [[2], [2, 1], [4], [2, 1], [1]]
    assert [b for c in chunks for b in c] == batches  # same batches, same order, none cut


def test_chunks_hold_whole_batches_by_bytes() -> None:
    batches = _rows([1, 2, 1, 1], nbytes=100)
    chunks = chunk_batches(batches, max_rows=1000, max_bytes=250)
    assert [[len(b) for b in c] for c in chunks] == [[1], [2], [1, 1]]
    big = _rows([50], nbytes=100)  # larger than both limits on its own: stays whole
    assert chunk_batches(big, max_rows=3, max_bytes=250) == [big]
    assert chunk_batches([], max_rows=3, max_bytes=250) == []


def _batches(call_id: str, sizes: list[int]) -> list[list[ev.Event]]:
    out, seq = [], 0
    for n in sizes:
        out.append([audio(call_id, seq + i + 1) for i in range(n)])
        seq += n
    return out


def test_postgresql_flush_commits_whole_batches(
    pg_store_url: str, opened: Callable[..., EventStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each append() is an input and its decisions: a transaction never splits one,
    so a crash between two transactions cannot leave an input without its decisions."""
    monkeypatch.setattr(writer_module, "_PG_CHUNK_ROWS", 3)
    store = opened(pg_store_url, flush_interval=30)
    batches = _batches("call-c", [2, 2, 1, 4, 2, 1])
    ends = {0} | {b[-1].seq for b in batches}
    insert = store._recorder.insert_events
    transactions: list[list[int]] = []
    fail_at = {2}  # the 2nd transaction fails once (a lost connection, say)

    def spy(rows: list[StoredEvent], **kw: object) -> object:
        transactions.append([r.originator_version for r in rows])
        if len(transactions) in fail_at:
            fail_at.clear()
            raise OSError("connection lost")
        return insert(rows, **kw)

    monkeypatch.setattr(store._recorder, "insert_events", spy)
    for b in batches:
        store.append(b)
    with pytest.raises(StoreError, match="connection lost"):
        store.flush()
    assert store.last_seq("call-c") == 2  # the first batch only: a batch boundary
    store.flush()  # the rest, retried
    assert store.read_call("call-c") == [e for b in batches for e in b]
    assert len(transactions) > 3
    for seqs in transactions:
        assert seqs[0] - 1 in ends and seqs[-1] in ends, transactions
    assert [6, 7, 8, 9] in transactions  # the 4-event batch stayed whole


# ------------------------------------------------------------------ state not bytes


@pytest.mark.parametrize(("value", "kind"), [("'text'", "str"), ("NULL", "NULL")])
def test_state_not_a_blob_raises_event_format_error(
    db: str, opened: Callable[..., EventStore], value: str, kind: str
) -> None:
    store = opened(db)
    store.append(a_call("call-t"))
    store.flush()
    with sqlite3.connect(db) as conn:
        conn.execute(f"UPDATE stored_events SET state = {value} WHERE originator_version = 7")
    for read in (
        lambda: store.read_call("call-t"),
        lambda: store.read_all(),
        lambda: list_calls(store),
    ):
        with pytest.raises(ev.EventFormatError) as info:
            read()
        assert str(info.value) == f"call 'call-t' seq 7: stored state is {kind}, not bytes"


@pytest.mark.parametrize("value", ["'text'", "NULL"])
def test_cli_reports_state_not_a_blob_in_one_line(tmp_path: Path, value: str) -> None:
    from typer.testing import CliRunner

    from fastagent.cli import app

    db = str(tmp_path / "calls.db")
    with open_store(db) as store:
        store.append(a_call("call-t"))
    with sqlite3.connect(db) as conn:
        conn.execute(f"UPDATE stored_events SET state = {value} WHERE originator_version = 1")
    out = str(tmp_path / "out.jsonl")
    for args in (
        ["replay", "call-t", "--store", db],
        ["export", "call-t", "-o", out, "--store", db],
        ["calls", "--store", db],
    ):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert result.exception is None or isinstance(result.exception, SystemExit)
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and "call 'call-t' seq 1: stored state" in lines[0], lines
        assert "Traceback" not in result.output


# ------------------------------------------------------------------ checkpoints


def _raw(url: str, kind: str, statements: list[str]) -> list[tuple[object, ...]]:
    """Run SQL on the store's database directly (as an older FastAgent left it)."""
    if kind == "sqlite":
        with sqlite3.connect(url) as con:
            out = [tuple(r) for s in statements for r in con.execute(s).fetchall()]
        con.close()
        return out
    base, _, query = url.partition("?")
    schema = query.removeprefix("schema=")
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        out = []
        for s in statements:
            cur = conn.execute(s)
            out += [tuple(r) for r in cur.fetchall()] if cur.description else []
        return out


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_checkpoints_survive_the_rename_from_snapshots(
    kind: str, request: pytest.FixtureRequest, opened: Callable[..., EventStore]
) -> None:
    """A store written when checkpoints were called snapshots keeps them: the first
    use moves the rows of ``<table>_snapshots`` into ``<table>_checkpoints`` (the
    newer of two wins) and drops the old table; doing it again changes nothing."""
    url = request.getfixturevalue("db" if kind == "sqlite" else "pg_store_url")
    tables = (
        "SELECT name FROM sqlite_master WHERE type = 'table' AND (name LIKE '%point%' "
        "OR name LIKE '%snap%') ORDER BY name"
        if kind == "sqlite"
        else "SELECT table_name FROM information_schema.tables WHERE table_schema = "
        "current_schema() AND (table_name LIKE '%point%' OR table_name LIKE '%snap%') "
        "ORDER BY table_name"
    )
    t = "stored_events" if kind == "sqlite" else "fastagent_events"
    s = opened(url)
    s.append([audio("a", 1), audio("b", 1)])
    s.checkpoints.write("a", 1, b"state of a")
    s.checkpoints.write("b", 1, b"b at 1")
    s.close()
    # As an older FastAgent left it: the table under its old name, and a newer
    # "b" in it than what a rolling upgrade already wrote under the new name.
    _raw(
        url,
        kind,
        [
            f"ALTER TABLE {t}_checkpoints RENAME TO {t}_snapshots",
            f"CREATE TABLE {t}_checkpoints (call_id TEXT PRIMARY KEY, "
            f"seq BIGINT NOT NULL, data {'BLOB' if kind == 'sqlite' else 'BYTEA'} NOT NULL)",
            f"INSERT INTO {t}_checkpoints SELECT * FROM {t}_snapshots WHERE call_id = 'b'",
            f"UPDATE {t}_snapshots SET seq = 5 WHERE call_id = 'b'",
        ],
    )
    assert _raw(url, kind, [tables]) == [
        (f"{t}_checkpoints",),
        (f"{t}_snapshots",),
    ]
    s = opened(url)
    assert s.checkpoints.read("a") == (1, b"state of a")
    assert s.checkpoints.read("b") == (5, b"b at 1")
    assert _raw(url, kind, [tables]) == [(f"{t}_checkpoints",)]
    s.close()
    s = opened(url)  # idempotent
    assert s.checkpoints.read("a") == (1, b"state of a")
    assert _raw(url, kind, [tables]) == [(f"{t}_checkpoints",)]


# The side tables' columns, as stores already written hold them: (name, type, not null).
SIDE_COLUMNS = {
    "keys": [
        ("call_id", "TEXT", True),
        ("master_id", "TEXT", True),
        ("wrapped", "BLOB", False),
        ("created_us", "BIGINT", True),
        ("forgotten_us", "BIGINT", False),
        ("forgotten_by", "TEXT", False),
    ],
    "audit": [
        ("id", "INTEGER", True),
        ("at_us", "BIGINT", True),
        ("who", "TEXT", True),
        ("action", "TEXT", True),
        ("call_id", "TEXT", True),
        ("detail", "TEXT", True),
    ],
    "checkpoints": [("call_id", "TEXT", True), ("seq", "BIGINT", True), ("data", "BLOB", True)],
}


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_side_tables_keep_their_stored_format(
    kind: str,
    request: pytest.FixtureRequest,
    opened: Callable[..., EventStore],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """keys, audit and checkpoints: the same columns and rows on both databases (a
    store written before they had their own modules opens unchanged); a sealed
    checkpoint is b"FAS1" + nonce + ciphertext; forgetting empties the key, drops
    the checkpoint and appends the audit line."""
    from fastagent import privacy

    monkeypatch.setenv(privacy.ENV_KEY, privacy.new_key_text())
    url = request.getfixturevalue("db" if kind == "sqlite" else "pg_store_url")
    t = "stored_events" if kind == "sqlite" else "fastagent_events"
    s = opened(url)
    s.append([audio("c", 1)])
    s.flush()
    s.checkpoints.write("c", 1, b"state")
    s.audit.record("cli:test", "timeline", "c", "detail")
    [(blob,)] = _raw(url, kind, [f"SELECT data FROM {t}_checkpoints"])
    assert bytes(blob).startswith(b"FAS1") and b"state" not in bytes(blob)
    assert s.forget("c", "cli:test", at_us=T0) == T0
    pg_types = {"text": "TEXT", "bytea": "BLOB", "bigint": "BIGINT"}
    for side, expected in SIDE_COLUMNS.items():
        if kind == "sqlite":
            rows = _raw(url, kind, [f"PRAGMA table_info({t}_{side})"])
            got = [(r[1], r[2], bool(r[3]) or bool(r[5])) for r in rows]
        else:
            rows = _raw(
                url,
                kind,
                [
                    "SELECT column_name, data_type, is_nullable FROM information_schema.columns "
                    f"WHERE table_schema = current_schema() AND table_name = '{t}_{side}' "
                    "ORDER BY ordinal_position"
                ],
            )
            got = [(str(r[0]), pg_types[str(r[1])], r[2] == "NO") for r in rows]
            expected = [(n, "BIGINT" if n == "id" else ty, nn) for n, ty, nn in expected]
        assert got == expected, side
    keys = _raw(url, kind, [f"SELECT master_id, wrapped, forgotten_us, forgotten_by FROM {t}_keys"])
    assert keys == [("", None, T0, "cli:test")]
    audit = _raw(url, kind, [f"SELECT who, action, call_id, detail FROM {t}_audit ORDER BY id"])
    assert audit == [("cli:test", "timeline", "c", "detail"), ("cli:test", "forget", "c", "")]
    assert _raw(url, kind, [f"SELECT call_id FROM {t}_checkpoints"]) == []
    assert [(a.action, a.who) for a in s.audit.read("c")] == [
        ("timeline", "cli:test"),
        ("forget", "cli:test"),
    ]
