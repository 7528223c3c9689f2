"""Garbage-collector settings for a serving process (``fastagent serve``)."""

from __future__ import annotations

import gc
import logging

log = logging.getLogger("fastagent.service")


def tune_gc() -> None:
    """Keep full garbage collections off the audio path's tail latency.

    A full collection walks every tracked object: with the SDKs loaded and 200
    calls that took ~100 ms, and ran every few seconds (bench_bridge at 200 calls:
    p99 27 ms, p99.9 105 ms).  The objects built at start-up live for ever, so
    they are frozen out of collection; and a full collection runs after 100
    middle-generation ones instead of 10.  Cycles are still collected, later
    (p99 7.9 ms, p99.9 11 ms in the same bench).  Called by ``fastagent serve``
    once the app is built; a library user's process is left as it is.
    """
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, 100)
