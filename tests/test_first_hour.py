"""What a new user meets in the first hour: pipes, missing stores, help, the demo.

Commands run as a user runs them: ``python -m fastagent`` in a subprocess where
the behaviour depends on real file descriptors (closed pipes), the typer runner
elsewhere.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from fastagent import events as ev
from fastagent.call_printer import CallPrinter, heard_part
from fastagent.cli import app
from fastagent.store import StoreError, open_store
from projections.calls import list_calls

runner = CliRunner()
ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ROOT / "fastagent" / "examples" / "scenarios"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(os.environ):
        if key.startswith("FASTAGENT_"):
            monkeypatch.delenv(key)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTAGENT_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update(extra)
    return env


def _one_line(result: Any, needle: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("fastagent: ") and needle in lines[0], lines[0]


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """One demo call (default agent) in a fresh store: (store path, call id)."""
    store = str(tmp_path_factory.mktemp("demo") / "demo.db")
    result = runner.invoke(app, ["demo", "--store", store])
    assert result.exit_code == 0, result.output
    call_id = result.output.split("call id:")[1].split()[0]
    return store, call_id


# ---------------------------------------------------------------- closed pipes


def _closed_pipe_run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[bytes]:
    """Run ``fastagent ARGS`` with stdout a pipe whose reader is already gone."""
    read, write = os.pipe()
    os.close(read)
    try:
        return subprocess.run(
            [sys.executable, "-m", "fastagent", *args],
            stdout=write,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=_env(),
            timeout=120,
        )
    finally:
        os.close(write)


def test_every_command_ends_quietly_on_a_closed_pipe(
    tmp_path: Path, demo_store: tuple[str, str]
) -> None:
    store, call_id = demo_store
    recording = tmp_path / "call.jsonl"
    assert (
        runner.invoke(app, ["export", call_id, "-o", str(recording), "--store", store]).exit_code
        == 0
    )
    commands = [
        ["--help"],
        ["--version"],
        ["calls", "--store", store],
        ["calls", "--json", "--store", store],
        ["replay", call_id, "--store", store],
        ["replay", "--file", str(recording), "--store", store],  # sealed: opens with its store
        ["fsa", "list"],
        ["fsa", "diagram", "banking"],
        ["report", "--store", store, "--db", str(tmp_path / "a.duckdb")],
        ["demo", "--store", str(tmp_path / "d.db")],
    ]
    for args in commands:
        done = _closed_pipe_run(args, tmp_path)
        assert done.returncode == 141, (args, done.stderr.decode())
        assert done.stderr == b"", (args, done.stderr.decode())


def test_demo_piped_to_head_ends_at_once(tmp_path: Path) -> None:
    """`fastagent demo | head -3`: the reader leaves mid-call; the command ends."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "fastagent", "demo", "--agent", "banking"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
        env=_env(FASTAGENT_STORE=str(tmp_path / "s.db"), FASTAGENT_DATA_DIR=str(tmp_path)),
    )
    assert proc.stdout is not None and proc.stderr is not None
    lines = [proc.stdout.readline() for _ in range(3)]
    assert lines[0].startswith(b"Demo call with agent banking")
    proc.stdout.close()  # what `head -3` does after its third line
    try:
        code = proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError("fastagent demo kept running after its reader left") from None
    assert code == 141
    assert proc.stderr.read() == b""
    # The simulated caller hangs up (session.end) before the command ends; that the
    # service recorded the end is not asserted: on a loaded machine it may not have
    # finished within the demo's 5 s wait.


# --------------------------------------------------------------- missing stores


def test_read_commands_refuse_a_missing_store_and_create_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "typo.db"
    for args in (
        ["calls"],
        ["calls", "--json"],
        ["replay", "some-call"],
        ["export", "some-call", "-o", str(tmp_path / "x.jsonl")],
        ["report"],
        ["sql", "SELECT 1"],
        ["sync"],
        ["export-parquet", str(tmp_path / "pq")],
    ):
        result = runner.invoke(app, [*args, "--store", str(missing)])
        _one_line(result, f"no store at {missing}")
        assert not missing.exists(), args
    assert not (tmp_path / "x.jsonl").exists()


def test_a_file_that_is_not_a_store_is_refused(tmp_path: Path) -> None:
    import sqlite3

    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.commit()
    _one_line(runner.invoke(app, ["calls", "--store", str(other)]), "no 'stored_events' table")
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    _one_line(runner.invoke(app, ["calls", "--store", str(empty)]), "no store at")
    assert empty.read_bytes() == b""  # untouched


