"""Shared fixtures."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
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
    # A PostgreSQL store needs a master key (docs/privacy.md): one for the test session.
    if not os.environ.get("FASTAGENT_MASTER_KEY"):
        from fastagent.privacy import new_key_text

        os.environ["FASTAGENT_MASTER_KEY"] = new_key_text()
    yield url


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
