"""Masking personal data for display: every view shows masked values by default.

Pure functions, no I/O; views (``replay``, ``calls``, ``report``, ``/mcp``, the
web inspector) call them on what they are about to show.

* :func:`mask_value` -- a value known to be sensitive (a slot marked
  ``sensitive=True``, DTMF digits, the caller's number) becomes :data:`MASK`.
* :func:`mask_text` -- free text (transcripts, messages, error text): payment
  card numbers that pass the Luhn check (``[card]``), IBANs that pass the
  ISO 13616 mod-97 check (``[iban]``), dates that could be a date of birth
  (``[date]``), e-mail addresses (``[email]``), runs of 4 or more digits, written
  or spoken ("one two three four") (``[number]``).  Everything else is kept, so a
  masked transcript still reads as a conversation.
* :func:`mask_json_text` -- a JSON document (tool arguments, tool results): the
  values under sensitive keys become :data:`MASK`, every other string goes
  through :func:`mask_text`.  Text that is not JSON is masked as free text.

Masking is a display aid, not the protection: values are stored encrypted
whatever a view shows (see docs/privacy.md).  It errs on the side of masking
(a 4-digit year is masked too).
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection
from typing import Any

__all__ = [
    "MASK",
    "iban_ok",
    "luhn_ok",
    "Known",
    "mask_events",
    "mask_json",
    "mask_json_text",
    "mask_text",
    "mask_value",
]

MASK = "***"

# Digits with single spaces/dashes/dots between them, 4 or more digits in all.
_SEP_DIGITS = r"\d(?:[ \-.]?\d){3,}"
_CARD = re.compile(r"(?<![\w])\d(?:[ \-]?\d){11,18}(?![\w])")
_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Za-z]{2}\d{2}(?:[ ]?[A-Za-z0-9]){11,30}(?![A-Za-z0-9])")
_MONTHS = (
    "jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|"
    "sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?"
)
_DATE = re.compile(
    r"(?<!\d)(?:"
    r"\d{4}[-/.]\d{1,2}[-/.]\d{1,2}"  # 1985-03-12
    r"|\d{1,2}[-/.]\d{1,2}[-/.]\d{2,4}"  # 12/03/1985, 12.03.85
    rf"|\d{{1,2}}(?:st|nd|rd|th)?(?:\s+of)?\s+(?:{_MONTHS})\.?,?\s+\d{{2,4}}"  # 12 March 1985
    rf"|(?:{_MONTHS})\.?\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{2,4}}"  # March 12th, 1985
    r")(?!\d)",
    re.IGNORECASE,
)
# Bounded, and anchored at a token start: linear time on long runs of word characters.
_ORDINAL = (
    r"(?:(?:twenty|thirty)[- ]?(?:first|second|third|fourth|fifth|sixth|seventh|eighth|ninth)"
    r"|first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth|eleventh|twelfth"
    r"|thirteenth|fourteenth|fifteenth|sixteenth|seventeenth|eighteenth|nineteenth"
    r"|twentieth|thirtieth|\d{1,2}(?:st|nd|rd|th)?)"
)
_NUMBER_WORD = (
    r"(?:zero|oh|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen"
    r"|fourteen|fifteen|sixteen|seventeen|eighteen|nineteen|twenty|thirty|forty|fifty|sixty"
    r"|seventy|eighty|ninety|hundred|thousand)"
)
_YEAR_WORDS = rf"(?:\d{{4}}|{_NUMBER_WORD}(?:(?:\s+|-)(?:and\s+)?{_NUMBER_WORD}){{1,4}})"
# Spoken dates ("the tenth of December nineteen eighty five", "December 10th", "May
# nineteen ninety"): a transcript says a date of birth in words.
_SPOKEN_DATE = re.compile(
    rf"\b(?:(?:the\s+)?{_ORDINAL}\s+(?:of\s+)?(?:{_MONTHS})\b\.?(?:,?\s+{_YEAR_WORDS})?"
    rf"|(?:{_MONTHS})\b\.?\s+(?:the\s+)?{_ORDINAL}\b(?:,?\s+{_YEAR_WORDS})?"
    rf"|(?:{_MONTHS})\b\.?\s+{_YEAR_WORDS})\b",
    re.IGNORECASE,
)
_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]{1,64}@[\w-]{1,63}(?:\.[\w-]{1,63}){1,8}")
_DIGITS = re.compile(rf"(?<!\d){_SEP_DIGITS}(?!\d)")
_WORD_DIGIT = r"(?:zero|oh|o|one|two|three|four|five|six|seven|eight|nine|double|triple)"
_SPOKEN = re.compile(
    rf"\b{_WORD_DIGIT}(?:[\s,\-]+{_WORD_DIGIT}){{3,}}\b",
    re.IGNORECASE,
)
# "oh"/"o"/"double"/"triple" alone are words; a spoken run needs real digits in it.
_REAL_WORD = re.compile(r"zero|one|two|three|four|five|six|seven|eight|nine", re.IGNORECASE)

# Keys whose values are personal data in any tool result (beside the slots an
# agent marks sensitive): names, contact details, identifiers.
DEFAULT_SENSITIVE_KEYS = frozenset(
    {
        "name",
        "first_name",
        "last_name",
        "full_name",
        "address",
        "email",
        "phone",
        "phone_number",
        "caller",
        "date_of_birth",
        "dob",
        "birth_date",
        "iban",
        "card_number",
        "pan",
        "cvv",
        "pin",
        "ssn",
        "customer_id",
        "patient_id",
    }
)


def luhn_ok(digits: str) -> bool:
    """True if ``digits`` (only 0-9) passes the Luhn check (ISO/IEC 7812)."""
    if not digits.isdigit() or len(digits) < 2:
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def iban_ok(text: str) -> bool:
    """True if ``text`` (spaces allowed) is an IBAN passing the ISO 13616 mod-97 check."""
    s = text.replace(" ", "").upper()
    if not (15 <= len(s) <= 34) or not s[:2].isalpha() or not s[2:4].isdigit():
        return False
    if not s.isalnum() or not s.isascii():
        return False
    moved = s[4:] + s[:4]
    number = "".join(str(int(c, 36)) for c in moved)
    return int(number) % 97 == 1


def mask_value(value: Any) -> Any:
    """A sensitive value as shown: :data:`MASK` (empty values stay empty)."""
    if value is None or value == "" or value == {} or value == []:
        return value
    return MASK


def _card(m: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", m.group(0))
    return "[card]" if 13 <= len(digits) <= 19 and luhn_ok(digits) else m.group(0)


def _iban(m: re.Match[str]) -> str:
    # The pattern also swallows words after the IBAN ("... 7654 32 today"): try the
    # longest prefix ending at a space that passes the check.
    text = m.group(0)
    end = len(text)
    while end >= 15:
        if iban_ok(text[:end]):
            return "[iban]" + text[end:]
        end = text.rfind(" ", 0, end)
    return text


def _spoken(m: re.Match[str]) -> str:
    return "[number]" if len(_REAL_WORD.findall(m.group(0))) >= 2 else m.group(0)


def mask_text(text: str, known: Any = None) -> str:
    """Free text with card numbers, IBANs, dates, e-mails and digit runs masked, and
    the call's ``known`` personal values (a :class:`Known`) wherever they appear.

    Never raises; non-str input is returned unchanged.  Idempotent.
    """
    if not isinstance(text, str) or not text:
        return text
    if known is not None:
        text = known.sub(text)
    text = _IBAN.sub(_iban, text)
    text = _CARD.sub(_card, text)
    text = _DATE.sub("[date]", text)
    text = _SPOKEN_DATE.sub("[date]", text)
    if "@" in text:
        text = _EMAIL.sub("[email]", text)
    text = _DIGITS.sub("[number]", text)
    return _SPOKEN.sub(_spoken, text)


def mask_json(value: Any, keys: Collection[str] = DEFAULT_SENSITIVE_KEYS, known: Any = None) -> Any:
    """A JSON value with sensitive keys' values masked and other strings :func:`mask_text`-ed."""
    if isinstance(value, dict):
        return {
            k: mask_value(v)
            if isinstance(k, str) and k.lower() in keys and not isinstance(v, bool)
            else mask_json(v, keys, known)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [mask_json(v, keys, known) for v in value]
    if isinstance(value, str):
        return mask_text(value, known)
    return value


def mask_json_text(
    text: str, keys: Collection[str] = DEFAULT_SENSITIVE_KEYS, known: Any = None
) -> str:
    """:func:`mask_json` of a JSON document given as text; free-text masking if it is not JSON."""
    if not isinstance(text, str) or not text:
        return text
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return mask_text(text, known)
    if not isinstance(value, dict | list):
        return mask_text(text, known)
    return json.dumps(mask_json(value, keys, known), ensure_ascii=False)


class Known:
    """The personal values one call holds where they are marked (sensitive slots and
    keys in tool arguments and results, the caller's number, DTMF digits), to mask
    them also where they recur in free text -- a name or an address the bot reads
    back.  Values (and their comma-separated parts) of 3 characters or more are
    matched case-insensitively as whole words."""

    def __init__(self, values: Collection[str] = ()) -> None:
        parts: set[str] = set()
        for v in values:
            v = v.strip()
            for p in [v, *v.split(",")]:
                p = p.strip()
                if len(p) >= 3:
                    parts.add(p)
        self.values = frozenset(parts)
        alts = sorted(self.values, key=len, reverse=True)  # longest first
        self._re = (
            re.compile(
                r"(?<!\w)(?:" + "|".join(re.escape(a) for a in alts) + r")(?!\w)", re.IGNORECASE
            )
            if alts
            else None
        )

    def sub(self, text: str) -> str:
        return self._re.sub(MASK, text) if self._re is not None else text

    @classmethod
    def of(cls, events: Any, keys: Collection[str] = DEFAULT_SENSITIVE_KEYS) -> Known:
        """The known values of a call's events."""
        found: list[str] = []

        def walk(value: Any) -> None:
            if isinstance(value, dict):
                for k, v in value.items():
                    if isinstance(k, str) and k.lower() in keys and isinstance(v, str | int):
                        if not isinstance(v, bool):
                            found.append(str(v))
                    else:
                        walk(v)
            elif isinstance(value, list):
                for v in value:
                    walk(v)

        for e in events:
            how = EVENT_FIELDS.get(type(e).__name__, {})
            for name, kind in how.items():
                value = getattr(e, name, None)
                if not value:
                    continue
                if kind == "value" and isinstance(value, str):
                    found.append(value)
                elif kind == "json":
                    if isinstance(value, str):
                        try:
                            value = json.loads(value)
                        except (ValueError, RecursionError):
                            continue
                    walk(value)
        return cls(found)


# How each field that can hold personal data is shown: "value" fields are masked
# whole, "json" fields key by key (:func:`mask_json_text`), "text" fields as free
# text (:func:`mask_text`), "items" fields (role/text items) item by item as free
# text.  fastagent.privacy encrypts the same fields at rest.
EVENT_FIELDS: dict[str, dict[str, str]] = {
    "SessionInitiated": {"caller": "value"},
    "CallStarted": {"caller": "value", "parameters": "json"},
    "Dtmf": {"digits": "value"},
    "DtmfSent": {"digits": "value"},
    "Transcript": {"text": "text"},
    "CallerNotified": {"text": "text"},
    "MessageInjected": {"text": "text"},
    "ModelConfigured": {"history": "items"},  # a fresh model session's transcript
    "FunctionCallRequested": {"arguments": "json"},
    "FunctionCallDispatched": {"arguments": "json"},
    "FsaTransition": {"arguments": "json", "reason": "text"},
    "ToolResult": {"output": "json", "error": "text"},
    "FunctionOutputSent": {"output": "json"},
    # Free text that may quote what was said: masked for display only.
    "FsaFinished": {"reason": "text"},
    "ModelError": {"message": "text"},
    "ProtocolError": {"message": "text"},
    "EngineFault": {"error": "text"},
    "HangupRequested": {"reason": "text"},
    "TransferRequested": {"reason": "text"},
}


def mask_fields(
    type_name: str,
    fields: dict[str, Any],
    keys: Collection[str] = DEFAULT_SENSITIVE_KEYS,
    known: Known | None = None,
) -> dict[str, Any]:
    """``fields`` (an event as a dict, e.g. ``events.to_builtins``) as shown masked.

    ``keys``: the JSON keys masked whole in arguments and results -- the agent's
    sensitive slot names plus :data:`DEFAULT_SENSITIVE_KEYS` (see
    :func:`sensitive_keys`); ``known``: the call's :class:`Known` values.  Returns a
    new dict; unknown types come back unchanged.
    """
    how = EVENT_FIELDS.get(type_name)
    if not how:
        return fields
    out = dict(fields)
    for name, kind in how.items():
        value = out.get(name)
        if value is None:
            continue
        if kind == "value":
            out[name] = mask_value(value)
        elif kind == "json":
            out[name] = (
                mask_json_text(value, keys, known)
                if isinstance(value, str)
                else mask_json(value, keys, known)
            )
        elif kind == "items":
            out[name] = [_mask_item(x, known) for x in value]
        else:
            out[name] = mask_text(value, known)
    return out


def _mask_item(item: Any, known: Known | None) -> Any:
    """A role/text item (a dict, or a struct with ``text``) with its text masked."""
    import msgspec

    if isinstance(item, dict):
        return {**item, "text": mask_text(str(item.get("text", "")), known)}
    return msgspec.structs.replace(item, text=mask_text(item.text, known))


def mask_event(
    event: Any, keys: Collection[str] = DEFAULT_SENSITIVE_KEYS, known: Known | None = None
) -> Any:
    """A copy of a :class:`fastagent.events.Event` with its personal data masked."""
    import msgspec

    name = type(event).__name__
    if name not in EVENT_FIELDS:
        return event
    current = {f: getattr(event, f) for f in EVENT_FIELDS[name]}
    masked = mask_fields(name, current, keys, known)
    changed = {
        k: tuple(v) if isinstance(current[k], tuple) else v
        for k, v in masked.items()
        if v is not current[k]
    }
    return msgspec.structs.replace(event, **changed) if changed else event


def mask_events(events: Any, keys: Collection[str] = DEFAULT_SENSITIVE_KEYS) -> list[Any]:
    """One call's events as shown masked: each with :func:`mask_event`, and the
    call's :class:`Known` values masked wherever they recur in its free text."""
    events = list(events)
    known = Known.of(events, keys)
    return [mask_event(e, keys, known) for e in events]


def sensitive_keys(agent: Any = None) -> frozenset[str]:
    """The JSON keys masked whole for ``agent``: its slots marked ``sensitive`` plus
    :data:`DEFAULT_SENSITIVE_KEYS`.  Without an agent, the defaults."""
    keys = set(DEFAULT_SENSITIVE_KEYS)
    for fsa in getattr(agent, "fsas", ()) or ():
        for slot in getattr(fsa, "slots", ()):
            if getattr(slot, "sensitive", False):
                keys.add(slot.name.lower())
    return frozenset(keys)
