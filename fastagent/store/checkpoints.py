"""The resume cache: one checkpoint per call, the newest winning.

What a checkpoint holds (the engine and live state after event ``seq``) and when
one may be trusted is :mod:`fastagent.checkpoints`; this module only keeps the
bytes, in the side table ``<table>_checkpoints``::

    call_id TEXT PRIMARY KEY, seq BIGINT, data BLOB|BYTEA

``data`` is sealed with the call's data key (:mod:`fastagent.store.keys`):
``b"FAS1"`` + 12-byte nonce + AES-GCM ciphertext, authenticated with
``"<call_id>|snapshot"``; a row without the magic was written before checkpoints
were sealed and is returned as it is.  Stores written before the rename kept
their checkpoints in ``<table>_snapshots``: the first use moves them over.

A checkpoint is a cache, never the truth: forgetting a call deletes it, and a
reader that cannot trust one replays the log instead.
"""

from __future__ import annotations

import logging
import os

from eventsourcing.persistence import IntegrityError

from fastagent import privacy
from fastagent.errors import StoreError
from fastagent.store.keys import DataKeys
from fastagent.store.tables import Statement, Tables

log = logging.getLogger("fastagent.store")

_MAGIC = b"FAS1"  # a sealed checkpoint: magic, nonce, AES-GCM ciphertext


class Checkpoints:
    """The store's checkpoints (``<table>_checkpoints``), created on first use."""

    def __init__(self, tables: Tables, keys: DataKeys) -> None:
        self._tables = tables
        self._keys = keys
        self._ready = False

    def write(self, call_id: str, seq: int, data: bytes) -> None:
        """Keep ``data`` as the call's state after event ``seq`` (an older one never
        replaces a newer one).  Write only what reflects durable events.

        Raises StoreError, or CallForgotten for a forgotten call.
        """
        self.ensure()
        data = self._seal(call_id, data)
        t = self._table
        sql = (
            f"INSERT INTO {t} (call_id, seq, data) VALUES ({{p}}, {{p}}, {{p}}) "
            "ON CONFLICT (call_id) DO UPDATE SET seq = excluded.seq, data = excluded.data "
            f"WHERE excluded.seq > {t}.seq"
        )
        self._tables.query(sql, (call_id, seq, data), commit=True)

    def read(self, call_id: str) -> tuple[int, bytes] | None:
        """(seq, data) of the call's latest checkpoint, or None.

        Raises StoreError (also for a sealed one that does not open), or
        CallForgotten for a forgotten call.
        """
        self.ensure()
        rows = self._tables.query(
            f"SELECT seq, data FROM {self._table} WHERE call_id = {{p}}", (call_id,)
        )
        if not rows:
            return None
        return int(rows[0][0]), self._open(call_id, bytes(rows[0][1]))

    def drop(self, call_id: str) -> None:
        """Delete the call's checkpoint, if any.  Raises StoreError."""
        self.ensure()
        self._tables.query(*self.drop_statement(call_id), commit=True)

    def drop_statement(self, call_id: str) -> Statement:
        """The statement deleting the call's checkpoint, to run in another
        transaction (call :meth:`ensure` first)."""
        return (f"DELETE FROM {self._table} WHERE call_id = {{p}}", (call_id,))

    def ensure(self) -> None:
        """Create the table on first use, taking over the rows of the
        ``<table>_snapshots`` table that stores written before the rename kept.
        Raises StoreError."""
        if self._ready:
            return
        self._tables.create(
            "checkpoints",
            f"call_id TEXT PRIMARY KEY, seq BIGINT NOT NULL, data {self._tables.blob} NOT NULL",
        )
        self._adopt_old_table()
        self._ready = True

    @property
    def _table(self) -> str:
        return self._tables.side("checkpoints")

    def _adopt_old_table(self) -> None:
        """Move the rows of the pre-rename ``<table>_snapshots`` table (if any) into
        the checkpoints table, newer seq winning, and drop it: one transaction, so
        it is idempotent and a racing instance either sees both tables or one."""
        tables = self._tables
        if not tables.exists("snapshots"):
            return
        old, new = tables.side("snapshots"), self._table
        try:
            tables.transaction(
                [
                    (
                        f"INSERT INTO {new} (call_id, seq, data) SELECT call_id, seq, data "
                        f"FROM {old} WHERE true ON CONFLICT (call_id) DO UPDATE SET "
                        f"seq = excluded.seq, data = excluded.data WHERE excluded.seq > {new}.seq",
                        (),
                    ),
                    (f"DROP TABLE {old}", ()),
                ]
            )
        except (StoreError, IntegrityError):
            if tables.exists("snapshots"):
                raise
            return  # another instance moved them first: nothing lost
        log.info("store %s: checkpoints moved from %s to %s", tables.url, old, new)

    @staticmethod
    def _aad(call_id: str) -> bytes:
        # "snapshot" was the checkpoint's former name: sealed rows already stored
        # authenticate with it, so it stays.
        return f"{call_id}|snapshot".encode()

    def _seal(self, call_id: str, data: bytes) -> bytes:
        aead = self._keys.data_key(call_id, True)
        nonce = os.urandom(privacy.NONCE)
        return _MAGIC + nonce + aead.encrypt(nonce, data, self._aad(call_id))

    def _open(self, call_id: str, data: bytes) -> bytes:
        if not data.startswith(_MAGIC):
            return data  # written before checkpoints were sealed
        aead = self._keys.data_key(call_id, False)
        if aead is None:
            raise StoreError(
                f"call {call_id!r}: its checkpoint is sealed but no data key is stored"
            )
        body = data[len(_MAGIC) :]
        try:
            n = privacy.NONCE
            return aead.decrypt(body[:n], body[n:], self._aad(call_id))  # type: ignore[no-any-return]
        except Exception:
            raise StoreError(f"call {call_id!r}: its checkpoint does not open (corrupt)") from None
