"""Masking for views: sensitive values whole, free text by pattern."""

from __future__ import annotations

import json

import pytest

from fastagent import events as ev
from fastagent.agents import get_agent
from fastagent.masking import (
    MASK,
    iban_ok,
    luhn_ok,
    mask_event,
    mask_fields,
    mask_json_text,
    mask_text,
    sensitive_keys,
)


def test_luhn_and_iban_checks() -> None:
    assert luhn_ok("4111111111111111") and luhn_ok("79927398713")
    assert not luhn_ok("4111111111111112") and not luhn_ok("") and not luhn_ok("12a4")
    assert iban_ok("GB82 WEST 1234 5698 7654 32") and iban_ok("DE89370400440532013000")
    assert not iban_ok("GB82 WEST 1234 5698 7654 33") and not iban_ok("GB82")


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("card 4111 1111 1111 1111 please", "card [card] please"),
        ("card 4111-1111-1111-1111.", "card [card]."),
        ("pay to GB82 WEST 1234 5698 7654 32 today", "pay to [iban] today"),
        ("pay to DE89370400440532013000", "pay to [iban]"),
        ("born 1985-03-12, ok", "born [date], ok"),
        ("born 12/03/1985", "born [date]"),
        ("born on the 12th of March 1985", "born on the [date]"),
        ("born March 12th, 1985", "born [date]"),
        ("The tenth of December nineteen eighty five, and", "[date], and"),
        ("on the twenty-first of May", "on [date]"),
        ("since May nineteen ninety", "since [date]"),
        ("may I help? I may.", "may I help? I may."),
        ("my number is 123456", "my number is [number]"),
        ("ends in 4242", "ends in [number]"),
        ("call +1 555 010 0200", "call +[number]"),
        ("it's one two three four five six", "it's [number]"),
        ("mail me at jo.doe@example.com", "mail me at [email]"),
        # Not personal: short numbers, times, words.
        ("I lost my card at 10:30, 2 days ago", "I lost my card at 10:30, 2 days ago"),
        ("oh no, one moment", "oh no, one moment"),
        # Not Luhn-valid, still a long digit run.
        ("card 4111 1111 1111 1112", "card [number]"),
        ("", ""),
    ],
)
def test_mask_text(text: str, shown: str) -> None:
    assert mask_text(text) == shown
    assert mask_text(shown) == shown  # idempotent


def test_mask_text_never_raises_on_odd_input() -> None:
    for odd in ["\x00\udcff" * 50, "9" * 10_000, "a" * 100_000, "1-" * 5000]:
        assert isinstance(mask_text(odd), str)
    assert mask_text(None) is None  # type: ignore[arg-type]


def test_mask_json_uses_sensitive_slots() -> None:
    keys = sensitive_keys(get_agent("banking"))
    assert {"customer_id", "date_of_birth", "card_last4"} <= keys
    assert "reason" not in keys
    args = json.dumps({"customer_id": "123456", "card_last4": "4242", "reason": "lost"})
    assert json.loads(mask_json_text(args, keys)) == {
        "customer_id": MASK,
        "card_last4": MASK,
        "reason": "lost",
    }
    out = json.dumps({"found": True, "first_name": "Ada", "note": "dob 1985-03-12"})
    assert json.loads(mask_json_text(out, keys)) == {
        "found": True,
        "first_name": MASK,
        "note": "dob [date]",
    }
    assert mask_json_text("not json 123456", keys) == "not json [number]"


def test_mask_event_and_fields() -> None:
    e = ev.Dtmf(call_id="c", seq=3, at=1, digits="123456")
    assert mask_event(e).digits == MASK
    t = ev.Transcript(call_id="c", seq=4, at=1, role="user", item_id="i", text="hi, 4242")
    assert mask_event(t).text == "hi, [number]"
    a = ev.CallerAudio(call_id="c", seq=5, at=1, chunk=1, nbytes=1, duration_us=1, fmt="x")
    assert mask_event(a) is a
    d = mask_fields("SessionInitiated", {"caller": "+15550001", "config": {"agent": "x"}})
    assert d == {"caller": MASK, "config": {"agent": "x"}}
