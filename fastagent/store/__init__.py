"""The event store: the log (:mod:`~fastagent.store.log`), its group-commit writer
(:mod:`~fastagent.store.writer`), the row mapping (:mod:`~fastagent.store.rows`) and
store URLs (:mod:`~fastagent.store.urls`).  Open one with :func:`open_store`.
"""

from fastagent.errors import StoreError, StreamConflict, UnknownCall
from fastagent.store.log import DEFAULT_FLUSH_INTERVAL, EventStore, open_store
from fastagent.store.rows import EventMapper, MsgspecTranscoder
from fastagent.store.urls import DEFAULT_PATH, DEFAULT_TABLE, parse_store_url, store_url
from fastagent.store.writer import chunk_batches

__all__ = [
    "DEFAULT_FLUSH_INTERVAL",
    "DEFAULT_PATH",
    "DEFAULT_TABLE",
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
