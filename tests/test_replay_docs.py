"""docs/replay.md's pytest plugin example works as the docs say, in a fresh project."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _example() -> str:
    text = (ROOT / "docs" / "replay.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    (block,) = [b for b in blocks if "fastagent_replay" in b]
    return block


def test_the_plugin_example_passes_after_the_documented_first_run(tmp_path: Path) -> None:
    (tmp_path / "test_recorded_calls.py").write_text(_example())
    (tmp_path / "replays").mkdir()
    for name in ("banking.jsonl", "default.jsonl"):
        shutil.copy(ROOT / "replays" / name, tmp_path / "replays" / name)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def pytest(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args]
        return subprocess.run(
            cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
        )

    first = pytest("test_recorded_calls.py", "--snapshot-update")
    assert first.returncode == 0, first.stdout + first.stderr
    assert (tmp_path / "__snapshots__" / "test_recorded_calls.ambr").exists()
    again = pytest("test_recorded_calls.py")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "2 passed" in again.stdout
