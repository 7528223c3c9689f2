"""docs/configuration.md lists every FASTAGENT_* setting the code reads."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parent.parent
NAME = re.compile(r"\bFASTAGENT_[A-Z0-9_]*[A-Z0-9]\b")


def settings_in_code() -> dict[str, set[str]]:
    """Every FASTAGENT_* name in the code (package, projections, bench, scripts,
    tests), with the files that name it."""
    found: dict[str, set[str]] = {}
    for folder in ("fastagent", "projections", "bench", "scripts", "tests"):
        for path in (ROOT / folder).rglob("*.py"):
            for name in NAME.findall(path.read_text(encoding="utf-8")):
                found.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    return found


def documented() -> set[str]:
    """The names in the first column of the tables of docs/configuration.md."""
    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    return set(re.findall(r"^\| `(FASTAGENT_[A-Z0-9_]+)` \|", text, re.MULTILINE))


def test_every_setting_the_code_reads_is_documented() -> None:
    listed = documented()
    missing = {
        name: sorted(files) for name, files in settings_in_code().items() if name not in listed
    }
    assert not missing, f"add these to docs/configuration.md: {missing}"


def test_the_page_lists_no_setting_the_code_does_not_read() -> None:
    stale = documented() - set(settings_in_code())
    assert not stale, f"docs/configuration.md lists settings nothing reads: {sorted(stale)}"


def test_each_row_has_default_meaning_and_where() -> None:
    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    for line in text.splitlines():
        if line.startswith("| `FASTAGENT_"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            assert len(cells) == 4 and all(cells), line
