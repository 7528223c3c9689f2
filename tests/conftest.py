"""Shared fixtures."""

from __future__ import annotations

import os
from collections.abc import Iterator

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
    yield url
