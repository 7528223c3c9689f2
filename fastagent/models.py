"""What FastAgent knows about OpenAI's Realtime models (no I/O).

Source: the installed openai SDK (``openai/types/realtime/
realtime_session_create_request.py``: the model literals, the "Deprecated values
... Announced shutdown date" note, and "reasoning Realtime models such as
gpt-realtime-2") and OpenAI's model pages (context windows).  A test checks the
shutdown table against the SDK's note, so an SDK upgrade that announces another
shutdown fails until this table says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

# OpenAI's current reasoning speech-to-speech model (released 2026-05-07); the
# previous default, gpt-realtime, shuts down on 2027-01-20.
DEFAULT_MODEL: Final = "gpt-realtime-2"

# Announced shutdown dates (ISO), as the SDK's docstring lists them.
SHUTDOWNS: Final[dict[str, str]] = {
    "gpt-realtime": "2027-01-20",
    "gpt-realtime-2025-08-28": "2027-01-20",
    "gpt-realtime-mini": "2027-01-20",
    "gpt-realtime-mini-2025-12-15": "2027-01-20",
    "gpt-audio-mini": "2027-01-20",
    "gpt-audio-mini-2025-12-15": "2027-01-20",
}

REASONING_EFFORTS: Final = ("minimal", "low", "medium", "high", "xhigh")


@dataclass(frozen=True)
class ModelInfo:
    name: str
    context_tokens: int  # the context window
    reasoning: bool  # takes ``reasoning.effort`` and ``parallel_tool_calls``
    shutdown: str = ""  # announced shutdown date, "" if none


_REASONING_PREFIXES = ("gpt-realtime-2",)  # gpt-realtime-2, -2.1, -2.1-mini, dated ones


def info(model: str) -> ModelInfo:
    """What is known about ``model``; unknown names get the conservative 32k, no reasoning."""
    reasoning = model.startswith(_REASONING_PREFIXES)
    return ModelInfo(
        name=model,
        context_tokens=128_000 if reasoning else 32_000,
        reasoning=reasoning,
        shutdown=SHUTDOWNS.get(model, ""),
    )


def is_live_model(model: str) -> bool:
    """True for a GPT-Live model name (``gpt-live-1``, ``gpt-live-1.1``, dated variants)."""
    return model.startswith("gpt-live")


def shutdown_warning(model: str) -> str | None:
    """A one-line start-up warning if ``model`` has an announced shutdown date."""
    date = SHUTDOWNS.get(model)
    if date is None:
        return None
    return (
        f"model {model!r} shuts down on {date} (OpenAI deprecation); "
        f"set FASTAGENT_MODEL={DEFAULT_MODEL} (or gpt-realtime-2.1)"
    )


def check_effort(effort: str) -> str:
    """``effort`` if it is a Realtime reasoning effort ("" = the model's default)."""
    if effort and effort not in REASONING_EFFORTS:
        raise ValueError(
            f"reasoning effort {effort!r}: expected one of {', '.join(REASONING_EFFORTS)}"
        )
    return effort
