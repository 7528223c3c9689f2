"""Riverside Clinic's backend MCP server: patients, free slots, bookings.

Run: ``python -m fastagent.examples.backends.clinic`` (stdio).
"""

from __future__ import annotations

import re
import sqlite3
from typing import Any, Literal

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from fastagent.examples.backends import connect, db_path, once, request_key

NAME = "clinic"
mcp = MCPServer(NAME, instructions="Riverside Clinic scheduling.", log_level="WARNING")

Specialty = Literal["general", "dermatology", "physiotherapy"]


def _patient(con: sqlite3.Connection, last_name: str, date_of_birth: str) -> sqlite3.Row | None:
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", date_of_birth.strip()):
        raise ToolError(f"date of birth {date_of_birth!r} is malformed (YYYY-MM-DD)")
    return con.execute(
        "SELECT * FROM patients WHERE lower(last_name) = lower(?) AND date_of_birth = ?",
        (last_name.strip(), date_of_birth.strip()),
    ).fetchone()


@mcp.tool()
def find_patient(last_name: str, date_of_birth: str) -> dict[str, Any]:
    """Find a registered patient by last name and date of birth (YYYY-MM-DD)."""
    with connect(NAME) as con:
        row = _patient(con, last_name, date_of_birth)
    if row is None:
        return {"ok": True, "found": False, "error": "no patient with that name and birth date"}
    return {"ok": True, "found": True, "first_name": row["first_name"]}


@mcp.tool()
def list_free_slots(specialty: Specialty, preferred_date: str) -> dict[str, Any]:
    """Up to five free slots for a specialty on or after ``preferred_date`` (YYYY-MM-DD)."""
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", preferred_date.strip()):
        raise ToolError(f"date {preferred_date!r} is malformed (YYYY-MM-DD)")
    with connect(NAME) as con:
        rows = con.execute(
            "SELECT s.* FROM slots s LEFT JOIN appointments a ON a.slot_id = s.slot_id"
            " WHERE a.slot_id IS NULL AND s.specialty = ? AND s.starts_at >= ?"
            " ORDER BY s.starts_at LIMIT 5",
            (specialty, preferred_date.strip()),
        ).fetchall()
    slots = [
        {"slot_id": r["slot_id"], "doctor": r["doctor"], "starts_at": r["starts_at"]} for r in rows
    ]
    return {"ok": True, "found": bool(slots), "slots": slots}


@mcp.tool()
def book_appointment(
    last_name: str,
    date_of_birth: str,
    slot_id: str,
    ctx: Context,
    idempotency_key: str = "",
) -> dict[str, Any]:
    """Book a free slot for a patient.  Idempotent per key and per (patient, slot)."""
    key = request_key(ctx, idempotency_key)
    with connect(NAME) as con:

        def write() -> dict[str, Any]:
            patient = _patient(con, last_name, date_of_birth)
            if patient is None:
                return {"ok": False, "error": "no patient with that name and birth date"}
            slot = con.execute("SELECT * FROM slots WHERE slot_id = ?", (slot_id,)).fetchone()
            if slot is None:
                return {"ok": True, "booked": False, "error": f"there is no slot {slot_id}"}
            taken = con.execute(
                "SELECT * FROM appointments WHERE slot_id = ?", (slot_id,)
            ).fetchone()
            if taken is not None and taken["patient_id"] != patient["patient_id"]:
                return {"ok": True, "booked": False, "error": f"slot {slot_id} was just taken"}
            if taken is None:
                cur = con.execute(
                    "INSERT INTO appointments (patient_id, slot_id) VALUES (?, ?)",
                    (patient["patient_id"], slot_id),
                )
                appointment_id = cur.lastrowid
            else:
                appointment_id = taken["appointment_id"]
            return {
                "ok": True,
                "booked": True,
                "appointment_id": f"AP-{appointment_id:05d}",
                "doctor": slot["doctor"],
                "starts_at": slot["starts_at"],
                "already_booked": taken is not None,
            }

        return once(con, "book_appointment", key, write)


if __name__ == "__main__":
    db_path(NAME)  # create the sample data before the first request
    mcp.run()
