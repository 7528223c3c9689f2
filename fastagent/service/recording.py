"""What every part of a call runner shares: the shell's clock and the signal that
the call was lost to another instance."""

from __future__ import annotations

import time


def now_us() -> int:
    """Wall-clock time in microseconds since the epoch: the ``at`` of an input."""
    return time.time_ns() // 1000


class Lost(Exception):
    """This instance no longer drives the call (another writer took its stream)."""


__all__ = ["Lost", "now_us"]
