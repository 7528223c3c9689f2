"""Northwind Outfitters: order status, and returns behind a confirmation."""

from __future__ import annotations

import sys

from fastagent.agent import Agent, McpServer
from fastagent.fsa import FSA, Action, Ctx, Go, Slot, State, Step


def found(c: Ctx) -> bool:
    return c.ok() and bool(c.result) and c.result.get("found") is True


def created(c: Ctx) -> bool:
    return c.ok() and bool(c.result) and c.result.get("created") is True


ORDER_NUMBER = Slot("order_number", "the order number, like A1001", pattern=r"[A-Za-z]\d{4}")
POSTAL_CODE = Slot(
    "postal_code", "the delivery postcode", pattern=r"[A-Za-z0-9 -]{3,10}", sensitive=True
)

ORDER_STATUS = FSA(
    name="order_status",
    intent="start_order_status",
    description="Tell the caller where their order is.",
    initial="lookup",
    slots=(ORDER_NUMBER, POSTAL_CODE),
    states=(
        State(
            "lookup",
            "Ask for the order number and the delivery postcode. If the last lookup found "
            "nothing, say so and ask them to check both.",
            steps=(
                Step(
                    "look_up_order",
                    "The caller gave the order number and the postcode.",
                    slots=("order_number", "postal_code"),
                    action=Action("get_order_status", args=("order_number", "postal_code")),
                    go=(Go("told", when=found, guard="found"), Go("lookup", guard="not found")),
                ),
            ),
        ),
        State(
            "told",
            "Tell the status (result.status) and, if shipped, the carrier; if delivered, the "
            "date. Ask if there is anything else.",
            terminal=True,
        ),
    ),
)

PARCEL_TRACKING = FSA(
    name="parcel_tracking",
    intent="start_parcel_tracking",
    description="Find out where a shipped parcel is now, from the carrier.",
    initial="ask",
    slots=(ORDER_NUMBER, POSTAL_CODE),
    states=(
        State(
            "ask",
            "Ask for the order number and the delivery postcode. If the carrier found "
            "nothing, say so and ask them to check both.",
            steps=(
                Step(
                    "track_parcel",
                    "The caller gave the order number and the postcode.",
                    slots=("order_number", "postal_code"),
                    go=(Go("tracking"),),
                ),
            ),
        ),
        # The carrier lookup runs in the background (on_enter): the bot keeps talking
        # meanwhile, and the result moves the FSA on (after) and is told to the model.
        State(
            "tracking",
            "The carrier is being asked now, which takes a moment: say so, and keep the "
            "caller company (answer other questions); do not guess where the parcel is.",
            on_enter=Action(
                "get_order_status", args=("order_number", "postal_code"), background=True
            ),
            after=(Go("told", when=found, guard="found"), Go("ask", guard="not found")),
        ),
        State(
            "told",
            "Tell the carrier and the tracking number (result.carrier, result.tracking) and "
            "the status; ask if there is anything else.",
            terminal=True,
        ),
    ),
)

RETURN = FSA(
    name="return_item",
    intent="start_return",
    description="Return an item from a delivered order.",
    initial="identify",
    slots=(
        ORDER_NUMBER,
        POSTAL_CODE,
        Slot("sku", "the item's code from the order, like BT-200", pattern=r"[A-Za-z]{2}-\d{3}"),
        Slot(
            "return_reason",
            "why the item goes back",
            choices=("wrong_size", "damaged", "not_as_described", "changed_mind"),
        ),
    ),
    states=(
        State(
            "identify",
            "Ask for the order number and the delivery postcode.",
            steps=(
                Step(
                    "identify_return_order",
                    "The caller gave the order number and the postcode.",
                    slots=("order_number", "postal_code"),
                    action=Action("get_order_status", args=("order_number", "postal_code")),
                    go=(
                        Go("choose_item", when=found, guard="found"),
                        Go("identify", guard="not found"),
                    ),
                ),
            ),
        ),
        State(
            "choose_item",
            "Name the returnable items of the order (result.items with returnable true) and "
            "ask which one goes back and why. If the last choice could not be returned, say why.",
            steps=(
                Step(
                    "choose_return_item",
                    "The caller said which item to return and why.",
                    slots=("sku", "return_reason"),
                    go=(Go("confirm"),),
                ),
            ),
        ),
        State(
            "confirm",
            "Say which item will be returned and that a prepaid label will be emailed; "
            "ask the caller to confirm the return.",
            steps=(
                Step(
                    "confirm_return",
                    "The caller confirmed (or declined) the return.",
                    confirm=True,
                    action=Action(
                        "create_return",
                        args=("order_number", "postal_code", "sku", "return_reason"),
                        side_effect=True,
                    ),
                    go=(
                        Go("returned", when=created, guard="created"),
                        Go("choose_item", guard="not returnable"),
                    ),
                ),
            ),
        ),
        State(
            "returned",
            "Give the return number (result.return_id) and the refund amount (result.refund); "
            "ask if there is anything else.",
            terminal=True,
        ),
    ),
)

AGENT = Agent(
    name="retail",
    instructions=(
        "You are the phone assistant of Northwind Outfitters. Be brief and friendly. "
        "Use start_order_status for where-is-my-order questions, start_parcel_tracking to ask "
        "the carrier where a shipped parcel is now, and start_return for returns. "
        "Use end_call when the caller says goodbye. There is no phone team to hand callers to: "
        "for what you cannot do, give them support@northwind.example."
    ),
    greeting="Say: Northwind Outfitters, how can I help?",
    fsas=(ORDER_STATUS, PARCEL_TRACKING, RETURN),
    servers=(
        McpServer("shop", command=(sys.executable, "-m", "fastagent.examples.backends.shop")),
    ),
    # No transfer target: Northwind has no phone team (transfer_to_human is not offered
    # unless the operator names a target with --transfer-target).
    scenario="retail.json",
)
