"""The event store.  Open one with :func:`open_store`.

One home per concept:

* :mod:`~fastagent.store.log` -- the log: append (group-committed), flush,
  conflicts, reads, listing (:class:`EventStore`);
* :mod:`~fastagent.store.writer` -- the group-commit writer thread;
* :mod:`~fastagent.store.rows` -- events as eventsourcing rows, both ways;
* :mod:`~fastagent.store.urls` -- store URLs, the one parser (analytics uses it too);
* :mod:`~fastagent.store.opening` -- a URL to an open store;
* :mod:`~fastagent.store.tables` -- table names and plain SQL on both databases;
* :mod:`~fastagent.store.keys` -- per-call data keys (``store.keys``);
* :mod:`~fastagent.store.audit` -- the audit trail (``store.audit``);
* :mod:`~fastagent.store.checkpoints` -- the resume cache (``store.checkpoints``).
"""

from fastagent.errors import StoreError, StreamConflict, UnknownCall
from fastagent.store.audit import AuditEntry
from fastagent.store.log import EventStore
from fastagent.store.opening import DEFAULT_FLUSH_INTERVAL, open_store
from fastagent.store.rows import EventMapper, MsgspecTranscoder
from fastagent.store.urls import DEFAULT_PATH, DEFAULT_TABLE, parse_store_url, store_url
from fastagent.store.writer import chunk_batches

__all__ = [
    "DEFAULT_FLUSH_INTERVAL",
    "DEFAULT_PATH",
    "DEFAULT_TABLE",
    "AuditEntry",
    "EventMapper",
    "EventStore",
    "MsgspecTranscoder",
    "StoreError",
    "StreamConflict",
    "UnknownCall",
    "chunk_batches",
    "open_store",
    "parse_store_url",
    "store_url",
]
