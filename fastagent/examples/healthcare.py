"""Riverside Clinic: schedule an appointment (find the patient, offer slots, book)."""

from __future__ import annotations

import sys
from collections.abc import Callable

from fastagent.agent import Agent, McpServer
from fastagent.fsa import FSA, Action, Ctx, Go, Slot, State, Step


def _flag(name: str) -> Callable[[Ctx], bool]:
    """A guard: the action succeeded and its result has ``name`` true."""

    def guard(c: Ctx) -> bool:
        return c.ok() and bool(c.result) and c.result.get(name) is True

    guard.__name__ = name
    return guard


found = _flag("found")
booked = _flag("booked")

APPOINTMENT = FSA(
    name="appointment",
    intent="start_appointment_booking",
    description="Book an appointment at the clinic.",
    initial="identify",
    slots=(
        Slot("last_name", "the patient's last name", sensitive=True),
        Slot(
            "date_of_birth",
            "the patient's date of birth as YYYY-MM-DD",
            pattern=r"\d{4}-\d{2}-\d{2}",
            sensitive=True,
        ),
        Slot(
            "specialty",
            "the kind of appointment",
            choices=("general", "dermatology", "physiotherapy"),
        ),
        Slot(
            "preferred_date",
            "the earliest day that suits, YYYY-MM-DD",
            pattern=r"\d{4}-\d{2}-\d{2}",
        ),
        Slot("slot_id", "the id of the chosen slot, like S101", pattern=r"S\d{3}"),
    ),
    states=(
        State(
            "identify",
            "Ask for the patient's last name and date of birth. If the last lookup found "
            "nobody, say so and ask them to spell the name.",
            steps=(
                Step(
                    "identify_patient",
                    "The caller gave the patient's last name and date of birth.",
                    slots=("last_name", "date_of_birth"),
                    action=Action("find_patient", args=("last_name", "date_of_birth")),
                    go=(Go("want", when=found, guard="found"), Go("identify", guard="not found")),
                ),
            ),
        ),
        State(
            "want",
            "Ask what kind of appointment they need (general, dermatology or physiotherapy) "
            "and from which day. If nothing was free, offer to look at another day.",
            steps=(
                Step(
                    "search_slots",
                    "The caller said what kind of appointment and from which day.",
                    slots=("specialty", "preferred_date"),
                    action=Action("list_free_slots", args=("specialty", "preferred_date")),
                    go=(
                        Go("choose", when=found, guard="slots free"),
                        Go("want", guard="none free"),
                    ),
                ),
            ),
        ),
        State(
            "choose",
            "Offer at most three of the free slots (result.slots: doctor and time, not the id) "
            "and ask which one suits.",
            steps=(
                Step(
                    "choose_slot",
                    "The caller chose one of the offered slots.",
                    slots=("slot_id",),
                    go=(Go("confirm"),),
                ),
                Step(
                    "search_other_day",
                    "None of the offered slots suits the caller.",
                    go=(Go("want"),),
                ),
            ),
        ),
        State(
            "confirm",
            "Repeat the chosen doctor, day and time, and ask the caller to confirm the booking.",
            steps=(
                Step(
                    "confirm_booking",
                    "The caller confirmed (or declined) the booking.",
                    confirm=True,
                    action=Action(
                        "book_appointment",
                        args=("last_name", "date_of_birth", "slot_id"),
                        side_effect=True,
                    ),
                    go=(Go("booked", when=booked, guard="booked"), Go("choose", guard="taken")),
                ),
            ),
        ),
        State(
            "booked",
            "Confirm the appointment (result.doctor, result.starts_at) and ask if there is "
            "anything else.",
            terminal=True,
        ),
    ),
)

AGENT = Agent(
    name="healthcare",
    instructions=(
        "You are the phone assistant of Riverside Clinic. Be brief and kind. You book "
        "appointments with start_appointment_booking; you give no medical advice: for an "
        "emergency tell the caller to hang up and dial the emergency number. To answer a "
        "question about free times without booking, use list_free_slots. "
        "Use end_call when the caller says goodbye, transfer_to_human when they ask for a person."
    ),
    greeting="Say: Riverside Clinic, how can I help?",
    fsas=(APPOINTMENT,),
    tools=("list_free_slots",),  # availability questions in open conversation
    servers=(
        McpServer("clinic", command=(sys.executable, "-m", "fastagent.examples.backends.clinic")),
    ),
    transfer_target="tel:+15550100300",
    scenario="healthcare.json",
)
