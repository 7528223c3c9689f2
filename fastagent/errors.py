"""The one error family of FastAgent.

Every error a user can cause or meet (bad configuration, a store that cannot be
opened, a corrupt log, an unreadable recording, a protocol misused) is a
:class:`FastAgentError`; its message is one line meant for a person.  The CLI
prints it as ``fastagent: <message>`` and exits with code 2; a library user
catches the one base class.

    FastAgentError
    ├── ConfigError          bad settings: environment, flags, agent definitions
    │   ├── UnknownAgent         (also a LookupError)
    │   ├── FsaDefinitionError   an FSA that cannot run
    │   ├── RealtimeConfigError  missing or bad Realtime connection settings
    │   ├── AccessError          a malformed read-credential setting
    │   └── AudioFormatError     an audio format name nobody knows
    ├── StoreError           the event log cannot do what was asked
    │   ├── StreamConflict       another writer owns the call's stream
    │   ├── UnknownCall          no event stored for a call id
    │   ├── EventFormatError     a stored event this code cannot read
    │   ├── PrivacyError         personal data cannot be sealed or opened (no master
    │   │   │                    key, a data key that does not open)
    │   │   └── CallForgotten        the call's data key was destroyed (forget)
    │   └── AnalyticsError       the DuckDB read model cannot do what was asked
    ├── ReplayError          a recording or replay that cannot proceed
    │   └── RecordingError       a recording file that cannot be read
    └── LocalProtocolError   this side used a protocol out of order (a bug here)
        ├── VaicStateError       on the VAIC side
        ├── ResponseActiveError  on the Realtime side
        └── LiveStateError       on the GPT-Live side

What the *other* side gets wrong is never raised: parsers return a violation
value and the shell records it as an ``ev.ProtocolError`` input event (see
docs/architecture.md).  This module imports nothing, so every layer may use it.
"""

from __future__ import annotations


class FastAgentError(Exception):
    """Base of every error FastAgent raises on purpose; ``str()`` is one line."""


class ConfigError(FastAgentError, ValueError):
    """A setting (environment variable, flag, agent or FSA definition) is unusable."""


class StoreError(FastAgentError):
    """The store cannot do what was asked (cannot open, write failed, ...)."""


class StreamConflict(StoreError):
    """Another writer appended to this call's stream: this store no longer owns it."""

    def __init__(self, call_id: str) -> None:
        super().__init__(
            f"call {call_id!r}: stream conflict (another writer already appended "
            "these sequence numbers; this store no longer owns the call)"
        )
        self.call_id = call_id


class UnknownCall(StoreError):
    """No event is stored for this call id."""

    def __init__(self, call_id: str) -> None:
        super().__init__(f"unknown call {call_id!r}: no events stored")
        self.call_id = call_id


class ReplayError(FastAgentError, ValueError):
    """A recording or a replay that cannot proceed."""


class LocalProtocolError(FastAgentError, RuntimeError):
    """This side tried something a protocol does not allow here (h11's name)."""


__all__ = [
    "ConfigError",
    "FastAgentError",
    "LocalProtocolError",
    "ReplayError",
    "StoreError",
    "StreamConflict",
    "UnknownCall",
]
