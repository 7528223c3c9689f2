"""``fastagent sync | sql | report | export-parquet``: decision-trail analytics commands.

The lead's ``fastagent/cli.py`` calls :func:`register`.  Every command reports
bad input (store that cannot be opened, query error) in one line on stderr and
exits with code 2.

DuckDB, pyarrow and numpy (through :mod:`projections.analytics`) are imported by
the commands that use them, not by this module: every ``fastagent`` command loads
it, and ``fastagent serve`` would otherwise carry them (~66 MB resident) for
nothing (tests/test_cli_imports.py).
"""

from __future__ import annotations

import csv
import io
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
import typer

from fastagent.cli_common import StoreOpt

if TYPE_CHECKING:
    import pyarrow as pa

    from projections import analytics

# Log positions per sync transaction: projections.analytics.DEFAULT_BATCH, written
# out here so that defining the command imports no DuckDB (a test keeps them equal).
DEFAULT_BATCH = 500_000

FORMATS = ("table", "csv", "json", "parquet")

# The report: (title, query) per section, all over views of projections/*.sql.
REPORT_SECTIONS: list[tuple[str, str]] = [
    ("Outcomes", "SELECT * FROM outcomes"),
    ("FSA funnel", "SELECT * FROM fsa_funnel"),
    ("Tool error rates", "SELECT * FROM tool_error_rates"),
    ("Model failures", "SELECT * FROM model_failure_counts"),
    (
        "Response latency (caller stops speaking -> first bot audio)",
        "SELECT * FROM latency_percentiles",
    ),
    (
        "Token usage",
        "SELECT count(*) AS responses, sum(input_tokens) AS input_tokens, "
        "sum(output_tokens) AS output_tokens, sum(total_tokens) AS total_tokens, "
        "sum(cached_tokens) AS cached_tokens FROM token_usage",
    ),
    ("Cost by model API (estimate at list prices, USD)", "SELECT * FROM model_cost"),
    ("Response latency by model API", "SELECT * FROM latency_by_api"),
    (
        "Barge-ins",
        "SELECT count(*) AS barge_ins, count(DISTINCT call_id) AS calls_with_barge_in, "
        "round(avg(played_ms), 0) AS avg_played_ms FROM barge_ins",
    ),
    ("Skipped events", "SELECT * FROM sync_skipped ORDER BY topic, reason"),
]

DbOpt = Annotated[
    str | None,
    typer.Option(
        "--db",
        envvar="FASTAGENT_ANALYTICS",
        metavar="FILE",
        help="The analytics DuckDB file (default ./fastagent-analytics.duckdb)",
        show_default=False,
    ),
]
NoSyncOpt = Annotated[
    bool, typer.Option("--no-sync", help="Query the analytics file as it is, without syncing")
]
FormatOpt = Annotated[
    str,
    typer.Option("--format", "-f", metavar="table|csv|json|parquet", help="Output format"),
]
OutOpt = Annotated[
    Path | None,
    typer.Option("--output", "-o", metavar="FILE", help="Write to this file (stdout if not given)"),
]


def _fail(message: str) -> typer.Exit:
    typer.echo(f"fastagent: {message}", err=True)
    return typer.Exit(2)


def _duck_message(exc: BaseException) -> str:
    """DuckDB's message in one line (it adds a LINE/caret block and hints on new lines)."""
    lines = [ln.strip() for ln in str(exc).splitlines()]
    kept: list[str] = []
    for ln in lines:
        if ln.startswith("LINE ") or set(ln) <= {"^", " "}:
            break
        if ln:
            kept.append(ln)
    return " ".join(kept) or type(exc).__name__


@contextmanager
def _clear_errors() -> Iterator[None]:
    import duckdb

    from fastagent.store import StoreError
    from projections import analytics
    from projections.analytics import AnalyticsError

    try:
        yield
    except BrokenPipeError:
        raise  # stdout's reader went away: main() ends quietly, this is no error
    except (AnalyticsError, StoreError) as exc:
        raise _fail(analytics.one_line(exc)) from None
    except duckdb.Error as exc:
        raise _fail(_duck_message(exc)) from None
    except OSError as exc:
        raise _fail(analytics.one_line(exc)) from None


def _answer(
    sections: Any, store: str | None, db: str | None, fmt: str, output: Any, no_sync: bool
) -> None:
    """Sync (unless told not to), run the queries, print or write them in ``fmt``."""
    from projections.analytics import AnalyticsError

    with _clear_errors():
        if fmt not in FORMATS:
            raise AnalyticsError(f"unknown format {fmt!r} (use {', '.join(FORMATS)})")
        if not no_sync:
            run_sync(store, db)
        _write(_query(db, sections), fmt, output)


