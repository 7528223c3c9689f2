"""The call listing: one summary per call, straight from the event log.

A read model like the others here: SQL finds each call's first and last event
and its count; only those two rows are decoded, not the whole log.  Used by
``fastagent calls`` and the MCP server's ``list_calls``.
"""

from __future__ import annotations

import msgspec

from fastagent.events import CallEnded
from fastagent.store import EventStore
from fastagent.store.rows import decode_row


class CallSummary(msgspec.Struct, frozen=True, kw_only=True):
    """One line of :func:`list_calls`."""

    call_id: str
    started_at_us: int  # ``at`` of the first event
    ended_at_us: int  # ``at`` of the last stored event (the CallEnded if ended)
    events: int
    outcome: str  # CallEnded.outcome, or "live" while no CallEnded is stored


_SQL = (
    "SELECT g.originator_id, g.n, g.lo, f.topic, f.state, g.hi, l.topic, l.state "
    "FROM (SELECT originator_id, MIN(originator_version) AS lo, "
    "MAX(originator_version) AS hi, COUNT(*) AS n FROM {events} GROUP BY originator_id) g "
    "JOIN {events} f ON f.originator_id = g.originator_id AND f.originator_version = g.lo "
    "JOIN {events} l ON l.originator_id = g.originator_id AND l.originator_version = g.hi "
    "ORDER BY f.{pos}"
)


def list_calls(store: EventStore) -> list[CallSummary]:
    """One summary per call, in the order calls started (StoreError if unreadable)."""
    out = []
    for call_id, n, lo, f_topic, f_state, hi, l_topic, l_state in store.select(_SQL):
        first = decode_row(call_id, lo, f_topic, f_state)
        last = first if hi == lo else decode_row(call_id, hi, l_topic, l_state)
        outcome = last.outcome if isinstance(last, CallEnded) else "live"
        out.append(
            CallSummary(
                call_id=call_id,
                started_at_us=first.at,
                ended_at_us=last.at,
                events=n,
                outcome=outcome,
            )
        )
    return out
