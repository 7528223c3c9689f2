"""pytest plugin (entry point ``fastagent``): replay recorded calls as snapshot tests.

In your own project::

    import pytest
    from fastagent.testing.snapshots import recordings

    @pytest.mark.parametrize("path", recordings("replays"), ids=lambda p: p.stem)
    def test_recorded_call(path, fastagent_replay, snapshot):
        view = fastagent_replay(path)
        assert view["identical"], view["divergence"]
        assert view == snapshot

``fastagent_replay(path)`` replays the file through today's engine and returns
its decision trail and transcript with ids normalised (see
:mod:`fastagent.testing.snapshots`).  Pass ``agents=`` to replay against your
own agent registry.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from fastagent.testing.snapshots import replay_for_snapshot


@pytest.fixture
def fastagent_replay() -> Callable[..., dict[str, Any]]:
    return replay_for_snapshot