def run_sync(
    store: str | None, db: str | None, *, batch: int = DEFAULT_BATCH, quiet: bool = False
) -> analytics.SyncResult:
    """Sync with a progress bar on stderr (when it is a terminal and the sync is large)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from projections import analytics

    console = Console(stderr=True)
    with analytics.opened(store, db) as (source, con):
        start, target = analytics.applied_position(con), source.max_position()
        show = not quiet and console.is_terminal and target - start > batch
        with Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
            disable=not show,
        ) as bar:
            task = bar.add_task("sync", total=max(0, target - start))

            def progress(begin: int, position: int, end: int) -> None:
                bar.update(task, completed=position - begin)

            result = analytics.sync(source, con, batch_size=batch, progress=progress)
    if not quiet:
        for line in result.skipped_lines():
            typer.echo(f"fastagent: {line}", err=True)
    return result


def _rows(table: pa.Table) -> list[dict[str, Any]]:
    return table.to_pylist()


def _write(tables: list[tuple[str, pa.Table]], fmt: str, out: Path | None) -> None:
    """Print or write result tables in the chosen format."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from projections.analytics import AnalyticsError

    if fmt not in FORMATS:
        raise AnalyticsError(f"unknown format {fmt!r} (use {', '.join(FORMATS)})")
    if fmt == "parquet":
        if out is None:
            raise AnalyticsError("--format parquet needs -o FILE (or a directory for report)")
        if len(tables) == 1 and not tables[0][0]:
            pq.write_table(tables[0][1], out)
            return
        out.mkdir(parents=True, exist_ok=True)
        for title, t in tables:
            pq.write_table(t, out / f"{_slug(title)}.parquet")
        return
    buf = io.StringIO()
    if fmt == "json":
        if len(tables) == 1 and not tables[0][0]:
            data: Any = _rows(tables[0][1])
        else:
            data = {_slug(title): _rows(t) for title, t in tables}
        buf.write(msgspec.json.format(msgspec.json.encode(data, enc_hook=str), indent=2).decode())
        buf.write("\n")
    elif fmt == "csv":
        for i, (title, t) in enumerate(tables):
            if title:
                buf.write(("\n" if i else "") + f"# {title}\n")
            w = csv.writer(buf, lineterminator="\n")
            w.writerow(t.column_names)
            for row in _rows(t):
                w.writerow(["" if v is None else v for v in row.values()])
    else:
        from rich.console import Console
        from rich.table import Table

        console = Console(file=buf, width=max(100, _terminal_width()), no_color=out is not None)
        for title, t in tables:
            rt = Table(title=title or None, title_justify="left")
            for name in t.column_names:
                numeric = (
                    pa.types.is_integer(t.schema.field(name).type)
                    or pa.types.is_floating(t.schema.field(name).type)
                    or pa.types.is_decimal(t.schema.field(name).type)
                )
                rt.add_column(name, justify="right" if numeric else "left")
            for row in _rows(t):
                rt.add_row(*("" if v is None else str(v) for v in row.values()))
            console.print(rt)
    if out is None:
        sys.stdout.write(buf.getvalue())
    else:
        out.write_text(buf.getvalue(), encoding="utf-8")


def _terminal_width() -> int:
    try:
        return os.get_terminal_size().columns
    except OSError:
        return 120


def _slug(title: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in title.lower()).strip("_").split("__")[0]


def _query(db: str | None, sqls: list[tuple[str, str]]) -> list[tuple[str, pa.Table]]:
    """Run queries on a read-only connection (a query cannot change the projection)."""
    import pyarrow as pa

    from projections import analytics
    from projections.analytics import AnalyticsError

    path = db or analytics.default_db_path()
    if not os.path.exists(path):
        raise AnalyticsError(f"no analytics database at {path}: run fastagent sync first")
    con = analytics.open_analytics(path, read_only=True)
    try:
        out = []
        for title, sql in sqls:
            rel = con.sql(sql)
            out.append((title, rel.to_arrow_table() if rel is not None else pa.table({})))
        return out
    finally:
        con.close()


TURN_STAGES_TITLE = (
    "Turn latency by agent, ms (vad: end of speech -> speech_stopped; response: "
    "-> response.created; first_audio: -> first audio delta; to_caller: -> first "
    "playStream.chunk; total: end of speech -> first chunk)"
)


