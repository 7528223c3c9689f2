"""Per-call data keys: created on first use, wrapped under the master key, forgotten.

Each call's personal fields are sealed with its own AES-GCM data key
(:mod:`fastagent.privacy`).  The key is stored wrapped under a master key in the
side table ``<table>_keys``, one row per call::

    call_id TEXT PRIMARY KEY, master_id TEXT, wrapped BLOB|BYTEA,
    created_us BIGINT, forgotten_us BIGINT, forgotten_by TEXT

Forgetting a call sets ``wrapped`` to NULL and records when and by whom: its
sealed fields can never be opened again, while the log itself is not touched.
The master key is resolved on first use: reading the log's clear fields
(analytics, listing) needs none.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from fastagent import privacy
from fastagent.errors import StoreError
from fastagent.privacy import CallForgotten, MasterKeys, Sealer
from fastagent.store.tables import Statement, Tables


class DataKeys:
    """The store's per-call data keys (``<table>_keys``) and the master key over them.

    ``master`` resolves the master keys when first needed; it raises StoreError
    (one line) if there are none.  Thread-safe: the event loop and the
    group-commit thread both seal.
    """

    def __init__(self, tables: Tables, master: Callable[[], MasterKeys]) -> None:
        self._tables = tables
        self._master_source = master
        self._master_keys: MasterKeys | None = None
        self._aeads: dict[str, Any] = {}  # call id -> AESGCM of its data key
        self._lock = threading.Lock()
        self._ready = False
        self.sealer = Sealer(self.data_key)
        """Seals and opens event bodies with these keys (the log's rows use it)."""

    @property
    def _master(self) -> MasterKeys:
        if self._master_keys is None:
            self._master_keys = self._master_source()
        return self._master_keys

    def check(self) -> str:
        """Resolve the master key now (a service checks before it listens); returns
        where it comes from.  Raises StoreError (one line) if there is none."""
        return self._master.source

    def data_key(self, call_id: str, create: bool) -> Any:
        """The AESGCM of ``call_id``'s data key (a :data:`fastagent.privacy.KeySource`).

        None if it has none and not ``create`` (with ``create`` a new key is made
        and stored; of two instances racing, the first stored wins).  Raises
        CallForgotten for a forgotten call, StoreError if the key cannot be stored
        or the master key is missing, KeyError_ if it does not unwrap.
        """
        aead = self._aeads.get(call_id)
        if aead is not None:
            return aead
        with self._lock:
            aead = self._aeads.get(call_id)
            if aead is not None:
                return aead
            self.ensure()
            for _ in range(2):
                row = self._row(call_id)
                if row is not None:
                    master_id, wrapped, forgotten_us, forgotten_by = row
                    if forgotten_us is not None or wrapped is None:
                        raise CallForgotten(call_id, int(forgotten_us or 0), forgotten_by or "")
                    key = self._master.unwrap(call_id, master_id, bytes(wrapped))
                    aead = self._aeads[call_id] = privacy.AESGCM(key)
                    return aead
                if not create:
                    return None
                master_id, wrapped = self._master.wrap(call_id, privacy.new_data_key())
                self._tables.query(
                    f"INSERT INTO {self._table} (call_id, master_id, wrapped, created_us) "
                    "VALUES ({p}, {p}, {p}, {p}) ON CONFLICT (call_id) DO NOTHING",
                    (call_id, master_id, wrapped, time.time_ns() // 1000),
                    commit=True,
                )
            raise StoreError(f"call {call_id!r}: cannot store its data key")

    def forgotten(self, call_id: str) -> CallForgotten | None:
        """Why ``call_id`` cannot be read (a CallForgotten), or None if it is not
        forgotten.  Raises StoreError."""
        self.ensure()
        row = self._row(call_id)
        if row is None or row[2] is None:
            return None
        return CallForgotten(call_id, int(row[2]), row[3] or "")

    def forget(self, call_id: str, who: str, at_us: int, *, also: Sequence[Statement] = ()) -> None:
        """Destroy ``call_id``'s data key, recording ``who`` and when (``at_us``, µs),
        in one transaction with the statements ``also`` (what else must go with
        it), deleting securely on SQLite.  Raises CallForgotten if it was forgotten
        already, StoreError if the write fails (then nothing changed)."""
        already = self.forgotten(call_id)
        if already is not None:
            raise already
        forget = (
            f"INSERT INTO {self._table} (call_id, master_id, wrapped, created_us, forgotten_us, "
            "forgotten_by) VALUES ({p}, '', NULL, {p}, {p}, {p}) "
            "ON CONFLICT (call_id) DO UPDATE SET wrapped = NULL, master_id = '', "
            "forgotten_us = excluded.forgotten_us, forgotten_by = excluded.forgotten_by",
            (call_id, at_us, at_us, who),
        )
        self._tables.transaction([forget, *also], secure_delete=True)
        with self._lock:
            self._aeads.pop(call_id, None)

    def rewrap(self) -> int:
        """Wrap every data key not under the current master key with it (master key
        rotation); returns how many were rewrapped.  Old master keys must still be
        configured (after the current one) while this runs.  Raises StoreError,
        KeyError_ for a key no configured master key opens."""
        self.ensure()
        rows = self._tables.query(
            f"SELECT call_id, master_id, wrapped FROM {self._table} "
            "WHERE wrapped IS NOT NULL AND master_id <> {p}",
            (self._master.current,),
        )
        for call_id, master_id, wrapped in rows:
            key = self._master.unwrap(call_id, master_id, bytes(wrapped))
            new_id, new_wrapped = self._master.wrap(call_id, key)
            self._tables.query(
                f"UPDATE {self._table} SET master_id = {{p}}, wrapped = {{p}} "
                "WHERE call_id = {p} AND wrapped IS NOT NULL",
                (new_id, new_wrapped, call_id),
                commit=True,
            )
        return len(rows)

    def ensure(self) -> None:
        """Create ``<table>_keys`` on first use.  Raises StoreError."""
        if self._ready:
            return
        self._tables.create(
            "keys",
            f"call_id TEXT PRIMARY KEY, master_id TEXT NOT NULL, wrapped {self._tables.blob}, "
            "created_us BIGINT NOT NULL, forgotten_us BIGINT, forgotten_by TEXT",
        )
        self._ready = True

    @property
    def _table(self) -> str:
        return self._tables.side("keys")

    def _row(self, call_id: str) -> Sequence[Any] | None:
        rows = self._tables.query(
            f"SELECT master_id, wrapped, forgotten_us, forgotten_by FROM {self._table} "
            "WHERE call_id = {p}",
            (call_id,),
        )
        return rows[0] if rows else None
