"""The audit trail: who read, revealed, exported or forgot which call, and when.

One row per access in the side table ``<table>_audit``::

    id (ascending), at_us BIGINT, who TEXT, action TEXT, call_id TEXT, detail TEXT

Rows are only ever added.  Readers of personal data (the command line, the
inspector, /mcp) record an entry before they show anything; forgetting a call
records its entry in the same transaction as the key's destruction
(:meth:`fastagent.store.EventStore.forget`).
"""

from __future__ import annotations

import time

import msgspec

from fastagent.store.tables import Statement, Tables


class AuditEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One line of the audit trail: who read or changed what of which call, when."""

    at_us: int  # wall-clock time, µs since the epoch
    who: str  # the credential's label (e.g. "ops", "read-token#1a2b3c4d", "cli:alice")
    action: str  # timeline | export | reveal | forget | ...
    call_id: str
    detail: str = ""


class AuditTrail:
    """The store's audit trail (``<table>_audit``), created on first use."""

    def __init__(self, tables: Tables) -> None:
        self._tables = tables
        self._ready = False

    def record(self, who: str, action: str, call_id: str, detail: str = "") -> None:
        """Append an entry stamped now; durable when this returns.  Raises StoreError."""
        self.ensure()
        self._tables.query(
            *self.entry(time.time_ns() // 1000, who, action, call_id, detail), commit=True
        )

    def entry(self, at_us: int, who: str, action: str, call_id: str, detail: str = "") -> Statement:
        """The statement appending an entry, to run in another transaction (call
        :meth:`ensure` first)."""
        return (
            f"INSERT INTO {self._tables.side('audit')} (at_us, who, action, call_id, detail) "
            "VALUES ({p}, {p}, {p}, {p}, {p})",
            (at_us, who, action, call_id, detail),
        )

    def read(self, call_id: str | None = None) -> list[AuditEntry]:
        """The trail, oldest first (of one call if ``call_id``).  Raises StoreError."""
        self.ensure()
        where, params = ("WHERE call_id = {p} ", (call_id,)) if call_id else ("", ())
        rows = self._tables.query(
            f"SELECT at_us, who, action, call_id, detail FROM {self._tables.side('audit')} "
            f"{where}ORDER BY id",
            params,
        )
        return [
            AuditEntry(at_us=int(r[0]), who=r[1], action=r[2], call_id=r[3], detail=r[4])
            for r in rows
        ]

    def ensure(self) -> None:
        """Create ``<table>_audit`` on first use.  Raises StoreError."""
        if self._ready:
            return
        serial = (
            "BIGSERIAL PRIMARY KEY"
            if self._tables.postgresql
            else "INTEGER PRIMARY KEY AUTOINCREMENT"
        )
        self._tables.create(
            "audit",
            f"id {serial}, at_us BIGINT NOT NULL, who TEXT NOT NULL, action TEXT NOT NULL, "
            "call_id TEXT NOT NULL, detail TEXT NOT NULL",
        )
        self._ready = True
