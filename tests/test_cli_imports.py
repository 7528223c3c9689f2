"""What the command line loads: the analytics stack (DuckDB, pyarrow, numpy) only
for the analytics commands, never for ``fastagent serve`` (docs/benchmarks.md,
"Idle memory of fastagent serve").  Checked in a fresh interpreter each time."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ANALYTICS_STACK = ("duckdb", "pyarrow", "numpy")


def loaded_after(code: str) -> set[str]:
    """The top-level modules a fresh interpreter holds after running ``code``."""
    probe = (
        code + "\nimport sys\nprint(' '.join(sorted({m.partition('.')[0] for m in sys.modules})))"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True
    )
    return set(out.stdout.split())


def test_the_cli_module_loads_no_analytics_stack() -> None:
    loaded = loaded_after("import fastagent.cli")
    assert "typer" in loaded  # (the probe works)
    assert loaded.isdisjoint(ANALYTICS_STACK), loaded & set(ANALYTICS_STACK)


def test_serve_s_start_up_loads_no_duckdb_or_pyarrow(tmp_path: Path) -> None:
    # What `fastagent serve` runs before it listens: the CLI, the command's module,
    # the app.  (numpy stays: soxr resamples the calls whose formats differ.)
    loaded = loaded_after(
        "import fastagent.cli, fastagent.service_cli\n"
        "from fastagent.service import ServiceConfig, Service, create_app\n"
        f"create_app(ServiceConfig(store={str(tmp_path / 'calls.db')!r}, no_auth=True))\n"
    )
    assert "uvicorn" in loaded and "fastapi" in loaded
    assert loaded.isdisjoint({"duckdb", "pyarrow"}), loaded & {"duckdb", "pyarrow"}


def test_the_analytics_commands_still_find_their_stack() -> None:
    loaded = loaded_after(
        "from fastagent.analytics_cli import DEFAULT_BATCH\n"
        "from projections import analytics\n"
        "assert DEFAULT_BATCH == analytics.DEFAULT_BATCH, DEFAULT_BATCH\n"
    )
    assert {"duckdb", "pyarrow"} <= loaded
    env = dict(os.environ, PYTHONPATH=str(ROOT), COLUMNS="200")
    help_text = subprocess.run(
        [sys.executable, "-c", "from fastagent.cli import main; main()", "sync", "--help"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "[default: 500000]" in help_text
