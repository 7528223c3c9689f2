"""Demo Bank's backend MCP server: customers, cards, balances, replacement cards.

Run: ``python -m fastagent.examples.backends.bank`` (stdio).  Business answers
(unknown customer, details that do not match) are normal results with
``ok``/``verified`` fields, so an FSA's guards can branch on them; malformed
input is a tool error.
"""

from __future__ import annotations

import os
import re
import sqlite3
import time
from typing import Any, Literal

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from fastagent.examples.backends import connect, db_path, once, request_key

NAME = "bank"
mcp = MCPServer(NAME, instructions="Demo Bank back office.", log_level="WARNING")


def _check(value: str, pattern: str, what: str) -> str:
    value = value.strip()
    if not re.fullmatch(pattern, value):
        raise ToolError(f"{what} {value!r} is malformed")
    return value


def _customer(con: sqlite3.Connection, customer_id: str) -> sqlite3.Row | None:
    return con.execute("SELECT * FROM customers WHERE customer_id = ?", (customer_id,)).fetchone()


def _verify(
    con: sqlite3.Connection, customer_id: str, date_of_birth: str, card_last4: str
) -> sqlite3.Row | None:
    """The customer if all three details match (any of their cards, even a replaced one:
    the caller knows the digits of the card they lost)."""
    return con.execute(
        "SELECT c.* FROM customers c JOIN cards k ON k.customer_id = c.customer_id"
        " WHERE c.customer_id = ? AND c.date_of_birth = ? AND k.last4 = ?",
        (customer_id, date_of_birth, card_last4),
    ).fetchone()


@mcp.tool()
def find_customer(customer_id: str) -> dict[str, Any]:
    """Look up a customer by their 6-digit customer number."""
    customer_id = _check(customer_id, r"\d{6}", "customer number")
    with connect(NAME) as con:
        row = _customer(con, customer_id)
    if row is None:
        return {"ok": True, "found": False, "error": f"no customer with number {customer_id}"}
    return {"ok": True, "found": True, "first_name": row["first_name"]}


@mcp.tool()
def verify_customer(customer_id: str, date_of_birth: str, card_last4: str) -> dict[str, Any]:
    """Check the caller's date of birth (YYYY-MM-DD) and their card's last four digits."""
    customer_id = _check(customer_id, r"\d{6}", "customer number")
    date_of_birth = _check(date_of_birth, r"\d{4}-\d{2}-\d{2}", "date of birth")
    card_last4 = _check(card_last4, r"\d{4}", "card digits")
    with connect(NAME) as con:
        row = _verify(con, customer_id, date_of_birth, card_last4)
    if row is None:
        return {"ok": True, "verified": False, "error": "the details do not match our records"}
    return {
        "ok": True,
        "verified": True,
        "name": f"{row['first_name']} {row['last_name']}",
        "address": row["address"],
    }


@mcp.tool()
def get_balance(customer_id: str, date_of_birth: str, card_last4: str) -> dict[str, Any]:
    """Balances of the customer's accounts, after checking their identity."""
    customer_id = _check(customer_id, r"\d{6}", "customer number")
    with connect(NAME) as con:
        if _verify(con, customer_id, date_of_birth.strip(), card_last4.strip()) is None:
            return {"ok": True, "verified": False, "error": "the details do not match our records"}
        rows = con.execute(
            "SELECT account_id, kind, balance_cents, currency FROM accounts"
            " WHERE customer_id = ? ORDER BY account_id",
            (customer_id,),
        ).fetchall()
    accounts = [
        {
            "account": r["account_id"],
            "kind": r["kind"],
            "balance": f"{r['balance_cents'] / 100:.2f}",
            "currency": r["currency"],
        }
        for r in rows
    ]
    return {"ok": True, "verified": True, "accounts": accounts}


@mcp.tool()
def order_replacement_card(
    customer_id: str,
    card_last4: str,
    reason: Literal["lost", "stolen", "damaged"],
    ctx: Context,
    idempotency_key: str = "",
) -> dict[str, Any]:
    """Order a replacement card to the address on file and retire the old card.

    Idempotent: a repeated idempotency key, or an open order for the same card,
    returns the existing order; a customer never gets two cards.
    """
    customer_id = _check(customer_id, r"\d{6}", "customer number")
    card_last4 = _check(card_last4, r"\d{4}", "card digits")
    key = request_key(ctx, idempotency_key)
    with connect(NAME) as con:

        def write() -> dict[str, Any]:
            open_order = con.execute(
                "SELECT * FROM card_orders WHERE customer_id = ? AND card_last4 = ?"
                " AND status = 'ordered'",
                (customer_id, card_last4),
            ).fetchone()
            if open_order is not None:
                return _order(open_order, already=True)
            cust = _customer(con, customer_id)
            card = con.execute(
                "SELECT * FROM cards WHERE customer_id = ? AND last4 = ? AND status = 'active'",
                (customer_id, card_last4),
            ).fetchone()
            if cust is None or card is None:
                return {"ok": False, "error": "no such active card for this customer"}
            cur = con.execute(
                "INSERT INTO card_orders (customer_id, card_last4, reason, address)"
                " VALUES (?, ?, ?, ?)",
                (customer_id, card_last4, reason, cust["address"]),
            )
            con.execute(
                "UPDATE cards SET status = 'replaced' WHERE card_id = ?", (card["card_id"],)
            )
            row = con.execute(
                "SELECT * FROM card_orders WHERE order_id = ?", (cur.lastrowid,)
            ).fetchone()
            return _order(row, already=False)

        return once(con, "order_replacement_card", key, write)


def _order(row: sqlite3.Row, *, already: bool) -> dict[str, Any]:
    return {
        "ok": True,
        "ordered": True,
        "order_id": f"CR-{row['order_id']:06d}",
        "address": row["address"],
        "delivery_days": 5,
        "already_ordered": already,
    }


@mcp.tool()
def ping(delay_ms: int = 0) -> dict[str, Any]:
    """Health check; ``delay_ms`` (up to 60 s) simulates a slow backend."""
    time.sleep(min(max(delay_ms, 0), 60_000) / 1000)
    return {"ok": True, "server": NAME, "pid": os.getpid()}


if __name__ == "__main__":
    db_path(NAME)  # create the sample data before the first request
    mcp.run()