def test_a_missing_postgresql_store_is_refused_without_creating_it() -> None:
    psycopg = pytest.importorskip("psycopg")
    table = f"fa_missing_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    url = f"postgresql://postgres@127.0.0.1:5432/test?table={table}"
    try:
        psycopg.connect("host=127.0.0.1 dbname=test user=postgres", connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        pytest.skip(f"no PostgreSQL at 127.0.0.1:5432: {exc}")
    with pytest.raises(StoreError, match=f"no store at .*no table public.{table}"):
        open_store(url, create=False)
    _one_line(runner.invoke(app, ["calls", "--store", url]), "no store at")
    with psycopg.connect("host=127.0.0.1 dbname=test user=postgres") as conn:
        (found,) = conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()  # type: ignore[misc]
    assert found is None


# -------------------------------------------------------------- bad settings


@pytest.mark.parametrize(
    ("name", "value"),
    [("FASTAGENT_FLUSH_MS", "abc"), ("FASTAGENT_FLUSH_MS", "0"), ("FASTAGENT_GRACE_S", "-1")],
)
def test_demo_with_a_bad_setting_is_one_line(tmp_path: Path, name: str, value: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "fastagent", "demo", "--store", str(tmp_path / "d.db")],
        capture_output=True,
        cwd=tmp_path,
        env=_env(**{name: value}),
        timeout=120,
    )
    assert done.returncode == 2, done.stderr.decode()
    err = done.stderr.decode().strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fastagent: ") and name in err[0], err
    assert b"Traceback" not in done.stderr


# -------------------------------------------------------------- help, version


def test_version() -> None:
    from importlib.metadata import version

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"fastagent {version('fastagent')}"


def _all_commands() -> list[list[str]]:
    import typer.main

    root = typer.main.get_command(app)
    out: list[list[str]] = [[]]
    for name, cmd in root.commands.items():  # type: ignore[attr-defined]
        out.append([name])
        for sub in getattr(cmd, "commands", {}):
            out.append([name, sub])
    return out


def test_help_reads_well_for_every_command() -> None:
    placeholders = re.compile(r"<(bool|str|text|int|float|path|int range|float range)>")
    commands = _all_commands()
    assert ["demo"] in commands and ["fsa", "list"] in commands
    for path in commands:
        result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
        assert result.exit_code == 0, (path, result.output)
        assert not placeholders.search(result.output), (path, result.output)
        assert "[env var: FASTAGENT_STORE]" in result.output or "--store" not in result.output
    grace = runner.invoke(app, ["serve", "--help"], env={"COLUMNS": "200"}).output
    assert "FASTAGENT_GRACE_S" in grace and "[default: 30]" in grace and "SECONDS" in grace
    calls = runner.invoke(app, ["calls", "--help"], env={"COLUMNS": "200"}).output
    assert "--json" in calls and "Machine-readable" in calls


def test_serve_warns_without_an_openai_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fastagent import lifecycle, service

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setattr(lifecycle, "run", lambda *a, **k: None)
    monkeypatch.setattr(service, "tune_gc", lambda: None)
    result = runner.invoke(app, ["serve", "--no-auth", "--store", str(tmp_path / "s.db")])
    assert result.exit_code == 0, result.output
    assert "no OPENAI_API_KEY" in result.output
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    result = runner.invoke(app, ["serve", "--no-auth", "--store", str(tmp_path / "s.db")])
    assert "OPENAI_API_KEY" not in result.output


# ---------------------------------------------------------------- the demo


def test_demo_output_ends_with_a_summary_and_next_commands(demo_store: tuple[str, str]) -> None:
    store, call_id = demo_store
    result = runner.invoke(app, ["demo", "--store", store])
    out = result.output
    assert result.exit_code == 0, out
    assert "\x1b[" not in out  # not a terminal: plain text
    summary = out[out.index("call id:") :]
    assert "outcome:   completed" in summary
    assert re.search(r"duration:  \d+\.\d s", summary)
    assert f"stored in: {store}" in summary
    for cmd in ("replay", "calls", "report"):
        assert f"fastagent {cmd} " in summary
    assert "-> identify" not in out and "identify -> identify" not in out


def test_explicit_agent_wins_over_the_scenarios(tmp_path: Path) -> None:
    from fastagent.service_cli import DemoPlan

    banking = SCENARIOS / "banking.json"
    plan = DemoPlan(None, banking, str(tmp_path / "s.db"))
    assert (plan.agent, plan.mismatch) == ("banking", "")
    plan = DemoPlan("retail", banking, str(tmp_path / "s.db"))
    assert (plan.agent, plan.mismatch) == ("retail", "banking")
    assert plan.config.agent == "retail"
    plan = DemoPlan("healthcare", None, str(tmp_path / "s.db"))
    assert plan.agent == "healthcare" and plan.scenario.agent == "healthcare"