def turn_sections(store: str | None) -> list[tuple[str, pa.Table]]:
    """Per-turn latency stages and cost (projections/latency.py), per agent and per
    call, folded from the store's log ($FASTAGENT_PRICES for the prices).  Reads
    every call's events once (audio boundaries place the caller's end of speech),
    which the columnar analytics tables do not keep."""
    import pyarrow as pa

    from fastagent.store import open_store
    from projections import latency
    from projections.analytics import AnalyticsError
    from projections.calls import list_calls

    try:
        prices = latency.Prices.from_env()
    except ValueError as exc:
        raise AnalyticsError(f"FASTAGENT_PRICES: {exc}") from None
    with open_store(store) as s:
        calls = [latency.call_latency(s.read_call(c.call_id), prices) for c in list_calls(s)]

    def table(rows: list[dict[str, Any]], columns: list[str]) -> pa.Table:
        return pa.table({c: [r[c] for r in rows] for c in columns})

    agent_cols = ["agent", "stage", "turns", "p50_ms", "p95_ms", "calls", "cost_usd"]
    call_cols = ["call_id", "agent", "turns", "p50_ms", "p95_ms", "responses", "cost_usd"]
    return [
        (TURN_STAGES_TITLE, table(latency.per_agent_rows(calls), agent_cols)),
        (
            "Turn latency and cost per call (end of speech -> first playStream.chunk)",
            table(latency.per_call_rows(calls), call_cols),
        ),
    ]


def register(app: typer.Typer) -> None:
    """Add the analytics commands to the ``fastagent`` app."""

    @app.command("sync")
    def sync_cmd(
        store: StoreOpt = None,
        db: DbOpt = None,
        batch: Annotated[
            int, typer.Option(min=1, metavar="N", help="Log positions per transaction")
        ] = DEFAULT_BATCH,
        rebuild: Annotated[
            bool, typer.Option("--rebuild", help="Delete the analytics file and sync from scratch")
        ] = False,
    ) -> None:
        """Apply new events of the store's log to the analytics DuckDB file."""
        from projections import analytics

        with _clear_errors():
            path = db or analytics.default_db_path()
            if rebuild and os.path.exists(path):
                analytics.open_source(store).close()  # check the store before deleting
                for p in (path, path + ".wal"):
                    if os.path.exists(p):
                        os.remove(p)
            res = run_sync(store, db, batch=batch)
        rate = f" ({res.read / res.seconds:,.0f} ev/s)" if res.read and res.seconds else ""
        typer.echo(
            f"synced {res.read:,} events ({res.applied:,} applied) in {res.seconds:.2f} s{rate}; "
            f"log position {res.position}",
            err=True,
        )

    @app.command("sql")
    def sql_cmd(
        query: Annotated[str, typer.Argument(help="SQL over the analytics tables and views")],
        store: StoreOpt = None,
        db: DbOpt = None,
        fmt: FormatOpt = "table",
        output: OutOpt = None,
        no_sync: NoSyncOpt = False,
    ) -> None:
        """Run a SQL query on the analytics database (syncs first unless --no-sync)."""
        _answer([("", query)], store, db, fmt, output, no_sync)

    @app.command("report")
    def report_cmd(
        store: StoreOpt = None,
        db: DbOpt = None,
        fmt: FormatOpt = "table",
        output: OutOpt = None,
        no_sync: NoSyncOpt = False,
    ) -> None:
        """Outcomes, FSA funnel, tool error rates, latency percentiles, tokens, barge-ins,
        per-turn latency stages and cost per agent and per call."""
        from projections.analytics import AnalyticsError

        with _clear_errors():
            if fmt not in FORMATS:
                raise AnalyticsError(f"unknown format {fmt!r} (use {', '.join(FORMATS)})")
            if not no_sync:
                run_sync(store, db)
            _write(_query(db, REPORT_SECTIONS) + turn_sections(store), fmt, output)

    @app.command("export-parquet")
    def export_cmd(
        directory: Annotated[
            Path, typer.Argument(help="Directory for one .parquet per table/view")
        ],
        store: StoreOpt = None,
        db: DbOpt = None,
        no_sync: NoSyncOpt = False,
    ) -> None:
        """Write every analytics table and view as Parquet files into DIRECTORY."""
        with _clear_errors():
            if not no_sync:
                run_sync(store, db)
            n = export_parquet(db, directory)
        typer.echo(f"wrote {n} parquet files to {directory}", err=True)


def export_parquet(db: str | None, directory: Path) -> int:
    """Each table and view of the analytics database as ``DIRECTORY/<name>.parquet``."""
    from projections import analytics
    from projections.analytics import AnalyticsError

    path = db or analytics.default_db_path()
    if not os.path.exists(path):
        raise AnalyticsError(f"no analytics database at {path}: run fastagent sync first")
    directory.mkdir(parents=True, exist_ok=True)
    con = analytics.open_analytics(path, read_only=True)
    try:
        names = [
            r[0]
            for r in con.execute(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = 'main' ORDER BY table_name"
            ).fetchall()
        ]
        for name in names:
            target = str(directory / f"{name}.parquet").replace("'", "''")
            con.execute(f"COPY (SELECT * FROM \"{name}\") TO '{target}' (FORMAT parquet)")
    finally:
        con.close()
    return len(names)
