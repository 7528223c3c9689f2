"""What is personal data: the categories of event fields that can hold it, and an
agent's choice of which to seal (:class:`Privacy`).

Pure definitions, no cryptography: agent definitions (the core) import this
module; :mod:`fastagent.privacy` seals and opens the fields it names.  See
docs/privacy.md.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ALL_CATEGORIES", "ALWAYS", "CATEGORIES", "SEALED_FIELDS", "Privacy", "fields_for"]

# Category -> the (event type, field) pairs it seals.
CATEGORIES: dict[str, dict[str, tuple[str, ...]]] = {
    "caller": {"SessionInitiated": ("caller",), "CallStarted": ("caller", "parameters")},
    "dtmf": {"Dtmf": ("digits",), "DtmfSent": ("digits",), "MessageInjected": ("text",)},
    "transcripts": {
        "Transcript": ("text",),
        "MessageInjected": ("text",),
        "CallerNotified": ("text",),  # a recognition: the caller's transcript again
        # A fresh model session's history: the transcript again (and its summary).
        "ModelConfigured": ("history",),
    },
    # Slot values (Slot(sensitive=True)) and backend records travel here: always sealed.
    "tool_data": {
        "FunctionCallRequested": ("arguments",),
        "FunctionCallDispatched": ("arguments",),
        "FsaTransition": ("arguments",),
        "ToolResult": ("output", "error"),
        "FunctionOutputSent": ("output",),
    },
    # Diagnostics that can quote what a caller sent or a guard saw: always sealed.
    "diagnostics": {"ProtocolError": ("message",), "EngineFault": ("error",)},
}
ALL_CATEGORIES: tuple[str, ...] = tuple(CATEGORIES)
ALWAYS = ("tool_data", "diagnostics")


def fields_for(categories: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """(event type -> its sealed fields) for ``categories``."""
    out: dict[str, list[str]] = {}
    for cat in categories:
        for type_name, fields in CATEGORIES.get(cat, {}).items():
            have = out.setdefault(type_name, [])
            have.extend(f for f in fields if f not in have)
    return {k: tuple(v) for k, v in out.items()}


SEALED_FIELDS: dict[str, tuple[str, ...]] = fields_for(ALL_CATEGORIES)


@dataclass(frozen=True)
class Privacy:
    """An agent's choice of what is personal data besides tool data (always sealed).

    ``Agent(privacy=Privacy(transcripts=False))`` stores transcripts in clear (an
    agent whose callers never say anything personal).  The categories chosen are
    recorded in each call's ``CallConfig.sealed``."""

    caller: bool = True
    dtmf: bool = True
    transcripts: bool = True

    def categories(self) -> tuple[str, ...]:
        chosen = [c for c in ("caller", "dtmf", "transcripts") if getattr(self, c)]
        return (*chosen, *ALWAYS)