def test_printer_shows_what_the_caller_heard_of_a_cut_sentence() -> None:
    assert heard_part("one two three four", 500, 1000) == "one two"
    assert heard_part("one two three four", 1000, 1000) == "one two three four"
    assert heard_part("one two three four", 10, 1000) == "one"
    assert heard_part("one two", 10, 0) == "one two"
    lines: list[str] = []
    p = CallPrinter(write=lambda t: lines.append(str(t)))
    base: dict[str, Any] = {"call_id": "c", "at": 0}
    for i in range(10):
        p(
            ev.BotAudio(
                seq=i + 1,
                response_id="r",
                item_id="it",
                chunk=i,
                nbytes=800,
                duration_us=100_000,
                fmt="audio/pcmu",
                **base,
            )
        )
    p(ev.TruncateRequested(seq=20, item_id="it", audio_end_ms=400, **base))
    p(
        ev.Transcript(
            seq=21,
            role="assistant",
            item_id="it",
            text="We are open every day from eight to eight",
            **base,
        )
    )
    assert "cut the bot off at 400 ms" in lines[0]
    assert lines[1].startswith("  bot: We are open …")  # 9 words, 40 % heard
    assert "heard 400 of 1000 ms" in lines[1]
    step = ev.FsaTransition(
        seq=30, fsa="f", source="a", target="a", trigger="t", reason="calling x", **base
    )
    assert p.line(step) is None
    refused = ev.FsaTransition(
        seq=31, fsa="f", source="a", target="a", trigger="t", guard="invalid", **base
    )
    assert "stays in a" in str(p.line(refused))


# ------------------------------------------------- agents by import path, tools


AGENT_MODULE = textwrap.dedent(
    """
    import sys
    from fastagent.agent import Agent, McpServer

    AGENT = Agent(
        name="pizza",
        instructions="Look customers up.",
        servers=(McpServer(name="lookup", command=(sys.executable, "-m",
                 "fastagent.examples.backends.bank")),),
        tools=("find_customer",),
        scenario="pizza.json",
    )
    """
)

SCENARIO = {
    "name": "pizza-lookup",
    "agent": "pizza",
    "greeting": [{"say": "Hello."}],
    "turns": [
        {
            "caller": "I am customer one two three four five six",
            "model": [
                {
                    "call": "find_customer",
                    "args": {"customer_id": "123456"},
                    "expect_output": "Ada",
                },
                {"say": "Found you."},
                {"call": "end_call", "args": {"reason": "done"}},
                {"say": "Bye."},
            ],
        }
    ],
}


def test_agent_by_import_path_gets_its_tool_servers(tmp_path: Path) -> None:
    mod = f"pizza_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{mod}.py").write_text(AGENT_MODULE)
    (tmp_path / "pizza.json").write_text(json.dumps(SCENARIO))
    store = str(tmp_path / "s.db")
    # A subprocess, as a user runs it (the MCP server's stderr must be a real file).
    env = _env(FASTAGENT_DATA_DIR=str(tmp_path))
    env["PYTHONPATH"] += os.pathsep + str(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "fastagent", "demo", "--agent", f"{mod}:AGENT", "--store", store],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stderr == "", done.stderr  # no "tools unavailable", no scenario problem
    assert "note:" not in done.stdout  # the scenario names the agent by its Agent.name
    assert "find_customer" in done.stdout and "via lookup" in done.stdout
    call_id = done.stdout.split("call id:")[1].split()[0]
    with open_store(store, create=False) as s:
        events = s.read_call(call_id)
    listed = [e for e in events if isinstance(e, ev.ToolsListed)]
    assert [e.server for e in listed] == ["lookup"]
    [dispatched] = [
        e for e in events if isinstance(e, ev.FunctionCallDispatched) and e.name == "find_customer"
    ]
    assert dispatched.server == "lookup"
    [done] = [e for e in events if isinstance(e, ev.ToolResult)]
    assert done.ok and "Ada" in done.output
    # The engine's own tool (end_call) is answered by the core: not 'pending'.
    sql = runner.invoke(
        app,
        [
            "sql",
            "SELECT name, status FROM tool_calls ORDER BY name",
            "--store",
            store,
            "--db",
            str(tmp_path / "a.duckdb"),
            "--format",
            "json",
        ],
    )
    assert sql.exit_code == 0, sql.output
    rows = json.loads(sql.output)
    assert {r["name"]: r["status"] for r in rows} == {"end_call": "ok", "find_customer": "ok"}
    rates = runner.invoke(
        app,
        [
            "sql",
            "SELECT name, calls, pending FROM tool_error_rates ORDER BY name",
            "--store",
            store,
            "--db",
            str(tmp_path / "a.duckdb"),
            "--format",
            "json",
            "--no-sync",
        ],
    )
    assert json.loads(rates.output) == [
        {"name": "end_call", "calls": 1, "pending": 0},
        {"name": "find_customer", "calls": 1, "pending": 0},
    ]


