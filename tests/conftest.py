"""Shared fixtures."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """URL of the local test PostgreSQL ($FASTAGENT_TEST_PG overrides); skips if unreachable."""
    url = os.environ.get("FASTAGENT_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
    try:
        import psycopg

        psycopg.connect(url, connect_timeout=2).close()
    except Exception as exc:  # no server, no driver, bad credentials: skip, say why
        why = f"PostgreSQL not reachable at {url}: {str(exc).strip()[:120]}"
        if os.environ.get("CI"):
            pytest.fail(why + " (CI must run the PostgreSQL tests)")
        pytest.skip(why)
    yield url


_PG_MASTER_KEY: list[str] = []


@pytest.fixture
def pg_url(pg_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """:func:`pg_server`, with the master key a PostgreSQL store needs (docs/privacy.md)
    set for this test only (one key for the session, so stores outlive a test)."""
    if not _PG_MASTER_KEY:
        from fastagent.privacy import new_key_text

        _PG_MASTER_KEY.append(new_key_text())
    if not os.environ.get("FASTAGENT_MASTER_KEY"):
        monkeypatch.setenv("FASTAGENT_MASTER_KEY", _PG_MASTER_KEY[0])
    yield pg_server


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop for a module's synchronous tests that drive async code."""
    lp = asyncio.new_event_loop()
    yield lp
    lp.close()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """$FASTAGENT_DATA_DIR for the example agents' backends: a fresh folder per module."""
    path = tmp_path_factory.mktemp("data")
    old = os.environ.get("FASTAGENT_DATA_DIR")
    os.environ["FASTAGENT_DATA_DIR"] = str(path)
    yield path
    if old is None:
        os.environ.pop("FASTAGENT_DATA_DIR", None)
    else:
        os.environ["FASTAGENT_DATA_DIR"] = old


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Debian's headless chromium driven by playwright; skips (fails in CI) without one.

    Module-scoped: playwright's sync API keeps an event loop running in this thread
    while it is open, which the asyncio tests of other modules cannot share."""
    why = ""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        why = "playwright is not installed (pip install -e '.[test]')"
    if not why and not os.path.exists(CHROMIUM):
        why = f"no browser at {CHROMIUM} (apt-get install chromium)"
    if why:
        if os.environ.get("CI"):
            pytest.fail(why + " (CI must run the browser tests)")
        pytest.skip(why)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Where tests keep screenshots ($FASTAGENT_TEST_ARTIFACTS, else ./test-artifacts)."""
    path = Path(os.environ.get("FASTAGENT_TEST_ARTIFACTS") or "test-artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path
