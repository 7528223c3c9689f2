"""Demo Bank: replace a card (verified, confirmed, ordered once) and tell a balance."""

from __future__ import annotations

import sys

from fastagent.agent import Agent, McpServer
from fastagent.fsa import FSA, Action, Ctx, Go, Slot, State, Step

MAX_ATTEMPTS = 3  # failed identity checks before a human takes over


def found(c: Ctx) -> bool:
    return c.ok() and bool(c.result) and c.result.get("found") is True


def verified(c: Ctx) -> bool:
    return c.ok() and bool(c.result) and c.result.get("verified") is True


def ordered(c: Ctx) -> bool:
    return c.ok() and bool(c.result) and c.result.get("ordered") is True


def out_of_attempts(c: Ctx) -> bool:
    return c.attempts >= MAX_ATTEMPTS


CUSTOMER_ID = Slot("customer_id", "the 6-digit customer number", pattern=r"\d{6}", sensitive=True)
DATE_OF_BIRTH = Slot(
    "date_of_birth", "date of birth as YYYY-MM-DD", pattern=r"\d{4}-\d{2}-\d{2}", sensitive=True
)
CARD_LAST4 = Slot(
    "card_last4", "the last four digits of the card", pattern=r"\d{4}", sensitive=True
)

LOCKED = State(
    "locked",
    "Say you could not verify their identity and that you are transferring them to a colleague.",
    terminal=True,
    outcome="transferred",
    transfer=True,
)

CARD_REPLACEMENT = FSA(
    name="card_replacement",
    intent="start_card_replacement",
    description="Replace a lost, stolen or damaged bank card.",
    initial="identify",
    slots=(
        CUSTOMER_ID,
        DATE_OF_BIRTH,
        CARD_LAST4,
        Slot("reason", "why the card is replaced", choices=("lost", "stolen", "damaged")),
    ),
    states=(
        State(
            "identify",
            "Ask for the caller's 6-digit customer number. If the last lookup found nobody, "
            "say so and ask them to check the number.",
            steps=(
                Step(
                    "provide_customer_number",
                    "The caller gave their customer number.",
                    slots=("customer_id",),
                    action=Action("find_customer", args=("customer_id",)),
                    go=(
                        Go("verify", when=found, guard="found"),
                        Go("locked", when=out_of_attempts, guard="three failed attempts"),
                        Go("identify", guard="not found"),
                    ),
                ),
            ),
        ),
        State(
            "verify",
            "To verify their identity, ask for their date of birth and the last four digits "
            "of the card. If the last check failed, say the details did not match and ask again. "
            "Never reveal which detail was wrong.",
            steps=(
                Step(
                    "verify_identity",
                    "The caller gave their date of birth and the card's last four digits.",
                    slots=("date_of_birth", "card_last4"),
                    action=Action(
                        "verify_customer", args=("customer_id", "date_of_birth", "card_last4")
                    ),
                    go=(
                        Go("confirm_address", when=verified, guard="verified"),
                        Go("locked", when=out_of_attempts, guard="three failed attempts"),
                        Go("verify", guard="not verified"),
                    ),
                ),
            ),
            # The card's digits are spoken here: the call recording is paused (PCI).
            pci=True,
        ),
        State(
            "confirm_address",
            "Read the delivery address on file (result.address) to the caller and ask whether "
            "the new card should go there.",
            steps=(
                Step(
                    "confirm_delivery_address",
                    "The caller said whether the address on file is right.",
                    confirm=True,
                    go=(Go("confirm_replacement"),),
                ),
                Step(
                    "report_address_change",
                    "The caller's address has changed.",
                    go=(Go("address_change"),),
                ),
            ),
        ),
        State(
            "confirm_replacement",
            "Ask why the card is being replaced (lost, stolen or damaged) if you do not know, "
            "say the old card will stop working, and ask the caller to confirm the replacement.",
            steps=(
                Step(
                    "confirm_card_replacement",
                    "The caller confirmed (or declined) ordering the replacement card.",
                    slots=("reason",),
                    confirm=True,
                    action=Action(
                        "order_replacement_card",
                        args=("customer_id", "card_last4", "reason"),
                        side_effect=True,
                    ),
                    go=(
                        Go("done", when=ordered, guard="ordered"),
                        Go("order_failed", guard="order failed"),
                    ),
                ),
            ),
        ),
        State(
            "done",
            "Tell the caller the order number (result.order_id) and that the card arrives in "
            "about result.delivery_days working days. Ask if there is anything else.",
            terminal=True,
        ),
        State(
            "address_change",
            "Say a colleague must update the address first and that you are transferring them.",
            terminal=True,
            outcome="transferred",
            transfer=True,
        ),
        State(
            "order_failed",
            "Apologise: the order did not go through. Say you are transferring them to a "
            "colleague.",
            terminal=True,
            outcome="failed",
            transfer=True,
        ),
        LOCKED,
    ),
)

BALANCE = FSA(
    name="balance_inquiry",
    intent="start_balance_inquiry",
    description="Tell the caller the balances of their accounts.",
    initial="verify",
    slots=(CUSTOMER_ID, DATE_OF_BIRTH, CARD_LAST4),
    states=(
        State(
            "verify",
            "Ask for the customer number, date of birth and the last four digits of their card. "
            "If the last check failed, say the details did not match and ask again.",
            steps=(
                Step(
                    "check_balance_identity",
                    "The caller gave their customer number, date of birth and card digits.",
                    slots=("customer_id", "date_of_birth", "card_last4"),
                    action=Action(
                        "get_balance", args=("customer_id", "date_of_birth", "card_last4")
                    ),
                    go=(
                        Go("told", when=verified, guard="verified"),
                        Go("locked", when=out_of_attempts, guard="three failed attempts"),
                        Go("verify", guard="not verified"),
                    ),
                ),
            ),
            pci=True,  # card digits: recording paused
        ),
        State(
            "told",
            "Read each account's balance (result.accounts) briefly. Ask if there is anything else.",
            terminal=True,
        ),
        LOCKED,
    ),
)

AGENT = Agent(
    name="banking",
    instructions=(
        "You are the phone assistant of Demo Bank. Be brief and warm: this is a phone call. "
        "For a lost, stolen or damaged card use start_card_replacement; for balances use "
        "start_balance_inquiry. Never guess customer data: ask the caller. "
        "Use end_call when the caller says goodbye, transfer_to_human when they ask for a person."
    ),
    greeting="Say: Welcome to Demo Bank. How can I help you today?",
    fsas=(CARD_REPLACEMENT, BALANCE),
    servers=(
        McpServer("bank", command=(sys.executable, "-m", "fastagent.examples.backends.bank")),
    ),
    transfer_target="tel:+15550100200",
    # Callers may key in their customer number: VAIC sends DTMF only when asked to.
    session_params={"sendDTMF": True},
    scenario="banking.json",
)