def test_license_file_matches_the_package_metadata() -> None:
    import tomllib

    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert meta["project"]["license"] == {"text": "Apache-2.0"}
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text  # the full text, not a pointer to it


# ----------------------------------------------------------- fastagent call URL


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _fastagent(*args: str) -> tuple[int, str, str]:
    import asyncio

    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "fastagent",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_env(),
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.anyio
async def test_call_checks_a_running_service(tmp_path: Path) -> None:
    from fastagent.service import ServiceConfig
    from fastagent.service_cli import running_service
    from fastagent.testing.caller import DEFAULT_PACE
    from fastagent.testing.fake_realtime import FakeRealtimeServer
    from fastagent.testing.scenario import load_scenario

    scenario = load_scenario(SCENARIOS / "default.json")
    speed = 1 / DEFAULT_PACE
    async with FakeRealtimeServer(scenario) as fake:
        config = ServiceConfig(
            store=str(tmp_path / "s.db"),
            token="tok",
            realtime_url=fake.url,
            api_key="x",
            playback_speed=speed,
        )
        async with running_service(config) as (_, url):
            code, out, err = await _fastagent("call", url, "--token", "tok", "--speed", str(speed))
            assert code == 0, out + err
            assert "connected: media format raw/mulaw" in out
            assert "caller: Hi, what are your opening hours?" in out
            assert "the service heard the caller as: Hi, what are your opening hours?" in out
            assert "caller: (keypad) 42" in out
            assert "☎ bot hangs up" in out
            assert "ended:        the bot hung up" in out
            assert "ok: the call ran and ended cleanly" in out
            conversation = out.split("conversation:")[1].split()[0]
            code, out, err = await _fastagent("call", url, "--token", "wrong")
            assert code == 2
            assert err.strip().splitlines()[-1].endswith("HTTP 401 (check --token)")
    with open_store(str(tmp_path / "s.db"), create=False) as s:
        assert conversation in {c.call_id for c in list_calls(s)}
    code, out, err = await _fastagent("call", url, "--token", "tok")  # nobody listens now
    assert (
        code == 2 and err.startswith("fastagent: cannot connect to ") and len(err.splitlines()) == 1
    )
    code, out, err = await _fastagent("call", "http://x/audiocodes")
    assert code == 2 and "expected ws://" in err


# ------------------------------------------------------ fastagent new agent NAME


def test_new_agent_passes_its_own_test_as_generated(tmp_path: Path) -> None:
    result = runner.invoke(app, ["new", "agent", "tea_shop", "--dir", str(tmp_path / "tea")])
    assert result.exit_code == 0, result.output
    project = tmp_path / "tea"
    assert sorted(str(p.relative_to(project)) for p in project.rglob("*") if p.is_file()) == [
        "README.md",
        "conftest.py",
        "tea_shop/__init__.py",
        "tea_shop/agent.py",
        "tea_shop/scenario.json",
        "tea_shop/tools.py",
        "tests/test_agent.py",
    ]
    for ruff in (["check", "--no-cache"], ["format", "--check", "--no-cache"]):
        done = subprocess.run(
            [sys.executable, "-m", "ruff", *ruff, "--line-length", "100", "."],
            cwd=project,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stdout + done.stderr
    env = _env(FASTAGENT_DATA_DIR=str(tmp_path))
    env["PYTHONPATH"] = os.pathsep.join([str(project), env["PYTHONPATH"]])
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=project,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout
    # The demo plays the same scenario, found beside the agent's module.
    done = subprocess.run(
        [sys.executable, "-m", "fastagent", "demo", "--agent", "tea_shop.agent:AGENT"],
        cwd=project,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "scenario tea_shop-order" in done.stdout
    assert "place_order" in done.stdout and "via tea_shop_tools" in done.stdout
    assert "outcome:   completed" in done.stdout


def test_new_agent_refuses_bad_names_and_existing_directories(tmp_path: Path) -> None:
    for bad in ("Tea", "1tea", "tea-shop", "class", "fastagent", ""):
        _one_line(runner.invoke(app, ["new", "agent", bad, "--dir", str(tmp_path / "x")]), "bad")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("mine")
    _one_line(
        runner.invoke(app, ["new", "agent", "tea", "--dir", str(tmp_path / "taken")]),
        "already exists",
    )
    assert (tmp_path / "taken" / "file").read_text() == "mine"
